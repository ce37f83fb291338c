"""What a user asks of a function's repository access, checked: plain functions, no
I/O and no encryption (the form's save encrypts). The page and the API both go
through plan(), so both refuse the same things with the same words.

An empty secret keeps the stored one, unless the kind changed or the repository
moved to another host: a stored secret is never sent anywhere but where it was set
for.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from portal.sources.access import SourceAuth
from portal.sources.checks import TOKEN, USERNAME, known_hosts_problem, private_key_problem, url_host


@dataclass
class Asked:
    """The form's values for repository access, as typed."""

    kind: str
    username: str = ""
    token: str = ""
    key: str = ""
    known_hosts: str = ""


@dataclass
class Plan:
    """The access to store: its values, the secret to encrypt on save (None keeps the
    stored one, "" removes it), and the errors by form field."""

    values: dict = field(default_factory=dict)
    secret: str | None = None
    errors: dict[str, list[str]] = field(default_factory=dict)

    def refuse(self, name: str, message: str) -> None:
        self.errors.setdefault(name, []).append(message)


def asked(data: dict, stored_kind: str) -> Asked:
    """The form's cleaned data as an Asked, line endings and blanks normalised."""
    return Asked(kind=data.get("source_auth") or stored_kind or SourceAuth.NONE,
                 username=(data.get("source_username") or "").strip(),
                 token=(data.get("source_token") or "").strip(),
                 key=(data.get("source_private_key") or "").replace("\r\n", "\n").strip(),
                 known_hosts=(data.get("source_known_hosts") or "").replace("\r\n", "\n").strip())


def plan(given: Asked, url: str | None, stored, stored_url: str = "") -> Plan:
    """`stored`: the function's SourceAccess (or None for a new function); `url`: the
    repository URL asked for (None when it was refused: its own error says why)."""
    result = Plan()
    if given.kind == SourceAuth.NONE:
        for name, value in (("source_token", given.token), ("source_private_key", given.key)):
            if value:
                result.refuse(name, "choose HTTPS deploy token or SSH deploy key under Repository access to use it")
        result.values = {"source_auth": SourceAuth.NONE, "source_username": "", "source_known_hosts": ""}
        result.secret = ""
        return result
    if url is None:
        return result
    if given.kind == SourceAuth.TOKEN:
        secret_field, secret = "source_token", given.token
        username, known_hosts = given.username, ""
        _check_token(given, url, result)
    else:
        secret_field, secret = "source_private_key", (given.key + "\n" if given.key else "")
        username, known_hosts = "", given.known_hosts
        _check_key(given, url, result)
    keep = bool(stored is not None and stored.source_auth == given.kind and stored.source_secret)
    if not secret and not keep:
        result.refuse(secret_field, "enter the " + ("deploy token" if secret_field == "source_token"
                                                     else "deploy key's private key"))
    elif not secret and url_host(url) != url_host(stored_url):
        result.refuse(secret_field, f"the repository moved to another host ({url_host(url)}): enter the "
                                    f"{'token' if secret_field == 'source_token' else 'key'} again (a stored one "
                                    "is only sent where it was set for)")
    result.values = {"source_auth": given.kind, "source_username": username,
                     "source_known_hosts": known_hosts + "\n" if known_hosts else ""}
    result.secret = secret or None
    return result


def _check_token(given: Asked, url: str, result: Plan) -> None:
    if not url.startswith("https://"):
        result.refuse("source_auth", "a deploy token is used over HTTPS: the repository URL must start with https://")
    if not given.username:
        result.refuse("source_username", "a deploy token needs its username (GitLab shows it beside the token)")
    elif not USERNAME.match(given.username):
        result.refuse("source_username", "no spaces, colons or control characters")
    if given.token and not TOKEN.match(given.token):
        result.refuse("source_token", "a token is 8 to 1024 printable characters without spaces")
    if given.key:
        result.refuse("source_private_key", "a deploy token needs no private key: leave it empty")


def _check_key(given: Asked, url: str, result: Plan) -> None:
    ssh = url.startswith(("ssh://", "git@"))
    if not ssh:
        result.refuse("source_auth", "a deploy key is used over SSH: the repository URL must start with ssh:// "
                                     "or git@")
    if given.key:
        problem = private_key_problem(given.key)
        if problem:
            result.refuse("source_private_key", problem)
    if given.token:
        result.refuse("source_token", "a deploy key needs no token: leave it empty")
    if not given.known_hosts:
        result.refuse("source_known_hosts", "pin the git host's key: paste its known_hosts line(s) "
                                            "(ssh-keyscan, checked out of band)")
    elif ssh:
        problem = known_hosts_problem(given.known_hosts, url)
        if problem:
            result.refuse("source_known_hosts", problem)
