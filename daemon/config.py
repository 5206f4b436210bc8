"""Typed configuration: one pydantic model per pipeline stage, unknown keys rejected.

Sources, in rising precedence: the YAML file, ``EMOTIOND_<SECTION>__<KEY>``
environment variables, ``--set section.key=value`` arguments. Values from the
environment and ``--set`` are taken verbatim for string fields (a password
``correct horse #1`` or ``null`` is that text, not a YAML comment or "unset") and
parsed as YAML scalars for typed fields, so ``true``, ``3`` and ``null`` mean
what they say there.

Merging is done here rather than with pydantic-settings because two things
matter more than saving forty lines: every error must name the key *and* the
file it came from, and unrelated variables that share the prefix (the
training data path ``EMOTIOND_DATA``) must not be mistaken for settings.
"""

from __future__ import annotations

import logging
import os
import socket
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from ..dsp.denoise import DenoiseParams
from ..dsp.smoother import SmootherParams
from ..dsp.vad import VadParams
from .mqtt_topics import MAX_ID_BYTES, MAX_PREFIX_BYTES, check_topic_part, check_utf8_text

log = logging.getLogger(__name__)

ENV_PREFIX = "EMOTIOND_"
DEFAULT_CONFIG_PATHS = (Path("/etc/emotiond/config.yaml"),)


class ConfigError(Exception):
    """One line naming the file, the key and what is wrong with it.

    Control characters (a YAML key or a path containing a newline) are escaped,
    so the message stays one line however odd the input.
    """

    def __init__(self, message: str) -> None:
        super().__init__("".join(c if c.isprintable() else repr(c)[1:-1] for c in str(message)))


def Trained(default: Any, **kwargs: Any) -> Any:
    """A key whose value the model's sidecar supplies (its ``FrontendParams``).

    The default shown is the shipped model's; the key is applied only when the
    configuration sets it (``daemon/assembly.frontend_params``), so a model
    trained with other settings runs as it was trained. config.yaml shows
    these keys commented out.
    """
    return Field(default, json_schema_extra={"from_model": True}, **kwargs)


def from_model(field: Any) -> bool:
    """Whether a settings field is a ``Trained`` one."""
    return isinstance(field.json_schema_extra, dict) and bool(field.json_schema_extra.get("from_model"))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceSettings(_Section):
    """Where audio comes from (stage ``source``)."""

    input: str | None = Field(None, description="null = microphone; a file path; '-' = 16-bit PCM on stdin")
    device: int | str | None = Field(None, description="microphone index or a substring of its name; null = default")
    device_rate: int | None = Field(None, ge=8000, le=192000, description="capture rate; null = the device's own")
    stdin_rate: int = Field(16000, ge=8000, le=192000, description="sample rate of PCM on stdin")
    channels: int = Field(1, ge=1, le=32, description="channels captured (mixed down to mono)")
    block_ms: int = Field(100, ge=10, le=1000, description="audio per capture callback")
    buffer_s: float = Field(5.0, ge=0.5, le=120.0, description="ring buffer between capture and processing")
    realtime: bool = Field(True, description="pace file input in real time (false = as fast as possible)")
    speed: float = Field(1.0, ge=0.1, le=1000, description="pace file input at this multiple of real time")
    stall_s: float = Field(5.0, ge=0.5, le=600, description="a live input without audio this long: degraded")
    wait_for_device: bool = Field(False, description="wait for a missing microphone instead of exiting 66")
    reopen_min_s: float = Field(1.0, gt=0, le=60, description="first retry delay after a device is lost")
    reopen_max_s: float = Field(30.0, gt=0, le=600, description="longest retry delay")


