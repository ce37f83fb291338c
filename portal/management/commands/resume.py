from django.core.management.base import BaseCommand, CommandError

from portal.models import Function
from portal.services import resume_auto_deploy


class Command(BaseCommand):
    help = "Resume auto-deploy of a function (paused by a rollback)."

    def add_arguments(self, parser):
        parser.add_argument("function", help="the function's name")

    def handle(self, *args, **options):
        function = Function.objects.filter(name=options["function"]).first()
        if function is None:
            raise CommandError(f"no function named {options['function']!r}")
        was = function.paused_reason
        resume_auto_deploy(function)
        self.stdout.write(f"auto-deploy of {function.name} resumed" + (f" (was paused: {was})" if was else ""))
