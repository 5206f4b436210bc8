"""Clip → model windows through the daemon's own front end, with an on-disk cache.

The only feature code is ``emotiond.dsp.frontend.clip_windows``; this module
decodes audio (``soundfile.read``), optionally augments it, calls that function
and stores the windows. Caches go to a gitignored folder (``runs/`` by default)
and are never committed: they are derived from the licensed audio.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import soundfile as sf

from ...dsp.adapt import RawWindows
from ...dsp.audio import AudioInputError, to_mono
from ...dsp.features import SAMPLE_RATE
from ...dsp.frontend import FrontendParams, SegmentEnd, Window
from .augment import augment
from .data import Clip


def read_audio(path: Path) -> np.ndarray:
    """Decode to 16 kHz mono float64, mixed down like the daemon's sources (``dsp.audio.to_mono``).

    Resampling stays scipy's ``resample_poly``, not the daemon's soxr ``Resampler``:
    the feature cache (and the shipped model) were built with it, and switching
    would change every training window of the corpora not stored at 16 kHz.
    """
    try:
        x, sr = sf.read(str(path), dtype="float64", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise AudioInputError(f"{path}: not a readable audio file ({exc})") from None
    x = to_mono(x)
    if sr != SAMPLE_RATE:
        from scipy.signal import resample_poly

        x = resample_poly(x, SAMPLE_RATE, sr)
    return x


@dataclass
class ClipFeatures:
    """One clip through the daemon's front end: raw (un-normalised) windows and its utterances' statistics."""

    x: np.ndarray  # (n_windows, window_frames, n_mels) float32, zero-padded after n_frames
    n_frames: np.ndarray  # (n_windows,) speech frames in each window
    seg: np.ndarray  # (n_windows,) index of the window's utterance in seg_*
    seg_n: np.ndarray  # (n_segments,) speech frames per utterance
    seg_sum: np.ndarray  # (n_segments, n_mels)
    seg_sumsq: np.ndarray  # (n_segments, n_mels)


def clip_features(x: np.ndarray, fp: FrontendParams) -> ClipFeatures:
    """The windows the daemon would classify, before the adapt stage normalises them (``RawWindows``).

    Training applies either normaliser afterwards (``normalise_batch``), with
    exactly the arithmetic of ``dsp.adapt``; keeping the raw windows and each
    utterance's sufficient statistics lets the household estimator run over
    any sequence of clips without running the front end again.
    """
    fe = fp.frontend(RawWindows())
    events = fe.push(x) + fe.flush()
    wins = [e for e in events if isinstance(e, Window)]
    ends = [e for e in events if isinstance(e, SegmentEnd) and e.stats is not None and e.stats.n > 0]
    seg_index = {e.segment: i for i, e in enumerate(ends)}
    n_features = fp.features.n_features
    return ClipFeatures(
        x=np.stack([w.features for w in wins]).astype(np.float32)
        if wins
        else np.zeros((0, fp.window.window_frames, n_features), np.float32),
        n_frames=np.array([w.n_frames for w in wins], np.int16),
        seg=np.array([seg_index[w.segment] for w in wins], np.int32),
        seg_n=np.array([e.stats.n for e in ends], np.int32),
        seg_sum=np.array([e.stats.total for e in ends], np.float64).reshape(-1, n_features),
        seg_sumsq=np.array([e.stats.total_sq for e in ends], np.float64).reshape(-1, n_features),
    )


# -- worker state for augmented extraction -----------------------------------

_NOISES: list[np.ndarray] = []


def _init(noise_paths: Sequence[str]) -> None:
    global _NOISES
    _NOISES = [read_audio(Path(p)) for p in noise_paths]


def _job(args: tuple) -> tuple[int, ClipFeatures]:
    idx, path, seed, babble_paths, fp = args
    x = read_audio(Path(path))
    if seed is not None:
        rng = np.random.default_rng(seed)
        others = [read_audio(Path(p)) for p in babble_paths]
        x = augment(x, rng, _NOISES, others)
    return idx, clip_features(x, fp)


@dataclass
class FeatureSet:
    """Raw windows of many clips plus their utterances' statistics (see ``ClipFeatures``)."""

    x: np.ndarray  # (N, T, F) float16, raw log-mel, zero-padded after n_frames
    clip: np.ndarray  # (N,) index into ``clips``
    n_clips: int
    n_frames: np.ndarray  # (N,)
    seg: np.ndarray  # (N,) index into seg_*
    seg_clip: np.ndarray  # (S,) clip of each utterance, in the clip's own order
    seg_n: np.ndarray  # (S,)
    seg_sum: np.ndarray  # (S, F)
    seg_sumsq: np.ndarray  # (S, F)

    def per_clip(self) -> list[np.ndarray]:
        order = np.argsort(self.clip, kind="stable")
        bounds = np.searchsorted(self.clip[order], np.arange(self.n_clips + 1))
        return [order[bounds[i] : bounds[i + 1]] for i in range(self.n_clips)]

    def segments_per_clip(self) -> list[np.ndarray]:
        order = np.argsort(self.seg_clip, kind="stable")
        bounds = np.searchsorted(self.seg_clip[order], np.arange(self.n_clips + 1))
        return [order[bounds[i] : bounds[i + 1]] for i in range(self.n_clips)]

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in _ARRAYS}

    @classmethod
    def from_clips(cls, results: Sequence[ClipFeatures], n_mels: int, window_frames: int) -> FeatureSet:
        def cat(parts: list[np.ndarray], empty: np.ndarray) -> np.ndarray:
            return np.concatenate(parts) if parts else empty

        seg_offset = np.cumsum([0] + [len(r.seg_n) for r in results])
        return cls(
            x=cat([r.x for r in results], np.zeros((0, window_frames, n_mels), np.float32)).astype(np.float16),
            clip=cat([np.full(len(r.x), i, np.int32) for i, r in enumerate(results)], np.zeros(0, np.int32)),
            n_clips=len(results),
            n_frames=cat([r.n_frames for r in results], np.zeros(0, np.int16)),
            seg=cat([r.seg + seg_offset[i] for i, r in enumerate(results)], np.zeros(0, np.int32)).astype(np.int32),
            seg_clip=cat([np.full(len(r.seg_n), i, np.int32) for i, r in enumerate(results)], np.zeros(0, np.int32)),
            seg_n=cat([r.seg_n for r in results], np.zeros(0, np.int32)),
            seg_sum=cat([r.seg_sum for r in results], np.zeros((0, n_mels))).astype(np.float64),
            seg_sumsq=cat([r.seg_sumsq for r in results], np.zeros((0, n_mels))).astype(np.float64),
        )


