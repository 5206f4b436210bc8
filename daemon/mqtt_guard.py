"""What keeps the MQTT sink alive on a hostile network: callback guard, takeover loop, incoming cap.

Small, independent helpers so :mod:`.mqtt_sink` only wires them in:

* :class:`CallbackGuard`: paho re-raises an exception from a callback and its
  network thread dies with it; the sink would then believe it is connected
  forever. The guard catches it, logs it once, and asks for a reconnect.
* :class:`TakeoverDetector`: when another client connects with our client id,
  the broker closes our connection (MQTT 5 brokers may say *Session taken
  over*, 0x8E; Mosquitto 2.0 just closes the socket). Two daemons with one id
  do this to each other every few seconds. Connections that the broker drops
  within seconds of accepting them, again and again, are named in one log line.
* :func:`connect_properties`: MQTT 5 ``Maximum Packet Size``, so the broker
  never sends us a message bigger than we accept (a 200 MB message on
  ``homeassistant/status`` would otherwise be read into memory in full).
"""

from __future__ import annotations

import functools
import logging
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

log = logging.getLogger("emotiond.daemon.mqtt_sink")

MAX_INCOMING_BYTES = 64 * 1024  # payload of any message we accept (we only read Home Assistant's birth message)
PACKET_OVERHEAD = 4096  # fixed header, topic (≤ 1 KiB by config validation), properties
SESSION_TAKEN_OVER = 0x8E
KEEPALIVE_TIMEOUT = 0x8D
TAKEOVER_WINDOW_S = 60.0
TAKEOVERS_FOR_LOOP = 3
SHORT_LIVED_S = 10.0  # a connection the broker drops sooner than this, repeatedly, is suspect
TAKEOVER_QUIET_S = 600.0  # warn again only after this long without a takeover


def connect_properties() -> Properties:
    """CONNECT properties for MQTT 5: the largest packet the broker may send us."""
    props = Properties(PacketTypes.CONNECT)
    props.MaximumPacketSize = MAX_INCOMING_BYTES + PACKET_OVERHEAD
    return props


def _code(reason_code: Any) -> int | None:
    value = getattr(reason_code, "value", reason_code)
    return value if isinstance(value, int) else None


def describe_disconnect(reason_code: Any, was_connected: bool, keepalive_s: int) -> str | None:
    """A precise reason for disconnects that the generic message would misreport, else None."""
    if _code(reason_code) == KEEPALIVE_TIMEOUT:
        if was_connected:
            return f"the broker stopped answering within the {keepalive_s} s keepalive (frozen, overloaded, dead link?)"
        return (f"the broker accepted the TCP connection but did not answer the MQTT CONNECT within the "
                f"{keepalive_s} s keepalive (frozen or overloaded?)")
    return None


class CallbackGuard:
    """Wraps paho callbacks: an exception is logged once per kind and answered with ``on_error()``."""

    def __init__(self, where: str, on_error: Callable[[], None]) -> None:
        self.where = where
        self.on_error = on_error
        self.errors = 0
        self._seen: set[tuple[str, str]] = set()

    def wrap(self, fn: Callable[..., None]) -> Callable[..., None]:
        name = fn.__name__

        @functools.wraps(fn)
        def guarded(*args: Any, **kwargs: Any) -> None:
            try:
                fn(*args, **kwargs)
            except Exception as exc:  # the point: paho's thread must survive
                self.errors += 1
                kind = (name, type(exc).__name__)
                text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                if kind not in self._seen:
                    self._seen.add(kind)
                    log.error("MQTT: error in %s for %s (%s: %r); reconnecting", name.lstrip("_"), self.where,
                              type(exc).__name__, text[:200])
                else:
                    log.debug("MQTT: error in %s again: %r", name, text[:200])
                try:
                    self.on_error()
                except Exception:
                    log.debug("MQTT: reconnect request failed", exc_info=True)

        return guarded


class TakeoverDetector:
    """Counts takeovers (0x8E, or short-lived connections the broker dropped); says when they form a loop."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._times: deque[float] = deque(maxlen=TAKEOVERS_FOR_LOOP)
        self._warned_at: float | None = None
        self.count = 0

    def taken_over(self, reason_code: Any, lived_s: float | None) -> bool:
        """Record a disconnect of a connection that lived ``lived_s``; True when it looks like a takeover."""
        code = _code(reason_code)
        short = lived_s is not None and lived_s < SHORT_LIVED_S and code not in (0, KEEPALIVE_TIMEOUT)
        if code != SESSION_TAKEN_OVER and not short:
            return False
        now = self._clock()
        if self._times and now - self._times[-1] > TAKEOVER_QUIET_S:
            self._warned_at = None  # a new episode deserves a new line
        self._times.append(now)
        self.count += 1
        return True

    def should_warn(self) -> bool:
        """True once per episode: ``TAKEOVERS_FOR_LOOP`` takeovers within ``TAKEOVER_WINDOW_S``."""
        if self._warned_at is not None or len(self._times) < TAKEOVERS_FOR_LOOP:
            return False
        if self._times[-1] - self._times[0] > TAKEOVER_WINDOW_S:
            return False
        self._warned_at = self._times[-1]
        return True

    @property
    def in_loop(self) -> bool:
        """A loop was reported and has not calmed down since."""
        return self._warned_at is not None


def describe_error(exc: BaseException) -> str:
    """A short human reason for a failed connection attempt (no secrets, no traceback)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = exc.verify_message or exc.reason
        return f"TLS certificate verification failed: {why} (check mqtt.tls.ca_file and host)"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the broker running and listening on this port?)"
    if isinstance(exc, socket.gaierror):
        return f"host name not resolved ({exc.strerror})"
    if isinstance(exc, TimeoutError):
        return "connection timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"
