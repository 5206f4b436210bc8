"""Logging for the daemon: plain lines, journald-friendly lines, or JSON lines (``logging.*``)."""

from __future__ import annotations

import json
import logging
import os

from .config import Settings


def configure_logging(settings: Settings, debug: bool = False) -> None:
    """Level and format from ``logging.*``; called at start and again on every reload."""
    level = logging.DEBUG if debug else getattr(logging, settings.logging.level)
    root = logging.getLogger()
    root.setLevel(level)
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    fmt: logging.Formatter
    if settings.logging.json_lines:
        fmt = JsonFormatter()
    elif os.environ.get("JOURNAL_STREAM"):
        fmt = logging.Formatter("%(levelname)s %(name)s: %(message)s")  # journald adds the time
    else:
        fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in root.handlers:
        handler.setFormatter(fmt)
    for noisy in ("paho", "urllib3"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


class JsonFormatter(logging.Formatter):
    """One JSON object per record, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {"ts": self.formatTime(record), "level": record.levelname, "logger": record.name,
             "msg": record.getMessage()}
        )
