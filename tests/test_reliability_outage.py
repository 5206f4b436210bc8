"""Daemon-level broker outage: ``emotiond run`` on a long recording while Mosquitto goes away.

The sink-level mechanics (in-flight re-send, buffer order) are in tests/test_mqtt_*.py;
this checks the whole process as it runs on the device: a file paced at 4× real
time (``source.speed``), a real broker with persistence, a subscriber with a
persistent session (clean_session False, QoS 1), and the broker stopped for a
while in the middle. The pipeline is deterministic, so a second ``--fast
--stdout`` run of the same file without MQTT is the list of utterances that
must arrive.

``EMOTIOND_LONG_TESTS=1`` also runs the 60 s outage variant (docs/reliability.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf

from bench.soak import synth_recording
from tests.fixtures_broker import Broker, Received, Subscriber
from tests.test_payloads import assert_private, validator

pytestmark = [pytest.mark.broker, pytest.mark.slow]

SR = 16_000
LONG = os.environ.get("EMOTIOND_LONG_TESTS") == "1"
RESULTS = os.environ.get("EMOTIOND_RELIABILITY_RESULTS")  # append measured figures here (docs/reliability.md)


def _record(name: str, **figures: Any) -> None:
    if RESULTS:
        with open(RESULTS, "a") as fh:
            fh.write(json.dumps({"test": name, **figures}) + "\n")


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~64 s of espeak-ng sentences separated by 1.5–4 s of noise (deterministic)."""
    if not _have("espeak-ng"):
        pytest.skip("espeak-ng is not installed")
    path = tmp_path_factory.mktemp("outage") / "long.wav"
    sf.write(str(path), synth_recording(64.0, seed=6), SR, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def long_recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~5 min for the 60 s outage (EMOTIOND_LONG_TESTS=1)."""
    path = tmp_path_factory.mktemp("outage-long") / "long.wav"
    sf.write(str(path), synth_recording(300.0, seed=7), SR, subtype="PCM_16")
    return path


def _have(exe: str) -> bool:
    import shutil

    return shutil.which(exe) is not None


def emotiond_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "emotiond", *args]


def reference_utterances(path: Path, model_path: Path) -> list[tuple[float, str]]:
    proc = subprocess.run(
        emotiond_cmd("run", "--input", str(path), "--fast", "--stdout", "--set", "mqtt.enabled=false",
                     "--set", f"model.path={model_path}"),
        capture_output=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    events = [json.loads(x) for x in proc.stdout.decode().splitlines() if x.startswith("{")]
    return [(e["offset_s"], e["emotion"]) for e in events if e["event"] == "utterance"]


def start_daemon(path: Path, broker: Broker, device: str, model_path: Path, speed: float, *extra: str):
    sets = [
        f"mqtt.host={broker.host}", f"mqtt.port={broker.port}", f"mqtt.device_id={device}",
        "mqtt.reconnect_min_s=0.2", "mqtt.reconnect_max_s=1", "mqtt.keepalive_s=5",
        "mqtt.health_interval_s=1", f"source.speed={speed}", f"model.path={model_path}", *extra,
    ]
    args = ["run", "--input", str(path)]
    for s in sets:
        args += ["--set", s]
    return subprocess.Popen(emotiond_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def dedup(msgs: list[Received]) -> list[dict[str, Any]]:
    seen: set[tuple[int, int]] = set()
    out = []
    for m in msgs:
        p = m.json()
        key = (p["run"], p["seq"])
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def outage_run(path: Path, broker: Broker, subscriber, model_path: Path, device: str, outage_s: float,
               speed: float, before_n: int, *extra: str) -> dict[str, Any]:
    """Run the daemon, stop the broker after ``before_n`` utterances for ``outage_s``; return what was seen."""
    root = f"emotiond/{device}"
    sub: Subscriber = subscriber(broker.host, broker.port, f"{root}/#", qos=1,
                                 client_id=f"persistent-{device}", clean_session=False)
    proc = start_daemon(path, broker, device, model_path, speed, *extra)
    try:
        sub.wait_topic(f"{root}/utterance", count=before_n, timeout=60)
        emotions_before = [m.json()["seq"] for m in sub.on(f"{root}/emotion")]
        broker.stop()
        down_at = time.monotonic()
        time.sleep(outage_s)
        broker.start()
        up_at = time.monotonic()
        # back online: the daemon re-publishes its status, and the retained copies are current
        sub.wait_for(lambda ms: any(m.topic == f"{root}/status" and m.payload == b"online" and m.at > up_at
                                    for m in ms), timeout=15)
        late = subscriber(broker.host, broker.port, [f"{root}/status", f"{root}/emotion"], qos=1)
        late.wait_for(lambda ms: {m.topic for m in ms} >= {f"{root}/status", f"{root}/emotion"}, timeout=5)
        retained_status = [m for m in late.on(f"{root}/status") if m.retain]
        retained_emotion = [m for m in late.on(f"{root}/emotion") if m.retain]
        code = proc.wait(timeout=outage_s + 120)
    finally:
        if proc.poll() is None:
            proc.kill()
        stderr = proc.stderr.read().decode()
    assert code == 0, stderr[-3000:]
    sub.wait_for(lambda ms: any(m.topic == f"{root}/status" and m.payload == b"offline" for m in ms), timeout=15)
    return {
        "sub": sub, "stderr": stderr, "root": root, "down_at": down_at, "up_at": up_at,
        "retained_status": retained_status, "retained_emotion": retained_emotion,
        "emotions_before": emotions_before,
    }


def check_full_delivery(name: str, path: Path, broker, subscriber, model_path: Path, outage_s: float,
                        speed: float) -> None:
    expected = reference_utterances(path, model_path)
    assert len(expected) >= 8, expected
    device = f"outage{int(outage_s)}"
    seen = outage_run(path, broker, subscriber, model_path, device, outage_s, speed, before_n=3)
    sub, root = seen["sub"], seen["root"]
    sub.wait_for(lambda ms: len(dedup([m for m in ms if m.topic == f"{root}/utterance"])) >= len(expected),
                 timeout=15)
    raw = sub.on(f"{root}/utterance")
    got = dedup(raw)
    assert len({p["run"] for p in got}) == 1
    seqs = [p["seq"] for p in got]
    assert seqs == sorted(seqs), "utterances arrived out of order"
    assert [(p["offset_s"], p["emotion"]) for p in got] == expected  # every one, in order, none extra
    during = [m for m in raw if seen["down_at"] < m.at]
    assert during, "some utterances were produced while the broker was down and delivered afterwards"
    # status back to online, retained; emotion state retained and not older than before the outage
    assert seen["retained_status"] and seen["retained_status"][-1].payload == b"online"
    assert seen["retained_emotion"]
    if seen["emotions_before"]:
        assert seen["retained_emotion"][-1].json()["seq"] >= max(seen["emotions_before"])
    assert "MQTT connection to" in seen["stderr"] and "lost" in seen["stderr"]
    # what left the "device" during the whole run: the documented messages, valid, and nothing like audio
    kinds = {"status", "problem", "emotion", "utterance", "health"}
    for m in sub.messages:
        kind = m.topic.rsplit("/", 1)[1]
        assert m.topic.startswith(f"{root}/") and kind in kinds, m.topic
        if kind == "status":
            validator("status").validate(m.text)
        else:
            assert_private(m.payload)
            validator(kind).validate(m.json())
    assert "Traceback" not in seen["stderr"]
    _record(name, audio_s=round(sf.info(str(path)).duration, 1), speed=speed, outage_s=outage_s,
            utterances_expected=len(expected), utterances_received=len(got),
            duplicates_removed=len(raw) - len(got), dropped=0)


def test_broker_outage_mid_run_loses_no_utterance(recording, broker, subscriber, model_path) -> None:
    check_full_delivery("outage_6s", recording, broker, subscriber, model_path, outage_s=6.0, speed=4.0)


@pytest.mark.skipif(not LONG, reason="long variant: set EMOTIOND_LONG_TESTS=1 (60 s outage, ~3 min)")
def test_broker_outage_60s(long_recording, broker, subscriber, model_path) -> None:
    check_full_delivery("outage_60s", long_recording, broker, subscriber, model_path, outage_s=60.0, speed=2.0)


def test_outage_with_tiny_buffer_drops_oldest_counts_and_logs(recording, broker, subscriber, model_path) -> None:
    expected = reference_utterances(recording, model_path)
    device = "outagebuf"
    seen = outage_run(recording, broker, subscriber, model_path, device, 6.0, 4.0, 2, "mqtt.buffer_size=2")
    sub, root, stderr = seen["sub"], seen["root"], seen["stderr"]
    got = dedup(sub.on(f"{root}/utterance"))
    got_keys = [(p["offset_s"], p["emotion"]) for p in got]
    it = iter(expected)
    assert all(k in it for k in got_keys), "received utterances are an in-order subsequence of the produced ones"
    missing = len(expected) - len(got)
    health = [m.json() for m in sub.on(f"{root}/health")]
    dropped = max(h["mqtt"]["dropped_events"] for h in health)
    assert dropped >= 1 and missing >= 1, (dropped, missing)
    assert missing <= dropped  # only events that were counted as dropped are missing
    after = [h for m, h in zip(sub.on(f"{root}/health"), health, strict=True) if m.at > seen["up_at"]]
    assert after and after[-1]["mqtt"]["dropped_events"] == dropped
    assert stderr.count("MQTT buffer full") == 1, stderr  # logged once per outage, not per event
    assert "events dropped while it was unreachable (buffer_size=2)" in stderr
    assert "Traceback" not in stderr
    _record("outage_6s_buffer2", audio_s=round(sf.info(str(recording)).duration, 1), speed=4.0, outage_s=6.0,
            utterances_expected=len(expected), utterances_received=len(got), dropped_events=dropped)
