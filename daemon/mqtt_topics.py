"""What an MQTT topic level or client id may contain, checked when the config is read.

paho and the broker enforce these rules only at runtime, where a violation
kills paho's network thread (a wildcard in a subscription, a topic over 65,535
bytes) or is silently denied by the broker (``$SYS/…``). Checking them at
config time turns each into one line naming the key and exit code 78.

Rules (MQTT 3.1.1 §1.5.3 and §4.7, MQTT 5 §1.5.4 and §4.7, and what Mosquitto
refuses on top): valid UTF-8; no NUL, no control characters U+0001–U+001F and
U+007F–U+009F, no non-characters U+FDD0–U+FDEF and U+xxFFFE/U+xxFFFF; no
wildcards ``#`` and ``+`` in a published topic; no leading ``$`` on the first
level (reserved for the broker). Lengths are capped far below the protocol's
65,535 bytes so that every topic built from them (``{prefix}/sensor/{device}_…/config``)
stays valid.
"""

from __future__ import annotations

MAX_PREFIX_BYTES = 1024  # base_topic, homeassistant.prefix
MAX_ID_BYTES = 256  # device_id, client_id


def _bad_char(c: str) -> bool:
    cp = ord(c)
    return (
        cp <= 0x1F
        or 0x7F <= cp <= 0x9F
        or 0xD800 <= cp <= 0xDFFF
        or 0xFDD0 <= cp <= 0xFDEF
        or (cp & 0xFFFF) in (0xFFFE, 0xFFFF)
    )


def check_utf8_text(value: str, max_bytes: int) -> str:
    """``value`` if it is printable UTF-8 of at most ``max_bytes``; else ValueError saying why."""
    bad = next((c for c in value if _bad_char(c)), None)
    if bad is not None:
        raise ValueError(f"must not contain control or non-characters (found U+{ord(bad):04X})")
    size = len(value.encode("utf-8"))
    if size > max_bytes:
        raise ValueError(f"is {size} bytes long; at most {max_bytes} bytes")
    return value


def check_topic_part(value: str, max_bytes: int, first_level: bool) -> str:
    """A piece of a topic we publish to: no wildcards, no leading ``$`` when it starts the topic."""
    check_utf8_text(value, max_bytes)
    if "#" in value or "+" in value:
        raise ValueError("must not contain MQTT wildcards '#' or '+'")
    if first_level and value.startswith("$"):
        raise ValueError("must not start with '$' (topics like $SYS belong to the broker)")
    return value
