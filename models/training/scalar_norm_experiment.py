"""Experiment (not shipped): per-window *scalar* mean removal instead of per-band.

    python -m emotiond.models.training.scalar_norm_experiment --data DIR --out runs/tune/gn \
        --select-only --cache runs/cache-gn

The daemon's ``normalise_window`` removes each mel band's mean over the window,
which also removes the window's average spectral shape (tilt), a known arousal
cue. This runs ``emotiond train`` with the shape kept (only the overall level
removed) to see whether that cue is worth the microphone colouration it lets
in. It patches ``dsp.features`` in this process only, so it needs its own
``--cache`` (the cache key does not know about the patch). Result (validation
speakers, docs/model-card.md): no gain beyond run-to-run spread, so ``dsp/`` is
unchanged.
"""

from __future__ import annotations

import sys

import numpy as np

from ...dsp import features, frontend
from .train import train_main


def normalise_scalar(window: np.ndarray) -> np.ndarray:
    return (window - window.mean()).astype(np.float32)


def fit_window_scalar(frames: np.ndarray, window_frames: int) -> np.ndarray:
    """Like ``dsp.features.fit_window``, padding short runs with their band means."""
    frames = frames[-window_frames:]
    out = np.zeros((window_frames, frames.shape[1]), dtype=np.float32)
    if frames.shape[0]:
        v = normalise_scalar(frames)
        out[: frames.shape[0]] = v
        out[frames.shape[0] :] = v.mean(axis=0)
    return out


def main(argv: list[str] | None = None) -> int:
    features.normalise_window = normalise_scalar
    features.fit_window = fit_window_scalar
    frontend.fit_window = fit_window_scalar  # the name frontend imported
    return train_main(argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
