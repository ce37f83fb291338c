"""Every model of the one Django app `portal`, importable from one place.

Each feature package owns its models (portal/<package>/models.py); Django finds
them because this module, the app's models module, imports them all. The web
and worker entry points and the tests may import models from here; code inside
a feature package imports its own package's models module, and another
package's models through that package's public module (its __init__), never
from here: this module imports every package, so importing it from one of them
would be a circle.
"""

from portal.functions.models import ApiToken, Architecture, AuditEvent, Function, Membership  # noqa: I001
from portal.console.models import ConsoleImage, ConsoleRun, GoldenCase
from portal.deployments.models import LOG_CAP_BYTES, Build, Deployment, DeploymentStep, ImageDeletion
from portal.feedback.models import NotificationAttempt
from portal.hooks.models import DeliveryRing, SeenSignature, WebhookDelivery

__all__ = ["LOG_CAP_BYTES", "ApiToken", "Architecture", "AuditEvent", "Build", "ConsoleImage", "ConsoleRun",
           "DeliveryRing", "Deployment", "DeploymentStep", "Function", "GoldenCase", "ImageDeletion", "Membership",
           "NotificationAttempt", "SeenSignature", "WebhookDelivery"]
