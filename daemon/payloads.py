"""The MQTT/JSON event contract: topics and payload fields, versioned by ``schema``.

Subscribers (Home Assistant, Node-RED, scripts) depend on these names; the
contract test in ``tests/test_payloads.py`` freezes them and docs/mqtt.md
documents them. Change a field only together with ``SCHEMA_VERSION``.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .. import __version__
from ..dsp.smoother import EmotionState, UtteranceSummary

SCHEMA_VERSION = 1
STATUS_ONLINE = "online"
STATUS_OFFLINE = "offline"
STATUS_DEGRADED = "degraded"


@dataclass(frozen=True)
class Topics:
    base: str
    device: str

    @property
    def root(self) -> str:
        return f"{self.base}/{self.device}"

    @property
    def status(self) -> str:
        return f"{self.root}/status"

    @property
    def emotion(self) -> str:
        return f"{self.root}/emotion"

    @property
    def utterance(self) -> str:
        return f"{self.root}/utterance"

    @property
    def health(self) -> str:
        return f"{self.root}/health"

    @property
    def problem(self) -> str:
        """Retained JSON ``{"problem": bool, "reason": …}``: *degraded* lives here, not in ``status``."""
        return f"{self.root}/problem"


def iso_utc(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


CLOCK_WALL = "wall"
CLOCK_AUDIO = "audio"


def health_message(body: dict[str, Any], device: str, status: str, mqtt: dict[str, Any]) -> dict[str, Any]:
    """The health message as published: ``schema``/``device``/``ts`` now, ``status`` if ``body`` has none.

    ``mqtt`` (the sinks' live counters) is merged over ``body["mqtt"]``, so a
    health re-published after a reconnect or at shutdown carries current figures.
    """
    out = {"schema": SCHEMA_VERSION, "device": device, "ts": iso_utc(time.time()), **body}
    out.setdefault("status", status)
    out["mqtt"] = {**(body.get("mqtt") or {}), **mqtt}
    return out


class PayloadFactory:
    """Turns smoother output into payload dicts with one monotonic ``seq`` per run.

    ``run`` (the start time in ms) lets a subscriber de-duplicate by
    ``(run, seq)`` across daemon restarts, where ``seq`` starts again at 1.

    Times (docs/mqtt.md, "Times"): every payload time is a UTC time of a point in
    the audio. ``now_s`` is how much audio the pipeline has processed when the
    event is made.

    * ``clock="wall"`` (microphone, a file paced in real time): a point ``x`` s into
      the audio is stamped ``time.time() - (now_s - x)``, i.e. when it was heard,
      and stays right after a microphone gap.
    * ``clock="audio"`` (``--fast``, stdin, arrays): ``run start + x``, the audio's own
      timeline from the start of the run; it runs ahead of the wall clock when the
      input is processed faster than real time.

    In both, an utterance's ``ts`` is the moment its summary was made
    (``now_s``), so ``start ≤ end ≤ ts``; no time is later than ``now_s``
    (the final ``none`` at the end of an input is stamped at its last sample);
    and ``ts`` never decreases from one event to the next.
    """

    def __init__(self, device: str, stream_start_epoch: float | None = None, clock: str = CLOCK_AUDIO) -> None:
        if clock not in (CLOCK_WALL, CLOCK_AUDIO):
            raise ValueError(f"clock must be {CLOCK_WALL!r} or {CLOCK_AUDIO!r}, not {clock!r}")
        self.device = device
        self.clock = clock
        self.stream_start_epoch = time.time() if stream_start_epoch is None else stream_start_epoch
        self.run = int(self.stream_start_epoch * 1000)
        self._seq = itertools.count(1)
        self._last_ts = 0.0

    def _common(self) -> dict[str, Any]:
        return {"schema": SCHEMA_VERSION, "device": self.device, "run": self.run, "seq": next(self._seq)}

    def _epoch(self, audio_s: float, now_s: float, wall: float) -> float:
        audio_s = min(audio_s, now_s)
        if self.clock == CLOCK_WALL:
            return wall - (now_s - audio_s)
        return self.stream_start_epoch + audio_s

    def _ts(self, epoch: float) -> str:
        self._last_ts = max(self._last_ts, epoch)
        return iso_utc(self._last_ts)

    def health(
        self,
        status: str,
        *,
        uptime_s: float,
        audio_s: float,
        process: dict[str, float | None],
        source: str | None,
        overruns: int,
        model: dict[str, str],
        pipeline: dict[str, Any],
        adapt: dict[str, Any] | None,
        sink_failures: int,
        sinks: dict[str, Any],
    ) -> dict[str, Any]:
        """The retained health message (docs/mqtt.md, "health"); ``process``: ``cpu_s``, ``rss_mb``, ``peak_rss_mb``."""
        body = {
            "status": status,
            "version": __version__,
            "uptime_s": round(uptime_s, 1),
            "audio_s": round(audio_s, 1),
            **process,
            "source": source,
            "overruns": overruns,
            "model": model,
            "pipeline": pipeline,
            "adapt": adapt,
            "sink_failures": sink_failures,
        }
        return health_message(body, self.device, status, sinks)

    def emotion(self, state: EmotionState, now_s: float | None = None) -> dict[str, Any]:
        now = state.audio_time_s if now_s is None else now_s
        return {
            **self._common(),
            "ts": self._ts(self._epoch(state.audio_time_s, now, time.time())),
            "emotion": state.emotion,
            "confidence": state.confidence,
            "probabilities": state.probabilities,
        }

    def utterance(self, summary: UtteranceSummary, now_s: float | None = None) -> dict[str, Any]:
        now = max(summary.end_s, summary.end_s if now_s is None else now_s)
        wall = time.time()
        return {
            **self._common(),
            "ts": self._ts(self._epoch(now, now, wall)),
            "start": iso_utc(self._epoch(summary.start_s, now, wall)),
            "end": iso_utc(self._epoch(summary.end_s, now, wall)),
            "offset_s": round(summary.start_s, 3),
            "duration_s": round(summary.duration_s, 3),
            "emotion": summary.emotion,
            "confidence": summary.confidence,
            "probabilities": summary.probabilities,
            "windows": summary.n_windows,
        }
