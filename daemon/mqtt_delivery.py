"""The MQTT sink's delivery: offline buffer, acknowledgements and the sender thread.

Delivery rules (tests/test_mqtt_outage.py checks them):

* :meth:`Delivery.submit` is called inline by the audio loop: it only hands the
  message to paho or buffers it; no blocking, no exceptions for network problems.
* While the connection is not :attr:`~.mqtt_connection.Link.READY` events go to
  a bounded ``deque(maxlen=buffer_size)``; when it is full the oldest is dropped
  and counted (``dropped_events``), logged once per outage.
* Messages handed to paho but not acknowledged when the link drops stay in
  paho's session and are re-sent (``dup``) after the reconnect; they are tracked
  by ``mid`` in the outbox and the buffer is flushed only after they are
  acknowledged (at most ``RESEND_GATE_S``), so events arrive in order. A full
  buffer while connected (reconnect work sent, no gate) is flushed, not dropped.
* One ``mqtt-sender`` thread does the reconnect work (the sink's ``work`` hook:
  status, discovery, retained state) and then the flush, so paho callbacks
  never publish.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

import paho.mqtt.client as mqtt

from .config import MqttSettings
from .mqtt_connection import Link, MqttConnection

log = logging.getLogger("emotiond.daemon.mqtt_sink")

RESEND_GATE_S = 5.0  # longest wait for pre-outage in-flight messages before flushing anyway


class Msg(NamedTuple):
    topic: str
    payload: str
    retain: bool


class Delivery:
    """Gets messages to the broker in order, across outages; ``lock`` guards the buffer and the sink's state.

    ``work()`` runs on the sender thread with ``lock`` held after every wake-up
    while connected; ``on_ready()`` likewise once the buffer has drained.
    """

    def __init__(
        self, settings: MqttSettings, conn: MqttConnection, work: Callable[[], None], on_ready: Callable[[], None]
    ) -> None:
        self.qos = settings.qos
        self.buffer_size = settings.buffer_size
        self.conn = conn
        self._work, self._on_ready = work, on_ready
        self.lock = threading.Lock()  # buffer and the sink's state; never held in paho callbacks
        self._ack_lock = threading.Lock()  # outbox; held only briefly, never while calling paho
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.buffer: deque[Msg] = deque(maxlen=settings.buffer_size)
        self._outbox: dict[int, Msg] = {}  # mid → message handed to paho, not yet acknowledged
        self._early_acks: set[int] = set()
        self._gate: set[int] = set()  # in flight at the reconnect: flush after these are acknowledged
        self._gate_since = 0.0
        self._session_sent = False  # the sink's work ran on this connection: status and discovery went first
        self.hold_until: float | None = None  # events wait until then after the first discovery
        self.published = self.dropped = 0
        self._dropped_this_outage = 0
        self._drop_logged = False
        self._sender: threading.Thread | None = None
        self.undelivered: list[Msg] = []  # after close(): what never reached the broker, oldest first

    def start(self) -> None:
        self._sender = threading.Thread(target=self._run_sender, name="mqtt-sender", daemon=True)
        self._sender.start()

    def wake(self) -> None:
        self._wake.set()

    # ------------------------------------------------ hooks from paho's thread (no lock but the ack lock)

    def on_up(self) -> None:
        """A new connection: paho re-sends the unacknowledged messages right after this; flush after them."""
        self._session_sent = False
        with self._ack_lock:
            self._gate = set(self._outbox)
            self._gate_since = time.monotonic()

    def on_ack(self, mid: int) -> None:
        with self._ack_lock:
            if self._outbox.pop(mid, None) is None and self.qos > 0:
                self._early_acks.add(mid)
            self.published += 1
            if self._gate:
                self._gate.discard(mid)
                if not self._gate:
                    self._wake.set()

    # ------------------------------------------------ sending (``lock`` held)

    def send(self, msg: Msg) -> bool:
        """Hand one message to paho; False = keep it buffered."""
        client = self.conn.client
        assert client is not None
        try:
            info = client.publish(msg.topic, msg.payload, qos=self.qos, retain=msg.retain)
        except Exception as exc:  # a bad topic/payload must never stop the daemon
            log.error("MQTT publish to %s failed: %s", msg.topic, exc)
            return True
        if info.rc == mqtt.MQTT_ERR_SUCCESS or (info.rc == mqtt.MQTT_ERR_NO_CONN and self.qos > 0):
            # with QoS > 0 paho keeps even a NO_CONN message in its session and sends it later
            if self.qos > 0:
                with self._ack_lock:
                    if info.mid in self._early_acks:
                        self._early_acks.discard(info.mid)
                    else:
                        self._outbox[info.mid] = msg
            return True
        return False

    def holding(self) -> bool:
        """True while events wait for Home Assistant to subscribe after the first discovery."""
        return self.hold_until is not None and time.monotonic() < self.hold_until

    def flush(self) -> None:
        """Send the buffer in order; ready once it is empty."""
        while self.buffer and self.conn.connected:
            if not self.send(self.buffer[0]):
                return
            self.buffer.popleft()
        if self.conn.connected and not self.buffer:
            if self._dropped_this_outage:
                log.warning(
                    "MQTT back on %s: %d events dropped while it was unreachable (buffer_size=%d)",
                    self.conn.where, self._dropped_this_outage, self.buffer_size,
                )  # fmt: skip
            self._dropped_this_outage = 0
            self._drop_logged = False
            self.conn.mark_ready()
            self._on_ready()

    def _run_sender(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            if not self.conn.connected:
                continue
            with self.lock:
                if not self.conn.connected:
                    continue
                self._work()
                self._session_sent = True
                if self.conn.state is not Link.READY and not self.holding() and not self._gated():
                    self.flush()

    def _gated(self) -> bool:
        """True while messages in flight at the reconnect are unacknowledged (for at most ``RESEND_GATE_S``)."""
        with self._ack_lock:
            gate = bool(self._gate & self._outbox.keys())
            if gate and time.monotonic() - self._gate_since > RESEND_GATE_S:
                log.warning("MQTT: %d in-flight messages not acknowledged; flushing anyway", len(self._gate))
                gate = False
            if not gate:
                self._gate.clear()
            return gate

    def submit(self, msg: Msg) -> None:
        """An event: straight to paho when ready, else into the buffer (dropping the oldest when full)."""
        with self.lock:
            ready = self.conn.client is not None and self.conn.state is Link.READY
            if ready and not self.buffer and self.send(msg):
                return
            full = len(self.buffer) == self.buffer.maxlen
            if full and self.conn.connected and self._session_sent and not self._gated():
                # connected, so nothing need be dropped: flush now rather than wait for the sender
                # (the discovery delay, or its end just before the sender's next turn, never costs an event)
                if self.holding():
                    self.hold_until = time.monotonic()
                self.flush()
                if self.conn.state is Link.READY and not self.buffer and self.send(msg):
                    return
            if len(self.buffer) == self.buffer.maxlen:
                self._count_drop()
                if not self._drop_logged:
                    self._drop_logged = True
                    log.warning(
                        "MQTT buffer full (%d events) while %s is unreachable: dropping the oldest",
                        self.buffer_size, self.conn.where,
                    )  # fmt: skip
            self.buffer.append(msg)
        self._wake.set()

    def _count_drop(self) -> None:
        self.dropped += 1
        self._dropped_this_outage += 1

    def inflight(self) -> int:
        with self._ack_lock:
            return len(self._outbox)

    # ------------------------------------------------ shutdown and hand-over

    def drain(self, deadline: float) -> None:
        """Wait (until ``deadline``) for the buffer and the outbox to empty while a connection is up or coming.

        A close right after start (``sample-events``) must wait for the first CONNACK, not
        give up because the state still says connecting.
        """
        self._wake.set()
        while self.conn.may_deliver and time.monotonic() < deadline:
            if not self.inflight() and not self.buffer:
                break
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop the sender thread (at most 2 s)."""
        self._stop.set()
        self._wake.set()
        if self._sender is not None:
            self._sender.join(timeout=2)

    def keep_undelivered(self) -> int:
        """What never reached the broker (unacknowledged, then buffered) into :attr:`undelivered`; ``lock`` held."""
        with self._ack_lock:
            unacked = list(self._outbox.values())  # insertion order = the order they were sent
        self.undelivered = [*unacked, *self.buffer]
        return len(self.undelivered)

    def inherit(self, old: Delivery) -> int:
        """Take ``old``'s undelivered events (first) and counters; returns how many were carried."""
        with self.lock:
            pending = [*old.undelivered, *self.buffer]
            self.buffer.clear()
            for msg in pending:
                if len(self.buffer) == self.buffer.maxlen:
                    self._count_drop()
                self.buffer.append(msg)
            self.dropped += old.dropped
            self.published += old.published
        return len(pending)
