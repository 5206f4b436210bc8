"""Configuration: every key documented and validated; bad values give one line and exit 78."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from emotiond.daemon.config import ConfigError, Settings, from_model, load_settings, redacted
from emotiond.daemon.config_reference import render_markdown, render_yaml

ROOT = Path(__file__).resolve().parents[1]


def test_committed_config_yaml_and_reference_are_generated_from_the_schema() -> None:
    regenerate = "run: .venv/bin/python -m emotiond.daemon.config_reference"
    assert (ROOT / "config.yaml").read_text() == render_yaml(), regenerate
    assert (ROOT / "docs/configuration.md").read_text() == render_markdown()


def test_config_yaml_holds_every_key_with_its_default_and_a_comment() -> None:
    text = (ROOT / "config.yaml").read_text()
    loaded = load_settings(ROOT / "config.yaml", environ={})
    assert loaded == Settings()
    data = yaml.safe_load(text)
    shown = [line[2:] if re.match(r"# *[a-z_]+:", line) else line for line in text.splitlines()]
    uncommented = yaml.safe_load("\n".join(shown))
    for section, model in Settings.model_fields.items():
        for key, field in model.annotation.model_fields.items():
            if from_model(field):  # the model's value unless set: shown, commented out
                assert key not in (data.get(section) or {}), f"{section}.{key} would override the model"
                assert uncommented[section][key] == field.default, f"{section}.{key} not shown in config.yaml"
            else:
                assert key in data[section], f"{section}.{key} missing from config.yaml"
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#") and not line.rstrip().endswith(":"):
            assert "  # " in line, f"no comment on: {line}"


BAD = [
    ("vad:\n  aggressiveness: 7\n", "vad.aggressiveness: Input should be less than or equal to 3"),
    ("vad:\n  frame_ms: 25\n", "vad.frame_ms: Input should be 10, 20 or 30"),
    ("mqtt:\n  port: seventy\n", "mqtt.port: Input should be a valid integer"),
    ("mqtt:\n  qos: 3\n", "mqtt.qos: Input should be 0, 1 or 2"),
    ("mqtt:\n  base_topic: 'a/#'\n", "mqtt.base_topic: Value error, must not contain MQTT wildcards"),
    ("smoother:\n  min_confidence: 1.5\n", "smoother.min_confidence: Input should be less than or equal to 1"),
    ("windows:\n  hop_ms: 255\n", "windows.hop_ms: Value error, must be a multiple of 10 ms"),
    ("vad:\n  agressiveness: 2\n", "vad.agressiveness: unknown key"),
    ("speakers: {}\n", "speakers: unknown key"),
    ("vad: [1, 2]\n", "vad: Input should be a valid dictionary"),
    ("- just\n- a list\n", "top level must be a mapping of sections"),
    ("vad:\n  frame_ms: 30\n aggressiveness: 2\n", "invalid YAML at line"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_config_gives_one_line_naming_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_settings(path, environ={})
    line = str(err.value)
    assert "\n" not in line
    assert line.startswith(str(path)), line
    assert message in line, line


@pytest.mark.parametrize(("text", "message"), BAD[:3] + BAD[-1:])
def test_check_config_exits_78_with_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    proc = subprocess.run([sys.executable, "-m", "emotiond", "check-config", "--config", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 78
    assert proc.stderr.count("\n") == 1 and message in proc.stderr and str(path) in proc.stderr
    assert "Traceback" not in proc.stderr


def test_environment_and_set_override_the_file_in_that_order(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("mqtt:\n  host: from-file\n  port: 1000\n")
    env = {"EMOTIOND_MQTT__HOST": "from-env", "EMOTIOND_MQTT__PORT": "2000", "EMOTIOND_DATA": "/not/a/setting"}
    s = load_settings(path, ["mqtt.port=3000"], environ=env)
    assert (s.mqtt.host, s.mqtt.port) == ("from-env", 3000)
    with pytest.raises(ConfigError, match=r"^environment EMOTIOND_MQTT__PORT: Input should be a valid integer"):
        load_settings(path, environ={"EMOTIOND_MQTT__PORT": "x"})
    with pytest.raises(ConfigError, match=r"^--set vad.nope: unknown key"):
        load_settings(path, ["vad.nope=1"], environ={})


def test_password_is_never_shown(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("mqtt:\n  username: u\n")
    s = load_settings(path, environ={"EMOTIOND_MQTT__PASSWORD": "hunter2-secret"})
    assert s.mqtt_password() == "hunter2-secret"
    assert "hunter2-secret" not in repr(s) and "hunter2-secret" not in str(redacted(s))
    proc = subprocess.run([sys.executable, "-m", "emotiond", "check-config", "--config", str(path)],
                          capture_output=True, text=True, env={"EMOTIOND_MQTT__PASSWORD": "hunter2-secret",
                                                               "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert "hunter2-secret" not in proc.stdout + proc.stderr and "********" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "emotiond", "check-config", "--config", str(path),
                          "--set", "mqtt.port=0"], capture_output=True, text=True,
                         env={"EMOTIOND_MQTT__PASSWORD": "hunter2-secret", "PATH": "/usr/bin:/bin"})
    assert bad.returncode == 78 and "hunter2-secret" not in bad.stdout + bad.stderr


def test_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    s = load_settings(None, [f"mqtt.password_file={secret}"], environ={})
    assert s.mqtt_password() == "s3cret"
    with pytest.raises(ConfigError, match=r"mqtt: Value error, password_file .*missing does not exist"):
        load_settings(None, [f"mqtt.password_file={tmp_path / 'missing'}"], environ={})


def test_old_features_section_is_read_as_windows_with_one_warning_naming_the_file(tmp_path: Path, caplog) -> None:
    path = tmp_path / "old.yaml"
    path.write_text("features:\n  hop_ms: 500\n  min_speech_ms: 300\n")
    with caplog.at_level("WARNING", logger="emotiond.daemon.config"):
        settings = load_settings(path, environ={})
    assert (settings.windows.hop_ms, settings.windows.min_speech_ms) == (500, 300)
    assert "hop_ms" in settings.windows.model_fields_set  # so it overrides the model's hop
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [f"{path}: section 'features:' is now 'windows:'; the old name is read until the next release"]


def test_old_features_keys_in_environment_and_set_are_renamed_with_a_warning(caplog) -> None:
    env = {"EMOTIOND_FEATURES__HOP_MS": "300"}
    with caplog.at_level("WARNING", logger="emotiond.daemon.config"):
        settings = load_settings(None, ("features.min_speech_ms=400",), environ=env)
    assert (settings.windows.hop_ms, settings.windows.min_speech_ms) == (300, 400)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2
    assert warnings[0].startswith("environment EMOTIOND_FEATURES__HOP_MS: 'features.hop_ms' is now 'windows.hop_ms'")
    assert warnings[1].startswith("--set features.min_speech_ms: 'features.min_speech_ms' is now 'windows.")


def test_old_and_new_section_together_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "both.yaml"
    path.write_text("features:\n  hop_ms: 500\nwindows:\n  hop_ms: 250\n")
    with pytest.raises(ConfigError, match=r"both.yaml: both 'features:' and 'windows:' are given"):
        load_settings(path, environ={})
