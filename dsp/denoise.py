"""Noise reduction: noisereduce's stationary spectral gate, run on the feature STFT.

Calling ``noisereduce.reduce_noise`` per hop costs ~25 ms and re-does an STFT
and an inverse STFT that the feature stage never needs. This module applies
the same algorithm (noisereduce 3.x ``SpectralGateStationary``) directly to
the power spectra the feature stage already computed:

* the noise profile is the mean and standard deviation, per frequency bin, of
  the dB spectrum of recent frames the VAD called non-speech (a ring of
  ``profile_s`` seconds, updated continuously, so the profile follows a room
  as it changes);
* a bin passes where it exceeds ``mean + n_std_thresh * std``;
* the 0/1 mask is mixed with ``1 - prop_decrease`` and smoothed by
  noisereduce's triangular filter over ``freq_smooth_hz`` and
  ``time_smooth_ms`` (centred, so output lags input by ``time_smooth_ms``);
* amplitudes are multiplied by the mask, i.e. power by its square.

Differences from noisereduce, on purpose: no inverse STFT (nothing downstream
needs audio), no 80 dB ``top_db`` clamp (it depends on the whole clip), and
the stream start is padded with pass-through masks instead of zeros.
``tests/test_denoise.py`` checks the result against noisereduce itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .features import FEATURES, FeatureConfig


@dataclass(frozen=True)
class DenoiseParams:
    """Parameters of the denoise stage (config section ``denoise``, sidecar key ``denoise``, formerly ``gate``)."""

    enabled: bool = True
    n_std_thresh: float = 1.5
    prop_decrease: float = 1.0
    freq_smooth_hz: float = 500.0
    time_smooth_ms: float = 50.0
    profile_s: float = 3.0
    min_profile_s: float = 0.2


def _triangle(n: int) -> np.ndarray:
    """One axis of noisereduce's ``_smoothing_filter`` (length ``2n + 1``)."""
    ramp = np.concatenate([np.linspace(0, 1, n + 1, endpoint=False), np.linspace(1, 0, n + 2)])
    return ramp[1:-1]


def smoothing_kernels(params: DenoiseParams, cfg: FeatureConfig = FEATURES) -> tuple[np.ndarray, np.ndarray]:
    """Frequency and time weights whose outer product is noisereduce's filter."""
    n_freq = max(1, int(params.freq_smooth_hz / (cfg.sample_rate / (cfg.n_fft / 2))))  # as noisereduce
    n_time = max(0, int(params.time_smooth_ms / (cfg.hop_length / cfg.sample_rate * 1000)))
    f = _triangle(n_freq)
    t = _triangle(n_time) if n_time else np.ones(1)
    return f / f.sum(), t / t.sum()


