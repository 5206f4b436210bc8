"""The model runtime: an int8 TFLite classifier and its JSON sidecar.

The daemon must start in well under two seconds and stay small, so it loads
the LiteRT interpreter (``ai-edge-litert``), falls back to ``tflite-runtime``
and only as a last resort to ``tensorflow.lite`` (seconds to import, ~680 MB).

A model travels as ``NAME.tflite`` plus ``NAME.json``. The sidecar states the
feature parameters the model was trained on, and the front end computes
exactly those (``dsp.features.feature_config``): a model may choose its mel
and periodicity bands, and one whose other parameters differ from
``dsp.features.FEATURES`` is refused, because it would silently see features unlike its training data.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..dsp.adapt import NORMALISERS, HouseholdNormaliser
from ..dsp.calibrate import reference
from ..dsp.features import feature_config
from ..dsp.frontend import FrontendParams
from ..quiet import quiet_native_stderr

SIDECAR_SCHEMA = 1
DEFAULT_MODEL = Path(__file__).resolve().parent / "emotion_int8.tflite"
# tensorflow.lite re-exports Interpreter lazily; the module that defines it imports directly.
RUNTIMES = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter", "tensorflow.lite.python.interpreter")


class ModelError(Exception):
    """A model or sidecar that cannot be used; the message names the file."""


@dataclass(frozen=True)
class ModelInfo:
    """What the sidecar promises about a model."""

    name: str
    version: str
    labels: tuple[str, ...]
    features: dict[str, Any]
    window_frames: int
    normalisation: str
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any], path: Path) -> ModelInfo:
        try:
            return cls(
                name=str(data["name"]),
                version=str(data["version"]),
                labels=tuple(str(x) for x in data["labels"]),
                features=dict(data["features"]),
                window_frames=int(data["window_frames"]),
                normalisation=str(data["normalisation"]),
                extra={k: v for k, v in data.items() if k not in _SIDECAR_KEYS},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{path}: sidecar is missing or has a bad field: {exc}") from None

    def frontend(self) -> FrontendParams:
        """The front end the model was trained with (vad, denoise, windows, adapt), from the sidecar."""
        return FrontendParams.from_sidecar(
            {**self.extra, "window_frames": self.window_frames, "features": self.features}
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SIDECAR_SCHEMA,
            "name": self.name,
            "version": self.version,
            "labels": list(self.labels),
            "features": self.features,
            "window_frames": self.window_frames,
            "normalisation": self.normalisation,
            **self.extra,
        }


_SIDECAR_KEYS = {"schema", "name", "version", "labels", "features", "window_frames", "normalisation"}
NORMALISATION = "per_window_band_mean"  # the default; dsp.adapt.NORMALISERS lists every one a model may name


def sidecar_path(model_path: Path) -> Path:
    return model_path.with_suffix(".json")


def load_info(model_path: Path) -> ModelInfo:
    """Read and check a model's sidecar against what ``dsp`` can compute."""
    side = sidecar_path(model_path)
    try:
        data = json.loads(side.read_text())
    except FileNotFoundError:
        raise ModelError(f"{side}: sidecar not found next to model {model_path}") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{side}: unreadable sidecar: {exc}") from None
    info = ModelInfo.from_json(data, side)
    try:
        features = feature_config(info.features)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{model_path}: feature parameters this emotiond cannot compute: {exc}") from None
    try:
        info.frontend()
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{side}: bad front-end parameters (vad, denoise, windows, adapt): {exc}") from None
    if info.normalisation not in NORMALISERS:
        raise ModelError(
            f"{model_path}: normalisation {info.normalisation!r} is not one of {', '.join(NORMALISERS)}"
        )
    if info.normalisation == HouseholdNormaliser.name:
        adapt = info.extra.get("adapt")
        n_features = features.n_features
        try:
            ok = len(adapt["prior_mean"]) == n_features and len(adapt["prior_var"]) == n_features
        except (TypeError, KeyError):
            ok = False
        if not ok:
            raise ModelError(f"{side}: 'adapt' must hold prior_mean and prior_var with {n_features} values each")
    if "calibration" in info.extra:
        try:
            reference(info.extra["calibration"]["class_mean_probabilities"], info.labels, 0.5)
        except (TypeError, KeyError, ValueError) as exc:
            raise ModelError(f"{side}: bad 'calibration' (class_mean_probabilities per label): {exc}") from None
    return info


def load_interpreter_class(preferred: str | None = None) -> tuple[type, str]:
    """The first TFLite ``Interpreter`` that imports, and the module it came from."""
    names = (preferred,) if preferred else RUNTIMES
    errors = []
    for name in names:
        try:
            module = importlib.import_module(name)
            return module.Interpreter, name
        except Exception as exc:  # a runtime built for another numpy raises anything
            errors.append(f"{name}: {exc}")
    raise ModelError("no TFLite runtime could be imported (" + "; ".join(errors) + ")")


