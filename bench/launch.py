"""Run one command and report its own rusage (peak RSS, CPU) and spawn time as JSON on stdout.

Why a launcher: on Linux a child's ``ru_maxrss`` keeps the high-water mark of
the memory it had *before* ``exec``, i.e. the size of the parent that forked
it. Forked from the bench (with a model and audio loaded) the daemon would
be charged ~50 MB it never used; forked from this small process it is not.

    python -m bench.launch -- CMD ARGS...
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def main() -> int:
    argv = sys.argv[1:]
    if argv and argv[0] == "--":
        argv = argv[1:]
    t_spawn = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    t_end = time.monotonic()
    print(json.dumps({
        "t_spawn": t_spawn,
        "wall_s": t_end - t_spawn,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "rss_mb": usage.ru_maxrss / 1024,
        "exit_code": os.waitstatus_to_exitcode(status),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
