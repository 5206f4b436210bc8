"""MQTT sink (paho-mqtt 2.x): emotions, utterances, status and health, never audio.

Threads: paho's network thread (``loop_start``) and one small *sender* thread of
ours. Paho callbacks never take our lock and never publish; they only flip
flags and wake the sender, which avoids lock-order deadlocks with paho's own
mutexes (``on_publish`` runs while paho holds its outgoing-message lock).

Delivery rules
--------------
* The audio loop calls ``publish_*`` inline; they only serialise and enqueue or
  hand the message to paho: no blocking, no exceptions for network problems.
* While the connection is down (or not yet *ready* after a reconnect) events go
  to a bounded ``deque(maxlen=buffer_size)``; when it is full the oldest event is
  dropped and counted (``dropped_events``), logged once per outage.
* Messages handed to paho but not yet acknowledged when the link drops stay in
  paho's session and are re-sent (``dup``) after the reconnect; we track them by
  ``mid`` in ``_outbox`` and flush our buffer only after they are acknowledged,
  so events arrive in order (tests/test_mqtt_outage.py checks both).
* On every (re)connect: the availability (``online``) and the problem state
  (``degraded`` and why) retained, Home Assistant discovery, the last health and
  the last emotion state (unless a newer one is still buffered), then the buffer
  in order. Last Will: ``offline``. Status and problem are otherwise published
  only when they change.
* After the first discovery of this sink, events wait ``homeassistant.discovery_delay_s``
  in the buffer, so HA has subscribed to a device it has never seen before the
  first utterance arrives (with ``--fast`` it otherwise came too early).
* A reload that replaces the sink hands its undelivered events to the new one
  (:meth:`MqttSink.inherit`), so changing a broker setting loses nothing.

Hostile-network rules (see :mod:`.mqtt_guard`): an exception in a paho callback
is logged once and answered with a reconnect instead of killing paho's thread;
incoming messages are capped (MQTT 5 ``Maximum Packet Size``) and larger ones
dropped and counted; a broker that takes our session over again and again (two
daemons with one client id) is named in one log line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
import sys
import threading
import time
from collections import deque
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt

from .config import HomeAssistantSettings, MqttSettings
from .homeassistant import discovery_messages, ha_status_topic, removal_messages
from .mqtt_guard import MAX_INCOMING_BYTES, CallbackGuard, TakeoverDetector, connect_properties, describe_disconnect
from .payloads import SCHEMA_VERSION, STATUS_DEGRADED, STATUS_OFFLINE, STATUS_ONLINE, Topics, iso_utc

log = logging.getLogger(__name__)

RESEND_GATE_S = 5.0  # longest wait for pre-outage in-flight messages before flushing anyway


class _Msg(NamedTuple):
    topic: str
    payload: str
    retain: bool


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


class MqttSink:
    """The :class:`~emotiond.daemon.sinks.Sink` that publishes to an MQTT broker."""

    def __init__(
        self,
        settings: MqttSettings,
        password: str | None,
        topics: Topics,
        labels: tuple[str, ...] = (),
        homeassistant: HomeAssistantSettings | None = None,
        client_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.client_id = client_id or settings.client_id or f"emotiond-{topics.device}"
        self.topics = topics
        self.labels = tuple(labels)
        self.ha = homeassistant or HomeAssistantSettings()
        self.qos = settings.qos
        self.where = f"{settings.host}:{settings.port}"

        self._lock = threading.Lock()  # buffer, status, last payloads; never held in paho callbacks
        self._ack_lock = threading.Lock()  # outbox; held only briefly, never while calling paho
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._buffer: deque[_Msg] = deque(maxlen=settings.buffer_size)
        self._outbox: dict[int, _Msg] = {}  # mid → message handed to paho, not yet acknowledged
        self._early_acks: set[int] = set()
        self._gate: set[int] = set()  # in-flight at the reconnect: flush after these are acked
        self._gate_since = 0.0

        self._status = STATUS_ONLINE  # the daemon's: online | degraded | offline (health.status)
        self._reason: str | None = None  # why it is degraded
        self._sent_status: tuple[str, str] | None = None  # (availability, problem JSON) last handed to paho
        self._hold_until: float | None = None  # events wait until then after the first discovery
        self._last_emotion: str | None = None
        self._last_health: dict[str, Any] | None = None
        self._health_pending = False  # a health message arrived while not ready: send it once ready

        self._connected = False  # transport up (CONNACK accepted)
        self._connack_seen = False  # the broker answered this attempt (accepted or refused)
        self._ready = False  # reconnect work done: events may go straight to paho
        self._session_pending = False  # on_connect happened; sender must publish status etc.
        self._discovery_pending = False
        self._closing = False
        self._ever_connected = False

        self._published = 0
        self._dropped = 0
        self._dropped_this_outage = 0
        self._drop_logged = False
        self._reconnects = 0
        self._connect_failures = 0
        self._last_error: str | None = None

        self._client: mqtt.Client | None = None
        self._sender: threading.Thread | None = None
        self._password = password
        self._v5 = settings.protocol == "5"
        self._guard = CallbackGuard(self.where, self._connection_broken)
        self._takeovers = TakeoverDetector()
        self._connected_at = 0.0
        self._forced_reconnect = False
        self._attempting = False  # a connect attempt started (on_pre_connect) and has not ended yet
        self._dropped_incoming = 0
        self._handing_over = False
        self.undelivered: list[_Msg] = []  # after close(): what never reached the broker, oldest first

    # ------------------------------------------------------------------ setup

    def _make_client(self) -> mqtt.Client:
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
        client.will_set(self.topics.status, STATUS_OFFLINE, qos=self.qos, retain=True)
        client.reconnect_delay_set(s.reconnect_min_s, s.reconnect_max_s)  # type: ignore[arg-type]
        client.max_queued_messages_set(0)
        guard = self._guard
        client.on_pre_connect = guard.wrap(self._on_pre_connect)
        client.on_connect = guard.wrap(self._on_connect)
        client.on_connect_fail = guard.wrap(self._on_connect_fail)
        client.on_disconnect = guard.wrap(self._on_disconnect)
        client.on_publish = guard.wrap(self._on_publish)
        client.on_message = guard.wrap(self._on_message)
        return client

    def validate(self) -> None:
        """Build (and drop) a client: raises OSError/ValueError for unreadable TLS files, before anything changes."""
        self._make_client()

    def _connection_broken(self) -> None:
        """After an exception in a callback: close the socket so paho's own reconnect takes over."""
        self._forced_reconnect = True  # our own doing: not a takeover, and already logged by the guard
        client = self._client
        sock = client.socket() if client is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def start(self) -> None:
        if self._client is not None:
            return
        try:
            self._client = self._make_client()
        except (
            OSError,
            ValueError,
        ) as exc:  # unreadable CA/cert files: a config problem, not fatal
            log.error(
                "MQTT disabled: cannot set up the client for %s: %s",
                self.where,
                describe_error(exc),
            )
            return
        self._sender = threading.Thread(target=self._run_sender, name="mqtt-sender", daemon=True)
        self._sender.start()
        self._client.connect_async(
            self.settings.host, self.settings.port, self.settings.keepalive_s,
            clean_start=True if self._v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
            properties=connect_properties() if self._v5 else None,
        )
        self._client.loop_start()
        log.info("MQTT connecting to %s as %s", self.where, self.topics.root)

    # ------------------------------------------------ paho callbacks (network thread)

    def _on_pre_connect(self, client, userdata) -> None:
        self._attempting = True

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connack_seen = True
        if reason_code.is_failure:
            self._connect_failures += 1
            hint = ""
            if reason_code.value in (4, 5, 134, 135):  # bad user name or password / not authorized
                hint = " (check mqtt.username and the password)"
            self._log_failure(f"broker refused the connection: {reason_code}{hint}")
            return
        with self._ack_lock:
            self._gate = set(self._outbox)  # paho re-sends these right after this callback
            self._gate_since = time.monotonic()
        if self._ever_connected:
            self._reconnects += 1
        self._ever_connected = True
        self._last_error = None
        self._connected_at = time.monotonic()
        self._connected = True
        self._session_pending = True
        if self.ha.discovery:
            client.subscribe(ha_status_topic(self.ha.prefix), qos=1)
        log.info("MQTT connected to %s", self.where)
        self._wake.set()

    def _on_connect_fail(self, client, userdata) -> None:
        exc = sys.exc_info()[1]  # paho calls this inside its `except OSError:` block
        self._attempting = False
        self._connect_failures += 1
        self._log_failure(describe_error(exc) if exc else "connection failed")

    def _log_failure(self, reason: str) -> None:
        # one line per distinct reason and outage; the retries repeat it only at DEBUG
        if reason != self._last_error:
            self._last_error = reason
            log.warning("MQTT cannot connect to %s: %s; retrying with backoff", self.where, reason)
        else:
            log.debug("MQTT still cannot connect to %s: %s", self.where, reason)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self._connected
        self._connected = False
        self._ready = False
        answered, self._connack_seen = self._connack_seen, False
        forced, self._forced_reconnect = self._forced_reconnect, False
        attempting, self._attempting = self._attempting, False
        if self._closing:
            return
        if not was and not attempting:
            # paho reports a keepalive timeout twice (_check_keepalive, then loop_misc's ping check):
            # the second call is no connect attempt and must not be counted or explained as one
            log.debug("MQTT: repeated disconnect report (%s) ignored", reason_code)
            return
        if forced:
            log.debug("MQTT connection to %s closed after a callback error; reconnecting", self.where)
            return
        lived = time.monotonic() - self._connected_at if was else None
        if self._takeovers.taken_over(reason_code, lived):
            if self._takeovers.should_warn():
                log.error(
                    "MQTT: the broker at %s keeps dropping our connection right after accepting it: another "
                    "client uses client id %r, most likely another emotiond uses the same device id (%s); give "
                    "each device its own mqtt.device_id (or mqtt.client_id)",
                    self.where, self.client_id, self.topics.device,
                )  # fmt: skip
            if self._takeovers.in_loop:
                log.debug("MQTT connection to %s taken over again (%s)", self.where, reason_code)
                return
        special = describe_disconnect(reason_code, was, self.settings.keepalive_s)
        if special is not None:
            if was:
                log.warning("MQTT connection to %s lost: %s; buffering up to %d events",
                            self.where, special, self.settings.buffer_size)
            else:
                self._connect_failures += 1  # a CONNECT was sent and never answered
                self._log_failure(special)
            return
        if not was and not answered:
            # Closed before CONNACK: the TCP connect worked but TLS or CONNECT did not,
            # e.g. a broker with `require_certificate true` and no client certificate here.
            self._connect_failures += 1
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

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._ack_lock:
            if self._outbox.pop(mid, None) is None and self.qos > 0:
                self._early_acks.add(mid)
            self._published += 1
            if self._gate:
                self._gate.discard(mid)
                if not self._gate:
                    self._wake.set()

    def _on_message(self, client, userdata, msg) -> None:
        if len(msg.payload) > MAX_INCOMING_BYTES:  # only reached with MQTT 3.1.1 (5 caps it at the broker)
            self._dropped_incoming += 1
            log.log(logging.WARNING if self._dropped_incoming == 1 else logging.DEBUG,
                    "MQTT: dropped a %d-byte message on %s (limit %d bytes; counted in dropped_incoming)",
                    len(msg.payload), msg.topic, MAX_INCOMING_BYTES)
            return
        if msg.topic == ha_status_topic(self.ha.prefix) and msg.payload == b"online":
            self._discovery_pending = True
            self._wake.set()

    # ------------------------------------------------------------------ sending

    def _send(self, msg: _Msg) -> bool:
        """Hand one message to paho (call with ``_lock`` held); False = keep it buffered."""
        assert self._client is not None
        try:
            info = self._client.publish(msg.topic, msg.payload, qos=self.qos, retain=msg.retain)
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

    def _availability(self) -> str:
        """HA knows only ``online``/``offline`` on an availability topic; degraded is still online."""
        return STATUS_OFFLINE if self._status == STATUS_OFFLINE else STATUS_ONLINE

    def _problem_json(self) -> str:
        problem = self._status == STATUS_DEGRADED
        return self._json({"schema": SCHEMA_VERSION, "device": self.topics.device, "problem": problem,
                           "reason": self._reason if problem else None})

    def _send_status(self, force: bool) -> None:
        """Availability and problem, each only when it differs from what was sent (``_lock`` held)."""
        now = (self._availability(), self._problem_json())
        before = None if force else self._sent_status
        if before is None or now[0] != before[0]:
            self._send(_Msg(self.topics.status, now[0], True))
        if before is None or now[1] != before[1]:
            self._send(_Msg(self.topics.problem, now[1], True))
        self._sent_status = now

    def _session_publish(self) -> None:
        """After a (re)connect: status, discovery, health, state. Called with ``_lock`` held."""
        t = self.topics
        self._send_status(force=True)
        self._publish_discovery()
        if self.ha.discovery and self._hold_until is None:
            self._hold_until = time.monotonic() + self.ha.discovery_delay_s
        if self._last_health is not None:
            self._send(_Msg(t.health, self._health_json(self._last_health), True))
            self._health_pending = False
        if self._last_emotion is not None and not any(m.topic == t.emotion for m in self._buffer):
            self._send(_Msg(t.emotion, self._last_emotion, True))

    def _publish_discovery(self) -> None:
        if self.ha.discovery:
            for topic, payload in discovery_messages(self.topics, self.labels, self.ha.prefix):
                self._send(_Msg(topic, payload, True))
        else:
            for topic, payload in removal_messages(self.topics, self.labels, self.ha.prefix):
                self._send(_Msg(topic, payload, True))

    def _flush(self) -> None:
        """Send the buffer in order (``_lock`` held); ready once it is empty."""
        while self._buffer and self._connected:
            msg = self._buffer[0]
            if not self._send(msg):
                return
            self._buffer.popleft()
        if self._connected and not self._buffer:
            if self._dropped_this_outage:
                log.warning(
                    "MQTT back on %s: %d events dropped while it was unreachable (buffer_size=%d)",
                    self.where, self._dropped_this_outage, self.settings.buffer_size,
                )  # fmt: skip
            self._dropped_this_outage = 0
            self._drop_logged = False
            self._ready = True
            if self._health_pending and self._last_health is not None:
                self._health_pending = False
                self._send(_Msg(self.topics.health, self._health_json(self._last_health), True))

    def _run_sender(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            if not self._connected:
                continue
            with self._lock:
                if not self._connected:
                    continue
                if self._session_pending:
                    self._session_pending = False
                    self._discovery_pending = False
                    self._session_publish()
                if self._discovery_pending:
                    self._discovery_pending = False
                    self._publish_discovery()
                if not self._ready and not self._holding():
                    with self._ack_lock:
                        gate = bool(self._gate & self._outbox.keys())
                        waited = time.monotonic() - self._gate_since
                        if gate and waited > RESEND_GATE_S:
                            log.warning(
                                "MQTT: %d in-flight messages not acknowledged; flushing anyway",
                                len(self._gate),
                            )
                            self._gate.clear()
                            gate = False
                        elif not gate:
                            self._gate.clear()
                    if not gate:
                        self._flush()

    def _holding(self) -> bool:
        """True while events wait for HA to subscribe after the first discovery."""
        return self._hold_until is not None and time.monotonic() < self._hold_until

    def _event(self, msg: _Msg) -> None:
        with self._lock:
            if self._client is not None and self._ready and not self._buffer and self._send(msg):
                return
            if len(self._buffer) == self._buffer.maxlen and self._holding() and self._connected:
                self._hold_until = time.monotonic()  # the discovery delay never costs an event: flush now
                self._flush()
                if self._ready and not self._buffer and self._send(msg):
                    return
            if len(self._buffer) == self._buffer.maxlen:
                self._dropped += 1
                self._dropped_this_outage += 1
                if not self._drop_logged:
                    self._drop_logged = True
                    log.warning(
                        "MQTT buffer full (%d events) while %s is unreachable: dropping the oldest",
                        self.settings.buffer_size, self.where,
                    )  # fmt: skip
            self._buffer.append(msg)
        self._wake.set()

    @staticmethod
    def _json(payload: dict[str, Any]) -> str:
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)

    # ------------------------------------------------------------------ Sink protocol

    def publish_emotion(self, payload: dict[str, Any]) -> None:
        data = self._json(payload)
        with self._lock:
            self._last_emotion = data
        self._event(_Msg(self.topics.emotion, data, True))

    def publish_utterance(self, payload: dict[str, Any]) -> None:
        self._event(_Msg(self.topics.utterance, self._json(payload), False))

    def set_status(self, status: str, reason: str | None = None) -> None:
        """``online``/``degraded`` (with why)/``offline``; publishes only what changed."""
        with self._lock:
            self._status = status
            self._reason = reason if status == STATUS_DEGRADED else None
            if self._connected and self._client is not None:
                self._send_status(force=False)

    def _health_json(self, payload: dict[str, Any]) -> str:
        base = {"schema": SCHEMA_VERSION, "device": self.topics.device, "ts": iso_utc(time.time())}
        out = {**base, **payload}
        out.setdefault("status", self._status)
        out["mqtt"] = {**(payload.get("mqtt") or {}), **self.stats()}  # live, also on re-publish
        return self._json(out)

    def publish_health(self, payload: dict[str, Any]) -> None:
        """Retained; adds ``schema``/``device``/``ts``/``status`` if missing and live ``mqtt`` stats."""
        with self._lock:
            self._last_health = dict(payload)
            self._health_pending = not (self._ready and self._client is not None)
            if not self._health_pending:
                self._send(_Msg(self.topics.health, self._health_json(payload), True))

    def stats(self) -> dict[str, Any]:
        with self._ack_lock:
            inflight = len(self._outbox)
            published = self._published
        return {
            "connected": self._connected,
            "published": published,
            "dropped_events": self._dropped,
            "buffered": len(self._buffer),
            "inflight": inflight,
            "reconnects": self._reconnects,
            "connect_failures": self._connect_failures,
            "dropped_incoming": self._dropped_incoming,
        }

    # ------------------------------------------------------------------ reload hand-over

    def inherit(self, old: MqttSink) -> None:
        """Take over a closed sink's undelivered events and counters (a reload that changed MQTT settings).

        Call before :meth:`start`. Events go out first, oldest first, when the
        new connection is ready; if the new ``buffer_size`` is smaller, the
        oldest are dropped and counted like any buffer overflow.
        """
        with self._lock:
            pending = [*old.undelivered, *self._buffer]
            self._buffer.clear()
            for msg in pending:
                if len(self._buffer) == self._buffer.maxlen:
                    self._dropped += 1
                    self._dropped_this_outage += 1
                self._buffer.append(msg)
            self._dropped += old._dropped
            self._published += old._published
            self._reconnects += old._reconnects
            self._connect_failures += old._connect_failures
            self._dropped_incoming += old._dropped_incoming
            self._last_emotion = old._last_emotion
            self._last_health = old._last_health
        lost = len(pending) - len(self._buffer)
        if lost:
            log.warning("MQTT: %d events dropped at the reload: the new buffer_size is %d",
                        lost, self.settings.buffer_size)
        elif pending:
            log.info("MQTT: %d undelivered events carried over to the new connection", len(pending))

    def close(self, timeout_s: float, handing_over: bool = False) -> None:
        """Flush what can be, publish ``offline`` retained, disconnect: at most ``timeout_s``.

        ``handing_over``: a reload replaces this sink; what is not delivered is
        left in :attr:`undelivered` for :meth:`inherit` instead of being reported lost.
        """
        self._handing_over = handing_over
        client = self._client
        if client is None:
            return
        hold = max(0.0, self._hold_until - time.monotonic()) if self._hold_until is not None else 0.0
        deadline = time.monotonic() + max(0.0, timeout_s) + hold  # the discovery delay does not eat the flush
        self._wake.set()
        while self._connected and time.monotonic() < deadline:
            with self._ack_lock:
                idle = not self._outbox
            if idle and not self._buffer:
                break
            time.sleep(0.02)
        self._closing = True
        self._stop.set()
        self._wake.set()
        if self._sender is not None:
            self._sender.join(timeout=2)
        with self._lock:
            self._status = STATUS_OFFLINE
            self._reason = None
            if self._connected:
                # the retained health and problem must not keep saying online/degraded after a clean stop
                final = [(self.topics.problem, self._problem_json()), (self.topics.status, STATUS_OFFLINE)]
                if self._last_health is not None:
                    stopped = self._health_json({**self._last_health, "status": STATUS_OFFLINE})
                    final.insert(0, (self.topics.health, stopped))
                try:
                    infos = [client.publish(t, p, qos=self.qos, retain=True) for t, p in final]
                    for info in infos:
                        info.wait_for_publish(timeout=max(0.05, deadline - time.monotonic()))
                except (RuntimeError, ValueError):
                    pass
            with self._ack_lock:
                unacked = list(self._outbox.values())  # insertion order = the order they were sent
            self.undelivered = [*unacked, *self._buffer]
            lost = len(self.undelivered)
        client.disconnect()
        client.loop_stop()
        self._connected = False
        self._ready = False
        if lost and not self._handing_over:
            log.warning("MQTT closed with %d events not delivered to %s", lost, self.where)
        self._client = None
