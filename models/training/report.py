"""Collect training runs into ``models/report/`` and the shipped sidecar.

    python -m emotiond.models.training.report --final runs/final \
        [--random runs/random] [--loco runs/loco-*] [--selection runs/sel-*] --ship models

Copies the final run's int8 model, sidecar, confusion PNGs and per-class table,
and adds the random-split comparison and leave-one-corpus-out numbers to the
metrics JSON and to the sidecar's ``metrics``.
"""

from __future__ import annotations

import argparse
import ast
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _load(run: Path) -> dict[str, Any]:
    return json.loads((run / "metrics.json").read_text())


def _uar(block: dict[str, Any]) -> dict[str, float]:
    return {k: round(v["uar"], 4) for k, v in block.items()}


def _acc(block: dict[str, Any]) -> dict[str, float]:
    return {k: round(v["accuracy"], 4) for k, v in block.items()}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--final", type=Path, required=True)
    p.add_argument("--random", type=Path)
    p.add_argument("--loco", type=Path, nargs="*", default=[])
    p.add_argument("--selection", type=Path, nargs="*", default=[])
    p.add_argument("--ship", type=Path, help="models/ folder to copy the model and sidecar into")
    p.add_argument("--report", type=Path, default=Path("models/report"))
    p.add_argument("--version", help="model version written into the shipped sidecar (default: the run's own)")
    p.add_argument("--recipe", help="one line naming the recipe, written into the shipped sidecar")
    a = p.parse_args(argv)

    final = _load(a.final)
    out: dict[str, Any] = {
        "protocol": "speaker-independent; test speakers scored once",
        "test_int8": final["test_tflite_int8"],
        "test_float32_tflite": final["test_tflite_float32"],
        "test_float_keras": final["test_float"],
        "int8_minus_float_uar": final["int8_minus_float_uar"],
        "chosen": final["chosen"],
        "wall_time_s": final["wall_time_s"],
        "args": final["args"],
    }
    if a.selection:
        out["selection"] = {
            r.name: {
                "args": {k: _load(r)["args"][k] for k in ("window_frames", "epochs", "aug_copies", "widths")},
                "chosen": _load(r)["chosen"],
                "val_float": _load(r).get("val_float"),
                "wall_time_s": _load(r)["wall_time_s"],
            }
            for r in a.selection
            if (r / "metrics.json").is_file()
        }
    if a.random and (a.random / "metrics.json").is_file():
        rnd = _load(a.random)
        out["random_vs_speaker_split"] = {
            "random_clip_split_int8": {"uar": _uar(rnd["test_tflite_int8"]), "accuracy": _acc(rnd["test_tflite_int8"])},
            "speaker_split_int8": {
                "uar": _uar(final["test_tflite_int8"]),
                "accuracy": _acc(final["test_tflite_int8"]),
            },
            "note": "same recipe and test-set sizes; random split lets every speaker appear in train and test",
        }
    loco = {}
    for r in a.loco:
        if not (r / "metrics.json").is_file():
            continue
        m = _load(r)
        held = m["args"]["holdout"]  # one corpus, or a list of them (stringified by the run's args dump)
        block = m.get("test_tflite_int8") or m["test_float"]
        for corpus in ast.literal_eval(held) if held.startswith("[") else [held]:
            loco[corpus] = {
                "uar": round(block[corpus]["uar"], 4),
                "accuracy": round(block[corpus]["accuracy"], 4),
                "n": block[corpus]["n"],
                "model": "int8" if "test_tflite_int8" in m else "float (Keras)",
                "held_out_together": held,
            }
    if loco:
        out["leave_one_corpus_out"] = loco

    a.report.mkdir(parents=True, exist_ok=True)
    (a.report / "metrics.json").write_text(json.dumps(out, indent=2) + "\n")
    for f in (a.final / "report").iterdir():
        if f.suffix in (".png", ".md"):
            shutil.copy(f, a.report / f.name)
    (a.report / "per_corpus.md").write_text(per_corpus_table(out))

    if a.ship:
        side = json.loads((a.final / "emotion_int8.json").read_text())
        if a.version:
            side["version"] = a.version
        if a.recipe:
            side["recipe"] = a.recipe
        if final["args"].get("fit_on_train_val") == "True":
            side["split"]["fitted_on"] = "train + val speakers (val chose the recipe in --select-only runs)"
        metrics = side.setdefault("metrics", {})
        if "random_vs_speaker_split" in out:
            metrics["random_split_test_uar_int8"] = out["random_vs_speaker_split"]["random_clip_split_int8"]["uar"]
        if loco:
            metrics["leave_one_corpus_out_uar"] = {k: v["uar"] for k, v in loco.items()}
        shutil.copy(a.final / "emotion_int8.tflite", a.ship / "emotion_int8.tflite")
        (a.ship / "emotion_int8.json").write_text(json.dumps(side, indent=2) + "\n")
    print(per_corpus_table(out))
    return 0


def per_corpus_table(out: dict[str, Any]) -> str:
    lines = [
        "# Per-corpus test results (unseen speakers)",
        "",
        "| corpus | clips | no window | UAR int8 | acc int8 | UAR float32 | int8 − float |",
        "|---|---|---|---|---|---|---|",
    ]
    for k, v in out["test_int8"].items():
        f = out["test_float32_tflite"][k]
        lines.append(
            f"| {k} | {v['n']} | {v['no_window']} | {v['uar']:.3f} | {v['accuracy']:.3f} | {f['uar']:.3f} "
            f"| {v['uar'] - f['uar']:+.3f} |"
        )
    lines.append("")
    lines.append("TESS has two speakers (one in test): reported separately, excluded from `all_but_tess`.")
    if "leave_one_corpus_out" in out:
        lines += [
            "",
            "## Leave one corpus out",
            "",
            "| held-out corpus | clips | UAR | accuracy | model |",
            "|---|---|---|---|---|",
        ]
        for k, v in out["leave_one_corpus_out"].items():
            lines.append(f"| {k} | {v['n']} | {v['uar']:.3f} | {v['accuracy']:.3f} | {v['model']} |")
    if "random_vs_speaker_split" in out:
        r = out["random_vs_speaker_split"]
        lines += [
            "",
            "## Random clip split vs speaker split (same recipe)",
            "",
            "| corpus | random split UAR | speaker split UAR | random acc | speaker acc |",
            "|---|---|---|---|---|",
        ]
        for k in r["speaker_split_int8"]["uar"]:
            ru = r["random_clip_split_int8"]["uar"].get(k, float("nan"))
            ra = r["random_clip_split_int8"]["accuracy"].get(k, float("nan"))
            su, sa = r["speaker_split_int8"]["uar"][k], r["speaker_split_int8"]["accuracy"][k]
            lines.append(f"| {k} | {ru:.3f} | {su:.3f} | {ra:.3f} | {sa:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
