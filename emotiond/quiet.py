"""Silencing native libraries that write to file descriptor 2.

PortAudio (probing ALSA and JACK) and LiteRT ("Created TensorFlow Lite XNNPACK
delegate") print from C and C++ straight to fd 2, which would put noise in
the journal and break the one-line error promise. Python-level exceptions
still carry the real error text.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
