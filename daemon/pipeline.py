"""The audio loop's stages wired together: frontend → model → calibrate → smoother → sinks.

``Pipeline.process`` takes one block of 16 kHz audio and does everything that
block completes, synchronously, on the caller's thread; there are no threads
here. It is the same object in the daemon, in ``eval --mode stream`` and in
the benchmarks, so what they measure is what the daemon does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..dsp.calibrate import Calibrator
from ..dsp.features import SAMPLE_RATE
from ..dsp.frontend import Frontend, SegmentEnd, SegmentStart, Window
from ..dsp.smoother import EmotionState, Smoother, SmootherParams, UtteranceSummary
from .payloads import PayloadFactory
from .sinks import Sink, SinkSet

log = logging.getLogger(__name__)


class Predictor:
    """Anything with ``predict(window) -> probabilities`` and ``labels`` (the TFLite model)."""

    labels: tuple[str, ...]

    def predict(self, window: np.ndarray) -> np.ndarray: ...


@dataclass
class PipelineStats:
    samples: int = 0
    windows: int = 0
    utterances: int = 0
    unclassified_utterances: int = 0
    emotion_changes: int = 0
    model_failures: int = 0
    consecutive_failures: int = 0
    blocks: int = 0
    frontend_s: float = 0.0
    model_s: float = 0.0
    smoother_s: float = 0.0
    sinks_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.__dict__.items() if k != "extra"}


class Pipeline:
    def __init__(
        self,
        frontend: Frontend,
        model: Predictor,
        smoother: Smoother,
        payloads: PayloadFactory,
        sinks: Sequence[Sink] | SinkSet,
        on_utterance: Callable[[UtteranceSummary, dict[str, Any]], None] | None = None,
        calibrator: Calibrator | None = None,
    ) -> None:
        self.frontend = frontend
        self.model = model
        self.calibrator = calibrator
        self.smoother = smoother
        self.payloads = payloads
        self.sinks = sinks if isinstance(sinks, SinkSet) else SinkSet(sinks)
        self.on_utterance = on_utterance
        self.stats = PipelineStats()
        self._failure_logged = False
        self._offset = 0  # samples before the current frontend started

    def reconfigure(
        self,
        *,
        frontend: Frontend | None = None,
        smoother: SmootherParams | None = None,
        sinks: Sequence[Sink] | None = None,
        device: str | None = None,
    ) -> None:
        """The one way to change a running pipeline (SIGHUP reload); what is not given stays.

        A new ``frontend`` takes over after the old one's open utterance is
        closed, without losing the audio clock; new ``smoother`` parameters and
        ``device`` apply from the next event; new ``sinks`` join the same
        :class:`SinkSet`, so the failure count carries on.
        """
        if frontend is not None:
            self._handle(self.frontend.flush())
            if self.calibrator is not None and frontend.window.hop_frames != self.frontend.window.hop_frames:
                self.calibrator.prior.recount(self.frontend.window.hop_frames / frontend.window.hop_frames)
            self.frontend = frontend
            self._offset = self.stats.samples
        if smoother is not None:
            self.smoother.params = smoother
        if sinks is not None:
            self.sinks.replace(sinks)
        if device is not None:
            self.payloads.device = device

    def _t(self, sample: int) -> float:
        return (self._offset + sample) / SAMPLE_RATE

    @property
    def audio_time_s(self) -> float:
        return self.stats.samples / SAMPLE_RATE

    @property
    def failing(self) -> bool:
        """True while the model has failed on the last few windows in a row."""
        return self.stats.consecutive_failures >= 3

    def process(self, block: np.ndarray) -> None:
        # Called ten times a second for months: kept to the few Python steps a quiet
        # block needs (see docs/performance.md, live cost). The smoother's release
        # check is a comparison and is not timed.
        stats = self.stats
        stats.blocks += 1
        stats.samples += len(block)
        t0 = time.perf_counter()
        events = self.frontend.push(block)
        stats.frontend_s += time.perf_counter() - t0
        if events:
            self._handle(events)
        released = self.smoother.on_time(stats.samples / SAMPLE_RATE)
        if released is not None:
            self._emit_state(released)

    def quiet_samples(self) -> int:
        """How many more samples can certainly be processed without publishing anything (0: the next block may).

        The frontend's bound (no window, no segment end) and the smoother's release to
        no-speech. The daemon takes that much audio in one piece, so each event still
        leaves with the same block (docs/performance.md).
        """
        quiet = self.frontend.quiet_samples()
        release = self.smoother.release_at()
        if quiet and release is not None:  # on_time releases once samples / SAMPLE_RATE - last window >= release_s
            quiet = min(quiet, max(0, int(release * SAMPLE_RATE) - self.stats.samples - 2))
        return quiet

    def blocks_to_take(self, block_ms: int, most_ms: int) -> int:
        """Blocks of ``block_ms`` to read as the next piece: all that certainly publish nothing, plus the one
        that may, within ``most_ms``. Fewer wake-ups for a paced daemon; every event leaves with the same block."""
        block_samples = max(1, SAMPLE_RATE * block_ms // 1000)
        return min(max(1, most_ms // block_ms), 1 + self.quiet_samples() // block_samples)

    def finish(self) -> None:
        """End of input: close the open utterance and release the state."""
        t0 = time.perf_counter()
        events = self.frontend.flush()
        self.stats.frontend_s += time.perf_counter() - t0
        self._handle(events)
        released = self.smoother.on_time(self.audio_time_s + self.smoother.params.release_s)
        if released is not None:
            self._emit_state(released)

    def _handle(self, events: list[SegmentStart | Window | SegmentEnd]) -> None:
        for event in events:
            if isinstance(event, Window):
                self._window(event)
            elif isinstance(event, SegmentEnd):
                self._segment_end(event)

    def _window(self, window: Window) -> None:
        t0 = time.perf_counter()
        try:
            probs = self.model.predict(window.features)
        except Exception as exc:  # one bad window must not stop the daemon
            self.stats.model_failures += 1
            self.stats.consecutive_failures += 1
            if not self._failure_logged:
                log.error(
                    "model failed on the window ending at %.2f s (segment %d): %s; skipping it",
                    self._t(window.end_sample), window.segment, exc,
                )
                self._failure_logged = True
            return
        finally:
            self.stats.model_s += time.perf_counter() - t0
        self.stats.windows += 1
        self.stats.consecutive_failures = 0
        self._failure_logged = False
        t1 = time.perf_counter()
        if self.calibrator is not None:
            probs = self.calibrator.window(window.segment, probs)
        state = self.smoother.on_window(window.segment, probs, self._t(window.end_sample))
        self.stats.smoother_s += time.perf_counter() - t1
        if state is not None:
            self._emit_state(state)

    def _segment_end(self, end: SegmentEnd) -> None:
        summary = self.smoother.on_segment_end(end.segment, self._t(end.start_sample), self._t(end.end_sample))
        if self.calibrator is not None:  # after the summary: an utterance never corrects itself
            self.calibrator.segment_end(end.segment)
        if summary is None:
            self.stats.unclassified_utterances += 1
            return
        self.stats.utterances += 1
        payload = self.payloads.utterance(summary, self.audio_time_s)
        t0 = time.perf_counter()
        self.sinks.publish_utterance(payload)
        self.stats.sinks_s += time.perf_counter() - t0
        if self.on_utterance is not None:
            self.on_utterance(summary, payload)

    def _emit_state(self, state: EmotionState) -> None:
        self.stats.emotion_changes += 1
        payload = self.payloads.emotion(state, self.audio_time_s)
        t0 = time.perf_counter()
        self.sinks.publish_emotion(payload)
        self.stats.sinks_s += time.perf_counter() - t0
