"""The committed model loads in the daemon runtime and its sidecar matches dsp/."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
from emotiond.daemon.adaptation import fresh_calibrator, fresh_normaliser
from emotiond.daemon.config import CalibrateSettings
from emotiond.dsp.adapt import NORMALISERS, HouseholdNormaliser
from emotiond.dsp.features import FEATURES
from emotiond.models.runtime import DEFAULT_MODEL, EmotionModel
from emotiond.models.training.data import LABELS

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_model_loads_and_matches_features() -> None:
    side = json.loads(DEFAULT_MODEL.with_suffix(".json").read_text())
    assert side["features"] == FEATURES.to_dict()
    assert side["normalisation"] in NORMALISERS
    assert tuple(side["labels"]) == LABELS
    assert DEFAULT_MODEL.stat().st_size <= 300 * 1024
    for key in ("hop_frames", "vad", "split", "licences"):
        assert key in side
    assert ("denoise" in side) != ("gate" in side)  # the denoise stage's parameters, under its new or 2.0.0's key
    m = EmotionModel(DEFAULT_MODEL)
    assert m.input_shape == (1, side["window_frames"], FEATURES.n_mels)
    p = m.predict(np.random.default_rng(0).normal(0, 1, m.input_shape[1:]).astype(np.float32))
    assert p.shape == (len(LABELS),) and abs(float(p.sum()) - 1) < 1e-3


def test_shipped_adapt_stage_matches_dsp() -> None:
    """The sidecar names a normaliser dsp/ has; a household model carries a usable warm start."""
    m = EmotionModel(DEFAULT_MODEL)
    normaliser = fresh_normaliser(m.info)
    assert normaliser.name == m.info.normalisation
    adapt = m.info.extra["adapt"]
    assert len(adapt["prior_mean"]) == len(adapt["prior_var"]) == FEATURES.n_mels
    assert all(v > 0 for v in adapt["prior_var"]) and adapt["horizon_s"] >= adapt["prior_s"] > 0
    if isinstance(normaliser, HouseholdNormaliser):
        np.testing.assert_allclose(normaliser.stats.mean, adapt["prior_mean"])
    frames = np.random.default_rng(1).normal(-6, 2, (80, FEATURES.n_mels)).astype(np.float32)
    window = normaliser.window(frames, m.info.window_frames)
    assert window.shape == (m.info.window_frames, FEATURES.n_mels) and np.all(window[80:] == 0)


def test_shipped_calibration_reference_was_measured_on_validation_speakers_only() -> None:
    """The calibrate stage's reference: one probability row per label, from the validation manifest, never the test."""
    side = json.loads(DEFAULT_MODEL.with_suffix(".json").read_text())
    calibration = side["calibration"]
    rows = calibration["class_mean_probabilities"]
    assert len(rows) == len(LABELS) and all(row is not None and abs(sum(row) - 1) < 1e-3 for row in rows)
    assert calibration["clips"] > 1000 and "test" not in calibration["manifest"]
    stage = fresh_calibrator(EmotionModel(DEFAULT_MODEL).info, CalibrateSettings(enabled=True))
    assert stage is not None and abs(stage.prior.reference.sum() - 1) < 1e-9
    assert stage.prior.reference[LABELS.index("neutral")] == max(stage.prior.reference)  # a mostly neutral household


def test_split_recorded_in_sidecar_is_speaker_disjoint() -> None:
    split = json.loads(DEFAULT_MODEL.with_suffix(".json").read_text())["split"]
    train, val, test = (set(split[k]) for k in ("train", "val", "test"))
    assert train and test
    assert not (train & val) and not (train & test) and not (val & test)


def test_evaluator_imports_no_tensorflow_or_librosa_at_module_level() -> None:
    tree = ast.parse((ROOT / "models" / "evaluate.py").read_text())
    top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    names = {a.name for n in top for a in n.names} | {n.module or "" for n in top if isinstance(n, ast.ImportFrom)}
    assert not any(x.startswith(("tensorflow", "librosa", "keras")) for x in names)
    src = (ROOT / "models" / "evaluate.py").read_text()
    assert "tensorflow" not in src.replace("No TensorFlow", "")
