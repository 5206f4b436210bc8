"""``emotiond sample-events``: one confident example of each emotion, through the real sinks.

For building and testing a Node-RED flow or a Home Assistant automation without
speaking: the events are made by the same :class:`PayloadFactory` and published by
the same sinks (MQTT with discovery, stdout) as the daemon's, so a subscriber
cannot tell them from real ones except by the device id. They go to
``{device}-samples`` unless ``mqtt.device_id`` is set explicitly, with their own
client id, so a daemon running on the same host keeps its status and session.
"""

from __future__ import annotations

import contextlib
import time

from .. import exitcodes
from ..dsp.smoother import NO_SPEECH, EmotionState, UtteranceSummary
from .assembly import load_model, make_sinks
from .config import Settings
from .payloads import CLOCK_WALL, STATUS_ONLINE, PayloadFactory


def sample_settings(settings: Settings) -> Settings:
    """The daemon's settings with a device and client id of their own (unless set explicitly)."""
    mqtt = settings.mqtt
    device = mqtt.device_id or f"{mqtt.device()}-samples"
    client_id = mqtt.client_id if mqtt.device_id else f"emotiond-{device}"
    return settings.model_copy(update={"mqtt": mqtt.model_copy(update={"device_id": device, "client_id": client_id})})


def example_probabilities(labels: tuple[str, ...], top: str, confidence: float) -> dict[str, float]:
    """``top`` at ``confidence``, the rest shared equally (they sum to 1, like the model's)."""
    rest = (1.0 - confidence) / max(1, len(labels) - 1)
    return {label: round(confidence if label == top else rest, 4) for label in labels}


def sample_events_main(settings: Settings, confidence: float = 0.9, interval_s: float = 0.5) -> int:
    """Publish, per label: the current emotion, then a 1.5 s utterance; finally ``none``."""
    if not 0.0 < confidence <= 1.0 or interval_s < 0:
        import sys

        print("emotiond sample-events: --confidence must be in (0, 1] and --interval >= 0", file=sys.stderr)
        return exitcodes.USAGE
    settings = sample_settings(settings)
    labels = load_model(settings).labels
    sinks = make_sinks(settings, labels, force_stdout=True)
    for sink in sinks:
        sink.start()
        sink.set_status(STATUS_ONLINE)
    payloads = PayloadFactory(settings.mqtt.device(), clock=CLOCK_WALL)
    t = 0.0
    try:
        for i, label in enumerate(labels):
            probs = example_probabilities(labels, label, confidence)
            t += 2.0
            state = EmotionState(label, confidence, probs, t)
            summary = UtteranceSummary(i, t - 1.5, t, label, confidence, probs, 3)
            for sink in sinks:
                sink.publish_emotion(payloads.emotion(state, t))
                sink.publish_utterance(payloads.utterance(summary, t))
            time.sleep(interval_s)
        none = EmotionState(NO_SPEECH, 0.0, dict.fromkeys(labels, 0.0), t)
        for sink in sinks:
            sink.publish_emotion(payloads.emotion(none, t))
    finally:
        for sink in sinks:
            with contextlib.suppress(Exception):
                sink.close(3.0)
    return exitcodes.OK
