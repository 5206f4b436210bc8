"""The example Node-RED flow (docs/node-red/emotiond-flow.json) in a real Node-RED, on a real Mosquitto.

Node-RED 4.1 is installed with npm into the gitignored ``.node-red/`` (``.ci/run`` does it;
this module does it too when it is missing). Skipped only where ``node`` is not installed.
Also: the draft-07 schema copies compile in Node-RED's own Ajv, as its ``json`` node uses it.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.fixtures_broker import EventMaker, wait_until

ROOT = Path(__file__).resolve().parent.parent
FLOW = ROOT / "docs" / "node-red" / "emotiond-flow.json"
PREFIX = ROOT / ".node-red"
RED_JS = PREFIX / "node_modules" / "node-red" / "red.js"
NODE_RED_VERSION = "4.1.15"
NODE = shutil.which("node")

pytestmark = [
    pytest.mark.broker,
    pytest.mark.slow,
    pytest.mark.skipif(NODE is None, reason="node is not installed (apt-get install nodejs npm); "
                       "the Node-RED flow test needs it"),
]


@pytest.fixture(scope="module")
def red_js() -> Path:
    if not RED_JS.exists():
        npm = shutil.which("npm")
        assert npm, "node is installed but npm is not: apt-get install npm"
        proc = subprocess.run([npm, "install", "--prefix", str(PREFIX), "--no-audit", "--no-fund",
                               "--loglevel=error", f"node-red@{NODE_RED_VERSION}"],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0 and RED_JS.exists(), f"npm install node-red failed: {proc.stderr[-500:]}"
    return RED_JS


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NodeRed:
    """One Node-RED process with its own user dir; restartable with the same flows."""

    def __init__(self, red: Path, user_dir: Path) -> None:
        self.red, self.user_dir = red, user_dir
        self.port = _free_port()
        self.log = user_dir / "node-red.log"
        self.proc: subprocess.Popen | None = None
        (user_dir / "settings.js").write_text(
            "module.exports = {uiHost: '127.0.0.1', flowFile: 'flows.json', credentialSecret: false,\n"
            "  logging: {console: {level: 'info', metrics: false, audit: false}},\n"
            "  editorTheme: {tours: false}, diagnostics: {enabled: false}, telemetry: {enabled: false}};\n"
        )

    def start(self) -> None:
        self.log.write_text("")
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(
                [NODE, str(self.red), "-u", str(self.user_dir), "-p", str(self.port), "-s",
                 str(self.user_dir / "settings.js"), "flows.json"],
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "EMOTIOND_MAX_AGE_S": "30"},
            )
        wait_until(lambda: "Connected to broker" in self.text() or self.proc.poll() is not None,
                   timeout=60, what="Node-RED connected to the broker")
        assert self.proc.poll() is None, self.text()[-2000:]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def _test_flow(broker_port: int) -> list[dict]:
    """The shipped flow pointed at the test broker, plus ``mqtt out`` taps the test listens to."""
    flow = copy.deepcopy(json.loads(FLOW.read_text()))
    nodes = {n["id"]: n for n in flow}
    nodes["emotiond_broker"].update(broker="127.0.0.1", port=str(broker_port))
    for tap, after in (("alert", "emotiond_confident"), ("emotion", "emotiond_dedupe_emotion"),
                       ("status", "emotiond_in_status"), ("problem", "emotiond_in_problem")):
        flow.append({"id": f"test_tap_{tap}", "type": "mqtt out", "z": "emotiond_tab", "name": f"tap {tap}",
                     "topic": f"test/out/{tap}", "qos": "1", "retain": "false", "broker": "emotiond_broker",
                     "x": 0, "y": 0, "wires": []})
        nodes[after]["wires"][0].append(f"test_tap_{tap}")
    return flow


def _utterance(ev: EventMaker, emotion: str, confidence: float, age_s: float = 0.0, **fields) -> dict:
    p = ev.utterance(emotion)
    p["confidence"] = confidence
    ts = datetime.now(UTC) - timedelta(seconds=age_s)
    p["ts"] = ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    p.update(fields)
    return p


def test_example_flow_runs_in_node_red(red_js: Path, broker, subscriber, tmp_path: Path) -> None:
    user_dir = tmp_path / "node-red"
    user_dir.mkdir()
    (user_dir / "flows.json").write_text(json.dumps(_test_flow(broker.port)))
    red = NodeRed(red_js, user_dir)
    taps = subscriber(broker.host, broker.port, "test/out/#")
    red.start()
    try:
        # 1. sample-events through the real sinks: one confident example of each emotion
        proc = subprocess.run(
            [sys.executable, "-m", "emotiond", "sample-events", "--interval", "0.05",
             "--set", "mqtt.host=127.0.0.1", "--set", f"mqtt.port={broker.port}", "--set", "mqtt.device_id=nr",
             "--set", "homeassistant.discovery=false"], capture_output=True, timeout=120)
        assert proc.returncode == 0, proc.stderr.decode()
        sent = [json.loads(x) for x in proc.stdout.decode().splitlines()]
        labels = [e["emotion"] for e in sent if e["event"] == "utterance"]
        assert "angry" in labels and len(labels) >= 4
        alerts = taps.wait_topic("test/out/alert")
        assert [a.json()["emotion"] for a in alerts] == ["angry"] and alerts[0].json()["confidence"] == 0.9
        emotions = taps.wait_topic("test/out/emotion", count=len(labels) + 1)
        assert [e.json()["emotion"] for e in emotions] == [*labels, "none"]  # objects, not strings
        statuses = taps.wait_for(lambda ms: [m.text for m in ms if m.topic == "test/out/status"][-1:] == ["offline"])
        assert [m.text for m in statuses if m.topic == "test/out/status"] == ["online", "offline"]

        # 2. duplicates, stale events and unconfident ones are dropped; the next real alert passes
        ev = EventMaker("nr")
        pub = subscriber(broker.host, broker.port, "unused/#")
        first = alerts[0].json()
        dup = {**first}
        stale = _utterance(ev, "angry", 0.95, age_s=60, run=first["run"], seq=first["seq"] + 100)
        unsure = _utterance(ev, "angry", 0.5, run=first["run"], seq=first["seq"] + 101)
        fresh = _utterance(ev, "angry", 0.8, run=first["run"], seq=first["seq"] + 102)
        for p in (dup, stale, unsure, fresh):
            pub.client.publish("emotiond/nr/utterance", json.dumps(p), qos=1).wait_for_publish(5)
        alerts = taps.wait_topic("test/out/alert", count=2)
        time.sleep(0.5)
        assert [a.json()["seq"] for a in taps.on("test/out/alert")] == [first["seq"], fresh["seq"]]

        # 3. no loss across a Node-RED restart: the broker keeps its session and queues for it
        red.stop()
        queued = [_utterance(ev, "angry", 0.9, run=first["run"], seq=first["seq"] + 110 + i) for i in range(3)]
        for p in queued:
            pub.client.publish("emotiond/nr/utterance", json.dumps(p), qos=1).wait_for_publish(5)
        red.start()
        taps.wait_topic("test/out/alert", count=5, timeout=30)
        assert [a.json()["seq"] for a in taps.on("test/out/alert")][2:] == [p["seq"] for p in queued]
        log = red.text()
        assert "Unexpected token" not in log and "Failed to parse JSON" not in log, log[-2000:]
    finally:
        red.stop()


def test_draft07_schemas_are_in_step_and_compile_in_node_reds_ajv(red_js: Path, tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("make_draft07", ROOT / "scripts" / "make_draft07_schemas.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rendered = mod.render_all()
    on_disk = {p.name: p.read_text() for p in (ROOT / "docs" / "schemas" / "draft-07").glob("*.json")}
    assert rendered == on_disk, "run: .venv/bin/python scripts/make_draft07_schemas.py"

    ev = EventMaker("kitchen")
    samples = {
        "emotion": ev.emotion("angry"), "utterance": ev.utterance("sad"), "status": "online",
        "problem": {"schema": 1, "device": "kitchen", "problem": True, "reason": "audio lost"},
        "health": {"schema": 1, "device": "kitchen", "ts": "2026-01-02T10:01:00.000Z", "status": "online",
                   "mqtt": {"connected": True, "published": 1, "dropped_events": 0, "buffered": 0,
                            "reconnects": 0}},
    }
    # exactly what Node-RED's json node does (nodes/core/parsers/70-JSON.js)
    script = """
const Ajv = require('ajv');
const ajv = new Ajv({allErrors: true});
ajv.addMetaSchema(require('ajv/lib/refs/json-schema-draft-06.json'));
const fs = require('fs');
const [dir, samples] = [process.argv[2], JSON.parse(fs.readFileSync(process.argv[3]))];
const out = {};
for (const [name, sample] of Object.entries(samples)) {
  const v = ajv.compile(JSON.parse(fs.readFileSync(dir + '/' + name + '.json')));
  out[name] = [v(sample), v(name === 'status' ? 'degraded' : Object.assign({}, sample, {schema: 2}))];
}
console.log(JSON.stringify(out));
"""
    (tmp_path / "check.js").write_text(script)
    (tmp_path / "samples.json").write_text(json.dumps(samples))
    proc = subprocess.run(
        [NODE, str(tmp_path / "check.js"), str(ROOT / "docs" / "schemas" / "draft-07"), str(tmp_path / "samples.json")],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "NODE_PATH": str(red_js.parent.parent)},
    )
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert json.loads(proc.stdout) == {name: [True, False] for name in samples}
