"""Choose the teacher's encoding on validation speakers: a linear probe per encoding.

    python -m emotiond.models.training.teacher_probe --data DIR --pads clip 10 --corpora ravdess emodb savee

Same speaker split as ``emotiond train`` (seed 0); for each encoding, the
head's C is chosen on the validation speakers and the validation UAR per
corpus is printed and written as JSON. Test speakers are never touched.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..evaluate import metrics
from .data import CORPORA, LABELS, data_dir, load_corpora, select, speaker_split
from .teacher import choose_head, embed_clips


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m emotiond.models.training.teacher_probe", description=__doc__)
    p.add_argument("--data")
    p.add_argument("--corpora", nargs="+", default=list(CORPORA), choices=CORPORA)
    p.add_argument("--pads", nargs="+", default=["clip", "10"])
    p.add_argument("--cache", type=Path, default=Path("runs/teacher"))
    p.add_argument("--json", type=Path)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    clips = load_corpora(data_dir(args.data), args.corpora)
    split = speaker_split(clips, seed=args.seed)
    train, val = select(clips, split.train), select(clips, split.val)
    index = {n: i for i, n in enumerate(LABELS)}
    y_train = np.array([index[c.label] for c in train])
    y_val = np.array([index[c.label] for c in val])

    def uar(t: np.ndarray, q: np.ndarray) -> float:
        return float(metrics(list(t), list(q), LABELS)["uar"])

    out: dict[str, dict] = {}
    for pad in args.pads:
        seconds = None if pad == "clip" else float(pad)
        e_train = embed_clips(train, args.cache, seconds).x
        e_val = embed_clips(val, args.cache, seconds).x
        head, by_c = choose_head(e_train, y_train, e_val, y_val, uar)
        pred = head.proba(e_val).argmax(axis=1)
        per = {}
        for corpus in sorted({c.corpus for c in val}):
            sel = [i for i, c in enumerate(val) if c.corpus == corpus]
            per[corpus] = round(uar(y_val[sel], pred[sel]), 4)
        non_tess = [v for k, v in per.items() if k != "tess"]
        out[pad] = {"c": head.c, "by_c": by_c, "val_uar": per, "mean_non_tess": round(float(np.mean(non_tess)), 4)}
        print(f"teacher {pad}: C={head.c:g} val UAR {per} mean(non-TESS) {out[pad]['mean_non_tess']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
