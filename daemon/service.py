"""The long-running daemon: keeps the pipeline that :mod:`.assembly` builds alive.

What belongs to a service and not to the audio stages: signals (SIGTERM/SIGINT stop, SIGHUP
reload), systemd readiness, watchdog and status, the retained health, reopening a lost microphone.
All on the main thread; the other threads are the capture callback (PortAudio), the stdin reader
(``emotiond-stdin``), paho's network loop and the MQTT sink's ``mqtt-sender`` (docs/architecture.md).
"""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path
from typing import Any

from .. import __version__, exitcodes
from ..dsp.audio import AudioInputError
from ..models.runtime import EmotionModel
from .adaptation import Household
from .assembly import StartupError, build_pipeline, load_household, load_model, make_sinks, make_source, payload_clock
from .config import ConfigError, Settings
from .logsetup import configure_logging
from .notify import ServiceNotifier
from .payloads import STATUS_ONLINE
from .pipeline import Pipeline
from .reload import apply_plan, plan_reload
from .sinks import Sink, SinkSet
from .sources import AudioSource, DeviceLost
from .status import StatusReporter, health_payload

log = logging.getLogger("emotiond")
HOUSEKEEPING_S = 0.5  # health and the household save have intervals of seconds to minutes
# At most this many ms of audio in one piece (``coalesce``, ``Pipeline.blocks_to_take``): paced, each wake-up costs.
IDLE_MS = 500
__all__ = ["Daemon", "StartupError", "configure_logging"]


