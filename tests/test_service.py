"""The daemon as a service: systemd notify/watchdog, signals, reload, devices, MQTT end to end."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from emotiond.daemon.assembly import load_model
from emotiond.daemon.config import load_settings
from emotiond.daemon.service import Daemon
from emotiond.daemon.sources import DeviceLost

ROOT = Path(__file__).resolve().parents[1]
SR = 16_000


class NotifySocket:
    """A Unix datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []

    def drain(self, seconds: float) -> list[tuple[float, str]]:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            for line in data.decode().splitlines():
                self.messages.append((time.monotonic(), line))
        return self.messages

    def close(self) -> None:
        self.sock.close()


@pytest.fixture()
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    s = NotifySocket(tmp_path / "notify.sock")
    yield s
    s.close()


def spawn(*args: str, env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "emotiond", *args], env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def wait_ready(notify: NotifySocket, timeout: float = 30.0) -> None:
    """READY=1 comes once the signal handlers are in place and audio flows: only then is a SIGHUP a reload.

    A fixed sleep is not enough on a loaded machine: a SIGHUP before the handler kills the process.
    """
    deadline = time.monotonic() + timeout
    while not any(m == "READY=1" for _, m in notify.drain(0.2)):
        assert time.monotonic() < deadline, "the daemon never sent READY=1"


def test_ready_watchdog_and_status_reach_systemd(notify_socket: NotifySocket, speech_wav: Path, model_path: Path):
    proc = spawn("run", "--input", str(speech_wav), "--set", "mqtt.enabled=false", "--set", f"model.path={model_path}",
                 env={"NOTIFY_SOCKET": notify_socket.path, "WATCHDOG_USEC": "400000"})
    try:
        msgs = notify_socket.drain(3.0)
        for _ in range(4):  # a loaded machine may start slowly: judge the pings after READY, not the start-up
            if len([m for _, m in msgs if m == "WATCHDOG=1"]) >= 5:
                break
            msgs = notify_socket.drain(1.5)  # drain() returns every message so far
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    msgs = list(msgs)
    texts = [m for _, m in msgs]
    assert "READY=1" in texts
    assert any(m.startswith("STATUS=listening on") for m in texts)
    pings = [t for t, m in msgs if m == "WATCHDOG=1"]
    assert len(pings) >= 5, texts  # every 0.2 s while audio flows
    assert max(np.diff(pings)) < 0.6
    assert "STOPPING=1" in [m for _, m in notify_socket.drain(0.5)]


class PacedSource:
    """The test double at the hardware edge: real-time blocks from an array, optionally failing."""

    def __init__(self, samples: np.ndarray, fail_at_block: int | None = None, name: str = "paced") -> None:
        self.samples, self.fail_at_block, self.name = samples, fail_at_block, name
        self.overruns = 0
        self.opened = 0

    def open(self) -> None:
        self.opened += 1

    def blocks(self) -> Iterator[np.ndarray]:
        for i, start in enumerate(range(0, len(self.samples), 1600)):
            if self.opened == 1 and i == self.fail_at_block:
                raise DeviceLost("paced: unplugged")
            time.sleep(0.02)
            yield self.samples[start : start + 1600]

    def close(self) -> None:
        pass


def test_frozen_processing_loop_stops_the_watchdog(notify_socket, speech_scene, model_path, monkeypatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.path)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    settings = load_settings(None, ["mqtt.enabled=false", f"model.path={model_path}"], environ={})
    release = threading.Event()
    real = load_model(settings)

    class Hanging:  # the real model, injected behind a stuck inference
        labels, info, path, runtime = real.labels, real.info, real.path, real.runtime

        def predict(self, window):
            release.wait(30)  # a stuck inference
            return real.predict(window)

    daemon = Daemon(settings, source=PacedSource(speech_scene[0]), model=Hanging())
    daemon.start()
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        msgs = notify_socket.drain(4.0)
    finally:
        daemon.request_stop()
        release.set()
        thread.join(10)
    pings = [t for t, m in msgs if m == "WATCHDOG=1"]
    assert pings, "the loop pinged while it made progress"
    after_last = msgs[-1][0] - pings[-1]
    assert after_last > 1.0 or time.monotonic() - pings[-1] > 2.0  # then silence while stuck


