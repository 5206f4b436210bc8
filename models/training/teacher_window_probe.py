"""Would a window-level Whisper teacher know more than the student? A linear probe per 1 s window.

    python -m emotiond.models.training.teacher_window_probe --data DIR [--per-speaker 40]

The student judges 1 s windows and an utterance is the mean of its windows'
probabilities. The clip-level teacher (``teacher.py``) sees the whole clip, so
its advantage may come from context the student can never have. This probe
measures the teacher at the student's granularity before any window-level
distillation is built: the Whisper tiny.en encoder's frames (padded to 10 s,
as the shipped teacher) are pooled per 1 s window (mean and std, hop 0.24 s,
speech windows only) and a balanced logistic regression is trained on the
windows of the training speakers; a clip is then the mean of its windows'
probabilities, exactly as the student is scored. The clip-level probe is fit
on the same clips for comparison. Same speaker split as ``emotiond train``
(seed 0); validation speakers only, test speakers never touched.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ...dsp.audio import load_mono_16k
from ..evaluate import metrics
from .data import CORPORA, LABELS, Clip, data_dir, load_corpora, select, speaker_split
from .teacher import HOP, TeacherEncoder, choose_head, fit_head, mean_std
from .teacher_windows import encoder_frames
from .train import limit_clips

WINDOW_FRAMES = 50  # encoder frames are 20 ms: 1 s, the student's window
HOP_FRAMES = 12  # 0.24 s, about the student's 0.25 s
SPEECH_DB = 35.0  # a 20 ms frame is speech if within this many dB of the clip's loudest


def speech_frames(audio: np.ndarray, n_frames: int) -> np.ndarray:
    """Per 20 ms encoder frame, whether it holds speech (energy gate: the probe's stand-in for the VAD)."""
    step = 2 * HOP
    energy = np.array(
        [np.mean(np.square(audio[i * step : (i + 1) * step], dtype=np.float64)) + 1e-12 for i in range(n_frames)]
    )
    db = 10 * np.log10(energy)
    return db > db.max() - SPEECH_DB


def window_embeddings(frames: np.ndarray, speech: np.ndarray) -> np.ndarray:
    """Mean ‖ std of the encoder frames of every 1 s window that is mostly speech (at least one per clip)."""
    n = len(frames)
    starts = list(range(0, max(1, n - WINDOW_FRAMES + 1), HOP_FRAMES))
    out = [mean_std(frames[s : s + WINDOW_FRAMES]) for s in starts if speech[s : s + WINDOW_FRAMES].mean() >= 0.5]
    return np.stack(out or [mean_std(frames)])


def encode(clips: Sequence[Clip], encoder: TeacherEncoder, log=print) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(window embeddings, clip index of each window, clip embeddings) for ``clips``."""
    wins, owner, clip_emb = [], [], []
    t0 = time.monotonic()
    for i, c in enumerate(clips):
        audio = load_mono_16k(c.path).astype(np.float32)
        frames = encoder_frames(audio, encoder)
        w = window_embeddings(frames, speech_frames(audio, len(frames)))
        wins.append(w)
        owner.append(np.full(len(w), i))
        clip_emb.append(mean_std(frames))
        if (i + 1) % 500 == 0:
            log(f"  {i + 1}/{len(clips)} clips, {time.monotonic() - t0:.0f} s")
    return np.concatenate(wins), np.concatenate(owner), np.stack(clip_emb).astype(np.float32)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m emotiond.models.training.teacher_window_probe", description=__doc__)
    p.add_argument("--data")
    p.add_argument("--corpora", nargs="+", default=list(CORPORA), choices=CORPORA)
    p.add_argument("--per-speaker", type=int, default=40, help="training clips per speaker (encoding time)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    clips = load_corpora(data_dir(args.data), args.corpora)
    split = speaker_split(clips, seed=args.seed)
    train = limit_clips(select(clips, split.train), args.per_speaker, args.seed)
    val = select(clips, split.val)
    index = {n: i for i, n in enumerate(LABELS)}
    y_train = np.array([index[c.label] for c in train])
    y_val = np.array([index[c.label] for c in val])
    print(f"train {len(train)} clips, val {len(val)} clips")
    encoder = TeacherEncoder(pad_seconds=10.0, threads=args.threads)
    t0 = time.monotonic()
    w_train, o_train, c_train = encode(train, encoder)
    w_val, o_val, c_val = encode(val, encoder)
    seconds = time.monotonic() - t0
    print(f"encoded {len(train) + len(val)} clips in {seconds:.0f} s; windows: train {len(w_train)}, val {len(w_val)}")

    def uar(t: np.ndarray, q: np.ndarray) -> float:
        return float(metrics(list(t), list(q), LABELS)["uar"])

    def clip_pred(proba: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
        sums = np.zeros((n, proba.shape[1]))
        np.add.at(sums, owner, proba)
        return sums.argmax(axis=1)

    def per_corpus(pred: np.ndarray) -> dict[str, float]:
        out = {}
        for corpus in sorted({c.corpus for c in val}):
            sel = [i for i, c in enumerate(val) if c.corpus == corpus]
            out[corpus] = round(uar(y_val[sel], pred[sel]), 4)
        out["mean_non_tess"] = round(float(np.mean([v for k, v in out.items() if k != "tess"])), 4)
        return out

    grid = (0.001, 0.01, 0.1)
    clip_head, _ = choose_head(c_train, y_train, c_val, y_val, uar, grid)
    best = None
    for c in grid:  # C chosen as the student is scored: a clip is the mean of its windows' probabilities
        head = fit_head(w_train, y_train[o_train], c)
        proba = np.zeros((len(w_val), len(LABELS)))
        proba[:, head.model.classes_] = head.proba(w_val)
        score = uar(y_val, clip_pred(proba, o_val, len(val)))
        print(f"  window head C={c:g}: validation {score:.4f}")
        if best is None or score > best[0]:
            best = (score, head, proba)
    assert best is not None
    _, win_head, proba = best
    results = {
        "train_clips": len(train),
        "val_clips": len(val),
        "encode_s": round(seconds, 1),
        "clip_probe": {"c": clip_head.c, "val_uar": per_corpus(clip_head.proba(c_val).argmax(axis=1))},
        "window_probe": {
            "c": win_head.c,
            "val_uar_clip_mean_of_windows": per_corpus(clip_pred(proba, o_val, len(val))),
            "val_uar_single_window": round(uar(y_val[o_val], proba.argmax(axis=1)), 4),
        },
    }
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
