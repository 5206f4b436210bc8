"""What this process costs (CPU, memory), for the health message."""

from __future__ import annotations

import os
import resource


def rss_mb() -> float:
    """Peak resident set size of this process (Linux reports KiB); ``peak_rss_mb`` in health."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float | None:
    """Resident set size now (``rss_mb`` in health), from /proc; None where there is no /proc."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / (1024.0 * 1024.0)


def process_usage() -> dict[str, float | None]:
    """``cpu_s``, ``rss_mb`` and ``peak_rss_mb`` as health reports them (rounded)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    now = current_rss_mb()
    return {
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "rss_mb": None if now is None else round(now, 1),
        "peak_rss_mb": round(rss_mb(), 1),
    }
