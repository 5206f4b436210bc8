"""Home Assistant MQTT discovery: pure builders for the config messages.

One HA *device* per daemon with four entities, all sharing the daemon's
availability topic (``{base}/{device}/status``: only ``online`` / ``offline``,
the two payloads HA understands there):

* ``event``  ``…_utterance`` — fired once per utterance; ``event_types`` are the
  model's labels. HA needs an ``event_type`` key in the event payload; the
  ``value_template`` maps the utterance payload's ``emotion`` to it, so the MQTT
  contract itself stays free of HA-specific fields.
* ``sensor`` ``…_emotion``   — current emotion (enum) from the retained emotion
  topic, probabilities as attributes.
* ``sensor`` ``…_confidence`` — confidence of the current emotion in %.
* ``binary_sensor`` ``…_problem`` (``device_class: problem``) — on while the
  daemon is *degraded* (e.g. waiting for its microphone), the reason as an attribute.

Entity ids: ``default_entity_id`` (``sensor.emotiond_kitchen_emotion``) is what
HA ≥ 2025.10 reads; ``object_id`` is kept beside it only because older HA
versions (down to :data:`MIN_HOME_ASSISTANT`) read that instead, and HA 2026.4
ignores it. Every entity subscribes with ``qos: 1`` so at-least-once delivery
reaches HA and does not end at the broker.

Config topics: ``{prefix}/{component}/{node_id}/{object_id}/config`` (retained).
Removal = the same topics with an empty retained payload. Nothing here talks
to the network; :class:`~emotiond.daemon.mqtt_sink.MqttSink` publishes the messages.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .. import __version__
from ..dsp.smoother import NO_SPEECH
from .payloads import STATUS_OFFLINE, STATUS_ONLINE, Topics

MIN_HOME_ASSISTANT = "2024.4"  # enum sensor ``options`` from MQTT discovery; stated in docs/mqtt.md
DISCOVERY_QOS = 1

ORIGIN = {"name": "emotiond", "sw": __version__, "url": "https://github.com/emotiond/emotiond"}

EVENT_VALUE_TEMPLATE = (
    "{{ {'event_type': value_json.emotion, 'confidence': value_json.confidence, "
    "'duration_s': value_json.duration_s, 'run': value_json.run, "
    "'seq': value_json.seq} | to_json }}"
)


def node_id(device: str) -> str:
    """A discovery-safe id for the device (HA allows ``[a-zA-Z0-9_-]`` in node/object ids)."""
    return "emotiond_" + (re.sub(r"[^a-zA-Z0-9_-]", "_", device) or "device")


def device_block(topics: Topics) -> dict[str, Any]:
    return {
        "identifiers": [node_id(topics.device)],
        "name": f"emotiond {topics.device}",
        "manufacturer": "emotiond",
        "model": "speech emotion recognition",
        "sw_version": __version__,
    }


def availability_block(topics: Topics) -> list[dict[str, str]]:
    return [
        {
            "topic": topics.status,
            "payload_available": STATUS_ONLINE,
            "payload_not_available": STATUS_OFFLINE,
        }
    ]


def entity_ids(component: str, object_id: str) -> dict[str, str]:
    """Both spellings of the entity id: ``default_entity_id`` (HA ≥ 2025.10) and ``object_id`` (older HA).

    Entity ids allow only ``[a-z0-9_]`` without leading, trailing or double ``_``;
    HA would slugify anything else itself, so this gives the id it would make.
    """
    slug = re.sub(r"_+", "_", re.sub(r"[^a-z0-9_]", "_", object_id.lower())).strip("_")
    return {"default_entity_id": f"{component}.{slug}", "object_id": slug}


def config_topic(prefix: str, component: str, topics: Topics, object_id: str) -> str:
    return f"{prefix}/{component}/{node_id(topics.device)}/{object_id}/config"


def entity_configs(
    topics: Topics, labels: tuple[str, ...], prefix: str = "homeassistant"
) -> dict[str, dict]:
    """``{config_topic: config}`` for every entity of one daemon."""
    nid = node_id(topics.device)
    common = {
        "availability": availability_block(topics),
        "device": device_block(topics),
        "origin": ORIGIN,
        "qos": DISCOVERY_QOS,
    }
    out: dict[str, dict] = {}
    if labels:
        out[config_topic(prefix, "event", topics, "utterance")] = {
            "name": "Utterance emotion",
            "unique_id": f"{nid}_utterance",
            **entity_ids("event", f"{nid}_utterance"),
            "state_topic": topics.utterance,
            "event_types": list(labels),
            "value_template": EVENT_VALUE_TEMPLATE,
            "icon": "mdi:account-voice",
            **common,
        }
    out[config_topic(prefix, "sensor", topics, "emotion")] = {
        "name": "Emotion",
        "unique_id": f"{nid}_emotion",
        **entity_ids("sensor", f"{nid}_emotion"),
        "state_topic": topics.emotion,
        "value_template": "{{ value_json.emotion }}",
        "json_attributes_topic": topics.emotion,
        "json_attributes_template": "{{ value_json.probabilities | to_json }}",
        "device_class": "enum",
        "options": [*labels, NO_SPEECH] if NO_SPEECH not in labels else list(labels),
        "icon": "mdi:emoticon-outline",
        **common,
    }
    out[config_topic(prefix, "sensor", topics, "confidence")] = {
        "name": "Emotion confidence",
        "unique_id": f"{nid}_confidence",
        **entity_ids("sensor", f"{nid}_confidence"),
        "state_topic": topics.emotion,
        "value_template": "{{ (value_json.confidence * 100) | round(1) }}",
        "unit_of_measurement": "%",
        "state_class": "measurement",
        "icon": "mdi:percent",
        **common,
    }
    out[config_topic(prefix, "binary_sensor", topics, "problem")] = {
        "name": "Problem",
        "unique_id": f"{nid}_problem",
        **entity_ids("binary_sensor", f"{nid}_problem"),
        "state_topic": topics.problem,
        "value_template": "{{ 'ON' if value_json.problem else 'OFF' }}",
        "json_attributes_topic": topics.problem,
        "json_attributes_template": "{{ {'reason': value_json.reason} | to_json }}",
        "device_class": "problem",
        "entity_category": "diagnostic",
        **common,
    }
    return out


def discovery_messages(
    topics: Topics, labels: tuple[str, ...], prefix: str = "homeassistant"
) -> list[tuple[str, str]]:
    """``(topic, payload)`` pairs to publish retained to announce the entities."""
    return [
        (t, json.dumps(c, separators=(",", ":")))
        for t, c in entity_configs(topics, labels, prefix).items()
    ]


def removal_messages(
    topics: Topics, labels: tuple[str, ...], prefix: str = "homeassistant"
) -> list[tuple[str, str]]:
    """Empty retained payloads on the same config topics: HA deletes the entities."""
    # the event entity exists only with labels; remove it regardless of the labels we have now
    all_topics = entity_configs(topics, labels or ("_",), prefix)
    return [(t, "") for t in all_topics]


def ha_status_topic(prefix: str = "homeassistant") -> str:
    """HA publishes ``online`` here when it (re)starts: discovery must be sent again."""
    return f"{prefix}/status"
