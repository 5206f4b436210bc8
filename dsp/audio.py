"""Reading whole audio files as the pipeline wants them: 16 kHz mono float64.

Shared by ``classify``, ``eval`` and training so a file means the same
samples everywhere. Resampling uses soxr (high-quality polyphase), the same
resampler the live sources stream through.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soxr

from ..quiet import quiet_native_stderr
from .features import SAMPLE_RATE


class AudioFileError(Exception):
    """A file that cannot be read as audio; the message names it."""

    def __init__(self, message: str, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


def to_16k_mono(data: np.ndarray, rate: int) -> np.ndarray:
    data = np.asarray(data, dtype=np.float64)
    if data.ndim == 2:
        data = data.mean(axis=1)
    if rate != SAMPLE_RATE:
        data = soxr.resample(data, rate, SAMPLE_RATE)
    if not np.all(np.isfinite(data)):
        data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(data, -1.0, 1.0)


def load_mono_16k(path: Path | str) -> np.ndarray:
    import soundfile as sf

    path = Path(path)
    if path.is_dir():
        raise AudioFileError(f"{path}: is a directory, not an audio file (pass the files, e.g. {path}/*.wav)",
                             missing=True)
    if not path.is_file():
        raise AudioFileError(f"{path}: audio file not found", missing=True)
    try:
        with quiet_native_stderr():  # libmpg123 prints notes about MP3 headers straight to fd 2
            data, rate = sf.read(str(path), dtype="float64", always_2d=True)
    except Exception as exc:  # libsndfile raises several types for bad files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AudioFileError(f"{path}: not a readable audio file ({first})") from None
    if rate < 8000:
        raise AudioFileError(f"{path}: sample rate {rate} Hz is too low (min 8000)")
    if len(data) == 0:
        raise AudioFileError(f"{path}: contains no audio samples (a header only)")
    return to_16k_mono(data, rate)