class VadSettings(_Section):
    """webrtcvad and the utterance rings (stage ``vad``)."""

    frame_ms: Literal[10, 20, 30] = Trained(VadParams.frame_ms, description="webrtcvad frame length")
    aggressiveness: int = Trained(VadParams.aggressiveness, ge=0, le=3, description="0 = lenient … 3 = strict")
    start_ms: int = Trained(VadParams.start_ms, ge=10, le=2000, description="ring that must be mostly voiced to start")
    start_ratio: float = Trained(VadParams.start_ratio, gt=0, le=1, description="voiced share that starts speech")
    hangover_ms: int = Trained(VadParams.hangover_ms, ge=30, le=5000, description="ring that must be unvoiced to end")
    end_ratio: float = Trained(VadParams.end_ratio, gt=0, le=1, description="unvoiced share that ends speech")
    end_padding_ms: int = Trained(VadParams.end_padding_ms, ge=0, le=2000, description="kept after the last voice")
    max_segment_s: float = Trained(VadParams.max_segment_s, ge=1, le=600, description="split longer utterances")
    min_rms_dbfs: float = Trained(VadParams.min_rms_dbfs, ge=-120, le=0, description="quieter frames are silence")
    warmup_ms: int = Trained(VadParams.warmup_ms, ge=0, le=10000, description="ignored while webrtcvad adapts")


class DenoiseSettings(_Section):
    """Stationary spectral gate (stage ``denoise``), noisereduce's algorithm on the feature STFT."""

    enabled: bool = Trained(DenoiseParams.enabled, description="gate speech frames with the learned noise profile")
    n_std_thresh: float = Trained(
        DenoiseParams.n_std_thresh, ge=0, le=10, description="threshold above noise mean, in std"
    )
    prop_decrease: float = Trained(DenoiseParams.prop_decrease, ge=0, le=1, description="1 = remove gated bins fully")
    freq_smooth_hz: float = Trained(DenoiseParams.freq_smooth_hz, ge=62.5, le=4000, description="mask smoothing in Hz")
    time_smooth_ms: float = Trained(
        DenoiseParams.time_smooth_ms, ge=0, le=500, description="mask smoothing in ms (lag)"
    )
    profile_s: float = Trained(DenoiseParams.profile_s, ge=0.1, le=60, description="non-speech kept in the profile")
    min_profile_s: float = Trained(DenoiseParams.min_profile_s, ge=0.02, le=60, description="profile needed to gate")


class WindowSettings(_Section):
    """Which log-mel windows the model classifies: how often, and from how much speech (stage ``windows``)."""

    hop_ms: int = Trained(250, ge=10, le=5000, description="a model window every hop_ms of speech")
    window_s: float | None = Field(None, gt=0, le=10, description="null = the model's; else must equal it")
    min_speech_ms: int = Trained(200, ge=10, le=5000, description="shorter utterances are not classified")

    @field_validator("hop_ms")
    @classmethod
    def _multiple_of_frame_hop(cls, v: int) -> int:
        if v % 10:
            raise ValueError("must be a multiple of 10 ms (the feature hop)")
        return v


class AdaptSettings(_Section):
    """Household adaptation of the model input (stage ``adapt``), for models trained with it.

    The model's sidecar says which normalisation it was trained with; these
    keys only tune the household estimate of a ``household_band_z`` model.
    """

    horizon_s: float | None = Field(
        None, gt=0, le=1e7, description="seconds of speech the household estimate remembers; null = the model's"
    )
    state_file: Path | None = Field(
        None,
        description="where the estimate survives restarts; null = $STATE_DIRECTORY/household.json under systemd, "
        "else not kept",
    )
    save_interval_s: float = Field(300.0, ge=5, le=86400, description="how often the estimate is written")
    reset: bool = Field(False, description="true = forget the household at start (use once, e.g. with --set)")


class CalibrateSettings(_Section):
    """The household's own lean taken out of the model's output (stage ``calibrate``).

    For models whose sidecar carries a validation reference (``emotiond
    calibrate``); it shares the adapt stage's horizon, state directory and reset.
    Off by default: on corpora never heard it gained 1.6 points, on validation
    speakers of known corpora it was level (docs/model-card.md).
    """

    enabled: bool = Field(
        False, description="true = judge this household against its own lean (off: not better on every test, see the "
        "model card)"
    )
    neutral_share: float = Field(
        0.6, gt=0, lt=1, description="share of this household's speech that is neutral, as the reference assumes"
    )


