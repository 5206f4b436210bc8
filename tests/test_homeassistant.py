"""Home Assistant MQTT discovery: pure builders, and the messages on a real broker."""

from __future__ import annotations

import json
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


def test_builders_are_pure_and_complete():
    t = Topics("emotiond", "living.room")
    a, b = entity_configs(t, LABELS), entity_configs(t, LABELS)
    assert a == b and len(a) == 3
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
    assert len({c["unique_id"] for c in a.values()}) == 3
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
    msgs = sub.wait_for(lambda ms: sum(f"/{nid}/" in m.topic for m in ms) >= 3)
    configs = {m.topic: m.json() for m in msgs if m.topic.startswith("homeassistant/")}
    assert len(configs) == 3
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
    sub.wait_for(lambda ms: sum(m.topic in configs for m in ms) >= before + 3)
    late = subscriber(broker.host, broker.port, "homeassistant/#")
    got = late.wait_for(lambda ms: sum(m.topic in configs for m in ms) >= 3)
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
