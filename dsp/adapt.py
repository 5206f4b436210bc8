"""The adapt stage: how a window of log-mel frames is normalised before the model.

A household is one microphone, one room and a few voices, heard for months.
Two normalisers, chosen by the model's sidecar (the model was trained on one
of them, so the daemon must use the same):

* ``window`` (``per_window_band_mean``): subtract each band's mean over the
  window. Cancels gain and colouration, but also every level cue: a shout and
  a murmur of the same shape look alike.
* ``household`` (``household_band_z``): z-score each band against a
  long-horizon running estimate of *all* the speech the daemon has heard
  (``HouseholdStats``), warm-started from the training statistics. Gain and
  room cancel once the estimate has converged, while loudness and spectral
  tilt *relative to this household's usual speech* stay visible to the model.

The estimate is updated once per utterance, after the utterance is
classified, from the utterance's sufficient statistics (frame count, per-band
sum and sum of squares): the same in training, where it runs over shuffled
sequences of clips, and live. It does not know or need to know who speaks:
per-speaker statistics break on speakers who show one emotion only.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from .features import FEATURES, fit_window

STATE_SCHEMA = "emotiond.household-stats/1"
FRAMES_PER_SECOND = FEATURES.sample_rate // FEATURES.hop_length
VAR_FLOOR = 1e-2  # nats²: a band that never varies must not blow up


class AdaptStateError(Exception):
    """A state file that cannot be used (corrupt, foreign, other band count); the message names it."""


def read_json_state(path: Path, what: str) -> object:
    """A state file's JSON; ``AdaptStateError`` naming the file and ``what`` it should hold if unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AdaptStateError(f"{path}: unreadable {what} ({type(exc).__name__})") from None


def write_json_atomic(path: Path, data: dict) -> None:
    """Write atomically (temp file + fsync + rename): a crash mid-write keeps the previous state.

    The temp file has a fixed name, so one killed mid-write is simply
    overwritten by the next save rather than left behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@dataclass(frozen=True)
class AdaptParams:
    """How long the household estimate remembers, and how much the warm start weighs.

    ``horizon_s`` is in seconds of *speech* (not of wall time): after that much
    speech an old microphone or room has mostly been forgotten. ``prior_s`` is
    how much speech the training statistics count for at start, so the first
    utterance is judged against something sensible and the estimate still
    moves quickly towards the household.
    """

    horizon_s: float = 600.0
    prior_s: float = 30.0

    def __post_init__(self) -> None:
        if not self.horizon_s > 0:
            raise ValueError("horizon_s must be positive")
        if not 0 <= self.prior_s <= self.horizon_s:
            raise ValueError("prior_s must be in 0..horizon_s")

    @property
    def horizon_frames(self) -> float:
        return self.horizon_s * FRAMES_PER_SECOND

    @property
    def prior_frames(self) -> float:
        return self.prior_s * FRAMES_PER_SECOND


@dataclass
class SegmentStats:
    """Sufficient statistics of one utterance's speech frames: order-free, so chunking cannot change them."""

    n: int = 0
    total: np.ndarray = field(default_factory=lambda: np.zeros(FEATURES.n_mels))
    total_sq: np.ndarray = field(default_factory=lambda: np.zeros(FEATURES.n_mels))

    def add(self, frames: np.ndarray) -> None:
        frames = np.asarray(frames, dtype=np.float64).reshape(-1, self.total.shape[0])
        self.n += frames.shape[0]
        self.total = self.total + frames.sum(axis=0)
        self.total_sq = self.total_sq + np.square(frames).sum(axis=0)