class ModelSettings(_Section):
    """The int8 TFLite classifier (stage ``model``)."""

    path: Path | None = Field(None, description="null = the bundled model")
    num_threads: int = Field(1, ge=1, le=8, description="interpreter threads")
    runtime: Literal["auto", "ai_edge_litert", "tflite_runtime", "tensorflow"] = Field(
        "auto", description="TFLite interpreter package; auto tries them in that order"
    )


class SmootherSettings(_Section):
    """Window probabilities → state and utterance events (stage ``smoother``)."""

    method: Literal["ema", "mean"] = Field(SmootherParams.method, description="exponential or windowed average")
    ema_alpha: float = Field(SmootherParams.ema_alpha, gt=0, le=1, description="weight of the newest window")
    mean_windows: int = Field(SmootherParams.mean_windows, ge=1, le=100, description="windows averaged")
    min_confidence: float = Field(SmootherParams.min_confidence, ge=0, le=1, description="below it, no change")
    min_dwell_s: float = Field(SmootherParams.min_dwell_s, ge=0, le=60, description="shortest time between changes")
    release_s: float = Field(SmootherParams.release_s, ge=0.1, le=600, description="silence before 'none'")

    def params(self) -> SmootherParams:
        return SmootherParams(**self.model_dump())


class TlsSettings(_Section):
    enabled: bool = Field(False, description="connect with TLS")
    ca_file: Path | None = Field(None, description="CA bundle; null = system CAs")
    cert_file: Path | None = Field(None, description="client certificate (mutual TLS)")
    key_file: Path | None = Field(None, description="client key (mutual TLS)")
    insecure: bool = Field(False, description="skip host-name check (testing only)")


class MqttSettings(_Section):
    """paho-mqtt sink (stage ``sinks``)."""

    enabled: bool = Field(True, description="publish to an MQTT broker")
    host: str = Field("localhost", min_length=1, description="broker host")
    port: int = Field(1883, ge=1, le=65535, description="broker port")
    base_topic: str = Field("emotiond", min_length=1, description="{base} in {base}/{device}/…")
    device_id: str | None = Field(None, description="{device}; null = host name")
    client_id: str | None = Field(None, description="null = emotiond-{device}-{id of this installation}")
    protocol: Literal["5", "3.1.1"] = Field("5", description="MQTT version; 3.1.1 only for brokers without 5")
    qos: Literal[0, 1, 2] = Field(1, description="QoS of every publish")
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive")
    username: str | None = Field(None, description="broker user")
    password: SecretStr | None = Field(None, description="prefer EMOTIOND_MQTT__PASSWORD or password_file")
    password_file: Path | None = Field(None, description="file whose first line is the password")
    tls: TlsSettings = Field(default_factory=TlsSettings)
    buffer_size: int = Field(1000, ge=1, le=1_000_000, description="events kept while the broker is away")
    reconnect_min_s: float = Field(1.0, gt=0, le=60, description="first reconnect delay")
    reconnect_max_s: float = Field(60.0, gt=0, le=3600, description="longest reconnect delay")
    health_interval_s: float = Field(60.0, ge=1, le=86400, description="period of the retained health message")
    state_dir: Path | None = Field(
        None, description="keeps the installation id; null = $STATE_DIRECTORY, else ~/.local/state/emotiond"
    )

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v

    @field_validator("base_topic")
    @classmethod
    def _base_topic(cls, v: str) -> str:
        return check_topic_part(v, MAX_PREFIX_BYTES, first_level=True)

    @field_validator("device_id")
    @classmethod
    def _device_id(cls, v: str | None) -> str | None:
        return None if v is None else check_topic_part(v, MAX_ID_BYTES, first_level=False)

    @field_validator("client_id")
    @classmethod
    def _client_id(cls, v: str | None) -> str | None:
        return None if v is None else check_utf8_text(v, MAX_ID_BYTES)

    @model_validator(mode="after")
    def _password_source(self) -> MqttSettings:
        if self.password is not None and self.password_file is not None:
            raise ValueError("set password or password_file, not both")
        if self.password_file is not None:
            try:
                exists = self.password_file.is_file()
            except (OSError, ValueError):  # a name too long for the file system, a NUL byte
                exists = False
            if not exists:
                raise ValueError(f"password_file {self.password_file} does not exist")
        return self

    def device(self) -> str:
        return self.device_id or socket.gethostname().split(".")[0] or "emotiond"


