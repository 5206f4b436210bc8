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
from emotiond.models.runtime import EmotionModel, ModelError, load_info


def test_model_predicts_probabilities(model_path: Path) -> None:
    model = EmotionModel(model_path)
    assert model.runtime == "ai_edge_litert.interpreter"
    window = np.random.default_rng(0).normal(0, 1, model.input_shape[1:]).astype(np.float32)
    probs = model.predict(window)
    assert probs.shape == (len(model.labels),)
    assert abs(float(probs.sum()) - 1.0) < 1e-5 and float(probs.min()) >= 0


def _plain_predict(interp, window: np.ndarray) -> np.ndarray:
    """The obvious quantise → invoke → dequantise → normalise, step by step, as the runtime first did it."""
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    x = np.asarray(window, dtype=np.float32)[None]
    if inp["dtype"] in (np.int8, np.uint8):
        scale, zero = inp["quantization"]
        info = np.iinfo(inp["dtype"])
        x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(inp["dtype"])
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    y = interp.get_tensor(out["index"])[0]
    if out["dtype"] in (np.int8, np.uint8):
        scale, zero = out["quantization"]
        y = (y.astype(np.float32) - zero) * scale
    y = np.maximum(y.astype(np.float32), 0.0)
    total = float(y.sum())
    return y / total if total > 0 else np.full(len(y), 1.0 / len(y), dtype=np.float32)


def test_predict_gives_the_plain_formulas_numbers_bit_for_bit(model_path: Path) -> None:
    """The preallocated quantiser and the dequantising table change no bit of a probability."""
    from emotiond.models.runtime import load_interpreter_class

    model = EmotionModel(model_path)
    interp = load_interpreter_class()[0](model_path=str(model_path))
    interp.allocate_tensors()
    shape = model.input_shape[1:]
    rng = np.random.default_rng(7)
    scale, zero = interp.get_input_details()[0]["quantization"]
    windows = [rng.normal(0, s, shape).astype(np.float32) for s in (0.1, 1.0, 3.0, 50.0)]
    windows.append(np.zeros(shape, np.float32))
    windows.append(np.full(shape, 1e6, np.float32))  # clipped at the top
    windows.append(np.full(shape, -1e6, np.float32))  # … and at the bottom
    if scale:  # exact half steps: where rounding halves to even matters
        halves = (rng.integers(-140, 140, shape) + 0.5 - zero) * scale
        windows.append(halves.astype(np.float32))
    for window in windows:
        # the input tensor itself (the coarse int8 outputs would hide a one-step difference) …
        quantised = np.clip(np.round(window[None] / scale + zero), -128, 127).astype(np.int8)
        assert np.array_equal(model._quantiser(window), quantised)
        # … and the probabilities
        got, want = model.predict(window), _plain_predict(interp, window)
        assert got.dtype == want.dtype == np.float32
        assert got.tobytes() == want.tobytes()
    out_scale, out_zero = interp.get_output_details()[0]["quantization"]
    codes = np.arange(-128, 128).astype(np.int8)
    want = np.maximum(((codes.astype(np.float32) - out_zero) * out_scale).astype(np.float32), 0.0)
    assert model._dequantiser(codes).tobytes() == want.tobytes()  # every output code
    with pytest.raises(ValueError, match="window shape"):
        model.predict(np.zeros((shape[0] - 1, shape[1]), np.float32))


def test_model_with_other_feature_parameters_is_refused(model_path: Path, tmp_path: Path) -> None:
    """Only the mel bands are the model's to choose; a frame hop dsp does not compute is refused."""
    copy = tmp_path / "m.tflite"
    shutil.copy(model_path, copy)
    side = json.loads(model_path.with_suffix(".json").read_text())
    side["features"]["hop_length"] = FEATURES.hop_length * 2
    copy.with_suffix(".json").write_text(json.dumps(side))
    with pytest.raises(ModelError, match=r"m\.tflite: feature parameters .*hop_length=320 .dsp has 160."):
        EmotionModel(copy)
    side["features"] = {**FEATURES.to_dict(), "pitch": True}
    copy.with_suffix(".json").write_text(json.dumps(side))
    with pytest.raises(ModelError, match=r"keys pitch missing or unknown"):
        EmotionModel(copy)


def test_model_choosing_other_mel_bands_is_checked_against_its_input(model_path: Path, tmp_path: Path) -> None:
    """A sidecar asking for 64 bands is computable, but this network takes 40: the input shape names the mismatch."""
    copy = tmp_path / "m.tflite"
    shutil.copy(model_path, copy)
    side = json.loads(model_path.with_suffix(".json").read_text())
    side["features"]["n_mels"] = 64
    side["adapt"]["prior_mean"] = [0.0] * 64
    side["adapt"]["prior_var"] = [1.0] * 64
    copy.with_suffix(".json").write_text(json.dumps(side))
    assert load_info(copy).frontend().features.n_mels == 64
    with pytest.raises(ModelError, match=r"input shape \(1, 100, 40\) != sidecar's \(1, 100, 64\)"):
        EmotionModel(copy)
    side["features"] = {**FEATURES.to_dict(), "pitch_bands": 12, "pitch_fmin": 75.0, "pitch_fmax": 400.0}
    copy.with_suffix(".json").write_text(json.dumps(side))
    with pytest.raises(ModelError, match=r"prior_mean and prior_var with 52 values each"):
        EmotionModel(copy)
    side["adapt"]["prior_mean"], side["adapt"]["prior_var"] = [0.0] * 52, [1.0] * 52
    copy.with_suffix(".json").write_text(json.dumps(side))
    with pytest.raises(ModelError, match=r"!= sidecar's \(1, 100, 52\)"):
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
