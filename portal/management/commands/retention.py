from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from portal.deployments import retention
from portal.models import Function


class Command(BaseCommand):
    help = ("Delete Lambda versions older than the last N releases that no alias uses, then the ECR images no "
            "remaining version runs; print what was kept and why. Run it where the workers run (their AWS role).")

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="report only; delete nothing")
        parser.add_argument("--function", action="append", default=[], metavar="NAME",
                            help="only this function (repeatable); default: every function")
        parser.add_argument("--keep", type=int, default=settings.SLIPWAY_RETAIN_RELEASES, metavar="N",
                            help=f"releases to keep per function (default {settings.SLIPWAY_RETAIN_RELEASES}, "
                                 "SLIPWAY_RETAIN_RELEASES)")

    def handle(self, *args, **options):
        names = options["function"]
        unknown = sorted(set(names) - set(Function.objects.filter(name__in=names).values_list("name", flat=True)))
        if unknown:
            raise CommandError(f"no function named {', '.join(unknown)}")
        if options["keep"] < 1:
            raise CommandError("--keep must be at least 1: the live release is always kept")
        reports = retention.run(keep=options["keep"], dry_run=options["dry_run"], names=names or None)
        for report in reports:
            for line in report.lines():
                self.stdout.write(line)
        failed = [r for r in reports if r.errors]
        if failed:
            raise CommandError(f"{len(failed)} function(s) had errors: {', '.join(r.function for r in failed)}")
