"""Write docs/schemas/draft-07/*.json: the 2020-12 schemas as JSON Schema draft-07.

Node-RED's ``json`` node validates ``msg.schema`` with Ajv 8 in its default
draft-07 mode, which rejects the 2020-12 ``$schema`` and, in strict mode, an
unknown ``format`` (``date-time``; Node-RED does not load ajv-formats). The
copies say draft-07, keep ``pattern`` (which already pins our UTC time format)
and move ``$defs`` to ``definitions``. tests/test_node_red.py checks that they
are in step and that Node-RED's own Ajv compiles them.

    .venv/bin/python scripts/make_draft07_schemas.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

SCHEMAS = Path(__file__).resolve().parent.parent / "docs" / "schemas"
TIME_PATTERN = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"


def draft07(node: Any) -> Any:
    """A draft-07 copy of one 2020-12 schema (recursively)."""
    if isinstance(node, list):
        return [draft07(x) for x in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "$schema":
            out[key] = "http://json-schema.org/draft-07/schema#"
        elif key == "$id":
            out[key] = value.replace("/docs/schemas/", "/docs/schemas/draft-07/")
        elif key == "$defs":
            out["definitions"] = draft07(value)
        elif key == "$ref" and isinstance(value, str):
            out[key] = value.replace("#/$defs/", "#/definitions/")
        elif key == "format" and value == "date-time":
            out.setdefault("pattern", TIME_PATTERN)
        else:
            out[key] = draft07(value)
    return out


def render_all() -> dict[str, str]:
    """``{file name: text}`` of every draft-07 copy."""
    return {
        path.name: json.dumps(draft07(json.loads(path.read_text())), indent=2, ensure_ascii=False) + "\n"
        for path in sorted(SCHEMAS.glob("*.json"))
    }


def main() -> int:
    out = SCHEMAS / "draft-07"
    out.mkdir(exist_ok=True)
    for name, text in render_all().items():
        (out / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
