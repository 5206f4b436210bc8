"""Conversation replay: labelled clips in one long stream through the daemon's pipeline.

    python -m bench.replay [--data MANIFEST.csv|DATA_DIR] [--n 40] [--fast] [--json OUT]

Clips (a manifest, a data folder such as ``../shared/data`` restricted to the
model's test speakers, or espeak-ng sentences when no data is given) are
joined with random 1–4 s silences over a noise bed, then pushed in
``source.block_ms`` blocks through ``daemon.pipeline.Pipeline`` wired as the
daemon wires it, paced in real time unless ``--fast``. Reported:

* utterance recall: clips overlapped by at least one utterance event;
* emotion UAR over the detected clips (duration-weighted mean of the
  overlapping events' probabilities, as ``emotiond eval --mode stream``);
* event latency: ``perf_counter`` from the start of processing the block in
  which the VAD closes a segment to the utterance event leaving the pipeline
  (after the sinks ran), p50/p95; and the audio delay from the end of the
  utterance to the end of that block (the VAD hangover);
* with ``mosquitto`` installed: the same latency to a subscriber, through a
  private broker and ``daemon.mqtt_sink.MqttSink``;
* false utterance events per minute of non-speech, emotion changes per minute.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from emotiond.daemon.assembly import build_pipeline
from emotiond.daemon.evaluate import CaptureSink, stream_probabilities
from emotiond.dsp.features import SAMPLE_RATE

from . import audio


def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 6) if values else None


class _Subscriber:
    """A paho client that timestamps every utterance payload it receives (by seq)."""

    def __init__(self, port: int, topic: str) -> None:
        import paho.mqtt.client as mqtt

        self.received: dict[int, float] = {}
        self._ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="emotiond-bench-sub")
        self.client.on_connect = lambda c, u, f, rc, p: (c.subscribe(topic, qos=1), self._ready.set())
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self._ready.wait(5)
        time.sleep(0.2)  # SUBACK

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        t = time.perf_counter()
        with contextlib.suppress(ValueError, KeyError):
            self.received[int(json.loads(msg.payload)["seq"])] = t

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def run_replay(stream: np.ndarray, spans: list[tuple[int, int, str]], settings: Any, model: Any,
               fast: bool = True, mqtt_port: int | None = None) -> dict[str, Any]:
    capture = CaptureSink()
    sinks: list[Any] = [capture]
    sub = mqtt = None
    if mqtt_port is not None:
        from emotiond.daemon.config import HomeAssistantSettings
        from emotiond.daemon.mqtt_sink import MqttSink
        from emotiond.daemon.payloads import Topics

        ms = settings.mqtt.model_copy(update={"host": "127.0.0.1", "port": mqtt_port})
        topics = Topics(ms.base_topic, ms.device())
        sub = _Subscriber(mqtt_port, topics.utterance)
        mqtt = MqttSink(ms, None, topics, model.labels, HomeAssistantSettings(discovery=False))
        mqtt.start()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not mqtt.ready:
            time.sleep(0.05)
        sinks.append(mqtt)

    block_start = [0.0]
    block_end_audio = [0.0]
    events: list[dict[str, Any]] = []

    def on_utterance(summary: Any, payload: dict[str, Any]) -> None:
        now = time.perf_counter()
        events.append({"seq": payload["seq"], "start_s": summary.start_s, "end_s": summary.end_s,
                       "probabilities": payload["probabilities"], "duration_s": summary.duration_s,
                       "emotion": summary.emotion, "t_block": block_start[0], "t_event": now,
                       "audio_delay_s": block_end_audio[0] - summary.end_s})

    pipe = build_pipeline(settings, model, sinks, on_utterance)
    block = settings.source.block_ms * SAMPLE_RATE // 1000
    wall0 = time.perf_counter()
    cpu0 = time.process_time()
    for i in range(0, len(stream), block):
        chunk = stream[i : i + block]
        if not fast:
            delay = wall0 + (i + len(chunk)) / SAMPLE_RATE - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        block_end_audio[0] = (i + len(chunk)) / SAMPLE_RATE
        block_start[0] = time.perf_counter()
        pipe.process(chunk)
    block_end_audio[0] = len(stream) / SAMPLE_RATE
    block_start[0] = time.perf_counter()
    pipe.finish()
    cpu = time.process_time() - cpu0

    mqtt_lat: list[float] = []
    if sub is not None and mqtt is not None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(sub.received) < len(events):
            time.sleep(0.05)
        mqtt_lat = [sub.received[e["seq"]] - e["t_block"] for e in events if e["seq"] in sub.received]
        mqtt.close(2.0)
        sub.close()

    return score(stream, spans, events, capture, model.labels, pipe, cpu, mqtt_lat,
                 mqtt_port is not None)


def score(stream: np.ndarray, spans: list[tuple[int, int, str]], events: list[dict[str, Any]], capture: CaptureSink,
          labels: tuple[str, ...], pipe: Any, cpu: float, mqtt_lat: list[float], mqtt_on: bool) -> dict[str, Any]:
    from emotiond.models.evaluate import metrics

    total_s = len(stream) / SAMPLE_RATE
    clip_spans = [(s / SAMPLE_RATE, e / SAMPLE_RATE, lab) for s, e, lab in spans]
    speech_s = sum(e - s for s, e, _ in clip_spans)
    detected, y_true, y_pred = 0, [], []
    index = {k: i for i, k in enumerate(labels)}
    used: set[int] = set()
    for s, e, lab in clip_spans:
        hits = [j for j, ev in enumerate(events) if ev["start_s"] < e and ev["end_s"] > s]
        used.update(hits)
        if not hits:
            continue
        detected += 1
        if lab in index:
            probs = stream_probabilities([events[j] for j in hits], labels)
            y_true.append(index[lab])
            y_pred.append(int(np.argmax(probs)))
    false_events = len(events) - len(used)
    proc = [ev["t_event"] - ev["t_block"] for ev in events]
    delay = [ev["audio_delay_s"] for ev in events]
    changes = len(capture.emotions)
    changes_speech = sum(1 for p in capture.emotions if p["emotion"] != "none")
    emo = metrics(y_true, y_pred, labels) if y_true else None
    return {
        "audio_s": round(total_s, 2),
        "clips": len(clip_spans),
        "speech_s": round(speech_s, 2),
        "utterance_events": len(events),
        "utterance_recall": detected / len(clip_spans) if clip_spans else None,
        "emotion_uar_detected": emo["uar"] if emo else None,
        "emotion_accuracy_detected": emo["accuracy"] if emo else None,
        "emotion_n": len(y_true),
        "false_events": false_events,
        "false_events_per_min_nonspeech": false_events / max((total_s - speech_s) / 60, 1e-9),
        "emotion_changes_per_min": changes / (total_s / 60),
        "emotion_changes_to_an_emotion_per_min": changes_speech / (total_s / 60),
        "event_latency_s": {"p50": pct(proc, 50), "p95": pct(proc, 95), "max": pct(proc, 100), "n": len(proc)},
        "vad_close_audio_delay_s": {"p50": pct(delay, 50), "p95": pct(delay, 95)},
        "mqtt_latency_s": ({"p50": pct(mqtt_lat, 50), "p95": pct(mqtt_lat, 95), "n": len(mqtt_lat),
                            "lost": len(events) - len(mqtt_lat)} if mqtt_on else "skipped (no mosquitto)"),
        "cpu_s": round(cpu, 3),
        "cpu_per_audio_s": cpu / total_s,
        "pipeline": pipe.stats.as_dict(),
    }


def load_items(data: Path | None, n: int, seed: int, model: Any) -> tuple[list[audio.Item], str]:
    if data is None:
        return audio.synthetic_items(n, seed), "synthetic (espeak-ng; label 'neutral', UAR not meaningful)"
    speakers = None
    split = model.info.extra.get("split", {}).get("test") if Path(data).is_dir() else None
    if split:
        speakers = {}
        for item in split:
            corpus, spk = item.split(":", 1)
            speakers.setdefault(corpus, set()).add(spk)
    desc = f"{data}" + (" (model's test speakers)" if speakers else "")
    return audio.data_items(Path(data), n, seed, speakers), desc


def mosquitto_available() -> bool:
    import shutil

    return shutil.which("mosquitto") is not None or Path("/usr/sbin/mosquitto").exists()


def replay_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=audio.default_data(), help="manifest CSV or data folder")
    p.add_argument("--n", type=int, default=40, help="clips in the conversation")
    p.add_argument("--fast", action="store_true", help="do not pace blocks in real time")
    p.add_argument("--no-mqtt", action="store_true", help="skip the broker latency part")
    p.add_argument("--bed", type=Path, help="noise bed audio file (default: pink noise)")
    p.add_argument("--bed-snr", type=float, default=20.0, help="bed level below the median clip RMS, dB")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    result = replay(args.data, args.n, args.fast, not args.no_mqtt, args.bed, args.bed_snr, args.seed,
                    args.overrides)
    print(json.dumps({k: v for k, v in result.items() if k != "pipeline"}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def replay(data: Path | None, n: int = 40, fast: bool = True, mqtt: bool = True, bed: Path | None = None,
           bed_snr: float = 20.0, seed: int = 0, overrides: list[str] | None = None) -> dict[str, Any]:
    from emotiond.daemon.assembly import load_model
    from emotiond.daemon.config import load_settings
    from emotiond.dsp.audio import load_mono_16k

    settings = load_settings(None, ["mqtt.enabled=false", *(overrides or [])])
    model = load_model(settings)
    items, desc = load_items(data, n, seed, model)
    rng = np.random.default_rng(seed)
    stream, spans = audio.scene(items, rng, bed=load_mono_16k(bed) if bed else None, bed_snr_db=bed_snr)
    port_cm = None
    if mqtt and mosquitto_available() and importlib.util.find_spec("emotiond.daemon.mqtt_sink") is not None:
        from emotiond.daemon.demo import private_broker

        port_cm = private_broker()
    if port_cm is not None:
        with port_cm as port:
            result = run_replay(stream, spans, settings, model, fast, port)
    else:
        result = run_replay(stream, spans, settings, model, fast, None)
    result["data"] = desc
    result["paced"] = "fast" if fast else "real time"
    return result


if __name__ == "__main__":
    sys.exit(replay_main())
