"""A function's repository as the pipeline reads it: the credentials decrypted for
one git call, the per-function mirror, the fetch. Does I/O (git, via deploy.source).
"""

from __future__ import annotations

import logging
from pathlib import Path

from django.conf import settings
from django.db import models

from deploy import source
from deploy.errors import UserError
from portal.core import crypto

log = logging.getLogger(__name__)


class SourceAuth(models.TextChoices):
    """How Slipway reads a function's repository (SourceAccess.source_auth)."""

    NONE = "none", "None (a public repository, or a local path)"
    TOKEN = "token", "HTTPS deploy token"
    SSH_KEY = "ssh-key", "SSH deploy key"


def is_private(function) -> bool:
    access = function.source_access
    return access.source_auth != SourceAuth.NONE and bool(access.source_secret)


def credentials_for(function) -> source.Credentials | None:
    """The function's deploy token or key, decrypted; None for a public repository.
    A stored value no configured key opens is the function's settings' fault to fix."""
    if not is_private(function):
        return None
    access = function.source_access
    try:
        secret = crypto.decrypt(access.source_secret)
    except crypto.Unavailable as exc:
        raise UserError("repository-credentials", f"the repository's credentials cannot be read: {exc}; "
                        "the owner sets them again on the edit page") from None
    kind = source.TOKEN if access.source_auth == SourceAuth.TOKEN else source.SSH_KEY
    return source.Credentials(kind=kind, secret=secret, username=access.source_username,
                              known_hosts=access.source_known_hosts)


def log_secrets(function) -> list[str]:
    """What every log of the function's deployments masks besides the usual patterns."""
    try:
        credentials = credentials_for(function)
    except UserError:
        return []
    return credentials.secrets() if credentials else []


def scope(function) -> str:
    """A private repository gets a mirror of its own function: another function naming the
    same URL without the credentials must not read (or deploy) what they fetched."""
    return f"function-{function.pk}" if is_private(function) else ""


def mirror_for(function) -> Path | None:
    """The function's mirror (fetched or not); None when its URL is not valid any more."""
    try:
        url = source.validate_repository_url(function.repository_url,
                                             allow_local=settings.SLIPWAY_ALLOW_LOCAL_REPOSITORIES)
    except UserError:
        return None
    return source.mirror_path(Path(settings.WORK_DIR), url, scope(function))


def fetch(function, merge_request: int | None = None) -> Path:
    """The function's mirror, fetched now; `merge_request`: that MR's head too (a preview)."""
    return source.fetch(function.repository_url, Path(settings.WORK_DIR),
                        allow_local=settings.SLIPWAY_ALLOW_LOCAL_REPOSITORIES, credentials=credentials_for(function),
                        scope=scope(function), allowed=settings.SLIPWAY_OUTBOUND_ALLOWED_NETWORKS,
                        merge_request=merge_request)
