"""``emotiond run --demo``: the whole pipeline on a fresh machine with no microphone or broker.

It plays the bundled synthetic recording in real time, prints events as JSON
lines, and publishes to MQTT: to the configured broker if one answers, else
to a private Mosquitto it starts on a free loopback port when the binary is
installed (and stops on exit, also when the daemon is killed: see
:func:`private_broker`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
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


STALE_PREFIX = "emotiond-demo-broker-"
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGTERM when the daemon dies, even by SIGKILL (Linux prctl).

    libc is resolved here, in the parent: loading libraries between fork and
    exec is unsafe. None where prctl does not exist.
    """
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the daemon died before prctl took effect
            os._exit(1)

    return preexec


def _running(pid: int) -> bool:
    """A process that exists and is not a zombie (an orphan nobody reaped yet is gone for our purposes)."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return status.rsplit(")", 1)[-1].split()[0] != "Z"


def _is_our_broker(pid: int, conf: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(b"mosquitto" in part for part in cmdline[:1]) and str(conf).encode() in cmdline


def stop_stale_brokers(tmp_root: Path | None = None) -> int:
    """Stop private brokers (and remove their folders) left by a demo that was killed; returns how many.

    A folder is ours by its name and holds the broker's pid and config; the pid
    is signalled only if its command line still names that config, so a
    recycled pid is never touched.
    """
    root = Path(tmp_root or tempfile.gettempdir())
    stopped = 0
    for folder in root.glob(f"{STALE_PREFIX}*"):
        pid_file, conf = folder / "broker.pid", folder / "mosquitto.conf"
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            pid = 0
        if pid > 0 and _is_our_broker(pid, conf):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
                stopped += 1
                log.info("demo: stopped a private broker (pid %d) left by an earlier run", pid)
        elif pid > 0 and _running(pid):
            continue  # a live process that is not our broker: leave its folder alone
        shutil.rmtree(folder, ignore_errors=True)
    return stopped


@contextlib.contextmanager
def private_broker(tmp_root: Path | None = None) -> Iterator[int | None]:
    """A throw-away Mosquitto on 127.0.0.1; yields its port, or None without the binary.

    The broker dies with the daemon, even when the daemon is killed with
    SIGKILL (``PR_SET_PDEATHSIG``); a folder left behind by such a kill is
    cleaned up, and a broker that outlived its daemon stopped, on the next run.
    """
    binary = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )
    if binary is None:
        yield None
        return
    stop_stale_brokers(tmp_root)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix=STALE_PREFIX, dir=tmp_root) as tmp:
        conf = Path(tmp) / "mosquitto.conf"
        # As root, Mosquitto would switch to user 'mosquitto', and a change of user clears
        # PR_SET_PDEATHSIG; the demo is already root then, and the broker is loopback-only.
        stay = "user root\n" if os.geteuid() == 0 else ""
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n{stay}")
        proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                preexec_fn=_die_with_parent())
        (Path(tmp) / "broker.pid").write_text(f"{proc.pid}\n")
        try:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not broker_answers("127.0.0.1", port, 0.2):
                time.sleep(0.05)
            yield port
        finally:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(3)
