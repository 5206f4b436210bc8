"""A client id that is unique per installation, so two devices with one host name do not fight.

Two Raspberry Pis are both ``raspberrypi`` out of the box. With a client id
made from the device id alone they share it, and the broker hands the session
back and forth between them every few seconds (MQTT allows one connection per
client id). The id therefore carries a short installation id:

1. a hash of ``/etc/machine-id`` (never published raw: it is a secret-ish
   per-machine identifier, see machine-id(5)), else
2. a random id generated once and kept in the state directory
   (``mqtt.state_dir``, default ``$STATE_DIRECTORY`` set by systemd's
   ``StateDirectory=``, else ``$XDG_STATE_HOME/emotiond`` or ``~/.local/state/emotiond``), else
3. a random id for this run only (logged once; the id changes on restart).
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

MACHINE_ID = Path("/etc/machine-id")
ID_FILE = "installation-id"
ID_CHARS = 8


def systemd_state_dir(environ: Mapping[str, str] | None = None) -> Path | None:
    """The unit's first ``StateDirectory`` (systemd sets ``$STATE_DIRECTORY``), else ``None``."""
    first = (os.environ if environ is None else environ).get("STATE_DIRECTORY", "").split(":")[0]
    return Path(first) if first else None


def default_state_dir() -> Path:
    """``$STATE_DIRECTORY`` (systemd), else the XDG state directory."""
    systemd = systemd_state_dir()
    if systemd is not None:
        return systemd
    base = os.environ.get("XDG_STATE_HOME")
    if not base:
        try:
            base = str(Path.home() / ".local" / "state")
        except (RuntimeError, KeyError):  # no home at all (a dynamic user without $HOME)
            base = "/var/lib"
    return Path(base) / "emotiond"


def _from_machine_id(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    if not text or text == "uninitialized":
        return None
    return hashlib.sha256(f"emotiond-client-id:{text}".encode()).hexdigest()[:ID_CHARS]


def _from_state_dir(state_dir: Path) -> str | None:
    path = state_dir / ID_FILE
    try:
        kept = path.read_text(encoding="ascii").strip()
        if len(kept) == ID_CHARS and all(c in "0123456789abcdef" for c in kept):
            return kept
    except (OSError, UnicodeDecodeError):
        pass
    new = secrets.token_hex(ID_CHARS // 2)
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(new + "\n", encoding="ascii")
        tmp.replace(path)
    except OSError as exc:
        log.warning("cannot keep an installation id in %s (%s); the MQTT client id changes on restart",
                    state_dir, exc.strerror or exc)
        return None
    return new


def installation_id(state_dir: Path | None = None, machine_id: Path = MACHINE_ID) -> str:
    """Eight hex digits that stay the same for this installation (see the module docstring)."""
    return (
        _from_machine_id(machine_id)
        or _from_state_dir(state_dir or default_state_dir())
        or secrets.token_hex(ID_CHARS // 2)
    )


def client_id(configured: str | None, device: str, state_dir: Path | None = None,
              machine_id: Path = MACHINE_ID) -> str:
    """``mqtt.client_id`` if set, else ``emotiond-{device}-{installation id}``."""
    if configured:
        return configured
    return f"emotiond-{device}-{installation_id(state_dir, machine_id)}"
