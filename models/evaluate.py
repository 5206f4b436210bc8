"""The scoring library of the one evaluator: manifest reader, metrics, per-class table, confusion plot.

``emotiond eval`` (``daemon/evaluate.py``) is the evaluator: it runs clips
through the parts ``daemon/assembly.py`` builds, front end from the model's
sidecar. Training (``models/training/train.py``) scores its windows with the
same ``metrics`` and ``clip_prediction``, so the numbers of both agree. A clip's
prediction is the mean of its window probabilities, as the live smoother does
over an utterance; a clip with no window (the VAD found no speech) counts as
wrong. No TensorFlow here.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
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
