"""Crash safety of the audio loop: a model or sink that raises never takes the daemon down.

In-process :class:`Daemon` runs (the real model, frontend and smoother) with the
model or a sink wrapped to fail; systemd's NOTIFY_SOCKET is a Unix datagram
socket as in tests/test_service.py, so the watchdog pings and STATUS lines are
observed in the order the daemon sent them.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from emotiond.daemon.assembly import load_model
from emotiond.daemon.config import load_settings
from emotiond.daemon.service import Daemon
from emotiond.daemon.sources import ArraySource

SR = 16_000


class RecordingSink:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def start(self) -> None:
        pass

    def publish_emotion(self, p: dict[str, Any]) -> None:
        self.events.append(("emotion", p))

    def publish_utterance(self, p: dict[str, Any]) -> None:
        self.events.append(("utterance", p))

    def publish_health(self, p: dict[str, Any]) -> None:
        self.events.append(("health", p))

    def set_status(self, s: str, reason: str | None = None) -> None:
        self.events.append(("status", s))

    def close(self, t: float) -> None:
        self.events.append(("close", None))

    def stats(self) -> dict[str, Any]:
        return {}

    def of(self, kind: str) -> list[Any]:
        return [p for k, p in self.events if k == kind]


class PacedArraySource(ArraySource):
    """An array in 100 ms blocks, ``pause`` seconds apart (so the watchdog clock advances)."""

    def __init__(self, samples: np.ndarray, pause: float) -> None:
        super().__init__(samples, block=1600, name="paced")
        self.pause = pause

    def blocks(self) -> Iterator[np.ndarray]:
        for block in super().blocks():
            time.sleep(self.pause)
            yield block


class FailingModel:
    """Wraps the real model; ``fail(call_index, audio_time_s)`` decides which windows raise.

    Injected into the daemon in place of the real model; ``daemon`` (for the audio
    time) is set by :func:`make_daemon` once the daemon exists.
    """

    def __init__(self, real: Any, fail) -> None:
        self.real, self.fail = real, fail
        self.daemon: Daemon | None = None
        self.labels = real.labels
        self.info, self.path, self.runtime = real.info, real.path, real.runtime
        self.calls = 0
        self.failed: list[int] = []
        self.succeeded: list[int] = []

    def predict(self, window: np.ndarray) -> np.ndarray:
        i = self.calls
        self.calls += 1
        assert self.daemon is not None and self.daemon.pipeline is not None
        if self.fail(i, self.daemon.pipeline.audio_time_s):
            self.failed.append(i)
            raise RuntimeError(f"injected inference failure #{i}")
        self.succeeded.append(i)
        return self.real.predict(window)


def make_daemon(model_path: Path, source: Any, *extra: str, fail=None,
                first: tuple[Any, ...] = ()) -> tuple[Daemon, RecordingSink]:
    """A started daemon with a :class:`RecordingSink` (after ``first``) and, given ``fail``, a failing model."""
    settings = load_settings(None, ["mqtt.enabled=false", f"model.path={model_path}", "mqtt.health_interval_s=1",
                                    *extra], environ={})
    model = load_model(settings)
    if fail is not None:
        model = FailingModel(model, fail)
    rec = RecordingSink()
    daemon = Daemon(settings, source=source, model=model, sinks=[*first, rec])
    if isinstance(model, FailingModel):
        model.daemon = daemon
    daemon.start()
    return daemon, rec


def two_scenes(speech_scene) -> tuple[np.ndarray, list[tuple[float, float]]]:
    signal, spans = speech_scene
    both = np.concatenate([signal, signal])
    dur = len(signal) / SR
    return both, [*spans, *[(a + dur, b + dur) for a, b in spans]]


def test_model_failing_on_one_window_skips_it_and_carries_on(speech_scene, model_path, caplog) -> None:
    signal, spans = two_scenes(speech_scene)
    daemon, rec = make_daemon(model_path, ArraySource(signal), fail=lambda i, t: i == 2)
    model = daemon.model
    with caplog.at_level(logging.INFO):
        assert daemon.run() == 0
    assert model.failed == [2] and max(model.succeeded) > 2  # later windows still classified
    stats = daemon.pipeline.stats
    assert stats.model_failures == 1 and stats.windows == model.calls - 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    msg = errors[0].getMessage()  # with context: where in the audio, which segment, why
    assert "model failed on the window ending at" in msg and "segment" in msg and "injected inference failure #2" in msg
    assert len(rec.of("utterance")) == len(spans)  # every utterance still reported
    assert "degraded" not in rec.of("status")  # one bad window is not a degraded service


class NotifyReader:
    """systemd's side of NOTIFY_SOCKET, read on a thread (a full datagram queue would block the sender)."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.1)
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                self.lines += self.sock.recv(65536).decode().splitlines()
            except TimeoutError:
                continue

    def close(self) -> list[str]:
        time.sleep(0.2)
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
        return self.lines


