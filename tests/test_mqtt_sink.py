"""MqttSink against a real mosquitto: retained flags, status, reconnect, buffer overflow."""

from __future__ import annotations

import logging

import pytest
from emotiond.daemon.config import HomeAssistantSettings

from tests.fixtures_broker import EventMaker, mqtt_settings, wait_until

pytestmark = pytest.mark.broker
NO_HA = HomeAssistantSettings(discovery=False)


def test_publishes_events_with_retained_flags(broker, subscriber, make_sink):
    s = mqtt_settings(broker)
    sub = subscriber(broker.host, broker.port, f"emotiond/{s.device_id}/#")
    sink = make_sink(s, ha=NO_HA)
    ev = EventMaker(s.device_id)
    wait_until(lambda: sink.stats()["connected"], what="connected")
    sink.publish_emotion(ev.emotion("happy"))
    sink.publish_utterance(ev.utterance("angry"))
    sink.publish_health({"uptime_s": 1.0})
    root = f"emotiond/{s.device_id}"
    sub.wait_for(
        lambda ms: {f"{root}/{t}" for t in ("status", "emotion", "utterance", "health")} <= {m.topic for m in ms}
    )
    assert sub.on(f"{root}/status")[0].text == "online"
    assert sub.on(f"{root}/emotion")[0].json()["emotion"] == "happy"
    assert sub.on(f"{root}/utterance")[0].json()["emotion"] == "angry"
    health = sub.on(f"{root}/health")[0].json()
    assert health["mqtt"]["connected"] is True and health["uptime_s"] == 1.0

    # a late subscriber sees exactly the retained ones: status, problem, emotion, health; not utterance
    late = subscriber(broker.host, broker.port, f"{root}/#")
    late.wait_for(lambda ms: len(ms) >= 4)
    got = {m.topic: m.retain for m in late.wait_for(lambda ms: True)}
    assert got == {f"{root}/{t}": True for t in ("status", "problem", "emotion", "health")}
    st = sink.stats()
    assert st["published"] >= 4 and st["dropped_events"] == 0 and st["buffered"] == 0


def test_degraded_is_a_problem_not_an_availability_and_close_publishes_offline(broker, subscriber, make_sink):
    s = mqtt_settings(broker)
    root = f"emotiond/{s.device_id}"
    sub = subscriber(broker.host, broker.port, f"{root}/#")
    sink = make_sink(s, ha=NO_HA)
    sub.wait_topic(f"{root}/problem")
    sink.publish_health({"status": "online", "uptime_s": 1.0})
    for _ in range(6):  # the service retries its microphone: the same reason, again and again
        sink.set_status("degraded", "waiting for the microphone: no input device")
    msgs = sub.wait_for(lambda ms: any(m.topic.endswith("/problem") and m.json()["problem"] for m in ms))
    problems = [m.json() for m in msgs if m.topic == f"{root}/problem"]
    assert problems[0] == {"schema": 1, "device": s.device_id, "problem": False, "reason": None}
    assert problems[-1]["reason"] == "waiting for the microphone: no input device"
    sink.set_status("online")
    sub.wait_topic(f"{root}/problem", count=3)
    # status carries only what HA understands, and each value only once per change
    assert [m.text for m in sub.on(f"{root}/status")] == ["online"]
    assert [m.json()["problem"] for m in sub.on(f"{root}/problem")] == [False, True, False]
    sink.close(2.0)
    sub.wait_for(lambda ms: ms[-1].text == "offline")
    late = subscriber(broker.host, broker.port, f"{root}/#")
    msgs = {m.topic: m for m in late.wait_for(lambda ms: len(ms) >= 3)}
    assert msgs[f"{root}/status"].text == "offline" and msgs[f"{root}/status"].retain
    # a clean stop leaves no retained health that still says online (issue 13, item 12)
    assert msgs[f"{root}/health"].json()["status"] == "offline"
    assert msgs[f"{root}/problem"].json()["problem"] is False