class Daemon:
    """One run of the service, from start-up to a clean exit.

    ``model``, ``sinks`` and ``source`` are injected; left out, :meth:`start`
    builds them from ``settings`` with :mod:`.assembly` (the CLI's path).
    """

    def __init__(
        self,
        settings: Settings,
        config_path: Path | None = None,
        overrides: tuple[str, ...] = (),
        fast: bool = False,
        force_stdout: bool = False,
        source: AudioSource | None = None,
        *,
        model: EmotionModel | None = None,
        sinks: list[Sink] | None = None,
    ) -> None:
        self.settings = settings
        self.config_path = config_path
        self.overrides = overrides
        self.fast = fast
        self.force_stdout = force_stdout
        self._source_override = source
        self._make_sinks = sinks is None  # the CLI's path: start() builds them from settings
        self.notifier = ServiceNotifier()
        self._stop = False
        self._reload = False
        self.started = time.monotonic()
        self.report = StatusReporter(self.notifier, lambda: self.sinks, self._health,
                                     lambda: self.settings.mqtt.health_interval_s)
        self.model: EmotionModel | None = model
        self.household: Household | None = None
        self.pipeline: Pipeline | None = None
        self.sinks = SinkSet(sinks or ())
        self.source: AudioSource | None = None
        self._mqtt_password: str | None = None  # to notice a changed password file on reload
        self._last_audio = self.started

    def _health(self) -> dict[str, Any] | None:
        """The health message now, or None before :meth:`start` built the pipeline."""
        if self.pipeline is None or self.model is None:
            return None
        up, status = time.monotonic() - self.started, self.report.status
        return health_payload(status, self.pipeline, self.model, self.household, self.sinks, up, self.source)

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop after the current block; SIGHUP reloads between blocks."""
        signal.signal(signal.SIGTERM, lambda signum, frame: self.request_stop())
        signal.signal(signal.SIGINT, lambda signum, frame: self.request_stop())
        signal.signal(signal.SIGHUP, lambda signum, frame: setattr(self, "_reload", True))

    def request_stop(self) -> None:
        self._stop = True

    def start(self) -> None:
        """Open the input and load the model; errors here are one line and an exit code."""
        self.notifier.status("opening audio input")
        try:
            self.source = self._open_source()
        except DeviceLost as exc:  # waiting for a microphone is allowed by config
            log.warning("%s; waiting for it", exc)
            self.source = None
        self.notifier.status("loading model")
        if self.model is None:
            self.model = load_model(self.settings)
        self.household = load_household(self.settings, self.model)
        if self._make_sinks:
            self.sinks.replace(make_sinks(self.settings, self.model.labels, self.force_stdout))
        self._mqtt_password = self.settings.mqtt_password() if self.settings.mqtt.enabled else None
        self.pipeline = build_pipeline(
            self.settings, self.model, self.sinks, household=self.household,
            clock=payload_clock(self.settings, self.fast, self._source_override is not None),
        )
        self.sinks.start()
        self.report.publish_health()  # at start, so a monitor shows this run from its first second
        log.info("emotiond %s: model %s (%s, %d labels) via %s", __version__, self.model.info.name,
                 self.model.path.name, len(self.model.labels), self.model.runtime)

    def _open_source(self) -> AudioSource:
        source = self._source_override or make_source(self.settings, self.fast)
        try:
            source.open()
        except AudioInputError as exc:
            if self.settings.source.input is None and self.settings.source.wait_for_device:
                raise DeviceLost(str(exc)) from None
            raise StartupError(str(exc), exc.exit_code) from None
        return source

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
                    backoff = self._back_off(backoff, f"waiting for the microphone: {exc}")
                    continue
                try:
                    finished = self._consume(self.source)
                    backoff = self.settings.source.reopen_min_s
                except DeviceLost as exc:
                    log.warning("%s; reopening in %.0f s", exc, backoff)
                    backoff = self._back_off(backoff, f"audio lost: {exc}")
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

        A live source yields empty blocks while it has no audio; after ``source.stall_s`` of that the
        status is ``degraded`` until audio flows again. The watchdog is still pinged: the loop is
        healthy, and a restart cannot bring back a silent pipe.
        """
        assert self.pipeline is not None
        pipeline = self.pipeline
        self._last_audio = time.monotonic()
        due = 0.0  # next housekeeping (watchdog, health, household save): by time, not per block
        for block in source.blocks():
            if self._stop:
                return False
            if self._reload:
                self._reload = False
                self.reload()
                pipeline = self.pipeline
            now = time.monotonic()
            if not len(block):
                self.report.stalled(source.name, now - self._last_audio, self.settings.source.stall_s)
            else:
                self._last_audio = now
                pipeline.process(block)
                source.coalesce = pipeline.blocks_to_take(self.settings.source.block_ms, IDLE_MS)
                if pipeline.failing != (self.report.status != STATUS_ONLINE):  # only on a change
                    self.report.follow_pipeline(pipeline.failing)
                if not self.notifier.ready_sent:
                    self.notifier.ready(f"listening on {source.name}")
                    log.info("ready: listening on %s", source.name)
            if now >= due:
                due = now + self._housekeeping()
        return True

    def _housekeeping(self) -> float:
        """Watchdog, health and the household save, each when its own interval says; seconds to the next call.

        Every ``HOUSEKEEPING_S`` (sooner for the watchdog), not every block: a paced daemon pays per step.
        """
        assert self.pipeline is not None
        if not self.pipeline.failing:
            self.notifier.watchdog()  # only while the loop really makes progress
        self.report.maybe_health()
        if self.household is not None:
            self.household.maybe_save()
        watchdog = self.notifier.watchdog_interval_s
        return HOUSEKEEPING_S if watchdog is None else min(HOUSEKEEPING_S, watchdog / 2)

    def _back_off(self, seconds: float, why: str) -> float:
        """Degraded for ``why``; wait ``seconds`` (pinging the watchdog, serving SIGHUP); the next, doubled wait."""
        self.report.degraded(why)
        end = time.monotonic() + seconds
        while not self._stop and time.monotonic() < end:
            self.notifier.watchdog()
            if self._reload:
                self._reload = False
                self.reload()
            time.sleep(min(0.2, max(0.0, end - time.monotonic())))
        return min(seconds * 2, self.settings.source.reopen_max_s)

    def reload(self) -> None:
        """SIGHUP: re-read the config and apply what can change without stopping capture.

        Everything is checked first (:func:`.reload.plan_reload`); a failing reload keeps the running
        configuration, logs one line and never exits. Replaced MQTT sinks hand their undelivered events on.
        """
        assert self.pipeline is not None and self.model is not None and self.household is not None
        self.notifier.reloading()
        try:
            plan = plan_reload(self.settings, self.config_path, self.overrides, self.model, self._mqtt_password,
                               self.force_stdout)
        except (ConfigError, StartupError) as exc:
            log.error("reload refused, keeping the running configuration: %s", exc)
            self.notifier.reloaded()
            return
        self.settings = plan.settings
        configure_logging(plan.settings)
        apply_plan(plan, self.pipeline, self.model, self.household.normaliser, self.report.status)
        self._mqtt_password = plan.password
        if plan.restart_only:
            log.warning("source, model, adapt and calibrate settings change only on restart; kept the running ones")
        log.info("configuration reloaded (changed: %s)", ", ".join(plan.changed) or "nothing")
        self.notifier.reloaded()

    def shutdown(self) -> None:
        """Save the household statistics, close the sinks (retained ``offline``); at most a few seconds."""
        self.notifier.stopping()
        if self.household is not None:
            self.household.maybe_save(force=True)
        self.sinks.close(1.5)
        self.sinks.replace([])
