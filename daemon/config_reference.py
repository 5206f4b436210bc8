"""Renders config.yaml and docs/configuration.md from the settings schema.

The schema is the single source of truth for keys, defaults, ranges and
descriptions; the committed files are regenerated with
``.venv/bin/python -m emotiond.daemon.config_reference`` (from the repository root) and a test fails when they drift.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from .. import exitcodes
from ..usage import Parser
from .config import Settings, from_model

HEADER = """\
# emotiond configuration. Every key is shown with its default.
# Installed location: /etc/emotiond/config.yaml (or pass --config FILE).
# Override any key with EMOTIOND_<SECTION>__<KEY>=value or --set section.key=value.
# Pipeline: source -> vad -> denoise -> features -> windows -> adapt -> model -> calibrate -> smoother
#           -> sinks (mqtt, stdout).
# Keys shown commented out take the model's own value (from its sidecar; the value shown is the
# shipped model's): uncomment a key, and its section line, to override the model.
"""


def _default(field: FieldInfo) -> Any:
    if field.default_factory is not None:
        return field.default_factory()
    return field.default


def _yaml_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Path):
        return json.dumps(str(value))
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def _ranges(field: FieldInfo) -> str:
    parts = []
    for meta in field.metadata:
        for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(meta, attr, None) is not None:
                parts.append(f"{sym} {getattr(meta, attr)}")
    return ", ".join(parts)


def _walk(model: type[BaseModel], prefix: str = "") -> list[tuple[str, FieldInfo | None, type[BaseModel] | None]]:
    rows: list[tuple[str, FieldInfo | None, type[BaseModel] | None]] = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            rows.append((prefix + name, None, ann))
            rows.extend(_walk(ann, prefix + name + "."))
        else:
            rows.append((prefix + name, field, None))
    return rows


def _all_from_model(section: type[BaseModel]) -> bool:
    return all(from_model(f) for f in section.model_fields.values())


def render_yaml() -> str:
    lines = [HEADER]
    for dotted, field, section in _walk(Settings):
        depth = dotted.count(".")
        indent = "  " * depth
        key = dotted.rsplit(".", 1)[-1]
        if section is not None:
            doc = (section.__doc__ or "").strip().splitlines()
            if depth == 0:
                lines.append("")
            mark = "# " if _all_from_model(section) else ""  # an empty section would be null, not {}
            lines.append(f"{mark}{indent}{key}:" + (f"  # {doc[0]}" if doc and depth == 0 else ""))
            continue
        assert field is not None
        mark = "# " if from_model(field) else ""
        lines.append(f"{mark}{indent}{key}: {_yaml_value(_default(field))}  # {field.description}")
    return "\n".join(lines) + "\n"


def render_markdown() -> str:
    out = [
        "# Configuration reference",
        "",
        "Generated from the settings schema (`daemon/config.py`) by",
        "`.venv/bin/python -m emotiond.daemon.config_reference` (from the repository root); a test keeps it in step.",
        "Unknown keys are rejected; a bad value stops start-up with one line naming the",
        "file and key, exit code 78. On `systemctl reload` (SIGHUP) a bad value, an",
        "unreadable `mqtt.password_file` or TLS file, or an empty file is logged in one",
        "line and the running configuration is kept.",
        "",
        "`EMOTIOND_<SECTION>__<KEY>` variables and `--set section.key=value` override the",
        "file. For text keys (host, topics, ids, user name, password, paths) the value is",
        "taken verbatim: `EMOTIOND_MQTT__PASSWORD='correct horse #1'` is that password,",
        "and `null`, `#x` or `123456` are text too. Other keys parse the value as their",
        "type (`true`, `1884`, `null`), with the same one-line errors. An empty config",
        "file (or one with only comments) is accepted at start with a warning that every",
        "setting has its default.",
        "",
        "Keys marked *model* take the model's own value, from its sidecar (the default",
        "shown is the shipped model's): the VAD, denoise and window settings a model was",
        "trained with travel with it. A key set in the file, the environment or `--set`",
        "overrides the model's value; `config.yaml` shows these keys commented out.",
        "",
        "The section `windows` was called `features` (its `hop_ms` is the window hop, not",
        "the 10 ms feature hop). The old name is still read, in the file, the environment",
        "(`EMOTIOND_FEATURES__…`) and `--set features.…`, with one warning line naming",
        "where it was found; it goes in the next release.",
        "",
        "Topic parts (`mqtt.base_topic`, `mqtt.device_id`, `homeassistant.prefix`) and",
        "`mqtt.client_id` are checked as MQTT defines them: valid UTF-8 without control",
        "characters or non-characters, no wildcards `#` `+`, no leading `$` (broker",
        "topics like `$SYS`), at most 1024 bytes for the two prefixes and 256 for the ids.",
        "",
    ]
    for dotted, field, section in _walk(Settings):
        if section is not None:
            doc = (section.__doc__ or "").strip().splitlines()
            out += ["", f"## `{dotted}`", "", doc[0] if doc else "",
                    "", "| key | default | range | meaning |", "|---|---|---|---|"]
            continue
        assert field is not None
        default = f"`{_yaml_value(_default(field))}`" + (" *model*" if from_model(field) else "")
        out.append(f"| `{dotted}` | {default} | {_ranges(field)} | {field.description} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = Parser(
        prog=".venv/bin/python -m emotiond.daemon.config_reference",
        description="Regenerate config.yaml and docs/configuration.md from the settings schema.",
    )
    parser.add_argument("root", nargs="?", type=Path, default=Path.cwd(),
                        help="the repository checkout to write into (default: the current directory)")
    root = parser.parse_args(argv).root
    if not (root / "docs").is_dir():
        print(f"config_reference: {root} has no docs/ folder; run it from the repository root", file=sys.stderr)
        return exitcodes.NOINPUT
    (root / "config.yaml").write_text(render_yaml())
    (root / "docs" / "configuration.md").write_text(render_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
