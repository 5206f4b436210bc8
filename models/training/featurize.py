"""Clip → model windows through the daemon's own front end, with an on-disk cache.

The only feature code is ``emotiond.dsp.frontend.clip_windows``; this module
decodes audio (``soundfile.read``), optionally augments it, calls that function
and stores the windows. Caches go to a gitignored folder (``runs/`` by default)
and are never committed: they are derived from the licensed audio.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import soundfile as sf

from ...dsp.denoise import GateParams
from ...dsp.features import FEATURES, SAMPLE_RATE
from ...dsp.frontend import WindowParams, clip_windows
from ...dsp.vad import VadParams
from .augment import augment
from .data import Clip


def read_audio(path: Path) -> np.ndarray:
    """Decode to 16 kHz mono float64 (the corpora are already 16 kHz mono)."""
    x, sr = sf.read(str(path), dtype="float64", always_2d=True)
    x = x.mean(axis=1)
    if sr != SAMPLE_RATE:
        from scipy.signal import resample_poly

        x = resample_poly(x, SAMPLE_RATE, sr)
    return x


@dataclass(frozen=True)
class FrontendParams:
    vad: VadParams = field(default_factory=VadParams)
    gate: GateParams = field(default_factory=GateParams)
    window: WindowParams = field(default_factory=WindowParams)

    def to_dict(self) -> dict:
        return {"vad": asdict(self.vad), "gate": asdict(self.gate), "window": asdict(self.window)}


def clip_features(x: np.ndarray, fp: FrontendParams) -> np.ndarray:
    """``(n_windows, window_frames, n_mels)`` float32; zero windows when the VAD finds no speech."""
    wins = clip_windows(x, vad=fp.vad, gate=fp.gate, window=fp.window)
    if not wins:
        return np.zeros((0, fp.window.window_frames, FEATURES.n_mels), np.float32)
    return np.stack([w.features for w in wins]).astype(np.float32)


# -- worker state for augmented extraction -----------------------------------

_NOISES: list[np.ndarray] = []


def _init(noise_paths: Sequence[str]) -> None:
    global _NOISES
    _NOISES = [read_audio(Path(p)) for p in noise_paths]


def _job(args: tuple) -> tuple[int, np.ndarray]:
    idx, path, seed, babble_paths, fp = args
    x = read_audio(Path(path))
    if seed is not None:
        rng = np.random.default_rng(seed)
        others = [read_audio(Path(p)) for p in babble_paths]
        x = augment(x, rng, _NOISES, others)
    return idx, clip_features(x, fp)


@dataclass
class FeatureSet:
    x: np.ndarray  # (N, T, F) float16
    clip: np.ndarray  # (N,) index into ``clips``
    n_clips: int

    def per_clip(self) -> list[np.ndarray]:
        order = np.argsort(self.clip, kind="stable")
        bounds = np.searchsorted(self.clip[order], np.arange(self.n_clips + 1))
        return [order[bounds[i] : bounds[i + 1]] for i in range(self.n_clips)]


def extract(
    clips: Sequence[Clip],
    fp: FrontendParams,
    cache_dir: Path,
    tag: str,
    augment_seed: int | None = None,
    noise_paths: Sequence[Path] = (),
    workers: int = 2,
    log=print,
) -> FeatureSet:
    """Windows of every clip (augmented when ``augment_seed`` is set), cached by content key."""
    key_src = json.dumps(
        {
            "stems": [f"{c.corpus}/{c.stem}" for c in clips],
            "fp": fp.to_dict(),
            "features": FEATURES.to_dict(),
            "seed": augment_seed,
            "noise": [p.name for p in noise_paths],
            "v": 2,
        },
        sort_keys=True,
    )
    key = hashlib.sha1(key_src.encode()).hexdigest()[:16]
    cache = Path(cache_dir) / f"{tag}-{key}.npz"
    if cache.is_file():
        z = np.load(cache)
        return FeatureSet(z["x"], z["clip"], len(clips))
    jobs = []
    rng = np.random.default_rng(augment_seed)
    by_speaker: dict[str, list[int]] = {}
    for i, c in enumerate(clips):
        by_speaker.setdefault(c.speaker, []).append(i)
    for i, c in enumerate(clips):
        seed = None
        babble_paths: list[str] = []
        if augment_seed is not None:
            seed = int(rng.integers(2**31))
            others = [s for s in by_speaker if s != c.speaker]
            for s in rng.choice(others, size=min(3, len(others)), replace=False) if others else []:
                babble_paths.append(str(clips[int(rng.choice(by_speaker[s]))].path))
        jobs.append((i, str(c.path), seed, babble_paths, fp))
    results: list[np.ndarray | None] = [None] * len(clips)
    ctx = get_context("fork")
    with ctx.Pool(workers, initializer=_init, initargs=([str(p) for p in noise_paths],)) as pool:
        for n, (i, feats) in enumerate(pool.imap_unordered(_job, jobs, chunksize=8)):
            results[i] = feats
            if (n + 1) % 1000 == 0:
                log(f"  {tag}: {n + 1}/{len(jobs)} clips")
    xs = [r for r in results if r is not None and len(r)]
    x = (
        np.concatenate(xs).astype(np.float16)
        if xs
        else np.zeros((0, fp.window.window_frames, FEATURES.n_mels), np.float16)
    )
    clip = np.concatenate(
        [np.full(len(r), i, np.int32) for i, r in enumerate(results) if r is not None and len(r)]
        or [np.zeros(0, np.int32)]
    )
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, x=x, clip=clip)
    return FeatureSet(x, clip, len(clips))
