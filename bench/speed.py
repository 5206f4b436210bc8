"""``python -m bench``: speed and memory of the daemon's pipeline next to the seed-style way, in one run.

Measured on the same audio (espeak-ng speech scenes generated at run time, or
clips from ``--data``/``EMOTIOND_DATA``):

* in process: the full ``Pipeline`` (as the daemon wires it, stdout/MQTT sinks
  replaced by a capturing sink) — CPU seconds per audio second
  (``time.process_time``), per-block latency p50/p99, ``Pipeline.stats`` per
  stage, and a finer VAD / framing+FFT / denoise / log-mel / windowing split
  from timing wrappers put on *this bench's* frontend instance only;
* a fresh daemon process (``emotiond run --input X --fast --set mqtt.enabled=false``):
  peak RSS (``os.wait4`` rusage of that child), CPU, and the time from spawn
  to ``READY=1`` on a ``NOTIFY_SOCKET`` datagram socket owned by the bench;
* the seed-style baseline (``bench/baseline.py``) in its own process: the same
  numbers, and ratios baseline / ours;
* each TFLite runtime that imports, in its own process: import time and
  ``invoke`` time per window;
* conversation replay (``bench/replay.py``): event latency after the VAD
  closes a segment, and through a real Mosquitto when installed;
* a cProfile summary of the in-process pipeline.

Writes ``bench/results.json`` (or ``--out``) and prints a markdown table
(``--markdown FILE`` also writes it). ``--quick`` is the CI variant: shorter
audio, one pass, no baseline, no TensorFlow runtime.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import os
import platform
import pstats
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import audio

ROOT = Path(__file__).resolve().parent.parent
RUNTIMES = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter", "tensorflow.lite")
TARGETS = {
    "cpu_per_audio_s": 0.005,
    "baseline_cpu_ratio": 50.0,
    "block_p99_s": 0.005,
    "event_latency_p95_s": 0.150,
    "rss_mb": 80.0,
    "baseline_rss_ratio": 10.0,
    "ready_s": 1.5,
}


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


# -- machine -------------------------------------------------------------------


def machine() -> dict[str, Any]:
    import importlib.metadata as md

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for pkg in ("numpy", "ai-edge-litert", "webrtcvad", "webrtcvad-wheels", "soxr", "paho-mqtt", "tensorflow-cpu",
                "librosa", "noisereduce"):
        with contextlib.suppress(md.PackageNotFoundError):
            versions[pkg] = md.version(pkg)
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "dsp", "daemon", "models/runtime.py"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        commit = head + (" (+ uncommitted changes in dsp/daemon/models)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "commit": commit,
        "cpu": cpu,
        "cores": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "loadavg_start": list(os.getloadavg()),
    }


# -- child processes -----------------------------------------------------------


class NotifySocket:
    """A Unix datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, folder: Path) -> None:
        self.path = str(folder / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)

    def wait_ready(self, t0: float, timeout: float, clock: Callable[[], float] = time.perf_counter) -> float | None:
        """``clock() - t0`` when the first datagram containing READY=1 arrives (None on timeout)."""
        deadline = clock() + timeout
        while True:
            left = deadline - clock()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                msg = self.sock.recv(4096).decode(errors="replace")
            except TimeoutError:
                return None
            if "READY=1" in msg.split("\n"):
                return clock() - t0

    def close(self) -> None:
        self.sock.close()
        Path(self.path).unlink(missing_ok=True)


def run_child(cmd: list[str], folder: Path, timeout: float = 600) -> dict[str, Any]:
    """Run ``cmd`` under ``bench.launch`` with NOTIFY_SOCKET: time to READY=1, its own peak RSS and CPU."""
    ns = NotifySocket(folder)
    env = {**os.environ, "NOTIFY_SOCKET": ns.path, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    env.pop("WATCHDOG_USEC", None)
    err = folder / f"stderr-{len(list(folder.glob('stderr-*')))}.txt"
    with err.open("wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "bench.launch", "--", *cmd], env=env,
                                stdout=subprocess.PIPE, stderr=fh, cwd=ROOT)
    try:
        ready_at = ns.wait_ready(0.0, timeout, clock=time.monotonic)
        stdout, _ = proc.communicate(timeout=timeout)
    finally:
        ns.close()
        if proc.returncode is None:
            proc.kill()
            proc.wait()
    lines = [ln for ln in stdout.decode().splitlines() if ln.startswith("{")]
    if not lines:
        return {"ready_s": None, "rss_mb": None, "cpu_s": None, "exit_code": proc.returncode,
                "stderr_tail": err.read_text(errors="replace")[-2000:]}
    out = json.loads(lines[-1])
    t_spawn = out.pop("t_spawn")
    out["ready_s"] = ready_at - t_spawn if ready_at is not None else None
    if out["exit_code"] != 0:
        out["stderr_tail"] = err.read_text(errors="replace")[-2000:]
    return out


def daemon_process(wav: Path, folder: Path, audio_s: float, model_path: str | None) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "emotiond", "run", "--input", str(wav), "--fast", "--set", "mqtt.enabled=false"]
    if model_path:
        cmd += ["--set", f"model.path={model_path}"]
    r = run_child(cmd, folder)
    r["cpu_per_audio_s_incl_startup"] = r["cpu_s"] / audio_s
    r["command"] = " ".join(cmd[1:])
    return r


