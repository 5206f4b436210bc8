"""Soak test: hours of synthetic audio through the whole daemon in one process.

    python -m bench.soak --hours 6            # the documented full run
    python -m bench.soak --minutes 10 --json out.json

About two minutes of varied audio (espeak-ng sentences in several voices,
rates and pitches, separated by silences over pink/white noise, plus a few
noise-only stretches) is generated once and looped. A real
:class:`emotiond.daemon.service.Daemon` runs over it as fast as the CPU
allows (``--fast``), with events published to a real Mosquitto (a private one
is started when the ``mosquitto`` binary exists, or ``--host/--port`` names
one) or, without a broker, to the stdout sink writing to ``/dev/null``.

Every simulated ``--sample-min`` minutes (default 5) the process's resident set
(``VmRSS`` in /proc/self/status), thread count and open file descriptors are
sampled. After the warm-up (the first ``--warmup-min`` simulated minutes, by
default 15 or a fifth of the run, whichever is smaller) the report gives the RSS
growth (must be ≤ 5 MB), whether the thread count stayed constant and whether
the fd count grew. Exit status 0 when every invariant holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench import audio

SR = 16_000
RSS_LIMIT_MB = 5.0

SENTENCES = [
    *audio.SENTENCES,
    "Get out of my room right now!",
    "Oh no, I think I left the keys at the office.",
    "What a wonderful surprise, thank you so much.",
    "The weather report says it will rain all week.",
]
VOICES = [("en-us", 50, 160), ("en-gb", 70, 140), ("en-us", 30, 190), ("en-gb", 45, 120), ("en-us", 85, 175)]


def synth_recording(seconds: float, seed: int = 0) -> np.ndarray:
    """``seconds`` of 16 kHz audio: sentences separated by 1.5–4 s gaps, over a noise bed.

    Deterministic for a given seed (espeak-ng is deterministic). Without espeak-ng
    the speech parts are replaced by amplitude-modulated harmonic tones (the VAD
    still finds them; the emotions are meaningless but the pipeline does the same work).
    """
    rng = np.random.default_rng(seed)
    n_total = int(seconds * SR)
    parts: list[np.ndarray] = [np.zeros(int(1.5 * SR))]
    length = len(parts[0])
    cache: dict[tuple[int, int], np.ndarray] = {}
    i = 0
    while length < n_total:
        s, v = i % len(SENTENCES), (i * 7 + 3) % len(VOICES)
        if (s, v) not in cache:
            voice, pitch, rate = VOICES[v]
            if audio.have_espeak():
                speech = audio.espeak(SENTENCES[s], voice, pitch, rate, gain=1.0)
            else:
                t = np.arange(int(2.2 * SR)) / SR
                f0 = 110 + 20 * v
                envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)
                speech = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8)) * envelope
            cache[(s, v)] = speech / (np.max(np.abs(speech)) + 1e-9) * rng.uniform(0.25, 0.6)
        parts.append(cache[(s, v)])
        gap = np.zeros(int(rng.uniform(1.5, 4.0) * SR))
        if i % 5 == 4:  # now and then a loud noise-only stretch (a door, a fan)
            burst = int(0.6 * SR)
            gap[: burst] += rng.normal(0, 0.05, burst) * np.hanning(burst)
        parts.append(gap)
        length += len(parts[-2]) + len(gap)
        i += 1
    out = np.concatenate(parts)[:n_total]
    out = out + audio.pink(len(out), rng, -55)
    return np.clip(out, -1.0, 1.0)


# ----------------------------------------------------------------------------- process figures


def vm_rss_kb() -> int:
    """Current resident set (not the peak) from /proc/self/status."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


@dataclass
class Sample:
    audio_min: float
    wall_s: float
    rss_kb: int
    threads: int
    fds: int
    utterances: int
    windows: int


@dataclass
class SoakResult:
    audio_min: float
    wall_s: float
    speed_x: float
    sink: str
    warmup_min: float
    rss_baseline_mb: float
    rss_growth_mb: float
    rss_max_mb: float
    threads: list[int]
    fds_baseline: int
    fd_growth: int
    utterances: int
    windows: int
    model_failures: int
    mqtt: dict[str, Any]
    samples: list[Sample] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        out = []
        if self.rss_growth_mb > RSS_LIMIT_MB:
            out.append(f"RSS grew {self.rss_growth_mb:.2f} MB after warm-up (limit {RSS_LIMIT_MB} MB)")
        if len(set(self.threads)) != 1:
            out.append(f"thread count changed after warm-up: {sorted(set(self.threads))}")
        if self.fd_growth > 0:
            out.append(f"{self.fd_growth} more open file descriptors after warm-up")
        if self.mqtt.get("dropped_events"):
            out.append(f"{self.mqtt['dropped_events']} MQTT events dropped")
        return out


