"""A window-level Whisper teacher: one target per student window, not per clip (``--whisper-windows``).

A clip-level target cannot tell the student which second of a clip carried the
emotion, and clip-level distillation moved the student by less than its seed
spread. ``teacher_window_probe`` showed the encoder loses nothing at 1 s: a
linear head on 1 s windows of its frames scores clips as well as the clip head.
So each clean training window gets the teacher's view of *the same samples*:
the clip goes through the daemon's front end once more (``clip_windows`` with
raw windows, the very call the feature cache made) to learn where each window
lies, Whisper tiny.en encodes the clip, and the encoder frames inside each
window's span are pooled (mean ‖ std). Out-of-fold heads (by speaker) turn the
pooled frames into probabilities, as for the clip teacher.

Augmented copies keep their labels alone: speed and time-shift augmentation
move every window, and encoding each augmented copy would double the cost.
Window embeddings are cached per corpus under ``runs/`` (derived from licensed
audio: never committed).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ...dsp.adapt import RawWindows
from ...dsp.frontend import FrontendParams, clip_windows
from .data import LABELS, Clip
from .featurize import FeatureSet, cache_key, read_audio
from .teacher import EMBED_DIM, HOP, MAX_SECONDS, SAMPLE_RATE, TeacherEncoder, mean_std

SAMPLES_PER_FRAME = 2 * HOP  # the encoder's stride-2 convolution: one output frame per 20 ms
HEAD_C = 0.01  # the window head's regularisation, chosen on validation speakers by teacher_window_probe


def window_spans(audio: np.ndarray, fp: FrontendParams) -> np.ndarray:
    """``(n_windows, 2)`` start and end sample of every window the feature cache holds for this clip, in its order."""
    wins = clip_windows(audio, fp.vad, fp.denoise, fp.window, normaliser=RawWindows())
    return np.array([(w.start_sample, w.end_sample) for w in wins], dtype=np.int64).reshape(-1, 2)


def pool_spans(frames: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """Mean ‖ std of the encoder frames overlapping each span (at least one frame, clamped to the encoded ones)."""
    out = np.zeros((len(spans), 2 * frames.shape[1]), np.float32)
    for i, (start, end) in enumerate(spans):
        a = min(max(0, int(start)) // SAMPLES_PER_FRAME, len(frames) - 1)
        b = min(max(a + 1, -(-int(end) // SAMPLES_PER_FRAME)), len(frames))
        out[i] = mean_std(frames[a:b])
    return out


def encoder_frames(audio: np.ndarray, encoder: TeacherEncoder) -> np.ndarray:
    """The encoder's frames of the whole clip: padded to 10 s like the clip teacher, or to its own length if longer."""
    seconds = min(MAX_SECONDS, max(10.0, float(np.ceil(len(audio) / SAMPLE_RATE))))
    return encoder.frames(audio.astype(np.float32), seconds)


def cache_path(cache_dir: Path, fp: FrontendParams, corpus: str) -> Path:
    return Path(cache_dir) / f"teacher-windows-{cache_key([], fp, None, [])}-{corpus}.npz"


def embed_windows(
    clips: Sequence[Clip],
    fs: FeatureSet,
    fp: FrontendParams,
    cache_dir: Path,
    threads: int = 2,
    log: Callable[[str], None] = print,
) -> np.ndarray:
    """``(len(fs.x), EMBED_DIM)`` pooled teacher frames for every window of ``fs`` (clean windows of ``clips``).

    Computed once per clip and cached per corpus; a window count that differs
    from the feature cache's (a changed front end) is an error, not a silent
    misalignment.
    """
    out = np.zeros((len(fs.x), EMBED_DIM), np.float32)
    windows_of = fs.per_clip()
    by_corpus: dict[str, list[int]] = {}
    for i, c in enumerate(clips):
        by_corpus.setdefault(c.corpus, []).append(i)
    encoder: TeacherEncoder | None = None
    for corpus, members in sorted(by_corpus.items()):
        path = cache_path(cache_dir, fp, corpus)
        have: dict[str, np.ndarray] = {}
        if path.is_file():
            with np.load(path, allow_pickle=False) as z:  # read each array once: z["x"] decompresses on every access
                x, stems, counts = z["x"], z["stems"].tolist(), np.concatenate([[0], np.cumsum(z["counts"])])
            have = {s: x[counts[k] : counts[k + 1]] for k, s in enumerate(stems)}
        missing = [i for i in members if clips[i].stem not in have]
        if missing:
            encoder = encoder or TeacherEncoder(pad_seconds=10.0, threads=threads)
            t0 = time.monotonic()
            for n, i in enumerate(missing):
                audio = read_audio(clips[i].path)
                have[clips[i].stem] = pool_spans(encoder_frames(audio, encoder), window_spans(audio, fp)).astype(
                    np.float16
                )
                if (n + 1) % 500 == 0:
                    log(f"  window teacher {corpus}: {n + 1}/{len(missing)} clips, {time.monotonic() - t0:.0f} s")
            log(f"  window teacher {corpus}: {len(missing)} clips in {time.monotonic() - t0:.0f} s")
            stems = sorted(have)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npz")
            np.savez(
                tmp,
                stems=np.array(stems),
                counts=np.array([len(have[s]) for s in stems]),
                x=np.concatenate([have[s] for s in stems]) if stems else np.zeros((0, EMBED_DIM), np.float16),
            )
            tmp.replace(path)
        for i in members:
            emb, rows = have[clips[i].stem], windows_of[i]
            if len(emb) != len(rows):
                raise SystemExit(
                    f"--whisper-windows: {clips[i].path}: {len(emb)} teacher windows against {len(rows)} cached "
                    f"feature windows (front end changed? delete {path})"
                )
            out[rows] = emb
    return out


def out_of_fold_window_proba(
    clips: Sequence[Clip],
    fs: FeatureSet,
    emb: np.ndarray,
    labels: np.ndarray,
    cache_dir: Path,
    c: float = HEAD_C,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> np.ndarray:
    """Per window, the probabilities of a head that never heard the window's speaker (5 folds), cached.

    The folds depend on the data seed only, so every model seed distils from
    the same teacher.
    """
    from .teacher import out_of_fold_proba

    key = cache_key([f"{clip.corpus}/{clip.stem}" for clip in clips], FrontendParams(), None, [])
    path = Path(cache_dir) / f"teacher-windows-oof-{len(fs.x)}-{key}-c{c:g}-s{seed}.npz"
    if path.is_file():
        return np.load(path)["proba"]
    t0 = time.monotonic()
    groups = [clips[i].speaker for i in fs.clip]
    proba = out_of_fold_proba(emb, labels, groups, c, seed=seed, n_classes=len(LABELS))
    log(f"  window teacher: out-of-fold heads on {len(emb)} windows in {time.monotonic() - t0:.0f} s")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path.with_suffix(".tmp.npz"), proba=proba)
    path.with_suffix(".tmp.npz").replace(path)
    return proba
