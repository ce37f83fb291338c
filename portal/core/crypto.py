"""Credentials Slipway must read back (a webhook signing key), encrypted at rest
with Fernet under the keys in settings.SLIPWAY_FERNET_KEYS: the first encrypts,
every one decrypts, so a key is rotated by putting the new one first."""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

from portal.core.errors import RequestRefused


class Unavailable(RequestRefused):
    """No key is configured, or none of them opens the stored value. A refusal (409 `refused`)
    where a request needs the credential; callers that can do without it catch this kind."""


def _fernet() -> MultiFernet:
    if not settings.SLIPWAY_FERNET_KEYS:
        raise Unavailable("SLIPWAY_FERNET_KEY is not set: Slipway cannot store or read encrypted credentials")
    return MultiFernet([Fernet(key) for key in settings.SLIPWAY_FERNET_KEYS])


def check_ready() -> None:
    """Raise Unavailable now if nothing could be encrypted: for a form to say so before saving."""
    _fernet()


def encrypt(value: str) -> str:
    return _fernet().encrypt(value.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise Unavailable("the stored value cannot be decrypted with the configured SLIPWAY_FERNET_KEY") from None
