"""Typed readers for settings that come from the environment.

Each reader names the variable in its error, so a bad value stops start-up
with ImproperlyConfigured saying exactly which variable and why.
"""

from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

from deploy import budgets, envvars


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    try:
        return envvars.flag(name, default)
    except ValueError as exc:
        raise ImproperlyConfigured(str(exc)) from None


def env_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} is below the minimum {minimum}")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name}={value} is above the maximum {maximum}")
    return value


def env_list(name: str, default: list[str] | None = None) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return list(default or [])
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_networks(name: str, default: list[str]) -> list:
    """Comma-separated CIDRs (`10.0.0.0/8, 127.0.0.1/32`) as ip_network objects."""
    import ipaddress

    networks = []
    for item in env_list(name, default):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ImproperlyConfigured(f"{name}: {item!r} is not a network (e.g. 10.0.0.0/8)") from None
    return networks


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = os.environ.get(name, default)
    if value not in choices:
        raise ImproperlyConfigured(f"{name}={value!r} is not one of {', '.join(choices)}")
    return value


def env_url(name: str, default: str = "", *, schemes: tuple[str, ...], hostless: tuple[str, ...] = ()) -> str:
    """A URL with one of `schemes` and a host (schemes in `hostless`, like sqlite:///path, need none)."""
    value = os.environ.get(name, default)
    if not value:
        return value
    parts = urlsplit(value)
    if parts.scheme not in schemes or not (parts.hostname or parts.scheme in hostless):
        raise ImproperlyConfigured(
            f"{name} must be a URL with scheme {' or '.join(schemes)} and a host, got {_redact(value)!r}"
        )
    try:
        parts.port  # noqa: B018 - raises on a non-numeric port
    except ValueError:
        raise ImproperlyConfigured(f"{name} has an invalid port: {_redact(value)!r}") from None
    return value


# Web and workers write concurrently: WAL lets readers run beside a writer, and
# IMMEDIATE transactions take the write lock up front instead of failing late.
_SQLITE_OPTIONS = {"timeout": 20, "transaction_mode": "IMMEDIATE",
                   "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"}


def database_from_url(name: str, default_sqlite_path: str) -> dict:
    """SQLite by default; Postgres when `name` (DATABASE_URL) is set."""
    url = env_url(name, schemes=("postgres", "postgresql", "sqlite"), hostless=("sqlite",))
    if not url:
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": default_sqlite_path,
                "OPTIONS": _SQLITE_OPTIONS}
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        # As dj-database-url reads it: sqlite:////abs/path.db (four slashes) or sqlite:///relative.db.
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": path or default_sqlite_path,
                "OPTIONS": _SQLITE_OPTIONS}
    dbname = parts.path.lstrip("/")
    if not dbname:
        raise ImproperlyConfigured(f"{name} names no database (postgres://user:pass@host:5432/DBNAME)")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(dbname),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname,
        "PORT": str(parts.port or 5432),
        "CONN_MAX_AGE": 60,
        # A database host that drops packets costs a request this, not the kernel's minutes.
        "OPTIONS": {"connect_timeout": budgets.DATABASE_CONNECT},
    }


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(parts.password, "***")
    return url
