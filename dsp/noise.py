"""The one noise kit: levels, the SNR definition, noise generators and mixing (pure numpy).

Training's augmentation (``models/training/augment.py``), ``emotiond eval
--noise`` (``daemon/evaluate.py``) and the benches (``bench/audio.py``) all mix
noise with these functions, so "10 dB" means the same in a training recipe, an
evaluation table and a benchmark scene.

**SNR** is speech-weighted: the speech level is the RMS of the loudest half of
its 25 ms frames (``speech_rms``), so leading and trailing silence do not dilute
it; the noise level is the plain RMS of the noise that is added (``rms``).
``snr_db(speech, noise)`` measures it and ``scale_to_snr`` / ``add_at_snr``
hit it exactly.

Augmented copies are cached by seed during training, so for the same seed these
functions must give bit-identical output (``tests/test_noise.py`` pins it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SPEECH_FRAME = 400  # 25 ms at 16 kHz: the frame of the speech level
SNR_DEFINITION = "speech: RMS of the loudest half of its 25 ms frames; noise: RMS of what is added"


def rms(x: np.ndarray) -> float:
    """Root mean square (never exactly zero, so it can divide)."""
    return float(np.sqrt(np.mean(np.square(x)) + 1e-12))


def speech_rms(x: np.ndarray, frame: int = SPEECH_FRAME) -> float:
    """RMS of the loudest half of ``frame``-sample frames: a level estimate that ignores leading silence."""
    n = len(x) // frame
    if n < 2:
        return rms(x)
    e = np.mean(np.square(x[: n * frame].reshape(n, frame)), axis=1)
    e = np.sort(e)[n // 2 :]
    return float(np.sqrt(np.mean(e) + 1e-12))


def snr_db(speech: np.ndarray, noise: np.ndarray) -> float:
    """The SNR of ``noise`` added to ``speech``, in dB, as this kit defines it (module docstring)."""
    return float(20 * np.log10(speech_rms(speech) / rms(noise)))


def scale_to_snr(speech: np.ndarray, noise: np.ndarray, snr: float) -> np.ndarray:
    """``noise`` scaled so that ``snr_db(speech, result) == snr`` (same length as given)."""
    scale = speech_rms(speech) / (rms(noise) * 10 ** (snr / 20))
    return scale * noise


def fit_length(noise: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """A random stretch of ``noise`` exactly ``n`` samples long (tiled when shorter)."""
    if len(noise) == 0:
        return np.zeros(n)
    if len(noise) < n:
        noise = np.tile(noise, n // len(noise) + 1)
    start = int(rng.integers(0, len(noise) - n + 1))
    return noise[start : start + n]


def add_at_snr(x: np.ndarray, noise: np.ndarray, snr: float, rng: np.random.Generator) -> np.ndarray:
    """``x`` plus a random stretch of ``noise`` at ``snr`` dB."""
    return x + scale_to_snr(x, fit_length(noise, len(x), rng), snr)


def babble(talkers: Sequence[np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    """Several talkers at equal speech level, summed: ``n`` samples of babble."""
    out = np.zeros(n)
    for o in talkers:
        if len(o):
            out += fit_length(o, n, rng) / (speech_rms(o) + 1e-9)
    return out


def white_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian white noise, unit variance."""
    return rng.normal(0.0, 1.0, n)


def pink_noise(n: int, rng: np.random.Generator, dbfs: float = 0.0) -> np.ndarray:
    """1/f power noise at ``dbfs`` RMS (0 dBFS = unit RMS)."""
    white = rng.normal(0.0, 1.0, n)
    pink = np.fft.irfft(np.fft.rfft(white) / np.sqrt(np.arange(1, n // 2 + 2)), n=n)
    return pink * 10 ** (dbfs / 20) / max(float(np.sqrt(np.mean(pink**2))), 1e-12)
