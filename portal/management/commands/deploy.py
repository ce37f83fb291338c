from django.core.management.base import BaseCommand, CommandError

from portal.core.errors import RequestRefused
from portal.deployments.requesting import request_deploy
from portal.management.commands._progress import finish, function_named
from portal.models import Deployment


class Command(BaseCommand):
    help = "Deploy a function at a ref or commit (default: its branch)."

    def add_arguments(self, parser):
        parser.add_argument("function", help="the function's name")
        group = parser.add_mutually_exclusive_group()
        group.add_argument("--ref", default="", help="branch or tag")
        group.add_argument("--commit", default="", help="full 40-character commit SHA")
        parser.add_argument("--environment", default="",
                            help="only the first environment (the default): the others are promoted to")
        parser.add_argument("--wait", action="store_true", help="follow the steps until the deployment ends")

    def handle(self, *args, **options):
        function = function_named(options["function"])
        try:
            deployment = request_deploy(function, trigger=Deployment.Trigger.CLI, ref=options["ref"],
                                        commit=options["commit"], environment=options["environment"])
        except RequestRefused as exc:
            raise CommandError(str(exc)) from None
        where = f" to {deployment.environment.name}" if function.environments.in_order().count() > 1 else ""
        self.stdout.write(f"queued deployment #{deployment.pk} of {function.name}{where} at {deployment.ref}")
        if options["wait"]:
            finish(deployment, self.stdout.write)
