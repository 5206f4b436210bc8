"""``emotiond eval``: score the shipped model the way the daemon runs it.

Two paths, same model, same settings:

* ``--mode clip`` (default) is the offline path: ``daemon.classify.classify_signal``,
  i.e. every window ``dsp.frontend.clip_windows`` cuts from the whole clip, and
  the mean of their probabilities.
* ``--mode stream`` is the live path: the clip, with about one second of
  low-level background before and after it (so the VAD warms up and the noise
  gate learns a profile, as on a live microphone), is pushed in
  ``source.block_ms`` blocks through ``daemon.pipeline.Pipeline`` exactly as the
  daemon wires it (frontend → model → smoother → sinks). The clip's prediction
  is the mean of its *utterance events'* probabilities weighted by each
  utterance's duration; a clip without any utterance event counts as wrong and
  is counted in ``no_event``.
* ``--mode both`` runs both and prints them side by side with the gap
  (stream − clip UAR).

``--noise white|pink|babble|FILE --snr 20,10,5,0`` mixes noise into every clip
at each SNR as the one noise kit defines it (``dsp/noise.py``, shared with
training's augmentation and the benches): the clip's speech level is the RMS of
its loudest half of 25 ms frames, so its silences do not dilute the SNR. Each
SNR is scored with the denoise stage on and off.

Manifest: CSV with header ``path,label`` (optional ``speaker``), paths relative
to the manifest's folder; rows whose label the model does not know are counted
in ``skipped`` and left out. The metrics and manifest reader are those of
``models/evaluate.py`` (the training-side evaluator), so the numbers agree.

No TensorFlow here, and librosa is never imported.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import exitcodes
from ..dsp import noise
from ..dsp.audio import AudioInputError, load_mono_16k
from ..dsp.features import SAMPLE_RATE
from ..models.evaluate import manifest_clips, metrics, per_class_table
from .assembly import build_pipeline

PAD_S = 1.0  # background added before and after each clip in stream mode
PAD_MAX_DBFS = -62.0  # below the VAD's energy floor (vad.min_rms_dbfs, -60) so padding is never speech
PAD_MIN_DBFS = -90.0
PAD_FRAME = 320  # 20 ms frames for the clip's own background level


# -- manifest ------------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    path: Path
    label: str
    speaker: str = ""


def load_clips(manifest: Path, labels: Sequence[str]) -> tuple[list[Clip], dict[str, int]]:
    """Rows with a known label, and ``{label: count}`` of the rows skipped."""
    rows, skipped = manifest_clips(manifest, labels)
    return [Clip(path, label, speaker) for path, label, speaker in rows], skipped


# -- noise ---------------------------------------------------------------------


def frame_power(x: np.ndarray, frame: int = PAD_FRAME) -> np.ndarray:
    n = len(x) // frame
    if n == 0:
        return np.array([float(np.mean(x * x))]) if len(x) else np.zeros(1)
    return np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1)


class NoiseMaker:
    """Noise of a given kind for a given length (the noise kit's generators); babble sums other manifest clips."""

    def __init__(self, kind: str, pool: Sequence[Path] = (), seed: int = 0, talkers: int = 5) -> None:
        self.kind = kind
        self.rng = np.random.default_rng(seed)
        self.pool = list(pool)
        self.talkers = talkers
        self._file: np.ndarray | None = None
        self._cache: dict[Path, np.ndarray] = {}
        if kind not in ("white", "pink", "babble"):
            self._file = load_mono_16k(kind)
        elif kind == "babble" and len(self.pool) < 2:
            raise ValueError("babble needs at least 2 clips in the manifest")

    def _clip(self, path: Path) -> np.ndarray:
        if path not in self._cache:
            self._cache[path] = load_mono_16k(path)
        return self._cache[path]

    def __call__(self, n: int, exclude: Path | None = None) -> np.ndarray:
        if self.kind == "white":
            return noise.white_noise(n, self.rng)
        if self.kind == "pink":
            return noise.pink_noise(n, self.rng)
        if self._file is not None:
            return noise.fit_length(self._file, n, self.rng)
        others = [p for p in self.pool if p != exclude] or self.pool
        chosen = self.rng.choice(len(others), size=min(self.talkers, len(others)), replace=False)
        return noise.babble([self._clip(others[i]) for i in chosen], n, self.rng)


def pad_level(x: np.ndarray) -> float:
    """RMS of the clip's own background: its quietest 10% of 20 ms frames, kept below the VAD floor."""
    power = frame_power(x)
    db = 10 * np.log10(float(np.percentile(power, 10)) + 1e-20)
    return 10 ** (float(np.clip(db, PAD_MIN_DBFS, PAD_MAX_DBFS)) / 20)


def padded(x: np.ndarray, rng: np.random.Generator, pad_s: float = PAD_S) -> tuple[np.ndarray, int]:
    """The clip with ``pad_s`` of low-level noise on both sides, and the clip's offset in it."""
    n = int(pad_s * SAMPLE_RATE)
    level = pad_level(x)
    out = np.concatenate([np.zeros(n), x, np.zeros(n)])
    out = out + rng.normal(0.0, level, len(out))
    return out, n


# -- the two paths --------------------------------------------------------------


class CaptureSink:
    """A sink that keeps every payload (the daemon's sinks interface)."""

    def __init__(self) -> None:
        self.emotions: list[dict[str, Any]] = []
        self.utterances: list[dict[str, Any]] = []
        self.statuses: list[str] = []

    def start(self) -> None:
        pass

    def publish_emotion(self, payload: dict[str, Any]) -> None:
        self.emotions.append(payload)

    def publish_utterance(self, payload: dict[str, Any]) -> None:
        self.utterances.append(payload)

    def set_status(self, status: str, reason: str | None = None) -> None:
        self.statuses.append(status)

    def publish_health(self, payload: dict[str, Any]) -> None:
        pass

    def stats(self) -> dict[str, Any]:
        return {}

    def close(self, timeout_s: float) -> None:
        pass


def run_stream(settings: Any, model: Any, signal: np.ndarray) -> tuple[list[dict[str, Any]], Any]:
    """Push ``signal`` through a fresh pipeline in ``source.block_ms`` blocks; the utterance payloads."""
    sink = CaptureSink()
    pipe = build_pipeline(settings, model, [sink])
    block = max(1, settings.source.block_ms * SAMPLE_RATE // 1000)
    for i in range(0, len(signal), block):
        pipe.process(signal[i : i + block])
    pipe.finish()
    return sink.utterances, pipe


def stream_probabilities(utterances: Sequence[dict[str, Any]], labels: Sequence[str]) -> np.ndarray | None:
    """Duration-weighted mean of the utterance events' probabilities (None without events)."""
    if not utterances:
        return None
    probs = np.array([[u["probabilities"][k] for k in labels] for u in utterances], dtype=np.float64)
    weights = np.array([max(float(u["duration_s"]), 1e-3) for u in utterances])
    return (probs * weights[:, None]).sum(axis=0) / weights.sum()


def clip_probabilities(settings: Any, model: Any, signal: np.ndarray) -> np.ndarray | None:
    from .classify import classify_signal

    result = classify_signal(model, settings, signal)
    if not result["windows"]:
        return None
    return np.array([result["probabilities"][k] for k in model.labels])


def with_denoise(settings: Any, enabled: bool) -> Any:
    """``settings`` with ``denoise.enabled`` set, so it overrides the model's value (eval's on/off comparison)."""
    return settings.model_copy(update={"denoise": settings.denoise.model_copy(update={"enabled": enabled})})


# -- session mode ----------------------------------------------------------------

GAP_S = (1.0, 3.0)


def parse_skew(text: str | None) -> tuple[str, float] | None:
    """``neutral=0.6`` → ``("neutral", 0.6)``; ``None`` keeps every clip."""
    if not text:
        return None
    label, _, share = text.partition("=")
    try:
        value = float(share)
    except ValueError:
        raise ValueError(f"--skew {text!r}: expected LABEL=SHARE, e.g. neutral=0.6") from None
    if not label or not 0 < value < 1:
        raise ValueError(f"--skew {text!r}: expected LABEL=SHARE with 0 < SHARE < 1")
    return label.strip(), value


def sessions(clips: Sequence[Clip], seed: int, skew: tuple[str, float] | None = None) -> dict[str, list[Clip]]:
    """Each speaker's clips in the order one long-lived pipeline hears them (seeded shuffle).

    With ``skew=("neutral", 0.6)`` the other classes are subsampled so that
    neutral is 60 % of a speaker's session (a speaker with no neutral clip keeps all).
    """
    rng = np.random.default_rng(seed)
    by: dict[str, list[Clip]] = {}
    for c in clips:
        by.setdefault(c.speaker or "all", []).append(c)
    out: dict[str, list[Clip]] = {}
    for speaker in sorted(by):
        group = list(by[speaker])
        if skew is not None:
            label, share = skew
            main = [c for c in group if c.label == label]
            rest = [c for c in group if c.label != label]
            if main:
                keep = min(len(rest), round(len(main) * (1 - share) / share))
                picked = sorted(rng.choice(len(rest), size=keep, replace=False).tolist()) if keep else []
                group = main + [rest[i] for i in picked]
        order = rng.permutation(len(group))
        out[speaker] = [group[i] for i in order]
    return out


def run_session(
    settings: Any, model: Any, session: Sequence[Clip], rng: np.random.Generator, progress: Callable | None = None
) -> tuple[list[list[dict[str, Any]]], float]:
    """Play a session through one pipeline, 1–3 s of background between clips; each clip's utterance events.

    An utterance belongs to the clip it overlaps most. Returns the per-clip
    events and the audio seconds played.
    """
    bounds: list[tuple[float, float]] = []
    captured: list[tuple[float, float, dict[str, Any]]] = []
    pipe = build_pipeline(settings, model, [], lambda summary, payload: captured.append(
        (summary.start_s, summary.end_s, payload)))
    block = max(1, settings.source.block_ms * SAMPLE_RATE // 1000)
    pending = np.zeros(0)
    t = 0
    for clip in session:
        if progress is not None:
            progress()
        x = load_mono_16k(clip.path)
        gap = int(rng.uniform(*GAP_S) * SAMPLE_RATE)
        sig = np.concatenate([rng.normal(0.0, pad_level(x), gap), x])
        bounds.append(((t + gap) / SAMPLE_RATE, (t + len(sig)) / SAMPLE_RATE))
        t += len(sig)
        pending = np.concatenate([pending, sig])
        n = len(pending) // block * block
        for i in range(0, n, block):
            pipe.process(pending[i : i + block])
        pending = pending[n:]
    tail = np.concatenate([pending, rng.normal(0.0, 1e-4, int(PAD_S * SAMPLE_RATE))])
    for i in range(0, len(tail), block):
        pipe.process(tail[i : i + block])
    pipe.finish()
    per_clip: list[list[dict[str, Any]]] = [[] for _ in session]
    starts = np.array([b[0] for b in bounds])
    ends = np.array([b[1] for b in bounds])
    for u0, u1, payload in captured:
        overlap = np.minimum(ends, u1) - np.maximum(starts, u0)
        k = int(np.argmax(overlap))
        if overlap[k] > 0:
            per_clip[k].append(payload)
    return per_clip, (t + len(tail)) / SAMPLE_RATE


def score_sessions(
    settings: Any,
    model: Any,
    clips: Sequence[Clip],
    seed: int = 0,
    skew: tuple[str, float] | None = None,
    progress: Callable[[], None] | None = None,
    draws: int = 1,
) -> dict[str, Any]:
    """``--mode session``: every speaker's clips through one pipeline each, so adaptation evolves as live.

    With ``draws`` > 1 the sessions are played again in new orders (seeds
    ``seed`` .. ``seed + draws - 1``) and every metric pools all of them: which
    clips happen to come first moves a position bucket by several points.
    ``by_draw`` then keeps each order's own UAR and accuracy (pooled and per
    corpus), so a claim made on the pool can say how far single orders spread.
    """
    labels = list(model.labels)
    index = {k: i for i, k in enumerate(labels)}
    y_true: list[int] = []
    y_pred: list[int] = []
    groups: list[str] = []
    positions: list[int] = []
    draw_of: list[int] = []
    misses: list[str] = []
    per_speaker: dict[str, list[int]] = {}
    n_events = 0
    audio_s = 0.0
    t0 = time.process_time()
    first_draw: dict[str, list[Clip]] = {}
    for draw in range(draws):
        rng = np.random.default_rng(seed + draw)
        played = sessions(clips, seed + draw, skew)
        first_draw = first_draw or played
        for speaker, session in played.items():
            per_clip, seconds = run_session(settings, model, session, rng, progress)
            audio_s += seconds
            for position, (clip, events) in enumerate(zip(session, per_clip, strict=True)):
                positions.append(position)
                n_events += len(events)
                probs = stream_probabilities(events, labels)
                pred = -1 if probs is None else int(np.argmax(probs))
                if pred < 0:
                    misses.append(str(clip.path))
                y_true.append(index[clip.label])
                y_pred.append(pred)
                groups.append(speaker)
                draw_of.append(draw)
                per_speaker.setdefault(speaker, []).append(int(pred == y_true[-1]))
    result = metrics(y_true, y_pred, labels)
    result["no_event"] = result.pop("no_window")
    result["no_event_clips"] = misses[:50]
    result["mode"] = "session"
    result["utterance_events"] = n_events
    result["sessions"] = {s: len(v) for s, v in first_draw.items()}
    result["draws"] = draws
    result["skew"] = None if skew is None else {"label": skew[0], "share": skew[1]}
    result["prediction"] = "duration-weighted mean of the clip's utterance events, one pipeline per speaker"
    result["per_speaker_accuracy"] = {s: float(np.mean(v)) for s, v in sorted(per_speaker.items())}
    result.update(per_corpus(y_true, y_pred, groups, labels))
    result["by_position"] = by_position(y_true, y_pred, groups, positions, labels)
    if draws > 1:
        result["by_draw"] = by_draw(y_true, y_pred, groups, draw_of, labels, seed)
    result["cpu_s"] = round(time.process_time() - t0, 3)
    result["audio_s"] = round(audio_s, 3)
    return result


def by_draw(
    y_true: Sequence[int],
    y_pred: Sequence[int],
    speakers: Sequence[str],
    draw_of: Sequence[int],
    labels: Sequence[str],
    seed: int,
) -> dict[str, Any]:
    """Each session order's own metrics (keyed by its seed) and the spread of UAR over the orders."""
    out: dict[str, Any] = {}
    for draw in sorted(set(draw_of)):
        sel = [i for i, d in enumerate(draw_of) if d == draw]
        out[f"seed {seed + draw}"] = subset_metrics(sel, y_true, y_pred, speakers, labels)
    uars = [v["uar"] for v in out.values()]
    return {"orders": out, "uar_sd": float(np.std(uars, ddof=1)), "uar_min": min(uars), "uar_max": max(uars)}


POSITION_BUCKETS = (10, 30, 100)  # where the warm-up table cuts a session: after the 10th, 30th, 100th clip


def by_position(
    y_true: Sequence[int],
    y_pred: Sequence[int],
    speakers: Sequence[str],
    positions: Sequence[int],
    labels: Sequence[str],
) -> dict[str, Any]:
    """Metrics by how many clips the session's pipeline had already heard (``1-10``, ``11-30``, ...).

    Why: the household stage starts from the training statistics and learns the
    household as it listens, so a user asks how long it takes to pay off. A
    bucket pools every session's clips at those positions; ``per_corpus`` keeps
    corpora with different class sets apart.
    """
    starts = (0, *POSITION_BUCKETS)
    ends = (*POSITION_BUCKETS, None)
    out: dict[str, Any] = {}
    for lo, hi in zip(starts, ends, strict=True):
        sel = [i for i, p in enumerate(positions) if p >= lo and (hi is None or p < hi)]
        if sel:
            name = f"{lo + 1}-{hi}" if hi is not None else f"{lo + 1}+"
            out[name] = subset_metrics(sel, y_true, y_pred, speakers, labels)
    return out


def subset_metrics(
    sel: Sequence[int], y_true: Sequence[int], y_pred: Sequence[int], speakers: Sequence[str], labels: Sequence[str]
) -> dict[str, Any]:
    """``n``, ``uar``, ``accuracy`` and ``per_corpus`` of the clips at indices ``sel`` (one bucket or one order)."""
    t, pr, sp = [y_true[i] for i in sel], [y_pred[i] for i in sel], [speakers[i] for i in sel]
    m = metrics(t, pr, labels)
    return {**{k: m[k] for k in ("n", "uar", "accuracy")}, **per_corpus(t, pr, sp, labels)}


def per_corpus(y_true: Sequence[int], y_pred: Sequence[int], speakers: Sequence[str], labels: Sequence[str]) -> dict:
    """``per_corpus`` metrics when speakers are named ``corpus:speaker`` (as ``bench.manifest`` writes them).

    Pooled UAR mixes corpora with different class sets; a per-corpus UAR is what the model card compares.
    """
    corpora = sorted({s.split(":", 1)[0] for s in speakers if ":" in s})
    if not corpora:
        return {}
    out = {}
    for corpus in corpora:
        sel = [i for i, s in enumerate(speakers) if s.split(":", 1)[0] == corpus]
        m = metrics([y_true[i] for i in sel], [y_pred[i] for i in sel], labels)
        out[corpus] = {k: m[k] for k in ("n", "uar", "accuracy", "macro_f1")}
    return {"per_corpus": out}


# -- scoring -------------------------------------------------------------------


def score(
    settings: Any,
    model: Any,
    clips: Sequence[Clip],
    mode: str,
    noise_maker: NoiseMaker | None = None,
    snr_db: float | None = None,
    seed: int = 0,
    progress: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Metrics of one path (``clip`` or ``stream``) over the clips, optionally with noise mixed in."""
    labels = list(model.labels)
    index = {k: i for i, k in enumerate(labels)}
    rng = np.random.default_rng(seed)  # same padding / noise draw for every mode and setting
    y_true: list[int] = []
    y_pred: list[int] = []
    groups: list[str] = []
    misses: list[str] = []
    per_speaker: dict[str, list[int]] = {}
    n_events = 0
    t0 = time.process_time()
    audio_s = 0.0
    for clip in clips:
        if progress is not None:
            progress()
        x = load_mono_16k(clip.path)
        sig = padded(x, rng)[0] if mode == "stream" else x
        if noise_maker is not None and snr_db is not None:  # SNR against the clip's speech, not the padding
            sig = sig + noise.scale_to_snr(x, noise_maker(len(sig), exclude=clip.path), snr_db)
        audio_s += len(sig) / SAMPLE_RATE
        if mode == "stream":
            events, _ = run_stream(settings, model, sig)
            n_events += len(events)
            probs = stream_probabilities(events, labels)
        else:
            probs = clip_probabilities(settings, model, sig)
        pred = -1 if probs is None else int(np.argmax(probs))
        if pred < 0:
            misses.append(str(clip.path))
        y_true.append(index[clip.label])
        y_pred.append(pred)
        groups.append(clip.speaker)
        if clip.speaker:
            per_speaker.setdefault(clip.speaker, []).append(int(pred == y_true[-1]))
    result = metrics(y_true, y_pred, labels)
    unpredicted = result.pop("no_window")
    result["mode"] = mode
    if mode == "stream":
        result["no_event"] = unpredicted
        result["no_event_clips"] = misses[:50]
        result["utterance_events"] = n_events
        result["prediction"] = "duration-weighted mean of utterance-event probabilities"
    else:
        result["no_window"] = unpredicted
        result["no_window_clips"] = misses[:50]
        result["prediction"] = "mean of window probabilities (classify_signal)"
    if per_speaker:
        result["per_speaker_accuracy"] = {s: float(np.mean(v)) for s, v in sorted(per_speaker.items())}
    result.update(per_corpus(y_true, y_pred, groups, labels))
    result["cpu_s"] = round(time.process_time() - t0, 3)
    result["audio_s"] = round(audio_s, 3)
    return result


def _short(r: dict[str, Any]) -> dict[str, Any]:
    keys = ("n", "accuracy", "uar", "macro_f1", "no_event", "no_window")
    return {k: r[k] for k in keys if k in r}


# -- command line ----------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="emotiond eval", description="Score a labelled manifest (path,label[,speaker]).")
    p.add_argument("manifest", type=Path)
    p.add_argument(
        "--mode",
        choices=("clip", "stream", "both", "session"),
        default="clip",
        help="session: each speaker's clips through one long-lived pipeline (adaptation as live)",
    )
    p.add_argument("--skew", help="session mode: LABEL=SHARE, e.g. neutral=0.6, subsamples the other classes")
    p.add_argument(
        "--draws", type=int, default=1, help="session mode: play the sessions in N orders (seeds SEED..) and pool them"
    )
    p.add_argument("--json", type=Path, help="write the full result here")
    p.add_argument("--config", type=Path)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--noise", help="white, pink, babble or a noise audio file")
    p.add_argument("--snr", default="20,10,5,0", help="comma-separated SNRs in dB (with --noise)")
    p.add_argument("--report", type=Path, help="folder for per_class.md, confusion.png, noise.md")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, help="score only the first N usable rows")
    return p


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def side_by_side(results: dict[str, dict[str, Any]]) -> str:
    modes = list(results)
    rows = ["n", "accuracy", "uar", "macro_f1"]
    lines = [f"{'':<10}" + "".join(f"{m:>10}" for m in modes) + ("      gap" if len(modes) == 2 else "")]
    for key in rows:
        vals = [results[m][key] for m in modes]
        line = f"{key:<10}" + "".join(f"{_fmt(v):>10}" for v in vals)
        if len(modes) == 2 and key != "n":
            line += f"{vals[1] - vals[0]:>+9.3f}"
        lines.append(line)
    for m in modes:
        miss = results[m].get("no_event", results[m].get("no_window", 0))
        lines.append(f"{m}: {miss} clip(s) without {'a window' if m == 'clip' else 'an utterance event'}")
    labels = results[modes[0]]["labels"]
    lines.append("per-class recall: " + ", ".join(
        f"{k} " + "/".join(f"{results[m]['per_class'][k]['recall']:.2f}" for m in modes) for k in labels))
    for m in modes:
        if results[m].get("by_position"):
            lines.append(f"{m} UAR by clips heard: " + ", ".join(
                f"{b} {v['uar']:.3f} (n={v['n']})" for b, v in results[m]["by_position"].items()))
        if results[m].get("by_draw"):
            d = results[m]["by_draw"]
            lines.append(f"{m} UAR by session order: " + ", ".join(
                f"{k} {v['uar']:.3f}" for k, v in d["orders"].items()) + f" (sd {d['uar_sd']:.3f})")
    return "\n".join(lines)


def noise_table(result: dict[str, Any]) -> str:
    modes = result["modes"]
    head = "| SNR dB | " + " | ".join(f"{m} UAR denoise on | {m} UAR off | {m} acc on | {m} acc off" for m in modes)
    lines = [head + " |", "|---" * (1 + 4 * len(modes)) + "|"]
    for snr, by in result["by_snr"].items():
        cells = []
        for m in modes:
            on, off = by["denoise_on"][m], by["denoise_off"][m]
            cells += [f"{on['uar']:.3f}", f"{off['uar']:.3f}", f"{on['accuracy']:.3f}", f"{off['accuracy']:.3f}"]
        lines.append(f"| {snr} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


class EvalStop(Exception):
    """A one-line reason ``emotiond eval`` cannot go on, and README's exit code for it."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class EvalJob:
    settings: Any
    model: Any
    clips: list[Clip]
    skipped: dict[str, int]
    modes: list[str]
    skew: tuple[str, float] | None
    denoise: bool


def prepare_job(args: argparse.Namespace) -> EvalJob:
    """Settings, model and clips, checked before any scoring starts."""
    from .assembly import StartupError, frontend_params, load_model
    from .config import ConfigError, load_settings

    try:
        settings = load_settings(args.config, args.overrides)
        model = load_model(settings)
        front = frontend_params(settings, model)
    except (ConfigError, StartupError) as exc:
        raise EvalStop(str(exc), getattr(exc, "exit_code", exitcodes.CONFIG)) from None
    try:
        clips, skipped = load_clips(args.manifest, model.labels)
    except (OSError, ValueError, KeyError) as exc:
        code = exitcodes.NOINPUT if isinstance(exc, FileNotFoundError) else exitcodes.DATAERR
        raise EvalStop(f"{args.manifest}: {exc}", code) from None
    if args.limit:
        clips = clips[: args.limit]
    if not clips:
        known = ", ".join(model.labels)
        raise EvalStop(f"{args.manifest}: no row has a label the model knows ({known})", exitcodes.DATAERR)
    modes = ["clip", "stream"] if args.mode == "both" else [args.mode]
    try:
        skew = parse_skew(args.skew)
    except ValueError as exc:
        raise EvalStop(str(exc), exitcodes.USAGE) from None
    if args.noise and "session" in modes:
        raise EvalStop("--noise is not supported with --mode session", exitcodes.USAGE)
    if getattr(args, "draws", 1) < 1:  # `emotiond calibrate` shares this job and has no --draws
        raise EvalStop(f"--draws {args.draws}: expected 1 or more", exitcodes.USAGE)
    return EvalJob(settings, model, clips, skipped, modes, skew, front.denoise.enabled)


def _score_noise(args: argparse.Namespace, job: EvalJob, tick: Callable[[], None]) -> dict[str, Any]:
    """Every requested SNR, scored with the denoise stage on and off."""
    snrs = [float(s) for s in args.snr.split(",") if s.strip()]
    by_snr: dict[str, Any] = {}
    for snr in snrs:
        key = f"{snr:g}"
        by_snr[key] = {}
        for enabled in (True, False):
            s = with_denoise(job.settings, enabled)
            maker = NoiseMaker(args.noise, [c.path for c in job.clips], seed=args.seed)
            by_snr[key]["denoise_on" if enabled else "denoise_off"] = {
                m: _short(score(s, job.model, job.clips, m, maker, snr, seed=args.seed, progress=tick))
                for m in job.modes
            }
        print(f"noise {args.noise} at {key} dB: " + ", ".join(
            f"{m} UAR {by_snr[key]['denoise_on'][m]['uar']:.3f} (denoise on) / "
            f"{by_snr[key]['denoise_off'][m]['uar']:.3f} (off)" for m in job.modes), file=sys.stderr)
    return {"kind": args.noise, "snr_db": snrs, "modes": job.modes, "snr_definition": noise.SNR_DEFINITION,
            "by_snr": by_snr}


def _score_all(args: argparse.Namespace, job: EvalJob, out: dict[str, Any]) -> dict[str, Any]:
    """Every mode (and noise level) over the clips, behind a progress bar on a terminal; fills ``out``."""
    from rich.progress import Progress

    n_noise = 2 * len([s for s in args.snr.split(",") if s.strip()]) if args.noise else 0
    bar = Progress(transient=True, disable=not sys.stderr.isatty(), console=_stderr_console())
    passes = len(job.modes) - ("session" in job.modes) + ("session" in job.modes) * args.draws
    task = bar.add_task("scoring clips", total=len(job.clips) * passes * (1 + n_noise))
    tick = lambda: bar.advance(task)  # noqa: E731
    try:
        bar.start()
        results = {
            m: score_sessions(job.settings, job.model, job.clips, args.seed, job.skew, tick, args.draws)
            if m == "session"
            else score(job.settings, job.model, job.clips, m, seed=args.seed, progress=tick)
            for m in job.modes
        }
        for r in results.values():
            r["skipped"] = out["skipped"]
        out["results"] = results
        if len(job.modes) == 2:
            out["gap_uar"] = results["stream"]["uar"] - results["clip"]["uar"]
            out["gap_accuracy"] = results["stream"]["accuracy"] - results["clip"]["accuracy"]
        if args.noise:
            out["noise"] = _score_noise(args, job, tick)
    except AudioInputError as exc:
        raise EvalStop(str(exc), exc.exit_code) from None
    finally:
        bar.stop()
    return results


def _write_report(report: Path, out: dict[str, Any], results: dict[str, Any]) -> None:
    report.mkdir(parents=True, exist_ok=True)
    for m, r in results.items():
        (report / f"per_class_{m}.md").write_text(per_class_table(r))
        try:
            from ..models.evaluate import plot_confusion

            plot_confusion(r, report / f"confusion_{m}.png", f"{m}: UAR {r['uar']:.3f}, n={r['n']}")
        except ImportError:
            pass
    if "noise" in out:
        (report / "noise.md").write_text(noise_table(out["noise"]))


def eval_main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        job = prepare_job(args)
        model = job.model
        out: dict[str, Any] = {
            "manifest": str(args.manifest),
            "model": str(model.path),
            "model_name": model.info.name,
            "model_version": model.info.version,
            "labels": list(model.labels),
            "skipped": {"n": sum(job.skipped.values()), "labels": job.skipped},
            "denoise": job.denoise,
        }
        results = _score_all(args, job, out)
    except EvalStop as exc:
        print(f"emotiond eval: {exc}", file=sys.stderr)
        return exc.exit_code
    out["n"] = len(job.clips)
    print(f"model {model.info.name} {model.info.version}: {len(job.clips)} clips, "
          f"{out['skipped']['n']} row(s) skipped (labels not in the model)")
    print(side_by_side(results))
    if "noise" in out:
        print(noise_table(out["noise"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    report = args.report or (args.json.parent if args.json else None)  # PNG and tables next to the JSON
    if report:
        _write_report(report, out, results)
    return exitcodes.OK
