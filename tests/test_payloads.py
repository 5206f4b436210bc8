"""The payload contract, frozen: field names and types per topic, JSON Schemas, privacy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from emotiond.daemon.payloads import SCHEMA_VERSION, Topics
from jsonschema import Draft202012Validator

from tests.fixtures_broker import LABELS, EventMaker

SCHEMAS = Path(__file__).resolve().parents[1] / "docs" / "schemas"

EMOTION_FIELDS = {
    "schema": int, "device": str, "run": int, "seq": int, "ts": str,
    "emotion": str, "confidence": float, "probabilities": dict,
}  # fmt: skip
UTTERANCE_FIELDS = {
    "schema": int, "device": str, "run": int, "seq": int, "ts": str, "start": str, "end": str,
    "offset_s": float, "duration_s": float, "emotion": str, "confidence": float,
    "probabilities": dict, "windows": int,
}  # fmt: skip
HEALTH_MQTT_FIELDS = {
    "connected": bool, "published": int, "dropped_events": int, "buffered": int,
    "inflight": int, "reconnects": int, "connect_failures": int, "dropped_incoming": int,
}  # fmt: skip


def validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{name}.json").read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def assert_fields(payload: dict, fields: dict) -> None:
    assert set(payload) == set(fields), "payload fields changed: bump SCHEMA_VERSION and the docs"
    for key, typ in fields.items():
        assert isinstance(payload[key], typ), f"{key}: {type(payload[key]).__name__} != {typ.__name__}"
        assert not (typ is int and isinstance(payload[key], bool))


def assert_private(raw: bytes) -> None:
    """Small, and no arrays of numbers anywhere (no samples, no features, no embeddings)."""
    assert len(raw) < 2048, f"payload is {len(raw)} bytes"

    def walk(node) -> None:
        if isinstance(node, list):
            assert not any(isinstance(x, int | float) and not isinstance(x, bool) for x in node), node
            for x in node:
                walk(x)
        elif isinstance(node, dict):
            for x in node.values():
                walk(x)

    walk(json.loads(raw))


def test_topics():
    t = Topics("emotiond", "kitchen")
    assert (t.status, t.emotion, t.utterance, t.health, t.problem) == (
        "emotiond/kitchen/status",
        "emotiond/kitchen/emotion",
        "emotiond/kitchen/utterance",
        "emotiond/kitchen/health",
        "emotiond/kitchen/problem",
    )


def test_emotion_payload_contract():
    p = EventMaker("kitchen").emotion("happy")
    assert_fields(p, EMOTION_FIELDS)
    assert p["schema"] == SCHEMA_VERSION == 1
    assert set(p["probabilities"]) == set(LABELS)
    validator("emotion").validate(p)
    assert_private(json.dumps(p).encode())


def test_utterance_payload_contract():
    ev = EventMaker("kitchen")
    a, b = ev.utterance("angry", 1.25), ev.utterance("sad")
    assert_fields(a, UTTERANCE_FIELDS)
    assert a["duration_s"] == 1.25 and a["run"] == b["run"] and b["seq"] == a["seq"] + 1
    assert a["start"] < a["end"] <= b["start"]
    validator("utterance").validate(a)
    assert_private(json.dumps(a).encode())


def test_schemas_reject_drift():
    p = EventMaker("kitchen").emotion()
    for broken in ({**p, "samples": [0.1, 0.2]}, {**p, "confidence": 1.5}, {**p, "ts": "yesterday"}):
        assert list(validator("emotion").iter_errors(broken)), broken
    assert list(validator("status").iter_errors("maybe"))
    assert list(validator("status").iter_errors("degraded"))  # not an availability value: see problem.json
    validator("status").validate("online")
    validator("problem").validate({"schema": 1, "device": "k", "problem": True, "reason": "audio lost"})
    assert list(validator("problem").iter_errors({"schema": 1, "device": "k", "problem": "yes", "reason": None}))


def test_privacy_check_catches_audio():
    with pytest.raises(AssertionError):
        assert_private(json.dumps({"audio": [0.0] * 100}).encode())
