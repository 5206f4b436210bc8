"""The calibrate stage: the household's own lean, taken out of the model's output.

On voices, microphones and languages it never heard, the network is not only
less sure, it leans as a whole: on Polish and British speakers it called two
clips in three ``neutral``, on Amharic and Turkish ones it called ``disgust``
(a class neither corpus has) one time in six (docs/model-card.md). The adapt
stage cannot see that lean; it normalises the input, not the judgement.

This stage keeps a long-horizon running mean ``m`` of the model's window
probabilities over everything the household says, warm-started at the
*reference* ``r``: what the same model outputs on average for a household
whose speech is ``neutral_share`` neutral and otherwise evenly spread, measured
on its validation speakers. Each window's probabilities are multiplied by
``r / m`` and renormalised: the prior-ratio correction of Saerens et al.
(2002). A household that sounds the way the reference expects is left alone;
one the model hears as "mostly neutral" far beyond ``neutral_share`` is
judged against its own normal.

Like the adapt stage, the estimate moves once per utterance, after the
utterance is classified (so an utterance never corrects itself), does not know
who speaks, and survives restarts in a state file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .adapt import AdaptStateError, read_json_state, write_json_atomic

STATE_SCHEMA = "emotiond.household-prior/1"
PROB_FLOOR = 1e-4  # a class the household never seems to show must not be boosted without bound


@dataclass(frozen=True)
class CalibrateParams:
    """``neutral_share``: the household the reference assumes; windows are counted in model windows."""

    neutral_share: float = 0.6
    horizon_windows: float = 2400.0  # the adapt stage's 600 s of speech at 4 windows per second
    prior_windows: float = 120.0  # the adapt stage's 30 s

    def __post_init__(self) -> None:
        if not 0 < self.neutral_share < 1:
            raise ValueError("neutral_share must be in (0, 1)")
        if not self.horizon_windows > 0 or not 0 <= self.prior_windows <= self.horizon_windows:
            raise ValueError("need horizon_windows > 0 and 0 <= prior_windows <= horizon_windows")


def reference(
    class_means: Sequence[Sequence[float] | None], labels: Sequence[str], neutral_share: float
) -> np.ndarray:
    """The mean output of a household that is ``neutral_share`` neutral, the rest spread evenly.

    ``class_means[k]`` is the model's mean window probabilities on validation
    clips of class ``labels[k]`` (``None`` where validation had none: that
    class gets no weight).
    """
    if len(class_means) != len(labels):
        raise ValueError(f"calibration has {len(class_means)} rows for {len(labels)} labels")
    present = [k for k, row in enumerate(class_means) if row is not None]
    if "neutral" not in labels or labels.index("neutral") not in present or len(present) < 2:
        raise ValueError("calibration needs validation clips of neutral and of at least one other class")
    neutral = labels.index("neutral")
    others = [k for k in present if k != neutral]
    weights = np.zeros(len(labels))
    weights[neutral] = neutral_share
    weights[others] = (1.0 - neutral_share) / len(others)
    rows = np.array([row if row is not None else np.zeros(len(labels)) for row in class_means], dtype=np.float64)
    if rows.shape != (len(labels), len(labels)) or not np.all(np.isfinite(rows)) or np.any(rows < 0):
        raise ValueError("calibration rows must be finite probability vectors, one per label")
    mix = weights @ rows
    if not mix.sum() > 0:
        raise ValueError("calibration rows of the classes present are all zero")
    return np.maximum(mix / mix.sum(), PROB_FLOOR)


class HouseholdPrior:
    """Running mean of the model's window probabilities with a forgetting horizon (cf. ``HouseholdStats``)."""

    def __init__(self, params: CalibrateParams, reference_probs: np.ndarray) -> None:
        self.params = params
        self.reference = np.asarray(reference_probs, dtype=np.float64).copy()
        if self.reference.ndim != 1 or not np.all(self.reference > 0):
            raise ValueError("the reference must be a positive probability vector")
        self.reset()

    def reset(self) -> None:
        """Forget the household: back to the reference."""
        self.mean = self.reference.copy()
        self.count = self.params.prior_windows
        self.windows_heard = 0
        self._ratio = np.ones_like(self.reference)

    def update(self, total: np.ndarray, n: int) -> None:
        """Learn from one utterance: the sum of its ``n`` windows' (raw) probabilities."""
        if n <= 0:
            return
        a = n / (self.count + n)
        self.mean = (1 - a) * self.mean + a * (np.asarray(total, dtype=np.float64) / n)
        self.count = min(self.count + n, self.params.horizon_windows)
        self.windows_heard += n
        self._ratio = self.reference / np.maximum(self.mean, PROB_FLOOR)

    def recount(self, factor: float) -> None:
        """The pipeline's hop changed (a reload of ``windows.hop_ms``): the same speech is ``factor`` times as
        many windows, so the horizon and what is remembered keep their length in seconds."""
        p = self.params
        self.params = replace(p, horizon_windows=p.horizon_windows * factor, prior_windows=p.prior_windows * factor)
        self.count *= factor

    def adjust(self, probs: np.ndarray) -> np.ndarray:
        """One window's probabilities judged against this household's normal."""
        q = np.asarray(probs, dtype=np.float64) * self._ratio
        total = q.sum()
        return q / total if total > 0 else np.asarray(probs, dtype=np.float64)  # an all-zero window stays as it came

    # -- persistence (same rules as the adapt stage's state file) ---------------

    def to_json(self) -> dict:
        return {
            "schema": STATE_SCHEMA,
            "reference": self.reference.tolist(),
            "mean": self.mean.tolist(),
            "count": self.count,
            "windows_heard": self.windows_heard,
        }

    def load_state(self, data: object, where: str) -> None:
        """Adopt a saved state; ``AdaptStateError`` (naming ``where``) and self unchanged if unusable.

        A state learnt against another reference (another model, another
        ``neutral_share``) is refused: its mean answers a different question.
        """
        try:
            if not isinstance(data, dict) or data.get("schema") != STATE_SCHEMA:
                raise AdaptStateError(f"{where}: not an emotiond household-prior file")
            ref = np.asarray(data["reference"], dtype=np.float64)
            mean = np.asarray(data["mean"], dtype=np.float64)
            count = float(data["count"])
            heard = int(data["windows_heard"])
        except (KeyError, TypeError, ValueError) as exc:
            raise AdaptStateError(f"{where}: unreadable household prior ({exc})") from None
        if ref.shape != self.reference.shape or not np.allclose(ref, self.reference, atol=1e-6):
            raise AdaptStateError(f"{where}: household prior for another model or neutral_share")
        if mean.shape != ref.shape or not (np.all(np.isfinite(mean)) and math.isfinite(count) and count >= 0):
            raise AdaptStateError(f"{where}: household prior holds unusable values")
        self.mean, self.count, self.windows_heard = mean, min(count, self.params.horizon_windows), heard
        self._ratio = self.reference / np.maximum(self.mean, PROB_FLOOR)

    def save(self, path: Path) -> None:
        write_json_atomic(Path(path), self.to_json())

    def load(self, path: Path) -> None:
        """Read a state file written by ``save``; ``AdaptStateError`` if it is unusable, self unchanged."""
        self.load_state(read_json_state(Path(path), "household prior"), str(path))


class Calibrator:
    """The stage object between model and smoother: adjusts each window, learns at each utterance's end."""

    name = "household_prior"

    def __init__(self, prior: HouseholdPrior) -> None:
        self.prior = prior
        self._segment: int | None = None
        self._total = np.zeros_like(prior.reference)
        self._n = 0

    def window(self, segment: int, probs: np.ndarray) -> np.ndarray:
        if segment != self._segment:  # a segment whose end was never seen is dropped, not learnt
            self._segment, self._total, self._n = segment, np.zeros_like(self._total), 0
        self._total = self._total + probs
        self._n += 1
        return self.prior.adjust(probs)

    def segment_end(self, segment: int) -> None:
        if segment == self._segment and self._n:
            self.prior.update(self._total, self._n)
        self._segment, self._total, self._n = None, np.zeros_like(self._total), 0
