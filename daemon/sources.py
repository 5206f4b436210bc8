"""Audio sources (stage ``source``): microphone, file, stdin PCM, and arrays for tests.

Every source yields 16 kHz mono float64 blocks in [-1, 1], built from the pieces
in :mod:`emotiond.dsp.audio` (PCM conversion, mix-down, sanitising, and soxr's
streaming resampler for capture at other rates). The microphone callback runs on
PortAudio's thread and only appends to a bounded ring, so it never blocks;
when processing falls behind, the oldest blocks are dropped and counted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import select
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np

from ..dsp.audio import AudioInputError, Resampler, pcm16_to_float, sanitize, to_mono
from ..dsp.features import SAMPLE_RATE
from ..quiet import quiet_native_stderr

log = logging.getLogger(__name__)


class DeviceLost(Exception):
    """A microphone stopped delivering audio mid-run; the runner reopens it."""


class AudioSource(Protocol):
    """``coalesce``: how many blocks the reader takes in one piece (1: each as it comes).

    The daemon raises it while nobody speaks (docs/performance.md, live cost): a paced
    source (file, microphone) then wakes its reader once per that many blocks. A source
    that cannot wait for several blocks may ignore it.
    """

    name: str
    overruns: int
    coalesce: int

    def open(self) -> None: ...

    def blocks(self) -> Iterator[np.ndarray]:
        """16 kHz mono blocks until the input ends (raises DeviceLost for a lost device)."""
        ...

    def close(self) -> None: ...


class ArraySource:
    """A numpy array as a source, in fixed blocks; the test double at the hardware edge."""

    def __init__(self, samples: np.ndarray, block: int = 1600, name: str = "array") -> None:
        self.samples = np.asarray(samples, dtype=np.float64)
        self.block = block
        self.name = name
        self.overruns = 0
        self.coalesce = 1  # ignored: an array is not paced

    def open(self) -> None:
        pass

    def blocks(self) -> Iterator[np.ndarray]:
        for i in range(0, len(self.samples), self.block):
            yield self.samples[i : i + self.block]

    def close(self) -> None:
        pass


READ_AHEAD_BLOCKS = 10


class FileSource:
    """Any file libsndfile reads (WAV, FLAC, OGG/Opus, …), any rate and channel count."""

    def __init__(self, path: Path, realtime: bool = True, block_ms: int = 100, speed: float = 1.0) -> None:
        self.path = Path(path)
        self.name = str(path)
        self.realtime = realtime
        self.speed = speed
        self.block_ms = block_ms
        self.overruns = 0
        self.coalesce = 1
        self._file = None
        self._mp3 = False

    def open(self) -> None:
        import soundfile as sf

        if self.path.is_dir():
            raise AudioInputError(f"{self.path}: is a directory, not an audio file", os.EX_NOINPUT)
        if not self.path.exists():
            raise AudioInputError(f"{self.path}: audio file not found", os.EX_NOINPUT)
        try:
            with quiet_native_stderr():  # libmpg123 (MP3) prints header notes straight to fd 2
                self._file = sf.SoundFile(str(self.path))
        except Exception as exc:  # libsndfile reports format problems as several types
            raise AudioInputError(f"{self.path}: not a readable audio file ({_short(exc)})") from None
        if self._file.samplerate < 8000:
            raise AudioInputError(f"{self.path}: sample rate {self._file.samplerate} Hz is too low (min 8000)")
        self._mp3 = self._file.format == "MP3"  # libmpg123 notes on damaged frames would flood stderr
        if self._file.frames == 0:
            self._file.close()
            raise AudioInputError(f"{self.path}: contains no audio samples (a header only)")

    def blocks(self) -> Iterator[np.ndarray]:
        assert self._file is not None, "open() first"
        rate = self._file.samplerate
        block = max(1, SAMPLE_RATE * self.block_ms // 1000)
        # Read (and convert) READ_AHEAD_BLOCKS blocks at a time, then hand them out
        # ``coalesce`` at a time: per-call overhead, paid at every wake-up while paced,
        # was most of what reading a file cost (see docs/performance.md, live mode).
        frames = max(1, rate * self.block_ms // 1000) * READ_AHEAD_BLOCKS
        resample = Resampler(rate)
        ready: deque[np.ndarray] = deque()
        ended = False
        t0 = time.monotonic()
        emitted = 0
        while True:
            want = max(1, self.coalesce)
            if len(ready) < want and not ended:
                try:
                    with quiet_native_stderr() if self._mp3 else contextlib.nullcontext():
                        data = self._file.read(frames, dtype="float64", always_2d=True)
                except Exception as exc:
                    where = f"after {emitted / SAMPLE_RATE:.1f} s"
                    raise AudioInputError(f"{self.path}: read failed {where} ({_short(exc)})") from None
                ended = len(data) < frames
                read = sanitize(resample(to_mono(data), last=ended))
                if len(read):
                    ready.extend(np.array_split(read, max(1, round(len(read) / block))))
                continue
            if not ready:
                return
            out = ready.popleft()
            if want > 1 and ready:
                out = np.concatenate([out, *(ready.popleft() for _ in range(min(want - 1, len(ready))))])
            if self.realtime:
                due = t0 + (emitted + len(out)) / SAMPLE_RATE / self.speed
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)  # one sleep per wake-up, to an absolute deadline
            emitted += len(out)
            yield out

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class StdinSource:
    """Raw signed 16-bit little-endian mono PCM on stdin (``arecord -f S16_LE | emotiond run --input -``)."""

    def __init__(self, rate: int = SAMPLE_RATE, block_ms: int = 100, stream: BinaryIO | None = None) -> None:
        self.rate = rate
        self.block_bytes = max(2, rate * block_ms // 1000 * 2)
        self.name = "stdin"
        self.overruns = 0
        self.coalesce = 1  # ignored: a pipe is read as it comes
        self._stream = stream
        self.stopping = threading.Event()

    def open(self) -> None:
        if self._stream is None:
            stdin = sys.stdin
            try:
                os.fstat(stdin.fileno())  # type: ignore[union-attr]
                self._stream = stdin.buffer  # type: ignore[union-attr]
            except (AttributeError, OSError, ValueError):  # `emotiond run --input - <&-`
                why = "stdin: standard input is closed; pipe 16-bit PCM into 'emotiond run --input -'"
                raise AudioInputError(why, os.EX_NOINPUT) from None

    def _read(self) -> bytes | None:
        """Up to one block; None when asked to stop. Polls a real fd so a stop never waits on the pipe."""
        assert self._stream is not None
        try:
            fd = self._stream.fileno()
        except (AttributeError, OSError, ValueError):
            return self._stream.read(self.block_bytes)
        while not self.stopping.is_set():
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                return os.read(fd, self.block_bytes)
        return None

    def blocks(self) -> Iterator[np.ndarray]:
        resample = Resampler(self.rate)
        carry = b""
        while True:
            data = self._read()
            if data is None:
                return
            last = not data
            data = carry + (data or b"")
            usable = len(data) - len(data) % 2  # an odd trailing byte waits for its partner
            carry = data[usable:]
            samples = pcm16_to_float(data[:usable])
            out = resample(samples, last=last)
            if len(out):
                yield out
            if last:
                if carry:
                    log.warning("stdin ended with an odd byte; the half sample was dropped")
                return

    def close(self) -> None:
        self.stopping.set()


class BlockRing:
    """Bounded hand-off from the capture thread: appends never block, overflow drops the oldest."""

    def __init__(self, max_blocks: int) -> None:
        self._blocks: deque[np.ndarray] = deque()
        self._max = max(1, max_blocks)
        self._cond = threading.Condition()
        self._want = 1  # blocks the reader waits for (get_many)
        self.overruns = 0

    def put(self, block: np.ndarray) -> None:
        with self._cond:
            if len(self._blocks) >= self._max:
                self._blocks.popleft()
                self.overruns += 1
            self._blocks.append(block)
            if len(self._blocks) >= self._want:
                self._cond.notify()

    def get(self, timeout: float) -> np.ndarray | None:
        with self._cond:
            if not self._blocks:
                self._cond.wait(timeout)
            return self._blocks.popleft() if self._blocks else None

    def get_many(self, n: int, timeout: float) -> list[np.ndarray]:
        """Up to ``n`` blocks, waiting up to ``timeout`` for all ``n``; empty if none came.

        The capture thread wakes the reader only once ``n`` are there, so a reader
        that takes three blocks at a time wakes a third as often.
        """
        deadline = time.monotonic() + timeout
        n = max(1, min(n, self._max // 2))  # never wait until the ring is about to drop blocks
        with self._cond:
            self._want = n
            try:
                while len(self._blocks) < self._want:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            finally:
                self._want = 1
            return [self._blocks.popleft() for _ in range(min(n, len(self._blocks)))]


def _short(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


class ThreadedSource:
    """Runs a blocking reader (stdin) on its own thread so signals and the watchdog never wait on it.

    Unlike the microphone ring it never drops: a full queue blocks the reader,
    and the pipe pushes back on the writer, so no piped audio is lost.
    """

    def __init__(self, inner: AudioSource, buffer_s: float, block_ms: int) -> None:
        self.inner = inner
        self.name = inner.name
        self._queue: queue.Queue[np.ndarray] = queue.Queue(max(1, int(buffer_s * 1000 / block_ms)))
        self._done = threading.Event()
        self._error: BaseException | None = None
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self.overruns = 0
        self.coalesce = 1  # ignored: a pipe is read as it comes

    def open(self) -> None:
        self.inner.open()
        self._thread = threading.Thread(target=self._pump, name="emotiond-stdin", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        try:
            for block in self.inner.blocks():
                while not self._closing.is_set():
                    try:
                        self._queue.put(block, timeout=0.2)
                        break
                    except queue.Full:
                        continue
        except BaseException as exc:  # handed to the main thread
            self._error = exc
        finally:
            self._done.set()

    def blocks(self) -> Iterator[np.ndarray]:
        while True:
            try:
                yield self._queue.get(timeout=0.5)
                continue
            except queue.Empty:
                pass
            if self._done.is_set() and self._queue.empty():
                if self._error is not None:
                    raise self._error
                return
            yield np.zeros(0)  # keeps the watchdog and timers going while the pipe is quiet

    def close(self) -> None:
        self._closing.set()
        self.inner.close()
        if self._thread is not None:
            self._thread.join(2.0)
