"""The composition root: the one place that turns ``Settings`` into running parts.

The daemon, ``emotiond eval``, ``emotiond classify``, ``sample-events`` and the
benches all build their model, frontend, source, sinks and pipeline here, so
what a bench measures or an evaluation scores is wired exactly as the daemon
runs it, and a change to the wiring is made once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from .. import exitcodes
from ..dsp.adapt import AdaptParams, WindowNormaliser
from ..dsp.calibrate import Calibrator
from ..dsp.frontend import Frontend, FrontendParams, WindowParams
from ..dsp.smoother import Smoother, UtteranceSummary
from ..models.runtime import DEFAULT_MODEL, RUNTIMES, EmotionModel, ModelError
from .adaptation import Household, fresh_calibrator, fresh_normaliser
from .config import ConfigError, Settings
from .payloads import CLOCK_AUDIO, CLOCK_WALL, PayloadFactory, Topics
from .pipeline import Pipeline
from .sinks import Sink, SinkSet, StdoutSink
from .sources import AudioSource, FileSource, StdinSource, ThreadedSource

FEATURE_HOP_MS = 10

# ``model.runtime`` names → the module the model runtime imports; derived from the
# runtime's own list so the two can never disagree.
RUNTIME_MODULES: dict[str, str] = {module.split(".")[0]: module for module in RUNTIMES}


class StartupError(Exception):
    """A part cannot be built from the settings; the message names the key, ``exit_code`` is README's."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def load_model(settings: Settings) -> EmotionModel:
    """The TFLite model ``model.*`` asks for; a bad file is a config error naming ``model.path``."""
    path = settings.model.path or DEFAULT_MODEL
    runtime = None if settings.model.runtime == "auto" else RUNTIME_MODULES[settings.model.runtime]
    try:
        return EmotionModel(Path(path), settings.model.num_threads, runtime)
    except ModelError as exc:
        raise StartupError(f"model.path: {exc}", exitcodes.CONFIG) from None


