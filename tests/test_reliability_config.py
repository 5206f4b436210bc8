"""Config values that used to pass validation and break at runtime, env values, empty files (issue 13).

* Topic-like strings (hypothesis): whatever the validators accept, paho and a
  real Mosquitto accept too, as a topic we publish to, a Home Assistant
  discovery topic and a client id.
* ``EMOTIOND_*`` values are verbatim for string fields, typed for the rest.
* An empty config file: a warning at start, refused on reload.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from emotiond.daemon.config import ConfigError, HomeAssistantSettings, MqttSettings, load_settings
from emotiond.daemon.homeassistant import discovery_messages, ha_status_topic
from emotiond.daemon.mqtt_topics import MAX_ID_BYTES, MAX_PREFIX_BYTES
from emotiond.daemon.payloads import Topics
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tests.fixtures_broker import wait_until

ROOT = Path(__file__).resolve().parents[1]
LABELS = ("neutral", "happy", "sad", "angry")

# Everything a user, a host name or a hostile environment could put in a topic level:
# wildcards, '$', separators, NUL and control characters, non-characters, astral
# code points, and lengths around the limits.
_tricky = st.sampled_from(["#", "+", "$", "/", "\0", "\n", "\x1f", "\x7f", "\x85", "\ufdd0", "\ufffe", "\U0001ffff",
                           "é", "😀", " ", "$SYS", "a/#", "+/x", "\u2028"])
topic_like = st.one_of(
    st.text(st.characters(exclude_categories=("Cs",)), max_size=40),
    st.lists(_tricky | st.text(max_size=3), max_size=12).map("".join),
    st.integers(0, 3).flatmap(lambda n: st.just("x" * (MAX_PREFIX_BYTES - 1 + n))),
    st.integers(0, 3).flatmap(lambda n: st.just("é" * (MAX_ID_BYTES // 2 - 1 + n))),
)


def _accepted(**values: str) -> tuple[MqttSettings, HomeAssistantSettings] | None:
    """The settings if validation accepts ``values`` (mqtt keys, or ``prefix``), else None."""
    prefix = values.pop("prefix", "homeassistant")
    try:
        return MqttSettings.model_validate(values), HomeAssistantSettings(prefix=prefix)
    except ValidationError:
        return None


def _every_topic(m: MqttSettings, ha: HomeAssistantSettings) -> list[str]:
    topics = Topics(m.base_topic, m.device())
    out = [topics.status, topics.emotion, topics.utterance, topics.health, ha_status_topic(ha.prefix)]
    out += [t for t, _ in discovery_messages(topics, LABELS, ha.prefix)]
    return out


def _paho_accepts_topic(topic: str) -> bool:
    raw = topic.encode("utf-8")
    try:
        mqtt.Client._raise_for_invalid_topic(raw)
    except ValueError:
        return False
    return not topic.startswith("$") and 0 < len(raw) <= 65535


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(base=topic_like, device=topic_like, prefix=topic_like, client=topic_like)
def test_accepted_topic_parts_are_valid_mqtt(base: str, device: str, prefix: str, client: str) -> None:
    for key, value in (("base_topic", base), ("device_id", device), ("prefix", prefix), ("client_id", client)):
        accepted = _accepted(**{key: value})
        if accepted is None:
            continue
        m, ha = accepted
        for topic in _every_topic(m, ha):
            assert _paho_accepts_topic(topic), (key, value, topic)
            assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in topic), (key, topic)  # no forged lines
        mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=m.client_id or "x", protocol=mqtt.MQTTv5)


@pytest.mark.broker
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(device=topic_like, client=topic_like, prefix=topic_like)
def test_a_real_mosquitto_accepts_what_validation_accepts(broker, subscriber, device: str, client: str,
                                                          prefix: str) -> None:
    accepted = _accepted(base_topic=f"t{uuid.uuid4().hex[:6]}", device_id=device, client_id=client)
    if accepted is None or _accepted(prefix=prefix) is None:
        return
    m, _ = accepted
    sub = subscriber(broker.host, broker.port, f"{m.base_topic}/#")
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=m.client_id or "", protocol=mqtt.MQTTv5)
    connected: list[bool] = []
    pub.on_connect = lambda c, u, f, rc, p: connected.append(not rc.is_failure)
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    try:
        wait_until(lambda: connected, what="CONNACK for an accepted client id")
        assert connected == [True]
        topic = Topics(m.base_topic, m.device()).status
        pub.publish(topic, "online", qos=1).wait_for_publish(5)
        got = sub.wait_topic(topic)
        assert got[0].text == "online"
        granted: list[bool] = []
        pub.on_subscribe = lambda c, u, mid, codes, p: granted.extend(not rc.is_failure for rc in codes)
        pub.subscribe(ha_status_topic(prefix), qos=1)
        wait_until(lambda: granted, what="SUBACK for the discovery status topic")
        assert granted == [True] and pub.is_connected()
    finally:
        pub.disconnect()
        pub.loop_stop()


@pytest.mark.parametrize(("override", "key"), [
    ("homeassistant.prefix=ha/#", "homeassistant.prefix"),
    ("mqtt.base_topic=$SYS", "mqtt.base_topic"),
    ("mqtt.device_id=" + "d" * 70_000, "mqtt.device_id"),
    ("mqtt.client_id=" + "c" * 70_000, "mqtt.client_id"),
    ("mqtt.device_id=kitchen\nERROR forged line", "mqtt.device_id"),
])
def test_runtime_breaking_topics_exit_78_naming_the_key(override: str, key: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "emotiond", "check-config", "--set", override],
                          capture_output=True, timeout=60, cwd=ROOT)
    err = proc.stderr.decode()
    assert proc.returncode == 78, err
    assert len(err.strip().splitlines()) == 1 and key in err and "Traceback" not in err, err


@pytest.mark.parametrize("secret", ["correct horse #1", "null", "#x", "123456", "~", "yes", " padded ", "a: b"])
def test_environment_strings_are_verbatim(secret: str) -> None:
    s = load_settings(None, environ={"EMOTIOND_MQTT__PASSWORD": secret, "EMOTIOND_MQTT__USERNAME": secret,
                                     "EMOTIOND_MQTT__HOST": secret})
    assert s.mqtt_password() == secret
    assert s.mqtt.username == secret and s.mqtt.host == secret


def test_environment_typed_fields_are_parsed_with_one_line_errors() -> None:
    s = load_settings(None, environ={"EMOTIOND_MQTT__PORT": "1884", "EMOTIOND_MQTT__ENABLED": "false",
                                     "EMOTIOND_MQTT__DEVICE_ID": "123", "EMOTIOND_SOURCE__DEVICE": "2"})
    assert s.mqtt.port == 1884 and s.mqtt.enabled is False
    assert s.mqtt.device_id == "123" and s.source.device == 2
    with pytest.raises(ConfigError) as err:
        load_settings(None, environ={"EMOTIOND_MQTT__PORT": "correct horse #1"})
    assert str(err.value).startswith("environment EMOTIOND_MQTT__PORT:") and "\n" not in str(err.value)


def test_empty_config_is_announced_at_start_and_refused_on_reload(tmp_path: Path, caplog) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("# nothing here\n")
    with caplog.at_level(logging.WARNING):
        assert load_settings(path, environ={}).mqtt.host == "localhost"
    assert "the config file is empty; every setting has its default" in caplog.text
    with pytest.raises(ConfigError) as err:
        load_settings(path, environ={}, allow_empty=False)
    assert str(err.value).startswith(f"{path}: the config file is empty")
