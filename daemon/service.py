"""The long-running daemon: builds the pipeline from settings and keeps it alive.

Responsibilities that belong to a service and not to the audio stages:
signals (SIGTERM/SIGINT stop, SIGHUP reload), systemd readiness, watchdog and
status, the retained health message, and reopening a microphone that went
away. Everything runs on the main thread; the only other threads are the
capture callback (PortAudio), the stdin reader and paho's network loop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import resource
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__, exitcodes
from ..dsp.adapt import WindowNormaliser
from ..dsp.frontend import Frontend, WindowParams
from ..dsp.smoother import Smoother
from ..models.runtime import DEFAULT_MODEL, EmotionModel, ModelError
from .adaptation import Household
from .config import ConfigError, Settings, load_settings
from .notify import ServiceNotifier
from .payloads import CLOCK_AUDIO, CLOCK_WALL, STATUS_DEGRADED, STATUS_ONLINE, PayloadFactory, Topics
from .pipeline import Pipeline
from .sinks import Sink, StdoutSink
from .sources import ArraySource, AudioSource, DeviceLost, FileSource, SourceError, StdinSource

log = logging.getLogger("emotiond")

FEATURE_HOP_MS = 10


class StartupError(Exception):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def load_model(settings: Settings) -> EmotionModel:
    path = settings.model.path or DEFAULT_MODEL
    runtime = None if settings.model.runtime == "auto" else {
        "ai_edge_litert": "ai_edge_litert.interpreter",
        "tflite_runtime": "tflite_runtime.interpreter",
        "tensorflow": "tensorflow.lite.python.interpreter",
    }[settings.model.runtime]
    try:
        return EmotionModel(Path(path), settings.model.num_threads, runtime)
    except ModelError as exc:
        raise StartupError(f"model.path: {exc}", exitcodes.CONFIG) from None


def window_params(settings: Settings, model: EmotionModel) -> WindowParams:
    window_frames = model.info.window_frames
    if settings.features.window_s is not None:
        wanted = round(settings.features.window_s * 1000 / FEATURE_HOP_MS)
        if wanted != window_frames:
            raise StartupError(
                f"features.window_s: {settings.features.window_s} s does not match the model's "
                f"{window_frames * FEATURE_HOP_MS / 1000} s window ({model.path})",
                exitcodes.CONFIG,
            )
    min_frames = min(window_frames, max(1, settings.features.min_speech_ms // FEATURE_HOP_MS))
    return WindowParams(window_frames, settings.features.hop_ms // FEATURE_HOP_MS, min_frames)


def build_frontend(settings: Settings, model: EmotionModel, normaliser: WindowNormaliser | None = None) -> Frontend:
    """The DSP stages; ``normaliser`` (the adapt stage) outlives a rebuilt frontend, so a reload keeps the household."""
    return Frontend(
        settings.vad.params(), settings.denoise.params(), window_params(settings, model), normaliser=normaliser
    )


def make_source(settings: Settings, fast: bool = False) -> AudioSource:
    src = settings.source
    if src.input == "-":
        return ThreadedSource(StdinSource(src.stdin_rate, src.block_ms), src.buffer_s, src.block_ms)
    if src.input:
        return FileSource(Path(src.input), realtime=src.realtime and not fast, block_ms=src.block_ms, speed=src.speed)
    from .microphone import MicrophoneSource

    return MicrophoneSource(src.device, src.device_rate, src.channels, src.block_ms, src.buffer_s)


class ThreadedSource:
    """Runs a blocking reader (stdin) on its own thread so signals and the watchdog never wait on it.

    Unlike the microphone ring it never drops: a full queue blocks the reader,
    and the pipe pushes back on the writer, so no piped audio is lost.
    """

    def __init__(self, inner: AudioSource, buffer_s: float, block_ms: int) -> None:
        self.inner = inner
        self.name = inner.name
        self._queue: queue.Queue[np.ndarray] = queue.Queue(max(1, int(buffer_s * 1000 / block_ms)))
        self._done = threading.Event()
        self._error: BaseException | None = None
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self.overruns = 0

    def open(self) -> None:
        self.inner.open()
        self._thread = threading.Thread(target=self._pump, name="emotiond-stdin", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        try:
            for block in self.inner.blocks():
                while not self._closing.is_set():
                    try:
                        self._queue.put(block, timeout=0.2)
                        break
                    except queue.Full:
                        continue
        except BaseException as exc:  # handed to the main thread
            self._error = exc
        finally:
            self._done.set()

    def blocks(self) -> Iterator[np.ndarray]:
        while True:
            try:
                yield self._queue.get(timeout=0.5)
                continue
            except queue.Empty:
                pass
            if self._done.is_set() and self._queue.empty():
                if self._error is not None:
                    raise self._error
                return
            yield np.zeros(0)  # keeps the watchdog and timers going while the pipe is quiet

    def close(self) -> None:
        self._closing.set()
        self.inner.close()
        if self._thread is not None:
            self._thread.join(2.0)


def make_sinks(settings: Settings, labels: tuple[str, ...], force_stdout: bool = False) -> list[Sink]:
    """The sinks ``settings`` ask for, not started; raises ``ConfigError`` for an unreadable password file."""
    sinks: list[Sink] = []
    if settings.stdout.enabled or force_stdout:
        sinks.append(StdoutSink())
    if settings.mqtt.enabled:
        from .identity import client_id
        from .mqtt_sink import MqttSink

        device = settings.mqtt.device()
        topics = Topics(settings.mqtt.base_topic, device)
        cid = client_id(settings.mqtt.client_id, device, settings.mqtt.state_dir)
        sinks.append(MqttSink(settings.mqtt, settings.mqtt_password(), topics, labels, settings.homeassistant, cid))
    return sinks


def check_sinks(sinks: list[Sink]) -> None:
    """Raise ``ConfigError`` if a sink could not be set up (unreadable TLS files), before anything is replaced."""
    for sink in sinks:
        validate = getattr(sink, "validate", None)
        if validate is None:
            continue
        try:
            validate()
        except (OSError, ValueError) as exc:
            from .mqtt_sink import describe_error

            raise ConfigError(f"mqtt.tls: cannot set up the MQTT client: {describe_error(exc)}") from None


def rss_mb() -> float:
    """Peak resident set size of this process (Linux reports KiB); ``peak_rss_mb`` in health."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float | None:
    """Resident set size now (``rss_mb`` in health), from /proc; None where there is no /proc."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / (1024.0 * 1024.0)


def configure_logging(settings: Settings, debug: bool = False) -> None:
    level = logging.DEBUG if debug else getattr(logging, settings.logging.level)
    root = logging.getLogger()
    root.setLevel(level)
    if not root.handlers:
        handler = logging.StreamHandler()
        root.addHandler(handler)
    fmt: logging.Formatter
    if settings.logging.json_lines:
        fmt = _JsonFormatter()
    elif os.environ.get("JOURNAL_STREAM"):
        fmt = logging.Formatter("%(levelname)s %(name)s: %(message)s")  # journald adds the time
    else:
        fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in root.handlers:
        handler.setFormatter(fmt)
    for noisy in ("paho", "urllib3"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        import json

        return json.dumps(
            {"ts": self.formatTime(record), "level": record.levelname, "logger": record.name,
             "msg": record.getMessage()}
        )


class Daemon:
    """One run of the service, from start-up to a clean exit."""

    def __init__(
        self,
        settings: Settings,
        config_path: Path | None = None,
        overrides: tuple[str, ...] = (),
        fast: bool = False,
        force_stdout: bool = False,
        source: AudioSource | None = None,
    ) -> None:
        self.settings = settings
        self.config_path = config_path
        self.overrides = overrides
        self.fast = fast
        self.force_stdout = force_stdout
        self._source_override = source
        self.notifier = ServiceNotifier()
        self._stop = False
        self._reload = False
        self.started = time.monotonic()
        self._status = STATUS_ONLINE
        self._last_health: float | None = None  # monotonic time of the last health; set at start()
        self._reason: str | None = None
        self.model: EmotionModel | None = None
        self.household: Household | None = None
        self.pipeline: Pipeline | None = None
        self.sinks: list[Sink] = []
        self.source: AudioSource | None = None
        self._mqtt_password: str | None = None  # to notice a changed password file on reload
        self._last_audio = time.monotonic()

    # -- signals -----------------------------------------------------------

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)

    def _on_stop(self, signum: int, frame: Any) -> None:
        self._stop = True

    def _on_hup(self, signum: int, frame: Any) -> None:
        self._reload = True

    def request_stop(self) -> None:
        self._stop = True

    # -- start-up ----------------------------------------------------------

    def start(self) -> None:
        """Open the input and load the model; errors here are one line and an exit code."""
        self.notifier.status("opening audio input")
        try:
            self.source = self._open_source()
        except DeviceLost as exc:  # waiting for a microphone is allowed by config
            log.warning("%s; waiting for it", exc)
            self.source = None
        self.notifier.status("loading model")
        self.model = load_model(self.settings)
        self.household = Household(self.model.info, self.settings.adapt)
        frontend = build_frontend(self.settings, self.model, self.household.normaliser)
        smoother = Smoother(self.model.labels, self.settings.smoother.params())
        self.sinks = make_sinks(self.settings, self.model.labels, self.force_stdout)
        self._mqtt_password = self.settings.mqtt_password() if self.settings.mqtt.enabled else None
        payloads = PayloadFactory(self.settings.mqtt.device(), clock=self._clock())
        self.pipeline = Pipeline(frontend, self.model, smoother, payloads, self.sinks)
        for sink in self.sinks:
            sink.start()
        self._publish_health(self.source)  # at start, so a monitor shows this run from its first second
        log.info(
            "emotiond %s: model %s (%s, %d labels) via %s",
            __version__, self.model.info.name, self.model.path.name, len(self.model.labels), self.model.runtime,
        )

    def _clock(self) -> str:
        """Wall clock for inputs heard in real time (microphone, paced file); audio clock otherwise."""
        src = self.settings.source
        if self._source_override is not None or src.input == "-" or (src.input and (self.fast or not src.realtime)):
            return CLOCK_AUDIO
        return CLOCK_WALL

    def _open_source(self) -> AudioSource:
        source = self._source_override or make_source(self.settings, self.fast)
        try:
            source.open()
        except SourceError as exc:
            if self.settings.source.input is None and self.settings.source.wait_for_device:
                raise DeviceLost(str(exc)) from None
            raise StartupError(str(exc), exc.exit_code) from None
        return source

    # -- the loop ----------------------------------------------------------

    def run(self) -> int:
        """Process audio until the input ends or a signal arrives; returns the exit code."""
        assert self.pipeline is not None, "start() first"
        backoff = self.settings.source.reopen_min_s
        try:
            while not self._stop:
                try:
                    if self.source is None:
                        self.source = self._open_source()
                except DeviceLost as exc:
                    self._degraded(f"waiting for the microphone: {exc}")
                    self._sleep(backoff)
                    backoff = min(backoff * 2, self.settings.source.reopen_max_s)
                    continue
                try:
                    finished = self._consume(self.source)
                    backoff = self.settings.source.reopen_min_s
                except DeviceLost as exc:
                    log.warning("%s; reopening in %.0f s", exc, backoff)
                    self._degraded(f"audio lost: {exc}")
                    self._sleep(backoff)
                    backoff = min(backoff * 2, self.settings.source.reopen_max_s)
                    continue
                finally:
                    self.source.close()
                    self.source = None
                if finished:
                    self.pipeline.finish()
                    break
        finally:
            self.shutdown()
        return exitcodes.OK

    def _consume(self, source: AudioSource) -> bool:
        """True when the input ended, False when asked to stop.

        A live source (microphone, stdin) yields empty blocks while it has no
        audio; after ``source.stall_s`` of that the status is ``degraded`` until
        audio flows again. The watchdog keeps being pinged meanwhile: the loop
        is healthy, and a restart cannot bring back a silent pipe.
        """
        assert self.pipeline is not None
        self._last_audio = time.monotonic()
        for block in source.blocks():
            if self._stop:
                return False
            if self._reload:
                self._reload = False
                self.reload()
            if not len(block):
                silent = time.monotonic() - self._last_audio
                if silent > self.settings.source.stall_s and self._status != STATUS_DEGRADED:
                    self._degraded(f"no audio from {source.name} for {silent:.0f} s")
            else:
                self._last_audio = time.monotonic()
                self.pipeline.process(block)
                if self._status != STATUS_ONLINE and not self.pipeline.failing:
                    self._set_status(STATUS_ONLINE)
                elif self.pipeline.failing and self._status == STATUS_ONLINE:
                    self._degraded("the model is failing on every window")
                if not self.notifier.ready_sent:
                    self.notifier.ready(f"listening on {source.name}")
                    log.info("ready: listening on %s", source.name)
            if not self.pipeline.failing:
                self.notifier.watchdog()  # only while the loop really makes progress
            self._maybe_health(source)
            if self.household is not None:
                self.household.maybe_save()
        return True

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._stop and time.monotonic() < end:
            self.notifier.watchdog()
            if self._reload:
                self._reload = False
                self.reload()
            time.sleep(min(0.2, max(0.0, end - time.monotonic())))

    def _set_status(self, status: str, reason: str | None = None) -> None:
        """Tell the sinks only on a change of status or reason; health follows every change."""
        changed = (status, reason) != (self._status, self._reason)
        self._status, self._reason = status, reason
        self.notifier.status(status if reason is None else f"{status}: {reason}")
        if not changed:
            return
        for sink in self.sinks:
            with contextlib.suppress(Exception):
                sink.set_status(status, reason)
        self._publish_health(self.source)

    def _degraded(self, why: str) -> None:
        if self._status != STATUS_DEGRADED:
            log.warning("degraded: %s", why)
        self._set_status(STATUS_DEGRADED, why)

    def health(self, source: AudioSource | None = None) -> dict[str, Any]:
        assert self.pipeline is not None and self.model is not None
        usage = resource.getrusage(resource.RUSAGE_SELF)
        sink_stats = {}
        for sink in self.sinks:
            stats = getattr(sink, "stats", None)
            if callable(stats):
                sink_stats.update(stats())
        return {
            "schema": 1,
            "status": self._status,
            "version": __version__,
            "uptime_s": round(time.monotonic() - self.started, 1),
            "audio_s": round(self.pipeline.audio_time_s, 1),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "rss_mb": _round(current_rss_mb()),
            "peak_rss_mb": round(rss_mb(), 1),
            "source": source.name if source else None,
            "overruns": source.overruns if source else 0,
            "model": {"name": self.model.info.name, "version": self.model.info.version, "runtime": self.model.runtime},
            "pipeline": self.pipeline.stats.as_dict(),
            "adapt": self.household.describe() if self.household is not None else None,
            "mqtt": sink_stats,
        }

    def _maybe_health(self, source: AudioSource) -> None:
        now = time.monotonic()
        if self._last_health is not None and now - self._last_health < self.settings.mqtt.health_interval_s:
            return
        self._publish_health(source)

    def _publish_health(self, source: AudioSource | None) -> None:
        if self.pipeline is None or self.model is None:
            return
        self._last_health = time.monotonic()
        payload = self.health(source)
        for sink in self.sinks:
            with contextlib.suppress(Exception):
                sink.publish_health(payload)

    # -- reload and shutdown -------------------------------------------------

    def reload(self) -> None:
        """SIGHUP: re-read the config; apply what can change without stopping capture.

        Everything that can fail (the file, every key, the model window, the
        password file, TLS files) is checked before anything is touched: a
        failing reload keeps the running configuration and logs one line, and
        never exits (systemd's ``RestartPreventExitStatus=78`` would keep a
        service that exited 78 dead). Replaced MQTT sinks hand their
        undelivered events to the new ones.
        """
        assert self.pipeline is not None and self.model is not None
        self.notifier.reloading()
        old = self.settings
        try:
            new = load_settings(self.config_path, self.overrides, allow_empty=False)
            window_params(new, self.model)
            password = new.mqtt_password() if new.mqtt.enabled else None
            secret_changed = new.mqtt.enabled and password != self._mqtt_password
            sinks_changed = secret_changed or (
                (new.mqtt, new.homeassistant, new.stdout) != (old.mqtt, old.homeassistant, old.stdout)
            )
            new_sinks = make_sinks(new, self.model.labels, self.force_stdout) if sinks_changed else None
            check_sinks(new_sinks or [])
        except (ConfigError, StartupError) as exc:
            log.error("reload refused, keeping the running configuration: %s", exc)
            self.notifier.reloaded()
            return
        self.settings = new
        configure_logging(new)
        changed = [name for name in type(new).model_fields if getattr(old, name) != getattr(new, name)]
        if secret_changed and "mqtt" not in changed:
            changed.append("mqtt (password)")
        if new.smoother != old.smoother:
            self.pipeline.smoother.params = new.smoother.params()
        if (new.vad, new.denoise, new.features) != (old.vad, old.denoise, old.features):
            self.pipeline.replace_frontend(build_frontend(new, self.model, self.household.normaliser))
        if new_sinks is not None:
            self._replace_sinks(new_sinks)
            self._mqtt_password = password
            self.pipeline.payloads.device = new.mqtt.device()
        if (new.source, new.model, new.adapt) != (old.source, old.model, old.adapt):
            log.warning("source, model and adapt settings change only on restart; kept the running ones")
        log.info("configuration reloaded (changed: %s)", ", ".join(changed) or "nothing")
        self.notifier.reloaded()

    def _replace_sinks(self, new_sinks: list[Sink]) -> None:
        """Close the old sinks and start the new ones; an MQTT sink passes its undelivered events on."""
        from .mqtt_sink import MqttSink

        assert self.pipeline is not None
        heir = next((s for s in new_sinks if isinstance(s, MqttSink)), None)
        for sink in self.sinks:
            try:
                if isinstance(sink, MqttSink):
                    sink.close(1.0, handing_over=heir is not None)
                    if heir is not None:
                        heir.inherit(sink)
                else:
                    sink.close(1.0)
            except Exception:  # an old sink must not stop the new ones
                log.exception("closing %s failed", type(sink).__name__)
        if heir is not None and self._status != STATUS_ONLINE:
            heir.set_status(self._status)  # a degraded daemon stays degraded on the new connection
        self.sinks = new_sinks
        for sink in self.sinks:
            sink.start()
        self.pipeline.sinks = list(self.sinks)

    def shutdown(self) -> None:
        self.notifier.stopping()
        if self.household is not None:
            self.household.maybe_save(force=True)
        for sink in self.sinks:
            try:
                sink.close(1.5)
            except Exception:
                log.exception("closing %s failed", type(sink).__name__)
        self.sinks = []


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def run_array(settings: Settings, samples: np.ndarray) -> Daemon:
    """Run the whole daemon over an in-memory signal (tests and eval)."""
    daemon = Daemon(settings, source=ArraySource(samples))
    daemon.start()
    daemon.run()
    return daemon
