"""First-run data for the embedded stack: an admin user and the detector.

Idempotent. The admin password comes from SLIPWAY_ADMIN_PASSWORD, or is
generated and printed exactly once, when the user is created; it is never
stored in clear or logged afterwards.
"""

import base64
import os
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from portal.models import Architecture, AuditEvent, Environment, Function, Membership

DETECTOR = {
    "description": "OpenCV object detector (this repository's function/)",
    "context_path": "function",
    "dockerfile_path": "Dockerfile",
    "architecture": Architecture.ARM64,
    "ecr_repository": "slipway/detector",
}
# Its one environment, production (where pushes deploy).
DETECTOR_ENVIRONMENT = {
    "name": "production",
    "lambda_name": "slipway-detector",
    "memory_mb": 1024,
    "timeout_s": 30,
    "execution_role_arn": "arn:aws:iam::000000000000:role/slipway-lambda",
}


def detector_smoke_event() -> dict:
    """A small real photo with one face: a new version must find it before the alias moves."""
    image = settings.BASE_DIR / "function" / "samples" / "astronaut-256.jpg"
    return {"image_base64": base64.b64encode(image.read_bytes()).decode(), "detector": "face"}


class Command(BaseCommand):
    help = "Create the local admin user and register function/ as the 'detector' function (local mode only)."

    def handle(self, *args, **options):
        if not settings.LOCAL_MODE:
            raise CommandError("bootstrap_local only runs with SLIPWAY_LOCAL=1")
        User = get_user_model()
        username = os.environ.get("SLIPWAY_ADMIN_USER", "admin")
        admin = User.objects.filter(username=username).first()
        if admin is None:
            password = os.environ.get("SLIPWAY_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
            admin = User.objects.create_superuser(username, f"{username}@localhost", password)
            shown = "from SLIPWAY_ADMIN_PASSWORD" if os.environ.get("SLIPWAY_ADMIN_PASSWORD") else password
            self.stdout.write(f"[stack] admin user created: {username} / {shown}  (shown once; "
                              "change it in the admin)")
        with transaction.atomic():
            function, created = Function.objects.get_or_create(
                name="detector",
                defaults={**DETECTOR, "repository_url": str(settings.BASE_DIR), "smoke_event": detector_smoke_event()},
            )
            if created:
                Environment.objects.create(function=function, **DETECTOR_ENVIRONMENT)
        if created:
            Membership.objects.get_or_create(function=function, user=admin, defaults={"role": Membership.Role.OWNER})
            AuditEvent.record("function.registered", actor_label="system", function=function,
                              repository=function.repository_url)
            self.stdout.write(f"[stack] registered function 'detector' from {function.repository_url}/function")
