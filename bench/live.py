"""``python -m bench --live``: what the daemon costs as it runs, paced in real time like a microphone.

Fast mode (``python -m bench``) pushes audio through the pipeline as fast as it
goes. A live daemon gets one block every ``source.block_ms`` and sleeps in
between, so caches and clocks are cold at every block and each numpy call
costs more: the figure a user pays is the paced one, and it is measured here.

Each run starts a fresh ``emotiond run --input REC.wav --set mqtt.enabled=false``
(no ``--fast``: ``FileSource`` paces the file in real time) with
``NOTIFY_SOCKET`` on a socket the bench owns, and reads the process's CPU time
(utime + stime of all its threads) from ``/proc/PID/stat``:

* start-up: CPU time when ``READY=1`` arrives (imports, model load, first block);
* steady state: CPU time gained from ``READY=1`` to the last sample taken while
  the daemon still ran (sampled every ``SAMPLE_S``), divided by the wall time
  between those two samples, which is audio time because the input is paced.

Two recordings of the same length: speech with pauses (espeak-ng sentences or
``--data`` clips, 1–4 s gaps over a pink bed at −55 dBFS) and near-silence
(the pink bed alone). Several runs of each, alternated; the median is reported.
CPU time is read from ``/proc`` rather than wall time because the machine may
be shared.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import audio

SAMPLE_S = 0.5
TARGETS = {"speech": 0.005, "silence": 0.002}


def proc_cpu_s(pid: int) -> float | None:
    """utime + stime of process ``pid`` (all threads) in seconds; None once it has exited (zombie or gone)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw.rsplit(")", 1)[1].split()  # the command name may contain spaces
    if fields[0] in ("Z", "X"):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def recordings(items: list[audio.Item], seconds: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``seconds`` of speech with pauses (scenes of ``items`` repeated) and as long a near-silence."""
    n = int(seconds * audio.SR)
    parts, have = [], 0
    while have < n:
        sig, _ = audio.scene(items, rng)
        parts.append(sig)
        have += len(sig)
    speech = np.concatenate(parts)[:n]
    return {"speech": speech, "silence": audio.pink(n, rng, -55.0)}


def paced_run(wav: Path, folder: Path, audio_s: float, overrides: list[str], timeout: float) -> dict[str, Any]:
    """One fresh daemon process on ``wav``, paced; start-up and steady-state CPU from ``/proc``."""
    from .speed import NotifySocket

    cmd = [sys.executable, "-m", "emotiond", "run", "--input", str(wav), "--set", "mqtt.enabled=false"]
    for o in overrides:
        cmd += ["--set", o]
    ns = NotifySocket(folder)
    env = {**os.environ, "NOTIFY_SOCKET": ns.path, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("WATCHDOG_USEC", None)
    err = folder / "live-stderr.txt"
    with err.open("wb") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=fh, cwd=Path(__file__).parent.parent)
    t_spawn = time.monotonic()
    try:
        ready = ns.wait_ready(t_spawn, 60, clock=time.monotonic)
        cpu_ready, t_ready = proc_cpu_s(proc.pid), time.monotonic()
        last = (cpu_ready, t_ready)
        deadline = t_spawn + timeout
        done: tuple[int, Any] | None = None
        while done is None:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                done = status, usage
                break
            if time.monotonic() > deadline:
                proc.kill()
            time.sleep(SAMPLE_S)
            cpu, t = proc_cpu_s(proc.pid), time.monotonic()
            if cpu is not None:
                last = (cpu, t)
        status, usage = done
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        ns.close()
        if proc.returncode is None:
            proc.kill()
            proc.wait()
    out: dict[str, Any] = {"exit_code": proc.returncode, "ready_s": ready,
                           "total_cpu_s": usage.ru_utime + usage.ru_stime, "audio_s": audio_s}
    if ready is None or cpu_ready is None or last[0] is None:
        out["stderr_tail"] = err.read_text(errors="replace")[-2000:]
        return out
    steady_cpu, steady_wall = last[0] - cpu_ready, last[1] - t_ready
    out.update({
        "startup_cpu_s": cpu_ready,
        "steady_cpu_s": steady_cpu,
        "steady_wall_s": steady_wall,
        "cpu_per_audio_s": steady_cpu / steady_wall if steady_wall > 0 else None,
        "cpu_per_audio_s_total_minus_startup": (out["total_cpu_s"] - cpu_ready) / audio_s,
    })
    if proc.returncode != 0:
        out["stderr_tail"] = err.read_text(errors="replace")[-2000:]
    return out


def live(items: list[audio.Item], description: str, seconds: float, runs: int, overrides: list[str],
         folder: Path, seed: int = 0, log: Any = None) -> dict[str, Any]:
    """``runs`` paced runs of each recording, alternated; per-recording medians and every run."""
    import soundfile as sf

    recs = recordings(items, seconds, np.random.default_rng(seed))
    wavs = {}
    for name, sig in recs.items():
        wavs[name] = folder / f"live-{name}.wav"
        sf.write(str(wavs[name]), sig, audio.SR, subtype="PCM_16")
    res: dict[str, Any] = {
        "seconds": seconds, "runs": runs, "sample_s": SAMPLE_S, "overrides": overrides,
        "recordings": {"speech": f"{description} (−55 dBFS bed), scenes repeated to length",
                       "silence": "pink noise at −55 dBFS (no speech)"},
        "load_avg_start": list(os.getloadavg()),
    }
    per: dict[str, list[dict[str, Any]]] = {name: [] for name in recs}
    for i in range(runs):
        for name in recs:
            r = paced_run(wavs[name], folder, seconds, overrides, timeout=seconds * 2 + 120)
            per[name].append(r)
            if log:
                print(f"bench live: {name} run {i + 1}/{runs}: {r.get('cpu_per_audio_s')} CPU s / audio s, "
                      f"start-up {r.get('startup_cpu_s')} CPU s", file=log)
    for name, rs in per.items():
        ok = [r for r in rs if r.get("cpu_per_audio_s") is not None and r["exit_code"] == 0]
        res[name] = {
            "cpu_per_audio_s": statistics.median(r["cpu_per_audio_s"] for r in ok) if ok else None,
            "startup_cpu_s": statistics.median(r["startup_cpu_s"] for r in ok) if ok else None,
            "target": TARGETS[name],
            "runs": rs,
        }
    res["load_avg_end"] = list(os.getloadavg())
    return res


def markdown(res: dict[str, Any], fast: dict[str, Any] | None = None) -> str:
    """Fast vs live, side by side."""

    def f(x: Any, digits: int = 4) -> str:
        return "—" if x is None else f"{x:.{digits}f}"

    lines = [
        f"Live (paced in real time, {res['seconds']:.0f} s per recording, median of {res['runs']} runs; "
        f"load average {res['load_avg_start'][0]:.2f} at start):",
        "",
        "| measure | CPU s per audio s | start-up CPU s | target |",
        "|---|---|---|---|",
    ]
    if fast:
        lines.append(f"| fast mode, in process (`python -m bench`) | {f(fast.get('cpu_per_audio_s'))} | | ≤ 0.005 |")
    for name in ("speech", "silence"):
        r = res.get(name) or {}
        lines.append(f"| live, {name} (daemon process, steady state) | {f(r.get('cpu_per_audio_s'))} | "
                     f"{f(r.get('startup_cpu_s'), 2)} | ≤ {r.get('target')} |")
    return "\n".join(lines) + "\n"
