"""Audio sources: files of any format, stdin PCM, and real PyAudio capture from an ALSA file PCM."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from emotiond.daemon.sources import FileSource, StdinSource
from emotiond.dsp.audio import AudioInputError

SR = 16_000


def tone(rate: int, seconds: float, hz: float = 440.0) -> np.ndarray:
    return 0.3 * np.sin(2 * np.pi * hz * np.arange(int(rate * seconds)) / rate)


def peak_hz(x: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(x[:SR] * np.hanning(SR)))
    return float(np.argmax(spec)) * SR / SR


def read_all(source) -> np.ndarray:
    source.open()
    try:
        return np.concatenate(list(source.blocks()))
    finally:
        source.close()


@pytest.mark.parametrize(
    ("rate", "channels", "subtype", "ext"),
    [(44100, 2, "PCM_16", "wav"), (8000, 1, "PCM_16", "wav"), (48000, 1, "PCM_24", "flac"), (22050, 1, "FLOAT", "wav"),
     (16000, 1, "VORBIS", "ogg")],
)
def test_file_source_resamples_any_format_to_16k_mono(tmp_path: Path, rate: int, channels: int, subtype: str, ext: str):
    x = tone(rate, 2.0)
    data = np.stack([x] * channels, axis=1) if channels > 1 else x
    path = tmp_path / f"t.{ext}"
    sf.write(str(path), data, rate, subtype=subtype)
    out = read_all(FileSource(path, realtime=False, block_ms=37))
    assert abs(len(out) - 2 * SR) <= 64
    assert abs(peak_hz(out) - 440) <= 2
    assert abs(np.sqrt(np.mean(out[1000:-1000] ** 2)) - 0.3 / np.sqrt(2)) < 0.02


def test_file_source_turns_nan_and_inf_into_silence(tmp_path: Path) -> None:
    x = tone(SR, 1.0)
    x[100:200] = np.nan
    x[300] = np.inf
    path = tmp_path / "nan.wav"
    sf.write(str(path), x, SR, subtype="FLOAT")
    out = read_all(FileSource(path, realtime=False))
    assert np.all(np.isfinite(out)) and np.max(np.abs(out)) <= 1.0


def test_file_source_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(AudioInputError, match=r"missing\.wav: audio file not found") as missing:
        FileSource(tmp_path / "missing.wav").open()
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioInputError, match=r"empty\.wav: not a readable audio file") as unreadable:
        FileSource(empty).open()
    assert (missing.value.exit_code, unreadable.value.exit_code) == (66, 65)  # EX_NOINPUT, EX_DATAERR
    truncated = tmp_path / "trunc.wav"
    buf = io.BytesIO()
    sf.write(buf, tone(SR, 1.0), SR, format="WAV")
    truncated.write_bytes(buf.getvalue()[:5000])
    out = read_all(FileSource(truncated, realtime=False))  # what is there is used
    assert 0 < len(out) < SR


def test_file_source_paces_in_real_time(tmp_path: Path) -> None:
    import time

    path = tmp_path / "t.wav"
    sf.write(str(path), tone(SR, 0.6), SR)
    t0 = time.monotonic()
    read_all(FileSource(path, realtime=True))
    assert time.monotonic() - t0 >= 0.5


def test_stdin_source_handles_odd_bytes_and_other_rates() -> None:
    pcm = (tone(8000, 1.0) * 32767).astype("<i2").tobytes()
    out = read_all(StdinSource(rate=8000, block_ms=30, stream=io.BytesIO(pcm + b"\x07")))
    assert abs(len(out) - SR) <= 64 and abs(peak_hz(out) - 440) <= 2


ALSA_CONF = """
pcm.testmic {{
    type file
    slave.pcm "null"
    file "/dev/null"
    infile "{raw}"
    format "raw"
    hint {{ show on description "emotiond test microphone" }}
}}
"""


@pytest.fixture()
def alsa_file_mic(tmp_path: Path) -> dict[str, str]:
    """An ALSA PCM that reads a raw file: real PortAudio capture without a sound card."""
    pytest.importorskip("pyaudio")
    system_conf = Path("/usr/share/alsa/alsa.conf")
    if not system_conf.exists():
        pytest.skip("ALSA configuration not installed (libasound2)")
    raw = tmp_path / "mic.raw"
    raw.write_bytes((tone(48000, 3.0) * 32767).astype("<i2").tobytes())
    conf = tmp_path / "asound.conf"
    conf.write_text(ALSA_CONF.format(raw=raw))
    return {"ALSA_CONFIG_PATH": f"{system_conf}:{conf}"}


def test_microphone_capture_through_real_pyaudio(alsa_file_mic: dict[str, str]) -> None:
    code = """
import numpy as np
from emotiond.daemon.microphone import MicrophoneSource, list_input_devices
assert [d.name for d in list_input_devices()] == ["testmic"], list_input_devices()
mic = MicrophoneSource("test", rate=48000, block_ms=100, buffer_s=10)
mic.open()
got = []
for block in mic.blocks():
    got.append(block)
    mic.coalesce = 3  # three 100 ms blocks per wake-up, as the daemon asks while nobody speaks
    if sum(map(len, got)) >= 32000:
        break
