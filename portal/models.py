"""Every model of the one Django app `portal`, importable from one place.

Each feature package owns its models (portal/<package>/models.py); Django finds
them because this module, the app's models module, imports them all. The web
and worker entry points and the tests may import models from here; code inside
a feature package imports its own package's models module, and another
package's models through that package's public module (its __init__), never
from here: this module imports every package, so importing it from one of them
would be a circle.
"""

from portal.functions.models import ApiToken, Architecture, AuditEvent, Environment, Function, Membership  # noqa: I001
from portal.functions.models import PreviewPolicy
from portal.console.models import ConsoleImage, ConsoleRun, GoldenCase
from portal.deployments.models import LOG_CAP_BYTES, Approval, Build, Deployment, DeploymentStep, FreezeWindow
from portal.deployments.models import ImageDeletion, Preview, Rollout, RolloutEvent
from portal.feedback.models import DriftState, FeedbackSettings, NotificationAttempt
from portal.hooks.models import DeliveryRing, HookKeys, SeenSignature, WebhookDelivery
from portal.sources.models import SourceAccess

# Each function has one row of each, made with it: portal/apps.py connects
# make_side_rows_on_create to Function's post_save, and what makes functions without
# save() (bulk_create) calls create_side_rows. So no code branches on a row's absence.
SIDE_MODELS = (HookKeys, SourceAccess, FeedbackSettings)
# Each environment has its drift state, made with it the same way (Environment's post_save).
ENVIRONMENT_SIDE_MODELS = (DriftState,)


def create_side_rows(functions) -> None:
    """The side rows of `functions` (saved Function objects) that do not exist yet."""
    for model in SIDE_MODELS:
        model.objects.bulk_create([model(function=function) for function in functions], ignore_conflicts=True)


def create_environment_side_rows(environments) -> None:
    """The side rows of `environments` (saved Environment objects) that do not exist yet."""
    for model in ENVIRONMENT_SIDE_MODELS:
        model.objects.bulk_create([model(environment=environment) for environment in environments],
                                  ignore_conflicts=True)


def make_side_rows_on_create(sender, instance, created, raw=False, **_) -> None:
    if created and not raw:  # raw: loaddata, whose fixtures carry their own side rows
        create_side_rows([instance])


def make_environment_side_rows_on_create(sender, instance, created, raw=False, **_) -> None:
    if created and not raw:
        create_environment_side_rows([instance])


__all__ = [
    "LOG_CAP_BYTES",
    "ENVIRONMENT_SIDE_MODELS",
    "SIDE_MODELS",
    "create_environment_side_rows",
    "create_side_rows",
    "ApiToken",
    "Approval",
    "Architecture",
    "AuditEvent",
    "Build",
    "ConsoleImage",
    "ConsoleRun",
    "DeliveryRing",
    "Deployment",
    "DeploymentStep",
    "DriftState",
    "Environment",
    "FeedbackSettings",
    "FreezeWindow",
    "Function",
    "GoldenCase",
    "HookKeys",
    "ImageDeletion",
    "Membership",
    "NotificationAttempt",
    "Preview",
    "PreviewPolicy",
    "Rollout",
    "RolloutEvent",
    "SeenSignature",
    "SourceAccess",
    "WebhookDelivery",
]
