"""A function's secret values, and the one way any output about it is cleaned of them.

Every channel that shows what happened to a function — step logs and error messages
(portal/deployments/recording.py), commit statuses and notifications (portal/feedback/delivery.py), JSON
log lines (portal/core/jsonlog.py), drift views (portal/feedback/drift.py) — passes its text through
deploy.logs.mask with `secret_values(function)`: each value in its raw, JSON-escaped
and repr forms, after Lambda's "String measured:" echo of the environment is cut.
"""

from __future__ import annotations

from django.dispatch import Signal

from deploy.logs import mask
from portal import sources
from portal.functions.models import Function

MASK = "••••••"  # what pages show for a secret value (Environment.masked_variables, portal/feedback/drift.py)


# The packages above this one that keep a secret of a function (feedback: its GitLab
# token, its webhook signing secret, the environment it recorded in Lambda) answer
# this signal with those values, as plain strings; portal/apps.py connects them.
secrets_wanted = Signal()  # function=


def secret_keys(function: Function) -> set[str]:
    """The names of the variables secret in any of the function's environments: a value
    secret in one is masked wherever it shows."""
    return {key for env in function.environments.all() for key in (env.secret_keys or ())}


def environment_secrets(function: Function, *environments: dict) -> list[str]:
    """The values of the function's secret environment variables in each of its
    environments and in `environments` (such as what Slipway last left in Lambda: a value
    replaced since may still be quoted back)."""
    envs = list(function.environments.all())
    keys = {key for env in envs for key in (env.secret_keys or ())}
    values = []
    for variables in (*(env.variables or {} for env in envs), *environments):
        values += [str(value) for key, value in (variables or {}).items() if key in keys and value]
    return values


def secret_values(function: Function) -> list[str]:
    """Every secret value of the function: its secret environment values, its repository's
    deploy token or key, and what the packages holding others answer (secrets_wanted)."""
    values = environment_secrets(function) + sources.log_secrets(function)
    for _receiver, answer in secrets_wanted.send(Function, function=function):
        values += answer or []
    return sorted(set(values))


def scrub(text: str, function: Function | None = None, secrets: list[str] | None = None) -> str:
    """`text` as any output may show it: masked with the function's secret values (or the
    `secrets` already read for it) and the usual patterns."""
    if secrets is None:
        secrets = secret_values(function) if function is not None else []
    return mask(text or "", *secrets)


def masked_state(function: Function, state: dict) -> dict:
    """A recorded Lambda state (expected_state, drift_observed) as pages may show it: the
    values of secret environment variables replaced, as Environment.masked_variables does."""
    masked = dict(state or {})
    if isinstance(masked.get("environment"), dict):
        keys = secret_keys(function)
        masked["environment"] = {key: MASK if key in keys else value
                                 for key, value in masked["environment"].items()}
    return masked