def test_reconnect_republishes_status_and_retained_state(broker, subscriber, make_sink):
    s = mqtt_settings(broker)
    root = f"emotiond/{s.device_id}"
    sink = make_sink(s, ha=NO_HA)
    ev = EventMaker(s.device_id)
    wait_until(lambda: sink.stats()["connected"])
    sink.set_status("degraded", "audio lost")
    emotion = ev.emotion("sad")
    sink.publish_emotion(emotion)
    wait_until(lambda: sink.stats()["inflight"] == 0 and sink.stats()["published"] >= 4)
    before = sink.stats()["published"]
    # broker loses everything it retained (no persistence survives)
    broker.kill()
    for f in (broker.dir / "data").iterdir():
        f.unlink()
    wait_until(lambda: not sink.stats()["connected"], what="disconnect noticed")
    broker.start()
    wait_until(lambda: sink.stats()["connected"], what="reconnected")
    # subscribe only once status, problem and emotion are republished and acknowledged, so
    # that what arrives is the broker's retained copy, not the live publish (retain=0)
    wait_until(lambda: sink.stats()["published"] >= before + 3 and sink.stats()["inflight"] == 0,
               what="state republished")
    late = subscriber(broker.host, broker.port, f"{root}/#")
    want = {f"{root}/status", f"{root}/emotion", f"{root}/problem"}
    msgs = late.wait_for(lambda ms: {m.topic for m in ms} >= want)
    by_topic = {m.topic: m for m in msgs}
    assert by_topic[f"{root}/status"].text == "online" and by_topic[f"{root}/status"].retain
    assert by_topic[f"{root}/problem"].json()["reason"] == "audio lost" and by_topic[f"{root}/problem"].retain
    assert by_topic[f"{root}/emotion"].json() == emotion and by_topic[f"{root}/emotion"].retain
    assert sink.stats()["reconnects"] == 1


def test_buffer_overflow_drops_oldest_counts_and_logs_once(broker, subscriber, make_sink, caplog):
    caplog.set_level(logging.WARNING, logger="emotiond.daemon.mqtt_sink")
    s = mqtt_settings(broker, buffer_size=3)
    root = f"emotiond/{s.device_id}"
    sub = subscriber(broker.host, broker.port, f"{root}/utterance", client_id=f"sub-{s.device_id}", clean_session=False)
    sink = make_sink(s, ha=NO_HA)
    ev = EventMaker(s.device_id)
    wait_until(lambda: sink.stats()["connected"])
    broker.stop()
    wait_until(lambda: not sink.stats()["connected"])
    sent = [ev.utterance() for _ in range(10)]
    for p in sent:
        sink.publish_utterance(p)
    st = sink.stats()
    assert st["dropped_events"] == 7 and st["buffered"] == 3
    full = [r for r in caplog.records if "buffer full" in r.getMessage()]
    assert len(full) == 1
    broker.start()
    msgs = sub.wait_topic(f"{root}/utterance", count=3, timeout=8)
    assert [m.json()["seq"] for m in msgs] == [p["seq"] for p in sent[-3:]]
    wait_until(lambda: sink.stats()["buffered"] == 0)
    assert any("7 events dropped" in r.getMessage() for r in caplog.records)


def test_unreachable_broker_never_raises(make_sink, caplog):
    from emotiond.daemon.config import MqttSettings

    caplog.set_level(logging.DEBUG, logger="emotiond.daemon.mqtt_sink")
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here
    s = MqttSettings(
        host="127.0.0.1", port=port, device_id="nobroker", reconnect_min_s=0.1, reconnect_max_s=0.2, buffer_size=5
    )
    sink = make_sink(s, ha=NO_HA)
    ev = EventMaker("nobroker")
    for _ in range(20):
        sink.publish_emotion(ev.emotion())
        sink.publish_utterance(ev.utterance())
    sink.set_status("degraded")
    sink.publish_health({})
    wait_until(lambda: sink.stats()["connect_failures"] >= 3, what="retries")
    warnings = [
        r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "cannot connect" in r.getMessage()
    ]
    assert warnings == [
        f"MQTT cannot connect to 127.0.0.1:{port}: connection refused "
        "(is the broker running and listening on this port?); retrying with backoff"
    ]
    assert sink.stats()["dropped_events"] == 35
    sink.close(0.2)


def test_close_right_after_start_waits_for_the_first_connection(broker, subscriber, make_sink):
    """``sample-events`` publishes and closes within milliseconds of ``start()``: nothing may be lost."""
    s = mqtt_settings(broker)
    root = f"emotiond/{s.device_id}"
    sub = subscriber(broker.host, broker.port, f"{root}/utterance")
    ev = EventMaker(s.device_id)
    sent = []
    for _ in range(5):  # the race is with paho's connect thread: try it several times
        sink = make_sink(s, ha=NO_HA)
        batch = [ev.utterance() for _ in range(4)]
        for p in batch:
            sink.publish_utterance(p)
        sink.close(3.0)
        sent += batch
    got = sub.wait_for(lambda ms: len(ms) >= len(sent))
    assert [m.json() for m in got] == sent
