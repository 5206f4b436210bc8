"""Microphone capture through PyAudio (stage ``source``).

PortAudio calls ``_callback`` on its own thread; the callback only copies the
block into a ``BlockRing`` and returns, so capture never waits for the model.
Capture runs at the device's native rate (many USB microphones only offer
44.1 or 48 kHz) and is resampled to 16 kHz by soxr on the processing side.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..dsp.audio import AudioInputError, Resampler, pcm16_to_float, sanitize
from ..quiet import quiet_native_stderr
from .sources import BlockRing, DeviceLost

log = logging.getLogger(__name__)

# A block that has not arrived for this long means the device is gone.
STALL_S = 2.0


@dataclass(frozen=True)
class InputDevice:
    index: int
    name: str
    channels: int
    default_rate: int


def _pyaudio() -> Any:
    try:
        import pyaudio
    except ImportError:
        raise AudioInputError(
            "microphone: PyAudio is not installed (pip install 'emotiond[mic]'; needs portaudio19-dev)", os.EX_NOINPUT
        ) from None
    with quiet_native_stderr():
        return pyaudio.PyAudio()


def list_input_devices(pa: Any | None = None) -> list[InputDevice]:
    own = pa is None
    pa = pa or _pyaudio()
    try:
        devices = []
        for i in range(pa.get_device_count()):
            info = pa.get_device_info_by_index(i)
            if int(info.get("maxInputChannels", 0)) > 0:
                devices.append(
                    InputDevice(i, str(info["name"]), int(info["maxInputChannels"]), int(info["defaultSampleRate"]))
                )
        return devices
    finally:
        if own:
            pa.terminate()


def choose_device(devices: list[InputDevice], wanted: int | str | None, default_index: int | None) -> InputDevice:
    """Pick by index, by case-insensitive name substring, or the system default."""
    if not devices:
        raise AudioInputError("microphone: no audio input devices found", os.EX_NOINPUT)
    listing = "; ".join(f"{d.index}: {d.name}" for d in devices)
    if wanted is None:
        for d in devices:
            if d.index == default_index:
                return d
        return devices[0]
    if isinstance(wanted, int) or (isinstance(wanted, str) and wanted.isdigit()):
        for d in devices:
            if d.index == int(wanted):
                return d
        raise AudioInputError(
            f"source.device={wanted}: no input device with that index (have: {listing})", os.EX_NOINPUT
        )
    matches = [d for d in devices if str(wanted).lower() in d.name.lower()]
    if not matches:
        raise AudioInputError(f"source.device={wanted!r}: no input device matches (have: {listing})", os.EX_NOINPUT)
    return matches[0]


class MicrophoneSource:
    def __init__(
        self,
        device: int | str | None = None,
        rate: int | None = None,
        channels: int = 1,
        block_ms: int = 100,
        buffer_s: float = 5.0,
    ) -> None:
        self.wanted = device
        self.rate = rate
        self.channels = channels
        self.block_ms = block_ms
        self.buffer_s = buffer_s
        self.name = "microphone"
        self.coalesce = 1
        self._pa: Any = None
        self._stream: Any = None
        self._ring = BlockRing(max(1, int(buffer_s * 1000 / block_ms)))
        self._device: InputDevice | None = None

    @property
    def overruns(self) -> int:
        return self._ring.overruns

    def open(self) -> None:
        import pyaudio

        self._pa = _pyaudio()
        try:
            default = self._pa.get_default_input_device_info().get("index")
        except OSError:
            default = None
        device = choose_device(list_input_devices(self._pa), self.wanted, default)
        rate = self.rate or device.default_rate
        channels = min(self.channels, device.channels)
        frames = max(1, rate * self.block_ms // 1000)
        try:
            with quiet_native_stderr():
                self._stream = self._pa.open(
                    format=pyaudio.paInt16,
                    channels=channels,
                    rate=rate,
                    input=True,
                    input_device_index=device.index,
                    frames_per_buffer=frames,
                    stream_callback=self._callback,
                )
        except (OSError, ValueError) as exc:
            self.close()
            why = f"microphone {device.index} ({device.name}): cannot open at {rate} Hz: {exc}"
            raise AudioInputError(why) from None
        self._device = device
        self._rate, self._channels = rate, channels
        self.name = f"microphone {device.index} ({device.name})"
        log.info("capturing from %s at %d Hz, %d channel(s)", self.name, rate, channels)

    def _callback(self, in_data: bytes, frame_count: int, time_info: Any, status: int) -> tuple[None, int]:
        import pyaudio

        self._ring.put(np.frombuffer(in_data, dtype="<i2").copy())
        return None, pyaudio.paContinue

    def blocks(self) -> Iterator[np.ndarray]:
        resample = Resampler(self._rate)
        last_audio = time.monotonic()
        while True:
            # ``coalesce`` blocks at a time while nobody speaks: one wake-up of this thread for them all
            got = self._ring.get_many(self.coalesce, timeout=0.5)
            raw = (got[0] if len(got) == 1 else np.concatenate(got)) if got else None
            if raw is None:
                active = self._stream is not None and self._stream.is_active()
                if not active or time.monotonic() - last_audio > STALL_S:
                    raise DeviceLost(f"{self.name}: no audio for {time.monotonic() - last_audio:.1f} s")
                yield np.zeros(0)  # lets the caller keep its watchdog and timers alive
                continue
            last_audio = time.monotonic()
            samples = pcm16_to_float(raw)
            if self._channels > 1:
                samples = samples.reshape(-1, self._channels).mean(axis=1)
            yield sanitize(resample(samples))

    def close(self) -> None:
        if self._stream is not None:
            with contextlib.suppress(Exception):
                self._stream.stop_stream()
                self._stream.close()
            self._stream = None
        if self._pa is not None:
            with contextlib.suppress(Exception):
                self._pa.terminate()
            self._pa = None
