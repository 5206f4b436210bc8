"""``emotiond calibrate``: measure the reference the calibrate stage judges a household against.

The reference is what this model outputs, on average, for each true emotion
on speakers it was not trained on (its validation speakers), played the way
the daemon hears them: each speaker's clips through one long-lived pipeline
(``eval --mode session``) with the calibrate stage off. It is measured
through the daemon's own pipeline rather than in training so that the
windows, VAD, denoise and household normalisation are exactly the live ones;
it is written into the model's sidecar (``calibration``), where
``dsp.calibrate.reference`` mixes it for ``calibrate.neutral_share``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .. import exitcodes
from ..dsp.audio import AudioInputError
from ..models.runtime import sidecar_path
from .evaluate import EvalStop, prepare_job, run_session, sessions

HOW = "mean window probabilities per true class, validation speakers, balanced sessions, calibrate stage off"


def class_means(settings: Any, model: Any, clips: list, seed: int = 0) -> tuple[list[list[float] | None], int]:
    """Per true class, the duration-weighted mean of the utterance events' probabilities; and clips used."""
    labels = list(model.labels)
    sums = np.zeros((len(labels), len(labels)))
    weights = np.zeros(len(labels))
    rng = np.random.default_rng(seed)
    used = 0
    for session in sessions(clips, seed).values():
        per_clip, _ = run_session(settings, model, session, rng)
        for clip, events in zip(session, per_clip, strict=True):
            k = labels.index(clip.label)
            for u in events:
                w = max(float(u["duration_s"]), 1e-3)
                sums[k] += w * np.array([u["probabilities"][label] for label in labels])
                weights[k] += w
            used += bool(events)
    rows = [(sums[k] / weights[k]).round(5).tolist() if weights[k] > 0 else None for k in range(len(labels))]
    return rows, used


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="emotiond calibrate",
        description="Measure the calibrate stage's reference on labelled validation speakers and write it into "
        "the model's sidecar (model.path).",
    )
    p.add_argument("manifest", type=Path, help="path,label,speaker CSV of speakers the model was not trained on")
    p.add_argument("--config", type=Path)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dry-run", action="store_true", help="print the reference, leave the sidecar alone")
    return p


def calibrate_main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    ns = argparse.Namespace(
        config=args.config, overrides=[*args.overrides, "calibrate.enabled=false"], manifest=args.manifest,
        limit=None, mode="session", skew=None, noise=None,
    )
    try:
        job = prepare_job(ns)
        rows, used = class_means(job.settings, job.model, job.clips, args.seed)
    except (EvalStop, AudioInputError) as exc:
        print(f"emotiond calibrate: {exc}", file=sys.stderr)
        return exc.exit_code
    calibration = {"class_mean_probabilities": rows, "how": HOW, "manifest": args.manifest.name, "clips": used}
    print(f"reference measured on {used} clips of {args.manifest} (rows: true class; columns: mean output):")
    print("  " + " " * 10 + "  " + " ".join(f"{label[:5]:>5}" for label in job.model.labels))
    for label, row in zip(job.model.labels, rows, strict=True):
        shown = "no clip: no weight" if row is None else " ".join(f"{v:5.3f}" for v in row)
        print(f"  {label:>10}  {shown}")
    if args.dry_run:
        return exitcodes.OK
    side = sidecar_path(job.model.path)
    data = json.loads(side.read_text())
    data["calibration"] = calibration
    side.write_text(json.dumps(data, indent=2) + "\n")
    print(f"calibration written to {side}", file=sys.stderr)
    return exitcodes.OK
