from django.core.management.base import BaseCommand, CommandError

from portal.core.errors import RequestRefused
from portal.deployments.requesting import request_rollback
from portal.management.commands._progress import finish, function_named
from portal.models import Deployment


class Command(BaseCommand):
    help = "Put an earlier release back behind the alias, without rebuilding."

    def add_arguments(self, parser):
        parser.add_argument("function", help="the function's name")
        parser.add_argument("--to", default="", help="version number or commit SHA (default: the previous release)")
        parser.add_argument("--environment", default="", help="which environment; required when there are several")
        parser.add_argument("--no-wait", action="store_true", help="return once queued")

    def handle(self, *args, **options):
        function = function_named(options["function"])
        try:
            rollback = request_rollback(function, trigger=Deployment.Trigger.CLI, to=options["to"],
                                        environment=options["environment"])
        except RequestRefused as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"queued rollback #{rollback.pk} of {function.name} ({rollback.environment.name}) "
                          f"to version {rollback.target_version}")
        if not options["no_wait"]:
            finish(rollback, self.stdout.write)
