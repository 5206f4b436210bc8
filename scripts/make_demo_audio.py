"""Regenerate daemon/assets/demo.ogg: synthetic espeak-ng speech the project may ship.

The corpora in ../shared/data may never be committed, so the demo recording
is synthesised: a few sentences with different espeak-ng voices, rates and
pitches, separated by pauses, over quiet pink-ish room noise. It shows the
pipeline working; espeak-ng does not act emotions, so the labels it gets are
not a measure of accuracy.

Usage: python scripts/make_demo_audio.py [OUT]   (needs espeak-ng)
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SR = 16_000
LINES = [
    ("en-us", 175, 50, 120, "Good morning! What a wonderful day, I am so happy to see you."),
    ("en-gb", 200, 80, 180, "No! Stop that right now! I told you a hundred times!"),
    ("en-us", 120, 25, 80, "I miss her so much. Nothing feels the same anymore."),
    ("en-us", 160, 50, 100, "The meeting is at three o'clock in the small room."),
    ("en-gb", 190, 90, 150, "Wait, what was that noise? Is somebody there?"),
]


def speak(voice: str, rate: int, pitch: int, amplitude: int, text: str) -> np.ndarray:
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(rate), "-p", str(pitch), "-a", str(amplitude), "--stdout", text],
        check=True, capture_output=True,
    ).stdout
    data, rate_in = sf.read(io.BytesIO(wav), dtype="float64")
    return soxr.resample(data, rate_in, SR)


def main(out: Path) -> None:
    rng = np.random.default_rng(7)
    parts = [np.zeros(int(1.0 * SR))]
    for line in LINES:
        parts.append(speak(*line) * 0.5)
        parts.append(np.zeros(int(rng.uniform(1.2, 2.0) * SR)))
    signal = np.concatenate(parts)
    white = rng.normal(0, 1, len(signal))
    pink = np.fft.irfft(np.fft.rfft(white) / np.sqrt(np.arange(1, len(white) // 2 + 2)), n=len(white))
    pink *= 10 ** (-50 / 20) / np.sqrt(np.mean(pink**2))
    sf.write(str(out), np.clip(signal + pink, -1, 1), SR, format="OGG", subtype="OPUS")
    print(f"{out}: {len(signal) / SR:.1f} s, {out.stat().st_size} bytes")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "daemon/assets/demo.ogg")
