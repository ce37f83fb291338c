"""The one reader of boolean switches: `SLIPWAY_TESTING=true` means the same everywhere.

Django-free, so deploy/ and the local stack read switches exactly as the
settings do (portal/core/env.py wraps it into ImproperlyConfigured).
"""

from __future__ import annotations

import os

TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off", ""})


def parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise ValueError(f"{name}={raw!r} is not a boolean; use one of 1/0, true/false, yes/no, on/off")


def flag(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    return default if raw is None else parse_bool(name, raw)
