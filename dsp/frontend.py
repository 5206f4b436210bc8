"""The DSP half of the pipeline: VAD → denoise → features → windows.

Training, offline classification and the live daemon all run audio through
this one class, so the windows a model was trained on are exactly those the
daemon feeds it: same VAD decisions, same noise gate, same log-mel, same
normalisation and padding. Feeding a clip whole or in 10 ms chunks gives the
same windows (see ``tests/test_frontend.py``).

Flow per ``push``: complete 25 ms frames get their power spectrum at once;
they wait until the VAD has decided the sample at their centre; non-speech
frames teach the noise gate, speech frames are gated, turned to log-mel and
appended to the current utterance; every ``hop_frames`` a window of the last
``window_frames`` frames is emitted.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from .adapt import PerWindowMean, SegmentStats, WindowNormaliser
from .denoise import GateParams, SpectralGate
from .features import FEATURES, FeatureConfig, Spectrum, StreamingFramer
from .vad import Span, VadParams, VoiceActivitySegmenter


@dataclass(frozen=True)
class WindowParams:
    window_frames: int = 100  # 1.0 s of 10 ms frames
    hop_frames: int = 25  # a prediction every 250 ms
    min_frames: int = 20  # shorter utterances are not classified

    def __post_init__(self) -> None:
        if self.hop_frames <= 0:
            raise ValueError("hop_frames must be positive")
        if not 0 < self.min_frames <= self.window_frames:
            raise ValueError("min_frames must be in 1..window_frames")


@dataclass(frozen=True)
class SegmentStart:
    segment: int
    sample: int


@dataclass(frozen=True)
class Window:
    """One normalised model input ``(window_frames, n_mels)`` and where it lies."""

    segment: int
    features: np.ndarray
    start_sample: int
    end_sample: int
    n_frames: int  # speech frames in it (< window_frames when padded)


@dataclass(frozen=True)
class SegmentEnd:
    segment: int
    start_sample: int
    end_sample: int
    n_windows: int
    stats: SegmentStats | None = None  # its speech frames' sufficient statistics (the adapt stage learns from them)


FrontendEvent = SegmentStart | Window | SegmentEnd


class _Utterance:
    """Log-mel frames of the open segment, keeping only the last window's worth."""

    def __init__(self, segment: int, start_sample: int, window: WindowParams, n_mels: int) -> None:
        self.segment = segment
        self.start_sample = start_sample
        self.window = window
        self._buf = np.zeros((2 * window.window_frames, n_mels), dtype=np.float32)
        self._len = 0
        self.n_frames = 0
        self.n_windows = 0
        self.frames_at_last_window = 0
        self.end_sample = start_sample
        self.stats = SegmentStats(total=np.zeros(n_mels), total_sq=np.zeros(n_mels))

    def append(self, frame: np.ndarray) -> None:
        if self._len == len(self._buf):
            keep = self.window.window_frames
            self._buf[:keep] = self._buf[-keep:]
            self._len = keep
        self._buf[self._len] = frame
        self._len += 1
        self.n_frames += 1

    def recent(self) -> np.ndarray:
        return self._buf[max(0, self._len - self.window.window_frames) : self._len]


