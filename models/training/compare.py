"""Compare training runs on validation speakers: one row per run, or one per recipe over seeds.

    python -m emotiond.models.training.compare runs/tune/base runs/tune/wide ...
    python -m emotiond.models.training.compare --recipe C=runs/C-s0,runs/C-s1,runs/C-s2 --recipe E=...
    python -m emotiond.models.training.compare --held-out --recipe A=runs/L-A-s0,... --recipe E=...
    python -m emotiond.models.training.compare --held-out --rule --recipe E=... --recipe AM=...
    python -m emotiond.models.training.compare --held-out --pooled --recipe E=P5 runs --recipe ENS=P5 runs \
        --recipe E=P6 runs --recipe ENS=P6 runs ...

With ``--recipe`` each row is a recipe: mean ± sd over its seeds of the chosen
checkpoint's clip objective and of the session UARs that ``emotiond eval
--mode session`` wrote into each run folder (``val-session-none.json``, and
``val-session-neutral=0.6.json`` for the skewed mix). Issue 11 asks for three
seeds per recipe because one seed's noise (±1–2 points here) is as large as
most differences between recipes.

``--held-out`` reads leave-corpora-out runs instead (``--protocol loco``): the
session UARs of ``emotiond eval --mode session`` on every clip of the held-out
corpora, stored as ``loco-session-none.json`` and ``loco-session-neutral=0.6.json``,
per held-out corpus, and the cold start of ``--mode clip`` (``loco-clip.json``:
every clip through a fresh pipeline, as a daemon's first utterance or a one-off
``emotiond classify`` hears it). A household is a corpus the model never heard, so this is
the closest measure of the product's judgement that the data allows.

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

CORPORA = ("ravdess", "emodb", "savee", "turevdb", "ased", "nemo")
SESSION_FILES = {"balanced": "val-session-none.json", "skewed": "val-session-neutral=0.6.json"}


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


def session_uar(run: Path, mix: str) -> float | None:
    """Session UAR that ``emotiond eval --mode session --json`` stored in ``run``, if any."""
    path = run / SESSION_FILES[mix]
    if not path.is_file():
        return None
    return float(json.loads(path.read_text())["results"]["session"]["uar"])


def recipe_summary(name: str, runs: Sequence[Path]) -> dict[str, Any]:
    """Mean and sample sd over the seeds of one recipe (runs without results are left out)."""
    done = [r for r in runs if (r / "metrics.json").is_file()]
    columns: dict[str, list[float]] = {"clip": [], "balanced": [], "skewed": []}
    for run in done:
        columns["clip"].append(float(json.loads((run / "metrics.json").read_text())["chosen"]["val_objective"]))
        for mix in SESSION_FILES:
            value = session_uar(run, mix)
            if value is not None:
                columns[mix].append(value)
    stats = {
        k: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else float("nan"), len(v))
        for k, v in columns.items()
        if v
    }
    return {"recipe": name, "runs": [r.name for r in done], "stats": stats}


HELD_OUT_FILES = {  # column -> (file, results key)
    "balanced": ("loco-session-none.json", "session"),
    "skewed": ("loco-session-neutral=0.6.json", "session"),
    "cold start": ("loco-clip.json", "clip"),
}


def held_out_summary(name: str, runs: Sequence[Path]) -> dict[str, Any]:
    """Per held-out corpus and mix: mean, sample sd and count over the seeds that have results."""
    values: dict[tuple[str, str], list[float]] = {}
    done = []
    for run in runs:
        found = False
        for mix, (fname, mode) in HELD_OUT_FILES.items():
            path = run / fname
            if not path.is_file():
                continue
            found = True
            for corpus, m in json.loads(path.read_text())["results"][mode]["per_corpus"].items():
                values.setdefault((corpus, mix), []).append(float(m["uar"]))
        if found:
            done.append(run.name)
    stats = {
        key: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else float("nan"), len(v))
        for key, v in values.items()
    }
    val = [
        float(json.loads((run / "metrics.json").read_text())["chosen"]["val_objective"])
        for run in runs
        if run.name in done and (run / "metrics.json").is_file()
    ]
    return {"recipe": name, "runs": done, "stats": stats, "val_objective": val}


def held_out_rule(base: dict[str, Any], cand: dict[str, Any], mix: str = "skewed") -> dict[str, Any]:
    """Issue 11's ship rule: the candidate recipe against the shipped one, from ``held_out_summary`` rows.

    Every recipe since 2.2.0 was judged by this rule, written down before its runs: on
    skewed sessions ahead on every held-out corpus, by more than the larger seed sd on at
    least one, and a validation objective not below the baseline's by more than the
    baseline's sd. Seed noise is as large as most recipe differences here, so the bar is
    the spread, not zero; computing it here keeps a 0.01-point call out of hand arithmetic.
    """
    corpora = sorted(c for c, m in base["stats"] if m == mix and (c, mix) in cand["stats"])
    per = {}
    for corpus in corpora:
        b_mean, b_sd, _ = base["stats"][(corpus, mix)]
        c_mean, c_sd, _ = cand["stats"][(corpus, mix)]
        per[corpus] = {"delta": c_mean - b_mean, "bar": float(np.max([b_sd, c_sd]))}  # one seed: nan, never cleared
    b_val, c_val = base.get("val_objective", []), cand.get("val_objective", [])
    # (candidate mean, baseline mean, baseline sd); None without two baseline seeds to give a spread
    val = (
        (float(np.mean(c_val)), float(np.mean(b_val)), float(np.std(b_val, ddof=1)))
        if len(b_val) > 1 and c_val
        else None
    )
    val_kept = val is not None and val[0] >= val[1] - val[2]
    ahead = bool(per) and all(v["delta"] > 0 for v in per.values())
    beyond = any(v["delta"] > v["bar"] for v in per.values())
    return {
        "baseline": base["recipe"],
        "candidate": cand["recipe"],
        "mix": mix,
        "per_corpus": per,
        "validation": val,
        "ahead_on_every_corpus": ahead,
        "beyond_sd_on_one": beyond,
        "validation_kept": bool(val_kept),
        "holds": bool(ahead and beyond and val_kept),
    }


def pooled_rule(pairs: Sequence[tuple[dict[str, Any], dict[str, Any]]], mix: str = "skewed") -> dict[str, Any]:
    """A rule for a small gain everywhere: one t-test over every (held-out split, corpus) result.

    ``held_out_rule`` asks one corpus to gain more than the seed spread, which suits a recipe
    that trades one corpus for another and has little power for a point gained on every
    corpus (the mean of seeds, ENS, failed it twice while ahead on all six results). Here
    each held-out split's (baseline, candidate) summaries give one gain per corpus; the
    candidate needs a mean gain with a one-sided t above the 5 % point, no corpus behind by
    more than the baseline's seed sd, and the validation objective kept on every split.
    """
    from scipy.stats import t as student_t

    units, val_kept = [], []
    for base, cand in pairs:
        verdict = held_out_rule(base, cand, mix)
        val_kept.append(verdict["validation_kept"])
        for corpus, v in verdict["per_corpus"].items():
            units.append({"corpus": corpus, "delta": v["delta"], "base_sd": base["stats"][(corpus, mix)][1]})
    deltas = np.array([u["delta"] for u in units])
    k = len(deltas)
    mean = float(deltas.mean()) if k else float("nan")
    sd = float(deltas.std(ddof=1)) if k > 1 else float("nan")
    t_value = mean / (sd / np.sqrt(k)) if k > 1 and sd > 0 else float("nan")
    t_crit = float(student_t.ppf(0.95, k - 1)) if k > 1 else float("nan")
    t_clears = bool(mean > 0 and t_value > t_crit)  # nan compares False: fewer than two results never pass
    none_hurt = bool(units) and all(u["delta"] > -u["base_sd"] for u in units)
    kept = bool(val_kept) and all(val_kept)
    return {
        "mix": mix,
        "units": units,
        "mean": mean,
        "sd": sd,
        "t": float(t_value),
        "t_crit": t_crit,
        "t_clears": t_clears,
        "none_hurt": none_hurt,
        "validation_kept_everywhere": kept,
        "holds": t_clears and none_hurt and kept,
    }


def pooled_text(verdict: dict[str, Any]) -> str:
    cells = ", ".join(f"{u['corpus']} {100 * u['delta']:+.2f} (sd {100 * u['base_sd']:.2f})" for u in verdict["units"])
    return (
        f"pooled rule on {verdict['mix']} sessions, points: {cells}\n"
        f"mean {100 * verdict['mean']:+.2f}, t = {verdict['t']:.2f} against {verdict['t_crit']:.3f} "
        f"(one-sided 5 %, {len(verdict['units']) - 1} df): {'yes' if verdict['t_clears'] else 'no'}; "
        f"no corpus behind by more than its sd: {'yes' if verdict['none_hurt'] else 'no'}; "
        f"validation kept on every split: {'yes' if verdict['validation_kept_everywhere'] else 'no'}\n"
        f"→ the pooled rule {'holds' if verdict['holds'] else 'does not hold'}"
    )


def rule_text(verdict: dict[str, Any]) -> str:
    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    cells = ", ".join(
        f"{c} {100 * v['delta']:+.2f} (bar {100 * v['bar']:.2f})" for c, v in verdict["per_corpus"].items()
    )
    v = verdict["validation"]
    val = f"{v[0]:.3f} against {v[1]:.3f} ± {v[2]:.3f}" if v else "needs metrics.json of two or more baseline seeds"
    return (
        f"rule, {verdict['candidate']} against {verdict['baseline']} on {verdict['mix']} sessions, points: {cells}\n"
        f"ahead on every corpus: {yes(verdict['ahead_on_every_corpus'])}; "
        f"beyond the larger seed sd on one: {yes(verdict['beyond_sd_on_one'])}; "
        f"validation kept: {yes(verdict['validation_kept'])} ({val})\n"
        f"→ the rule {'holds' if verdict['holds'] else 'does not hold'}"
    )


def held_out_table(rows: Sequence[dict[str, Any]]) -> str:
    corpora = sorted({c for r in rows for c, _ in r["stats"]})
    cols = [(c, mix) for c in corpora for mix in HELD_OUT_FILES]
    lines = [
        "| recipe | seeds | " + " | ".join(f"{c}, {mix}" for c, mix in cols) + " |",
        "|" + "---|" * (2 + len(cols)),
    ]
    for r in rows:
        cells = []
        for key in cols:
            mean, sd, n = r["stats"].get(key, (float("nan"), float("nan"), 0))
            cells.append("–" if not n else f"{mean:.3f} (n=1)" if n == 1 else f"{mean:.3f} ± {sd:.3f} (n={n})")
        lines.append(f"| {r['recipe']} | {len(r['runs'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def recipe_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| recipe | seeds | session, balanced | session, skewed (neutral 0.6) | clip objective (chosen checkpoint) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        cells = []
        for k in ("balanced", "skewed", "clip"):
            mean, sd, n = r["stats"].get(k, (float("nan"), float("nan"), 0))
            cells.append("–" if not n else f"{mean:.3f} (n=1)" if n == 1 else f"{mean:.3f} ± {sd:.3f} (n={n})")
        lines.append(f"| {r['recipe']} | {len(r['runs'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m emotiond.models.training.compare", description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="*", type=Path, help="output folders of `emotiond train`")
    p.add_argument("--last", type=int, default=10, help="epochs averaged for the steadier estimate")
    p.add_argument("--recipe", action="append", default=[], metavar="NAME=RUN,RUN,...", help="seeds of one recipe")
    p.add_argument("--held-out", action="store_true", help="leave-corpora-out runs: session UAR per held-out corpus")
    p.add_argument(
        "--rule",
        action="store_true",
        help="with --held-out and two recipes (baseline first): print issue 11's ship rule for the second",
    )
    p.add_argument(
        "--pooled",
        action="store_true",
        help="with --held-out: --recipe in (baseline, candidate) pairs, one per held-out split; the pooled rule",
    )
    args = p.parse_args(argv)
    if args.rule and not (args.held_out and len(args.recipe) == 2):
        p.error("--rule needs --held-out and exactly two --recipe (the baseline first)")
    if args.pooled and not (args.held_out and args.recipe and len(args.recipe) % 2 == 0):
        p.error("--pooled needs --held-out and --recipe in (baseline, candidate) pairs, one pair per held-out split")
    if args.recipe:
        summarise, render = (held_out_summary, held_out_table) if args.held_out else (recipe_summary, recipe_table)
        rows = []
        for spec in args.recipe:
            name, _, folders = spec.partition("=")
            rows.append(summarise(name, [Path(f) for f in folders.split(",") if f]))
        if args.pooled:
            for i in range(0, len(rows), 2):
                print(render(rows[i : i + 2]) + "\n")
            print(pooled_text(pooled_rule([(rows[i], rows[i + 1]) for i in range(0, len(rows), 2)])))
            return 0
        print(render(rows))
        if args.rule:
            print("\n" + rule_text(held_out_rule(rows[0], rows[1])))
        return 0
    rows = [run_summary(r, args.last) for r in args.runs if (r / "metrics.json").is_file()]
    missing = [str(r) for r in args.runs if not (r / "metrics.json").is_file()]
    print(table(rows, args.last))
    if missing:
        print(f"\nno metrics.json (still running?): {', '.join(missing)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
