"""Voice activity detection: webrtcvad frames turned into whole utterances.

webrtcvad judges each 10/20/30 ms frame on its own and flickers inside words.
The segmenter below adds the usual two rings (as in py-webrtcvad's example):
speech starts once most of the last ``start_ms`` is voiced, and ends once most
of the last ``hangover_ms`` is unvoiced, so one utterance is one segment.

Output is a timeline of *decided* sample ranges. A range is decided only when
no later audio can change its label, which is what lets the feature stage
label frames without ever revising them.
"""

from __future__ import annotations

import functools
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import webrtcvad

try:  # webrtcvad's C module; ``Vad.is_speech`` is a thin Python wrapper around it
    import _webrtcvad
except ImportError:  # pragma: no cover - a webrtcvad build without it: the public wrapper below
    _webrtcvad = None

from .features import SAMPLE_RATE


@dataclass(frozen=True)
class VadParams:
    frame_ms: int = 30
    aggressiveness: int = 2
    start_ms: int = 150
    start_ratio: float = 0.6
    hangover_ms: int = 450
    end_ratio: float = 0.9
    end_padding_ms: int = 150
    max_segment_s: float = 12.0
    min_rms_dbfs: float = -60.0
    warmup_ms: int = 300


class Span(NamedTuple):
    """A decided stretch of the timeline, in samples from the stream start.

    A named tuple rather than a frozen dataclass: a few are made per block, and a
    tuple is built in one C call where a frozen dataclass sets each field through
    ``object.__setattr__``.
    """

    start: int
    end: int
    speech: bool
    segment: int = -1  # utterance number for speech spans, counted from 0


def pcm16(samples: np.ndarray) -> bytes:
    """Float samples in [-1, 1] as little-endian 16-bit PCM, as webrtcvad wants."""
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


