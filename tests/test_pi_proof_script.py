"""Static checks of scripts/pi-proof (the emulated Raspberry Pi proof is never run in CI)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "pi-proof"
TOOL = REPO / "scripts" / "pi_proof" / "tool.py"


def _tool():
    spec = importlib.util.spec_from_file_location("pi_proof_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_is_executable_bash_that_parses() -> None:
    assert os.access(SCRIPT, os.X_OK)
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_script_names_no_mirror_host() -> None:
    text = SCRIPT.read_text()
    assert "deb.debian.org" not in text and "http://" not in text and "https://" not in text


def test_exactly_one_litert_requirement_applies_per_machine() -> None:
    pytest.importorskip("packaging")
    from packaging.requirements import Requirement

    tool = _tool()
    reqs = [Requirement(r) for r in tool.install_requires(REPO / "setup.cfg")]
    for machine in ("aarch64", "x86_64"):
        env = {**tool.PI_ENV, "platform_machine": machine}
        applying = [r for r in reqs if r.name == "ai-edge-litert" and (r.marker is None or r.marker.evaluate(env))]
        assert len(applying) == 1, machine
