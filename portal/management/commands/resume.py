from django.core.management.base import BaseCommand

from portal.deployments.requesting import resume_auto_deploy
from portal.management.commands._progress import function_named


class Command(BaseCommand):
    help = "Resume auto-deploy of a function (paused by a rollback)."

    def add_arguments(self, parser):
        parser.add_argument("function", help="the function's name")

    def handle(self, *args, **options):
        function = function_named(options["function"])
        was = function.first_environment.paused_reason
        resume_auto_deploy(function)
        self.stdout.write(f"auto-deploy of {function.name} resumed" + (f" (was paused: {was})" if was else ""))
