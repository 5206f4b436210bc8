"""How a 7-class model hears BAVED, whose labels are levels of emotion, not categories.

``emotiond eval`` scores categories, so BAVED goes through it with one
stand-in class per level (:data:`STAND_IN`: the confusion matrix's rows are then
the levels), and :func:`level_score` reads the result back: per level, the
share of clips whose prediction lies in the classes that level allows
(``LEVEL_CLASSES``), and their mean. A uniform guess over the seven classes
scores (1/7 + 4/7 + 2/7) / 3 = 0.33. The UAR ``emotiond eval`` prints for such a
manifest means nothing.

    python -m emotiond.models.training.level_eval manifest --data $EMOTIOND_DATA --split test --out baved-test.csv
    emotiond eval baved-test.csv --mode session --json baved.json
    python -m emotiond.models.training.level_eval score baved.json
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .data import LEVEL_CLASSES, LEVEL_CORPORA, LEVELS, data_dir, load_corpus, select, speaker_split

#: Each level's stand-in label in the manifest: three distinct classes, so each level is one confusion row.
STAND_IN: dict[str, str] = {"neutral": "neutral", "high": "angry", "low": "sad"}


def write_manifest(root: Path, out: Path, split: str = "test", seed: int = 0) -> int:
    """BAVED's clips of one part of the training split (``all``: every clip) as ``path,label,speaker`` rows."""
    clips = [c for corpus in LEVEL_CORPORA for c in load_corpus(root, corpus, mapping=None)]
    if split != "all":
        clips = select(clips, getattr(speaker_split(clips, seed=seed), split))
    with out.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "speaker"])
        for c in clips:
            w.writerow([c.path, STAND_IN[c.label], c.speaker])
    return len(clips)


def level_score(result: dict, mode: str = "session") -> dict[str, float]:
    """Per level, the share of its clips predicted inside the classes it allows; ``mean`` over the levels present."""
    r = result["results"][mode]
    labels = r["labels"]
    confusion = np.asarray(r["confusion"], dtype=float)  # its last column: clips without an event, counted wrong
    out: dict[str, float] = {}
    for level in LEVELS:
        row = confusion[labels.index(STAND_IN[level])]
        if row.sum() > 0:
            out[level] = float(row[[labels.index(c) for c in LEVEL_CLASSES[level]]].sum() / row.sum())
    out["mean"] = float(np.mean(list(out.values()))) if out else float("nan")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m emotiond.models.training.level_eval", description=__doc__.split("\n")[0]
    )
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("manifest", help="write BAVED's clips with a stand-in class per level")
    m.add_argument("--data", help="data folder (default: $EMOTIOND_DATA)")
    m.add_argument("--split", choices=("train", "val", "test", "all"), default="test")
    m.add_argument("--out", type=Path, required=True)
    s = sub.add_parser("score", help="read emotiond eval --json results of such a manifest")
    s.add_argument("results", nargs="+", type=Path)
    s.add_argument("--mode", default="session")
    args = p.parse_args(argv)
    if args.command == "manifest":
        print(f"{write_manifest(data_dir(args.data), args.out, args.split)} clips -> {args.out}")
        return 0
    for path in args.results:
        score = level_score(json.loads(path.read_text()), args.mode)
        print(f"{path}: " + ", ".join(f"{k} {v:.3f}" for k, v in score.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
