"""A function's repository as git sees it: the credentials of a private one, its
mirror, and checking the branch head for pushes GitLab never told us about.

Shared by the worker's source step, the confirmation pages and reconcile, so
every git call on the remote authenticates the same way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db.models.functions import Now

from deploy import source
from deploy.errors import DeployError, UserError
from deploy.logs import mask
from portal import crypto
from portal.models import Deployment, Function

log = logging.getLogger(__name__)
SourceAuth = Function.SourceAuth


def is_private(function: Function) -> bool:
    return function.source_auth != SourceAuth.NONE and bool(function.source_secret)


def credentials_for(function: Function) -> source.Credentials | None:
    """The function's deploy token or key, decrypted; None for a public repository.
    A stored value no configured key opens is the function's settings' fault to fix."""
    if not is_private(function):
        return None
    try:
        secret = crypto.decrypt(function.source_secret)
    except crypto.Unavailable as exc:
        raise UserError("repository-credentials", f"the repository's credentials cannot be read: {exc}; "
                        "the owner sets them again on the edit page") from None
    kind = source.TOKEN if function.source_auth == SourceAuth.TOKEN else source.SSH_KEY
    return source.Credentials(kind=kind, secret=secret, username=function.source_username,
                              known_hosts=function.source_known_hosts)


def log_secrets(function: Function) -> list[str]:
    """What every log of the function's deployments masks besides the usual patterns."""
    try:
        credentials = credentials_for(function)
    except UserError:
        return []
    return credentials.secrets() if credentials else []


def scope(function: Function) -> str:
    """A private repository gets a mirror of its own function: another function naming the
    same URL without the credentials must not read (or deploy) what they fetched."""
    return f"function-{function.pk}" if is_private(function) else ""


def mirror_for(function: Function) -> Path | None:
    """The function's mirror (fetched or not); None when its URL is not valid any more."""
    try:
        url = source.validate_repository_url(function.repository_url,
                                             allow_local=settings.SLIPWAY_ALLOW_LOCAL_REPOSITORIES)
    except UserError:
        return None
    return source.mirror_path(Path(settings.WORK_DIR), url, scope(function))


def fetch(function: Function) -> Path:
    return source.fetch(function.repository_url, Path(settings.WORK_DIR),
                        allow_local=settings.SLIPWAY_ALLOW_LOCAL_REPOSITORIES, credentials=credentials_for(function),
                        scope=scope(function), allowed=settings.SLIPWAY_OUTBOUND_ALLOWED_NETWORKS)


# --- Missed pushes ------------------------------------------------------------------------------


@dataclass
class Reconciled:
    """What one check for missed pushes found, as the page, the API and the task report it."""

    outcome: str  # deployed, up-to-date, in-progress, already-tried, paused, off, archived, error
    message: str
    head: str = ""
    deployment: Deployment | None = None
    code: str = ""  # the error's code, for outcome "error"


def reconcile(function: Function, *, user=None, trigger: str = "cli") -> Reconciled:
    """Compare the branch head on the remote with what Slipway deployed, and request a
    deploy of the head (trigger "reconcile") when auto-deploy would have: on, not
    paused, not archived, and no deployment of that commit yet (a head that failed is
    not retried for ever; deploy it explicitly to try again).

    The ls-remote runs before any transaction, bounded by SLIPWAY_RECONCILE_TIMEOUT:
    no lock is held while the git host answers. The request then re-checks all of it
    under the function's lock (services.request_reconcile_deploy). What it found is
    kept on the function for its page."""
    found = _reconcile(function, user=user, trigger=trigger)
    Function.objects.filter(pk=function.pk).update(reconcile_checked_at=Now(), reconcile_outcome=found.outcome,
                                                   reconcile_message=found.message[:300])
    return found


def _reconcile(function: Function, *, user, trigger: str) -> Reconciled:
    from portal import services

    blocked = blocked_reason(function)
    if blocked:
        return blocked
    try:
        head = source.remote_head(function.repository_url, function.branch,
                                  allow_local=settings.SLIPWAY_ALLOW_LOCAL_REPOSITORIES,
                                  credentials=credentials_for(function), timeout=settings.SLIPWAY_RECONCILE_TIMEOUT,
                                  allowed=settings.SLIPWAY_OUTBOUND_ALLOWED_NETWORKS)
    except DeployError as exc:
        message = mask(exc.message, *log_secrets(function))
        log.warning("reconcile of %s: %s: %s", function.name, exc.code, message)
        return Reconciled("error", f"could not read the head of {function.branch}: {message}", code=exc.code)
    return services.request_reconcile_deploy(function, head=head, user=user, trigger=trigger)


def blocked_reason(function: Function) -> Reconciled | None:
    if function.is_archived:
        return Reconciled("archived", f"{function.name} is archived: it accepts no deploys")
    if not function.auto_deploy:
        return Reconciled("off", "auto-deploy is off: missed pushes are not deployed")
    if function.paused_reason:
        return Reconciled("paused", f"auto-deploy is paused ({function.paused_reason}): resume it first")
    return None