class HomeAssistantSettings(_Section):
    discovery: bool = Field(True, description="announce entities via MQTT discovery")
    prefix: str = Field("homeassistant", min_length=1, description="discovery prefix")
    discovery_delay_s: float = Field(
        1.0, ge=0, le=10,
        description="after the first discovery, hold events this long so HA subscribes before the first one",
    )

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        return check_topic_part(v, MAX_PREFIX_BYTES, first_level=True)


class StdoutSettings(_Section):
    enabled: bool = Field(False, description="print one JSON line per event on stdout")


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log level")
    json_lines: bool = Field(False, description="log as JSON lines instead of text")


class Settings(_Section):
    source: SourceSettings = Field(default_factory=SourceSettings)
    vad: VadSettings = Field(default_factory=VadSettings)
    denoise: DenoiseSettings = Field(default_factory=DenoiseSettings)
    windows: WindowSettings = Field(default_factory=WindowSettings)
    adapt: AdaptSettings = Field(default_factory=AdaptSettings)
    calibrate: CalibrateSettings = Field(default_factory=CalibrateSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    smoother: SmootherSettings = Field(default_factory=SmootherSettings)
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    homeassistant: HomeAssistantSettings = Field(default_factory=HomeAssistantSettings)
    stdout: StdoutSettings = Field(default_factory=StdoutSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)

    def mqtt_password(self) -> str | None:
        """The broker password from the config, the environment or ``password_file``."""
        if self.mqtt.password is not None:
            return self.mqtt.password.get_secret_value()
        if self.mqtt.password_file is not None:
            try:
                return self.mqtt.password_file.read_text().splitlines()[0]
            except (OSError, IndexError) as exc:
                raise ConfigError(f"mqtt.password_file: cannot read {self.mqtt.password_file}: {exc}") from None
        return None


def _set_path(tree: dict[str, Any], dotted: str, value: Any, origin: str) -> None:
    keys = [k for k in dotted.split(".") if k]
    if not keys:
        raise ConfigError(f"{origin}: empty key")
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{origin}: {key} is not a section")
        node = child
    node[keys[-1]] = value


def _scalar(text: str, origin: str) -> Any:
    """A YAML scalar (``3``, ``true``, ``null``); flow lists/maps only when written as such.

    A bare ``-`` (stdin) or ``a: b`` stays the string it looks like.
    """
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        return text
    if isinstance(value, list | dict) and not text.lstrip().startswith(("[", "{")):
        return text
    return value


_TEXT_TYPES = (str, SecretStr, Path)


def _annotation(dotted: str) -> Any:
    """The type annotation of the setting at ``dotted`` (``mqtt.tls.ca_file``), or None if there is none."""
    model: Any = Settings
    annotation: Any = None
    for key in (k for k in dotted.split(".") if k):
        fields = getattr(model, "model_fields", None)
        if not fields or key not in fields:
            return None
        annotation = fields[key].annotation
        model = annotation
    return annotation


def _is_text_field(annotation: Any) -> bool:
    """True for ``str``/``SecretStr``/``Path`` fields (optionally ``| None``): their values are taken verbatim."""
    if annotation is None:
        return False
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation) if origin in (typing.Union, types.UnionType) else (annotation,)
    args = tuple(a for a in args if a is not type(None))
    return bool(args) and all(isinstance(a, type) and issubclass(a, _TEXT_TYPES) for a in args)


def override_value(dotted: str, raw: str, origin: str) -> Any:
    """An environment or ``--set`` value: verbatim for a text field, a YAML scalar for a typed one."""
    if _is_text_field(_annotation(dotted)):
        return raw
    return _scalar(raw, origin)


