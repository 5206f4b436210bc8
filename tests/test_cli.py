"""The emotiond command end to end, as scripts use it: exit codes and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16_000


def emotiond(*args: str, input: bytes | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emotiond", *args], capture_output=True, input=input, timeout=timeout)


def events(stdout: bytes) -> list[dict]:
    return [json.loads(line) for line in stdout.decode().splitlines() if line.startswith("{")]


def test_run_file_fast_prints_events_around_the_speech(speech_wav: Path, speech_scene, model_path: Path) -> None:
    proc = emotiond("run", "--input", str(speech_wav), "--fast", "--stdout", "--set", "mqtt.enabled=false",
                    "--set", f"model.path={model_path}")
    assert proc.returncode == 0, proc.stderr.decode()
    evs = events(proc.stdout)
    utterances = [e for e in evs if e["event"] == "utterance"]
    spoken = speech_scene[1]
    assert len(utterances) == len(spoken)
    for u, (t0, t1) in zip(utterances, spoken, strict=True):
        assert abs(u["offset_s"] - t0) < 0.4 and abs(u["offset_s"] + u["duration_s"] - t1) < 0.5
        assert abs(sum(u["probabilities"].values()) - 1) < 0.01
    states = [e for e in evs if e["event"] == "emotion"]
    assert states and states[-1]["emotion"] == "none"  # released at the end of the input
    seqs = [e["seq"] for e in evs if "seq" in e]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert b"Traceback" not in proc.stderr


def test_run_reads_pcm_from_stdin_including_an_odd_byte(speech_scene, model_path: Path) -> None:
    pcm = (np.clip(speech_scene[0], -1, 1) * 32767).astype("<i2").tobytes() + b"\x01"
    proc = emotiond("run", "--input", "-", "--stdout", "--set", "mqtt.enabled=false",
                    "--set", f"model.path={model_path}", input=pcm)
    assert proc.returncode == 0, proc.stderr.decode()
    assert len([e for e in events(proc.stdout) if e["event"] == "utterance"]) == 2
    assert b"odd byte" in proc.stderr


def test_classify_json(speech_wav: Path, model_path: Path, tmp_path: Path) -> None:
    quiet = tmp_path / "quiet.wav"
    sf.write(str(quiet), np.zeros(SR * 2), SR)
    proc = emotiond("classify", str(speech_wav), str(quiet), "--json", "--set", f"model.path={model_path}")
    assert proc.returncode == 0, proc.stderr.decode()
    rows = [json.loads(x) for x in proc.stdout.decode().splitlines()]
    assert rows[0]["emotion"] in rows[0]["probabilities"] and rows[0]["windows"] > 0
    assert rows[1]["emotion"] is None and rows[1]["windows"] == 0


def test_missing_and_broken_inputs_give_one_line_and_documented_codes(
    tmp_path: Path, model_path: Path, speech_wav: Path
) -> None:
    m = f"model.path={model_path}"
    missing = emotiond("run", "--input", str(tmp_path / "nope.wav"), "--set", "mqtt.enabled=false", "--set", m)
    assert missing.returncode == 66 and b"nope.wav: audio file not found" in missing.stderr
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF\x00\x00garbage" * 10)
    broken = emotiond("run", "--input", str(junk), "--set", "mqtt.enabled=false", "--set", m)
    assert broken.returncode == 65 and b"junk.wav: not a readable audio file" in broken.stderr
    assert broken.stderr.decode().strip().count("\n") == 0
    cls = emotiond("classify", str(junk), "--set", m)
    assert cls.returncode == 65 and b"junk.wav" in cls.stderr
    no_model = emotiond("run", "--input", str(speech_wav), "--set", f"model.path={tmp_path / 'm.tflite'}")
    assert no_model.returncode == 78 and b"model.path:" in no_model.stderr and b"m.tflite" in no_model.stderr
    for p in (missing, broken, cls, no_model):
        assert b"Traceback" not in p.stderr


def test_window_length_mismatch_is_a_config_error(speech_wav: Path, model_path: Path) -> None:
    proc = emotiond("run", "--input", str(speech_wav), "--fast", "--set", "windows.window_s=3.3",
                    "--set", "mqtt.enabled=false", "--set", f"model.path={model_path}")
    assert proc.returncode == 78 and b"windows.window_s" in proc.stderr


def test_devices_without_a_sound_card_says_so() -> None:
    proc = emotiond("devices")
    assert proc.returncode in (0, 66)
    if proc.returncode == 66:
        assert b"no audio input devices found" in proc.stderr and proc.stdout == b""


def test_json_log_lines(speech_wav: Path, model_path: Path) -> None:
    proc = emotiond("run", "--input", str(speech_wav), "--fast", "--set", "mqtt.enabled=false",
                    "--set", "logging.json_lines=true", "--set", f"model.path={model_path}")
    assert proc.returncode == 0
    lines = [json.loads(x) for x in proc.stderr.decode().splitlines()]
    assert lines and all({"ts", "level", "logger", "msg"} <= set(x) for x in lines)
    assert any(x["msg"].startswith("ready: listening on") for x in lines)
