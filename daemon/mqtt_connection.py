"""The MQTT sink's connection (paho-mqtt 2.x): one client, its callbacks, the link state as one enum.

:mod:`.mqtt_sink` has the content, :mod:`.mqtt_delivery` the buffer and acks. Callbacks run on paho's
thread; they never take the delivery lock and never publish (``on_publish`` runs under paho's outgoing
lock): they move :class:`Link` and call hooks that only record and wake the sender. Hostile-network
rules are in :mod:`.mqtt_guard`; a failed attempt is logged once per distinct reason.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt

from . import mqtt_guard as guard
from .config import MqttSettings
from .payloads import STATUS_OFFLINE

log = logging.getLogger("emotiond.daemon.mqtt_sink")


class Link(enum.Enum):
    """Where the connection is; only :class:`MqttConnection` and ``mark_ready`` move it."""

    IDLE = "idle"  # no attempt yet, or the last one failed before reaching the broker
    CONNECTING = "connecting"  # a CONNECT is under way (on_pre_connect)
    REFUSED = "refused"  # the broker answered this attempt and refused it
    CONNECTED = "connected"  # CONNACK accepted; session work and the buffer are still to be sent
    READY = "ready"  # reconnect work done: events may go straight to paho


class MqttConnection:
    """One paho client to ``settings.host``; hooks run on paho's thread: ``on_up(client)`` on an accepted
    CONNACK (before the state says connected, before paho re-sends in-flight), then ``woken()``;
    ``on_ack(mid)`` per ack; ``on_incoming(topic, payload)`` per accepted incoming message."""

    def __init__(
        self, settings: MqttSettings,
        client_id: str,
        password: str | None,
        will_topic: str,
        device: str,
        on_up: Callable[[mqtt.Client], None],
        woken: Callable[[], None],
        on_ack: Callable[[int], None],
        on_incoming: Callable[[str, bytes], None],
    ) -> None:
        self.settings = settings
        self.client_id = client_id
        self.where = f"{settings.host}:{settings.port}"
        self._password = password
        self._will_topic = will_topic
        self._device = device
        self._on_up, self._woken, self._on_ack, self._on_incoming = on_up, woken, on_ack, on_incoming
        self._v5 = settings.protocol == "5"
        self._state_lock = threading.Lock()  # held only to move the state, never while calling anything
        self.state = Link.IDLE
        self.closing = False  # close() began: a disconnect now is ours
        self.client: mqtt.Client | None = None
        self.guard = guard.CallbackGuard(self.where, self._connection_broken)
        self.takeovers = guard.TakeoverDetector()
        self._connected_at = 0.0
        self._ever_connected = False
        self._forced_reconnect = False
        self._last_error: str | None = None
        self.reconnects = self.connect_failures = self.dropped_incoming = 0  # health's mqtt counters

    @property
    def connected(self) -> bool:
        return self.state in (Link.CONNECTED, Link.READY)

    @property
    def may_deliver(self) -> bool:
        """Connected, connecting or not yet tried: worth waiting for when flushing at close."""
        untried = self.state == Link.IDLE and not self._ever_connected and self._last_error is None
        return untried or self.state in (Link.CONNECTING, Link.CONNECTED, Link.READY)

    def _move(self, state: Link, only_from: tuple[Link, ...] | None = None) -> Link:
        with self._state_lock:
            before = self.state
            if only_from is None or before in only_from:
                self.state = state
            return before

    def mark_ready(self) -> None:
        """The sender finished the reconnect work; a connection lost meanwhile stays lost."""
        self._move(Link.READY, only_from=(Link.CONNECTED,))

    def make_client(self) -> mqtt.Client:
        """A configured client; raises OSError/ValueError for unreadable TLS files."""
        s = self.settings
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=None if self._v5 else True,
            protocol=mqtt.MQTTv5 if self._v5 else mqtt.MQTTv311,
        )
        if s.username is not None:
            client.username_pw_set(s.username, self._password)
        if s.tls.enabled:
            client.tls_set(
                ca_certs=str(s.tls.ca_file) if s.tls.ca_file else None,
                certfile=str(s.tls.cert_file) if s.tls.cert_file else None,
                keyfile=str(s.tls.key_file) if s.tls.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
            client.tls_insecure_set(s.tls.insecure)
        client.will_set(self._will_topic, STATUS_OFFLINE, qos=s.qos, retain=True)
        client.reconnect_delay_set(s.reconnect_min_s, s.reconnect_max_s)  # type: ignore[arg-type]
        client.max_queued_messages_set(0)
        wrap = self.guard.wrap
        client.on_pre_connect = wrap(self._on_pre_connect)
        client.on_connect = wrap(self._on_connect)
        client.on_connect_fail = wrap(self._on_connect_fail)
        client.on_disconnect = wrap(self._on_disconnect)
        client.on_publish = wrap(lambda client, userdata, mid, reason_code, properties: self._on_ack(mid))
        client.on_message = wrap(self._on_message)
        return client

    def connect(self, client: mqtt.Client) -> None:
        """Start paho's network thread; it connects and reconnects with backoff from now on."""
        self.client = client
        client.connect_async(
            self.settings.host, self.settings.port, self.settings.keepalive_s,
            clean_start=True if self._v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
            properties=guard.connect_properties() if self._v5 else None,
        )
        client.loop_start()

    def stop(self) -> None:
        """Disconnect and stop paho's thread (after :attr:`closing` was set)."""
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()
        self._move(Link.IDLE)
        self.client = None

    def _connection_broken(self) -> None:
        """After an exception in a callback: close the socket so paho's own reconnect takes over."""
        self._forced_reconnect = True  # our own doing: not a takeover, and already logged by the guard
        sock = self.client.socket() if self.client is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    # ------------------------------------------------ paho callbacks (network thread)

    def _on_pre_connect(self, client, userdata) -> None:
        self._move(Link.CONNECTING)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._move(Link.REFUSED)
            self.connect_failures += 1
            hint = ""
            if reason_code.value in (4, 5, 134, 135):  # bad user name or password / not authorized
                hint = " (check mqtt.username and the password)"
            self._log_failure(f"broker refused the connection: {reason_code}{hint}")
            return
        if self._ever_connected:
            self.reconnects += 1
        self._ever_connected = True
        self._last_error = None
        self._connected_at = time.monotonic()
        self._on_up(client)  # before the state moves: paho re-sends the in-flight messages right after this
        self._move(Link.CONNECTED)
        log.info("MQTT connected to %s", self.where)
        self._woken()

    def _on_connect_fail(self, client, userdata) -> None:
        exc = sys.exc_info()[1]  # paho calls this inside its `except OSError:` block
        self._move(Link.IDLE)
        self.connect_failures += 1
        self._log_failure(guard.describe_error(exc) if exc else "connection failed")

    def _log_failure(self, reason: str) -> None:
        # one line per distinct reason and outage; the retries repeat it only at DEBUG
        if reason != self._last_error:
            self._last_error = reason
            log.warning("MQTT cannot connect to %s: %s; retrying with backoff", self.where, reason)
        else:
            log.debug("MQTT still cannot connect to %s: %s", self.where, reason)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        before = self._move(Link.IDLE)
        was = before in (Link.CONNECTED, Link.READY)
        answered = before is not Link.CONNECTING and before is not Link.IDLE
        forced, self._forced_reconnect = self._forced_reconnect, False
        if self.closing:
            return
        if before is Link.IDLE:
            # paho reports a keepalive timeout twice (_check_keepalive, then loop_misc's ping check):
            # the second call is no connect attempt and must not be counted or explained as one
            log.debug("MQTT: repeated disconnect report (%s) ignored", reason_code)
            return
        if forced:
            log.debug("MQTT connection to %s closed after a callback error; reconnecting", self.where)
            return
        lived = time.monotonic() - self._connected_at if was else None
        if self.takeovers.taken_over(reason_code, lived):
            if self.takeovers.should_warn():
                log.error(
                    "MQTT: the broker at %s keeps dropping our connection right after accepting it: another "
                    "client uses client id %r, most likely another emotiond uses the same device id (%s); give "
                    "each device its own mqtt.device_id (or mqtt.client_id)",
                    self.where, self.client_id, self._device,
                )  # fmt: skip
            if self.takeovers.in_loop:
                log.debug("MQTT connection to %s taken over again (%s)", self.where, reason_code)
                return
        special = guard.describe_disconnect(reason_code, was, self.settings.keepalive_s)
        if special is not None:
            if was:
                log.warning("MQTT connection to %s lost: %s; buffering up to %d events",
                            self.where, special, self.settings.buffer_size)
            else:
                self.connect_failures += 1  # a CONNECT was sent and never answered
                self._log_failure(special)
            return
        if not was and not answered:
            # Closed before CONNACK: the TCP connect worked but TLS or CONNECT did not,
            # e.g. a broker with `require_certificate true` and no client certificate here.
            self.connect_failures += 1
            self._log_failure(
                f"the broker closed the connection before accepting it ({reason_code}); "
                "if it requires client certificates, set mqtt.tls.cert_file and mqtt.tls.key_file"
            )
            return
        if was:
            log.warning(
                "MQTT connection to %s lost (%s); buffering up to %d events",
                self.where, reason_code, self.settings.buffer_size,
            )  # fmt: skip

    def _on_message(self, client, userdata, msg) -> None:
        if len(msg.payload) > guard.MAX_INCOMING_BYTES:  # only reached with MQTT 3.1.1 (5 caps it at the broker)
            self.dropped_incoming += 1
            log.log(logging.WARNING if self.dropped_incoming == 1 else logging.DEBUG,
                    "MQTT: dropped a %d-byte message on %s (limit %d bytes; counted in dropped_incoming)",
                    len(msg.payload), msg.topic, guard.MAX_INCOMING_BYTES)
            return
        self._on_incoming(msg.topic, msg.payload)
