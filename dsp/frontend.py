"""The DSP half of the pipeline: VAD → denoise → features → windows.

Training, offline classification and the live daemon all run audio through
this one class, so the windows a model was trained on are exactly those the
daemon feeds it: same VAD decisions, same noise gate, same log-mel, same
normalisation and padding. Feeding a clip whole or in 10 ms chunks gives the
same windows (see ``tests/test_frontend.py``).

Flow per ``push``: samples go into one buffer written in place; the VAD
decides; frames whose centre is decided are routed in runs of one label.
Speech runs get their power spectrum, are gated, turned to log-mel and
appended to the current utterance; every ``hop_frames`` a window of the last
``window_frames`` frames is emitted. Non-speech frames only teach the noise
gate, and lazily: their spectra are computed in one batch when a segment
starts (or before their samples leave the buffer), and only for the
``profile_s`` worth of them the gate's profile can hold. A live daemon hearing
no speech so pays for little more than the VAD (see docs/performance.md).
The lazy profile learns exactly the frames the eager one would, so windows
are unchanged (``tests/test_frontend.py`` checks against an eager reference).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from .adapt import AdaptParams, PerWindowMean, SegmentStats, WindowNormaliser
from .denoise import DenoiseParams, SpectralGate
from .features import FEATURES, FeatureConfig, Spectrum, feature_config, frame_count, frames_at
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


def _known(cls: type, values: Any) -> Any:
    """``cls`` built from the keys of ``values`` it knows (a sidecar may carry more, or fewer)."""
    if values is None:
        return cls()
    if not isinstance(values, Mapping):
        raise ValueError(f"expected an object of {cls.__name__} fields, got {type(values).__name__}")
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


@dataclass(frozen=True)
class FrontendParams:
    """Every parameter of vad → denoise → features → windows → adapt a model is trained with: the one definition.

    Training writes it into the model's sidecar (``to_sidecar``), the runtime
    reads it back from there (``from_sidecar``) and the daemon's configuration
    overrides only what may differ from training (``daemon/assembly.py``). One
    owner, so an evaluation, a benchmark and the daemon cannot drift apart.
    """

    vad: VadParams = field(default_factory=VadParams)
    denoise: DenoiseParams = field(default_factory=DenoiseParams)
    window: WindowParams = field(default_factory=WindowParams)
    adapt: AdaptParams = field(default_factory=AdaptParams)
    features: FeatureConfig = FEATURES

    def to_sidecar(self) -> dict[str, Any]:
        """The sidecar keys (``adapt`` without the statistics, which training adds)."""
        return {
            "window_frames": self.window.window_frames,
            "hop_frames": self.window.hop_frames,
            "min_frames": self.window.min_frames,
            "vad": asdict(self.vad),
            "denoise": asdict(self.denoise),
            "adapt": asdict(self.adapt),
        }

    @classmethod
    def from_sidecar(cls, data: Mapping[str, Any]) -> FrontendParams:
        """Read back what ``to_sidecar`` wrote; absent keys take the defaults.

        Sidecars before 2.1 name the denoise parameters ``gate``; they are read
        the same. Raises ``ValueError``/``TypeError`` for a value the stages refuse.
        """
        default = WindowParams()
        window = WindowParams(
            window_frames=int(data.get("window_frames", default.window_frames)),
            hop_frames=int(data.get("hop_frames", default.hop_frames)),
            min_frames=int(data.get("min_frames", default.min_frames)),
        )
        denoise = data["denoise"] if "denoise" in data else data.get("gate")
        features = feature_config(data["features"]) if "features" in data else FEATURES
        return cls(_known(VadParams, data.get("vad")), _known(DenoiseParams, denoise), window,
                   _known(AdaptParams, data.get("adapt")), features)

    def frontend(self, normaliser: WindowNormaliser | None = None) -> Frontend:
        """A fresh streaming front end with exactly these parameters."""
        return Frontend(self.vad, self.denoise, self.window, self.features, normaliser)

    def cache_dict(self) -> dict[str, Any]:
        """What the raw windows depend on, for training's feature-cache key.

        The adapt stage is left out (training caches windows before it), and
        the denoise entry keeps its old name ``gate``, so a cache built before
        the rename is still found (``tests/test_training_data.py`` pins the key).
        """
        return {"vad": asdict(self.vad), "gate": asdict(self.denoise), "window": asdict(self.window)}


@dataclass(frozen=True)
class SegmentStart:
    segment: int
    sample: int


@dataclass(frozen=True)
class Window:
    """One normalised model input ``(window_frames, n_features)`` and where it lies."""

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

    def __init__(self, segment: int, start_sample: int, window: WindowParams, n_features: int) -> None:
        self.segment = segment
        self.start_sample = start_sample
        self.window = window
        self._buf = np.zeros((2 * window.window_frames, n_features), dtype=np.float32)
        self._len = 0
        self.n_frames = 0
        self.n_windows = 0
        self.frames_at_last_window = 0
        self.end_sample = start_sample
        self.stats = SegmentStats(total=np.zeros(n_features), total_sq=np.zeros(n_features))

    def extend(self, frames: np.ndarray) -> None:
        self.n_frames += len(frames)
        frames = frames[-self.window.window_frames :]  # only the last window's worth is ever read
        n = len(frames)
        if self._len + n > len(self._buf):
            keep = self.window.window_frames
            self._buf[:keep] = self._buf[self._len - keep : self._len]
            self._len = keep
        self._buf[self._len : self._len + n] = frames
        self._len += n

    def recent(self) -> np.ndarray:
        return self._buf[max(0, self._len - self.window.window_frames) : self._len]


class _AudioBuffer:
    """The stream's recent samples, written in place; old ones are dropped only when space runs out."""

    def __init__(self, seconds: float, sample_rate: int) -> None:
        self._buf = np.zeros(int(seconds * sample_rate), dtype=np.float64)
        self.start = 0  # stream index of _buf[0]
        self.end = 0  # stream index one past the last sample

    def fits(self, n: int, keep_from: int | None = None) -> bool:
        """Whether ``n`` more samples fit, keeping those from ``keep_from`` on (all when None)."""
        first = self.start if keep_from is None else max(min(keep_from, self.end), self.start)
        return self.end - first + n <= len(self._buf)

    def write(self, chunk: np.ndarray, keep_from: int) -> None:
        """Append ``chunk``; when full, forget samples before ``keep_from`` first (and grow if still short)."""
        n = len(chunk)
        if not self.fits(n):
            keep_from = min(max(keep_from, self.start), self.end)
            kept = self.end - keep_from
            buf = self._buf if kept + n <= len(self._buf) else np.zeros(max(kept + n, 2 * len(self._buf)))
            buf[:kept] = self._buf[keep_from - self.start : self.end - self.start]
            self._buf, self.start = buf, keep_from
        self._buf[self.end - self.start : self.end - self.start + n] = chunk
        self.end += n

    def samples(self, first: int, n: int) -> np.ndarray:
        """Samples ``first … first + n - 1`` (stream indices) as a view."""
        return self._buf[first - self.start : first - self.start + n]

    def frames(self, first: int, n: int, cfg: FeatureConfig) -> np.ndarray:
        """Frames ``first … first + n - 1`` (stream frame indices) as a view."""
        return frames_at(self._buf[: self.end - self.start], first * cfg.hop_length - self.start, n, cfg)


