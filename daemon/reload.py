"""SIGHUP: what a new configuration changes, checked in full before anything running is touched.

A reload either applies completely or not at all: :func:`plan_reload` reads the
file, every key, the model window, the password file and the TLS files, and
raises ``ConfigError``/``StartupError`` (one line) if anything is wrong; the
daemon then keeps its running configuration and never exits (systemd's
``RestartPreventExitStatus=78`` would keep a service that exited 78 dead).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ..dsp.adapt import WindowNormaliser
from ..models.runtime import EmotionModel
from .assembly import build_frontend, check_sinks, frontend_params, make_sinks
from .config import Settings, load_settings
from .payloads import STATUS_ONLINE
from .pipeline import Pipeline
from .sinks import Sink, SinkSet

log = logging.getLogger("emotiond")


@dataclass
class ReloadPlan:
    """A checked new configuration and what it changes in the running daemon."""

    settings: Settings
    changed: list[str]
    smoother: bool  # new smoother parameters
    frontend: bool  # vad, denoise or window settings changed: rebuild the frontend
    sinks: list[Sink] | None  # new sinks, built and validated but not started; None = keep the running ones
    password: str | None  # the MQTT password now in force
    restart_only: bool  # source, model, adapt or calibrate changed: these wait for a restart


def _restart_keys(settings: Settings) -> tuple:
    """The sections a running pipeline cannot take over: they hold the audio device, the model or the household."""
    return settings.source, settings.model, settings.adapt, settings.calibrate


def plan_reload(
    old: Settings,
    config_path: Path | None,
    overrides: tuple[str, ...],
    model: EmotionModel,
    old_password: str | None,
    force_stdout: bool,
) -> ReloadPlan:
    """Re-read the configuration; raises ``ConfigError``/``StartupError`` before anything is changed."""
    new = load_settings(config_path, overrides, allow_empty=False)
    frontend_params(new, model)  # a bad windows.window_s fails here, before anything changes
    password = new.mqtt_password() if new.mqtt.enabled else None
    secret_changed = new.mqtt.enabled and password != old_password
    sinks_changed = secret_changed or (
        (new.mqtt, new.homeassistant, new.stdout) != (old.mqtt, old.homeassistant, old.stdout)
    )
    new_sinks = make_sinks(new, model.labels, force_stdout) if sinks_changed else None
    check_sinks(new_sinks or [])
    changed = [name for name in type(new).model_fields if getattr(old, name) != getattr(new, name)]
    if secret_changed and "mqtt" not in changed:
        changed.append("mqtt (password)")
    return ReloadPlan(
        settings=new,
        changed=changed,
        smoother=new.smoother != old.smoother,
        frontend=(new.vad, new.denoise, new.windows) != (old.vad, old.denoise, old.windows),
        sinks=new_sinks,
        password=password if new_sinks is not None else old_password,
        restart_only=_restart_keys(new) != _restart_keys(old),
    )


def apply_plan(plan: ReloadPlan, pipeline: Pipeline, model: EmotionModel, normaliser: WindowNormaliser,
               status: str) -> None:
    """Change the running pipeline as ``plan`` says, through :meth:`Pipeline.reconfigure` only.

    ``normaliser`` is the household's: a rebuilt frontend keeps it, so what the
    adapt stage has learnt survives the reload.
    """
    new = plan.settings
    pipeline.reconfigure(
        smoother=new.smoother.params() if plan.smoother else None,
        frontend=build_frontend(new, model, normaliser) if plan.frontend else None,
    )
    if plan.sinks is not None:
        hand_over(pipeline.sinks, plan.sinks, status)
        pipeline.reconfigure(sinks=plan.sinks, device=new.mqtt.device())
        pipeline.sinks.start()


def hand_over(old: SinkSet, new_sinks: list[Sink], status: str) -> None:
    """Close the running sinks for ``new_sinks`` (not yet started); an MQTT sink passes its undelivered events on.

    The new MQTT sink inherits the old one's buffer and counters, and a
    degraded daemon stays degraded on the new connection.
    """
    from .mqtt_sink import MqttSink

    heir = next((s for s in new_sinks if isinstance(s, MqttSink)), None)
    for sink in old:
        try:
            if isinstance(sink, MqttSink):
                sink.close(1.0, handing_over=heir is not None)
                if heir is not None:
                    heir.inherit(sink)
            else:
                sink.close(1.0)
        except Exception:  # an old sink must not stop the new ones
            log.exception("closing %s failed", type(sink).__name__)
    if heir is not None and status != STATUS_ONLINE:
        heir.set_status(status)
