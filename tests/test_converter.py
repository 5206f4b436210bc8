"""Keras → full-int8 TFLite, then scored through the daemon's runtime by ``emotiond eval``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from emotiond.dsp.features import FEATURES
from emotiond.models.runtime import NORMALISATION, EmotionModel, ModelInfo

from .test_training_data import voice

LABELS = ("angry", "happy", "sad")
WINDOW = 50


@pytest.fixture(scope="module")
def tiny_int8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("tensorflow")
    from emotiond.converter.convert import convert
    from emotiond.models.training.model import build_model

    out = tmp_path_factory.mktemp("conv")
    model = build_model(WINDOW, FEATURES.n_mels, len(LABELS), widths=(8, 8, 8))
    model.compile("adam", "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.normal(0, 2, (64, WINDOW, FEATURES.n_mels)).astype(np.float32)
    model.fit(x, rng.integers(0, len(LABELS), 64), epochs=1, verbose=0)
    path = out / "tiny_int8.tflite"
    sizes = convert(model, x, path, out / "tiny_float32.tflite")
    assert sizes["int8_bytes"] < sizes["float32_bytes"]
    info = ModelInfo("tiny", "0", LABELS, FEATURES.to_dict(), WINDOW, NORMALISATION, {"hop_frames": 25})
    for p in (path, out / "tiny_float32.tflite"):
        p.with_suffix(".json").write_text(json.dumps(info.to_json()))
    return path


def test_int8_runs_in_the_daemon_runtime(tiny_int8: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(tiny_int8))
    assert interp.get_input_details()[0]["dtype"] == np.int8
    assert interp.get_output_details()[0]["dtype"] == np.int8
    m = EmotionModel(tiny_int8)
    p = m.predict(np.zeros((WINDOW, FEATURES.n_mels), np.float32))
    assert p.shape == (len(LABELS),) and abs(float(p.sum()) - 1) < 1e-3


def test_eval_scores_a_converted_model(tiny_int8: Path, tmp_path: Path) -> None:
    """A freshly converted model is scored by the one evaluator (``emotiond eval``), front end from its sidecar."""
    from emotiond.daemon.evaluate import eval_main

    (tmp_path / "audio").mkdir()
    rows = []
    for i, label in enumerate(["angry", "happy", "sad", "sad", "bored"]):
        name = f"audio/c{i}.wav"
        sf.write(str(tmp_path / name), voice(1.0, 130 + 20 * i, i), 16_000)
        rows.append((name, label, f"s{i % 2}"))
    sf.write(str(tmp_path / "audio/silent.wav"), np.zeros(16_000), 16_000)
    rows.append(("audio/silent.wav", "angry", "s0"))
    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "speaker"])
        w.writerows(rows)
    out = tmp_path / "r.json"
    rep = tmp_path / "rep"
    assert eval_main([str(manifest), "--set", f"model.path={tiny_int8}", "--json", str(out), "--report", str(rep)]) == 0
    res = json.loads(out.read_text())["results"]["clip"]
    for key in ("n", "accuracy", "uar", "macro_f1", "per_class", "confusion"):
        assert key in res
    assert res["n"] == 5 and res["skipped"]["n"] == 1 and res["skipped"]["labels"] == {"bored": 1}
    assert res["no_window"] == 1  # the silent clip is scored as wrong
    assert np.asarray(res["confusion"]).sum() == 4
    assert 0.0 <= res["uar"] <= 1.0
    assert (rep / "confusion_clip.png").stat().st_size > 1000
    assert "precision" in (rep / "per_class_clip.md").read_text()


def test_avgmax_pooling_converts_to_int8_and_tracks_float(tmp_path: Path) -> None:
    """The tuning option ``--pooling avgmax`` must stay inside TFLite's int8 builtins."""
    pytest.importorskip("tensorflow")
    from emotiond.converter.convert import convert
    from emotiond.models.training.model import build_model

    model = build_model(WINDOW, FEATURES.n_mels, len(LABELS), widths=(8, 8), pooling="avgmax")
    rng = np.random.default_rng(1)
    x = rng.normal(0, 2, (64, WINDOW, FEATURES.n_mels)).astype(np.float32)
    path = tmp_path / "avgmax_int8.tflite"
    convert(model, x, path, tmp_path / "avgmax_float32.tflite")
    info = ModelInfo("avgmax", "0", LABELS, FEATURES.to_dict(), WINDOW, NORMALISATION, {"hop_frames": 25})
    path.with_suffix(".json").write_text(json.dumps(info.to_json()))
    m = EmotionModel(path)
    ref = model.predict(x[:8], verbose=0)
    got = np.array([m.predict(v) for v in x[:8]])
    assert np.abs(got - ref).max() < 0.1  # int8 quantisation error, not a different network


