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


class PayloadFactory:
    """Turns smoother output into payload dicts with one monotonic ``seq`` per run.

    ``run`` (the start time in ms) lets a subscriber de-duplicate by
    ``(run, seq)`` across daemon restarts, where ``seq`` starts again at 1.
    Audio times become wall-clock times through the stream's start time.
    """

    def __init__(self, device: str, stream_start_epoch: float | None = None) -> None:
        self.device = device
        self.stream_start_epoch = time.time() if stream_start_epoch is None else stream_start_epoch
        self.run = int(self.stream_start_epoch * 1000)
        self._seq = itertools.count(1)

    def _common(self) -> dict[str, Any]:
        return {"schema": SCHEMA_VERSION, "device": self.device, "run": self.run, "seq": next(self._seq)}

    def emotion(self, state: EmotionState) -> dict[str, Any]:
        return {
            **self._common(),
            "ts": iso_utc(self.stream_start_epoch + state.audio_time_s),
            "emotion": state.emotion,
            "confidence": state.confidence,
            "probabilities": state.probabilities,
        }

    def utterance(self, summary: UtteranceSummary) -> dict[str, Any]:
        return {
            **self._common(),
            "ts": iso_utc(time.time()),
            "start": iso_utc(self.stream_start_epoch + summary.start_s),
            "end": iso_utc(self.stream_start_epoch + summary.end_s),
            "offset_s": round(summary.start_s, 3),
            "duration_s": round(summary.duration_s, 3),
            "emotion": summary.emotion,
            "confidence": summary.confidence,
            "probabilities": summary.probabilities,
            "windows": summary.n_windows,
        }
