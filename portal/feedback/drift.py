"""Drift: what AWS reports against what Slipway last left there.

The expected state (DriftState.expected_state) is written at the shift step from
what the deployment wrote itself (record_shift, on the deployments package's event),
or by an owner accepting a drift. A check reads the alias and $LATEST
(deploy.lambdas.observed_state) and compares. A difference is kept on the
environment's DriftState (drift_observed, one per environment) with a keyed fingerprint of the raw differences, so
it is audited and notified once, not at every periodic check, and again only
when it changes. Secret environment values are masked wherever a difference is
shown: the page, the audit log, notifications.

Drift in an environment cancels the promotions soaking out of it
(deployments.cancel_soaks_from): what they would promote is what that environment
vouched for, and it no longer serves exactly that.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction
from django.db.models.functions import Now

from deploy import lambdas
from deploy.logs import mask
from portal import deployments, functions
from portal.core.errors import RequestRefused
from portal.deployments import Deployment
from portal.feedback import status as feedback
from portal.feedback.models import DriftState
from portal.functions import AuditEvent, Environment, Function

log = logging.getLogger(__name__)
MASK = functions.MASK
FIELDS = (("alias_version", "alias → version"), ("alias_routing", "alias routing (weights)"),
          ("image_digest", "image digest"), ("memory_mb", "memory (MB)"), ("timeout_s", "timeout (s)"),
          ("architecture", "architecture"))
# Every shift Slipway completes leaves the alias unweighted; a baseline from before routing
# was kept means the same.
DEFAULTS = {"alias_routing": {}}
LABELS = dict(FIELDS)
MISSING = {"missing": True}  # drift_observed when the Lambda itself is gone


class Refused(RequestRefused):
    """Nothing to accept, or the drift cannot be accepted; the message says why."""


@dataclass
class Result:
    outcome: str  # "clean", "drift", "unchanged" (the same drift as before), "skipped", "no-baseline"
    differences: list[dict] = field(default_factory=list)  # masked
    reason: str = ""


def _show(value) -> str:
    return "(not set)" if value is None else str(value)


def differences(expected: dict, observed: dict | None, secret_keys=(), *, masked: bool = True,
                secrets=()) -> list[dict]:
    """[{"field", "label", "expected", "actual"}] for each field that differs; environment
    variables one by one, secret ones masked (unless `masked` is False: the fingerprint only).
    Masked, every value shown is also cleaned of the secret values (`secrets`, the function's,
    and those of secret keys on either side), wherever else they appear."""
    if observed is None or observed == MISSING:
        return [{"field": "function", "label": "Lambda function", "expected": "exists", "actual": "missing"}]
    found = []
    for key, label in FIELDS:
        wanted, actual = expected.get(key, DEFAULTS.get(key)), observed.get(key, DEFAULTS.get(key))
        if wanted != actual:
            found.append({"field": key, "label": label, "expected": _show(wanted), "actual": _show(actual)})
    env_expected, env_actual = expected.get("environment") or {}, observed.get("environment") or {}
    for key in sorted(set(env_expected) | set(env_actual)):
        before, after = env_expected.get(key), env_actual.get(key)
        if before == after:
            continue
        if masked and key in secret_keys:
            before = MASK if before is not None else None
            after = (f"{MASK} (another value)" if before is not None else MASK) if after is not None else None
        found.append({"field": f"environment.{key}", "label": f"environment {key}", "expected": _show(before),
                      "actual": _show(after)})
    if masked:
        hidden = [*secrets, *(str(env[key]) for env in (env_expected, env_actual) for key in secret_keys
                              if env.get(key))]
        for difference in found:
            difference["expected"] = mask(difference["expected"], *hidden)
            difference["actual"] = mask(difference["actual"], *hidden)
    return found


def _fingerprint(raw: list[dict]) -> str:
    """Keyed, so a stored fingerprint reveals nothing about secret values."""
    blob = json.dumps(raw, sort_keys=True).encode()
    return hmac.new(settings.SECRET_KEY.encode(), blob, hashlib.sha256).hexdigest()


def current(function: Function, environment: Environment | None = None) -> list[dict]:
    """The drift on record in `environment` (default: the function's first), masked, for the page."""
    environment = environment or function.first_environment
    state = environment.drift_state
    if not state.drift_fingerprint:
        return []
    return differences(state.expected_state, state.drift_observed, environment.secret_keys,
                       secrets=functions.secret_values(function))


def _busy(environment_id: int) -> bool:
    """A deployment running, or a rollout weighting the alias (its ticks change it)."""
    return Deployment.objects.filter(environment_id=environment_id,
                                     status__in=(*Deployment.RUNNING, *Deployment.ROLLOUT)).exists()


def _lock(function: Function, environment: Environment) -> DriftState:
    """The lock order: the function row, the environment row, then its drift state."""
    Function.objects.select_for_update().get(pk=function.pk)
    Environment.objects.select_for_update().get(pk=environment.pk)
    return DriftState.objects.select_for_update().get(environment_id=environment.pk)


def check(function: Function, *, user=None, trigger: str = "system", environment: Environment | None = None) -> Result:
    """Compare the environment's Lambda (default: the function's first) with what Slipway
    left there; record a new drift once (audit + notification), clear one that went away."""
    function = Function.objects.get(pk=function.pk)
    if function.is_archived:
        return Result("skipped", reason="archived")
    environment = Environment.objects.select_related("drift_state").get(
        pk=(environment or function.first_environment).pk)
    expected = environment.drift_state.expected_state
    if not expected:
        return Result("no-baseline", reason="no deployment has recorded what it left in Lambda yet")
    if _busy(environment.pk):
        return Result("skipped", reason="a deployment is running: it changes the Lambda itself")
    observed = lambdas.observed_state(environment.lambda_name, environment.alias)
    raw = differences(expected, observed, masked=False)
    shown = differences(expected, observed, environment.secret_keys, secrets=functions.secret_values(function))
    actor = {"actor": user, "actor_label": user.get_username() if user else trigger,
             "environment": environment.name}
    with transaction.atomic():
        locked = _lock(function, environment)
        state = DriftState.objects.filter(environment_id=environment.pk)
        if locked.expected_state != expected or _busy(environment.pk):  # a deployment shifted meanwhile
            return Result("skipped", reason="a deployment changed the Lambda during the check")
        if not raw:
            state.update(drift_checked_at=Now(), drift_observed={}, drift_fingerprint="", drift_detected_at=None)
            if locked.drift_fingerprint:
                AuditEvent.record("function.drift_cleared", function=function, **actor)
            return Result("clean")
        fingerprint = _fingerprint(raw)
        # Still or newly drifted: nothing soaking out of this environment may promote (under the
        # environment's lock, before the deployment rows: the lock order).
        reason = f"{environment.name} was changed outside Slipway: " + "; ".join(
            d["label"] for d in shown[:5])
        deployments.cancel_soaks_from(environment, reason[:300])
        if fingerprint == locked.drift_fingerprint:
            state.update(drift_checked_at=Now())
            return Result("unchanged", shown)
        state.update(drift_observed=observed if observed is not None else MISSING, drift_fingerprint=fingerprint,
                     drift_detected_at=Now(), drift_checked_at=Now())
        AuditEvent.record("function.drift_detected", function=function, differences=shown, **actor)
        feedback.notify(function, feedback.DRIFT, differences=shown, environment=environment.name)
    return Result("drift", shown)


def accept(function: Function, *, user, environment: Environment | None = None) -> list[dict]:
    """Take what AWS reported as the environment's (default: the function's first) new
    expected state (its settings are unchanged: its next deploy applies them again).
    Returns the masked differences accepted."""
    environment = environment or function.first_environment
    with transaction.atomic():
        locked = _lock(function, environment)
        if not locked.drift_fingerprint:
            raise Refused("there is no drift to accept")
        if locked.drift_observed == MISSING:
            raise Refused("the Lambda function is gone from AWS: deploy again instead")
        shown = differences(locked.expected_state, locked.drift_observed, environment.secret_keys,
                            secrets=functions.secret_values(function))
        DriftState.objects.filter(environment_id=environment.pk).update(
            expected_state=locked.drift_observed, drift_observed={}, drift_fingerprint="", drift_detected_at=None)
        AuditEvent.record("function.drift_accepted", function=function, actor=user, differences=shown,
                          environment=environment.name)
    return shown


def record_shift(deployment, written: dict | None, version: str = "") -> None:
    """Keep what a deployment left in Lambda as the expected state (the deployments
    package's `shifted` event): what it wrote to $LATEST, or for a version-only rollback
    $LATEST as the previous record has it (as it is now, when there is none), with the
    alias's new version (`version`: an aborted rollout put the stable one back) and no
    weights. A new $LATEST clears a drift on record. A preview's shift is none of drift's
    business: its environment is never checked."""
    if deployment.kind == Deployment.Kind.PREVIEW:
        return
    environment = deployment.environment
    rows = DriftState.objects.filter(environment_id=environment.pk)
    if written is not None:
        state, cleared = written, {"drift_observed": {}, "drift_fingerprint": "", "drift_detected_at": None}
    else:
        state, cleared = rows.values_list("expected_state", flat=True).get() or {}, {}
        if not state:  # recorded before Slipway kept expected states: $LATEST as it is now
            state = lambdas.observed_state(environment.lambda_name, environment.alias) or {}
    rows.update(expected_state={**state, "alias_version": version or deployment.version, "alias_routing": {}},
                **cleared)


def check_all() -> dict:
    """The periodic check: every environment of every function, each with a baseline; one
    failing check never stops the others. Outcomes list `function/environment`."""
    outcomes: dict[str, list[str]] = {}
    for environment in (Environment.objects.in_order().filter(function__archived_at__isnull=True)
                        .exclude(drift_state__expected_state={}).select_related("function")
                        .order_by("function__name", "position")):
        function = environment.function
        try:
            outcome = check(function, environment=environment).outcome
        except Exception as exc:  # AWS down, a function gone wrong: the next period tries again
            log.warning("drift check of %s (%s) failed: %s", function.name, environment.name,
                        functions.scrub(str(exc), function))
            outcome = "error"
        outcomes.setdefault(outcome, []).append(f"{function.name}/{environment.name}")
    return outcomes
