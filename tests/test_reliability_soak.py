"""Soak (CI version): ten minutes of looped audio through the whole daemon, publishing to Mosquitto.

``python -m bench.soak --hours 6`` is the full run (docs/reliability.md). It runs in
its own process, so threads and fds left over by other tests cannot blur the figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_ten_minutes_of_audio_no_growth(broker, model_path: Path, tmp_path: Path, have_espeak) -> None:
    out = tmp_path / "soak.json"
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--minutes", "10", "--sample-min", "1", "--warmup-min", "2",
         "--host", broker.host, "--port", str(broker.port), "--model", str(model_path), "--json", str(out)],
        capture_output=True, timeout=120, cwd=Path(__file__).resolve().parents[1],
    )
    took = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()[-3000:]
    r = json.loads(out.read_text())
    assert took < 60, f"the CI soak must stay under 60 s; took {took:.1f} s"
    assert r["problems"] == []
    assert r["rss_growth_mb"] <= 5.0
    assert len(set(r["threads"])) == 1 and r["fd_growth"] <= 0
    assert len(r["samples"]) >= 10  # every simulated minute, plus the end
    assert r["utterances"] > 50 and r["model_failures"] == 0
    assert r["sink"] == "mqtt" and r["mqtt"]["published"] > r["utterances"] and r["mqtt"]["dropped_events"] == 0
    assert b"Traceback" not in proc.stderr
