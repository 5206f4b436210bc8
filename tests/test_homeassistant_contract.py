"""Our discovery configs through Home Assistant's *own* MQTT discovery code path.

Runs only where the ``homeassistant`` package is installed (``pip install -e '.[ha,test]'``
in a separate venv; ``.ci/run`` does it in ``.venv-ha``). It repeats what
``homeassistant/components/mqtt/discovery.py`` does with a config message —
topic match, supported component, abbreviation expansion, the origin schema —
and then validates with the component's ``DISCOVERY_SCHEMA``, as HA does before
it creates the entity. The rules of HA releases newer than the installed one
(``default_entity_id``) are checked in tests/test_homeassistant.py.
"""

from __future__ import annotations

import importlib
import json

import pytest

ha_const = pytest.importorskip(
    "homeassistant.const",
    reason="Home Assistant is not installed: pip install -e '.[ha,test]' in a separate venv (see .ci/run)",
)

from emotiond.daemon.homeassistant import DISCOVERY_QOS, discovery_messages, removal_messages  # noqa: E402
from emotiond.daemon.payloads import Topics  # noqa: E402

from tests.fixtures_broker import LABELS  # noqa: E402

# Keys HA releases after the installed one understand; older ones drop them (REMOVE_EXTRA).
NEWER_KEYS = {"default_entity_id": "2025.10", "options": "2024.4"}


def _ha_process(topic: str, payload: str, prefix: str = "homeassistant") -> tuple[str, dict]:
    """HA's discovery pre-processing, with HA's own tables and schemas; returns (component, config)."""
    from homeassistant.components.mqtt import discovery
    from homeassistant.components.mqtt.abbreviations import (
        ABBREVIATIONS,
        DEVICE_ABBREVIATIONS,
        ORIGIN_ABBREVIATIONS,
    )

    match = discovery.TOPIC_MATCHER.match(topic[len(prefix) + 1 :])
    assert match, f"{topic}: HA would ignore this discovery topic"
    component = match.group("component")
    assert component in discovery.SUPPORTED_COMPONENTS, component
    cfg = {ABBREVIATIONS.get(k, k): v for k, v in json.loads(payload).items()}
    cfg["device"] = {DEVICE_ABBREVIATIONS.get(k, k): v for k, v in cfg["device"].items()}
    cfg["origin"] = {ORIGIN_ABBREVIATIONS.get(k, k): v for k, v in cfg["origin"].items()}
    discovery.MQTT_ORIGIN_INFO_SCHEMA(cfg["origin"])
    return component, cfg


@pytest.mark.parametrize("device", ["kitchen", "Living-Room", "pi.4"])
def test_discovery_configs_pass_home_assistants_own_schemas(device: str) -> None:
    topics = Topics("emotiond", device)
    seen = set()
    for topic, payload in discovery_messages(topics, LABELS):
        component, cfg = _ha_process(topic, payload)
        platform = importlib.import_module(f"homeassistant.components.mqtt.{component}")
        validated = platform.DISCOVERY_SCHEMA(dict(cfg))  # raises vol.Invalid as HA would log it
        dropped = set(cfg) - set(validated)
        assert dropped <= set(NEWER_KEYS), f"{topic}: HA {ha_const.__version__} drops {dropped - set(NEWER_KEYS)}"
        assert validated["qos"] == DISCOVERY_QOS
        assert validated["object_id"] == cfg["default_entity_id"].split(".", 1)[1]  # the entity id older HA makes
        avail = validated["availability"][0]
        assert (avail["payload_available"], avail["payload_not_available"]) == ("online", "offline")
        assert validated["state_topic"] in (topics.emotion, topics.utterance, topics.problem)
        seen.add(component)
    assert seen == {"event", "sensor", "binary_sensor"}


def test_removal_messages_hit_the_same_discovery_hashes() -> None:
    """HA removes an entity on an empty payload to the topic it was discovered on (same hash)."""
    from homeassistant.components.mqtt import discovery

    topics = Topics("emotiond", "kitchen")
    announced = [t for t, _ in discovery_messages(topics, LABELS)]
    removed = removal_messages(topics, LABELS)
    assert [t for t, _ in removed] == announced and all(p == "" for _, p in removed)
    hashes = {discovery.TOPIC_MATCHER.match(t[len("homeassistant/") :]).groups() for t in announced}
    assert len(hashes) == len(announced)
