"""Bench audio: synthetic speech scenes (espeak-ng + noise) or labelled clips from a manifest/data folder."""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from emotiond.dsp.noise import pink_noise, scale_to_snr, speech_rms

SR = 16_000

SENTENCES = [
    "I can not believe you would do this to me.",
    "Tomorrow we will walk along the river together.",
    "The meeting has been moved to half past three.",
    "Please turn the lights off in the kitchen.",
    "That was the best concert I have ever been to!",
    "Nobody called, and the house was very quiet.",
    "Could you tell me where the station is?",
    "We lost the game again, it is so unfair.",
]
VOICES = [("en-us", 50), ("en-gb", 70), ("en-us", 30), ("en-gb", 45)]


@dataclass
class Item:
    signal: np.ndarray
    label: str
    name: str


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


def espeak(text: str, voice: str = "en-us", pitch: int = 50, rate: int = 160, gain: float = 0.5) -> np.ndarray:
    """One sentence of espeak-ng speech at 16 kHz (espeak-ng speaks at 22.05 kHz; soxr resamples)."""
    import soundfile as sf
    import soxr

    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate), "-p", str(pitch), "--stdout", text],
                         check=True, capture_output=True).stdout
    data, rate_in = sf.read(io.BytesIO(wav), dtype="float64")
    return soxr.resample(data, rate_in, SR) * gain


def pink(n: int, rng: np.random.Generator, dbfs: float) -> np.ndarray:
    """Pink noise at ``dbfs``: the noise kit's (``emotiond.dsp.noise``)."""
    return pink_noise(n, rng, dbfs)


def synthetic_items(n: int, seed: int = 0) -> list[Item]:
    """``n`` espeak-ng sentences (label ``neutral``: synthetic speech carries no real emotion)."""
    if not have_espeak():
        raise RuntimeError("espeak-ng is not installed; pass --data MANIFEST.csv or install espeak-ng")
    items = []
    for i in range(n):
        voice, pitch = VOICES[i % len(VOICES)]
        text = SENTENCES[(i + seed) % len(SENTENCES)]
        items.append(Item(espeak(text, voice, pitch), "neutral", f"tts{i}"))
    return items


def scene(items: list[Item], rng: np.random.Generator, gap_s: tuple[float, float] = (1.0, 4.0),
          bed_dbfs: float = -55.0, lead_s: float = 2.0, bed: np.ndarray | None = None,
          bed_snr_db: float | None = None) -> tuple[np.ndarray, list[tuple[int, int, str]]]:
    """Clips separated by random silences over a noise bed; returns the signal and each clip's (start, end, label).

    The bed is pink noise at ``bed_dbfs``, or ``bed`` (looped) at ``bed_snr_db`` below the median
    clip's speech level, as the noise kit defines SNR (``emotiond.dsp.noise``).
    """
    parts, spans = [np.zeros(int(lead_s * SR))], []
    pos = len(parts[0])
    for it in items:
        spans.append((pos, pos + len(it.signal), it.label))
        parts.append(it.signal)
        pos += len(it.signal)
        gap = np.zeros(int(rng.uniform(*gap_s) * SR))
        parts.append(gap)
        pos += len(gap)
    sig = np.concatenate(parts)
    if bed is not None and len(bed):
        reps = int(np.ceil(len(sig) / len(bed)))
        noise = np.tile(bed, reps)[: len(sig)]
        median = items[int(np.argsort([speech_rms(it.signal) for it in items])[len(items) // 2])].signal
        noise = scale_to_snr(median, noise, bed_snr_db if bed_snr_db is not None else 20.0)
    else:
        noise = pink(len(sig), rng, bed_dbfs)
    return np.clip(sig + noise, -1, 1), spans


def data_items(data: Path, n: int, seed: int = 0, speakers: dict[str, set[str]] | None = None) -> list[Item]:
    """``n`` labelled clips from a ``path,label`` manifest or a data folder of ``<corpus>/labels.csv``."""
    from emotiond.dsp.audio import load_mono_16k

    data = Path(data)
    rows: list[tuple[Path, str]] = []
    if data.is_file():
        with data.open(newline="") as fh:
            for r in csv.DictReader(fh):
                p = Path(r["path"])
                rows.append((p if p.is_absolute() else data.parent / p, r["label"]))
    else:
        for labels in sorted(data.glob("*/labels.csv")):
            corpus = labels.parent.name
            if corpus == "noise":
                continue
            with labels.open(newline="") as fh:
                for r in csv.DictReader(fh):
                    if speakers is not None and r.get("speaker") not in speakers.get(corpus, set()):
                        continue
                    rows.append((labels.parent / f"{r['stem']}.opus", r["emotion"]))
    if not rows:
        raise RuntimeError(f"{data}: no clips found")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(rows), size=min(n, len(rows)), replace=False)
    return [Item(load_mono_16k(rows[i][0]), rows[i][1], rows[i][0].name) for i in pick]


def default_data() -> Path | None:
    env = os.environ.get("EMOTIOND_DATA")
    return Path(env) if env else None
