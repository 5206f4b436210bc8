"""The daemon's side of the adapt stage: which normaliser, and where its household memory lives.

The estimator itself is ``dsp.adapt.HouseholdStats``; this module picks the
normaliser the model's sidecar names, warm-starts it from the training
statistics shipped there, keeps it in a state file across restarts (the
unit's ``StateDirectory``) and writes it back now and then and at shutdown.
A state file that is corrupt, foreign or for another model's bands is
ignored with one warning: the daemon starts from the training statistics
rather than refusing to run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..dsp.adapt import (
    FRAMES_PER_SECOND,
    AdaptParams,
    AdaptStateError,
    HouseholdNormaliser,
    HouseholdStats,
    PerWindowMean,
    WindowNormaliser,
)
from ..models.runtime import ModelInfo
from .config import AdaptSettings
from .identity import systemd_state_dir

log = logging.getLogger("emotiond")

STATE_NAME = "household.json"


def default_state_file(environ: Mapping[str, str] | None = None) -> Path | None:
    """``$STATE_DIRECTORY/household.json`` under systemd; ``None`` elsewhere, so shell runs and tests keep no state."""
    state_dir = systemd_state_dir(environ)
    return state_dir / STATE_NAME if state_dir is not None else None


def fresh_normaliser(info: ModelInfo, horizon_s: float | None = None) -> WindowNormaliser:
    """The normaliser the model was trained with, at its warm start: no household heard yet.

    ``classify`` and ``eval`` use it: one file, or each ``stream``/``session``
    run, starts from the training statistics, as a new installation does.
    """
    if info.normalisation != HouseholdNormaliser.name:
        return PerWindowMean()
    adapt = info.extra["adapt"]  # checked by models.runtime.load_info
    trained = info.frontend().adapt
    horizon = horizon_s if horizon_s is not None else trained.horizon_s
    params = AdaptParams(horizon_s=horizon, prior_s=min(trained.prior_s, horizon))
    return HouseholdNormaliser(HouseholdStats(params, np.array(adapt["prior_mean"]), np.array(adapt["prior_var"])))


class Household:
    """What the daemon has learnt of its household's speech, and its state file."""

    def __init__(self, info: ModelInfo, settings: AdaptSettings) -> None:
        self.settings = settings
        self.stats: HouseholdStats | None = None
        self.state_file = settings.state_file or default_state_file()
        self._last_save = time.monotonic()
        self._saved_frames = 0
        self.normaliser = fresh_normaliser(info, settings.horizon_s)
        if not isinstance(self.normaliser, HouseholdNormaliser):
            return
        self.stats = self.normaliser.stats
        if settings.reset:
            self.forget()
        else:
            self._load()

    @property
    def adapts(self) -> bool:
        return self.stats is not None

    def _load(self) -> None:
        assert self.stats is not None
        if self.state_file is None or not self.state_file.exists():
            return
        try:
            self.stats.load(self.state_file)
        except AdaptStateError as exc:
            log.warning("adapt.state_file: %s; starting from the training statistics", exc)
            return
        self._saved_frames = self.stats.frames_heard
        self.normaliser.refresh()
        log.info("household statistics loaded from %s (%.0f s of speech)", self.state_file, self.heard_s)

    @property
    def heard_s(self) -> float:
        return 0.0 if self.stats is None else self.stats.frames_heard / FRAMES_PER_SECOND

    def forget(self) -> None:
        """Back to the training statistics, and the state file removed (``adapt.reset``, ``reset-adaptation``)."""
        if self.stats is not None:
            self.stats.reset()
            self.normaliser.refresh()
        if self.state_file is not None:
            try:
                self.state_file.unlink(missing_ok=True)
                log.info("household statistics reset (%s removed)", self.state_file)
            except OSError as exc:
                log.warning("adapt.state_file: cannot remove %s: %s", self.state_file, exc.strerror or exc)

    def maybe_save(self, force: bool = False) -> None:
        """Write the state when it changed and ``save_interval_s`` passed (or ``force``); never raises."""
        if self.stats is None or self.state_file is None:
            return
        now = time.monotonic()
        if self.stats.frames_heard == self._saved_frames:
            return
        if not force and now - self._last_save < self.settings.save_interval_s:
            return
        self._last_save = now
        try:
            self.stats.save(self.state_file)
            self._saved_frames = self.stats.frames_heard
        except OSError as exc:
            log.warning("adapt.state_file: cannot write %s: %s", self.state_file, exc.strerror or exc)

    def describe(self) -> dict[str, float | str | None]:
        """For the health message: which normaliser, and how much speech the estimate has heard."""
        return {
            "normaliser": self.normaliser.name,
            "heard_s": round(self.heard_s, 1) if self.adapts else None,
        }
