"""Home Assistant MQTT discovery: pure builders, and the messages on a real broker."""

from __future__ import annotations

import json
import re
import time

import pytest
from emotiond.daemon.config import HomeAssistantSettings
from emotiond.daemon.homeassistant import (
    discovery_messages,
    entity_configs,
    node_id,
    removal_messages,
)
from emotiond.daemon.payloads import Topics

from tests.fixtures_broker import LABELS, EventMaker, mqtt_settings, wait_until

REQUIRED = {"name", "unique_id", "state_topic", "availability", "device"}

# Home Assistant's own entity-id rule (homeassistant/core.py, VALID_ENTITY_ID): lower-case
# domain and object id, no leading, trailing or double underscore.
VALID_ENTITY_ID = re.compile(r"^(?!.+__)(?!_)[\da-z_]+(?<!_)\.(?!_)[\da-z_]+(?<!_)$")
DEVICES = ["kitchen", "living.room", "Living-Room", "pi_4", "__x__", "küche"]


def current_ha_violations(topic: str, cfg: dict) -> list[str]:
    """The discovery rules of Home Assistant ≥ 2026.4 that our configs can break.

    ``object_id`` no longer sets the entity id there (removed in 2026.4); only
    ``default_entity_id`` = ``<component>.<object id>`` does. Availability payloads
    are ``online``/``offline`` only, and ``qos`` must be 1 for at-least-once.
    """
    component = topic.split("/")[1]
    bad = []
    entity_id = cfg.get("default_entity_id")
    if "object_id" in cfg and entity_id is None:
        bad.append("object_id without default_entity_id: the entity id would come from the name")
    if entity_id is None or not VALID_ENTITY_ID.match(entity_id):
        bad.append(f"default_entity_id {entity_id!r} is not a valid entity id")
    elif entity_id.split(".")[0] != component:
        bad.append(f"default_entity_id {entity_id!r} is not in the {component} domain")
    elif "object_id" in cfg and cfg["object_id"] != entity_id.split(".", 1)[1]:
        bad.append("object_id and default_entity_id name different entities")
    for avail in cfg.get("availability", []):
        if {avail.get("payload_available"), avail.get("payload_not_available")} != {"online", "offline"}:
            bad.append(f"availability payloads {avail}")
    if cfg.get("qos") != 1:
        bad.append(f"qos {cfg.get('qos')!r}, not 1")
    return bad


@pytest.mark.parametrize("device", DEVICES)
def test_configs_follow_the_rules_of_current_home_assistant(device):
    for topic, cfg in entity_configs(Topics("emotiond", device), LABELS).items():
        assert current_ha_violations(topic, cfg) == [], topic
    configs = entity_configs(Topics("emotiond", "kitchen"), LABELS)
    assert {c["default_entity_id"] for c in configs.values()} == {
        "event.emotiond_kitchen_utterance", "sensor.emotiond_kitchen_emotion",
        "sensor.emotiond_kitchen_confidence", "binary_sensor.emotiond_kitchen_problem",
    }


def test_object_id_without_default_entity_id_is_rejected():
    topic, cfg = next(iter(entity_configs(Topics("emotiond", "kitchen"), LABELS).items()))
    legacy = {k: v for k, v in cfg.items() if k != "default_entity_id"}
    assert any("object_id without default_entity_id" in v for v in current_ha_violations(topic, legacy))
    wrong_domain = {**cfg, "default_entity_id": "sensor.emotiond_kitchen_utterance"}
    assert current_ha_violations(topic, wrong_domain) == [
        "default_entity_id 'sensor.emotiond_kitchen_utterance' is not in the event domain"
    ]
    assert current_ha_violations(topic, {**cfg, "qos": 0}) == ["qos 0, not 1"]


def test_builders_are_pure_and_complete():
    t = Topics("emotiond", "living.room")
    a, b = entity_configs(t, LABELS), entity_configs(t, LABELS)
    assert a == b and len(a) == 4
    assert all(topic.startswith("homeassistant/") and topic.endswith("/config") for topic in a)
    assert all("/emotiond_living_room/" in topic for topic in a)  # '.' is not allowed in ids
    for cfg in a.values():
        assert set(cfg) >= REQUIRED
        assert cfg["availability"] == [
            {"topic": t.status, "payload_available": "online", "payload_not_available": "offline"}
        ]
        assert cfg["device"]["identifiers"] == [node_id("living.room")]
        assert cfg["unique_id"].startswith("emotiond_living_room_")
    event = a["homeassistant/event/emotiond_living_room/utterance/config"]
    assert event["event_types"] == list(LABELS) and event["state_topic"] == t.utterance
    assert "event_type" in event["value_template"]
    sensor = a["homeassistant/sensor/emotiond_living_room/emotion/config"]
    assert sensor["state_topic"] == t.emotion and sensor["options"] == [*LABELS, "none"]
    assert len({c["unique_id"] for c in a.values()}) == 4
    problem = a["homeassistant/binary_sensor/emotiond_living_room/problem/config"]
    assert problem["device_class"] == "problem" and problem["state_topic"] == t.problem
    assert "reason" in problem["json_attributes_template"]
    # other prefix, removal on the same topics
    assert all(k.startswith("ha/") for k in entity_configs(t, LABELS, "ha"))
    assert [k for k, _ in removal_messages(t, LABELS)] == list(a)
    assert all(v == "" for _, v in removal_messages(t, LABELS))
    assert all(json.loads(v) for _, v in discovery_messages(t, LABELS))


