"""Registering and changing functions, their environments and their members, each change
audited. Shared by the web UI, the API and manage.py so every entry point leaves the same
trail and applies the same rules.
"""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.dispatch import Signal

from portal.core.errors import RequestRefused
from portal.functions.forms import MAX_ENVIRONMENTS, approvals_limit, approvals_problem
from portal.functions.models import AuditEvent, Environment, Function
from portal.sources import SourceAccess

# Sent, under the function's lock, before an environment is deleted or the promotion order
# changes: function=, environment=, change= ("delete" or "reorder"). A receiver refuses by
# raising a RequestRefused (the deployments package's guards, connected by portal/apps.py:
# this package cannot import the one that knows what is live or unfinished).
environment_changing = Signal()
IN_USE = "environment-in-use"
# How a verified version takes the alias (set by the deployments package's RolloutEnvironmentForm).
ROLLOUT_SETTINGS = ("rollout_strategy", "rollout_percent", "rollout_minutes", "rollout_alarm", "rollout_extra_alarms",
                    "probe_count", "probe_max_failures")
ENVIRONMENT_SETTINGS = ("lambda_name", "alias", "memory_mb", "timeout_s", "execution_role_arn", "variables",
                        "secret_keys", "promotion", "soak_seconds", "required_approvals", "during_freeze",
                        "gitlab_tier", *ROLLOUT_SETTINGS)
UNSATISFIABLE = "protection-unsatisfiable"
# What an edit may change on the preview environment: no promotion, gates or GitLab tier apply to it.
PREVIEW_SETTINGS = ("lambda_name", "memory_mb", "timeout_s", "variables", "secret_keys")

AUDITED_FIELDS = ("description", "repository_url", "branch", "context_path", "dockerfile_path", "build_args",
                  "architecture", "ecr_repository", "smoke_event", "auto_deploy", "tag_pattern", "golden_iou",
                  "shares_images_with")
AUDITED_ENVIRONMENT_FIELDS = ("lambda_name", "alias", "memory_mb", "timeout_s", "execution_role_arn",
                              "promotion", "soak_seconds", "required_approvals", "during_freeze", "gitlab_tier",
                              *ROLLOUT_SETTINGS)


def _changes(before: Function | None, after: Function, env_before: Environment | None,
             env_after: Environment) -> dict:
    """What changed, as the audit log may show it: secret values never."""
    changed = {}
    for field in AUDITED_FIELDS:
        old, new = (getattr(before, field) if before else None), getattr(after, field)
        if old != new:
            changed[field] = new if field != "smoke_event" else "(changed)"
    return {**changed, **_environment_changes(env_before, env_after)}


def _environment_changes(env_before: Environment | None, env_after: Environment) -> dict:
    """What changed in an environment's settings, as the audit log may show it: secret values never."""
    changed = {}
    for field in AUDITED_ENVIRONMENT_FIELDS:
        old, new = (getattr(env_before, field) if env_before else None), getattr(env_after, field)
        if old != new:
            changed[field] = new
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
        _refuse_unsatisfiable(function, f"making {member.get_username()} {role}")
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
        _refuse_unsatisfiable(function, f"removing {member.get_username()}")
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
        _refuse_unsatisfiable(function, f"making {user.get_username()} a deployer")
        AuditEvent.record("membership.transferred", function=function, actor=user, to=member.get_username())


def _refuse_unsatisfiable(function: Function, change: str) -> None:
    """Under the function's lock, after a membership change (rolled back by the raise): refuse
    it when a protected environment would require more approvals than the members who may
    approve, minus the requester, can give."""
    eligible, most = approvals_limit(function)
    protected = list(Environment.objects.filter(function=function, required_approvals__gt=most)
                     .order_by("position").values_list("name", "required_approvals"))
    if protected:
        needs = ", ".join(f"{name} requires {n}" for name, n in protected)
        raise RequestRefused(
            f"{change} would leave {function.name} with {eligible} member(s) who may approve, so at most {most} "
            f"approval(s) could be given to a request (its requester never counts), but {needs}: lower the "
            "requirement or add an approver first", code=UNSATISFIABLE)


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


# --- Environments -------------------------------------------------------------------------


def _locked_environments(function: Function) -> list[Environment]:
    """The function's row, then its environments' rows (the lock order of queue.py), in
    promotion order: the preview environment, outside it, is neither counted nor moved."""
    Function.objects.select_for_update().get(pk=function.pk)
    return list(Environment.objects.in_order().select_for_update().filter(function=function)
                .order_by("position", "pk"))


def _place(order: list[Environment]) -> None:
    """Number `order` 0, 1, 2, … in the database: each row moved out of the way first, as
    no two environments of a function may hold one position even for a moment."""
    moved = [env for position, env in enumerate(order) if env.pk and env.position != position]
    for env in moved:
        Environment.objects.filter(pk=env.pk).update(position=env.position + 1000)
    for position, env in enumerate(order):
        env.position = position
        if env in moved:
            Environment.objects.filter(pk=env.pk).update(position=position)