def env_overrides(environ: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """``(dotted_key, raw_value, origin)`` for every ``EMOTIOND_SECTION__KEY`` variable."""
    out = []
    for name, value in sorted(environ.items()):
        if name.startswith(ENV_PREFIX) and "__" in name[len(ENV_PREFIX) :]:
            dotted = name[len(ENV_PREFIX) :].lower().replace("__", ".")
            out.append((dotted, value, f"environment {name}"))
    return out


def _read_yaml(path: Path) -> dict[str, Any] | None:
    """The file's mapping of sections; None for a file with no settings at all (empty or only comments)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, not {type(data).__name__}")
    return data


def _describe(error: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in error["loc"]) or "(top level)"
    msg = error["msg"]
    if error["type"] == "extra_forbidden":
        msg = "unknown key"
    if "input" in error and error["type"] != "extra_forbidden" and not loc.endswith("password"):
        shown = repr(error["input"])
        if len(shown) <= 40:
            msg += f" (got {shown})"
    return f"{loc}: {msg}"


# Sections renamed in this release: the old name is read, with one warning, until the next.
RENAMED_SECTIONS = {"features": "windows"}


def _renamed_section(tree: dict[str, Any], path: Path) -> dict[str, Any]:
    """The file's sections under their current names; an old name is warned about once, naming the file."""
    for old, new in RENAMED_SECTIONS.items():
        if old not in tree:
            continue
        if new in tree:
            raise ConfigError(f"{path}: both '{old}:' and '{new}:' are given; '{old}' is the old name of '{new}'")
        log.warning("%s: section '%s:' is now '%s:'; the old name is read until the next release", path, old, new)
        tree = {(new if k == old else k): v for k, v in tree.items()}
    return tree


def _renamed_key(dotted: str, origin: str) -> str:
    """``features.hop_ms`` → ``windows.hop_ms``, with one warning naming where it came from."""
    section, dot, rest = dotted.partition(".")
    if section in RENAMED_SECTIONS and dot:
        new = f"{RENAMED_SECTIONS[section]}.{rest}"
        log.warning("%s: '%s' is now '%s'; the old name is read until the next release", origin, dotted, new)
        return new
    return dotted


def load_settings(
    path: Path | None = None,
    overrides: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
    allow_empty: bool = True,
) -> Settings:
    """Read, merge and validate the configuration, or raise one-line ``ConfigError``.

    An empty config file is almost always a mistake (a truncated write, a wrong
    path), so it is refused when ``allow_empty`` is false (a reload, where it
    would silently reset a working setup to localhost defaults) and announced
    with a warning otherwise.
    """
    environ = os.environ if environ is None else environ
    if path is None:
        path = next((p for p in DEFAULT_CONFIG_PATHS if p.is_file()), None)
    tree: dict[str, Any] = {}
    if path is not None:
        read = _read_yaml(path)
        if read is None:
            if not allow_empty:
                raise ConfigError(f"{path}: the config file is empty (no settings); refusing to reset to the defaults")
            log.warning("%s: the config file is empty; every setting has its default", path)
        tree = _renamed_section(read or {}, path)
    origins: dict[str, str] = {}
    for dotted, raw, origin in env_overrides(environ):
        dotted = _renamed_key(dotted, origin)
        _set_path(tree, dotted, override_value(dotted, raw, origin), origin)
        origins[dotted] = origin
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item}: expected section.key=value")
        dotted, raw = item.split("=", 1)
        origin = f"--set {dotted}"
        dotted = _renamed_key(dotted.strip(), origin)
        _set_path(tree, dotted, override_value(dotted, raw, origin), origin)
        origins[dotted] = origin
    try:
        return Settings.model_validate(tree)
    except ValidationError as exc:
        first = exc.errors()[0]
        dotted = ".".join(str(p) for p in first["loc"])
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        described = _describe(first)
        if dotted in origins:  # the key is in the origin already: "--set mqtt.port: …"
            raise ConfigError(f"{origins[dotted]}: {described.split(': ', 1)[1]}{more}") from None
        raise ConfigError(f"{path or 'defaults'}: {described}{more}") from None


def redacted(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data, secrets masked (for ``check-config``)."""
    data = settings.model_dump(mode="json")
    if settings.mqtt.password is not None:
        data["mqtt"]["password"] = "********"
    return data
