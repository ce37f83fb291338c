"""Managing freeze windows, and an owner's override of one: the rules every entry point
(pages, API) goes through. portal/deployments/freezes.py decides when a window is active.

- A window is recurring (a start and an end cron, both valid for croniter) or one-off
  (starts_at and ends_at, the end after the start), never a mix; its time zone is an
  IANA name; it has a reason. FreezeWindowForm checks all of that.
- An environment's windows are managed by the function's owners (and staff); global
  windows (no environment) by staff only. Every change is audited (freeze.created,
  freeze.edited, freeze.deleted).
- When a window is deleted or edited, the environments it covered (every one, for a
  global window) with frozen requests are thawed at once through gates.release_thawed,
  the rule the beat tick (gates.gates_due) applies too: if no freeze holds the
  environment any more, its newest held request goes on and the older ones are
  superseded. (Releasing each held row with reconsider() would queue them all.)
- override(): an owner (staff for a global freeze) lets one frozen deployment through,
  with a reason; audited (freeze.overridden), announced (events.freeze_overridden, which
  the feedback package turns into a notification), then gates.reconsider() queues it.
"""

from __future__ import annotations

from datetime import datetime

from django import forms
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from portal.core.errors import RequestRefused
from portal.deployments import events, freezes, gates
from portal.deployments.models import Deployment, FreezeWindow
from portal.functions import AuditEvent, Environment, Function, Membership

REASON_MAX = 200  # FreezeWindow.reason
OVERRIDE_REASON_MAX = 500  # Deployment.override_reason


