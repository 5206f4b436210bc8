"""The adapt stage in training: the daemon's normalisers applied to cached raw windows.

``dsp.adapt`` defines the arithmetic; this module only decides *which state*
each window sees. For ``household_band_z`` that is the ``HouseholdStats`` a
daemon would hold after hearing, in order, every utterance before it in a
"household" sequence of clips: the same class, updated once per utterance
after the utterance is judged, as ``dsp.frontend.Frontend`` does live.

Households are built from one corpus at a time (one recording set-up, several
voices), shuffled anew every epoch, in three orders so the model learns to
live with skewed months, not only balanced acted sets:

* ``shuffled``: every emotion mixed at random;
* ``runs``: long runs of one emotion (5–20 clips in a row);
* ``neutral``: mostly neutral speech (neutral clips repeated so that about 60 %
  of the utterances the estimator hears are neutral).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...dsp.adapt import AdaptParams, HouseholdStats, SegmentStats
from .data import Clip
from .featurize import FeatureSet

WINDOW = "per_window_band_mean"
HOUSEHOLD = "household_band_z"
ORDERS = ("shuffled", "runs", "neutral")


def training_prior(fs: FeatureSet) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and variance over every speech frame of ``fs`` (the warm start shipped in the sidecar)."""
    n = float(fs.seg_n.sum())
    mean = fs.seg_sum.sum(axis=0) / n
    var = fs.seg_sumsq.sum(axis=0) / n - np.square(mean)
    return mean, np.maximum(var, 1e-2)


def normalise_batch(
    raw: np.ndarray, n_frames: np.ndarray, kind: str, mean: np.ndarray | None = None, inv_std: np.ndarray | None = None
) -> np.ndarray:
    """Model inputs from raw windows: ``dsp.adapt``'s arithmetic on a batch (padding stays zero)."""
    raw = raw.astype(np.float32)
    mask = (np.arange(raw.shape[1])[None, :] < n_frames[:, None])[:, :, None]
    if kind == WINDOW:
        m = (raw * mask).sum(axis=1, keepdims=True) / np.maximum(n_frames, 1)[:, None, None]
        return ((raw - m) * mask).astype(np.float32)
    if kind == HOUSEHOLD:
        assert mean is not None and inv_std is not None
        return ((raw - mean[:, None, :]) * inv_std[:, None, :] * mask).astype(np.float32)
    raise ValueError(f"unknown normalisation {kind!r}")


def household_orders(
    clips: Sequence[Clip], rng: np.random.Generator, size: tuple[int, int] = (80, 300)
) -> list[list[int]]:
    """Sequences of clip indices: households of one corpus each, each clip in one (``neutral`` repeats some)."""
    by_corpus: dict[str, list[int]] = {}
    for i, c in enumerate(clips):
        by_corpus.setdefault(c.corpus, []).append(i)
    sequences: list[list[int]] = []
    for corpus in sorted(by_corpus):
        idx = np.array(by_corpus[corpus])
        rng.shuffle(idx)
        start = 0
        while start < len(idx):
            n = int(rng.integers(size[0], size[1] + 1))
            members = [int(i) for i in idx[start : start + n]]
            start += n
            sequences.append(order_household(members, clips, ORDERS[int(rng.integers(len(ORDERS)))], rng))
    return sequences


def order_household(members: list[int], clips: Sequence[Clip], order: str, rng: np.random.Generator) -> list[int]:
    members = list(members)
    if order == "shuffled":
        rng.shuffle(members)
        return members
    if order == "runs":
        by_label: dict[str, list[int]] = {}
        for i in members:
            by_label.setdefault(clips[i].label, []).append(i)
        blocks: list[list[int]] = []
        for group in by_label.values():
            rng.shuffle(group)
            pos = 0
            while pos < len(group):
                n = int(rng.integers(5, 21))
                blocks.append(group[pos : pos + n])
                pos += n
        rng.shuffle(blocks)
        return [i for b in blocks for i in b]
    if order == "neutral":
        neutral = [i for i in members if clips[i].label == "neutral"]
        rng.shuffle(members)
        if not neutral:
            return members
        # about 60 % of what the estimator hears is neutral: pad with repeats of neutral clips
        extra = max(0, int(1.5 * (len(members) - len(neutral))) - len(neutral))
        seq = members + [neutral[int(j)] for j in rng.integers(len(neutral), size=extra)]
        rng.shuffle(seq)
        return seq
    raise ValueError(f"unknown household order {order!r}")


def household_scales(
    fs: FeatureSet,
    sequences: Sequence[Sequence[int]],
    params: AdaptParams,
    prior: tuple[np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Per window, the ``(mean, 1/std)`` the daemon's estimator would hold when it judged that window.

    A clip that appears twice in a sequence (``neutral`` order) is judged at its
    first appearance; every appearance teaches the estimator.
    """
    n_mels = fs.x.shape[2]
    mean = np.zeros((len(fs.x), n_mels), np.float32)
    inv_std = np.ones((len(fs.x), n_mels), np.float32)
    segs_of_clip = fs.segments_per_clip()
    order = np.argsort(fs.seg, kind="stable")
    bounds = np.searchsorted(fs.seg[order], np.arange(len(fs.seg_n) + 1))
    done = np.zeros(fs.n_clips, bool)
    for seq in sequences:
        stats = HouseholdStats(params, prior[0], prior[1])
        for ci in seq:
            for s in segs_of_clip[ci]:
                if not done[ci]:
                    wins = order[bounds[s] : bounds[s + 1]]
                    m, inv = stats.scale()
                    mean[wins] = m
                    inv_std[wins] = inv
                stats.update(SegmentStats(int(fs.seg_n[s]), fs.seg_sum[s], fs.seg_sumsq[s]))
            done[ci] = True
    return mean, inv_std


def fixed_households(clips: Sequence[Clip], seed: int) -> list[list[int]]:
    """Validation/test: one shuffled sequence per corpus, the same every epoch (seeded)."""
    rng = np.random.default_rng(seed)
    by_corpus: dict[str, list[int]] = {}
    for i, c in enumerate(clips):
        by_corpus.setdefault(c.corpus, []).append(i)
    out = []
    for corpus in sorted(by_corpus):
        idx = by_corpus[corpus][:]
        rng.shuffle(idx)
        out.append(idx)
    return out