def test_lost_source_goes_degraded_then_online(speech_scene, model_path) -> None:
    settings = load_settings(None, ["mqtt.enabled=false", f"model.path={model_path}", "source.reopen_min_s=0.2"],
                             environ={})
    statuses: list[str] = []

    class Recorder:
        def start(self): pass
        def publish_emotion(self, p): pass
        def publish_utterance(self, p): pass
        def publish_health(self, p): pass
        def close(self, t): pass
        def set_status(self, s, reason=None): statuses.append(s)
        def stats(self): return {}

    source = PacedSource(speech_scene[0][: SR * 3], fail_at_block=5)
    daemon = Daemon(settings, source=source, sinks=[Recorder()])
    daemon.start()
    assert daemon.run() == 0
    assert statuses[:2] == ["degraded", "online"], statuses
    assert source.opened == 2


def test_sigterm_exits_quickly_with_offline_retained(broker, subscriber, model_path) -> None:
    device = "sigterm-test"
    proc = spawn("run", "--input", "-", "--set", f"mqtt.host={broker.host}", "--set", f"mqtt.port={broker.port}",
                 "--set", f"mqtt.device_id={device}", "--set", f"model.path={model_path}", stdin=subprocess.PIPE)
    status = f"emotiond/{device}/status"
    sub = subscriber(broker.host, broker.port, status)
    sub.wait_for(lambda ms: any(m.topic == status and m.payload == b"online" for m in ms), timeout=15)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(5)
    took = time.monotonic() - t0
    assert code == 0 and took < 2.0, (code, took, proc.stderr.read())
    late = subscriber(broker.host, broker.port, f"emotiond/{device}/#")
    msgs = late.wait_topic(status)
    assert msgs[-1].payload == b"offline" and msgs[-1].retain
    # the retained health was published at start and says offline after the clean stop (issue 13, item 12)
    health = late.wait_topic(f"emotiond/{device}/health")[-1]
    assert health.retain and health.json()["status"] == "offline"
    assert 0 < health.json()["rss_mb"] <= health.json()["peak_rss_mb"]


def test_sighup_applies_a_new_threshold_without_a_gap(tmp_path: Path, speech_scene, model_path,
                                                      notify_socket: NotifySocket) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"model:\n  path: {model_path}\nmqtt:\n  enabled: false\nstdout:\n  enabled: true\n"
                      "smoother:\n  min_confidence: 1.0\n")
    proc = spawn("run", "--config", str(config), "--input", "-", stdin=subprocess.PIPE,
                 env={"NOTIFY_SOCKET": notify_socket.path})
    pcm = (np.clip(speech_scene[0], -1, 1) * 32767).astype("<i2").tobytes()
    half = len(pcm) // 2 // 2 * 2
    proc.stdin.write(pcm[:half])
    proc.stdin.flush()
    wait_ready(notify_socket)
    time.sleep(1.0)  # let the first half be processed under the old threshold
    config.write_text(config.read_text().replace("min_confidence: 1.0", "min_confidence: 0.0"))
    proc.send_signal(signal.SIGHUP)
    time.sleep(1.0)
    proc.stdin.write(pcm[half:])
    proc.stdin.close()
    proc.wait(60)
    out, err = proc.stdout.read(), proc.stderr.read()
    assert proc.returncode == 0, err.decode()
    events = [json.loads(x) for x in out.decode().splitlines()]
    utterances = [e for e in events if e["event"] == "utterance"]
    spoken = speech_scene[1]
    assert len(utterances) == 2  # both halves processed, no audio dropped
    for u, (t0, _) in zip(utterances, spoken, strict=True):
        assert abs(u["offset_s"] - t0) < 0.4  # the audio clock did not jump
    states = [e for e in events if e["event"] == "emotion" and e["emotion"] != "none"]
    assert states, "after the reload the lower threshold lets states through"
    assert all(e["ts"] >= utterances[0]["end"] for e in states)  # and not before it
    assert b"configuration reloaded (changed: smoother)" in err


