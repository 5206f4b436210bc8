"""Keras → TFLite: full-integer int8 (shipped) and float32 (for comparison).

The int8 model has int8 input and output tensors (``EmotionModel`` quantises the
normalised window and dequantises the softmax). Calibration uses a
representative sample of *training* windows, which come from
``emotiond.dsp.frontend.clip_windows`` like everything else.

``TFLiteConverter.from_keras_model`` is used; ``from_concrete_functions`` fails
with Keras 3.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _converter(model):
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_keras_model(model)


def to_float(model) -> bytes:
    return _converter(model).convert()


def to_int8(model, representative: np.ndarray, n_samples: int = 500, seed: int = 0) -> bytes:
    """Full-integer quantisation; ``representative`` is ``(N, T, F)`` training windows."""
    import tensorflow as tf

    rep = np.asarray(representative, dtype=np.float32)
    if len(rep) == 0:
        raise ValueError("representative dataset is empty")
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(rep), size=min(n_samples, len(rep)), replace=False)

    def gen():
        for i in idx:
            yield [rep[i : i + 1]]

    conv = _converter(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = gen
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv.convert()


def convert(
    model,
    representative: np.ndarray,
    out_int8: Path,
    out_float: Path | None = None,
) -> dict[str, int]:
    """Write the int8 (and optionally float32) models; return their sizes in bytes."""
    sizes = {}
    data = to_int8(model, representative)
    Path(out_int8).write_bytes(data)
    sizes["int8_bytes"] = len(data)
    if out_float is not None:
        fdata = to_float(model)
        Path(out_float).write_bytes(fdata)
        sizes["float32_bytes"] = len(fdata)
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Convert a Keras emotion model to int8 TFLite")
    p.add_argument("keras_model", type=Path)
    p.add_argument("representative", type=Path, help=".npy of (N, T, F) training windows")
    p.add_argument("--out", type=Path, required=True, help="int8 .tflite to write")
    p.add_argument("--float-out", type=Path)
    a = p.parse_args(argv)
    import keras

    model = keras.models.load_model(a.keras_model)
    sizes = convert(model, np.load(a.representative), a.out, a.float_out)
    print(sizes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
