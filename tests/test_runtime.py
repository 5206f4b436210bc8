"""The model runtime: the real TFLite interpreter, sidecar checks, no TensorFlow."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from emotiond.dsp.features import FEATURES
from emotiond.models.runtime import EmotionModel, ModelError


def test_model_predicts_probabilities(model_path: Path) -> None:
    model = EmotionModel(model_path)
    assert model.runtime == "ai_edge_litert.interpreter"
    window = np.random.default_rng(0).normal(0, 1, model.input_shape[1:]).astype(np.float32)
    probs = model.predict(window)
    assert probs.shape == (len(model.labels),)
    assert abs(float(probs.sum()) - 1.0) < 1e-5 and float(probs.min()) >= 0


def test_model_with_other_feature_parameters_is_refused(model_path: Path, tmp_path: Path) -> None:
    copy = tmp_path / "m.tflite"
    shutil.copy(model_path, copy)
    side = json.loads(model_path.with_suffix(".json").read_text())
    side["features"]["n_mels"] = FEATURES.n_mels + 24
    copy.with_suffix(".json").write_text(json.dumps(side))
    with pytest.raises(ModelError, match=r"n_mels=64 .dsp has 40."):
        EmotionModel(copy)


def test_missing_sidecar_and_garbage_model_are_named(model_path: Path, tmp_path: Path) -> None:
    lonely = tmp_path / "lonely.tflite"
    shutil.copy(model_path, lonely)
    with pytest.raises(ModelError, match=r"lonely\.json: sidecar not found"):
        EmotionModel(lonely)
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a flatbuffer" * 10)
    shutil.copy(model_path.with_suffix(".json"), junk.with_suffix(".json"))
    with pytest.raises(ModelError, match=r"junk\.tflite"):
        EmotionModel(junk)


def test_daemon_path_never_imports_tensorflow_or_librosa(model_path: Path) -> None:
    code = (
        "import sys\n"
        "from emotiond.daemon import service, classify, pipeline, sources\n"
        "from emotiond.models.runtime import EmotionModel\n"
        f"model = EmotionModel({str(model_path)!r})\n"
        "model.predict(__import__('numpy').zeros(model.input_shape[1:], 'float32'))\n"
        "bad = [m for m in ('tensorflow', 'keras', 'librosa', 'numba', 'noisereduce') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_shipped_model_matches_dsp_and_loads() -> None:
    from emotiond.models.runtime import DEFAULT_MODEL

    if not DEFAULT_MODEL.exists():
        pytest.skip("no model shipped yet")
    model = EmotionModel(DEFAULT_MODEL)
    assert model.info.features == FEATURES.to_dict()
    assert DEFAULT_MODEL.stat().st_size <= 150 * 1024