def frontend_params(settings: Settings, model: EmotionModel) -> FrontendParams:
    """The model's front end (its sidecar) with what the configuration may override; a mismatch is a config error.

    A key set in the configuration (file, environment or ``--set``) wins over
    the sidecar: ``vad.*``, ``denoise.*``, ``windows.hop_ms``,
    ``windows.min_speech_ms`` and ``adapt.horizon_s``. The window length is the
    model's input and cannot change; ``windows.window_s`` may only restate it.
    Keys left out take the model's values, so a model trained with other
    settings is run as it was trained.
    """
    trained = model.info.frontend()
    window_frames = trained.window.window_frames
    windows = settings.windows
    if windows.window_s is not None:
        wanted = round(windows.window_s * 1000 / FEATURE_HOP_MS)
        if wanted != window_frames:
            raise StartupError(
                f"windows.window_s: {windows.window_s} s does not match the model's "
                f"{window_frames * FEATURE_HOP_MS / 1000} s window ({model.path})",
                exitcodes.CONFIG,
            )
    hop_frames, min_frames = trained.window.hop_frames, trained.window.min_frames
    if "hop_ms" in windows.model_fields_set:
        hop_frames = windows.hop_ms // FEATURE_HOP_MS
    if "min_speech_ms" in windows.model_fields_set:
        min_frames = max(1, windows.min_speech_ms // FEATURE_HOP_MS)
    adapt = trained.adapt
    if settings.adapt.horizon_s is not None:
        adapt = AdaptParams(horizon_s=settings.adapt.horizon_s, prior_s=min(adapt.prior_s, settings.adapt.horizon_s))
    return FrontendParams(
        vad=replace(trained.vad, **_set_fields(settings.vad)),
        denoise=replace(trained.denoise, **_set_fields(settings.denoise)),
        window=WindowParams(window_frames, hop_frames, min(window_frames, min_frames)),
        adapt=adapt,
        features=trained.features,
    )


def _set_fields(section: BaseModel) -> dict[str, Any]:
    """The keys of a config section that were given (file, environment, ``--set``), not defaulted."""
    return {name: getattr(section, name) for name in section.model_fields_set}


def build_frontend(settings: Settings, model: EmotionModel, normaliser: WindowNormaliser) -> Frontend:
    """The DSP stages; ``normaliser`` (the adapt stage) outlives a rebuilt frontend, so a reload keeps the household."""
    fp = frontend_params(settings, model)
    return fp.frontend(normaliser)


def load_household(settings: Settings, model: EmotionModel) -> Household:
    """The daemon's household (adapt and calibrate estimates and their state files), at the hop it runs."""
    hop_frames = frontend_params(settings, model).window.hop_frames
    return Household(model.info, settings.adapt, settings.calibrate, hop_frames)


def make_source(settings: Settings, fast: bool = False) -> AudioSource:
    """The input ``source.*`` names, not opened: stdin (``-``), a file, or the microphone."""
    src = settings.source
    if src.input == "-":
        return ThreadedSource(StdinSource(src.stdin_rate, src.block_ms), src.buffer_s, src.block_ms)
    if src.input:
        return FileSource(Path(src.input), realtime=src.realtime and not fast, block_ms=src.block_ms, speed=src.speed)
    from .microphone import MicrophoneSource  # PortAudio only where a microphone is used

    return MicrophoneSource(src.device, src.device_rate, src.channels, src.block_ms, src.buffer_s)


def payload_clock(settings: Settings, fast: bool, injected_source: bool) -> str:
    """Wall clock for inputs heard in real time (microphone, paced file); audio clock otherwise (docs/mqtt.md)."""
    src = settings.source
    if injected_source or src.input == "-" or (src.input and (fast or not src.realtime)):
        return CLOCK_AUDIO
    return CLOCK_WALL


def make_sinks(settings: Settings, labels: tuple[str, ...], force_stdout: bool = False) -> list[Sink]:
    """The sinks ``settings`` ask for, not started; raises ``ConfigError`` for an unreadable password file."""
    sinks: list[Sink] = []
    if settings.stdout.enabled or force_stdout:
        sinks.append(StdoutSink())
    if settings.mqtt.enabled:
        from .identity import client_id
        from .mqtt_sink import MqttSink  # paho only where MQTT is on

        device = settings.mqtt.device()
        topics = Topics(settings.mqtt.base_topic, device)
        cid = client_id(settings.mqtt.client_id, device, settings.mqtt.state_dir)
        sinks.append(MqttSink(settings.mqtt, settings.mqtt_password(), topics, labels, settings.homeassistant, cid))
    return sinks


def check_sinks(sinks: Sequence[Sink]) -> None:
    """Raise ``ConfigError`` if a sink could not be set up (unreadable TLS files), before anything is replaced."""
    if not sinks:
        return
    from .mqtt_sink import MqttSink, describe_error

    for sink in sinks:
        if not isinstance(sink, MqttSink):
            continue
        try:
            sink.validate()
        except (OSError, ValueError) as exc:
            raise ConfigError(f"mqtt.tls: cannot set up the MQTT client: {describe_error(exc)}") from None


def build_pipeline(
    settings: Settings,
    model: EmotionModel,
    sinks: Sequence[Sink] | SinkSet = (),
    on_utterance: Callable[[UtteranceSummary, dict[str, Any]], None] | None = None,
    *,
    household: Household | None = None,
    clock: str = CLOCK_AUDIO,
) -> Pipeline:
    """frontend → model → calibrate → smoother → sinks, as the daemon runs it.

    Without ``household`` the adapt and calibrate stages start from the
    sidecar's values, as a new installation does (eval, classify, benches);
    the daemon passes its ``Household`` so what the household taught them
    carries on.
    """
    normaliser: WindowNormaliser
    calibrator: Calibrator | None
    fp = frontend_params(settings, model)
    if household is None:
        normaliser = fresh_normaliser(model.info, settings.adapt.horizon_s)
        calibrator = fresh_calibrator(model.info, settings.calibrate, settings.adapt.horizon_s, fp.window.hop_frames)
    else:
        normaliser, calibrator = household.normaliser, household.calibrator
    frontend = fp.frontend(normaliser)
    smoother = Smoother(model.labels, settings.smoother.params())
    payloads = PayloadFactory(settings.mqtt.device(), clock=clock)
    return Pipeline(frontend, model, smoother, payloads, sinks, on_utterance, calibrator)
