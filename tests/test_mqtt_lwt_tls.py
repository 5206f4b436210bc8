"""Last Will on a killed process; TLS with CA verification, a password file and client certificates."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from emotiond.daemon.config import HomeAssistantSettings

from tests.fixtures_broker import TEST_PASSWORD, mqtt_settings, wait_until

pytestmark = pytest.mark.broker
NO_HA = HomeAssistantSettings(discovery=False)

CHILD = textwrap.dedent(
    """
    import sys, time
    from emotiond.daemon.config import HomeAssistantSettings, MqttSettings
    from emotiond.daemon.mqtt_sink import MqttSink
    from emotiond.daemon.payloads import Topics
    s = MqttSettings(host="127.0.0.1", port=int(sys.argv[1]), device_id=sys.argv[2], keepalive_s=5)
    sink = MqttSink(s, None, Topics("emotiond", sys.argv[2]), (), HomeAssistantSettings(discovery=False))
    sink.start()
    while not sink.stats()["connected"]:
        time.sleep(0.02)
    print("ready", flush=True)
    time.sleep(60)
    """
)


def test_killed_process_leaves_retained_offline(broker, subscriber):
    device = f"lwt{os.getpid()}"
    status = f"emotiond/{device}/status"
    sub = subscriber(broker.host, broker.port, status)
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(broker.port), device], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        sub.wait_for(lambda ms: bool(ms) and ms[-1].text == "online")
        os.kill(proc.pid, signal.SIGKILL)  # no close(), no DISCONNECT: the broker sends the will
        proc.wait(5)
        sub.wait_for(lambda ms: ms[-1].text == "offline", timeout=5)
    finally:
        proc.kill()
        proc.wait()
    late = subscriber(broker.host, broker.port, status)
    msgs = late.wait_topic(status)
    assert msgs[0].text == "offline" and msgs[0].retain


def _tls_settings(tls_broker, tls_material, ca=None, client_cert=False, **kw):
    tls = {"enabled": True, "ca_file": str(ca or tls_material.ca_cert)}
    if client_cert:
        tls |= {"cert_file": str(tls_material.client_cert), "key_file": str(tls_material.client_key)}
    return mqtt_settings(tls_broker, host="localhost", username=tls_material.user, tls=tls, **kw)


def test_tls_with_password_connects_and_publishes(tls_broker, tls_material, make_sink, subscriber):
    s = _tls_settings(tls_broker, tls_material)
    sub = subscriber(
        "localhost", tls_broker.port, f"emotiond/{s.device_id}/status",
        username=tls_material.user, password=tls_material.password, ca_file=tls_material.ca_cert,
    )  # fmt: skip
    sink = make_sink(s, password=tls_material.password, ha=NO_HA)
    wait_until(lambda: sink.stats()["connected"], what="TLS connection")
    assert sub.wait_topic(f"emotiond/{s.device_id}/status")[0].text == "online"


def _single_failure_line(caplog, sink, port):
    wait_until(lambda: sink.stats()["connect_failures"] >= 3, timeout=8, what="3 attempts")
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1, lines
    assert f"localhost:{port}" in lines[0] and "retrying" in lines[0]
    assert not sink.stats()["connected"]
    print(lines[0])
    return lines[0]


def test_wrong_password_one_clear_line_and_retry(tls_broker, tls_material, make_sink, caplog):
    caplog.set_level(logging.DEBUG)
    s = _tls_settings(tls_broker, tls_material)
    sink = make_sink(s, password="wrong-" + TEST_PASSWORD, ha=NO_HA)
    line = _single_failure_line(caplog, sink, tls_broker.port)
    assert "refused" in line and "Not authorized" in line
    sink.close(0.5)
    assert TEST_PASSWORD not in caplog.text
    assert TEST_PASSWORD not in repr(sink.stats())


def test_untrusted_ca_one_clear_line_and_retry(tls_broker, tls_material, make_sink, caplog):
    caplog.set_level(logging.DEBUG)
    s = _tls_settings(tls_broker, tls_material, ca=tls_material.other_ca_cert)
    sink = make_sink(s, password=tls_material.password, ha=NO_HA)
    line = _single_failure_line(caplog, sink, tls_broker.port)
    assert "TLS certificate verification failed" in line
    sink.close(0.5)
    assert TEST_PASSWORD not in caplog.text


def test_mutual_tls_with_client_certificate_publishes(mtls_broker, tls_material, make_sink, subscriber):
    s = _tls_settings(mtls_broker, tls_material, client_cert=True)
    sink = make_sink(s, password=tls_material.password, ha=NO_HA)
    wait_until(lambda: sink.stats()["connected"], what="mutual-TLS connection")
    sub = subscriber(
        "localhost", mtls_broker.port, f"emotiond/{s.device_id}/status",
        username=tls_material.user, password=tls_material.password, ca_file=tls_material.ca_cert,
        cert_file=tls_material.client_cert, key_file=tls_material.client_key,
    )  # fmt: skip
    assert sub.wait_topic(f"emotiond/{s.device_id}/status")[0].text == "online"


def test_mutual_tls_without_client_certificate_is_refused_with_one_line(mtls_broker, tls_material, make_sink, caplog):
    caplog.set_level(logging.DEBUG)
    s = _tls_settings(mtls_broker, tls_material)
    sink = make_sink(s, password=tls_material.password, ha=NO_HA)
    line = _single_failure_line(caplog, sink, mtls_broker.port)
    sink.close(0.5)
    assert TEST_PASSWORD not in caplog.text
    assert "before accepting" in line and "mqtt.tls.cert_file" in line