_ARRAYS = ("x", "clip", "n_frames", "seg", "seg_clip", "seg_n", "seg_sum", "seg_sumsq")


def cache_key(stems: Sequence[str], fp: FrontendParams, augment_seed: int | None, noise_names: Sequence[str]) -> str:
    """The feature cache's content key: it changes exactly when the cached windows would.

    Long training runs reuse gigabytes of cached windows by this key, so its
    recipe must not change by accident (``tests/test_training_data.py`` pins it).
    """
    key_src = json.dumps(
        {
            "stems": list(stems),
            "fp": fp.cache_dict(),
            "features": fp.features.to_dict(),
            "seed": augment_seed,
            "noise": list(noise_names),
            "v": 3,
        },
        sort_keys=True,
    )
    return hashlib.sha1(key_src.encode()).hexdigest()[:16]


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
    key = cache_key([f"{c.corpus}/{c.stem}" for c in clips], fp, augment_seed, [p.name for p in noise_paths])
    cache = Path(cache_dir) / f"{tag}-{key}.npz"
    if cache.is_file():
        try:
            with np.load(cache) as z:
                return FeatureSet(n_clips=len(clips), **{k: z[k] for k in _ARRAYS})
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:  # truncated or foreign: derived data
            log(f"  {tag}: cached features {cache} unreadable ({type(exc).__name__}); computing them again")
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
    results: list[ClipFeatures | None] = [None] * len(clips)
    ctx = get_context("fork")
    with ctx.Pool(workers, initializer=_init, initargs=([str(p) for p in noise_paths],)) as pool:
        for n, (i, feats) in enumerate(pool.imap_unordered(_job, jobs, chunksize=8)):
            results[i] = feats
            if (n + 1) % 1000 == 0:
                log(f"  {tag}: {n + 1}/{len(jobs)} clips")
    fs = FeatureSet.from_clips([r for r in results if r is not None], fp.features.n_features, fp.window.window_frames)
    cache.parent.mkdir(parents=True, exist_ok=True)
    # written aside, then renamed: a run killed mid-write, or a second run building the same key, never leaves a
    # truncated cache that every later run would load
    tmp = cache.with_name(f"{cache.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **fs.arrays())
    os.replace(tmp, cache)
    return fs
