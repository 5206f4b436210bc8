"""scripts/bootstrap on a fresh Pi: it waits for another package manager's lock, saying why."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WAIT = ROOT / "scripts" / "wait-apt-lock"

# holds an fcntl lock, as dpkg and apt-get do, for argv[2] seconds
HOLDER = (
    "import fcntl, sys, time\n"
    "f = open(sys.argv[1], 'a')\n"
    "fcntl.lockf(f, fcntl.LOCK_EX)\n"
    "print('locked', flush=True)\n"
    "time.sleep(float(sys.argv[2]))\n"
)


def _hold(lock: Path, seconds: float) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock), str(seconds)], stdout=subprocess.PIPE)
    assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
    return holder


def test_waits_for_a_held_lock_and_says_why(tmp_path: Path) -> None:
    lock = tmp_path / "lock-frontend"
    holder = _hold(lock, 2.0)
    t0 = time.monotonic()
    proc = subprocess.run([str(WAIT), "30", str(lock)], capture_output=True, text=True, timeout=60)
    waited = time.monotonic() - t0
    holder.wait(10)
    assert proc.returncode == 0, proc.stderr
    assert 1.0 < waited < 10, waited
    lines = proc.stderr.splitlines()
    assert lines[0].startswith(f"bootstrap: another apt-get or dpkg holds {lock}")
    assert "waiting up to 30 s" in lines[0] and lines[-1].startswith("bootstrap: package lock free after")


def test_gives_up_with_one_line_when_the_lock_stays(tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    holder = _hold(lock, 8.0)
    try:
        proc = subprocess.run([str(WAIT), "1", str(lock)], capture_output=True, text=True, timeout=30)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1] == (
        f"bootstrap: {lock} is still held after 1 s; try again when the other package manager is done"
    )


def test_free_or_missing_locks_pass_silently(tmp_path: Path) -> None:
    proc = subprocess.run([str(WAIT), "5", str(tmp_path / "free"), str(tmp_path / "absent" / "x")],
                          capture_output=True, text=True, timeout=30)
    assert (proc.returncode, proc.stderr) == (0, "")
