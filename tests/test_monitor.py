"""``emotiond monitor``: pure rendering of a state, and the state fed by a real broker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest
from emotiond.daemon.monitor import MonitorState, connect, parse_args, render
from rich.console import Console

from tests.fixtures_broker import EventMaker, wait_until
from tests.fixtures_process import ctrl_c_reaches_the_child


def _text(state: MonitorState) -> str:
    console = Console(record=True, width=100, color_system=None, force_terminal=False)
    console.print(render(state))
    return console.export_text()


def test_render_is_a_function_of_state():
    state = MonitorState(device="kitchen", broker="pi:1883", connected=True)
    empty = _text(state)
    assert "waiting for the retained emotion" in empty and "no utterance yet" in empty
    ev = EventMaker("kitchen")
    assert state.apply("emotiond/kitchen/status", b"degraded") == "status"
    assert state.apply("emotiond/kitchen/emotion", json.dumps(ev.emotion("angry")).encode())
    u = ev.utterance("sad", 2.25)
    assert state.apply("emotiond/kitchen/utterance", json.dumps(u).encode()) == "utterance"
    out = _text(state)
    assert "ANGRY" in out and "70%" in out and "degraded" in out and "pi:1883" in out
    for label in ("neutral", "happy", "sad", "angry"):
        assert label in out
    assert "█" * 21 in out  # 0.7 of a 30-cell bar
    assert u["end"].split("T")[1][:8] in out and "2.2 s" in out
    assert _text(state) == out  # pure: same state, same screen


def test_apply_ignores_foreign_and_broken_messages():
    state = MonitorState(device="kitchen")
    assert state.apply("emotiond/other/status", b"online") is None
    assert state.apply("emotiond/kitchen/audio", b"x") is None
    assert state.apply("emotiond/kitchen/emotion", b"{not json") is None
    assert state.apply("emotiond/kitchen/emotion", b"") is None  # cleared retained message
    assert state.bad_messages == 1 and state.emotion is None


@pytest.mark.broker
def test_state_follows_the_broker(broker, subscriber):
    args = parse_args(["--host", broker.host, "--port", str(broker.port), "--device", "pi"])
    state, lock = MonitorState(base=args.base, device=args.device), threading.Lock()
    pub = subscriber(broker.host, broker.port, "nothing/#").client
    ev = EventMaker("pi")
    pub.publish("emotiond/pi/status", "online", qos=1, retain=True).wait_for_publish(2)
    client = connect(state, args, lock)
    try:
        wait_until(lambda: state.status == "online", what="retained status")
        pub.publish("emotiond/pi/emotion", json.dumps(ev.emotion("happy")), qos=1)
        pub.publish("emotiond/pi/utterance", json.dumps(ev.utterance("angry", 1.0)), qos=1)
        pub.publish("emotiond/pi/health", json.dumps({"uptime_s": 5, "mqtt": {}}), qos=1)
        wait_until(lambda: state.health is not None and len(state.utterances) == 1)
        with lock:
            assert state.connected and state.emotion == "happy" and state.device_seen == "pi"
            assert state.utterances[0].emotion == "angry" and state.utterances[0].duration_s == 1.0
            assert "HAPPY" in _text(state)
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.mark.broker
def test_cli_plain_mode_exits_zero_on_ctrl_c(broker, subscriber):
    pub = subscriber(broker.host, broker.port, "nothing/#").client
    code = "import sys; from emotiond.daemon.monitor import monitor_main; sys.exit(monitor_main(sys.argv[1:]))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "--port", str(broker.port), "--host", broker.host, "--plain"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        preexec_fn=ctrl_c_reaches_the_child,
    )
    watchdog = threading.Timer(40, proc.kill)  # readline() must never hang the suite (generous: CI may be loaded)
    watchdog.start()
    try:
        deadline = time.monotonic() + 5
        line = ""
        while "status" not in line and time.monotonic() < deadline:
            pub.publish("emotiond/pi/status", "online", qos=1, retain=True)
            time.sleep(0.2)
            line = proc.stdout.readline() if proc.poll() is None else ""
        assert line.strip() == "status online"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
    finally:
        watchdog.cancel()
        proc.kill()
        proc.wait()


def test_parse_args_defaults():
    a = parse_args([])
    assert SimpleNamespace(host=a.host, device=a.device, base=a.base) == SimpleNamespace(
        host="localhost", device="+", base="emotiond"
    )


def test_problem_topic_shows_degraded_with_its_reason():
    from emotiond.daemon.monitor import shown_status

    state = MonitorState(device="kitchen")
    state.apply("emotiond/kitchen/status", b"online")
    assert state.apply("emotiond/kitchen/problem", b'{"problem": true, "reason": "audio lost"}') == "problem"
    assert shown_status(state) == "degraded" and state.problem == "audio lost"
    console = Console(record=True, width=100)
    console.print(render(state))
    assert "problem: audio lost" in console.export_text()
    state.apply("emotiond/kitchen/problem", b'{"problem": false, "reason": null}')
    assert shown_status(state) == "online"
    state.apply("emotiond/kitchen/health", b'{"ts": "2026-01-02T10:01:00.000Z", "uptime_s": 0.4, "mqtt": {}}')
    console = Console(record=True, width=120)
    console.print(render(state))
    assert "health at 10:01:00: up 0.4 s" in console.export_text()
