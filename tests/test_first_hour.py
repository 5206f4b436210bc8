"""A new user's first hour (issue 14): exit codes, options, error lines, silent cases, times."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.fixtures_process import ctrl_c_reaches_the_child
from tests.test_cli import emotiond, events

SR = 16_000


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--bogus"],
        ["frobnicate"],
        ["classify"],
        ["monitor", "--bogus"],
        ["eval", "--bogus"],
        ["check-config", "--set"],
    ],
)
def test_a_bad_command_line_exits_64_with_usage(argv: list[str]) -> None:
    proc = emotiond(*argv)
    assert proc.returncode == 64, (argv, proc.returncode, proc.stderr.decode())
    err = proc.stderr.decode()
    assert "usage:" in err and "error:" in err and "Traceback" not in err and proc.stdout == b""


def test_demo_and_input_together_are_refused(speech_wav: Path) -> None:
    proc = emotiond("run", "--demo", "--input", str(speech_wav))
    assert proc.returncode == 64
    assert proc.stderr.decode().strip() == (
        "emotiond run: --demo plays the bundled recording; use --input FILE or --demo, not both"
    )


def test_devices_takes_set_and_reports_on_stderr() -> None:
    proc = emotiond("devices", "--set", "mqtt.device_id=kitchen")
    assert proc.returncode in (0, 66), proc.stderr.decode()
    if proc.returncode == 66:
        assert proc.stdout == b"" and b"no audio input devices found" in proc.stderr
    bad = emotiond("devices", "--set", "mqtt.qos=7")
    assert bad.returncode == 78 and b"mqtt.qos" in bad.stderr


def test_classify_and_run_name_a_directory_as_one(tmp_path: Path, model_path: Path) -> None:
    m = f"model.path={model_path}"
    cls = emotiond("classify", str(tmp_path), "--set", m)
    assert cls.returncode == 66 and b"is a directory, not an audio file" in cls.stderr
    run = emotiond("run", "--input", str(tmp_path), "--set", "mqtt.enabled=false", "--set", m)
    assert run.returncode == 66 and f"{tmp_path}: is a directory".encode() in run.stderr
    assert b"not found" not in cls.stderr + run.stderr


def test_a_header_only_wav_is_a_data_error_not_silence(tmp_path: Path, model_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros(0), SR)
    assert empty.stat().st_size == 44  # a WAV header and nothing else
    m = f"model.path={model_path}"
    run = emotiond("run", "--input", str(empty), "--fast", "--stdout", "--set", "mqtt.enabled=false", "--set", m)
    assert run.returncode == 65
    assert run.stderr.decode().strip() == f"emotiond: {empty}: contains no audio samples (a header only)"
    cls = emotiond("classify", str(empty), "--set", m)
    assert cls.returncode == 65 and b"contains no audio samples" in cls.stderr


def test_mp3_runs_without_decoder_noise(tmp_path: Path, speech_scene, model_path: Path) -> None:
    mp3 = tmp_path / "speech.mp3"
    try:
        sf.write(str(mp3), speech_scene[0], SR, format="MP3")
    except (sf.LibsndfileError, TypeError, ValueError) as exc:
        pytest.skip(f"this libsndfile cannot write MP3 ({exc})")
    proc = emotiond("run", "--input", str(mp3), "--fast", "--stdout", "--set", "mqtt.enabled=false",
                    "--set", f"model.path={model_path}")
    assert proc.returncode == 0, proc.stderr.decode()
    assert len([e for e in events(proc.stdout) if e["event"] == "utterance"]) == 2
    assert b"libmpg123" not in proc.stderr and b"mpg123" not in proc.stderr


def test_train_without_data_says_so_before_writing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("EMOTIOND_DATA", raising=False)
    out = tmp_path / "out"
    proc = emotiond("train", "--out", str(out))
    if proc.returncode == 69:
        pytest.skip("training extra not installed")
    assert proc.returncode == 66, proc.stderr.decode()
    assert proc.stderr.decode().strip() == "emotiond train: no data folder: pass --data DIR or set EMOTIOND_DATA"
    assert not out.exists()


def test_config_reference_has_help() -> None:
    proc = subprocess.run([sys.executable, "-m", "emotiond.daemon.config_reference", "--help"],
                          capture_output=True, timeout=60)
    assert proc.returncode == 0 and b"Regenerate config.yaml" in proc.stdout and proc.stderr == b""


def test_monitor_plain_without_a_broker_says_why(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here
    proc = subprocess.Popen([sys.executable, "-m", "emotiond", "monitor", "--plain", "--host", "127.0.0.1",
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=ctrl_c_reaches_the_child)
    try:
        line = proc.stderr.readline().decode()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    assert line.startswith(f"monitor: 127.0.0.1:{port}: cannot connect: connection refused"), line
    assert line.rstrip().endswith("; retrying")
    assert proc.returncode == 0


def _check_times(evs: list[dict], audio_s: float) -> None:
    """start ≤ end ≤ ts per utterance, ts never decreasing, nothing after the end of the audio."""
    timed = [e for e in evs if "ts" in e and e["event"] in ("emotion", "utterance")]
    assert timed
    stamps = [_epoch(e["ts"]) for e in timed]
    assert stamps == sorted(stamps), [e["ts"] for e in timed]
    for u in (e for e in timed if e["event"] == "utterance"):
        assert _epoch(u["start"]) <= _epoch(u["end"]) <= _epoch(u["ts"]), u
    run = timed[0]["run"] / 1000
    assert max(stamps) <= run + audio_s + 0.01  # the final 'none' is stamped at the last sample, not later


def test_fast_file_times_are_on_the_audio_clock(speech_wav: Path, speech_scene, model_path: Path) -> None:
    proc = emotiond("run", "--input", str(speech_wav), "--fast", "--stdout", "--set", "mqtt.enabled=false",
                    "--set", f"model.path={model_path}")
    assert proc.returncode == 0, proc.stderr.decode()
    evs = events(proc.stdout)
    audio_s = len(speech_scene[0]) / SR
    _check_times(evs, audio_s)
    for u in (e for e in evs if e["event"] == "utterance"):  # run start + position in the file
        assert abs(_epoch(u["start"]) - (u["run"] / 1000 + u["offset_s"])) < 0.002
    assert evs[-1]["event"] == "emotion" and evs[-1]["emotion"] == "none"
    assert abs(_epoch(evs[-1]["ts"]) - (evs[-1]["run"] / 1000 + audio_s)) < 0.15


def test_stdin_times_are_on_the_audio_clock(speech_scene, model_path: Path) -> None:
    pcm = (np.clip(speech_scene[0], -1, 1) * 32767).astype("<i2").tobytes()
    proc = emotiond("run", "--input", "-", "--stdout", "--set", "mqtt.enabled=false",
                    "--set", f"model.path={model_path}", input=pcm)
    assert proc.returncode == 0, proc.stderr.decode()
    _check_times(events(proc.stdout), len(speech_scene[0]) / SR)


def test_wall_clock_stamps_what_was_heard_at_when_it_was_heard() -> None:
    """Microphone and paced files: a point x s into the audio is stamped now - (processed - x)."""
    import time

    from emotiond.daemon.payloads import PayloadFactory
    from emotiond.dsp.smoother import EmotionState, UtteranceSummary

    f = PayloadFactory("d", stream_start_epoch=time.time() - 100, clock="wall")  # 100 s ago, with gaps since
    probs = {"angry": 0.8, "sad": 0.2}
    u = f.utterance(UtteranceSummary(0, 10.0, 12.0, "angry", 0.8, probs, 4), now_s=12.3)
    now = time.time()
    assert abs(_epoch(u["ts"]) - now) < 0.05 and abs(_epoch(u["end"]) - (now - 0.3)) < 0.05
    assert abs(_epoch(u["start"]) - (now - 2.3)) < 0.05
    e = f.emotion(EmotionState("angry", 0.8, probs, 12.1), now_s=12.2)  # made from an earlier window
    assert _epoch(e["ts"]) >= _epoch(u["ts"])  # never before the event published just before it
    late = f.emotion(EmotionState("none", 0.0, probs, 14.3), now_s=12.4)  # release past the input's end
    assert _epoch(late["ts"]) <= time.time() + 0.001
    with pytest.raises(ValueError):
        PayloadFactory("d", clock="sundial")
    assert json.dumps(u)


@pytest.mark.broker
def test_sample_events_play_one_confident_example_per_emotion(broker, subscriber, model_path: Path) -> None:
    """Through the real MQTT sink, as their own device, so a daemon on the same host is left alone."""
    from emotiond.models.runtime import EmotionModel

    labels = EmotionModel(model_path).labels
    sub = subscriber(broker.host, broker.port, "emotiond/#")
    proc = emotiond("sample-events", "--interval", "0", "--set", f"mqtt.host={broker.host}",
                    "--set", f"mqtt.port={broker.port}", "--set", "homeassistant.discovery=false",
                    "--set", f"model.path={model_path}")
    assert proc.returncode == 0, proc.stderr.decode()
    utterances = sub.wait_for(lambda ms: sum(m.topic.endswith("/utterance") for m in ms) >= len(labels))
    got = [m for m in utterances if m.topic.endswith("/utterance")]
    assert [m.json()["emotion"] for m in got] == list(labels)
    assert {m.json()["confidence"] for m in got} == {0.9}
    device = got[0].topic.split("/")[1]
    assert device.endswith("-samples")
    emotions = sub.wait_for(lambda ms: any(m.topic.endswith("/emotion") and m.json()["emotion"] == "none" for m in ms))
    assert [m.json()["emotion"] for m in emotions if m.topic.endswith("/emotion")] == [*labels, "none"]
    sub.wait_for(lambda ms: [m.text for m in ms if m.topic == f"emotiond/{device}/status"][-1:] == ["offline"])
