"""Waveform augmentation for training speakers (applied after the split).

Every augmented copy is then run through ``emotiond.dsp.frontend.clip_windows``
like clean audio, so the VAD and the noise gate see the noise as they would live.
``voice_warp`` gives every window a vocal tract of its own on the mel axis.
Noise is mixed with the one noise kit (``emotiond.dsp.noise``: its SNR is the one
``emotiond eval --noise`` and the benches use). SpecAugment-style masks act on
feature windows (``spec_mask``) during training.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import gcd

import numpy as np
from scipy.signal import fftconvolve, resample_poly

from ...dsp.features import FEATURES, FeatureConfig, mel_band_edges_hz
from ...dsp.noise import add_at_snr, babble, rms

SR = 16_000


def speed(x: np.ndarray, factor: float) -> np.ndarray:
    """Speed perturbation (tempo and pitch together), as in Kaldi's 0.9/1.1."""
    up, down = 100, round(100 * factor)
    g = gcd(up, down)
    return resample_poly(x, up // g, down // g)


def reverb(x: np.ndarray, rt60: float, rng: np.random.Generator, wet: float = 0.5) -> np.ndarray:
    """Convolve with a synthetic room: direct path + exponentially decaying noise tail."""
    n = int(rt60 * SR)
    t = np.arange(n) / SR
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    tail[: int(0.002 * SR)] = 0.0
    ir = wet * tail / (np.sqrt(np.sum(tail**2)) + 1e-9)
    ir[0] = 1.0
    y = fftconvolve(x, ir)[: len(x)]
    return y * (rms(x) / (rms(y) + 1e-12))


def time_shift(x: np.ndarray, rng: np.random.Generator, max_s: float = 0.4) -> np.ndarray:
    """Move the clip by up to ``max_s``: drop from or pad (with silence) the start."""
    k = int(rng.uniform(-max_s, max_s) * SR)
    if k > 0:
        return np.concatenate([np.zeros(k), x])
    return x[-k:] if -k < len(x) // 2 else x


def augment(
    x: np.ndarray,
    rng: np.random.Generator,
    noises: Sequence[np.ndarray] = (),
    babble_sources: Sequence[np.ndarray] = (),
) -> np.ndarray:
    """One random augmented copy of a 16 kHz clip."""
    y = np.asarray(x, dtype=np.float64)
    if rng.random() < 0.5:
        y = speed(y, float(rng.choice([0.9, 0.95, 1.05, 1.1])))
    y = time_shift(y, rng)
    if rng.random() < 0.3:
        y = reverb(y, float(rng.uniform(0.15, 0.6)), rng, wet=float(rng.uniform(0.2, 0.7)))
    r = rng.random()
    if babble_sources and r < 0.25:
        b = babble(babble_sources, len(y), rng)
        y = add_at_snr(y, b, float(rng.uniform(8, 20)), rng)
    elif noises and r < 0.85:
        noise = noises[int(rng.integers(len(noises)))]
        y = add_at_snr(y, noise, float(rng.uniform(5, 25)), rng)
    y = y * 10 ** (rng.uniform(-10, 6) / 20)
    peak = float(np.max(np.abs(y))) if len(y) else 0.0
    if peak > 0.99:
        y = y * (0.99 / peak)
    return y


def spec_mask(
    batch: np.ndarray,
    rng: np.random.Generator,
    n_time: int = 2,
    max_time: int = 12,
    n_freq: int = 2,
    max_freq: int = 5,
) -> np.ndarray:
    """SpecAugment-style masks on normalised windows ``(B, T, F)``; masked cells become 0 (the band mean)."""
    out = batch.copy()
    b, t, f = out.shape
    for i in range(b):
        for _ in range(n_time):
            w = int(rng.integers(0, max_time + 1))
            s = int(rng.integers(0, max(1, t - w)))
            out[i, s : s + w, :] = 0.0
        for _ in range(n_freq):
            w = int(rng.integers(0, max_freq + 1))
            s = int(rng.integers(0, max(1, f - w)))
            out[i, :, s : s + w] = 0.0
    return out


def voice_warp(
    batch: np.ndarray,
    rng: np.random.Generator,
    spread: float,
    cfg: FeatureConfig = FEATURES,
) -> np.ndarray:
    """Vocal-tract length perturbation (VTLP) of windows ``(B, T, F)``, a fresh warp per window.

    Why on features and not audio: a warp drawn per window and per epoch makes
    every pass a new set of voices at no extraction cost, where a warped audio
    copy is one fixed voice per clip for the whole run. Band ``j`` of a window
    warped by ``alpha`` is read at ``f_j / alpha`` (``alpha > 1``: a shorter
    tract, formants up), interpolated between neighbouring band centres and
    clamped at the edges. Only the mel bands move; periodicity bands after them
    are left alone.
    """
    if not 0 <= spread < 1:
        raise ValueError(f"voice warp spread {spread}: expected 0 <= spread < 1")
    if spread == 0:
        return batch
    centres = mel_band_edges_hz(cfg)[1:-1]
    n = cfg.n_mels
    alpha = rng.uniform(1.0 - spread, 1.0 + spread, size=len(batch))
    pos = np.interp(centres[None, :] / alpha[:, None], centres, np.arange(n, dtype=np.float64))  # (B, n)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, n - 1)
    frac = (pos - lo).astype(batch.dtype)[:, None, :]
    mel = batch[:, :, :n]
    warped = (
        np.take_along_axis(mel, lo[:, None, :], axis=2) * (1 - frac)
        + np.take_along_axis(mel, hi[:, None, :], axis=2) * frac
    )
    out = batch.copy()
    out[:, :, :n] = warped
    return out
