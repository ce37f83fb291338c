"""Masking for anything that leaves a process: step logs, error messages, notifications,
commit statuses, JSON logs. Tokens, keys and a function's secret values never land in the
database or on the wire. One function, `mask`, serves every channel."""

from __future__ import annotations

import json
import re

# Lambda's answer to an oversized environment ends with the JSON text it measured: every
# variable's value, secrets included ("... exceeded the 4KB limit. String measured: {...}").
# That text is cut wherever it appears, up to the end of its line.
MEASURED = re.compile(r"\s*String measured:[^\n]*")
MEASURED_CUT = " (the measured text is not shown: it holds the variables' values)"
MIN_SECRET = 4  # shorter values would mask ordinary words everywhere

_PATTERNS = [
    # A private key pasted or echoed anywhere (a deploy key): the whole block.
    (re.compile(r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.*?(-----END \1PRIVATE KEY-----|\Z)", re.DOTALL),
     "<private key>"),
    (re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"), "<aws-access-key-id>"),
    (re.compile(r"(?i)(aws_secret_access_key|aws_session_token|secret|password|passwd|token|api[_-]?key)"
                r"(\s*[=:]\s*|\"\s*:\s*\")([^\s\"',;]{6,})"), r"\1\2***"),
    (re.compile(r"(?i)(authorization:\s*(?:bearer|basic|token)\s+)\S+"), r"\1***"),
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]+:)[^/\s@]+@"), r"\1***@"),
    (re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}\b"), "glpat-***"),
    (re.compile(r"\bgldt-[A-Za-z0-9_-]{20,}\b"), "gldt-***"),  # GitLab deploy tokens
]


def cut_measured(text: str) -> str:
    """`text` without the environment Lambda says it measured."""
    return MEASURED.sub(MEASURED_CUT, text)


def secret_forms(secret: str) -> list[str]:
    """The ways a value shows up in text: as is, JSON-escaped (non-ASCII kept or escaped,
    as Lambda and json.dumps write it) and as Python's repr writes it; longest first."""
    if not secret or len(secret) < MIN_SECRET:
        return []
    forms = {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1], repr(secret)[1:-1]}
    return sorted(forms, key=len, reverse=True)


def mask(text: str, *secrets: str) -> str:
    """`text` with the measured environment cut, every form of each of `secrets` and the
    usual patterns (keys, tokens, passwords, URL credentials) replaced."""
    text = cut_measured(text)
    forms = sorted({form for secret in secrets for form in secret_forms(str(secret))}, key=len, reverse=True)
    for form in forms:
        text = text.replace(form, "***")
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text
