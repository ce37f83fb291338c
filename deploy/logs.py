"""Masking for anything that goes into a step log: tokens and keys never land in the database."""

from __future__ import annotations

import re

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


def mask(text: str, *secrets: str) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text
