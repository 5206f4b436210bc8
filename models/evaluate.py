"""Offline evaluation of a shipped model on labelled audio (``emotiond eval``).

No TensorFlow here: clips go through ``emotiond.dsp.frontend.clip_windows``
with the front-end parameters the sidecar records, windows through
``EmotionModel`` (the daemon's runtime), and a clip's prediction is the mean of
its window probabilities, as the live smoother does over an utterance. A clip
with no window (the VAD found no speech) counts as wrong.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

NO_WINDOW = -1  # prediction index of a clip the front end produced no window for


def confusion(y_true: Sequence[int], y_pred: Sequence[int], n: int) -> np.ndarray:
    """``n x (n + 1)`` counts; the last column counts clips with no prediction."""
    cm = np.zeros((n, n + 1), dtype=np.int64)
    for t, p in zip(y_true, y_pred, strict=True):
        cm[t, p if p >= 0 else n] += 1
    return cm


def metrics(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, UAR (mean recall over classes present), macro F1, per-class P/R/F1, confusion."""
    n = len(labels)
    cm = confusion(y_true, y_pred, n)
    total = int(cm.sum())
    correct = int(np.trace(cm[:, :n]))
    per_class: dict[str, dict[str, float]] = {}
    recalls, f1s = [], []
    for i, name in enumerate(labels):
        support = int(cm[i].sum())
        predicted = int(cm[:, i].sum())
        tp = int(cm[i, i])
        prec = tp / predicted if predicted else 0.0
        rec = tp / support if support else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        per_class[name] = {"precision": prec, "recall": rec, "f1": f1, "support": support}
        if support:
            recalls.append(rec)
            f1s.append(f1)
    return {
        "n": total,
        "accuracy": correct / total if total else 0.0,
        "uar": float(np.mean(recalls)) if recalls else 0.0,
        "macro_f1": float(np.mean(f1s)) if f1s else 0.0,
        "no_window": int(cm[:, n].sum()),
        "per_class": per_class,
        "labels": list(labels),
        "confusion": cm[:, :n].tolist(),
    }


def clip_prediction(probs: np.ndarray) -> int:
    """Mean of the window probabilities → class index, or ``NO_WINDOW``."""
    if len(probs) == 0:
        return NO_WINDOW
    return int(np.argmax(np.mean(probs, axis=0)))


