"""Checks of repository credentials as a user enters them: a deploy token, an SSH
private key, a known_hosts line for the repository's host. Plain functions, no I/O.
"""

from __future__ import annotations

import re

from cryptography.exceptions import UnsupportedAlgorithm

USERNAME = re.compile(r"^[\x21-\x39\x3b-\x7e]{1,255}$")  # printable, no space, no ":" (basic auth)


TOKEN = re.compile(r"^[\x21-\x7e]{8,1024}$")


SSH_KEY_TYPES = {"ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
                 "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com"}


def url_host(url: str) -> str:
    """host, or [host]:port for a port that is not the protocol's default, as known_hosts names it."""
    from urllib.parse import urlsplit

    if url.startswith("git@"):
        return url[len("git@"):].split(":", 1)[0].lower()
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    default = 22 if parts.scheme == "ssh" else 443
    return f"[{host}]:{port}" if port and port != default else host


def private_key_problem(key: str) -> str:
    """Why `key` cannot be an unattended deploy key, or ""."""
    from cryptography.hazmat.primitives import serialization

    first = key.splitlines()[0] if key else ""
    if first.split(" ")[0] in SSH_KEY_TYPES:
        return "this is a public key (the .pub file): paste the private key"
    begin = re.fullmatch(r"-----BEGIN (OPENSSH |RSA |EC |DSA |ENCRYPTED )?PRIVATE KEY-----", first)
    if not begin:
        return "not a private key: paste the whole file, from its -----BEGIN … PRIVATE KEY----- line to its END line"
    if begin.group(1) == "ENCRYPTED " or "Proc-Type: 4,ENCRYPTED" in key:
        return "the key is protected by a passphrase, which nobody can type for a deploy: use a key without one"
    try:
        if begin.group(1) == "OPENSSH ":
            serialization.load_ssh_private_key(key.encode(), password=None)
        else:
            serialization.load_pem_private_key(key.encode(), password=None)
    except TypeError:
        return "the key is protected by a passphrase, which nobody can type for a deploy: use a key without one"
    except (ValueError, UnsupportedAlgorithm) as exc:
        return f"not a valid private key ({str(exc).splitlines()[0][:120] if str(exc) else 'unreadable'})"
    return ""


def known_hosts_problem(text: str, url: str) -> str:
    """Why `text` is not known_hosts lines pinning the host of `url`, or ""."""
    import base64
    import struct

    host, named, hashed = url_host(url), False, False
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    if not lines:
        return "no known_hosts line given"
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if fields[0].startswith("@"):
            if fields[0] not in ("@cert-authority", "@revoked"):
                return f"line {number}: unknown marker {fields[0]}"
            fields = fields[1:]
        if len(fields) < 3:
            return f"line {number}: write HOST KEY-TYPE BASE64-KEY (as ssh-keyscan prints it)"
        patterns, kind, blob = fields[0], fields[1], fields[2]
        if kind not in SSH_KEY_TYPES:
            return f"line {number}: {kind[:40]!r} is not an SSH host key type"
        try:
            raw = base64.b64decode(blob, validate=True)
            size = struct.unpack(">I", raw[:4])[0]
            if raw[4:4 + size].decode() != kind:
                raise ValueError
        except (ValueError, struct.error, UnicodeDecodeError):
            return f"line {number}: the key is not a valid {kind} key"
        if patterns.startswith("|1|"):
            hashed = True
            continue
        # known_hosts wildcards are * and ? only: "[host]:port" is literal.
        if any(re.fullmatch(re.escape(pattern.lower()).replace(r"\*", ".*").replace(r"\?", "."), host)
               for pattern in patterns.split(",") if not pattern.startswith("!")):
            named = True
    if not named and not hashed:
        return f"no line names {host}, the repository's host (write [host]:port for a port other than 22)"
    return ""
