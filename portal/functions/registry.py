"""Registering and changing functions and their members, each change audited.
Shared by the web UI, the API and manage.py so every entry point leaves the same trail.
"""

from __future__ import annotations

from django.db import transaction

from portal.core.errors import RequestRefused
from portal.functions.models import AuditEvent, Environment, Function
from portal.sources import SourceAccess

AUDITED_FIELDS = ("description", "repository_url", "branch", "context_path", "dockerfile_path", "build_args",
                  "architecture", "ecr_repository", "smoke_event", "auto_deploy", "tag_pattern", "golden_iou",
                  "shares_images_with")
AUDITED_ENVIRONMENT_FIELDS = ("lambda_name", "alias", "memory_mb", "timeout_s", "execution_role_arn")


def _changes(before: Function | None, after: Function, env_before: Environment | None,
             env_after: Environment) -> dict:
    """What changed, as the audit log may show it: secret values never."""
    changed = {}
    for old_row, new_row, fields in ((before, after, AUDITED_FIELDS),
                                     (env_before, env_after, AUDITED_ENVIRONMENT_FIELDS)):
        for field in fields:
            old, new = (getattr(old_row, field) if old_row else None), getattr(new_row, field)
            if old != new:
                changed[field] = new if field != "smoke_event" else "(changed)"
    old_env = env_before.variables if env_before else {}
    old_secret = set(env_before.secret_keys) if env_before else set()
    new_env, new_secret = env_after.variables, env_after.secret_keys
    for key in sorted(set(old_env) | set(new_env)):
        if old_env.get(key) != new_env.get(key) or (key in old_secret) != (key in new_secret):
            if key not in new_env:
                changed[f"env.{key}"] = "(removed)"
            else:
                changed[f"env.{key}"] = "(secret)" if key in new_secret else new_env[key]
    return changed


def _source_changes(before: dict, after: dict) -> dict:
    """The repository's credentials in the audit log: kind and username, never the secret."""
    changed = {field: after[field] for field in ("source_auth", "source_username") if before[field] != after[field]}
    if before["source_known_hosts"] != after["source_known_hosts"]:
        changed["source_known_hosts"] = "(changed)" if after["source_known_hosts"] else "(removed)"
    if before["source_secret"] != after["source_secret"]:
        changed["source_secret"] = ("(removed)" if not after["source_secret"] else
                                    "(replaced)" if before["source_secret"] else "(set)")
    return changed


SOURCE_FIELDS = ("source_auth", "source_username", "source_known_hosts", "source_secret")


def _save_source(function: Function, plan) -> dict:
    """Store the form's planned repository access on the function's SourceAccess row,
    the new secret encrypted now; the audit's changes. Inside the caller's transaction."""
    from portal.core import crypto

    access = SourceAccess.objects.select_for_update().get(function=function)
    before = {field: getattr(access, field) for field in SOURCE_FIELDS}
    if plan is None:
        return {}
    for field, value in plan.values.items():
        setattr(access, field, value)
    if plan.secret is not None:
        try:
            access.source_secret = crypto.encrypt(plan.secret) if plan.secret else ""
        except crypto.Unavailable as exc:
            raise RequestRefused(str(exc)) from None
    access.save(update_fields=list(SOURCE_FIELDS))
    function.source_access = access  # the row as saved, not the one the form read: the answer shows it
    return _source_changes(before, {field: getattr(access, field) for field in SOURCE_FIELDS})


def register_function(form, *, user) -> Function:
    """Save a new function; its registrant becomes its owner."""
    from portal.functions.models import Membership

    with transaction.atomic():
        function = form.apply()
        function.save()  # its side rows come with it (portal/models.py)
        environment = form.environment
        environment.function = function
        environment.save()  # its first environment, with its drift state
        changed = {**_changes(None, function, None, environment), **_save_source(function, form.source_plan)}
        Membership.objects.create(function=function, user=user, role=Membership.Role.OWNER)
        AuditEvent.record("function.registered", function=function, actor=user, **changed)
    return function


