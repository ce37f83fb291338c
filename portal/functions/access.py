"""Who may see or do what with a function: the one place every check is decided.

Roles come from Membership, in order owner > approver > deployer > viewer: a
viewer sees, a deployer also deploys, rolls back, cancels and resumes, an
approver also approves or rejects deployments to protected environments, an
owner also approves, edits, manages members and secrets and archives. Staff
see and do everything. A user with no role on a function is told it does not
exist (404); a role without the right answers 403.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404

from portal.functions.models import Environment, Function, Membership

VIEW, DEPLOY, APPROVE, ADMIN = "view", "deploy", "approve", "admin"
ROLE_ALLOWS = {
    Membership.Role.VIEWER: {VIEW},
    Membership.Role.DEPLOYER: {VIEW, DEPLOY},
    Membership.Role.APPROVER: {VIEW, DEPLOY, APPROVE},
    Membership.Role.OWNER: {VIEW, DEPLOY, APPROVE, ADMIN},
}
# Roles whose holders may approve (staff may too).
APPROVING_ROLES = (Membership.Role.OWNER, Membership.Role.APPROVER)


def role_of(user, function: Function) -> str | None:
    if not user.is_authenticated:
        return None
    if user.is_staff:
        return Membership.Role.OWNER
    cached = getattr(function, "_roles", None)
    if cached is None:
        cached = function._roles = {}
    if user.pk not in cached:
        cached[user.pk] = Membership.objects.filter(function=function, user=user).values_list(
            "role", flat=True).first()
    return cached[user.pk]


def can(user, function: Function, action: str) -> bool:
    role = role_of(user, function)
    return role is not None and action in ROLE_ALLOWS[role]


# A function's one-to-one side rows (portal/models.py): fetched with it, one query for all.
SIDES = ("source_access", "hook_keys", "feedback_settings")


def function_for(user, name: str, action: str = VIEW) -> Function:
    """The function named `name` if `user` may do `action` on it: 404 without a role, 403 without the right."""
    function = Function.objects.select_related(*SIDES).filter(name=name).first()
    if function is None or not can(user, function, VIEW):
        raise Http404("no such function")
    if not can(user, function, action):
        raise PermissionDenied(f"your role on {function.name} does not allow this")
    return function


def environment_for(user, name: str, env: str, action: str = VIEW) -> tuple[Function, Environment]:
    """function_for, then its environment named `env` (404 when it has none)."""
    function = function_for(user, name, action)
    environment = function.environments.filter(name=env).first()
    if environment is None:
        raise Http404("no such environment")
    return function, environment


def visible_functions(user) -> QuerySet[Function]:
    if user.is_staff:
        return Function.objects.all()
    # A subquery, not a join: no DISTINCT, so the list's per-row subqueries run for one page only.
    return Function.objects.filter(pk__in=Membership.objects.filter(user=user).values("function_id"))


def can_register(user) -> bool:
    return user.is_authenticated and (user.is_staff or not settings.SLIPWAY_REGISTER_STAFF_ONLY)


def can_restore(user) -> bool:
    return user.is_authenticated and user.is_staff