class LoopSource:
    """Loops ``samples`` for ``total_s`` seconds of audio, as fast as it is consumed.

    Every ``sample_every_s`` seconds of audio it calls ``on_sample(audio_s)``.
    """

    def __init__(self, samples: np.ndarray, total_s: float, sample_every_s: float, on_sample, block: int = 1600):
        self.samples, self.total = samples, int(total_s * SR)
        self.every, self.on_sample, self.block = int(sample_every_s * SR), on_sample, block
        self.name, self.overruns = "soak-loop", 0

    def open(self) -> None:
        pass

    def blocks(self) -> Iterator[np.ndarray]:
        emitted, pos, next_sample = 0, 0, 0
        n = len(self.samples)
        while emitted < self.total:
            if emitted >= next_sample:
                self.on_sample(emitted / SR)
                next_sample += self.every
            take = min(self.block, self.total - emitted, n - pos)
            yield self.samples[pos : pos + take]
            emitted += take
            pos = (pos + take) % n
        self.on_sample(emitted / SR)

    def close(self) -> None:
        pass


@contextlib.contextmanager
def private_mosquitto() -> Iterator[tuple[str, int] | None]:
    """A throw-away Mosquitto on a free loopback port, or None when it is not installed."""
    exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
    if exe is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="soak-mosquitto-") as d, socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        conf = Path(d) / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                        + ("user root\n" if os.geteuid() == 0 else ""))
        proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 5
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("mosquitto did not start") from None
                    time.sleep(0.05)
            yield ("127.0.0.1", port)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()


