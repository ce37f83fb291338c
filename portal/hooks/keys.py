"""A function's webhook secret token and signing token: made, stored as digests or
encrypted, removed; each change audited.
"""

from __future__ import annotations

from django.db import transaction

from portal.functions import AuditEvent, Function, store_new_secret
from portal.hooks.models import HookKeys


def set_webhook_secret(function: Function, *, user) -> str:
    """A new secret token (replacing any other at once); returns it to be shown once.
    Only its SHA-256 is kept, and the audit log never sees it."""
    from portal.hooks import gitlab

    raw = gitlab.new_secret_token()
    with transaction.atomic():
        Function.objects.select_for_update().get(pk=function.pk)
        before = HookKeys.objects.select_for_update().get(function_id=function.pk)
        HookKeys.objects.filter(function_id=function.pk).update(webhook_secret_hash=gitlab.digest(raw))
        AuditEvent.record("function.webhook_secret_rotated" if before.webhook_secret_hash
                          else "function.webhook_secret_created", function=function, actor=user)
    return raw


def set_webhook_signing_token(function: Function, *, user) -> str:
    """A new signing token (whsec_…), kept Fernet-encrypted: verifying needs the key itself."""
    from portal.hooks import gitlab

    return store_new_secret(function, HookKeys, "webhook_signing_key", gitlab.new_signing_token(), user=user,
                             audit="function.webhook_signing_token")


def remove_webhook_token(function: Function, kind: str, *, user) -> bool:
    """Remove the secret token (`secret`) or the signing token (`signing`); False if none was set.
    With neither left, the function refuses every delivery."""
    field = {"secret": "webhook_secret_hash", "signing": "webhook_signing_key"}[kind]
    removed = HookKeys.objects.filter(function_id=function.pk).exclude(**{field: ""}).update(**{field: ""})
    if removed:
        AuditEvent.record(f"function.webhook_{'secret' if kind == 'secret' else 'signing_token'}_removed",
                          function=function, actor=user)
    return bool(removed)