def _reordering(function: Function, before: list[Environment], after: list[Environment],
                environment: Environment) -> None:
    """Ask the guards when what precedes an existing environment (what promotes into it,
    or that it is first) changes: queued and running work was requested for the old order."""
    def predecessors(order):
        return {env.pk: (order[i - 1].pk if i else None) for i, env in enumerate(order) if env.pk}
    old, new = predecessors(before), predecessors(after)
    if any(new.get(pk, "gone") != old[pk] for pk in old if pk in new):
        environment_changing.send(Environment, function=function, environment=environment, change="reorder")


def _refuse_protection(function: Function, required: int, before: int) -> None:
    """The form's check again, under the function's lock: a member may have lost the role
    since the form was read. Only a raised requirement is checked."""
    problem = approvals_problem(function, required) if required > before else ""
    if problem:
        raise RequestRefused(problem, status=400, code=UNSATISFIABLE)


def _position(form, count: int) -> int:
    position = form.cleaned_data.get("position")
    return count if position is None else min(position, count)


def _saved(save):
    """Run `save` (a transaction); two requests that both passed the form's uniqueness
    checks meet the database's: the second is told, not shown a crash."""
    try:
        return save()
    except IntegrityError:
        raise RequestRefused("another environment took this name or Lambda meanwhile: check and try again",
                             code="taken") from None


def create_environment(form, *, user) -> Environment:
    """Add the form's environment to its function at the form's position (default: last),
    moving the environments at and after it one place down."""
    function = form.function

    def save():
        with transaction.atomic():
            existing = _locked_environments(function)
            if len(existing) >= MAX_ENVIRONMENTS:
                raise RequestRefused(f"{function.name} has {len(existing)} environments, the most a function may "
                                     "have")
            environment = form.apply()
            environment.function = function
            _refuse_protection(function, environment.required_approvals, 0)
            position = _position(form, len(existing))
            order = [*existing[:position], environment, *existing[position:]]
            _reordering(function, existing, order, environment)
            _place(order)
            environment.save()  # with its drift state (portal/apps.py)
            AuditEvent.record("environment.created", function=function, actor=user, environment=environment.name,
                              position=environment.position, **_environment_changes(None, environment))
        return environment
    return _saved(save)


def update_environment(form, *, user) -> Environment:
    """Save an edit of an environment's settings, and its move to the form's position; the
    settings reach Lambda at its next deployment."""
    function = form.function

    def save():
        with transaction.atomic():
            existing = _locked_environments(function)
            if form.instance.preview:
                return _update_preview_environment(form, user)
            before = next((env for env in existing if env.pk == form.instance.pk), None)
            if before is None:
                raise RequestRefused(f"{function.name} no longer has that environment", status=404,
                                     code="environment-unknown")
            environment = form.apply()
            _refuse_protection(function, environment.required_approvals, before.required_approvals)
            others = [env for env in existing if env.pk != environment.pk]
            position = _position(form, len(others)) if form.cleaned_data.get("position") is not None \
                else existing.index(before)
            order = [*others[:position], environment, *others[position:]]
            _reordering(function, existing, order, environment)
            environment.position = before.position  # _place moves it with the others
            _place(order)
            # What the form edits only: a rollback may have paused it meanwhile.
            environment.save(update_fields=[*ENVIRONMENT_SETTINGS, "position"])
            changed = _environment_changes(before, environment)
            if before.position != environment.position:
                changed["position"] = environment.position
            if changed:
                AuditEvent.record("environment.edited", function=function, actor=user,
                                  environment=environment.name, **changed)
        return environment
    return _saved(save)


def _update_preview_environment(form, user) -> Environment:
    """An edit of the preview environment's Lambda settings (an owner opting a secret in for
    previews, say): it stays where it is, outside the promotion order."""
    before = Environment.objects.select_for_update().get(pk=form.instance.pk)
    environment = form.apply()
    environment.save(update_fields=list(PREVIEW_SETTINGS))
    changed = _environment_changes(before, environment)
    if changed:
        AuditEvent.record("environment.edited", function=environment.function, actor=user,
                          environment=environment.name, **changed)
    return environment


def delete_environment(environment: Environment, *, user) -> None:
    """Remove an environment with nothing live in it and no deployment to it unfinished
    (the guards say, `environment-in-use`); never the function's last. Its Lambda is left
    as it is in AWS. The others close up the promotion order."""
    function = environment.function
    if environment.preview:
        raise RequestRefused(f"{environment.name} is {function.name}'s preview environment: it cannot be "
                             "deleted on its own", code="preview-environment")
    with transaction.atomic():
        existing = _locked_environments(function)
        current = next((env for env in existing if env.pk == environment.pk), None)
        if current is None:
            raise RequestRefused(f"{function.name} has no environment {environment.name!r}", status=404,
                                 code="environment-unknown")
        if len(existing) == 1:
            raise RequestRefused(f"{current.name} is {function.name}'s only environment: a function always deploys "
                                 "somewhere")
        environment_changing.send(Environment, function=function, environment=current, change="delete")
        remaining = [env for env in existing if env.pk != current.pk]
        _reordering(function, existing, remaining, current)
        current.delete()
        _place(remaining)
        AuditEvent.record("environment.deleted", function=function, actor=user, environment=current.name,
                          lambda_name=current.lambda_name)