class Frontend:
    """Streaming VAD → spectral gate → log-mel → sliding windows."""

    def __init__(
        self,
        vad: VadParams = VadParams(),
        gate: GateParams = GateParams(),
        window: WindowParams = WindowParams(),
        cfg: FeatureConfig = FEATURES,
        normaliser: WindowNormaliser | None = None,
    ) -> None:
        self.cfg = cfg
        self.window = window
        self.normaliser: WindowNormaliser = normaliser if normaliser is not None else PerWindowMean()
        self.spectrum = Spectrum(cfg)
        self.framer = StreamingFramer(cfg)
        self.vad = VoiceActivitySegmenter(vad, cfg.sample_rate)
        self.gate = SpectralGate(gate, cfg)
        self._spans: deque[Span] = deque()
        self._pending_power: deque[np.ndarray] = deque()  # blocks of (n, n_bins)
        self._next_frame = 0  # index of the first frame in _pending_power
        self._utt: _Utterance | None = None
        self._gated_index = 0  # frame index of the next frame the gate returns
        self.samples_seen = 0

    def push(self, chunk: np.ndarray) -> list[FrontendEvent]:
        """Process float samples (16 kHz mono, any length); return what they completed."""
        chunk = np.asarray(chunk, dtype=np.float64)
        self.samples_seen += len(chunk)
        frames = self.framer.push(chunk)
        if len(frames):
            self._pending_power.append(self.spectrum.power(frames))
        self._spans.extend(self.vad.push(chunk))
        return self._drain(final=False)

    def flush(self) -> list[FrontendEvent]:
        """End of input: decide the rest, close any open utterance."""
        self._spans.extend(self.vad.flush())
        events = self._drain(final=True)
        if self._utt is not None:
            events.extend(self._close())
        return events

    # -- internals ---------------------------------------------------------

    def _frame_centre(self, index: int) -> int:
        return index * self.cfg.hop_length + self.cfg.frame_length // 2

    def _drain(self, final: bool) -> list[FrontendEvent]:
        events: list[FrontendEvent] = []
        decided = self.vad.decided_until
        while self._pending_power:
            block = self._pending_power[0]
            # How many frames of this block have their centre decided?
            n_ready = 0
            while n_ready < len(block) and (final or self._frame_centre(self._next_frame + n_ready) < decided):
                n_ready += 1
            if n_ready == 0:
                break
            self._label_and_route(block[:n_ready], events)
            if n_ready == len(block):
                self._pending_power.popleft()
            else:
                self._pending_power[0] = block[n_ready:]
                break
        return events

    def _label_and_route(self, powers: np.ndarray, events: list[FrontendEvent]) -> None:
        """Split consecutive frames into runs of one label and route each run."""
        i = 0
        while i < len(powers):
            centre = self._frame_centre(self._next_frame)
            while self._spans and self._spans[0].end <= centre:
                self._spans.popleft()
            span = self._spans[0] if self._spans else Span(centre, centre + 1, False)
            # frames of this run: all whose centre lies inside the span
            last_centre = span.end - 1
            n = min(len(powers) - i, (last_centre - centre) // self.cfg.hop_length + 1)
            run = powers[i : i + n]
            if span.speech:
                self._speech(run, span, events)
            else:
                if self._utt is not None:
                    events.extend(self._close())
                self.gate.learn(run)
            self._next_frame += n
            i += n

    def _speech(self, run: np.ndarray, span: Span, events: list[FrontendEvent]) -> None:
        if self._utt is not None and self._utt.segment != span.segment:
            events.extend(self._close())
        if self._utt is None:
            start = self._next_frame * self.cfg.hop_length
            self._utt = _Utterance(span.segment, start, self.window, self.cfg.n_mels)
            self._gated_index = self._next_frame
            self.gate.begin_segment()
            events.append(SegmentStart(span.segment, start))
        self._add_gated(self.gate.apply(run), events)

    def _add_gated(self, gated: np.ndarray, events: list[FrontendEvent]) -> None:
        utt = self._utt
        assert utt is not None
        if len(gated) == 0:
            return
        w = self.window
        log_mel = self.spectrum.log_mel(gated)
        utt.stats.add(log_mel)
        for frame in log_mel:
            utt.append(frame)
            self._gated_index += 1
            utt.end_sample = (self._gated_index - 1) * self.cfg.hop_length + self.cfg.frame_length
            since = utt.n_frames - w.window_frames
            if since >= 0 and since % w.hop_frames == 0:
                events.append(self._window(utt))

    def _window(self, utt: _Utterance) -> Window:
        utt.n_windows += 1
        utt.frames_at_last_window = utt.n_frames
        recent = utt.recent()
        start = utt.end_sample - self.cfg.frame_length - (len(recent) - 1) * self.cfg.hop_length
        features = self.normaliser.window(recent, self.window.window_frames)
        return Window(utt.segment, features, start, utt.end_sample, len(recent))

    def _close(self) -> list[FrontendEvent]:
        utt = self._utt
        assert utt is not None
        events: list[FrontendEvent] = []
        self._add_gated(self.gate.end_segment(), events)
        w = self.window
        if utt.n_windows == 0:
            if utt.n_frames >= w.min_frames:
                events.append(self._window(utt))
        elif utt.n_frames - utt.frames_at_last_window >= w.hop_frames // 2:
            events.append(self._window(utt))
        # The utterance is judged first, then learnt from: live and in training alike.
        self.normaliser.observe(utt.stats)
        events.append(SegmentEnd(utt.segment, utt.start_sample, utt.end_sample, utt.n_windows, utt.stats))
        self._utt = None
        return events


def clip_windows(
    signal: np.ndarray,
    vad: VadParams = VadParams(),
    gate: GateParams = GateParams(),
    window: WindowParams = WindowParams(),
    normaliser: WindowNormaliser | None = None,
) -> list[Window]:
    """All windows the live daemon would classify for one 16 kHz clip."""
    fe = Frontend(vad, gate, window, normaliser=normaliser)
    events = fe.push(signal) + fe.flush()
    return [e for e in events if isinstance(e, Window)]
