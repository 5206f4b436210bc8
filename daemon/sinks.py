"""Sinks: where events go. The pipeline and the daemon know only this interface.

Every method must return quickly and never raise for a network problem: the
audio loop calls them inline, and the daemon must not die from a hiccup. A sink
that raises anyway (a bug) is handled in one place, :class:`SinkSet`: logged
once per sink and method, counted in health (``sink_failures``), and the other
sinks still get the event.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
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

    def stats(self) -> dict[str, Any]:
        """Live counters for the ``mqtt`` object of health (``{}`` for a sink with none)."""


class SinkSet:
    """All sinks as one ``Sink``: each call reaches every sink, and a failing sink never stops the others.

    The failure policy lives here so the pipeline and the daemon treat a sink
    bug alike: the first failure of a sink's method is logged with its
    traceback, repeats only at DEBUG, and every one is counted (``failures``,
    health's ``sink_failures``).
    """

    def __init__(self, sinks: Sequence[Sink] = ()) -> None:
        self._sinks: list[Sink] = list(sinks)
        self.failures = 0
        self._logged: set[tuple[int, str]] = set()

    def __iter__(self) -> Iterator[Sink]:
        return iter(list(self._sinks))

    def __len__(self) -> int:
        return len(self._sinks)

    def __getitem__(self, index: int) -> Sink:
        return self._sinks[index]

    def replace(self, sinks: Sequence[Sink]) -> None:
        """New members (a reload); the failure count carries on."""
        self._sinks = list(sinks)
        self._logged.clear()

    def _each(self, method: str, call: Callable[[Sink], Any]) -> None:
        for sink in list(self._sinks):
            try:
                call(sink)
            except Exception:  # a sink bug must not take the audio loop down
                self.failures += 1
                key = (id(sink), method)
                if key in self._logged:
                    log.debug("sink %s.%s failed again", type(sink).__name__, method, exc_info=True)
                else:
                    self._logged.add(key)
                    log.exception("sink %s.%s failed (logged once; counted in health)", type(sink).__name__, method)

    def start(self) -> None:
        self._each("start", lambda sink: sink.start())

    def publish_emotion(self, payload: dict[str, Any]) -> None:
        self._each("publish_emotion", lambda sink: sink.publish_emotion(payload))

    def publish_utterance(self, payload: dict[str, Any]) -> None:
        self._each("publish_utterance", lambda sink: sink.publish_utterance(payload))

    def set_status(self, status: str, reason: str | None = None) -> None:
        self._each("set_status", lambda sink: sink.set_status(status, reason))

    def publish_health(self, payload: dict[str, Any]) -> None:
        self._each("publish_health", lambda sink: sink.publish_health(payload))

    def close(self, timeout_s: float) -> None:
        self._each("close", lambda sink: sink.close(timeout_s))

    def stats(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        self._each("stats", lambda sink: merged.update(sink.stats()))
        return merged


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

    def stats(self) -> dict[str, Any]:
        return {}
