"""Fixtures that generate test audio: tones, noise, espeak-ng speech.

No corpus audio is ever committed; tests synthesise what they need.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bench import audio

SR = 16_000

# One speech synthesiser and noise generator for tests and benchmarks.
espeak = audio.espeak
pink_noise = audio.pink


@pytest.fixture(scope="session")
def have_espeak() -> None:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng; .ci/run does)")


@pytest.fixture(scope="session")
def speech_scene(have_espeak: None) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """1.5 s room noise, a sentence, 2 s noise, another sentence, 1.5 s noise.

    Returns the signal and the (start_s, end_s) of each spoken part.
    """
    rng = np.random.default_rng(3)
    a = espeak("I can not believe you would do this to me.")
    b = espeak("Tomorrow we will walk along the river together.", voice="en-gb", pitch=70)
    gap0, gap1, gap2 = int(1.5 * SR), int(2.0 * SR), int(1.5 * SR)

    def trim(x: np.ndarray) -> tuple[np.ndarray, int, int]:
        idx = np.nonzero(np.abs(x) > 0.01)[0]
        return x, int(idx[0]), int(idx[-1])

    a, a0, a1 = trim(a)
    b, b0, b1 = trim(b)
    signal = np.concatenate([np.zeros(gap0), a, np.zeros(gap1), b, np.zeros(gap2)])
    signal = signal + pink_noise(len(signal), rng, -55)
    off_b = gap0 + len(a) + gap1
    spans = [((gap0 + a0) / SR, (gap0 + a1) / SR), ((off_b + b0) / SR, (off_b + b1) / SR)]
    return signal, spans


@pytest.fixture()
def speech_wav(tmp_path: Path, speech_scene: tuple[np.ndarray, list[tuple[float, float]]]) -> Path:
    path = tmp_path / "speech.wav"
    sf.write(str(path), speech_scene[0], SR, subtype="PCM_16")
    return path
