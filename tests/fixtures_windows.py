"""Feature window sets over given clips, for the training code's per-window targets and weights (no audio)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from emotiond.models.training.data import Clip
from emotiond.models.training.featurize import FeatureSet


def window_set(clips: Sequence[Clip], windows_per_clip: int) -> FeatureSet:
    """``windows_per_clip`` zero windows for each clip, in clip order."""
    clip_of_window = np.repeat(np.arange(len(clips)), windows_per_clip)
    n = len(clip_of_window)
    empty = np.zeros((0, 3), np.float32)
    return FeatureSet(
        x=np.zeros((n, 4, 3), np.float16),
        clip=clip_of_window,
        n_clips=len(clips),
        n_frames=np.full(n, 4),
        seg=np.zeros(n, np.int64),
        seg_clip=np.zeros(0, np.int64),
        seg_n=np.zeros(0, np.int64),
        seg_sum=empty,
        seg_sumsq=empty,
    )
