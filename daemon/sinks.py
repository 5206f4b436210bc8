"""Sinks: where events go. The pipeline knows only this interface.

Every method must return quickly and never raise for a network problem: the
audio loop calls them inline, and the daemon must not die from a hiccup.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any, Protocol, TextIO

log = logging.getLogger(__name__)


class Sink(Protocol):
    def start(self) -> None: ...

    def publish_emotion(self, payload: dict[str, Any]) -> None: ...

    def publish_utterance(self, payload: dict[str, Any]) -> None: ...

    def set_status(self, status: str, reason: str | None = None) -> None:
        """``online`` | ``degraded`` (``reason`` says why) | ``offline``; called only on a change."""

    def publish_health(self, payload: dict[str, Any]) -> None: ...

    def close(self, timeout_s: float) -> None: ...


class StdoutSink:
    """One JSON object per line, for people without a broker and for pipes (``| jq``)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdout
        self.disabled = False

    def _write(self, kind: str, payload: dict[str, Any]) -> None:
        if self.disabled:
            return
        try:
            self._stream.write(json.dumps({"event": kind, **payload}, separators=(",", ":")) + "\n")
            self._stream.flush()
        except (OSError, ValueError) as exc:  # reader gone, disk full (>/dev/full), stream closed
            self._disable(exc)

    def _disable(self, exc: BaseException) -> None:
        """Stop writing after the first failure: one log line, not one traceback per event.

        The unwritable bytes stay in Python's stdout buffer and would fail again
        at exit ("Exception ignored … BrokenPipeError"), so fd 1 is pointed at
        /dev/null: nothing else in the daemon writes to stdout.
        """
        self.disabled = True
        why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        log.error("stdout sink disabled: cannot write events to standard output (%s); MQTT and logs carry on", why)
        if self._stream is sys.stdout:
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                os.close(devnull)
            except (OSError, ValueError):
                pass

    def start(self) -> None:
        pass

    def publish_emotion(self, payload: dict[str, Any]) -> None:
        self._write("emotion", payload)

    def publish_utterance(self, payload: dict[str, Any]) -> None:
        self._write("utterance", payload)

    def set_status(self, status: str, reason: str | None = None) -> None:
        self._write("status", {"status": status} if reason is None else {"status": status, "reason": reason})

    def publish_health(self, payload: dict[str, Any]) -> None:
        pass  # health is for dashboards; on stdout it would drown the events

    def close(self, timeout_s: float) -> None:
        pass