mic.close()
x = np.concatenate(got)
spec = np.abs(np.fft.rfft(x[:16000] * np.hanning(16000)))
print(int(np.argmax(spec)), round(float(np.max(np.abs(x))), 2), max(map(len, got[1:])))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **alsa_file_mic})
    assert proc.returncode == 0, proc.stderr
    hz, peak, coalesced = proc.stdout.split()
    assert abs(int(hz) - 440) <= 2 and float(peak) == pytest.approx(0.3, abs=0.02)
    assert int(coalesced) >= 4000  # ~4800 samples: three blocks in one piece


def test_missing_microphone_lists_devices_and_exits_66(alsa_file_mic: dict[str, str], model_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "emotiond", "run", "--set", "source.device=usb-headset", "--set", "mqtt.enabled=false",
         "--set", f"model.path={model_path}"],
        capture_output=True, text=True, timeout=60, env={**os.environ, **alsa_file_mic},
    )
    assert proc.returncode == 66
    assert "source.device='usb-headset': no input device matches (have: 0: testmic)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_waiting_for_a_missing_microphone_keeps_running(alsa_file_mic: dict[str, str], model_path: Path) -> None:
    import signal
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "emotiond", "run", "--set", "source.device=usb-headset", "--set", "mqtt.enabled=false",
         "--set", "source.wait_for_device=true", "--set", "source.reopen_min_s=0.2",
         "--set", f"model.path={model_path}"],
        stderr=subprocess.PIPE, text=True, env={**os.environ, **alsa_file_mic},
    )
    time.sleep(3)
    assert proc.poll() is None, proc.stderr.read()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(5) == 0
    err = proc.stderr.read()
    assert "degraded: waiting for the microphone: source.device='usb-headset': no input device matches" in err
    assert "Traceback" not in err


def test_file_source_hands_over_coalesce_blocks_at_once_without_changing_the_samples(tmp_path: Path) -> None:
    path = tmp_path / "x.wav"
    x = np.random.default_rng(4).uniform(-0.5, 0.5, int(SR * 3.05))
    sf.write(str(path), x, SR, subtype="FLOAT")
    plain = read_all(FileSource(path, realtime=False))
    src = FileSource(path, realtime=False)
    src.open()
    sizes, got = [], []
    for i, block in enumerate(src.blocks()):
        sizes.append(len(block))
        got.append(block)
        src.coalesce = 3 if 2 <= i < 8 else 1  # as the daemon does: larger pieces only while nobody speaks
    src.close()
    assert np.array_equal(np.concatenate(got), plain)
    assert sizes[:3] == [1600, 1600, 1600] and sizes[3:9] == [4800] * 6 and max(sizes[9:]) <= 1600


def test_file_source_paces_coalesced_blocks_in_real_time(tmp_path: Path) -> None:
    path = tmp_path / "x.wav"
    sf.write(str(path), np.zeros(SR), SR)
    src = FileSource(path, realtime=True)
    src.coalesce = 5
    src.open()
    t0 = time.monotonic()
    arrivals = [(time.monotonic() - t0, len(b)) for b in src.blocks()]
    src.close()
    assert [n for _, n in arrivals] == [8000, 8000]
    assert 0.45 <= arrivals[0][0] <= 0.7 and 0.95 <= arrivals[1][0] <= 1.3, arrivals


def test_block_ring_wakes_a_reader_once_the_blocks_it_wants_are_there() -> None:
    from emotiond.daemon.sources import BlockRing

    ring = BlockRing(10)

    def capture() -> None:
        for i in range(3):
            time.sleep(0.05)
            ring.put(np.full(4, i))

    t = threading.Thread(target=capture)
    t0 = time.monotonic()
    t.start()
    got = ring.get_many(3, timeout=2.0)
    waited = time.monotonic() - t0
    t.join()
    assert [int(b[0]) for b in got] == [0, 1, 2]
    assert 0.14 <= waited < 1.0
    ring.put(np.full(4, 9))
    t0 = time.monotonic()
    assert [int(b[0]) for b in ring.get_many(3, timeout=0.2)] == [9]  # fewer once the wait runs out
    assert time.monotonic() - t0 >= 0.19
    assert ring.get_many(3, timeout=0.05) == []
    small = BlockRing(4)  # a reader never waits until a small ring is about to drop blocks
    for i in range(2):
        small.put(np.full(4, i))
    t0 = time.monotonic()
    assert len(small.get_many(5, timeout=1.0)) == 2 and time.monotonic() - t0 < 0.5


def test_audio_pieces_the_sources_share() -> None:
    from emotiond.dsp.audio import Resampler, pcm16_to_float, sanitize, to_mono

    pcm = np.array([-32768, -1, 0, 1, 32767], dtype="<i2")
    assert pcm16_to_float(pcm.tobytes()).tolist() == pcm16_to_float(pcm).tolist() == (pcm / 32768.0).tolist()
    assert to_mono(np.array([[0.5, -0.5], [1.0, 0.0]])).tolist() == [0.0, 0.5]
    assert sanitize(np.array([np.nan, np.inf, 2.0, -0.25])).tolist() == [0.0, 0.0, 1.0, -0.25]
    x = tone(48000, 1.0)
    resample = Resampler(48000)
    streamed = np.concatenate([resample(x[i : i + 4800], last=i + 4800 >= len(x)) for i in range(0, len(x), 4800)])
    assert abs(len(streamed) - SR) <= 1 and abs(peak_hz(streamed) - 440) <= 2
    assert Resampler(SR)(x[:100]) is not None and np.array_equal(Resampler(SR)(x[:100]), x[:100])
