from io import StringIO

from django.core.management import call_command


def test_django_system_checks_pass():
    out = StringIO()
    call_command("check", stdout=out)
    assert "no issues" in out.getvalue()


def test_models_and_migrations_agree(db):
    # Exits with SystemExit(1) when a migration is missing.
    call_command("makemigrations", "--check", "--dry-run", stdout=StringIO())


def test_every_model_is_in_the_admin():
    from django.apps import apps
    from django.contrib import admin

    missing = [m.__name__ for m in apps.get_app_config("portal").get_models()
               if m not in admin.site._registry and m.__name__ not in ("DeploymentStep", "Membership", "RolloutEvent")]
    assert missing == []
