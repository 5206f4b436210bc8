"""MQTT sink (paho-mqtt 2.x): emotions, utterances, status and health, never audio.

This module is the content: topics, what is retained, Home Assistant discovery
and the :class:`~emotiond.daemon.sinks.Sink` protocol. The transport is
:mod:`.mqtt_connection` (paho client, callbacks, one ``Link`` state) and delivery
:mod:`.mqtt_delivery` (offline buffer, acknowledgements, the ``mqtt-sender`` thread).

* On every (re)connect: availability (``online``) and problem (``degraded`` and
  why) retained, Home Assistant discovery, the last health and the last emotion
  (unless a newer one is still buffered), then the buffer in order. Last Will:
  ``offline``. Status and problem are otherwise published only when they change.
* After this sink's first discovery, events wait ``homeassistant.discovery_delay_s``
  in the buffer, so HA has subscribed to a device new to it before the first event.
* A reload that replaces the sink hands its undelivered events to the new one
  (:meth:`MqttSink.inherit`), so changing a broker setting loses nothing.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import paho.mqtt.client as mqtt

from .config import HomeAssistantSettings, MqttSettings
from .homeassistant import discovery_messages, ha_status_topic, removal_messages
from .mqtt_connection import Link, MqttConnection
from .mqtt_delivery import Delivery, Msg
from .mqtt_guard import describe_error
from .payloads import SCHEMA_VERSION, STATUS_DEGRADED, STATUS_OFFLINE, STATUS_ONLINE, Topics, health_message

log = logging.getLogger(__name__)
__all__ = ["MqttSink", "describe_error"]


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
        self.where = f"{settings.host}:{settings.port}"
        self.connection = MqttConnection(
            settings, self.client_id, password, topics.status, topics.device,
            on_up=self._on_up, woken=lambda: self.delivery.wake(), on_ack=lambda mid: self.delivery.on_ack(mid),
            on_incoming=self._on_incoming,
        )  # fmt: skip
        self.delivery = Delivery(settings, self.connection, self._session_work, self._send_pending_health)
        # the content's state, guarded by delivery.lock
        self._status = STATUS_ONLINE  # the daemon's: online | degraded | offline (health.status)
        self._reason: str | None = None  # why it is degraded
        self._sent_status: tuple[str, str] | None = None  # (availability, problem JSON) last handed to paho
        self._last_emotion: str | None = None
        self._last_health: dict[str, Any] | None = None
        self._health_pending = False  # a health message arrived while not ready: send it once ready
        self._session_pending = False  # connected: the sender must publish status, discovery, state
        self._discovery_pending = False  # Home Assistant came online: discovery again

    @property
    def ready(self) -> bool:
        """Connected and the reconnect work done: events go straight to the broker."""
        return self.connection.state is Link.READY

    def validate(self) -> None:
        """Build (and drop) a client: raises OSError/ValueError for unreadable TLS files, before anything changes."""
        self.connection.make_client()

    def start(self) -> None:
        if self.connection.client is not None:
            return
        try:
            client = self.connection.make_client()
        except (OSError, ValueError) as exc:  # unreadable CA/cert files: a config problem, not fatal
            log.error("MQTT disabled: cannot set up the client for %s: %s", self.where, describe_error(exc))
            return
        self.delivery.start()
        self.connection.connect(client)
        log.info("MQTT connecting to %s as %s", self.where, self.topics.root)

    # ------------------------------------------------ hooks (paho's thread: record and wake only)

    def _on_up(self, client: mqtt.Client) -> None:
        self.delivery.on_up()
        self._session_pending = True
        if self.ha.discovery:
            client.subscribe(ha_status_topic(self.ha.prefix), qos=1)

    def _on_incoming(self, topic: str, payload: bytes) -> None:
        if topic == ha_status_topic(self.ha.prefix) and payload == b"online":
            self._discovery_pending = True
            self.delivery.wake()

    # ------------------------------------------------ content (sender thread, delivery.lock held)

    def _session_work(self) -> None:
        if self._session_pending:
            self._session_pending = False
            self._discovery_pending = False
            self._session_publish()
        if self._discovery_pending:
            self._discovery_pending = False
            self._publish_discovery()

    def _session_publish(self) -> None:
        """After a (re)connect: status, discovery, health, state."""
        t, send = self.topics, self.delivery.send
        self._send_status(force=True)
        self._publish_discovery()
        if self.ha.discovery and self.delivery.hold_until is None:
            self.delivery.hold_until = time.monotonic() + self.ha.discovery_delay_s
        if self._last_health is not None:
            send(Msg(t.health, self._health_json(self._last_health), True))
            self._health_pending = False
        if self._last_emotion is not None and not any(m.topic == t.emotion for m in self.delivery.buffer):
            send(Msg(t.emotion, self._last_emotion, True))

    def _publish_discovery(self) -> None:
        messages = discovery_messages if self.ha.discovery else removal_messages
        for topic, payload in messages(self.topics, self.labels, self.ha.prefix):
            self.delivery.send(Msg(topic, payload, True))

    def _send_pending_health(self) -> None:
        if self._health_pending and self._last_health is not None:
            self._health_pending = False
            self.delivery.send(Msg(self.topics.health, self._health_json(self._last_health), True))

    def _problem_json(self) -> str:
        problem = self._status == STATUS_DEGRADED
        return self._json({"schema": SCHEMA_VERSION, "device": self.topics.device, "problem": problem,
                           "reason": self._reason if problem else None})

    def _send_status(self, force: bool) -> None:
        """Availability and problem, each only when it differs from what was sent."""
        # HA knows only online/offline on an availability topic: degraded is still online
        now = (STATUS_OFFLINE if self._status == STATUS_OFFLINE else STATUS_ONLINE, self._problem_json())
        before = None if force else self._sent_status
        if before is None or now[0] != before[0]:
            self.delivery.send(Msg(self.topics.status, now[0], True))
        if before is None or now[1] != before[1]:
            self.delivery.send(Msg(self.topics.problem, now[1], True))
        self._sent_status = now

    def _health_json(self, payload: dict[str, Any]) -> str:
        return self._json(health_message(payload, self.topics.device, self._status, self.stats()))

    @staticmethod
    def _json(payload: dict[str, Any]) -> str:
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)

    # ------------------------------------------------------------------ Sink protocol

    def publish_emotion(self, payload: dict[str, Any]) -> None:
        data = self._json(payload)
        with self.delivery.lock:
            self._last_emotion = data
        self.delivery.submit(Msg(self.topics.emotion, data, True))

    def publish_utterance(self, payload: dict[str, Any]) -> None:
        self.delivery.submit(Msg(self.topics.utterance, self._json(payload), False))

    def set_status(self, status: str, reason: str | None = None) -> None:
        """``online``/``degraded`` (with why)/``offline``; publishes only what changed."""
        with self.delivery.lock:
            self._status = status
            self._reason = reason if status == STATUS_DEGRADED else None
            if self.connection.connected and self.connection.client is not None:
                self._send_status(force=False)

    def publish_health(self, payload: dict[str, Any]) -> None:
        """Retained; adds ``schema``/``device``/``ts``/``status`` if missing and live ``mqtt`` stats."""
        with self.delivery.lock:
            self._last_health = dict(payload)
            self._health_pending = not (self.ready and self.connection.client is not None)
            if not self._health_pending:
                self.delivery.send(Msg(self.topics.health, self._health_json(payload), True))

    def stats(self) -> dict[str, Any]:
        c, d = self.connection, self.delivery
        return {
            "connected": c.connected, "published": d.published, "dropped_events": d.dropped,
            "buffered": len(d.buffer), "inflight": d.inflight(), "reconnects": c.reconnects,
            "connect_failures": c.connect_failures, "dropped_incoming": c.dropped_incoming,
        }  # fmt: skip

    # ------------------------------------------------------------------ reload hand-over and close

    def inherit(self, old: MqttSink) -> None:
        """Take over a closed sink's undelivered events and counters (a reload that changed MQTT settings).

        Call before :meth:`start`. They go out first, oldest first, once connected; a smaller new
        ``buffer_size`` drops the oldest, counted like any overflow.
        """
        pending = self.delivery.inherit(old.delivery)
        c, o = self.connection, old.connection
        c.reconnects, c.connect_failures = c.reconnects + o.reconnects, c.connect_failures + o.connect_failures
        c.dropped_incoming += o.dropped_incoming
        with self.delivery.lock:
            self._last_emotion, self._last_health = old._last_emotion, old._last_health
        lost = pending - len(self.delivery.buffer)
        if lost:
            log.warning("MQTT: %d events dropped at the reload: the new buffer_size is %d",
                        lost, self.settings.buffer_size)
        elif pending:
            log.info("MQTT: %d undelivered events carried over to the new connection", pending)

    def drain(self, timeout_s: float) -> float:
        """Wait up to ``timeout_s`` for every event to be acknowledged; returns the deadline it used.

        The discovery delay is added on top, so that it does not eat the flush.
        """
        hold_until = self.delivery.hold_until
        hold = max(0.0, hold_until - time.monotonic()) if hold_until is not None else 0.0
        deadline = time.monotonic() + max(0.0, timeout_s) + hold
        self.delivery.drain(deadline)
        return deadline

    def close(self, timeout_s: float, handing_over: bool = False) -> None:
        """Flush what can be, publish ``offline`` retained, disconnect: at most ``timeout_s``.

        ``handing_over``: a reload replaces this sink; the undelivered wait for :meth:`inherit`, not reported lost.
        """
        client = self.connection.client
        if client is None:
            return
        deadline = self.drain(timeout_s)
        self.connection.closing = True  # from here a disconnect is ours
        self.delivery.stop()
        with self.delivery.lock:
            self._status, self._reason = STATUS_OFFLINE, None
            if self.connection.connected:
                # the retained health and problem must not keep saying online/degraded after a clean stop
                final = [(self.topics.problem, self._problem_json()), (self.topics.status, STATUS_OFFLINE)]
                if self._last_health is not None:
                    stopped = self._health_json({**self._last_health, "status": STATUS_OFFLINE})
                    final.insert(0, (self.topics.health, stopped))
                try:
                    infos = [client.publish(t, p, qos=self.settings.qos, retain=True) for t, p in final]
                    for info in infos:
                        info.wait_for_publish(timeout=max(0.05, deadline - time.monotonic()))
                except (RuntimeError, ValueError):
                    pass
            lost = self.delivery.keep_undelivered()
        self.connection.stop()
        if lost and not handing_over:
            log.warning("MQTT closed with %d events not delivered to %s", lost, self.where)
