"""What the daemon tells the world about itself: its status (systemd and sinks) and the retained health."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .notify import ServiceNotifier
from .payloads import STATUS_DEGRADED, STATUS_ONLINE
from .resources import process_usage
from .sinks import SinkSet

if TYPE_CHECKING:
    from ..models.runtime import EmotionModel
    from .adaptation import Household
    from .pipeline import Pipeline
    from .sources import AudioSource

log = logging.getLogger("emotiond")


class StatusReporter:
    """``online``/``degraded`` (with why) to systemd on every call, to the sinks only on a change.

    Health goes out at start, on every status change and every ``interval_s()``;
    ``health()`` builds the message (None while there is nothing to report yet).
    """

    def __init__(
        self,
        notifier: ServiceNotifier,
        sinks: Callable[[], SinkSet],
        health: Callable[[], dict[str, Any] | None],
        interval_s: Callable[[], float],
    ) -> None:
        self._notifier = notifier
        self._sinks = sinks
        self._health = health
        self._interval_s = interval_s
        self.status = STATUS_ONLINE
        self.reason: str | None = None
        self._last_health: float | None = None  # monotonic time of the last health

    def set(self, status: str, reason: str | None = None) -> None:
        """Tell the sinks only on a change of status or reason; health follows every change."""
        changed = (status, reason) != (self.status, self.reason)
        self.status, self.reason = status, reason
        self._notifier.status(status if reason is None else f"{status}: {reason}")
        if not changed:
            return
        self._sinks().set_status(status, reason)
        self.publish_health()

    def degraded(self, why: str) -> None:
        """Degraded because of ``why``; logged once per stretch of degradation."""
        if self.status != STATUS_DEGRADED:
            log.warning("degraded: %s", why)
        self.set(STATUS_DEGRADED, why)

    def stalled(self, source: str, silent_s: float, stall_s: float) -> None:
        """``degraded`` once a live source has delivered nothing for more than ``stall_s``."""
        if silent_s > stall_s and self.status != STATUS_DEGRADED:
            self.degraded(f"no audio from {source} for {silent_s:.0f} s")

    def follow_pipeline(self, failing: bool) -> None:
        """``online`` again once audio flows and the model works; ``degraded`` while it fails on every window."""
        if self.status != STATUS_ONLINE and not failing:
            self.set(STATUS_ONLINE)
        elif failing and self.status == STATUS_ONLINE:
            self.degraded("the model is failing on every window")

    def maybe_health(self) -> None:
        """Health, if ``interval_s`` has passed since the last one."""
        if self._last_health is not None and time.monotonic() - self._last_health < self._interval_s():
            return
        self.publish_health()

    def publish_health(self) -> None:
        payload = self._health()
        if payload is None:
            return
        self._last_health = time.monotonic()
        self._sinks().publish_health(payload)


def health_payload(
    status: str,
    pipeline: Pipeline,
    model: EmotionModel,
    household: Household | None,
    sinks: SinkSet,
    uptime_s: float,
    source: AudioSource | None,
) -> dict[str, Any]:
    """The health message now (built by the pipeline's ``PayloadFactory``, docs/mqtt.md)."""
    info = model.info
    return pipeline.payloads.health(
        status,
        uptime_s=uptime_s,
        audio_s=pipeline.audio_time_s,
        process=process_usage(),
        source=source.name if source else None,
        overruns=source.overruns if source else 0,
        model={"name": info.name, "version": info.version, "runtime": model.runtime},
        pipeline=pipeline.stats.as_dict(),
        adapt=household.describe() if household is not None else None,
        sink_failures=sinks.failures,
        sinks=sinks.stats(),
    )
