"""Audio as the pipeline wants it: 16 kHz mono float64 in [-1, 1].

Whole files (``load_mono_16k``, shared by ``classify``, ``eval`` and training, so
a file means the same samples everywhere) and the pieces the live sources
(microphone, file, stdin) are built from: ``pcm16_to_float``, ``to_mono``,
``sanitize`` and the streaming ``Resampler``. Resampling uses soxr
(high-quality polyphase) in both. Training's feature cache resamples with scipy
(models/training/featurize.py) and is left so: changing it would change the
cached features.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soxr

from ..quiet import quiet_native_stderr
from .features import SAMPLE_RATE


class AudioInputError(Exception):
    """An audio input (file, stdin stream or device) that cannot be used; the message names it.

    One class for every source, ``classify``, ``eval`` and training, so a caller
    needs one ``except`` and the exit code travels one way: ``exit_code`` is the
    sysexits code the command exits with, 66 (EX_NOINPUT) for an input that does
    not exist, 65 (EX_DATAERR) for one that exists but is not usable audio.
    """

    def __init__(self, message: str, exit_code: int = os.EX_DATAERR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def pcm16_to_float(pcm: bytes | np.ndarray) -> np.ndarray:
    """Signed 16-bit little-endian PCM (bytes or int16 samples) as float64 in [-1, 1)."""
    raw = np.frombuffer(pcm, dtype="<i2") if isinstance(pcm, bytes | bytearray | memoryview) else pcm
    return raw.astype(np.float64) / 32768.0


def to_mono(data: np.ndarray) -> np.ndarray:
    """Frames × channels mixed down to one channel (the mean); mono passes through."""
    return data.mean(axis=1) if data.ndim == 2 else data


def sanitize(block: np.ndarray) -> np.ndarray:
    """Replace NaN/Inf (broken files, buggy drivers) with silence and clip to [-1, 1]."""
    if not np.all(np.isfinite(block)):
        block = np.nan_to_num(block, nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(block, -1.0, 1.0)


class Resampler:
    """Streaming resampler to 16 kHz (soxr) for sources that deliver audio piece by piece; a no-op at 16 kHz."""

    def __init__(self, in_rate: int) -> None:
        self._stream = None if in_rate == SAMPLE_RATE else soxr.ResampleStream(in_rate, SAMPLE_RATE, 1, dtype="float64")

    def __call__(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        """The 16 kHz samples ``block`` completes; ``last`` flushes the filter's tail at the end of the input."""
        block = np.asarray(block, dtype=np.float64)
        if self._stream is None:
            return block
        return self._stream.resample_chunk(block, last=last)


def to_16k_mono(data: np.ndarray, rate: int) -> np.ndarray:
    data = to_mono(np.asarray(data, dtype=np.float64))
    if rate != SAMPLE_RATE:
        data = soxr.resample(data, rate, SAMPLE_RATE)
    return sanitize(data)


def load_mono_16k(path: Path | str) -> np.ndarray:
    import soundfile as sf

    path = Path(path)
    if path.is_dir():
        raise AudioInputError(
            f"{path}: is a directory, not an audio file (pass the files, e.g. {path}/*.wav)", os.EX_NOINPUT
        )
    if not path.is_file():
        raise AudioInputError(f"{path}: audio file not found", os.EX_NOINPUT)
    try:
        with quiet_native_stderr():  # libmpg123 prints notes about MP3 headers straight to fd 2
            data, rate = sf.read(str(path), dtype="float64", always_2d=True)
    except Exception as exc:  # libsndfile raises several types for bad files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AudioInputError(f"{path}: not a readable audio file ({first})") from None
    if rate < 8000:
        raise AudioInputError(f"{path}: sample rate {rate} Hz is too low (min 8000)")
    if len(data) == 0:
        raise AudioInputError(f"{path}: contains no audio samples (a header only)")
    return to_16k_mono(data, rate)