def run_soak(
    audio_s: float,
    broker: tuple[str, int] | None,
    sample_every_s: float = 300.0,
    warmup_s: float | None = None,
    loop_s: float = 120.0,
    seed: int = 0,
    model_path: str | None = None,
    progress: bool = False,
) -> SoakResult:
    """The whole daemon over ``audio_s`` seconds of looped audio; figures sampled every ``sample_every_s``."""
    from emotiond.daemon.config import load_settings
    from emotiond.daemon.service import Daemon
    from emotiond.daemon.sinks import StdoutSink

    warmup_s = min(900.0, audio_s / 5) if warmup_s is None else warmup_s
    loop = synth_recording(min(loop_s, audio_s), seed)
    sets = ["stdout.enabled=false", "logging.level=WARNING", "mqtt.health_interval_s=1",
            "mqtt.device_id=soak", "homeassistant.discovery=true"]
    if model_path:
        sets.append(f"model.path={model_path}")
    if broker is None:
        sets.append("mqtt.enabled=false")
    else:
        sets += [f"mqtt.host={broker[0]}", f"mqtt.port={broker[1]}", "mqtt.buffer_size=100000"]
    settings = load_settings(None, sets, environ={})
    samples: list[Sample] = []
    t0 = time.monotonic()
    daemon: Daemon | None = None

    def on_sample(at_s: float) -> None:
        stats = daemon.pipeline.stats if daemon is not None and daemon.pipeline is not None else None
        samples.append(Sample(round(at_s / 60, 2), round(time.monotonic() - t0, 2), vm_rss_kb(), thread_count(),
                              fd_count(), stats.utterances if stats else 0, stats.windows if stats else 0))
        if progress:
            s = samples[-1]
            print(f"  {s.audio_min:7.1f} min audio  {s.wall_s:7.1f} s  RSS {s.rss_kb / 1024:6.1f} MB  "
                  f"threads {s.threads}  fds {s.fds}  utterances {s.utterances}", file=sys.stderr, flush=True)

    devnull = None
    if broker is None:  # events still go through a real sink: stdout into /dev/null
        devnull = open(os.devnull, "w")  # noqa: SIM115 - closed below
    daemon = Daemon(settings, source=LoopSource(loop, audio_s, sample_every_s, on_sample),
                    sinks=None if devnull is None else [StdoutSink(devnull)])
    daemon.start()
    if broker is not None:
        from emotiond.daemon.mqtt_sink import MqttSink

        mqtt = next(s for s in daemon.sinks if isinstance(s, MqttSink))
        deadline = time.monotonic() + 10
        while not mqtt.stats()["connected"] and time.monotonic() < deadline:
            time.sleep(0.05)
    else:
        mqtt = None
    mqtt_stats: dict[str, Any] = {}
    real_shutdown = daemon.shutdown

    def shutdown() -> None:  # take the sink figures before close() tears the client down
        nonlocal mqtt_stats
        if mqtt is not None:
            # audio runs far faster than real time here: let the last events' acknowledgements
            # arrive (as close() would) before counting what was published
            mqtt.drain(10.0)
        mqtt_stats = daemon.sinks.stats()
        real_shutdown()

    daemon.shutdown = shutdown  # type: ignore[method-assign]
    try:
        daemon.run()
    finally:
        if devnull is not None:
            devnull.close()
    wall = time.monotonic() - t0
    after = [s for s in samples if s.audio_min * 60 >= warmup_s] or samples[-1:]
    base = after[0]
    stats = daemon.pipeline.stats
    return SoakResult(
        audio_min=round(audio_s / 60, 2), wall_s=round(wall, 1), speed_x=round(audio_s / wall, 1),
        sink="mqtt" if broker else "stdout>/dev/null", warmup_min=round(warmup_s / 60, 2),
        rss_baseline_mb=round(base.rss_kb / 1024, 2),
        rss_growth_mb=round((max(s.rss_kb for s in after) - base.rss_kb) / 1024, 2),
        rss_max_mb=round(max(s.rss_kb for s in samples) / 1024, 2),
        threads=[s.threads for s in after], fds_baseline=base.fds, fd_growth=max(s.fds for s in after) - base.fds,
        utterances=stats.utterances, windows=stats.windows, model_failures=stats.model_failures,
        mqtt=mqtt_stats, samples=samples,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    length = p.add_mutually_exclusive_group()
    length.add_argument("--hours", type=float, help="hours of audio (the full soak: --hours 6)")
    length.add_argument("--minutes", type=float, help="minutes of audio (default 10)")
    p.add_argument("--sample-min", type=float, default=5.0, help="sample every N minutes of audio")
    p.add_argument("--warmup-min", type=float, help="ignore growth before this (default min(15, run/5))")
    p.add_argument("--host", help="publish to this broker instead of a private Mosquitto")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--no-broker", action="store_true", help="stdout sink to /dev/null instead of MQTT")
    p.add_argument("--model", help="model path (default: the bundled model)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="write the result here")
    args = p.parse_args(argv)
    audio_s = args.hours * 3600 if args.hours else (args.minutes or 10.0) * 60
    warmup_s = args.warmup_min * 60 if args.warmup_min is not None else None
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        if args.no_broker:
            broker = None
        elif args.host:
            broker = (args.host, args.port)
        else:
            broker = stack.enter_context(private_mosquitto())
            if broker is None:
                print("mosquitto not installed: using the stdout sink (to /dev/null)", file=sys.stderr)
        print(f"soak: {audio_s / 60:.0f} min of audio, sampling every {args.sample_min:g} min", file=sys.stderr)
        result = run_soak(audio_s, broker, args.sample_min * 60, warmup_s, seed=args.seed, model_path=args.model,
                          progress=True)
    took = time.monotonic() - started
    print(f"soak: {result.audio_min:.0f} min of audio in {took:.1f} s ({result.speed_x:g}x real time), "
          f"sink {result.sink}: {result.utterances} utterances, {result.windows} windows, "
          f"MQTT {result.mqtt or '-'}")
    print(f"RSS {result.rss_baseline_mb:.1f} MB after {result.warmup_min:g} min warm-up, growth "
          f"{result.rss_growth_mb:+.2f} MB (limit {RSS_LIMIT_MB:g}), max {result.rss_max_mb:.1f} MB; "
          f"threads {sorted(set(result.threads))}; fds {result.fds_baseline} (growth {result.fd_growth:+d})")
    if args.json:
        out = {**asdict(result), "took_s": round(took, 1), "problems": result.problems}
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    for problem in result.problems:
        print(f"FAIL: {problem}")
    print("soak: OK" if not result.problems else "soak: FAILED")
    return 0 if not result.problems else 1


if __name__ == "__main__":
    sys.exit(main())
