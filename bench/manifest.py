"""Write an eval manifest of the shipped model's held-out speakers.

    python -m bench.manifest --data ../shared/data --out runs/test.csv [--split test] [--include-tess]
    python -m bench.manifest --data ../shared/data --out runs/loco.csv --corpora turevdb savee

Rows are ``path,label,speaker`` with absolute paths into the data folder (the
audio itself is never copied) and labels mapped exactly as in training
(``calm`` → ``neutral``, ``boredom`` dropped), so ``emotiond eval`` scores the
same clips the model card reports. TESS (two speakers) is left out unless asked
for: it must never carry an average.

``--corpora`` writes every clip of the named corpora, all speakers, whatever the
model's split says: the manifest for a model trained with ``--protocol loco
--holdout`` those corpora (a corpus it has never heard).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from emotiond.models.runtime import DEFAULT_MODEL, sidecar_path
from emotiond.models.training.data import CORPORA, CorpusError, data_dir, load_corpora, select


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.manifest", description=__doc__.splitlines()[0])
    p.add_argument("--data", help="data folder (default: $EMOTIOND_DATA)")
    p.add_argument("--out", type=Path, required=True)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--split", choices=("train", "val", "test"), default="test")
    which.add_argument(
        "--corpora", nargs="+", metavar="CORPUS", help="every clip of these folders of --data (leave-corpora-out)"
    )
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--include-tess", action="store_true")
    args = p.parse_args(argv)
    root = data_dir(args.data)
    if args.corpora:
        corpora, what = args.corpora, f"all speakers of {', '.join(args.corpora)}"
    else:
        side = json.loads(sidecar_path(args.model).read_text())
        split = side["split"][args.split]
        # the model's own corpora: a corpus added with `emotiond train --add-corpus` has test speakers too
        corpora = [c for c in side.get("corpora", CORPORA) if args.include_tess or c != "tess"]
        what = f"{len(split)} {args.split} speakers"
    try:
        clips = load_corpora(root, corpora)
    except (CorpusError, FileNotFoundError) as exc:  # each names the labels.csv at fault
        raise SystemExit(str(exc)) from None
    if not args.corpora:
        clips = select(clips, split)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "speaker"])
        for c in clips:
            w.writerow([str(c.path.resolve()), c.label, c.speaker])
    print(f"{args.out}: {len(clips)} clips of {what}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