class FreezeWindowForm(forms.ModelForm):
    """A window's schedule and reason: two crons and a zone, or two instants (naive ones are UTC)."""

    class Meta:
        model = FreezeWindow
        fields = ["reason", "start_cron", "end_cron", "timezone", "starts_at", "ends_at"]
        help_texts = {
            "start_cron": "Recurring: when the freeze starts, a cron expression in the time zone (e.g. 0 18 * * 5).",
            "end_cron": "Recurring: when it ends (e.g. 0 8 * * 1).",
            "timezone": "An IANA time zone, e.g. Europe/Berlin; the crons read its wall-clock time.",
            "starts_at": "One-off: from (UTC unless an offset is given), inclusive.",
            "ends_at": "One-off: until, exclusive.",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["timezone"].required = False
        self.fields["reason"].required = True

    def clean_reason(self) -> str:
        reason = self.cleaned_data["reason"].strip()
        if not reason:
            raise forms.ValidationError("Say why deployments stop.", code="required")
        return reason

    def clean_timezone(self) -> str:
        zone = (self.cleaned_data.get("timezone") or "UTC").strip()
        if not freezes.valid_zone(zone):
            raise forms.ValidationError(f"{zone!r} is not an IANA time zone (e.g. Europe/Berlin).", code="invalid")
        return zone

    def _clean_cron(self, name: str) -> str:
        expression = " ".join(self.cleaned_data[name].split())
        if expression and not freezes.valid_cron(expression):
            raise forms.ValidationError(f"{expression!r} is not a valid cron expression.", code="invalid")
        return expression

    def clean_start_cron(self) -> str:
        return self._clean_cron("start_cron")

    def clean_end_cron(self) -> str:
        return self._clean_cron("end_cron")

    def clean(self):
        data = super().clean()
        crons = [data.get(name) for name in ("start_cron", "end_cron")]
        instants = [data.get(name) for name in ("starts_at", "ends_at")]
        if self.errors:
            return data
        if any(crons) and any(instants):
            raise forms.ValidationError("Give either a start and an end cron (recurring) or a start and an end "
                                        "time (one-off), not both.", code="mixed")
        if any(crons):
            for name, value in zip(("start_cron", "end_cron"), crons, strict=True):
                if not value:
                    self.add_error(name, forms.ValidationError("A recurring window needs both crons.",
                                                               code="required"))
        elif any(instants):
            for name, value in zip(("starts_at", "ends_at"), instants, strict=True):
                if value is None:
                    self.add_error(name, forms.ValidationError("A one-off window needs both times.",
                                                               code="required"))
            if all(instants) and instants[1] <= instants[0]:
                self.add_error("ends_at", forms.ValidationError("The end must be after the start.", code="invalid"))
        else:
            raise forms.ValidationError("Give a start and an end cron (recurring) or a start and an end time "
                                        "(one-off).", code="required")
        return data


def _owns(user, function: Function) -> bool:
    """Staff, or the function's owner (portal/functions/access.py's ADMIN right, read here from
    Membership: this package sees portal.functions through its public module only)."""
    return user.is_authenticated and (user.is_staff or Membership.objects.filter(
        function=function, user=user, role=Membership.Role.OWNER).exists())


def may_manage(user, environment: Environment | None) -> bool:
    """Owners (and staff) manage an environment's windows; staff alone the global ones."""
    if not user.is_authenticated:
        return False
    if environment is None:
        return user.is_staff
    return _owns(user, environment.function)


def _check_manage(user, environment: Environment | None) -> None:
    if not may_manage(user, environment):
        raise PermissionDenied("only staff manage global freeze windows" if environment is None
                               else f"only owners of {environment.function.name} manage its freeze windows")


def describe(window: FreezeWindow) -> str:
    if window.start_cron:
        return f"from {window.start_cron!r} to {window.end_cron!r} ({window.timezone})"
    return f"from {window.starts_at:%Y-%m-%d %H:%M} to {window.ends_at:%Y-%m-%d %H:%M} UTC"


def _audit(action: str, window: FreezeWindow, user, **extra) -> None:
    environment = window.environment
    AuditEvent.record(action, actor=user, function=environment.function if environment else None,
                      window=window.pk, environment=environment.name if environment else "(every environment)",
                      reason=window.reason, schedule=describe(window), **extra)


def create(form: FreezeWindowForm, environment: Environment | None, user) -> FreezeWindow:
    """Save a valid form's window for `environment` (None: global)."""
    _check_manage(user, environment)
    with transaction.atomic():
        window = form.save(commit=False)
        window.environment, window.created_by = environment, user
        window.save()
        _audit("freeze.created", window, user)
    return window


def _thaw(environment: Environment | None) -> list[int]:
    """After a window of `environment` (None: global) was deleted or edited: release what no
    freeze holds any more, newest per environment (gates.release_thawed). The released pks."""
    frozen = Deployment.objects.filter(status=Deployment.Status.FROZEN)
    if environment is not None:
        frozen = frozen.filter(environment=environment)
    released = []
    for environment_id in sorted(set(frozen.values_list("environment_id", flat=True))):
        newest, _ = gates.release_thawed(environment_id)
        if newest is not None:
            released.append(newest)
    return released


def update(form: FreezeWindowForm, user) -> FreezeWindow:
    """Save a valid form bound to an existing window; what it no longer holds is released."""
    window = form.instance
    _check_manage(user, window.environment)
    before = FreezeWindow.objects.get(pk=window.pk)
    with transaction.atomic():
        window = form.save()
        _audit("freeze.edited", window, user, before=describe(before),
               ended=freezes.active(before) and not freezes.active(window))
    _thaw(window.environment)
    return window


def delete(window: FreezeWindow, user) -> None:
    """Delete a window; what it held and no other freeze holds is released."""
    _check_manage(user, window.environment)
    environment = window.environment
    with transaction.atomic():
        _audit("freeze.deleted", window, user, ended=freezes.active(window))
        window.delete()
    _thaw(environment)


def windows(environment: Environment | None):
    """An environment's own windows, or (None) the global ones."""
    if environment is None:
        return FreezeWindow.objects.filter(environment__isnull=True).select_related("created_by")
    return environment.freeze_windows.select_related("created_by")


# --- Override ---------------------------------------------------------------------------------


def holding(deployment: Deployment, at: datetime | None = None) -> list[FreezeWindow]:
    """The windows active for the deployment's environment at `at` (default now)."""
    at = at or timezone.now()
    return [window for window in freezes.windows_for(deployment.environment).order_by("pk")
            if freezes.active(window, at)]


def may_override(user, deployment: Deployment) -> bool:
    """Owners (and staff) may override a frozen deployment; staff alone when a global freeze holds it."""
    if not _owns(user, deployment.function):
        return False
    return user.is_staff or all(window.environment_id is not None for window in holding(deployment))


def override(deployment: Deployment, user, reason: str) -> Deployment | None:
    """Let one frozen deployment through the freeze: PermissionDenied for anyone but an owner
    (staff when a global freeze holds it); refused (400 `invalid`) without a reason, (409
    `not-frozen`) unless it is frozen and not overridden yet. Returns gates.reconsider()'s
    answer: the row (queued now, or still held by an approval), None when no longer held."""
    reason = " ".join((reason or "").split())
    if not may_override(user, deployment):
        raise PermissionDenied("only staff may override a global freeze" if _owns(user, deployment.function)
                               else f"only owners of {deployment.function.name} may override a freeze")
    if not reason:
        raise RequestRefused("say why this deployment may pass the freeze", status=400, code="invalid")
    if len(reason) > OVERRIDE_REASON_MAX:
        raise RequestRefused(f"the reason is longer than {OVERRIDE_REASON_MAX} characters", status=400,
                             code="invalid")
    windows = holding(deployment)
    with transaction.atomic():
        if not Deployment.objects.filter(pk=deployment.pk, status=Deployment.Status.FROZEN,
                                         override_reason="").update(override_reason=reason, overridden_by=user):
            raise RequestRefused(f"deployment #{deployment.pk} is not frozen (any more), or was overridden "
                                 "already", code="not-frozen")
        deployment.override_reason, deployment.overridden_by = reason, user
        AuditEvent.record("freeze.overridden", actor=user, function=deployment.function, deployment=deployment.pk,
                          environment=deployment.environment.name, reason=reason,
                          windows=[f"{window.reason} ({describe(window)})" for window in windows])
        events.freeze_overridden.send(Deployment, deployment=deployment, by=user.get_username(), reason=reason)
    return gates.reconsider(deployment.pk)
