"""The calibrate stage: the household's lean taken out of the model's output, and its state across restarts."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from emotiond.daemon.adaptation import Household, fresh_calibrator
from emotiond.daemon.assembly import build_pipeline, load_household, load_model
from emotiond.daemon.calibration import calibrate_main
from emotiond.daemon.config import AdaptSettings, CalibrateSettings, ConfigError, load_settings
from emotiond.daemon.reload import apply_plan, plan_reload
from emotiond.dsp.adapt import AdaptStateError
from emotiond.dsp.calibrate import CalibrateParams, Calibrator, HouseholdPrior, reference
from emotiond.models.runtime import ModelError, ModelInfo, load_info

from .fixtures_audio import SR
from .test_adapt import household_model_info, voice

LABELS = ("angry", "happy", "neutral", "sad")
# what a model outputs on average for each true class (rows), as `emotiond calibrate` measures it
ROWS = [[0.6, 0.2, 0.1, 0.1], [0.2, 0.5, 0.2, 0.1], [0.05, 0.05, 0.8, 0.1], None]


def test_reference_is_a_household_of_neutral_share_neutral_and_the_rest_spread_evenly() -> None:
    ref = reference(ROWS, LABELS, 0.6)
    expected = 0.6 * np.array(ROWS[2]) + 0.2 * np.array(ROWS[0]) + 0.2 * np.array(ROWS[1])  # no sad clips: no weight
    np.testing.assert_allclose(ref, expected / expected.sum())
    with pytest.raises(ValueError, match="neutral"):
        reference([ROWS[0], ROWS[1], None, None], LABELS, 0.6)
    with pytest.raises(ValueError, match="rows"):
        reference(ROWS[:3], LABELS, 0.6)
    with pytest.raises(ValueError, match="all zero"):  # never a NaN reference that would stop the daemon at start
        reference([[0.0] * 4, [0.0] * 4, [0.0] * 4, None], LABELS, 0.6)
    with pytest.raises(ValueError, match="rows"):
        reference([[-1.0, 1.0, 0.5, 0.5], *ROWS[1:]], LABELS, 0.6)


def test_a_household_that_sounds_as_the_reference_expects_is_left_alone() -> None:
    ref = reference(ROWS, LABELS, 0.6)
    prior = HouseholdPrior(CalibrateParams(horizon_windows=400, prior_windows=20), ref)
    p = np.array([0.3, 0.3, 0.3, 0.1])
    np.testing.assert_allclose(prior.adjust(p), p)  # at the warm start
    prior.update(ref * 50, 50)  # fifty windows that average to the reference
    np.testing.assert_allclose(prior.adjust(p), p)


def test_a_household_heard_as_mostly_neutral_is_judged_against_its_own_normal() -> None:
    ref = reference(ROWS, LABELS, 0.6)
    prior = HouseholdPrior(CalibrateParams(horizon_windows=10_000, prior_windows=20), ref)
    rng = np.random.default_rng(0)
    utterances = [rng.dirichlet([1, 1, 12, 1], size=int(n)) for n in rng.integers(2, 12, size=30)]
    for windows in utterances:
        prior.update(windows.sum(axis=0), len(windows))
    every = np.concatenate(utterances)
    # streaming equals batch: the warm start counts as prior_windows windows of the reference
    np.testing.assert_allclose(prior.mean, (20 * ref + every.sum(axis=0)) / (20 + len(every)))
    assert prior.windows_heard == len(every)
    p = np.array([0.3, 0.2, 0.4, 0.1])
    q = prior.adjust(p)
    assert q.sum() == pytest.approx(1.0) and q[2] < p[2] and q[0] > p[0]
    np.testing.assert_array_equal(prior.adjust(np.zeros(4)), np.zeros(4))  # no NaN from a dead window


def test_the_estimate_forgets_with_its_horizon() -> None:
    ref = reference(ROWS, LABELS, 0.6)
    prior = HouseholdPrior(CalibrateParams(horizon_windows=100, prior_windows=20), ref)
    lean = np.array([0.1, 0.1, 0.7, 0.1])
    for _ in range(200):
        prior.update(lean * 10, 10)  # 2000 windows, twenty horizons
    np.testing.assert_allclose(prior.mean, lean, atol=1e-6)
    assert prior.count == 100


def test_an_utterance_is_judged_before_it_is_learnt_and_an_unfinished_one_is_not_learnt() -> None:
    prior = HouseholdPrior(CalibrateParams(horizon_windows=400, prior_windows=20), reference(ROWS, LABELS, 0.6))
    stage = Calibrator(prior)
    lean = np.array([0.05, 0.05, 0.85, 0.05])
    for _ in range(5):
        np.testing.assert_allclose(stage.window(0, lean), lean)  # the estimate has not moved yet
    stage.segment_end(0)
    assert prior.windows_heard == 5 and stage.window(1, lean)[2] < lean[2]
    stage.window(2, lean)  # segment 1 never ended: dropped
    stage.segment_end(2)
    assert prior.windows_heard == 6


def calibrated_info(info: ModelInfo, rows: list | None = None) -> ModelInfo:
    return ModelInfo(info.name, info.version, LABELS, info.features, info.window_frames, info.normalisation,
                     {**info.extra, "calibration": {"class_mean_probabilities": rows or ROWS}})


def test_its_state_survives_a_restart_and_a_reset_empties_it(tmp_path: Path) -> None:
    info = calibrated_info(household_model_info())
    state = tmp_path / "state" / "household.json"
    house = Household(info, AdaptSettings(state_file=state), CalibrateSettings(enabled=True))
    assert house.calibrator is not None and house.prior is not None and house.describe()["calibrate"]
    house.prior.update(np.array([1.0, 1.0, 7.0, 1.0]), 10)
    house.maybe_save(force=True)
    prior_file = tmp_path / "state" / "household-prior.json"
    assert prior_file.is_file()
    again = Household(info, AdaptSettings(state_file=state), CalibrateSettings(enabled=True))  # a restart
    assert again.prior is not None and again.prior.windows_heard == 10
    np.testing.assert_allclose(again.prior.mean, house.prior.mean)
    fresh = Household(info, AdaptSettings(state_file=state, reset=True), CalibrateSettings(enabled=True))
    assert not prior_file.exists() and not state.exists()
    assert fresh.prior is not None and fresh.prior.windows_heard == 0
    np.testing.assert_allclose(fresh.prior.mean, fresh.prior.reference)


@pytest.mark.parametrize("content", ["{not json", '{"schema": "something else"}', "another neutral_share"])
def test_a_bad_or_foreign_prior_file_is_ignored_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str
) -> None:
    info = calibrated_info(household_model_info())
    state = tmp_path / "household.json"
    prior_file = tmp_path / "household-prior.json"
    if content == "another neutral_share":
        other = Household(info, AdaptSettings(state_file=state), CalibrateSettings(enabled=True, neutral_share=0.3))
        assert other.prior is not None
        other.prior.update(np.full(4, 2.5), 10)
        other.maybe_save(force=True)
        state.unlink(missing_ok=True)
    else:
        prior_file.write_text(content)
    with caplog.at_level(logging.WARNING, logger="emotiond"):
        house = Household(info, AdaptSettings(state_file=state), CalibrateSettings(enabled=True))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(prior_file) in warnings[0] and "\n" not in warnings[0]
    assert house.prior is not None and house.prior.windows_heard == 0
    with pytest.raises(AdaptStateError):
        house.prior.load(prior_file)


def test_the_stage_is_off_by_default_without_a_reference_or_when_disabled() -> None:
    plain = household_model_info()
    assert fresh_calibrator(plain, CalibrateSettings(enabled=True)) is None
    assert fresh_calibrator(calibrated_info(plain), CalibrateSettings(enabled=False)) is None
    assert fresh_calibrator(calibrated_info(plain), load_settings(None, [], environ={}).calibrate) is None
    assert Household(calibrated_info(plain), AdaptSettings()).calibrator is None
    stage = fresh_calibrator(calibrated_info(plain, ROWS), CalibrateSettings(enabled=True), horizon_s=60.0)
    assert stage is not None and stage.prior.params.horizon_windows == 240  # 60 s of speech at 4 windows/s
    with pytest.raises(ConfigError, match=r"calibrate\.neutral_share"):
        load_settings(None, ["calibrate.neutral_share=1.5"], environ={})


@pytest.fixture()
def calibrated_model(tmp_path: Path, model_path: Path) -> Path:
    """A copy of the test model whose sidecar says it outputs its first label for everything it hears."""
    out = tmp_path / "model"
    out.mkdir()
    shutil.copy(model_path, out / "m.tflite")
    side = json.loads(model_path.with_suffix(".json").read_text())
    labels = side["labels"]
    rows = np.full((len(labels), len(labels)), 0.02)
    rows[:, 0] = 1.0
    side["calibration"] = {"class_mean_probabilities": (rows / rows.sum(axis=1, keepdims=True)).tolist()}
    (out / "m.json").write_text(json.dumps(side))
    return out / "m.tflite"


def _utterances(model: Path, enabled: bool) -> list[dict]:
    settings = load_settings(None, [f"model.path={model}", f"calibrate.enabled={str(enabled).lower()}"], environ={})
    got: list[dict] = []
    pipe = build_pipeline(settings, load_model(settings), [], lambda _s, payload: got.append(payload))
    gap = np.random.default_rng(1).normal(0, 1e-4, SR)
    audio = np.concatenate([gap, voice(2.0, 140, 0.3, 1), gap, voice(2.0, 220, 0.3, 2), gap, voice(2.0, 180, 0.3, 3)])
    for i in range(0, len(audio), 1600):
        pipe.process(audio[i : i + 1600])
    pipe.finish()
    assert pipe.calibrator is None if not enabled else pipe.calibrator.prior.windows_heard == pipe.stats.windows
    return got


def test_the_pipeline_calibrates_between_model_and_smoother(calibrated_model: Path) -> None:
    raw, calibrated = _utterances(calibrated_model, False), _utterances(calibrated_model, True)
    assert len(raw) == len(calibrated) == 3
    assert raw[0]["probabilities"] == calibrated[0]["probabilities"]  # the first utterance meets the warm start
    first = load_info(calibrated_model).labels[0]
    for r, c in zip(raw[1:], calibrated[1:], strict=True):  # heard saying it far less than the reference
        assert c["probabilities"][first] > r["probabilities"][first]  # expects: judged against its own normal
        assert sum(c["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)


def test_emotiond_calibrate_measures_the_reference_into_the_sidecar(tmp_path: Path, model_path: Path) -> None:
    shutil.copy(model_path, tmp_path / "m.tflite")
    side = json.loads(model_path.with_suffix(".json").read_text())
    side.pop("calibration", None)  # the shipped sidecar carries one: start without
    (tmp_path / "m.json").write_text(json.dumps(side))
    labels = load_info(model_path).labels
    other = next(label for label in labels if label != "neutral")
    rows = ["path,label,speaker"]
    for i, (label, f0) in enumerate([("neutral", 120), ("neutral", 130), (other, 250), (other, 260)]):
        sf.write(tmp_path / f"c{i}.wav", voice(1.5, f0, 0.3, i), SR)
        rows.append(f"{tmp_path / f'c{i}.wav'},{label},s{i % 2}")
    (tmp_path / "val.csv").write_text("\n".join(rows) + "\n")
    args = [str(tmp_path / "val.csv"), "--set", f"model.path={tmp_path / 'm.tflite'}"]
    assert calibrate_main([*args, "--dry-run"]) == 0
    assert "calibration" not in json.loads((tmp_path / "m.json").read_text())
    assert calibrate_main(args) == 0
    calibration = load_info(tmp_path / "m.tflite").extra["calibration"]
    measured = calibration["class_mean_probabilities"]
    assert calibration["clips"] == 4
    for label, row in zip(labels, measured, strict=True):
        if label in ("neutral", other):
            assert row is not None and sum(row) == pytest.approx(1.0, abs=1e-3)
        else:
            assert row is None  # no validation clip of that class: no weight in the reference


def test_a_bad_calibration_in_a_sidecar_is_a_model_error_naming_it(tmp_path: Path, model_path: Path) -> None:
    shutil.copy(model_path, tmp_path / "m.tflite")
    side = json.loads(model_path.with_suffix(".json").read_text())
    side["calibration"] = {"class_mean_probabilities": [[1.0]]}
    (tmp_path / "m.json").write_text(json.dumps(side))
    with pytest.raises(ModelError, match=r"m\.json: bad 'calibration'"):
        load_info(tmp_path / "m.tflite")


def test_the_horizon_is_counted_at_the_hop_the_pipeline_runs(calibrated_model: Path, tmp_path: Path) -> None:
    """``windows.hop_ms`` 500 gives half the windows per second of speech: the horizon in windows halves with it."""
    base = [f"model.path={calibrated_model}", "calibrate.enabled=true", "adapt.horizon_s=60",
            f"adapt.state_file={tmp_path / 'household.json'}"]
    for hop_ms, windows in ((250, 240), (500, 120)):
        settings = load_settings(None, [*base, f"windows.hop_ms={hop_ms}"], environ={})
        model = load_model(settings)
        pipe = build_pipeline(settings, model, [])
        assert pipe.calibrator is not None and pipe.calibrator.prior.params.horizon_windows == windows
        house = load_household(settings, model)
        assert house.calibrator is not None and house.calibrator.prior.params.horizon_windows == windows


def test_a_reload_that_changes_the_hop_keeps_the_horizon_in_seconds(calibrated_model: Path, tmp_path: Path) -> None:
    config = tmp_path / "emotiond.yaml"
    config.write_text(f"model:\n  path: {calibrated_model}\ncalibrate:\n  enabled: true\nadapt:\n  horizon_s: 60\n")
    old = load_settings(config, [], environ={})
    model = load_model(old)
    pipe = build_pipeline(old, model, [])
    pipe.calibrator.prior.update(np.full(len(model.labels), 1.0 / len(model.labels)) * 300, 300)  # 300 s of speech
    assert pipe.calibrator.prior.count == 240  # the horizon, at 4 windows per second
    config.write_text(config.read_text() + "windows:\n  hop_ms: 500\n")
    plan = plan_reload(old, config, (), model, None, False)
    apply_plan(plan, pipe, model, pipe.frontend.normaliser, "online")
    assert pipe.frontend.window.hop_frames == 50
    assert pipe.calibrator.prior.params.horizon_windows == 120 and pipe.calibrator.prior.count == 120
