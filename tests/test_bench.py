"""The benchmarks run and report sane numbers (quick mode only: CI has 2 shared cores)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _usable(model_path: Path) -> Path | None:
    from emotiond.models.runtime import EmotionModel, ModelError

    try:
        EmotionModel(model_path)
        return model_path
    except ModelError:
        return None


def test_bench_quick(have_espeak: None, model_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    cmd = [sys.executable, "-m", "bench", "--quick", "--out", str(out), "--markdown", str(tmp_path / "table.md")]
    model = _usable(model_path)
    if model is None:
        from tests.fixtures_model import build_tiny_int8_model

        model = build_tiny_int8_model(tmp_path)
    cmd += ["--set", f"model.path={model}"]
    t0 = time.monotonic()
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - t0
    assert res.returncode == 0, res.stderr[-3000:]
    assert elapsed < 60
    r = json.loads(out.read_text())
    for key in ("machine", "audio", "pipeline", "daemon_process", "replay", "runtimes", "verdicts", "targets"):
        assert key in r
    assert r["machine"]["cores"] >= 1 and r["machine"]["python"]
    p = r["pipeline"]
    assert p["audio_s"] > 5 and p["cpu_s"] > 0 and 0 < p["cpu_per_audio_s"] < 1
    assert 0 < p["block_latency_s"]["p50"] <= p["block_latency_s"]["p99"]
    assert p["windows"] > 0 and p["stages_s"]["frontend"] > 0 and p["stages_s"]["model"] > 0
    assert all(v >= 0 for k, v in p["frontend_split_s"].items() if k != "frontend_other")
    d = r["daemon_process"]
    assert d["exit_code"] == 0, d.get("stderr_tail")
    assert d["rss_mb"] > 10 and d["cpu_s"] > 0 and 0 < d["ready_s"] < 30
    rep = r["replay"]
    assert rep["utterance_events"] > 0 and rep["event_latency_s"]["p50"] > 0
    assert 0 <= rep["utterance_recall"] <= 1
    litert = r["runtimes"][0]
    assert litert["module"] == "ai_edge_litert.interpreter"
    if litert["available"]:
        assert litert["invoke_s"]["p50"] > 0 and litert["import_s"] > 0
    assert "| peak RSS (MB) |" in (tmp_path / "table.md").read_text()


def test_replay_scoring() -> None:
    """Recall, false events and latency bookkeeping on a hand-made event list."""
    from emotiond.daemon.evaluate import CaptureSink

    from bench.replay import score

    class Stats:
        def as_dict(self) -> dict:
            return {}

    class Pipe:
        stats = Stats()

    sr = 16_000
    stream = np.zeros(60 * sr)
    spans = [(5 * sr, 8 * sr, "happy"), (20 * sr, 22 * sr, "sad"), (40 * sr, 41 * sr, "sad")]
    ev = lambda s, e, lab: {"start_s": s, "end_s": e, "duration_s": e - s, "t_block": 1.0, "t_event": 1.002,  # noqa: E731
                            "audio_delay_s": 0.3, "probabilities": {"happy": float(lab == "happy"),
                                                                    "sad": float(lab == "sad")}}
    events = [ev(5.1, 7.9, "happy"), ev(20.2, 21.5, "happy"), ev(30, 31, "sad")]
    r = score(stream, spans, events, CaptureSink(), ("happy", "sad"), Pipe(), 0.1, [], False)
    assert r["utterance_recall"] == pytest.approx(2 / 3)
    assert r["false_events"] == 1
    assert r["false_events_per_min_nonspeech"] == pytest.approx(1 / ((60 - 6) / 60))
    assert r["emotion_uar_detected"] == pytest.approx(0.5)  # happy right, sad called happy
    assert r["event_latency_s"]["p50"] == pytest.approx(0.002)


def test_proc_cpu_reads_this_process_and_not_the_dead() -> None:
    import os

    from bench.live import proc_cpu_s

    before = proc_cpu_s(os.getpid())
    x = 0
    for i in range(3_000_000):  # burn a little CPU so the tick counter moves
        x += i
    after = proc_cpu_s(os.getpid())
    assert before is not None and after is not None and after > before >= 0
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # waits for the exit, leaves it unreaped: a zombie
    assert proc_cpu_s(child.pid) is None
    child.wait()


@pytest.mark.slow
def test_bench_live_quick(have_espeak: None, model_path: Path, tmp_path: Path) -> None:
    """``--live`` runs the daemon paced and adds its CPU figures beside the fast ones already in --out."""
    out = tmp_path / "results.json"
    out.write_text(json.dumps({"pipeline": {"cpu_per_audio_s": 0.004}, "machine": {"cores": 2}}))
    model = _usable(model_path)
    if model is None:
        from tests.fixtures_model import build_tiny_int8_model

        model = build_tiny_int8_model(tmp_path)
    cmd = [sys.executable, "-m", "bench", "--live", "--quick", "--live-seconds", "4", "--out", str(out),
           "--markdown", str(tmp_path / "live.md"), "--set", f"model.path={model}"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["pipeline"] == {"cpu_per_audio_s": 0.004}  # the fast-mode figures stay
    live = r["live"]
    assert live["machine"]["python"] and live["runs"] == 1 and live["seconds"] == 4
    for name in ("speech", "silence"):
        run = live[name]["runs"][0]
        assert run["exit_code"] == 0, run.get("stderr_tail")
        assert run["startup_cpu_s"] > 0.05 and run["total_cpu_s"] >= run["startup_cpu_s"]
        assert 2.5 < run["steady_wall_s"] < 30  # paced: about as long as the audio after READY
        assert 0 <= live[name]["cpu_per_audio_s"] < 1
    assert "| live, silence" in (tmp_path / "live.md").read_text()
