"""Compare ``--select-only`` runs on validation speakers: one markdown table row per run.

    python -m emotiond.models.training.compare runs/tune/base runs/tune/wide ...

Why two numbers: the chosen checkpoint's objective is what a run would ship, but
it is the maximum over noisy epochs; the mean over the last 10 epochs is the
steadier estimate of a recipe. Identical recipes differ by several points here,
so only a gap larger than the spread of repeated baseline runs means anything.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

CORPORA = ("ravdess", "emodb", "savee", "turevdb")


def run_summary(run: Path, last: int = 10) -> dict[str, Any]:
    """Objective of the chosen checkpoint and per-corpus means over the last ``last`` epochs."""
    m = json.loads((run / "metrics.json").read_text())
    history = m["history"]
    tail = history[-last:]
    return {
        "run": run.name,
        "args": m.get("args", {}),
        "chosen": float(m["chosen"].get("val_objective", float("nan"))),
        "last_mean": float(np.mean([e["val_objective"] for e in tail])),
        "per_corpus": {c: float(np.mean([e["val"][c] for e in tail])) for c in CORPORA if c in tail[-1]["val"]},
        "epochs": len(history),
        "wall_s": m.get("wall_time_s"),
    }


def table(rows: Sequence[dict[str, Any]], last: int = 10) -> str:
    head = f"| run | chosen checkpoint | mean of last {last} epochs | " + " | ".join(CORPORA) + " |"
    lines = [head, "|" + "---|" * (3 + len(CORPORA))]
    for r in rows:
        cells = [f"{r['per_corpus'][c]:.3f}" if c in r["per_corpus"] else "–" for c in CORPORA]
        lines.append(f"| {r['run']} | {r['chosen']:.3f} | {r['last_mean']:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m emotiond.models.training.compare", description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="output folders of `emotiond train --select-only`")
    p.add_argument("--last", type=int, default=10, help="epochs averaged for the steadier estimate")
    args = p.parse_args(argv)
    rows = [run_summary(r, args.last) for r in args.runs if (r / "metrics.json").is_file()]
    missing = [str(r) for r in args.runs if not (r / "metrics.json").is_file()]
    print(table(rows, args.last))
    if missing:
        print(f"\nno metrics.json (still running?): {', '.join(missing)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
