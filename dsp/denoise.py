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
class GateParams:
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


def smoothing_kernels(params: GateParams, cfg: FeatureConfig = FEATURES) -> tuple[np.ndarray, np.ndarray]:
    """Frequency and time weights whose outer product is noisereduce's filter."""
    n_freq = max(1, int(params.freq_smooth_hz / (cfg.sample_rate / (cfg.n_fft / 2))))  # as noisereduce
    n_time = max(0, int(params.time_smooth_ms / (cfg.hop_length / cfg.sample_rate * 1000)))
    f = _triangle(n_freq)
    t = _triangle(n_time) if n_time else np.ones(1)
    return f / f.sum(), t / t.sum()


def convolution_matrix(kernel: np.ndarray, size: int) -> np.ndarray:
    """Band matrix ``M`` with ``x @ M == np.convolve(x, kernel, mode='same')`` for an odd kernel.

    A matrix product rather than scipy.ndimage: importing scipy.ndimage costs the
    daemon ~28 MB and ~0.4 s of start-up (measured by bench/), for no speed gain.
    """
    half = len(kernel) // 2
    m = np.zeros((size, size))
    for offset, weight in enumerate(kernel):
        m += weight * np.eye(size, k=offset - half)
    return m


class SpectralGate:
    """Stationary spectral gate over the power-spectrum frames of speech segments.

    Non-speech frames feed the profile (``learn``). A speech segment is gated
    with the threshold as it stood when the segment began (``begin_segment``),
    so the result of every frame is fixed by the audio before it, whatever
    the chunking. Time smoothing is centred within the segment, so ``apply``
    returns frames ``lag_frames`` behind its input and ``end_segment``
    returns the rest; the segment's edges repeat the edge masks.
    """

    def __init__(self, params: GateParams = GateParams(), cfg: FeatureConfig = FEATURES) -> None:
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
        self._freq_matrix = convolution_matrix(f_kernel, cfg.n_bins)
        self.lag_frames = len(self._t_kernel) // 2
        self._thresh: np.ndarray | None = None
        self._powers = np.zeros((0, cfg.n_bins))
        self._masks = np.zeros((0, cfg.n_bins))
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

    def threshold(self) -> np.ndarray | None:
        """Per-bin dB threshold ``mean + n_std * std`` of the profile, or None before one exists."""
        if not self.has_profile:
            return None
        mean = self._sum / self._ring_n
        var = np.maximum(self._sumsq / self._ring_n - mean * mean, 0.0)
        return mean + self.params.n_std_thresh * np.sqrt(var)

    def begin_segment(self) -> None:
        self._thresh = self.threshold() if self.params.enabled else None
        self._powers = np.zeros((0, self.cfg.n_bins))
        self._masks = np.zeros((0, self.cfg.n_bins))
        self._started = False

    def _frame_masks(self, power_frames: np.ndarray) -> np.ndarray:
        db = 10.0 * np.log10(power_frames + 1e-12)
        p = self.params.prop_decrease
        raw = (db > self._thresh).astype(np.float64) * p + (1.0 - p)
        # 'same' zero-padded convolution along frequency, like noisereduce's fftconvolve
        return raw @ self._freq_matrix

    def _release(self, n_out: int) -> np.ndarray:
        """Powers of the oldest ``n_out`` frames times their time-smoothed masks, squared."""
        if n_out == 0:
            return np.zeros((0, self.cfg.n_bins))
        smoothed = np.zeros((n_out, self.cfg.n_bins))
        for tap, weight in enumerate(self._t_kernel):  # centred: frame i sees masks i-lag … i+lag
            smoothed += weight * self._masks[tap : tap + n_out]
        out = self._powers[:n_out] * smoothed * smoothed
        self._powers = self._powers[n_out:]
        self._masks = self._masks[n_out:]
        return out

    def apply(self, power_frames: np.ndarray) -> np.ndarray:
        """Gate speech frames; returns the frames that left the delay line."""
        if self._thresh is None:
            return np.asarray(power_frames)
        if len(power_frames) == 0:
            return np.zeros((0, self.cfg.n_bins))
        masks = self._frame_masks(power_frames)
        if not self._started:
            masks = np.concatenate([np.repeat(masks[:1], self.lag_frames, axis=0), masks])
            self._started = True
        self._masks = np.concatenate([self._masks, masks])
        self._powers = np.concatenate([self._powers, power_frames])
        n_out = max(0, len(self._masks) - 2 * self.lag_frames)
        return self._release(n_out)

    def end_segment(self) -> np.ndarray:
        """Frames still in the delay line when the segment closes."""
        if self._thresh is None or len(self._powers) == 0:
            return np.zeros((0, self.cfg.n_bins))
        pad = np.repeat(self._masks[-1:], self.lag_frames, axis=0)
        self._masks = np.concatenate([self._masks, pad])
        return self._release(len(self._powers))
