"""Fixtures that start a real Mosquitto broker on a free loopback port.

* ``broker``      — anonymous listener, persistence on (sessions survive ``stop()``/``start()``).
* ``tls_broker``  — TLS listener (test CA, cert for 127.0.0.1/localhost) + password file.
* ``tls_material``— the generated CA/certs, plus a second CA the broker doesn't trust.
* ``mtls_broker`` — like ``tls_broker`` but every client must present a certificate from the test CA.
* ``subscriber``  — factory for :class:`Subscriber` (paho 2.x, VERSION2 callbacks), closed at teardown.

Everything is skipped with a clear message when the ``mosquitto`` binary is missing.
Certificates are made with the ``openssl`` CLI (the ``cryptography`` package is not a
dependency), EC P-256 keys so generation takes milliseconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

HOST = "127.0.0.1"
TEST_USER = "emotiond"
TEST_PASSWORD = "s3cret-Pa55-w0rd"  # tests assert this never shows up in logs


def _mosquitto() -> str:
    exe = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None
    )
    if exe is None:
        pytest.skip("mosquitto binary not found (apt-get install mosquitto mosquitto-clients)")
    return exe


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_port(host: str, port: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"broker on {host}:{port} did not start") from None
            time.sleep(0.02)


class Broker:
    """One mosquitto process; ``stop()``/``start()`` restart it on the same port."""

    def __init__(self, workdir: Path, extra_conf: str = "", port: int | None = None) -> None:
        self.exe = _mosquitto()
        self.host = HOST
        self.port = port or free_port()
        self.dir = workdir
        (workdir / "data").mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        self.conf.write_text(
            f"listener {self.port} {HOST}\n"
            "persistence true\n"
            f"persistence_location {workdir / 'data'}/\n"
            "autosave_interval 1\n"
            # as root, mosquitto 2 would switch to user 'mosquitto' and lose the tmp files
            + ("user root\n" if os.geteuid() == 0 else "")
            + (extra_conf or "allow_anonymous true\n")
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        deadline = time.monotonic() + 5
        while True:
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(
                    [self.exe, "-c", str(self.conf)], stdout=log, stderr=log
                )
            try:
                wait_port(self.host, self.port, timeout=2.0)
                return
            except TimeoutError:
                # the old socket may still be in TIME_WAIT for a moment after a restart
                self.kill()
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"mosquitto did not start: {self.log.read_text()[-2000:]}"
                    ) from None

    def stop(self) -> None:
        """Graceful stop (SIGTERM): persistence is written, so sessions survive a restart."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "broker")
    b.start()
    try:
        yield b
    finally:
        b.kill()


# --------------------------------------------------------------------------- TLS


@dataclass(frozen=True)
class TlsMaterial:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    other_ca_cert: Path  # a CA the broker's certificate was NOT signed by
    password_file: Path
    client_cert: Path  # signed by ``ca_cert``: accepted by ``mtls_broker``
    client_key: Path
    user: str = TEST_USER
    password: str = TEST_PASSWORD


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_ca(d: Path, name: str) -> None:
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}.key", cwd=d)
    _openssl(
        "req", "-x509", "-new", "-key", f"{name}.key", "-sha256", "-days", "2",
        "-subj", f"/CN=emotiond test {name}", "-out", f"{name}.crt", cwd=d,
    )  # fmt: skip


@pytest.fixture(scope="session")
def tls_material(tmp_path_factory: pytest.TempPathFactory) -> TlsMaterial:
    _mosquitto()
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not found (needed to generate test certificates)")
    if shutil.which("mosquitto_passwd") is None:
        pytest.skip("mosquitto_passwd not found (apt-get install mosquitto)")
    d = tmp_path_factory.mktemp("tls")
    _make_ca(d, "ca")
    _make_ca(d, "other-ca")
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "server.key", cwd=d)
    _openssl(
        "req", "-new", "-key", "server.key", "-subj", "/CN=localhost", "-out", "server.csr", cwd=d
    )
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-sha256", "-extfile", "san.ext", "-out", "server.crt", cwd=d,
    )  # fmt: skip
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "client.key", cwd=d)
    _openssl("req", "-new", "-key", "client.key", "-subj", "/CN=emotiond-test-client", "-out", "client.csr", cwd=d)
    _openssl(
        "x509", "-req", "-in", "client.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-sha256", "-out", "client.crt", cwd=d,
    )  # fmt: skip
    pw = d / "passwd"
    pw.touch(mode=0o600)
    subprocess.run(
        ["mosquitto_passwd", "-b", str(pw), TEST_USER, TEST_PASSWORD],
        check=True,
        capture_output=True,
    )
    return TlsMaterial(
        d / "ca.crt", d / "server.crt", d / "server.key", d / "other-ca.crt", pw, d / "client.crt", d / "client.key"
    )


def _tls_broker(folder: Path, m: TlsMaterial, extra: str = "") -> Iterator[Broker]:
    b = Broker(
        folder,
        extra_conf=(
            "allow_anonymous false\n"
            f"password_file {m.password_file}\n"
            f"cafile {m.ca_cert}\ncertfile {m.server_cert}\nkeyfile {m.server_key}\n" + extra
        ),
    )
    b.start()
    try:
        yield b
    finally:
        b.kill()


@pytest.fixture
def tls_broker(tmp_path: Path, tls_material: TlsMaterial) -> Iterator[Broker]:
    yield from _tls_broker(tmp_path / "tls-broker", tls_material)


