"""Broker outages: nothing lost, order kept, duplicates removable by (run, seq)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest
from emotiond.daemon.config import HomeAssistantSettings

from tests.fixtures_broker import EventMaker, mqtt_settings, wait_until

pytestmark = pytest.mark.broker
NO_HA = HomeAssistantSettings(discovery=False)


def _dedup(msgs):
    seen, out = set(), []
    for m in msgs:
        p = m.json()
        if (p["run"], p["seq"]) not in seen:
            seen.add((p["run"], p["seq"]))
            out.append(p["seq"])
    return out


def test_broker_restart_loses_nothing(broker, subscriber, make_sink):
    s = mqtt_settings(broker)
    root = f"emotiond/{s.device_id}"
    topics = [f"{root}/emotion", f"{root}/utterance"]
    sub = subscriber(broker.host, broker.port, topics, client_id=f"sub-{s.device_id}", clean_session=False)
    sink = make_sink(s, ha=NO_HA)
    ev = EventMaker(s.device_id)
    wait_until(lambda: sink.stats()["connected"])
    sent: list[int] = []
    stop = threading.Event()

    def produce():
        i = 0
        while not stop.is_set():
            p = ev.emotion() if i % 3 == 0 else ev.utterance()
            (sink.publish_emotion if i % 3 == 0 else sink.publish_utterance)(p)
            sent.append(p["seq"])
            i += 1
            time.sleep(0.01)

    t = threading.Thread(target=produce)
    t.start()
    time.sleep(0.5)
    broker.stop()
    time.sleep(2.0)
    broker.start()
    time.sleep(0.7)
    stop.set()
    t.join()
    assert sink.stats()["reconnects"] == 1 and sink.stats()["dropped_events"] == 0
    sub.wait_for(lambda ms: {m.json()["seq"] for m in ms if m.topic in topics} >= set(sent), timeout=8)
    received = _dedup([m for m in sub.messages if m.topic in topics])
    assert received == sent  # every event, in order, after removing duplicates


class BlackholeProxy:
    """TCP proxy; ``blackhole()`` swallows traffic both ways, ``cut()`` drops the connections."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.port = self.lsock.getsockname()[1]
        self.swallow = False
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            u = socket.create_connection(("127.0.0.1", self.target))
            self.conns += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                if not self.swallow:
                    b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def blackhole(self) -> None:
        self.swallow = True

    def cut(self) -> None:
        conns, self.conns = self.conns, []
        self.swallow = False
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self.lsock.close()
        self.cut()


def test_unacknowledged_inflight_messages_are_resent_in_order(broker, subscriber, make_sink):
    """Paho keeps QoS 1 messages that were never PUBACKed and re-sends them after reconnecting."""
    proxy = BlackholeProxy(broker.port)
    try:
        s = mqtt_settings(broker, port=proxy.port)
        root = f"emotiond/{s.device_id}"
        sub = subscriber(broker.host, broker.port, f"{root}/utterance")
        sink = make_sink(s, ha=NO_HA)
        ev = EventMaker(s.device_id)
        wait_until(lambda: sink.stats()["connected"])
        wait_until(lambda: sink.stats()["inflight"] == 0)
        proxy.blackhole()
        lost_in_flight = [ev.utterance() for _ in range(5)]
        for p in lost_in_flight:
            sink.publish_utterance(p)
        assert sink.stats()["inflight"] == 5  # handed to paho, never acknowledged
        time.sleep(0.3)
        assert sub.on(f"{root}/utterance") == []  # the broker never saw them
        proxy.cut()
        wait_until(lambda: not sink.stats()["connected"], what="disconnect")
        buffered = [ev.utterance() for _ in range(3)]
        for p in buffered:
            sink.publish_utterance(p)
        msgs = sub.wait_topic(f"{root}/utterance", count=8, timeout=8)
        assert _dedup(msgs) == [p["seq"] for p in lost_in_flight + buffered]
        wait_until(lambda: sink.stats()["inflight"] == 0)
    finally:
        proxy.close()
