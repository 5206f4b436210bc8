"""The daemon's side of the adapt and calibrate stages: what the household taught them, and where it lives.

The estimators are ``dsp.adapt.HouseholdStats`` (input) and
``dsp.calibrate.HouseholdPrior`` (output); this module picks the normaliser
the model's sidecar names, warm-starts both from what the sidecar ships
(training statistics, validation reference), keeps them in state files
across restarts (the unit's ``StateDirectory``) and writes them back now and
then and at shutdown. A state file that is corrupt, foreign or for another
model is ignored with one warning: the daemon starts from the sidecar's
values rather than refusing to run.
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
from ..dsp.calibrate import CalibrateParams, Calibrator, HouseholdPrior, reference
from ..models.runtime import ModelInfo
from .config import AdaptSettings, CalibrateSettings
from .identity import systemd_state_dir

log = logging.getLogger("emotiond")

STATE_NAME = "household.json"
PRIOR_SUFFIX = "-prior"  # household.json → household-prior.json, beside it


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


def fresh_calibrator(
    info: ModelInfo, settings: CalibrateSettings, horizon_s: float | None = None, hop_frames: int | None = None
) -> Calibrator | None:
    """The calibrate stage at its warm start (the validation reference), or None if off or the model has none.

    The estimate shares the adapt stage's horizon and warm-start weight,
    counted in windows: one per ``hop_frames`` of speech, the hop the pipeline
    runs (``windows.hop_ms``), else the model's own.
    """
    calibration = info.extra.get("calibration")
    if not settings.enabled or calibration is None:
        return None
    trained = info.frontend()
    horizon = horizon_s if horizon_s is not None else trained.adapt.horizon_s
    per_s = FRAMES_PER_SECOND / (hop_frames or trained.window.hop_frames)
    params = CalibrateParams(settings.neutral_share, horizon * per_s, min(trained.adapt.prior_s, horizon) * per_s)
    ref = reference(calibration["class_mean_probabilities"], info.labels, settings.neutral_share)
    return Calibrator(HouseholdPrior(params, ref))


class Household:
    """What the daemon has learnt of its household's speech and of its own lean there, and their state files."""

    def __init__(
        self,
        info: ModelInfo,
        settings: AdaptSettings,
        calibrate: CalibrateSettings | None = None,
        hop_frames: int | None = None,
    ) -> None:
        self.settings = settings
        self.stats: HouseholdStats | None = None
        self.state_file = settings.state_file or default_state_file()
        self._last_save = time.monotonic()
        self._saved_frames = 0
        self._saved_windows = 0
        self.normaliser = fresh_normaliser(info, settings.horizon_s)
        self.calibrator = fresh_calibrator(info, calibrate or CalibrateSettings(), settings.horizon_s, hop_frames)
        self.prior = self.calibrator.prior if self.calibrator is not None else None
        if isinstance(self.normaliser, HouseholdNormaliser):
            self.stats = self.normaliser.stats
        if settings.reset:
            self.forget()
        else:
            self._load()

    @property
    def prior_file(self) -> Path | None:
        """Where the calibrate stage's estimate is kept: beside the adapt stage's."""
        if self.state_file is None:
            return None
        return self.state_file.with_name(self.state_file.stem + PRIOR_SUFFIX + self.state_file.suffix)

    @property
    def adapts(self) -> bool:
        return self.stats is not None

    def _load(self) -> None:
        if self.prior is not None and self.prior_file is not None and self.prior_file.exists():
            try:
                self.prior.load(self.prior_file)
                self._saved_windows = self.prior.windows_heard
                log.info("household prior loaded from %s (%d windows)", self.prior_file, self.prior.windows_heard)
            except AdaptStateError as exc:
                log.warning("adapt.state_file: %s; the calibrate stage starts from its reference", exc)
        if self.stats is None or self.state_file is None or not self.state_file.exists():
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
        """Back to the sidecar's values, and both state files removed (``adapt.reset``, ``reset-adaptation``)."""
        if self.stats is not None:
            self.stats.reset()
            self.normaliser.refresh()
        if self.prior is not None:
            self.prior.reset()
        for path in (self.state_file, self.prior_file):
            if path is None:
                continue
            try:
                path.unlink(missing_ok=True)
                log.info("household statistics reset (%s removed)", path)
            except OSError as exc:
                log.warning("adapt.state_file: cannot remove %s: %s", path, exc.strerror or exc)

    def maybe_save(self, force: bool = False) -> None:
        """Write the states that changed once ``save_interval_s`` passed (or ``force``); never raises."""
        if self.state_file is None or (self.stats is None and self.prior is None):
            return
        stats_changed = self.stats is not None and self.stats.frames_heard != self._saved_frames
        prior_changed = self.prior is not None and self.prior.windows_heard != self._saved_windows
        if not (stats_changed or prior_changed):
            return
        now = time.monotonic()
        if not force and now - self._last_save < self.settings.save_interval_s:
            return
        self._last_save = now
        if stats_changed and self._write(self.stats, self.state_file):
            self._saved_frames = self.stats.frames_heard
        if prior_changed and self._write(self.prior, self.prior_file):
            self._saved_windows = self.prior.windows_heard

    @staticmethod
    def _write(estimate: HouseholdStats | HouseholdPrior, path: Path) -> bool:
        try:
            estimate.save(path)
            return True
        except OSError as exc:
            log.warning("adapt.state_file: cannot write %s: %s", path, exc.strerror or exc)
            return False

    def describe(self) -> dict[str, float | str | None]:
        """For the health message: which normaliser, how much speech the estimate has heard, and the calibrate stage."""
        return {
            "normaliser": self.normaliser.name,
            "heard_s": round(self.heard_s, 1) if self.adapts else None,
            "calibrate": self.calibrator.name if self.calibrator is not None else None,
        }
