"""``emotiond monitor``: a live terminal view of a daemon's MQTT topics.

Subscribes to ``{base}/{device}/#`` and shows the current emotion, one bar per
label's probability, the daemon's status and health, and the last utterances.
Rendering is a pure function of :class:`MonitorState` (``render``), so tests can
render it into a recording console; the network side only calls ``apply``.
Works over SSH: rich draws with plain ANSI; without a terminal (a pipe) it prints
one line per message instead of a live view. Ctrl-C exits with status 0.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

EMOTION_STYLE = {
    "angry": "bold red",
    "happy": "bold green",
    "sad": "bold blue",
    "neutral": "bold white",
    "fear": "bold magenta",
    "surprise": "bold yellow",
    "disgust": "bold dark_orange",
    "none": "dim",
}
STATUS_STYLE = {"online": "green", "degraded": "yellow", "offline": "red"}
BAR_WIDTH = 30


@dataclass
class UtteranceRow:
    ts: str
    duration_s: float
    emotion: str
    confidence: float


@dataclass
class MonitorState:
    """Everything the view shows; updated by :meth:`apply` from raw MQTT messages."""

    base: str = "emotiond"
    device: str = "+"
    broker: str = ""
    connected: bool = False
    error: str | None = None
    device_seen: str | None = None
    status: str = "unknown"
    problem: str | None = None  # the reason while the daemon reports a problem (degraded)
    emotion: str | None = None
    confidence: float = 0.0
    probabilities: dict[str, float] = field(default_factory=dict)
    emotion_ts: str | None = None
    utterances: deque[UtteranceRow] = field(default_factory=lambda: deque(maxlen=8))
    health: dict[str, Any] | None = None
    messages: int = 0
    bad_messages: int = 0

    @property
    def subscription(self) -> str:
        return f"{self.base}/{self.device}/#"

    def apply(self, topic: str, payload: bytes) -> str | None:
        """Take one message; returns which kind it was (status/emotion/…) or None if ignored."""
        prefix = self.base + "/"
        if not topic.startswith(prefix):
            return None
        rest = topic[len(prefix) :].split("/")
        if len(rest) != 2 or (self.device != "+" and rest[0] != self.device):
            return None
        device, kind = rest
        if kind not in ("status", "emotion", "utterance", "health", "problem"):
            return None
        self.messages += 1
        if not payload:  # a cleared retained message
            return None
        try:
            if kind == "status":
                self.status = payload.decode("utf-8", "replace").strip()
                self.device_seen = device
                return kind
            data = json.loads(payload)
            if not isinstance(data, dict):
                raise ValueError("not an object")
            if kind == "problem":
                self.problem = (str(data.get("reason") or "problem")) if data.get("problem") else None
            elif kind == "emotion":
                self.emotion = str(data["emotion"])
                self.confidence = float(data.get("confidence", 0.0))
                self.probabilities = {str(k): float(v) for k, v in data.get("probabilities", {}).items()}
                self.emotion_ts = data.get("ts")
            elif kind == "utterance":
                self.utterances.appendleft(
                    UtteranceRow(
                        str(data.get("end") or data.get("ts") or ""),
                        float(data.get("duration_s", 0.0)),
                        str(data["emotion"]),
                        float(data.get("confidence", 0.0)),
                    )
                )
            else:
                self.health = data
        except (ValueError, KeyError, TypeError):
            self.bad_messages += 1
            return None
        self.device_seen = device
        return kind


def _bar(p: float, width: int = BAR_WIDTH) -> str:
    p = min(max(p, 0.0), 1.0)
    full = round(p * width)
    return "█" * full + "·" * (width - full)


def _time(ts: str | None) -> str:
    """``2026-01-02T10:11:12.345Z`` → ``10:11:12`` (UTC, as published)."""
    if not ts or "T" not in ts:
        return ts or "-"
    return ts.split("T", 1)[1][:8]


def shown_status(state: MonitorState) -> str:
    """``degraded`` while a running daemon reports a problem (status itself is only online/offline)."""
    return "degraded" if state.problem and state.status == "online" else state.status


def render(state: MonitorState) -> RenderableType:
    """The whole screen for ``state``; pure (no clock, no I/O)."""
    device = state.device_seen or (state.device if state.device != "+" else "?")
    status = shown_status(state)
    link = "[green]connected[/]" if state.connected else "[red]not connected[/]"
    header = Text.from_markup(
        f"[bold]emotiond monitor[/]  device [bold]{device}[/]  "
        f"status [{STATUS_STYLE.get(status, 'dim')}]{status}[/]  "
        f"broker {state.broker} {link}"
    )
    if state.problem and status == "degraded":
        header.append(f"\nproblem: {state.problem}", style="yellow")
    if state.error:
        header.append(f"\n{state.error}", style="red")

    current = Table.grid(padding=(0, 2))
    current.add_column(justify="right")
    current.add_column()
    current.add_column(justify="right")
    if state.emotion is None:
        now = Text("waiting for the retained emotion…", style="dim")
    else:
        now = Text.assemble(
            (state.emotion.upper(), EMOTION_STYLE.get(state.emotion, "bold")),
            f"  {state.confidence:.0%}  since {_time(state.emotion_ts)}",
        )
    for label, p in state.probabilities.items():
        style = EMOTION_STYLE.get(label, "bold") if label == state.emotion else "dim"
        current.add_row(Text(label, style=style), Text(_bar(p), style=style), f"{p:6.1%}")

    utts = Table(expand=True, box=None, show_edge=False)
    utts.add_column("time (UTC)")
    utts.add_column("duration", justify="right")
    utts.add_column("emotion")
    utts.add_column("confidence", justify="right")
    for u in state.utterances:
        utts.add_row(
            _time(u.ts),
            f"{u.duration_s:.1f} s",
            Text(u.emotion, style=EMOTION_STYLE.get(u.emotion, "")),
            f"{u.confidence:.0%}",
        )
    if not state.utterances:
        utts.add_row("-", "-", Text("no utterance yet", style="dim"), "-")

    footer = f"{state.messages} messages"
    if state.bad_messages:
        footer += f", {state.bad_messages} unreadable"
    if state.health:
        mqtt = state.health.get("mqtt") or {}
        up = state.health.get("uptime_s")
        at = _time(state.health.get("ts"))  # health comes every 60 s: say when this one was made
        footer += f"  |  health at {at}: up {up} s" if up is not None else f"  |  health at {at}:"
        footer += f", dropped {mqtt.get('dropped_events', 0)}, buffered {mqtt.get('buffered', 0)}"
    footer += "  |  Ctrl-C to quit"
    return Group(
        header,
        Panel(Group(now, current), title="current emotion", title_align="left"),
        Panel(utts, title="last utterances", title_align="left"),
        Text(footer, style="dim"),
    )


def _line(state: MonitorState, kind: str) -> str:
    """One plain line per message, for pipes and dumb terminals."""
    if kind == "status":
        return f"status {state.status}"
    if kind == "problem":
        return f"problem {state.problem}" if state.problem else "problem cleared"
    if kind == "emotion":
        return f"emotion {state.emotion} {state.confidence:.2f}"
    if kind == "utterance" and state.utterances:
        u = state.utterances[0]
        return f"utterance {_time(u.ts)} {u.duration_s:.1f}s {u.emotion} {u.confidence:.2f}"
    return f"{kind} received"


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="emotiond monitor", description=__doc__.split("\n")[0])
    ap.add_argument("--config", type=Path, help="take broker, base topic and device from this config (mqtt.*)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override one setting (repeatable), e.g. --set mqtt.host=broker.lan")
    ap.add_argument("--host", default=None, help="broker host (default: mqtt.host, localhost)")
    ap.add_argument("--port", type=int, default=None, help="broker port (1883, or 8883 with --tls)")
    ap.add_argument("--device", default=None, help="device id (default: mqtt.device_id if set, else + = any)")
    ap.add_argument("--base", default=None, help="base topic (default: mqtt.base_topic, emotiond)")
    ap.add_argument("--username", default=None, help="password from EMOTIOND_MQTT__PASSWORD")
    ap.add_argument("--tls", action="store_true", help="connect with TLS")
    ap.add_argument("--ca-file", default=None, help="CA bundle for --tls (default: system CAs)")
    ap.add_argument("--plain", action="store_true", help="one line per message, no live view")
    args = ap.parse_args(argv)
    _fill_from_config(args)
    return args


def _fill_from_config(args: argparse.Namespace) -> None:
    """Options not given on the command line come from the config (``--config``/``--set``/env), as for ``run``."""
    from .config import load_settings

    mqtt = load_settings(args.config, args.overrides).mqtt
    args.host = args.host or mqtt.host
    args.tls = args.tls or mqtt.tls.enabled
    if args.ca_file is None and mqtt.tls.ca_file is not None:
        args.ca_file = str(mqtt.tls.ca_file)
    if args.port is None and not ((args.tls or args.ca_file) and mqtt.port == 1883):  # else 8883 with TLS
        args.port = mqtt.port
    args.base = args.base or mqtt.base_topic
    args.device = args.device or mqtt.device_id or "+"
    args.username = args.username or mqtt.username


def connect(state: MonitorState, args: argparse.Namespace, lock: threading.Lock, on_update=None, on_error=None):
    """A started paho client feeding ``state`` (used by the CLI and the tests)."""
    import paho.mqtt.client as mqtt

    from .mqtt_sink import describe_error

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"emotiond-monitor-{uuid.uuid4().hex[:8]}")
    if args.username:
        client.username_pw_set(args.username, os.environ.get("EMOTIOND_MQTT__PASSWORD"))
    if args.tls or args.ca_file:
        client.tls_set(ca_certs=args.ca_file)

    def on_connect(c, userdata, flags, reason_code, properties) -> None:
        with lock:
            state.connected = not reason_code.is_failure
            state.error = None if state.connected else f"broker refused: {reason_code}"
        if state.connected:
            c.subscribe(state.subscription, qos=1)
        if on_error is not None:
            on_error(None if state.connected else state.error)

    def on_connect_fail(c, userdata) -> None:
        exc = sys.exc_info()[1]
        with lock:
            state.connected = False
            state.error = f"cannot connect: {describe_error(exc)}" if exc else "cannot connect"
        if on_error is not None:
            on_error(state.error)

    def on_disconnect(c, userdata, flags, reason_code, properties) -> None:
        with lock:
            state.connected = False

    def on_message(c, userdata, msg) -> None:
        with lock:
            kind = state.apply(msg.topic, bytes(msg.payload))
        if kind and on_update is not None:
            on_update(kind)

    client.on_connect = on_connect
    client.on_connect_fail = on_connect_fail
    client.on_disconnect = on_disconnect
    client.on_message = on_message
    client.reconnect_delay_set(1, 10)
    port = args.port or (8883 if (args.tls or args.ca_file) else 1883)
    state.broker = f"{args.host}:{port}"
    client.connect_async(args.host, port, keepalive=30)
    client.loop_start()
    return client


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def monitor_main(argv: list[str]) -> int:
    args = parse_args(argv)
    state = MonitorState(base=args.base, device=args.device)
    state.broker = f"{args.host}:{args.port or (8883 if (args.tls or args.ca_file) else 1883)}"
    lock = threading.Lock()
    console = Console()
    plain = args.plain or not console.is_terminal
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)  # systemd/kill: leave like Ctrl-C

    def print_line(kind: str) -> None:
        with lock:
            line = _line(state, kind)
        print(line, flush=True)

    said: list[str | None] = [""]

    def print_link(error: str | None) -> None:
        """--plain: say on stderr why nothing arrives (once per change), and when the broker answers."""
        if error == said[0]:
            return
        said[0] = error
        if error is None:
            print(f"monitor: connected to {state.broker}, waiting for {state.subscription}", file=sys.stderr,
                  flush=True)
        else:
            print(f"monitor: {state.broker}: {error}; retrying", file=sys.stderr, flush=True)

    client = None
    try:  # connect() inside: its network thread may print before we get here, and a Ctrl-C may follow at once
        client = connect(state, args, lock, on_update=print_line if plain else None,
                         on_error=print_link if plain else None)
        if plain:
            while True:
                time.sleep(0.5)
        with Live(render(state), console=console, refresh_per_second=4, transient=False) as live:
            while True:
                time.sleep(0.25)
                with lock:
                    view = render(state)
                live.update(view)
    except KeyboardInterrupt:
        pass
    finally:
        if client is not None:
            client.disconnect()
            client.loop_stop()
    return 0
