from django.core.management.base import BaseCommand, CommandError

from portal.core.errors import RequestRefused
from portal.deployments import request_promotion
from portal.management.commands._progress import finish, function_named
from portal.models import Deployment


class Command(BaseCommand):
    help = ("Promote what is live in the previous environment into ENVIRONMENT: the same digest, "
            "no build.")

    def add_arguments(self, parser):
        parser.add_argument("function", help="the function's name")
        parser.add_argument("environment", help="the environment to promote into (not the first)")
        parser.add_argument("--release", default="",
                            help="what you expect live in the previous environment: a version, a commit SHA prefix "
                                 "or sha256:…; refused if something else is (default: whatever is live there)")
        parser.add_argument("--wait", action="store_true", help="follow the steps until the promotion ends")

    def handle(self, *args, **options):
        function = function_named(options["function"])
        try:
            promotion = request_promotion(function, options["environment"], trigger=Deployment.Trigger.CLI,
                                          release=options["release"])
        except RequestRefused as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"queued promotion #{promotion.pk} of {function.name} into {promotion.environment.name}: "
                          f"version {promotion.upstream.version if promotion.upstream_id else '?'} "
                          f"({promotion.commit_sha[:12]}, {promotion.digest})")
        if options["wait"]:
            finish(promotion, self.stdout.write)
