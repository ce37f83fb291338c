from django.core.management.base import BaseCommand, CommandError

from portal.deployments.requesting import cancel
from portal.models import Deployment


class Command(BaseCommand):
    help = "Cancel a deployment: at once while queued, at the next step boundary before its update step."

    def add_arguments(self, parser):
        parser.add_argument("deployment", type=int, help="the deployment's number")

    def handle(self, *args, **options):
        deployment = Deployment.objects.filter(pk=options["deployment"]).first()
        if deployment is None:
            raise CommandError(f"no deployment #{options['deployment']}")
        if not cancel(deployment):
            deployment.refresh_from_db()
            raise CommandError(f"deployment #{deployment.pk} is {deployment.status}: too late to cancel "
                               "(it has ended or already touched the Lambda)")
        deployment.refresh_from_db()
        state = "cancelled" if deployment.is_terminal else "will stop at its next step boundary"
        self.stdout.write(f"deployment #{deployment.pk} {state}")