class Frontend:
    """Streaming VAD → spectral gate → log-mel → sliding windows."""

    def __init__(
        self,
        vad: VadParams = VadParams(),
        denoise: DenoiseParams = DenoiseParams(),
        window: WindowParams = WindowParams(),
        cfg: FeatureConfig = FEATURES,
        normaliser: WindowNormaliser | None = None,
    ) -> None:
        self.cfg = cfg
        self.window = window
        self.normaliser: WindowNormaliser = normaliser if normaliser is not None else PerWindowMean()
        self.spectrum = Spectrum(cfg)
        self.vad = VoiceActivitySegmenter(vad, cfg.sample_rate)
        self.denoise = SpectralGate(denoise, cfg)  # the denoise stage (noisereduce's spectral gate)
        # Holds the undecided audio (≤ ~0.5 s) plus the non-speech frames the
        # profile has not learned yet (≤ profile_s), with room to spare.
        self._audio = _AudioBuffer(denoise.profile_s + 5.0, cfg.sample_rate)
        self._spans: deque[Span] = deque()
        self._next_frame = 0  # index of the first frame not yet routed
        self._utt: _Utterance | None = None
        self._gated_index = 0  # frame index of the next frame the gate returns
        self._speech_from = 0  # first speech frame of the open segment not yet gated
        self._unlearned: list[list[int]] = []  # non-speech frame ranges [first, end) not yet in the profile
        self._n_unlearned = 0
        self.samples_seen = 0

    @property
    def idle(self) -> bool:
        """Nobody is speaking: no open utterance, and the VAD is not inside speech.

        While idle no window or utterance can be waiting to go out (how much audio may
        follow before one can: ``quiet_samples``).
        """
        return self._utt is None and not self.vad.in_speech

    def quiet_samples(self) -> int:
        """How many more samples can be pushed, in any chunks, before a window or segment end can come out.

        0 when the next push might complete one. The VAD bounds when a segment could end
        at the earliest (``frames_before_end``: inside speech, as if every coming frame
        were unvoiced; in a quiet room about half a second) and how far its decisions
        trail the newest frame (the hangover ring); the window hop says when the next
        window is due. The daemon takes that much audio in one piece: every event still
        comes out with the same block as in 100 ms blocks (docs/performance.md).
        """
        vad, cfg, utt = self.vad, self.cfg, self._utt
        if utt is not None:  # decided frames not routed yet must not close it
            if not vad.in_speech or utt.segment != vad.segment:
                return 0
            if any(not span.speech or span.segment != utt.segment for span in self._spans):
                return 0
        elif any(span.speech and (not vad.in_speech or span.segment != vad.segment) for span in self._spans):
            return 0
        hop, half, fl = cfg.hop_length, cfg.frame_length // 2, vad.frame_len
        if utt is None:  # a segment's first frame is routed next at the earliest; no gate delay yet
            start, delay, due = self._next_frame, 0, self.window.window_frames
        else:
            start, delay, due = utt.start_sample // hop, self.denoise.delay_frames, self._window_due(utt)
        quiet = 0
        for k in range(vad.frames_before_end()):  # k more frames judged; the next one could end a segment
            n = vad.next_sample + (k + 1) * fl - 1 - self.samples_seen  # the most samples that judge only k
            routed = min(frame_count(self.samples_seen + n, cfg), max(0, -((half - vad.decided_after(k)) // hop)))
            if max(routed, self._next_frame) - start - delay >= due:
                break
            quiet = n
        return quiet

    def push(self, chunk: np.ndarray) -> list[FrontendEvent]:
        """Process float samples (16 kHz mono, any length); return what they completed."""
        chunk = np.asarray(chunk, dtype=np.float64)
        keep_from = (self._next_frame if self._utt is None else self._speech_from) * self.cfg.hop_length
        if self._unlearned:
            keep_from = self._unlearned[0][0] * self.cfg.hop_length
            if not self._audio.fits(len(chunk), keep_from):
                self._learn()  # no room to keep them: learn from those samples while they are here
                keep_from = self._next_frame * self.cfg.hop_length
        judged = self.vad.next_sample  # the VAD reads its frames from this buffer too: keep its incomplete one
        self._audio.write(chunk, min(keep_from, judged))
        self.samples_seen += len(chunk)
        whole = (self.samples_seen - judged) // self.vad.frame_len * self.vad.frame_len
        if whole:
            self._spans.extend(self.vad.push_frames(self._audio.samples(judged, whole)))
        return self._drain(final=False)

    def flush(self) -> list[FrontendEvent]:
        """End of input: decide the rest, close any open utterance."""
        self._spans.extend(self.vad.flush(total=self.samples_seen))
        events = self._drain(final=True)
        if self._utt is not None:
            events.extend(self._close())
        return events

    # -- internals ---------------------------------------------------------

    def _drain(self, final: bool) -> list[FrontendEvent]:
        """Route every complete frame whose centre the VAD has decided (all of them when ``final``)."""
        cfg = self.cfg
        end = frame_count(self.samples_seen, cfg)
        if not final:
            # frame t is decided once t * hop + frame_length // 2 < decided_until
            end = min(end, max(0, -((cfg.frame_length // 2 - self.vad.decided_until) // cfg.hop_length)))
        events: list[FrontendEvent] = []
        if end > self._next_frame:
            self._route(end, events)
        return events

    def _route(self, end: int, events: list[FrontendEvent]) -> None:
        """Split frames ``_next_frame … end - 1`` into runs of one label and route each run."""
        hop, half = self.cfg.hop_length, self.cfg.frame_length // 2
        while self._next_frame < end:
            centre = self._next_frame * hop + half
            while self._spans and self._spans[0].end <= centre:
                self._spans.popleft()
            span = self._spans[0] if self._spans else Span(centre, centre + 1, False)
            # frames of this run: all whose centre lies inside the span
            n = min(end - self._next_frame, (span.end - 1 - centre) // hop + 1)
            if span.speech:
                self._speech(n, span, events)
            else:
                if self._utt is not None:
                    events.extend(self._close())
                self._note_non_speech(n)
            self._next_frame += n

    def _note_non_speech(self, n: int) -> None:
        """Queue ``n`` non-speech frames for the noise profile, keeping only as many as it holds."""
        first = self._next_frame
        if self._unlearned and self._unlearned[-1][1] == first:
            self._unlearned[-1][1] = first + n
        else:
            self._unlearned.append([first, first + n])
        self._n_unlearned += n
        excess = self._n_unlearned - self.denoise.profile_frames
        while excess > 0:  # older frames would only be evicted from the profile's ring again
            run = self._unlearned[0]
            drop = min(excess, run[1] - run[0])
            run[0] += drop
            excess -= drop
            self._n_unlearned -= drop
            if run[0] == run[1]:
                self._unlearned.pop(0)

    def _learn(self) -> None:
        """Teach the gate the queued non-speech frames, oldest first, in one batch."""
        if not self._unlearned:
            return
        frames = [self._audio.frames(a, b - a, self.cfg) for a, b in self._unlearned]
        self.denoise.learn(self.spectrum.power(frames[0] if len(frames) == 1 else np.concatenate(frames)))
        self._unlearned = []
        self._n_unlearned = 0

    def _speech(self, n: int, span: Span, events: list[FrontendEvent]) -> None:
        if self._utt is not None and self._utt.segment != span.segment:
            events.extend(self._close())
        if self._utt is None:
            start = self._next_frame * self.cfg.hop_length
            self._utt = _Utterance(span.segment, start, self.window, self.cfg.n_features)
            self._gated_index = self._speech_from = self._next_frame
            self._learn()
            self.denoise.begin_segment()
            events.append(SegmentStart(span.segment, start))
        # Gating and log-mel wait until a window is due (or the segment ends): each
        # frame's result is the same either way, the window comes out in the same
        # push, and one batch per window hop costs fewer numpy calls than one per block.
        upto = self._next_frame + n
        would_leave_gate = upto - self._utt.start_sample // self.cfg.hop_length - self.denoise.delay_frames
        if would_leave_gate >= self._window_due(self._utt):
            self._gate_speech(upto, events)

    def _gate_speech(self, upto: int, events: list[FrontendEvent]) -> None:
        """Spectra, gate and log-mel of the open segment's frames ``_speech_from … upto - 1``."""
        if upto > self._speech_from:
            power = self.spectrum.power(self._audio.frames(self._speech_from, upto - self._speech_from, self.cfg))
            self._speech_from = upto
            self._add_gated(self.denoise.apply(power), events)

    def _window_due(self, utt: _Utterance) -> int:
        """The frame count at which the next window is due: window_frames, then every hop_frames."""
        w = self.window
        if utt.n_frames < w.window_frames:
            return w.window_frames
        return utt.n_frames + w.hop_frames - (utt.n_frames - w.window_frames) % w.hop_frames

    def _add_gated(self, gated: np.ndarray, events: list[FrontendEvent]) -> None:
        """Log-mel of the gated frames, appended in stretches that end where a window is due."""
        utt = self._utt
        assert utt is not None
        if len(gated) == 0:
            return
        cfg = self.cfg
        mel = self.spectrum.features(gated)
        utt.stats.add(mel)
        i = 0
        while i < len(mel):
            due = self._window_due(utt)
            k = min(len(mel) - i, due - utt.n_frames)
            utt.extend(mel[i : i + k])
            i += k
            self._gated_index += k
            utt.end_sample = (self._gated_index - 1) * cfg.hop_length + cfg.frame_length
            if utt.n_frames == due:
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
        self._gate_speech(self._next_frame, events)  # every routed frame of the segment
        self._add_gated(self.denoise.end_segment(), events)
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
    denoise: DenoiseParams = DenoiseParams(),
    window: WindowParams = WindowParams(),
    normaliser: WindowNormaliser | None = None,
    cfg: FeatureConfig = FEATURES,
) -> list[Window]:
    """All windows the live daemon would classify for one 16 kHz clip."""
    fe = Frontend(vad, denoise, window, cfg, normaliser)
    events = fe.push(signal) + fe.flush()
    return [e for e in events if isinstance(e, Window)]
