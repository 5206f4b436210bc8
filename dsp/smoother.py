"""Smoother: window probabilities → a steady current emotion and per-utterance summaries.

A 1 s window every 250 ms is noisy: on its own, the top label flips several
times per sentence. Users want two things instead: a *state* that changes
only when the emotion really changes (for dashboards and automations), and
one *summary per utterance* (for logs and per-sentence reactions). Both are
computed here from plain arrays; times are audio seconds from the stream
start, so the smoother behaves the same live, from a file, or at ``--fast``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

NO_SPEECH = "none"


@dataclass(frozen=True)
class SmootherParams:
    method: str = "ema"  # "ema" or "mean"
    ema_alpha: float = 0.5  # weight of the newest window (ema)
    mean_windows: int = 4  # windows averaged (mean)
    min_confidence: float = 0.35
    min_dwell_s: float = 1.0
    release_s: float = 2.0


@dataclass(frozen=True)
class EmotionState:
    emotion: str
    confidence: float
    probabilities: dict[str, float]
    audio_time_s: float


@dataclass(frozen=True)
class UtteranceSummary:
    segment: int
    start_s: float
    end_s: float
    emotion: str
    confidence: float
    probabilities: dict[str, float]
    n_windows: int

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass
class _Segment:
    segment: int
    sums: np.ndarray
    n: int = 0


@dataclass
class Smoother:
    labels: tuple[str, ...]
    params: SmootherParams = field(default_factory=SmootherParams)

    def __post_init__(self) -> None:
        self._avg: np.ndarray | None = None
        self._recent: list[np.ndarray] = []
        self._current = NO_SPEECH
        self._changed_at = -1e9
        self._last_window_t = -1e9
        self._segment: _Segment | None = None

    @property
    def current(self) -> str:
        return self._current

    def _dict(self, probs: np.ndarray) -> dict[str, float]:
        return {label: round(float(p), 4) for label, p in zip(self.labels, probs, strict=True)}

    def _smooth(self, probs: np.ndarray) -> np.ndarray:
        p = self.params
        if p.method == "mean":
            self._recent = [*self._recent[-(p.mean_windows - 1) :], probs] if p.mean_windows > 1 else [probs]
            return np.mean(self._recent, axis=0)
        if self._avg is None:
            return probs
        return p.ema_alpha * probs + (1.0 - p.ema_alpha) * self._avg

    def on_window(self, segment: int, probs: np.ndarray, t_s: float) -> EmotionState | None:
        """Take one window's probabilities ending at audio time ``t_s``; a new state if it changed."""
        probs = np.asarray(probs, dtype=np.float64)
        if self._segment is None or self._segment.segment != segment:
            self._segment = _Segment(segment, np.zeros(len(self.labels)))
        self._segment.sums += probs
        self._segment.n += 1
        self._avg = self._smooth(probs)
        self._last_window_t = t_s
        best = int(np.argmax(self._avg))
        confidence = float(self._avg[best])
        label = self.labels[best]
        if confidence < self.params.min_confidence or label == self._current:
            return None
        if self._current != NO_SPEECH and t_s - self._changed_at < self.params.min_dwell_s:
            return None
        self._current = label
        self._changed_at = t_s
        return EmotionState(label, round(confidence, 4), self._dict(self._avg), t_s)

    def on_segment_end(self, segment: int, start_s: float, end_s: float) -> UtteranceSummary | None:
        """Close an utterance; its summary is the plain mean of its windows (None if it had none)."""
        seg, self._segment = self._segment, None
        if seg is None or seg.segment != segment or seg.n == 0:
            return None
        mean = seg.sums / seg.n
        best = int(np.argmax(mean))
        return UtteranceSummary(
            segment, start_s, end_s, self.labels[best], round(float(mean[best]), 4), self._dict(mean), seg.n
        )

    def release_at(self) -> float | None:
        """Audio time from which ``on_time`` releases to no-speech, or None while there is nothing to release."""
        return None if self._current == NO_SPEECH else self._last_window_t + self.params.release_s

    def on_time(self, t_s: float) -> EmotionState | None:
        """Release back to no-speech once no window has arrived for ``release_s``."""
        if self._current == NO_SPEECH or t_s - self._last_window_t < self.params.release_s:
            return None
        self._current = NO_SPEECH
        self._changed_at = t_s
        self._avg = None
        self._recent = []
        return EmotionState(NO_SPEECH, 0.0, {label: 0.0 for label in self.labels}, t_s)
