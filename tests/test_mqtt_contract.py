"""Contract over the wire: what a subscriber really receives, retained flags, schemas, privacy."""

from __future__ import annotations

import pytest
from emotiond.daemon.config import HomeAssistantSettings

from tests.fixtures_broker import EventMaker, mqtt_settings, wait_until
from tests.test_payloads import (
    EMOTION_FIELDS,
    HEALTH_MQTT_FIELDS,
    UTTERANCE_FIELDS,
    assert_fields,
    assert_private,
    validator,
)

pytestmark = pytest.mark.broker


def test_received_payloads_match_contract_and_schemas(broker, subscriber, make_sink):
    s = mqtt_settings(broker)
    root = f"emotiond/{s.device_id}"
    sink = make_sink(s, ha=HomeAssistantSettings(discovery=False))
    ev = EventMaker(s.device_id)
    wait_until(lambda: sink.stats()["connected"])
    sink.publish_emotion(ev.emotion("angry"))
    sink.publish_utterance(ev.utterance("angry"))
    sink.publish_health({"schema": 1, "status": "online", "uptime_s": 3.5})
    wait_until(lambda: sink.stats()["published"] >= 4 and sink.stats()["inflight"] == 0)

    live = subscriber(broker.host, broker.port, f"{root}/#")  # retained ones arrive retained
    sink.publish_utterance(ev.utterance("sad"))  # live: not retained
    msgs = live.wait_for(lambda ms: len({m.topic for m in ms}) == 5)
    by = {m.topic.rsplit("/", 1)[1]: m for m in msgs}
    assert {k: m.retain for k, m in by.items()} == {
        "status": True, "problem": True, "emotion": True, "health": True, "utterance": False,
    }  # fmt: skip
    assert all(m.qos == 1 for m in msgs)

    assert by["status"].payload == b"online"
    validator("status").validate(by["status"].text)
    emotion, utterance, health = by["emotion"].json(), by["utterance"].json(), by["health"].json()
    assert_fields(emotion, EMOTION_FIELDS)
    assert_fields(utterance, UTTERANCE_FIELDS)
    assert_fields(health["mqtt"], HEALTH_MQTT_FIELDS)
    assert {"schema", "device", "ts", "status", "mqtt"} <= set(health)
    assert health["device"] == s.device_id and health["uptime_s"] == 3.5
    assert by["problem"].json() == {"schema": 1, "device": s.device_id, "problem": False, "reason": None}
    for name, payload in (("emotion", emotion), ("utterance", utterance), ("health", health),
                          ("problem", by["problem"].json())):
        validator(name).validate(payload)
    for m in msgs:
        if m is not by["status"]:
            assert_private(m.payload)