@pytest.fixture()
def notify(tmp_path: Path, monkeypatch) -> Iterator[NotifyReader]:
    path = str(tmp_path / "notify.sock")
    reader = NotifyReader(path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # a ping every 50 ms while healthy
    yield reader
    reader.close()


def test_model_failing_on_every_window_degrades_stops_watchdog_and_recovers(speech_scene, model_path, notify,
                                                                             caplog) -> None:
    signal, spans = two_scenes(speech_scene)
    broken_until = spans[2][0] - 0.5  # the model is broken for the first scene, then comes back
    daemon, rec = make_daemon(model_path, PacedArraySource(signal, pause=0.01), fail=lambda i, t: t < broken_until)
    model = daemon.model
    with caplog.at_level(logging.INFO):
        assert daemon.run() == 0
    lines = notify.close()
    statuses = rec.of("status")
    assert "degraded" in statuses and statuses[statuses.index("degraded") + 1:][:1] == ["online"], statuses
    i_deg = next(i for i, m in enumerate(lines) if m.startswith("STATUS=degraded"))
    i_ok = next(i for i, m in enumerate(lines) if m == "STATUS=online" and i > i_deg)
    assert "model is failing" in lines[i_deg]
    assert "WATCHDOG=1" in lines[:i_deg], "pinged while healthy"
    assert "WATCHDOG=1" not in lines[i_deg:i_ok], "no pings while every window fails"
    assert "WATCHDOG=1" in lines[i_ok:], "pings again after recovery"
    assert len(model.failed) >= 3 and model.succeeded
    assert min(model.succeeded) > max(model.failed)
    # the second scene was classified again
    assert len([u for u in rec.of("utterance") if u["offset_s"] > broken_until]) == 2
    failures = [r for r in caplog.records if "model failed on the window" in r.getMessage()]
    assert len(failures) == 1  # logged once per failing streak, not once per window
    assert sum("degraded: the model is failing" in r.getMessage() for r in caplog.records) == 1


class ExplodingSink(RecordingSink):
    def _boom(self, *a: Any) -> None:
        raise RuntimeError("sink exploded")

    publish_emotion = publish_utterance = publish_health = set_status = _boom  # type: ignore[assignment]


def test_a_sink_that_raises_does_not_stop_the_loop(speech_scene, model_path, caplog) -> None:
    signal, spans = two_scenes(speech_scene)
    bad = ExplodingSink()  # first, so the good sink runs after it every time
    daemon, rec = make_daemon(model_path, ArraySource(signal), first=(bad,))
    with caplog.at_level(logging.INFO):
        assert daemon.run() == 0
    assert len(rec.of("utterance")) == len(spans)
    assert rec.of("emotion") and rec.of("emotion")[-1]["emotion"] == "none"
    assert daemon.pipeline.stats.samples == len(signal)  # the whole input was processed
    assert any("sink ExplodingSink.publish_utterance failed" in r.getMessage() for r in caplog.records)
