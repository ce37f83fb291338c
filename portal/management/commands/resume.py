from django.core.management.base import BaseCommand, CommandError

from portal.core.errors import RequestRefused
from portal.deployments.requesting import environment_named, resume_auto_deploy
from portal.management.commands._progress import function_named


class Command(BaseCommand):
    help = "Resume auto-deploy (or automatic promotion) of a function's environment, paused by a rollback."

    def add_arguments(self, parser):
        parser.add_argument("function", help="the function's name")
        parser.add_argument("--environment", default="", help="which environment; required when there are several")

    def handle(self, *args, **options):
        function = function_named(options["function"])
        try:
            environment = environment_named(function, options["environment"])
            resume_auto_deploy(function, environment=environment.name)
        except RequestRefused as exc:
            raise CommandError(str(exc)) from None
        where = f" ({environment.name})" if function.environments.in_order().count() > 1 else ""
        was = environment.paused_reason
        self.stdout.write(f"auto-deploy of {function.name}{where} resumed" + (f" (was paused: {was})" if was else ""))
