"""The freeze override block of the deployment page: whether the deployment is frozen, what
holds it, and whether the user may override (portal/deployments/freezing.py decides)."""

from django import template

from portal.deployments import freezing
from portal.models import Deployment

register = template.Library()


@register.simple_tag
def freeze_override(deployment: Deployment, user) -> dict:
    if deployment.status != Deployment.Status.FROZEN:
        return {"frozen": False}
    return {"frozen": True, "windows": freezing.holding(deployment), "overridden": bool(deployment.override_reason),
            "may": freezing.may_override(user, deployment) and not deployment.override_reason}
