"""``emotiond classify``: offline, per file, through the same frontend as the daemon."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import exitcodes
from ..dsp.audio import AudioInputError, load_mono_16k
from ..dsp.frontend import clip_windows
from ..models.runtime import EmotionModel
from .adaptation import fresh_normaliser
from .assembly import frontend_params, load_model
from .config import Settings


def classify_signal(model: EmotionModel, settings: Settings, signal: np.ndarray) -> dict[str, Any]:
    """Mean window probabilities of a clip, as the smoother summarises an utterance."""
    fp = frontend_params(settings, model)
    windows = clip_windows(
        signal, fp.vad, fp.denoise, fp.window, fresh_normaliser(model.info, settings.adapt.horizon_s), fp.features
    )
    if not windows:
        return {"emotion": None, "confidence": 0.0, "probabilities": {}, "windows": 0,
                "duration_s": round(len(signal) / 16000, 3)}
    probs = np.mean([model.predict(w.features) for w in windows], axis=0)
    best = int(np.argmax(probs))
    return {
        "emotion": model.labels[best],
        "confidence": round(float(probs[best]), 4),
        "probabilities": {k: round(float(v), 4) for k, v in zip(model.labels, probs, strict=True)},
        "windows": len(windows),
        "duration_s": round(len(signal) / 16000, 3),
    }


def classify_main(settings: Settings, files: Sequence[Path], as_json: bool) -> int:
    model = load_model(settings)
    code = exitcodes.OK
    rows = []
    for path in files:
        try:
            result = {"file": str(path), **classify_signal(model, settings, load_mono_16k(path))}
        except AudioInputError as exc:
            print(f"emotiond: {exc}", file=sys.stderr)
            code = exc.exit_code if code == exitcodes.OK else code
            continue
        rows.append(result)
        if as_json:
            print(json.dumps(result), flush=True)
    if not as_json and rows:
        from rich.console import Console
        from rich.table import Table

        table = Table("file", "emotion", "confidence", "windows", "top-3")
        for r in rows:
            top = sorted(r["probabilities"].items(), key=lambda kv: -kv[1])[:3]
            table.add_row(r["file"], r["emotion"] or "(no speech)", f"{r['confidence']:.2f}", str(r["windows"]),
                          ", ".join(f"{k} {v:.2f}" for k, v in top))
        Console().print(table)
    return code