def baseline_process(wav: Path, folder: Path, labels: int, denoise: bool) -> dict[str, Any]:
    out = folder / "baseline.json"
    cmd = [sys.executable, "-m", "bench.baseline", "--audio", str(wav), "--json", str(out), "--labels", str(labels)]
    if not denoise:
        cmd.append("--no-denoise")
    r = run_child(cmd, folder)
    if out.is_file():
        r.update(json.loads(out.read_text()))
        out.unlink()
    return r


def runtime_process(module: str, model: str) -> dict[str, Any]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}

    def one(mod: str) -> dict[str, Any]:
        res = subprocess.run([sys.executable, "-m", "bench.runtimes", "--module", mod, "--model", model],
                             capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
        lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
        return json.loads(lines[-1]) if lines else {"module": mod, "available": False, "error": res.stderr[-500:]}

    r = one(module)
    if not r["available"] and module == "tensorflow.lite" and "Interpreter" in r.get("error", ""):
        # importlib.import_module("tensorflow.lite") is the package, not the tf.lite API module
        r2 = one("tensorflow.lite.python.interpreter")
        r2["note"] = ("importlib.import_module('tensorflow.lite') has no Interpreter in TF " +
                      str(r2.get("version")) + "; measured tensorflow.lite.python.interpreter")
        r = r2
    return r


# -- in process ----------------------------------------------------------------


def _timed(obj: Any, name: str, acc: dict[str, float], key: str) -> None:
    """Replace ``obj.name`` on this instance only by a wrapper that adds its wall time to ``acc[key]``."""
    fn: Callable = getattr(obj, name)

    def wrapper(*a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            acc[key] += time.perf_counter() - t

    setattr(obj, name, wrapper)


def pipeline_pass(settings: Any, model: Any, signal: np.ndarray, split: bool = False,
                  profile: cProfile.Profile | None = None) -> dict[str, Any]:
    from emotiond.daemon.assembly import build_pipeline
    from emotiond.daemon.evaluate import CaptureSink
    from emotiond.dsp.features import SAMPLE_RATE

    sink = CaptureSink()
    pipe = build_pipeline(settings, model, [sink])
    acc: dict[str, float] = {}
    if split:
        fe = pipe.frontend
        for obj, name, key in ((fe.vad, "push_frames", "vad"), (fe.vad, "flush", "vad"),
                               (fe._audio, "write", "buffering"),
                               (fe.spectrum, "power", "fft_power"), (fe.spectrum, "log_mel", "log_mel"),
                               (fe.denoise, "learn", "denoise_learn"), (fe.denoise, "apply", "denoise_apply"),
                               (fe.denoise, "end_segment", "denoise_apply")):
            acc.setdefault(key, 0.0)
            _timed(obj, name, acc, key)
    block = settings.source.block_ms * SAMPLE_RATE // 1000
    lat, lat_cpu = [], []
    if profile is not None:
        profile.enable()
    cpu0 = time.process_time()
    for i in range(0, len(signal), block):
        t, c = time.perf_counter(), time.thread_time()
        pipe.process(signal[i : i + block])
        lat_cpu.append(time.thread_time() - c)
        lat.append(time.perf_counter() - t)
    pipe.finish()
    cpu = time.process_time() - cpu0
    if profile is not None:
        profile.disable()
    audio_s = len(signal) / SAMPLE_RATE
    st = pipe.stats
    out = {
        "audio_s": audio_s,
        "cpu_s": cpu,
        "cpu_per_audio_s": cpu / audio_s,
        "block_ms": settings.source.block_ms,
        "block_latency_s": {"p50": pct(lat, 50), "p99": pct(lat, 99), "max": max(lat)},
        "block_cpu_s": {"p50": pct(lat_cpu, 50), "p99": pct(lat_cpu, 99), "max": max(lat_cpu)},
        "windows": st.windows,
        "utterances": st.utterances,
        "stages_s": {"frontend": st.frontend_s, "model": st.model_s, "smoother": st.smoother_s, "sinks": st.sinks_s},
        "model_s_per_window": st.model_s / st.windows if st.windows else None,
    }
    if split:
        acc["frontend_other"] = st.frontend_s - sum(acc.values())
        out["frontend_split_s"] = acc
    return out


def profile_summary(prof: cProfile.Profile, top: int = 12) -> list[dict[str, Any]]:
    st = pstats.Stats(prof)
    rows = []
    for (file, line, func), (_cc, nc, tt, ct, _) in st.stats.items():  # type: ignore[attr-defined]
        rows.append({"function": f"{Path(file).name}:{line}({func})", "calls": nc, "tottime_s": tt, "cumtime_s": ct})
    rows.sort(key=lambda r: -r["tottime_s"])
    total = sum(r["tottime_s"] for r in rows)
    for r in rows:
        r["share"] = r["tottime_s"] / total if total else 0.0
    return rows[:top]


# -- report --------------------------------------------------------------------


def verdicts(res: dict[str, Any]) -> dict[str, Any]:
    ours, base, daemon, rep = res["pipeline"], res.get("baseline"), res["daemon_process"], res["replay"]
    v: dict[str, Any] = {}

    def check(name: str, value: float | None, target: float, higher_is_better: bool = False) -> None:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            v[name] = {"value": None, "target": target, "met": None}
            return
        met = value >= target if higher_is_better else value <= target
        v[name] = {"value": value, "target": target, "met": bool(met)}

    check("cpu_per_audio_s", ours["cpu_per_audio_s"], TARGETS["cpu_per_audio_s"])
    check("block_p99_s", ours["block_latency_s"]["p99"], TARGETS["block_p99_s"])
    check("event_latency_p95_s", rep["event_latency_s"]["p95"], TARGETS["event_latency_p95_s"])
    check("rss_mb", daemon["rss_mb"], TARGETS["rss_mb"])
    check("ready_s", daemon["ready_s"], TARGETS["ready_s"])
    if base and base.get("cpu_per_audio_s"):
        check("baseline_cpu_ratio", base["cpu_per_audio_s"] / ours["cpu_per_audio_s"], TARGETS["baseline_cpu_ratio"],
              True)
        check("baseline_rss_ratio", base["rss_mb"] / daemon["rss_mb"], TARGETS["baseline_rss_ratio"], True)
    return v


def markdown(res: dict[str, Any]) -> str:
    ours, daemon, base, rep = res["pipeline"], res["daemon_process"], res.get("baseline"), res["replay"]
    m = res["machine"]

    def f(x: Any, scale: float = 1.0, digits: int = 2) -> str:
        return "—" if x is None else f"{x * scale:.{digits}f}"

    def ratio(a: Any, b: Any) -> str:
        if not a or not b:
            return "—"
        return f"{a / b:.1f}×" if a / b < 20 else f"{a / b:.0f}×"

    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, numpy {m['versions'].get('numpy')}, "
        f"load average at start {m['loadavg_start'][0]:.2f}, commit {m.get('commit')}. "
        f"Audio: {res['audio']['description']}, {res['audio']['seconds']:.1f} s.",
        "",
        "| measure | emotiond | seed-style baseline | baseline / ours | target |",
        "|---|---|---|---|---|",
        f"| CPU s per audio s (in process) | {f(ours['cpu_per_audio_s'], 1, 4)} | "
        f"{f(base and base.get('cpu_per_audio_s'), 1, 3)} | "
        f"{ratio(base and base.get('cpu_per_audio_s'), ours['cpu_per_audio_s'])} | ≤ 0.005, ≥ 50× |",
        f"| CPU s per audio s (fresh process, incl. start-up) | {f(daemon['cpu_per_audio_s_incl_startup'], 1, 3)} | "
        f"{f(base and base['cpu_s'] / base['audio_s'] if base and base.get('audio_s') else None, 1, 3)} | | |",
        f"| latency per block / window, p50 (ms) | {f(ours['block_latency_s']['p50'], 1e3)} | "
        f"{f(base and base['window_latency_s']['p50'], 1e3, 1)} | | |",
        f"| latency per block / window, p99 (ms) | {f(ours['block_latency_s']['p99'], 1e3)} | "
        f"{f(base and base['window_latency_s']['p99'], 1e3, 1)} | "
        f"{ratio(base and base['window_latency_s']['p99'], ours['block_latency_s']['p99'])} | ≤ 5 ms |",
        f"| CPU time per block, p50 / p99 (ms; immune to preemption) | "
        f"{f(ours.get('block_cpu_s', {}).get('p50'), 1e3)} / {f(ours.get('block_cpu_s', {}).get('p99'), 1e3)} | | | |",
        f"| peak RSS (MB) | {f(daemon['rss_mb'], 1, 1)} | {f(base and base['rss_mb'], 1, 1)} | "
        f"{ratio(base and base['rss_mb'], daemon['rss_mb'])} | ≤ 80 MB, ≥ 10× |",
        f"| start → READY (s) | {f(daemon['ready_s'])} | {f(base and base['ready_s'])} | "
        f"{ratio(base and base['ready_s'], daemon['ready_s'])} | ≤ 1.5 s |",
        f"| utterance event after VAD close, p50 / p95 (ms) | {f(rep['event_latency_s']['p50'], 1e3)} / "
        f"{f(rep['event_latency_s']['p95'], 1e3)} | | | ≤ 150 ms |",
    ]
    mq = rep.get("mqtt_latency_s")
    if isinstance(mq, dict):
        lines.append(f"| … to an MQTT subscriber via Mosquitto, p50 / p95 (ms) | {f(mq['p50'], 1e3)} / "
                     f"{f(mq['p95'], 1e3)} | | | |")
    lines += ["", "Stage cost in process (wall ms per audio s, so it includes waiting for a shared CPU):", "",
              "| stage | ms per audio s |", "|---|---|"]
    a = ours["audio_s"]
    for k, s in ours["stages_s"].items():
        lines.append(f"| {k} | {s / a * 1e3:.3f} |")
    for k, s in ours.get("frontend_split_s", {}).items():
        lines.append(f"| frontend: {k} | {s / a * 1e3:.3f} |")
    if res.get("runtimes"):
        lines += ["", "| TFLite runtime | import (s) | invoke p50 (µs) | invoke p99 (µs) |", "|---|---|---|---|"]
        for r in res["runtimes"]:
            if r.get("available"):
                lines.append(f"| {r['module']} {r.get('version') or ''} | {r['import_s']:.3f} | "
                             f"{r['invoke_s']['p50'] * 1e6:.0f} | {r['invoke_s']['p99'] * 1e6:.0f} |")
            else:
                lines.append(f"| {r['module']} | not importable | | |")
    return "\n".join(lines) + "\n"


# -- main ----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description="emotiond speed and memory, next to the seeds' way")
    p.add_argument("--quick", action="store_true", help="CI variant: short audio, one pass, no baseline/TensorFlow")
    p.add_argument("--data", type=Path, default=audio.default_data(), help="manifest CSV or data folder")
    p.add_argument("--clips", type=int, default=None, help="clips in the bench audio")
    p.add_argument("--passes", type=int, default=None, help="in-process passes (median reported)")
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--baseline-no-denoise", action="store_true", help="baseline without noisereduce per hop")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results.json")
    p.add_argument("--markdown", type=Path, help="also write the markdown table here")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--live", action="store_true",
                   help="paced mode only: the daemon process on recordings played in real time (see bench/live.py); "
                        "adds a 'live' section to --out, keeping the fast-mode figures already there")
    p.add_argument("--live-seconds", type=float, default=120.0, help="length of each live recording (s)")
    p.add_argument("--live-runs", type=int, default=3, help="live runs per recording (median reported)")
    args = p.parse_args(argv)

    import soundfile as sf
    from emotiond.daemon.assembly import load_model
    from emotiond.daemon.config import load_settings

    t_start = time.perf_counter()
    quick = args.quick
    n_clips = args.clips or (4 if quick else 16)
    passes = args.passes or (1 if quick else 3)
    settings = load_settings(None, ["mqtt.enabled=false", *args.overrides])
    model = load_model(settings)
    res: dict[str, Any] = {"machine": machine(), "quick": quick, "targets": TARGETS,
                           "model": {"path": str(model.path), "name": model.info.name, "version": model.info.version,
                                     "runtime": model.runtime}}
    rng = np.random.default_rng(args.seed)
    if args.data:
        from .replay import load_items

        items, desc = load_items(args.data, n_clips, args.seed, model)
    else:
        items, desc = audio.synthetic_items(n_clips, args.seed), "synthetic espeak-ng speech, 1–4 s gaps, pink bed"
    signal, spans = audio.scene(items, rng)
    res["audio"] = {"description": desc, "seconds": len(signal) / audio.SR, "clips": len(items),
                    "speech_s": sum(e - s for s, e, _ in spans) / audio.SR}
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if args.live:
        return live_main(args, items, desc, previous)
    print(f"bench: {res['audio']['seconds']:.1f} s of audio ({desc})", file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="emotiond-bench-") as tmp:
        folder = Path(tmp)
        wav = folder / "bench.wav"
        sf.write(str(wav), signal, audio.SR, subtype="PCM_16")
        signal = sf.read(str(wav), dtype="float64")[0]  # exactly what the subprocesses read

        pipeline_pass(settings, model, signal)  # warm-up (imports, allocations)
        runs = [pipeline_pass(settings, model, signal) for _ in range(passes)]
        runs.sort(key=lambda r: r["cpu_per_audio_s"])
        best = runs[len(runs) // 2]
        best["passes_cpu_per_audio_s"] = [r["cpu_per_audio_s"] for r in runs]
        best["frontend_split_s"] = pipeline_pass(settings, model, signal, split=True)["frontend_split_s"]
        res["pipeline"] = best
        print(f"bench: pipeline {best['cpu_per_audio_s']:.5f} CPU s / audio s", file=sys.stderr)

        if not quick:
            prof = cProfile.Profile()
            pipeline_pass(settings, model, signal, profile=prof)
            res["profile_top"] = profile_summary(prof)

        model_arg = next((o.split("=", 1)[1] for o in args.overrides if o.startswith("model.path=")), None)
        res["daemon_process"] = daemon_process(wav, folder, len(signal) / audio.SR, model_arg)
        print(f"bench: daemon process RSS {res['daemon_process']['rss_mb']:.1f} MB, "
              f"ready {res['daemon_process']['ready_s']}", file=sys.stderr)

        from .replay import mosquitto_available, run_replay

        port_cm = None
        if mosquitto_available():
            from emotiond.daemon.demo import private_broker

            port_cm = private_broker()
        if port_cm is not None:
            with port_cm as port:
                res["replay"] = run_replay(signal, spans, settings, model, fast=True, mqtt_port=port)
        else:
            res["replay"] = run_replay(signal, spans, settings, model, fast=True)
        res["replay"].pop("pipeline", None)

        if not quick and not args.no_baseline:
            print("bench: seed-style baseline (TensorFlow + librosa) …", file=sys.stderr)
            res["baseline"] = baseline_process(wav, folder, len(model.labels), not args.baseline_no_denoise)

    res["runtimes"] = [runtime_process(m, str(model.path)) for m in (RUNTIMES[:1] if quick else RUNTIMES)]
    res["verdicts"] = verdicts(res)
    res["machine"]["loadavg_end"] = list(os.getloadavg())
    res["bench_wall_s"] = time.perf_counter() - t_start
    if "live" in previous:  # the paced figures of the last --live run stay beside the new fast ones
        res["live"] = previous["live"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2, default=float) + "\n")
    md = markdown(res)
    if "live" in res:
        from .live import markdown as live_markdown

        md += "\n" + live_markdown(res["live"], res["pipeline"])
    print(md)
    if args.markdown:
        args.markdown.write_text(md)
    return 0


def live_main(args: argparse.Namespace, items: list[Any], desc: str, previous: dict[str, Any]) -> int:
    """``--live``: paced daemon runs; the result goes under ``live`` in ``--out``, beside the fast-mode figures."""
    from .live import live
    from .live import markdown as live_markdown

    seconds = 20.0 if args.quick and args.live_seconds == 120.0 else args.live_seconds
    runs = 1 if args.quick and args.live_runs == 3 else args.live_runs
    print(f"bench live: {runs} × 2 paced runs of {seconds:.0f} s …", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="emotiond-bench-live-") as tmp:
        res = live(items, desc, seconds, runs, args.overrides, Path(tmp), args.seed, log=sys.stderr)
    res["machine"] = machine()
    out = {**previous, "live": res}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, default=float) + "\n")
    md = live_markdown(res, previous.get("pipeline"))
    print(md)
    if args.markdown:
        args.markdown.write_text(md)
    return 0
