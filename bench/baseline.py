"""The seed-style baseline, run as its own process by ``python -m bench``.

What the project's seed scripts did live: keep the last second of audio and,
at every 250 ms hop, recompute features over the whole second with librosa,
optionally run ``noisereduce.reduce_noise`` on it first, and call Keras
``model.predict`` on the window, whether anyone speaks or not. The model has
the shipped model's architecture (``models/training/model.py``; random
weights: speed does not depend on them).

Sends ``READY=1`` to ``NOTIFY_SOCKET`` once it could classify its first window
(imports done, model built, librosa and Keras warmed up), then processes the
audio as fast as it can and writes timings as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time

T_IMPORT0 = time.perf_counter()


def notify(msg: str) -> None:
    path = os.environ.get("NOTIFY_SOCKET")
    if path:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(msg.encode(), path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--audio", required=True)
    p.add_argument("--json", required=True)
    p.add_argument("--labels", type=int, default=7)
    p.add_argument("--features", choices=("logmel", "mfcc"), default="logmel")
    p.add_argument("--no-denoise", action="store_true")
    p.add_argument("--max-windows", type=int, default=0)
    args = p.parse_args(argv)

    import numpy as np
    import soundfile as sf

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import librosa
    import tensorflow as tf
    from emotiond.models.training.model import build_model

    denoise = None
    if not args.no_denoise:
        try:
            import noisereduce

            denoise = noisereduce.reduce_noise
        except ImportError:
            denoise = None
    t_imported = time.perf_counter()
    model = build_model(100, 40, args.labels)
    params = int(model.count_params())
    sr, win, hop = 16_000, 16_000, 4_000

    def features(y: np.ndarray) -> np.ndarray:
        if args.features == "mfcc":
            mfcc = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=38, n_fft=512, hop_length=160, win_length=400)
            zcr = librosa.feature.zero_crossing_rate(y, frame_length=400, hop_length=160)
            rms = librosa.feature.rms(y=y, frame_length=400, hop_length=160)
            f = np.vstack([mfcc, zcr, rms]).T
        else:
            mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=512, hop_length=160, win_length=400,
                                                 n_mels=40, fmin=50, fmax=7600)
            f = np.log(mel + 1e-10).T
        f = f[:100]
        return (f - f.mean(axis=0, keepdims=True)).astype(np.float32)

    warm = np.random.default_rng(0).normal(0, 0.01, win)
    if denoise is not None:
        denoise(y=warm, sr=sr)
    model.predict(features(warm)[None], verbose=0)
    t_ready = time.perf_counter()
    notify("READY=1")

    y, rate = sf.read(args.audio, dtype="float64")
    if y.ndim == 2:
        y = y.mean(axis=1)
    assert rate == sr, "bench audio is written at 16 kHz"
    lat, t_dn, t_feat, t_pred = [], 0.0, 0.0, 0.0
    cpu0 = time.process_time()
    n = 0
    for end in range(win, len(y) + 1, hop):
        t0 = time.perf_counter()
        w = y[end - win : end]
        if denoise is not None:
            w = denoise(y=w, sr=sr)
        t1 = time.perf_counter()
        x = features(w)
        t2 = time.perf_counter()
        model.predict(x[None], verbose=0)
        t3 = time.perf_counter()
        t_dn, t_feat, t_pred = t_dn + t1 - t0, t_feat + t2 - t1, t_pred + t3 - t2
        lat.append(t3 - t0)
        n += 1
        if args.max_windows and n >= args.max_windows:
            break
    cpu = time.process_time() - cpu0
    audio_s = (win + (n - 1) * hop) / sr if n else 0.0
    out = {
        "windows": n,
        "audio_s": audio_s,
        "cpu_s": cpu,
        "cpu_per_audio_s": cpu / audio_s if audio_s else None,
        "window_latency_s": {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
                             "mean": float(np.mean(lat))},
        "split_s_per_window": {"denoise": t_dn / n, "features": t_feat / n, "predict": t_pred / n},
        "import_s": t_imported - T_IMPORT0,
        "ready_in_process_s": t_ready - T_IMPORT0,
        "model_params": params,
        "features": args.features,
        "denoise": denoise is not None,
        "versions": {"tensorflow": tf.__version__, "librosa": librosa.__version__},
    }
    with open(args.json, "w") as fh:
        json.dump(out, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