class VoiceActivitySegmenter:
    """Streaming VAD with speech-start and hangover rings.

    ``push`` takes float samples of any chunk size and returns the spans it
    could decide, in order and contiguous; ``flush`` decides the rest at the
    end of the input.
    """

    def __init__(self, params: VadParams = VadParams(), sample_rate: int = SAMPLE_RATE) -> None:
        if params.frame_ms not in (10, 20, 30):
            raise ValueError(f"vad.frame_ms must be 10, 20 or 30, not {params.frame_ms}")
        if not 0 <= params.aggressiveness <= 3:
            raise ValueError(f"vad.aggressiveness must be 0..3, not {params.aggressiveness}")
        self.params = params
        self.sample_rate = sample_rate
        self.frame_len = sample_rate * params.frame_ms // 1000
        self._vad = webrtcvad.Vad(params.aggressiveness)
        self._is_speech = frame_classifier(self._vad, self.sample_rate)
        self._start_n = max(1, params.start_ms // params.frame_ms)
        self._end_n = max(1, params.hangover_ms // params.frame_ms)
        self._pad = params.end_padding_ms * sample_rate // 1000
        self._max_len = int(params.max_segment_s * sample_rate)
        self._min_ms = (10 ** (params.min_rms_dbfs / 20)) ** 2
        # Samples of the incomplete frame carried to the next push, at the front of a
        # buffer written in place (``_n_pending`` of them).
        self._pending = np.zeros(8 * self.frame_len, dtype=np.float64)
        self._n_pending = 0
        self._scratch = np.zeros(0, dtype=np.float64)
        self._pcm = np.zeros(0, dtype="<i2")
        self._frames_seen = 0
        self._ring: deque[bool] = deque(maxlen=self._start_n)
        self._triggered = False
        self._decided = 0
        self._segment_start = 0
        self._last_voiced_end = 0
        self._segment_id = -1
        self._warmup_frames = params.warmup_ms // params.frame_ms

    @property
    def in_speech(self) -> bool:
        return self._triggered

    @property
    def decided_until(self) -> int:
        return self._decided

    @property
    def segment(self) -> int:
        """Number of the current (or last) speech segment, counted from 0; -1 before the first."""
        return self._segment_id

    def decided_after(self, frames: int) -> int:
        """At most ``decided_until`` once ``frames`` more frames are judged, if none of them ends a segment.

        Inside speech a frame is decided only when it has left the hangover ring, so
        decisions trail the newest frame by the ring's length; outside, at most up to it.
        """
        end = (self._frames_seen + frames) * self.frame_len
        if not self._triggered:
            return max(self._decided, end)
        return max(self._decided, end - min(self._end_n, len(self._ring) + frames) * self.frame_len)

    def frames_before_end(self) -> int:
        """The fewest further frames, the last of which could end a segment: the earliest an utterance can close.

        Inside speech, taken as if every coming frame were unvoiced: a segment ends on a
        frame only once ``end_ratio`` of the full hangover ring is unvoiced, or when it
        reaches ``max_segment_s``. Outside speech a segment must first start, on a frame
        whose start ring holds ``start_ratio`` voiced frames, and all but the few voiced
        frames a closing ring may hold must have left the hangover ring again: a segment
        that starts on the next frame needs at least 12 more (default parameters) to end.
        ``Frontend.quiet_samples`` turns this into audio the daemon may take in one piece.
        """
        full, fl = self._end_n, self.frame_len
        need = self.params.end_ratio * full
        if not self._triggered:
            start_n = self._start_n
            voiced_to_start = math.ceil(self.params.start_ratio * start_n - 1e-9)
            voiced_at_end = full - math.ceil(need - 1e-9)  # a closing ring holds at most this many voiced
            leave = voiced_to_start - voiced_at_end  # voiced start frames that must have left the ring
            earliest = max(2, 1 + full - start_n)  # start on the next frame at best; the ring must fill
            if leave > 0:
                # the start ring's frames lie at positions >= -(start_n - 2) (0: the newest frame judged)
                recent = list(self._ring)[max(0, len(self._ring) - (start_n - 1)) :] if start_n > 1 else []
                voiced = [1 - len(recent) + i for i, v in enumerate(recent) if v]
                position = voiced[leave - 1] if len(voiced) >= leave else leave - len(voiced)
                earliest = max(earliest, position + full)
            too_long = max(2, 1 - start_n + math.ceil(self._max_len / fl))
            return min(earliest, too_long)
        ring = list(self._ring)
        for m in range(1, full + 1):
            if (self._frames_seen + m) * fl - self._segment_start >= self._max_len:
                return m  # too long
            if len(ring) + m >= full and m + ring[len(ring) + m - full :].count(False) >= need:
                return m  # the ring, full, would be unvoiced enough
        return full  # pragma: no cover - m == full always ends it (a ring of unvoiced frames)

    @property
    def next_sample(self) -> int:
        """Stream index of the first sample not yet judged (the start of the incomplete frame)."""
        return self._frames_seen * self.frame_len

    def push(self, chunk: np.ndarray) -> list[Span]:
        """Float samples of any length; the incomplete last frame waits for the next push."""
        chunk = np.asarray(chunk, dtype=np.float64)
        have = self._n_pending + len(chunk)
        if have > len(self._pending):
            grown = np.zeros(max(have, 2 * len(self._pending)), dtype=np.float64)
            grown[: self._n_pending] = self._pending[: self._n_pending]
            self._pending = grown
        self._pending[self._n_pending : have] = chunk
        used = have // self.frame_len * self.frame_len
        spans = self.push_frames(self._pending[:used]) if used else []
        self._n_pending = have - used
        if used and self._n_pending:
            self._pending[: self._n_pending] = self._pending[used:have]
        return spans

    def push_frames(self, samples: np.ndarray) -> list[Span]:
        """The next whole frames of the stream (a multiple of ``frame_len`` samples), read in place.

        For a caller that keeps the stream's samples anyway (the frontend's buffer):
        it hands over a view of the whole frames and keeps the incomplete rest itself,
        so the samples are neither copied nor held twice. Do not mix with ``push``.
        """
        n = len(samples) // self.frame_len
        if n == 0:
            return []
        # One conversion for the whole block into buffers kept between calls;
        # the per-frame loop hands webrtcvad views of it.
        pcm = self._pcm16(samples)
        step = 2 * self.frame_len
        warm = self._warmup_frames - self._frames_seen  # frames of this block still in the warm-up
        # webrtcvad's C function itself: ``Vad.is_speech`` is a Python wrapper that only
        # re-checks the length, one more Python frame per 30 ms frame on the hot path.
        is_speech, fl = self._is_speech, self.frame_len
        # webrtcvad adapts its noise model on every frame it sees, so it sees all of
        # them. Its model starts from scratch and calls the first few frames of any
        # stream speech, so its verdicts during a warm-up are ignored; an energy floor
        # keeps digital silence and far-off hum out.
        heard = [is_speech(pcm[i * step : (i + 1) * step], fl) for i in range(n)]
        spans: list[list] = []
        if not self._triggered and not any(heard[max(0, warm) :]):
            self._quiet(n, spans)  # the usual block in a quiet room: nothing can start
            return self._spans(spans)
        energy = None
        for i in range(n):
            voiced = heard[i] and i >= warm
            if voiced:
                if energy is None:  # only blocks with a voiced frame pay for the energies
                    frames = samples[: n * self.frame_len].reshape(n, self.frame_len)
                    energy = np.einsum("ij,ij->i", frames, frames) / self.frame_len
                voiced = energy[i] >= self._min_ms
            self._step(bool(voiced), spans)
        return self._spans(spans)

    def _quiet(self, n: int, spans: list[list]) -> None:
        """``n`` unvoiced frames while not triggered: what ``_step`` would do, in one go.

        Unvoiced frames only lower the ring's count, so speech can start on one only
        while the ring is still filling (after the stream start or a segment end).
        """
        ring = self._ring
        if len(ring) + n >= self._start_n and sum(ring) >= self.params.start_ratio * self._start_n:
            for _ in range(n):  # it might start in this block: frame by frame
                self._step(False, spans)
            return
        self._frames_seen += n
        ring.extend([False] * min(n, self._start_n))
        frame_end = self._frames_seen * self.frame_len
        self._emit(spans, frame_end - len(ring) * self.frame_len, speech=False)

    def _pcm16(self, samples: np.ndarray) -> memoryview:
        """``pcm16(samples)`` written into buffers reused from block to block, as bytes."""
        n = len(samples)
        if len(self._scratch) < n:
            self._scratch = np.zeros(n, dtype=np.float64)
            self._pcm = np.zeros(n, dtype="<i2")
        # clip(x, -1, 1) * 32767 == clip(x * 32767, -32767, 32767): ufuncs with ``out`` in
        # float, then one assignment that casts (truncating towards zero, as astype does).
        # A ufunc that casts into the int16 buffer itself needs numpy's buffered
        # iterator, whose set-up is the dearest part of a call made once per block.
        scaled = np.multiply(samples, 32767.0, out=self._scratch[:n])
        np.minimum(scaled, 32767.0, out=scaled)
        np.maximum(scaled, -32767.0, out=scaled)
        pcm = self._pcm[:n]
        pcm[...] = scaled
        return memoryview(pcm).cast("B")

    def _emit(self, spans: list[list], until: int, speech: bool) -> None:
        """Decide up to ``until``: extend the last ``[start, end, speech, segment]`` or start one.

        Plain lists while a push runs, one ``Span`` per stretch at its end (``_spans``):
        per 30 ms frame, building frozen dataclasses cost more than the decisions.
        """
        if until > self._decided:
            segment = self._segment_id if speech else -1
            if spans and spans[-1][2] == speech and spans[-1][3] == segment:
                spans[-1][1] = until
            else:
                spans.append([self._decided, until, speech, segment])
            self._decided = until

    @staticmethod
    def _spans(raw: list[list]) -> list[Span]:
        return [Span(*r) for r in raw]

    def _step(self, voiced: bool, spans: list[list]) -> None:
        fl = self.frame_len
        frame_start = self._frames_seen * fl
        self._frames_seen += 1
        frame_end = frame_start + fl
        self._ring.append(voiced)
        if not self._triggered:
            ring_start = frame_end - len(self._ring) * fl
            if len(self._ring) == self._start_n and sum(self._ring) >= self.params.start_ratio * self._start_n:
                self._emit(spans, ring_start, speech=False)
                self._triggered = True
                self._segment_id += 1
                self._segment_start = ring_start
                self._last_voiced_end = frame_end
                self._ring = deque(self._ring, maxlen=self._end_n)
            else:
                self._emit(spans, ring_start, speech=False)
            return
        if voiced:
            self._last_voiced_end = frame_end
        unvoiced = len(self._ring) - sum(self._ring)
        ring_start = frame_end - len(self._ring) * fl
        too_long = frame_end - self._segment_start >= self._max_len
        if (len(self._ring) == self._end_n and unvoiced >= self.params.end_ratio * self._end_n) or too_long:
            end = frame_end if too_long else min(frame_end, self._last_voiced_end + self._pad)
            self._emit(spans, end, speech=True)
            self._emit(spans, frame_end, speech=False)
            self._triggered = False
            self._ring = deque(maxlen=self._start_n)
        else:
            self._emit(spans, max(ring_start, self._decided), speech=True)

    def flush(self, total: int | None = None) -> list[Span]:
        """Decide everything pushed so far, at the end of the input; push nothing after.

        ``total``: the stream's length in samples, for a ``push_frames`` caller (which kept the incomplete frame).
        """
        spans: list[list] = []
        total = self._frames_seen * self.frame_len + self._n_pending if total is None else total
        if self._triggered:
            end = min(total, self._last_voiced_end + self._pad)
            self._emit(spans, end, speech=True)
            self._triggered = False
        self._emit(spans, total, speech=False)
        return self._spans(spans)


def frame_classifier(vad: webrtcvad.Vad, sample_rate: int) -> Callable[[bytes | memoryview, int], bool]:
    """``f(pcm16_bytes, frame_len) -> voiced`` for one webrtcvad instance.

    Why not just ``vad.is_speech``: that wrapper re-checks the length in Python,
    one more Python frame per 30 ms frame on the hot path. Its C function is
    called directly through a ``functools.partial`` (no Python frame) where this
    webrtcvad build exposes it (``webrtcvad-wheels`` does), else the public
    wrapper: the verdicts are the same (``tests/test_vad.py``).
    """
    process, handle = getattr(_webrtcvad, "process", None), getattr(vad, "_vad", None)
    if process is not None and handle is not None:
        return functools.partial(process, handle, sample_rate)
    return lambda frame, frame_len: vad.is_speech(frame, sample_rate, frame_len)