def per_class_table(result: dict[str, Any]) -> str:
    """Markdown table of per-class precision / recall / F1 / support."""
    lines = ["| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for name, m in result["per_class"].items():
        lines.append(f"| {name} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |")
    lines.append(f"| **all** | | UAR {result['uar']:.3f} | macro {result['macro_f1']:.3f} | {result['n']} |")
    return "\n".join(lines) + "\n"


def plot_confusion(result: dict[str, Any], path: Path, title: str = "") -> None:
    """Row-normalised confusion matrix as a PNG (matplotlib imported only here)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = result["labels"]
    cm = np.asarray(result["confusion"], dtype=float)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(labels)):
        for j in range(len(labels)):
            if cm[i, j]:
                colour = "white" if norm[i, j] > 0.5 else "black"
                ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=8, color=colour)
    ax.set_title(title or f"UAR {result['uar']:.3f}, accuracy {result['accuracy']:.3f}, n={result['n']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def frontend_params(extra: dict[str, Any], window_frames: int):
    """VAD / gate / window parameters recorded in a sidecar (defaults when absent)."""
    from ..dsp.denoise import GateParams
    from ..dsp.frontend import WindowParams
    from ..dsp.vad import VadParams

    def build(cls, values):
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (values or {}).items() if k in names})

    vad = build(VadParams, extra.get("vad"))
    gate = build(GateParams, extra.get("gate"))
    window = WindowParams(window_frames=window_frames, hop_frames=int(extra.get("hop_frames", 25)))
    return vad, gate, window


def read_manifest(manifest_csv: Path) -> list[dict[str, str]]:
    manifest_csv = Path(manifest_csv)
    with manifest_csv.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if rows and ("path" not in rows[0] or "label" not in rows[0]):
        raise ValueError(f"{manifest_csv}: header must contain path,label")
    return rows


def manifest_clips(
    manifest_csv: str | Path, labels: Sequence[str]
) -> tuple[list[tuple[Path, str, str]], dict[str, int]]:
    """``(path, label, speaker)`` of rows whose label the model knows, and ``{label: count}`` skipped.

    Relative paths are resolved against the manifest's folder. Shared by this
    evaluator and ``emotiond eval`` so both read a manifest the same way.
    """
    manifest_csv = Path(manifest_csv)
    known = set(labels)
    rows: list[tuple[Path, str, str]] = []
    skipped: dict[str, int] = {}
    for row in read_manifest(manifest_csv):
        label = (row.get("label") or "").strip()
        if label not in known:
            skipped[label] = skipped.get(label, 0) + 1
            continue
        path = Path(row["path"])
        if not path.is_absolute():
            path = manifest_csv.parent / path
        rows.append((path, label, (row.get("speaker") or "").strip()))
    return rows, skipped


def evaluate_manifest(
    manifest_csv: str | Path,
    model_path: str | Path | None = None,
    mode: str = "clip",
    json_out: str | Path | None = None,
    report_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Score a model on a ``path,label[,speaker]`` CSV (paths relative to the CSV's folder).

    ``mode="clip"`` scores one prediction per clip (mean of window
    probabilities); ``mode="window"`` scores every window with its clip's label.
    Labels outside the model's label set are counted in ``skipped`` and left
    out. ``json_out`` writes the result; ``report_dir`` also writes
    ``confusion.png`` and ``per_class.md`` there.
    """
    from ..dsp.audio import load_mono_16k
    from ..dsp.frontend import clip_windows
    from .runtime import DEFAULT_MODEL, EmotionModel

    if mode not in ("clip", "window"):
        raise ValueError(f"mode must be 'clip' or 'window', not {mode!r}")
    manifest_csv = Path(manifest_csv)
    model = EmotionModel(Path(model_path) if model_path else DEFAULT_MODEL)
    labels = list(model.labels)
    index = {name: i for i, name in enumerate(labels)}
    vad, gate, window = frontend_params(model.info.extra, model.info.window_frames)
    y_true: list[int] = []
    y_pred: list[int] = []
    per_speaker: dict[str, list[int]] = {}
    rows, skipped = manifest_clips(manifest_csv, labels)
    for path, label, speaker in rows:
        x = load_mono_16k(path)  # the same reader and resampler as classify and the daemon
        wins = clip_windows(x, vad=vad, gate=gate, window=window)
        probs = np.array([model.predict(w.features) for w in wins]).reshape(len(wins), len(labels))
        if mode == "clip":
            y_true.append(index[label])
            y_pred.append(clip_prediction(probs))
            if speaker:
                per_speaker.setdefault(speaker, []).append(int(y_pred[-1] == y_true[-1]))
        else:
            if len(probs) == 0:
                y_true.append(index[label])
                y_pred.append(NO_WINDOW)
            for p in probs:
                y_true.append(index[label])
                y_pred.append(int(np.argmax(p)))
    result = metrics(y_true, y_pred, labels)
    result["mode"] = mode
    result["model"] = str(model.path)
    result["skipped"] = {"n": sum(skipped.values()), "labels": skipped}
    if per_speaker:
        result["per_speaker_accuracy"] = {s: float(np.mean(v)) for s, v in sorted(per_speaker.items())}
    if json_out:
        Path(json_out).write_text(json.dumps(result, indent=2) + "\n")
    if report_dir:
        out = Path(report_dir)
        out.mkdir(parents=True, exist_ok=True)
        plot_confusion(result, out / "confusion.png")
        (out / "per_class.md").write_text(per_class_table(result))
    return result