class EmotionModel:
    """Runs normalised feature windows through the TFLite model, one per call."""

    def __init__(self, model_path: Path = DEFAULT_MODEL, num_threads: int = 1, runtime: str | None = None) -> None:
        model_path = Path(model_path)
        if not model_path.is_file():
            raise ModelError(f"{model_path}: model file not found")
        self.path = model_path
        self.info = load_info(model_path)
        interpreter_cls, self.runtime = load_interpreter_class(runtime)
        try:
            with quiet_native_stderr():  # LiteRT prints "Created TensorFlow Lite XNNPACK delegate" on fd 2
                self._interp = interpreter_cls(model_path=str(model_path), num_threads=num_threads)
                self._interp.allocate_tensors()
        except Exception as exc:
            raise ModelError(f"{model_path}: the TFLite runtime {self.runtime} rejected it: {exc}") from None
        inp = self._interp.get_input_details()[0]
        out = self._interp.get_output_details()[0]
        self._in_index, self._out_index = inp["index"], out["index"]
        self._in_dtype = inp["dtype"]
        self._in_scale, self._in_zero = inp["quantization"]
        self._out_scale, self._out_zero = out["quantization"]
        self._out_dtype = out["dtype"]
        self.input_shape = tuple(int(d) for d in inp["shape"])
        expected = (1, self.info.window_frames, self.info.frontend().features.n_features)
        if self.input_shape != expected:
            raise ModelError(f"{model_path}: input shape {self.input_shape} != sidecar's {expected}")
        if int(out["shape"][-1]) != len(self.info.labels):
            raise ModelError(f"{model_path}: {out['shape'][-1]} outputs but {len(self.info.labels)} labels")
        self._window_shape = self.input_shape[1:]
        self._quantiser = _Quantiser(self.input_shape, self._in_dtype, self._in_scale, self._in_zero)
        self._dequantiser = _Dequantiser(self._out_dtype, self._out_scale, self._out_zero)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.info.labels

    def predict(self, window: np.ndarray) -> np.ndarray:
        """Class probabilities (float32, sums to ~1) for one ``(frames, n_mels)`` window.

        Four times a second while someone speaks, each time after the CPU slept: the
        per-call numpy steps around ``invoke`` (quantise, dequantise) cost more than the
        model itself, so they run in buffers and tables made once (``_Quantiser``,
        ``_Dequantiser``); the numbers are those of the plain formulas, bit for bit
        (``tests/test_runtime.py``).
        """
        x = np.asarray(window, dtype=np.float32)
        if x.shape != self._window_shape:
            raise ValueError(f"window shape {x.shape} != model input {self._window_shape}")
        self._interp.set_tensor(self._in_index, self._quantiser(x))
        self._interp.invoke()
        y = self._dequantiser(self._interp.get_tensor(self._out_index)[0])
        total = float(y.sum())
        return y / total if total > 0 else np.full(len(y), 1.0 / len(y), dtype=np.float32)


class _Quantiser:
    """float32 window → the model's input tensor: ``clip(round(x / scale + zero))`` as int8/uint8.

    Written into two buffers kept between calls with ``out=`` ufuncs (no Python-level
    ``np.round``/``np.clip`` wrappers, no temporaries); a float input passes through as float32.
    """

    def __init__(self, shape: tuple[int, ...], dtype: Any, scale: float, zero: int) -> None:
        self._quantised = dtype in (np.int8, np.uint8)
        self._scale, self._zero = scale, zero
        self._work = np.zeros(shape[1:], dtype=np.float32)
        self._out = np.zeros(shape, dtype=dtype)
        if self._quantised:
            info = np.iinfo(dtype)
            self._lo, self._hi = info.min, info.max

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if not self._quantised:
            self._out[0] = x
            return self._out
        w = self._work
        np.divide(x, self._scale, out=w)  # float32 / a Python float is float32, as ``x / scale`` is
        np.add(w, self._zero, out=w)
        np.rint(w, out=w)  # what np.round does with no decimals: halves to even
        np.minimum(w, self._hi, out=w)
        np.maximum(w, self._lo, out=w)
        self._out[0] = w  # whole numbers in range: the cast is exact
        return self._out


class _Dequantiser:
    """The model's int8/uint8 outputs → ``max((q - zero) * scale, 0)`` as float32, by table lookup.

    The table holds that formula's float32 result for every code, so one ``take`` replaces
    five numpy steps and gives the same numbers; float outputs are only floored at zero.
    """

    def __init__(self, dtype: Any, scale: float, zero: int) -> None:
        self._table: np.ndarray | None = None
        if dtype in (np.int8, np.uint8):
            info = np.iinfo(dtype)
            codes = np.arange(info.min, info.max + 1).astype(dtype)
            values = np.maximum(((codes.astype(np.float32) - zero) * scale).astype(np.float32), 0.0)
            self._table = np.empty(256, dtype=np.float32)
            self._table[codes.view(np.uint8)] = values  # indexed by the code's byte

    def __call__(self, y: np.ndarray) -> np.ndarray:
        if self._table is None:
            return np.maximum(y.astype(np.float32), 0.0)
        return self._table.take(y.view(np.uint8))