def test_build_model_rejects_unknown_pooling() -> None:
    pytest.importorskip("tensorflow")
    from emotiond.models.training.model import build_model

    with pytest.raises(ValueError, match="pooling"):
        build_model(WINDOW, FEATURES.n_mels, len(LABELS), widths=(8,), pooling="attention")


def test_training_only_heads_are_dropped_before_conversion(tmp_path: Path) -> None:
    """``--kd-embed`` and ``--aux-levels`` add heads for training; the daemon's network is the probs head alone."""
    pytest.importorskip("tensorflow")
    from emotiond.converter.convert import convert
    from emotiond.models.training.model import build_model, deployable

    model = build_model(WINDOW, FEATURES.n_mels, len(LABELS), widths=(8, 8), aux_classes=3, embed_dims=5)
    rng = np.random.default_rng(2)
    x = rng.normal(0, 2, (32, WINDOW, FEATURES.n_mels)).astype(np.float32)
    full = model.predict(x[:4], verbose=0)
    assert set(full) == {"probs", "level", "embed"} and full["embed"].shape == (4, 5)
    probs_only = deployable(model)
    np.testing.assert_allclose(probs_only.predict(x[:4], verbose=0), full["probs"], atol=1e-6)
    path = tmp_path / "heads_int8.tflite"
    convert(probs_only, x, path, tmp_path / "heads_float32.tflite")
    info = ModelInfo("heads", "0", LABELS, FEATURES.to_dict(), WINDOW, NORMALISATION, {"hop_frames": 25})
    path.with_suffix(".json").write_text(json.dumps(info.to_json()))
    got = EmotionModel(path).predict(x[0])
    assert got.shape == (len(LABELS),) and np.abs(got - full["probs"][0]).max() < 0.1


def test_an_ensemble_averages_its_members_and_converts_to_int8(tmp_path: Path) -> None:
    """``emotiond train --ensemble`` ships the mean of seeds: it must equal that mean and run in the daemon."""
    keras = pytest.importorskip("keras")
    from emotiond.converter.convert import convert
    from emotiond.models.training.model import average_of, build_model

    rng = np.random.default_rng(1)
    x = rng.normal(0, 2, (32, WINDOW, FEATURES.n_mels)).astype(np.float32)
    members = []
    for seed in range(3):
        keras.utils.set_random_seed(seed)
        members.append(build_model(WINDOW, FEATURES.n_mels, len(LABELS), widths=(8, 8, 8)))
    each = np.stack([m.predict(x, verbose=0) for m in members])
    assert np.abs(each[0] - each[1]).max() > 1e-4  # different seeds, different members
    ensemble = average_of(members)
    np.testing.assert_allclose(ensemble.predict(x, verbose=0), each.mean(axis=0), atol=1e-6)
    # one member is that member as trained: how a run trained with --no-test is scored on the test speakers later
    np.testing.assert_allclose(average_of(members[:1]).predict(x, verbose=0), each[0], atol=1e-6)
    path = tmp_path / "ens_int8.tflite"
    convert(ensemble, x, path, tmp_path / "ens_float32.tflite")
    info = ModelInfo("ens", "0", LABELS, FEATURES.to_dict(), WINDOW, NORMALISATION, {"hop_frames": 25})
    path.with_suffix(".json").write_text(json.dumps(info.to_json()))
    p = np.stack([EmotionModel(path).predict(v) for v in x[:8]])
    assert p.shape == (8, len(LABELS))
    assert np.abs(p - each.mean(axis=0)[:8]).max() < 0.1  # int8 stays close to the float mean