class SpectralGate:
    """Stationary spectral gate over the power-spectrum frames of speech segments.

    Non-speech frames feed the profile (``learn``). A speech segment is gated
    with the threshold as it stood when the segment began (``begin_segment``),
    so the result of every frame is fixed by the audio before it, whatever
    the chunking. Time smoothing is centred within the segment, so ``apply``
    returns frames ``lag_frames`` behind its input and ``end_segment``
    returns the rest; the segment's edges repeat the edge masks.
    """

    def __init__(self, params: DenoiseParams = DenoiseParams(), cfg: FeatureConfig = FEATURES) -> None:
        self.params = params
        self.cfg = cfg
        fps = cfg.sample_rate / cfg.hop_length
        self._ring_len = max(1, round(params.profile_s * fps))
        self._min_frames = max(2, round(params.min_profile_s * fps))
        self._ring = np.zeros((self._ring_len, cfg.n_bins))
        self._ring_pos = 0
        self._ring_n = 0
        self._sum = np.zeros(cfg.n_bins)
        self._sumsq = np.zeros(cfg.n_bins)
        f_kernel, self._t_kernel = smoothing_kernels(params, cfg)
        self._f_kernel = f_kernel
        self._f_half = len(f_kernel) // 2
        self._f_rows = np.zeros((16, cfg.n_bins + 2 * self._f_half))  # rows of zeros | mask | zeros
        self.lag_frames = len(self._t_kernel) // 2
        self._thresh: np.ndarray | None = None
        # The delay line: powers and masks of frames not yet released, in
        # buffers written in place (``_n`` rows used) rather than re-concatenated per block.
        self._powers = np.zeros((64, cfg.n_bins))
        self._masks = np.zeros((64 + 2 * self.lag_frames, cfg.n_bins))
        self._n_powers = 0
        self._n_masks = 0
        self._started = False

    @property
    def has_profile(self) -> bool:
        return self._ring_n >= self._min_frames

    def learn(self, power_frames: np.ndarray) -> None:
        """Add non-speech frames ``(n, n_bins)`` to the noise profile, oldest first."""
        dbs = 10.0 * np.log10(np.asarray(power_frames)[-self._ring_len :] + 1e-12)
        n = len(dbs)
        if n == 0:
            return
        slots = (self._ring_pos + np.arange(n)) % self._ring_len
        # Writes first fill empty slots; the last ``overflow`` of them replace live frames.
        overflow = max(0, self._ring_n + n - self._ring_len)
        evicted = self._ring[slots[n - overflow :]] if overflow else self._ring[:0]
        self._sum += dbs.sum(axis=0) - evicted.sum(axis=0)
        self._sumsq += (dbs * dbs).sum(axis=0) - (evicted * evicted).sum(axis=0)
        self._ring[slots] = dbs
        self._ring_n = min(self._ring_len, self._ring_n + n)
        self._ring_pos = (self._ring_pos + n) % self._ring_len

    @property
    def delay_frames(self) -> int:
        """How many frames ``apply`` holds back in the open segment (0 when it passes frames through)."""
        return self.lag_frames if self._thresh is not None else 0

    @property
    def profile_frames(self) -> int:
        """How many of the most recent non-speech frames the profile holds at most."""
        return self._ring_len

    def threshold(self) -> np.ndarray | None:
        """Per-bin dB threshold ``mean + n_std * std`` of the profile, or None before one exists."""
        if not self.has_profile:
            return None
        mean = self._sum / self._ring_n
        var = np.maximum(self._sumsq / self._ring_n - mean * mean, 0.0)
        return mean + self.params.n_std_thresh * np.sqrt(var)

    def begin_segment(self) -> None:
        self._thresh = self.threshold() if self.params.enabled else None
        self._n_powers = 0
        self._n_masks = 0
        self._started = False

    def _frame_masks(self, power_frames: np.ndarray) -> np.ndarray:
        db = 10.0 * np.log10(power_frames + 1e-12)
        p = self.params.prop_decrease
        # the same two values ``cond * p + (1 - p)`` takes, in one call
        raw = np.where(db > self._thresh, 1.0 * p + (1.0 - p), 0.0 * p + (1.0 - p))
        return self._smooth_frequency(raw)

    def _smooth_frequency(self, raw: np.ndarray) -> np.ndarray:
        """'same' zero-padded convolution of each row along frequency, like noisereduce's fftconvolve.

        All rows in one ``np.convolve`` call: they lie in one flat buffer, each
        between ``len(kernel) // 2`` zeros on either side, so no row sees another.
        One small call per block instead of a 257 × 257 band-matrix product,
        whose half-megabyte matrix had to come back into cache at every block.
        """
        n, h, bins = len(raw), self._f_half, self.cfg.n_bins
        if len(self._f_rows) < n:
            self._f_rows = np.zeros((max(n, 2 * len(self._f_rows)), bins + 2 * h))
        rows = self._f_rows[:n]
        rows[:, h : h + bins] = raw
        return np.convolve(rows.ravel(), self._f_kernel, mode="same").reshape(rows.shape)[:, h : h + bins]

    def _release(self, n_out: int) -> np.ndarray:
        """Powers of the oldest ``n_out`` frames times their time-smoothed masks, squared."""
        if n_out == 0:
            return np.zeros((0, self.cfg.n_bins))
        # Centred: frame i sees masks i-lag … i+lag. Shift-and-add, not a matrix product:
        # OpenBLAS runs products above ~262k multiply-adds on a second thread that then
        # spins, and a paced daemon paid for that spinning at every block (docs/performance.md).
        smoothed = np.zeros((n_out, self.cfg.n_bins))
        for tap, weight in enumerate(self._t_kernel):
            smoothed += weight * self._masks[tap : tap + n_out]
        out = self._powers[:n_out] * smoothed * smoothed
        self._n_powers = _drop_front(self._powers, self._n_powers, n_out)
        self._n_masks = _drop_front(self._masks, self._n_masks, n_out)
        return out

    def _append(self, powers: np.ndarray, masks: np.ndarray) -> None:
        self._powers, self._n_powers = _put(self._powers, self._n_powers, powers)
        self._masks, self._n_masks = _put(self._masks, self._n_masks, masks)

    def apply(self, power_frames: np.ndarray) -> np.ndarray:
        """Gate speech frames; returns the frames that left the delay line."""
        if self._thresh is None:
            return np.asarray(power_frames)
        if len(power_frames) == 0:
            return np.zeros((0, self.cfg.n_bins))
        masks = self._frame_masks(power_frames)
        if not self._started:
            self._append(power_frames[:0], np.repeat(masks[:1], self.lag_frames, axis=0))
            self._started = True
        self._append(power_frames, masks)
        n_out = max(0, self._n_masks - 2 * self.lag_frames)
        return self._release(n_out)

    def end_segment(self) -> np.ndarray:
        """Frames still in the delay line when the segment closes."""
        if self._thresh is None or self._n_powers == 0:
            return np.zeros((0, self.cfg.n_bins))
        last = self._masks[self._n_masks - 1 : self._n_masks]
        self._append(self._powers[:0], np.repeat(last, self.lag_frames, axis=0))
        return self._release(self._n_powers)


def _put(buf: np.ndarray, used: int, rows: np.ndarray) -> tuple[np.ndarray, int]:
    """Write ``rows`` after the first ``used`` rows of ``buf``, growing it when full; the buffer and its new length."""
    end = used + len(rows)
    if end > len(buf):
        grown = np.zeros((max(end, 2 * len(buf)), buf.shape[1]))
        grown[:used] = buf[:used]
        buf = grown
    buf[used:end] = rows
    return buf, end


def _drop_front(buf: np.ndarray, used: int, n: int) -> int:
    """Remove the first ``n`` of ``used`` rows by moving the rest to the front; the new length."""
    rest = used - n
    if rest > 0:
        buf[:rest] = buf[n:used]
    return max(rest, 0)