@pytest.fixture
def mtls_broker(tmp_path: Path, tls_material: TlsMaterial) -> Iterator[Broker]:
    """Mutual TLS: the broker refuses clients without a certificate signed by the test CA."""
    yield from _tls_broker(tmp_path / "mtls-broker", tls_material, "require_certificate true\n")


# --------------------------------------------------------------------------- subscriber


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    qos: int
    at: float = field(default_factory=time.monotonic)

    def json(self) -> Any:
        return json.loads(self.payload)

    @property
    def text(self) -> str:
        return self.payload.decode()


class Subscriber:
    """Collects every message (topic, payload, retain flag) and waits for conditions."""

    def __init__(
        self,
        host: str,
        port: int,
        topics: str | list[str] = "#",
        qos: int = 1,
        client_id: str | None = None,
        clean_session: bool = True,
        username: str | None = None,
        password: str | None = None,
        ca_file: Path | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
    ) -> None:
        import paho.mqtt.client as mqtt

        self.topics = [topics] if isinstance(topics, str) else list(topics)
        self.qos = qos
        self.messages: list[Received] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"test-sub-{uuid.uuid4().hex[:8]}",
            clean_session=clean_session,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        if ca_file is not None:
            self.client.tls_set(
                ca_certs=str(ca_file),
                certfile=str(cert_file) if cert_file else None,
                keyfile=str(key_file) if key_file else None,
            )
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.connect(host, port, keepalive=10)
        self.client.loop_start()
        if not self._subscribed.wait(5):
            raise TimeoutError("subscriber did not get SUBACK")

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            client.subscribe([(t, self.qos) for t in self.topics])

    def _on_message(self, client, userdata, msg) -> None:
        with self._cond:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain), msg.qos))
            self._cond.notify_all()

    def on(self, topic: str) -> list[Received]:
        with self._cond:
            return [m for m in self.messages if m.topic == topic]

    def wait_for(
        self, predicate: Callable[[list[Received]], bool], timeout: float = 5.0
    ) -> list[Received]:
        """Block until ``predicate(messages)`` is true; raise AssertionError with what arrived."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(m.topic, m.payload[:80], m.retain) for m in self.messages[-20:]]
                    raise AssertionError(
                        f"condition not met within {timeout}s; last messages: {seen}"
                    )
                self._cond.wait(left)
            return list(self.messages)

    def wait_topic(self, topic: str, count: int = 1, timeout: float = 5.0) -> list[Received]:
        self.wait_for(lambda ms: sum(m.topic == topic for m in ms) >= count, timeout)
        return self.on(topic)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscriber() -> Iterator[Callable[..., Subscriber]]:
    made: list[Subscriber] = []

    def make(host: str, port: int, *args: Any, **kwargs: Any) -> Subscriber:
        s = Subscriber(host, port, *args, **kwargs)
        made.append(s)
        return s

    yield make
    for s in made:
        with contextlib.suppress(Exception):
            s.close()


# --------------------------------------------------------------------------- sink + events

LABELS = ("neutral", "happy", "sad", "angry")


def mqtt_settings(broker: Broker, **overrides: Any) -> Any:
    """``MqttSettings`` for ``broker`` with test-friendly reconnect delays."""
    from emotiond.daemon.config import MqttSettings

    values: dict[str, Any] = {
        "host": broker.host,
        "port": broker.port,
        "device_id": f"dev{uuid.uuid4().hex[:6]}",
        "reconnect_min_s": 0.1,
        "reconnect_max_s": 0.5,
        "keepalive_s": 5,
    }
    values.update(overrides)
    return MqttSettings.model_validate(values)


class EventMaker:
    """Real payloads from :class:`PayloadFactory`, as the daemon would make them."""

    def __init__(self, device: str, labels: tuple[str, ...] = LABELS) -> None:
        from emotiond.daemon.payloads import PayloadFactory

        self.labels = labels
        self.factory = PayloadFactory(device)
        self.t = 0.0

    def _probs(self, top: str) -> dict[str, float]:
        rest = round(0.3 / (len(self.labels) - 1), 4)
        return {lab: (0.7 if lab == top else rest) for lab in self.labels}

    def emotion(self, label: str = "happy") -> dict[str, Any]:
        from emotiond.dsp.smoother import EmotionState

        self.t += 0.25
        return self.factory.emotion(EmotionState(label, 0.7, self._probs(label), self.t))

    def utterance(self, label: str = "angry", duration_s: float = 1.5) -> dict[str, Any]:
        from emotiond.dsp.smoother import UtteranceSummary

        start = self.t
        self.t += duration_s
        summary = UtteranceSummary(1, start, self.t, label, 0.7, self._probs(label), 5)
        return self.factory.utterance(summary)


@pytest.fixture
def make_sink() -> Iterator[Callable[..., Any]]:
    """``make_sink(settings, password=None, labels=LABELS, ha=None, start=True, client_id=None)``; closed at teardown.
    """
    from emotiond.daemon.mqtt_sink import MqttSink
    from emotiond.daemon.payloads import Topics

    made: list[Any] = []

    def make(
        settings: Any,
        password: str | None = None,
        labels: tuple[str, ...] = LABELS,
        ha: Any = None,
        start: bool = True,
        client_id: str | None = None,
    ) -> Any:
        sink = MqttSink(settings, password, Topics(settings.base_topic, settings.device()), labels, ha, client_id)
        made.append(sink)
        if start:
            sink.start()
        return sink

    yield make
    for sink in made:
        with contextlib.suppress(Exception):
            sink.close(0.5)


def wait_until(cond: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(0.02)