def test_event_template_renders_event_type():
    jinja2 = pytest.importorskip("jinja2")
    env = jinja2.Environment()
    env.filters["to_json"] = json.dumps
    cfg = entity_configs(Topics("e", "d"), LABELS)["homeassistant/event/emotiond_d/utterance/config"]
    utterance = EventMaker("d").utterance("angry")
    rendered = json.loads(env.from_string(cfg["value_template"]).render(value_json=utterance))
    assert rendered["event_type"] == "angry" and rendered["event_type"] in cfg["event_types"]


@pytest.mark.broker
def test_discovery_on_broker_and_entities_receive_data(broker, subscriber, make_sink):
    s = mqtt_settings(broker)
    sub = subscriber(broker.host, broker.port, ["homeassistant/#", f"emotiond/{s.device_id}/#"])
    sink = make_sink(s, ha=HomeAssistantSettings())
    ev = EventMaker(s.device_id)
    nid = node_id(s.device_id)
    msgs = sub.wait_for(lambda ms: sum(f"/{nid}/" in m.topic for m in ms) >= 4)
    configs = {m.topic: m.json() for m in msgs if m.topic.startswith("homeassistant/")}
    assert len(configs) == 4
    for cfg in configs.values():
        assert set(cfg) >= REQUIRED
    event = next(c for t, c in configs.items() if "/event/" in t)
    assert event["event_types"] == list(LABELS)

    sink.publish_emotion(ev.emotion("happy"))
    sink.publish_utterance(ev.utterance("angry"))
    for topic in {c["state_topic"] for c in configs.values()}:
        sub.wait_topic(topic)
    status = configs[next(iter(configs))]["availability"][0]["topic"]
    assert sub.on(status)[-1].text == "online"

    # Home Assistant restarted: discovery is sent again
    before = sum(m.topic in configs for m in sub.messages)
    sub.client.publish("homeassistant/status", "online")
    sub.wait_for(lambda ms: sum(m.topic in configs for m in ms) >= before + 4)
    late = subscriber(broker.host, broker.port, "homeassistant/#")
    got = late.wait_for(lambda ms: sum(m.topic in configs for m in ms) >= 4)
    assert all(m.retain for m in got if m.topic in configs)


@pytest.mark.broker
def test_discovery_disabled_removes_entities(broker, subscriber, make_sink):
    s = mqtt_settings(broker)
    first = make_sink(s, ha=HomeAssistantSettings())
    wait_until(lambda: first.stats()["published"] >= 4)
    first.close(1.0)
    second = make_sink(s, ha=HomeAssistantSettings(discovery=False))
    wait_until(lambda: second.stats()["published"] >= 4)
    late = subscriber(broker.host, broker.port, "homeassistant/#")
    time.sleep(0.3)  # retained configs would arrive right after SUBACK
    assert [m for m in late.messages if node_id(s.device_id) in m.topic] == []


@pytest.mark.broker
def test_first_event_waits_for_home_assistant_to_subscribe(broker, subscriber, make_sink):
    """The --fast race: discovery first, then ``discovery_delay_s`` before the first event."""
    s = mqtt_settings(broker)
    sub = subscriber(broker.host, broker.port, ["homeassistant/#", f"emotiond/{s.device_id}/#"])
    sink = make_sink(s, ha=HomeAssistantSettings(discovery_delay_s=0.6), start=False)
    ev = EventMaker(s.device_id)
    sink.publish_utterance(ev.utterance("angry"))  # published before the daemon is even connected
    sink.start()
    sink.publish_utterance(ev.utterance("sad"))
    utterances = sub.wait_topic(f"emotiond/{s.device_id}/utterance", count=2)
    configs = [m for m in sub.messages if m.topic.startswith("homeassistant/") and m.topic.endswith("/config")]
    assert len(configs) == 4
    gap = utterances[0].at - max(m.at for m in configs)
    assert gap >= 0.5, f"first utterance only {gap:.3f} s after discovery"
    assert [m.json()["emotion"] for m in utterances] == ["angry", "sad"]
    # later events are not held
    t0 = time.monotonic()
    sink.publish_utterance(ev.utterance("happy"))
    sub.wait_topic(f"emotiond/{s.device_id}/utterance", count=3)
    assert time.monotonic() - t0 < 0.5


@pytest.mark.broker
def test_discovery_delay_never_costs_an_event(broker, subscriber, make_sink):
    """A full buffer ends the wait early instead of dropping (mqtt.buffer_size=2, 5 s delay)."""
    s = mqtt_settings(broker, buffer_size=2)
    sub = subscriber(broker.host, broker.port, f"emotiond/{s.device_id}/utterance")
    sink = make_sink(s, ha=HomeAssistantSettings(discovery_delay_s=5.0))
    ev = EventMaker(s.device_id)
    wait_until(lambda: sink.stats()["connected"], what="connected")
    sent = [ev.utterance() for _ in range(5)]
    for p in sent:
        sink.publish_utterance(p)
    got = sub.wait_topic(f"emotiond/{s.device_id}/utterance", count=5, timeout=4)
    assert [m.json()["seq"] for m in got] == [p["seq"] for p in sent]
    assert sink.stats()["dropped_events"] == 0


def test_problem_templates_render_state_and_reason():
    jinja2 = pytest.importorskip("jinja2")
    env = jinja2.Environment()
    env.filters["to_json"] = json.dumps
    cfg = entity_configs(Topics("e", "d"), LABELS)["homeassistant/binary_sensor/emotiond_d/problem/config"]
    for problem, reason, state in ((True, "audio lost", "ON"), (False, None, "OFF")):
        value = {"schema": 1, "device": "d", "problem": problem, "reason": reason}
        assert env.from_string(cfg["value_template"]).render(value_json=value) == state
        attrs = json.loads(env.from_string(cfg["json_attributes_template"]).render(value_json=value))
        assert attrs == {"reason": reason}
