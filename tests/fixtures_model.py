"""Fixtures that provide a real int8 TFLite model.

The committed model (``models/emotion_int8.tflite``) is used when present;
otherwise a small Conv1D is built and converted to full int8 with the real
TFLite converter (needs the [train] extra), so the daemon's tests always run
the real interpreter.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from emotiond.dsp.features import FEATURES
from emotiond.models.runtime import DEFAULT_MODEL, NORMALISATION, ModelError, ModelInfo, load_info

LABELS = ("angry", "happy", "neutral", "sad")


def build_tiny_int8_model(out_dir: Path, window_frames: int = 100) -> Path:
    tf = pytest.importorskip("tensorflow")
    keras = tf.keras
    rng = np.random.default_rng(0)
    model = keras.Sequential([
        keras.Input((window_frames, FEATURES.n_mels)),
        keras.layers.Conv1D(16, 5, activation="relu"),
        keras.layers.MaxPooling1D(2),
        keras.layers.Conv1D(16, 3, activation="relu"),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(len(LABELS), activation="softmax"),
    ])
    x = rng.normal(0, 2, (64, window_frames, FEATURES.n_mels)).astype(np.float32)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, rng.integers(0, len(LABELS), 64), epochs=1, verbose=0)

    def representative():
        for i in range(32):
            yield [x[i : i + 1]]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    path = out_dir / "tiny_int8.tflite"
    path.write_bytes(conv.convert())
    info = ModelInfo("tiny-test", "0", LABELS, FEATURES.to_dict(), window_frames, NORMALISATION, {"hop_frames": 25})
    path.with_suffix(".json").write_text(json.dumps(info.to_json()))
    return path


@pytest.fixture(scope="session")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The shipped model when it is there and matches dsp/ (tests/test_runtime.py
    # fails loudly when a shipped model does not); else a freshly converted one.
    try:
        load_info(DEFAULT_MODEL)
        return DEFAULT_MODEL
    except ModelError:
        return build_tiny_int8_model(tmp_path_factory.mktemp("model"))