def test_invalid_reload_keeps_the_running_config(tmp_path: Path, speech_scene, model_path,
                                                 notify_socket: NotifySocket) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"model:\n  path: {model_path}\nmqtt:\n  enabled: false\n")
    proc = spawn("run", "--config", str(config), "--input", "-", stdin=subprocess.PIPE,
                 env={"NOTIFY_SOCKET": notify_socket.path})
    proc.stdin.write(bytes(SR // 5 * 2))  # 0.2 s of silence: audio flows, READY=1 follows
    proc.stdin.flush()
    wait_ready(notify_socket)
    config.write_text("vad:\n  aggressiveness: 9\n")
    proc.send_signal(signal.SIGHUP)
    time.sleep(1.0)
    proc.stdin.write((speech_scene[0][: SR * 2] * 32767).astype("<i2").tobytes())
    proc.stdin.close()
    proc.wait(30)
    err = proc.stderr.read()
    assert proc.returncode == 0
    assert b"reload refused, keeping the running configuration" in err and b"vad.aggressiveness" in err


def test_run_file_against_mosquitto_publishes_the_contract(broker, subscriber, speech_wav, model_path) -> None:
    device = "e2e"
    sub = subscriber(broker.host, broker.port, f"emotiond/{device}/#")
    proc = subprocess.run(
        [sys.executable, "-m", "emotiond", "run", "--input", str(speech_wav), "--fast",
         "--set", f"mqtt.host={broker.host}", "--set", f"mqtt.port={broker.port}",
         "--set", f"mqtt.device_id={device}", "--set", f"model.path={model_path}"],
        capture_output=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    root = f"emotiond/{device}"
    msgs = sub.wait_for(lambda ms: sum(m.topic == f"{root}/utterance" for m in ms) >= 2
                        and any(m.topic == f"{root}/status" and m.payload == b"offline" for m in ms), timeout=10)
    topics = {m.topic for m in msgs}
    assert {f"{root}/status", f"{root}/emotion", f"{root}/utterance"} <= topics
    utt = [m.json() for m in msgs if m.topic == f"{root}/utterance"]
    for u in utt:
        assert {"start", "end", "duration_s", "emotion", "confidence", "probabilities", "seq", "schema"} <= set(u)
    emo = [m for m in msgs if m.topic == f"{root}/emotion"]
    assert {"emotion", "confidence", "probabilities", "ts", "seq", "schema"} <= set(emo[0].json())
    late = subscriber(broker.host, broker.port, f"{root}/#")  # what a dashboard sees when it connects later
    retained = late.wait_for(lambda ms: {m.topic for m in ms} >= {f"{root}/status", f"{root}/emotion"})
    assert all(m.retain for m in retained if m.topic in (f"{root}/status", f"{root}/emotion"))
    assert [m.json() for m in retained if m.topic == f"{root}/emotion"][-1] == emo[-1].json()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_unit_verifies(tmp_path: Path) -> None:
    unit = (ROOT / "systemd/emotiond.service").read_text()
    emotiond_bin = Path(sys.executable).with_name("emotiond")
    assert "Type=notify" in unit and "WatchdogSec=" in unit
    local = tmp_path / "emotiond.service"
    local.write_text(unit.replace("/opt/emotiond/.venv/bin/emotiond", str(emotiond_bin)))
    proc = subprocess.run(["systemd-analyze", "verify", str(local)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_microphone_retries_report_degraded_once_with_health_on_each_change(speech_scene, model_path) -> None:
    """Issue 14: status on change only (not per retry), health at start and on every status change."""
    from emotiond.dsp.audio import AudioInputError

    settings = load_settings(None, ["mqtt.enabled=false", f"model.path={model_path}", "source.wait_for_device=true",
                                    "source.reopen_min_s=0.05", "source.reopen_max_s=0.1"], environ={})
    calls: list[tuple] = []

    class Recorder:
        def start(self): pass
        def publish_emotion(self, p): pass
        def publish_utterance(self, p): pass
        def publish_health(self, p): calls.append(("health", p["status"], p["rss_mb"], p["peak_rss_mb"]))
        def close(self, t): pass
        def set_status(self, s, reason=None): calls.append(("status", s, reason))
        def stats(self): return {}

    class LateMic(PacedSource):
        def open(self) -> None:
            self.opened += 1
            if self.opened <= 6:
                raise AudioInputError("mic: no input device matches 'usb'")

    source = LateMic(speech_scene[0][: SR * 2])
    daemon = Daemon(settings, source=source, sinks=[Recorder()])  # MQTT is off: only the recorder
    daemon.start()
    assert daemon.run() == 0
    assert source.opened == 7
    statuses = [c[1:] for c in calls if c[0] == "status"]
    assert statuses == [("degraded", "waiting for the microphone: mic: no input device matches 'usb'"),
                        ("online", None)]
    health = [c for c in calls if c[0] == "health"]
    # one at start (the injected recorder hears it too), then one per change; all long before 60 s
    assert [h[1] for h in health] == ["online", "degraded", "online"]
    assert all(h[2] is not None and 0 < h[2] <= h[3] for h in health)  # rss now ≤ peak


def test_the_daemon_takes_larger_pieces_when_nothing_can_come_out_and_publishes_the_same_events_as_early(
        speech_wav: Path, model_path: Path, monkeypatch) -> None:
    """While nobody speaks, IDLE_MS at a time; inside speech, as many blocks as certainly publish nothing plus one.

    Every event must be the same and leave after the same audio as with plain 100 ms blocks: the sample
    count processed when it is published is compared, so no event waits for a later block.
    """
    from emotiond.daemon import service
    from emotiond.daemon.sources import FileSource

    def run(idle_ms: int) -> tuple[list[tuple[str, dict, int]], list[tuple[int, bool]]]:
        monkeypatch.setattr(service, "IDLE_MS", idle_ms)
        settings = load_settings(None, ["mqtt.enabled=false", f"model.path={model_path}"], environ={})
        events: list[tuple[str, dict, int]] = []
        pieces: list[tuple[int, bool]] = []

        class Recorder:
            def start(self): pass
            def publish_emotion(self, p): events.append(("emotion", p, daemon.pipeline.stats.samples))
            def publish_utterance(self, p): events.append(("utterance", p, daemon.pipeline.stats.samples))
            def publish_health(self, p): pass
            def close(self, t): pass
            def set_status(self, s, reason=None): pass
            def stats(self): return {}

        class RecordingSource(FileSource):
            """Notes each piece's size and whether the frontend was idle when it was asked for."""

            def blocks(self):
                for block in super().blocks():
                    pieces.append((len(block), daemon.pipeline.frontend.idle))
                    yield block

        daemon = Daemon(settings, source=RecordingSource(speech_wav, realtime=False), sinks=[Recorder()])
        daemon.start()
        assert daemon.run() == 0
        return events, pieces

    plain, plain_pieces = run(100)
    coalesced, pieces = run(500)
    assert {n for n, _ in plain_pieces[:-1]} == {1600}
    assert sum(n == 8000 for n, idle in pieces if idle) >= 5  # the quiet stretches, five blocks at a time
    assert sum(n > 1600 for n, idle in pieces if not idle) >= 3  # inside speech too, where nothing can come out
    assert len(pieces) < 0.6 * len(plain_pieces)
    assert [k for k, _, _ in plain].count("utterance") == 2

    def content(events: list[tuple[str, dict, int]]) -> list[tuple[str, dict, int]]:  # the run id and its clock aside
        return [(k, {f: v for f, v in p.items() if f not in ("run", "ts", "start", "end")}, n) for k, p, n in events]

    assert content(coalesced) == content(plain)