def update_function(form, *, user) -> Function:
    """Save an edit; it reaches Lambda at the next deploy."""
    with transaction.atomic():
        before = Function.objects.select_for_update().get(pk=form.instance.pk)
        env_before = Environment.objects.select_for_update().get(pk=form.environment.pk)  # after the function's
        function = form.apply()
        changed = _changes(before, function, env_before, form.environment)
        function.save()
        form.environment.save()
        changed.update(_save_source(function, form.source_plan))
        if changed:
            AuditEvent.record("function.edited", function=function, actor=user, **changed)
    return function


def archive_function(function: Function, *, user) -> None:
    from django.db.models.functions import Now

    Function.objects.filter(pk=function.pk, archived_at__isnull=True).update(archived_at=Now())
    AuditEvent.record("function.archived", function=function, actor=user)


def restore_function(function: Function, *, user) -> None:
    Function.objects.filter(pk=function.pk).update(archived_at=None)
    AuditEvent.record("function.restored", function=function, actor=user)


def set_member(function: Function, member, role: str, *, user) -> None:
    """Add `member` with `role`, or change their role; the last owner cannot be demoted."""
    from portal.functions.models import Membership

    with transaction.atomic():
        Function.objects.select_for_update().get(pk=function.pk)
        current = Membership.objects.filter(function=function, user=member).first()
        if current and current.role == Membership.Role.OWNER and role != Membership.Role.OWNER:
            _refuse_last_owner(function, member)
        Membership.objects.update_or_create(function=function, user=member, defaults={"role": role})
        AuditEvent.record("membership.added" if current is None else "membership.changed", function=function,
                          actor=user, member=member.get_username(), role=role)


def remove_member(function: Function, member, *, user) -> None:
    from portal.functions.models import Membership

    with transaction.atomic():
        Function.objects.select_for_update().get(pk=function.pk)
        current = Membership.objects.filter(function=function, user=member).first()
        if current is None:
            raise RequestRefused(f"{member.get_username()} is not a member of {function.name}")
        if current.role == Membership.Role.OWNER:
            _refuse_last_owner(function, member)
        current.delete()
        AuditEvent.record("membership.removed", function=function, actor=user, member=member.get_username())


def transfer_ownership(function: Function, member, *, user) -> None:
    """`member` becomes an owner and `user` a deployer, in one step."""
    from portal.functions.models import Membership

    if member == user:
        raise RequestRefused("you already own it")
    with transaction.atomic():
        Function.objects.select_for_update().get(pk=function.pk)
        Membership.objects.update_or_create(function=function, user=member,
                                            defaults={"role": Membership.Role.OWNER})
        Membership.objects.filter(function=function, user=user).update(role=Membership.Role.DEPLOYER)
        AuditEvent.record("membership.transferred", function=function, actor=user, to=member.get_username())


def _refuse_last_owner(function: Function, member) -> None:
    from portal.functions.models import Membership

    owners = Membership.objects.filter(function=function, role=Membership.Role.OWNER).exclude(user=member)
    if not owners.exists():
        raise RequestRefused(f"{member.get_username()} is the last owner of {function.name}: "
                             "make someone else an owner first")


def store_new_secret(function: Function, side, field: str, raw: str, *, user, audit: str) -> str:
    """Keep `raw` Fernet-encrypted in `field` of the function's `side` row (a side model
    such as HookKeys), replacing any other at once, audited as `<audit>_created` or
    `<audit>_rotated`; returns it to be shown once."""
    from portal.core import crypto

    sealed = crypto.encrypt(raw)  # crypto.Unavailable: a RequestRefused
    with transaction.atomic():
        Function.objects.select_for_update().get(pk=function.pk)  # the function's lock, as every change takes
        before = side.objects.select_for_update().get(function_id=function.pk)
        side.objects.filter(function_id=function.pk).update(**{field: sealed})
        AuditEvent.record(f"{audit}_rotated" if getattr(before, field) else f"{audit}_created",
                          function=function, actor=user)
    return raw
