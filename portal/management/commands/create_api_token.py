"""Issue an API token for a user from the command line (provisioning, CI, the compose test).

The raw token is printed once, on stdout alone, and never stored or logged: the
same token the **API tokens** page issues, with the same audit event.
"""

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from portal.models import ApiToken, AuditEvent, Function


class Command(BaseCommand):
    help = "Issue an API token for USERNAME and print it once (stdout only)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="cli", help="what the token is for (shown on the tokens page)")
        parser.add_argument("--function", default="", help="limit the token to this function")
        parser.add_argument("--deploy-only", action="store_true", help="trigger, read and follow deployments only")
        parser.add_argument("--expires-in-days", type=int, default=0, help="0: no expiry")

    def handle(self, *args, username, name, function, deploy_only, expires_in_days, **options):
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        if user is None:
            raise CommandError(f"no active user named {username!r}")
        if not name.strip() or len(name) > ApiToken._meta.get_field("name").max_length:
            raise CommandError("--name must be 1 to 100 characters")
        if expires_in_days < 0:
            raise CommandError("--expires-in-days must be 0 (no expiry) or more")
        limited_to = None
        if function:
            limited_to = Function.objects.filter(name=function).first()
            if limited_to is None:
                raise CommandError(f"no function named {function!r}")
        token, raw = ApiToken.issue(
            user, name.strip(), function=limited_to, deploy_only=deploy_only,
            expires_at=timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None)
        AuditEvent.record("token.created", actor=user, function=token.function, token=token.name,
                          hint=token.hint, deploy_only=token.deploy_only, via="cli")
        self.stdout.write(raw)