class HouseholdStats:
    """Running per-band mean and variance of speech log-mel, with a forgetting horizon.

    Each utterance of ``n`` frames moves the estimate by ``n / (count + n)``;
    ``count`` grows with the speech heard, up to ``horizon_frames``, so early
    on the estimate learns fast and after months it is an exponential average
    over roughly the last ``horizon_s`` seconds of speech.
    """

    def __init__(self, params: AdaptParams, prior_mean: np.ndarray, prior_var: np.ndarray) -> None:
        self.params = params
        self.prior_mean = np.asarray(prior_mean, dtype=np.float64).copy()
        self.prior_var = np.asarray(prior_var, dtype=np.float64).copy()
        if self.prior_mean.shape != self.prior_var.shape or self.prior_mean.ndim != 1:
            raise ValueError("prior mean and variance must be 1-D arrays of the same length")
        self.reset()

    def reset(self) -> None:
        """Forget the household: back to the training statistics."""
        self.mean = self.prior_mean.copy()
        self.mean_sq = self.prior_var + np.square(self.prior_mean)
        self.count = self.params.prior_frames
        self.frames_heard = 0

    @property
    def var(self) -> np.ndarray:
        return np.maximum(self.mean_sq - np.square(self.mean), VAR_FLOOR)

    def update(self, seg: SegmentStats) -> None:
        if seg.n <= 0:
            return
        a = seg.n / (self.count + seg.n)
        self.mean = (1 - a) * self.mean + a * (seg.total / seg.n)
        self.mean_sq = (1 - a) * self.mean_sq + a * (seg.total_sq / seg.n)
        self.count = min(self.count + seg.n, self.params.horizon_frames)
        self.frames_heard += seg.n

    def scale(self) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, 1/std)`` per band, float32, for ``(frames - mean) * inv_std``."""
        return self.mean.astype(np.float32), (1.0 / np.sqrt(self.var)).astype(np.float32)

    # -- persistence -------------------------------------------------------

    def to_json(self) -> dict:
        return {
            "schema": STATE_SCHEMA,
            "n_mels": int(self.mean.shape[0]),
            "horizon_s": self.params.horizon_s,
            "mean": self.mean.tolist(),
            "mean_sq": self.mean_sq.tolist(),
            "count": self.count,
            "frames_heard": self.frames_heard,
        }

    def load_state(self, data: object, where: str) -> None:
        """Adopt a saved state; raises ``AdaptStateError`` (naming ``where``) and leaves self unchanged if unusable."""
        try:
            if not isinstance(data, dict) or data.get("schema") != STATE_SCHEMA:
                raise AdaptStateError(f"{where}: not an emotiond household-stats file")
            mean = np.asarray(data["mean"], dtype=np.float64)
            mean_sq = np.asarray(data["mean_sq"], dtype=np.float64)
            count = float(data["count"])
            heard = int(data["frames_heard"])
        except (KeyError, TypeError, ValueError) as exc:
            raise AdaptStateError(f"{where}: unreadable household statistics ({exc})") from None
        if mean.shape != self.prior_mean.shape or mean_sq.shape != mean.shape:
            raise AdaptStateError(f"{where}: statistics for {mean.shape} bands, this model has {self.prior_mean.shape}")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(mean_sq)) and math.isfinite(count) and count >= 0):
            raise AdaptStateError(f"{where}: household statistics hold non-finite values")
        self.mean, self.mean_sq, self.count, self.frames_heard = (
            mean,
            mean_sq,
            min(count, self.params.horizon_frames),
            heard,
        )

    def save(self, path: Path) -> None:
        write_json_atomic(Path(path), self.to_json())

    def load(self, path: Path) -> None:
        """Read a state file written by ``save``; ``AdaptStateError`` if it is unusable, self unchanged."""
        self.load_state(read_json_state(Path(path), "household statistics"), str(path))


# -- window normalisers ---------------------------------------------------------


class WindowNormaliser(Protocol):
    """Turns the last speech frames of an utterance into one model input, and learns from closed utterances."""

    name: str

    def window(self, frames: np.ndarray, window_frames: int) -> np.ndarray: ...

    def observe(self, seg: SegmentStats) -> None: ...


def _pad(frames: np.ndarray, window_frames: int) -> np.ndarray:
    out = np.zeros((window_frames, frames.shape[1]), dtype=np.float32)
    out[: frames.shape[0]] = frames
    return out


class PerWindowMean:
    """``per_window_band_mean``: each band's mean over the window removed; shorter runs padded with zeros."""

    name = "per_window_band_mean"

    def window(self, frames: np.ndarray, window_frames: int) -> np.ndarray:
        return fit_window(frames, window_frames)

    def observe(self, seg: SegmentStats) -> None:
        return None


class HouseholdNormaliser:
    """``household_band_z``: frames z-scored per band against ``HouseholdStats``; padding is zeros (the mean)."""

    name = "household_band_z"

    def __init__(self, stats: HouseholdStats) -> None:
        self.stats = stats
        self._scale = stats.scale()

    def window(self, frames: np.ndarray, window_frames: int) -> np.ndarray:
        frames = frames[-window_frames:]
        mean, inv_std = self._scale
        return _pad((frames - mean) * inv_std, window_frames)

    def observe(self, seg: SegmentStats) -> None:
        self.stats.update(seg)
        self._scale = self.stats.scale()

    def refresh(self) -> None:
        """Re-read the statistics after they were loaded or reset from outside."""
        self._scale = self.stats.scale()


class RawWindows:
    """No normalisation: training caches raw windows and applies either normaliser later, exactly as above."""

    name = "raw"

    def window(self, frames: np.ndarray, window_frames: int) -> np.ndarray:
        return _pad(frames[-window_frames:], window_frames)

    def observe(self, seg: SegmentStats) -> None:
        return None


NORMALISERS = (PerWindowMean.name, HouseholdNormaliser.name)
