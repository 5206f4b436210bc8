"""systemd notification (READY, WATCHDOG, STATUS, STOPPING) through the sdnotify library.

Outside systemd (no ``NOTIFY_SOCKET``) every call is a cheap no-op.
"""

from __future__ import annotations

import os
import time

import sdnotify


class ServiceNotifier:
    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._notifier = sdnotify.SystemdNotifier() if self.enabled else None
        sock = getattr(self._notifier, "socket", None)
        if sock is not None:
            # Never let a reader that stopped reading (a full datagram queue) stall
            # the audio loop; sdnotify swallows the resulting BlockingIOError.
            sock.setblocking(False)
        usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        # Ping at half the period, as sd_watchdog_enabled(3) recommends.
        self.watchdog_interval_s = usec / 2e6 if usec > 0 else None
        self._last_ping = 0.0
        self._last_status = ""
        self.ready_sent = False

    def _send(self, message: str) -> None:
        if self._notifier is not None:
            self._notifier.notify(message)

    def ready(self, status: str) -> None:
        if not self.ready_sent:
            self._send(f"READY=1\nSTATUS={status}")
            self._last_status = status
            self.ready_sent = True

    def status(self, status: str) -> None:
        if status != self._last_status:
            self._send(f"STATUS={status}")
            self._last_status = status

    def watchdog(self) -> None:
        """Call from the processing loop; pings only as often as systemd needs."""
        if self.watchdog_interval_s is None:
            return
        now = time.monotonic()
        if now - self._last_ping >= self.watchdog_interval_s:
            self._send("WATCHDOG=1")
            self._last_ping = now

    def reloading(self) -> None:
        self._send("RELOADING=1")

    def reloaded(self) -> None:
        self._send("READY=1")

    def stopping(self) -> None:
        self._send("STOPPING=1")
