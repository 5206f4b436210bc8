"""``emotiond run --demo``: the whole pipeline on a fresh machine with no microphone or broker.

It plays the bundled synthetic recording in real time, prints events as JSON
lines, and publishes to MQTT: to the configured broker if one answers, else
to a private Mosquitto it starts on a free loopback port when the binary is
installed (and stops on exit).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

DEMO_AUDIO = Path(__file__).resolve().parent / "assets" / "demo.ogg"
log = logging.getLogger(__name__)


def broker_answers(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def private_broker() -> Iterator[int | None]:
    """A throw-away Mosquitto on 127.0.0.1; yields its port, or None without the binary."""
    binary = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )
    if binary is None:
        yield None
        return
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not broker_answers("127.0.0.1", port, 0.2):
                time.sleep(0.05)
            yield port
        finally:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(3)
