"""The console per environment: `?environment=` picks whose Lambda it invokes (the alias
or a version of that Lambda), and each run records its environment. deploy.aws.client is
the one seam patched, as in test_console."""

import pytest
from django.urls import reverse

from portal.models import Build, ConsoleRun, Deployment
from tests.conftest import staged
from tests.test_console import FACE, answer, detected, upload
from tests.test_console import astronaut as astronaut  # noqa: F401 - fixtures, by name
from tests.test_console import aws_clients as aws_clients  # noqa: F401


@pytest.fixture
def envs(function):
    """staging (Lambda team-hello-stg) published versions 3 and 4; production (team-hello) version 9."""
    staging, production = staged(function, promotion="manual")
    Environment = type(staging)
    Environment.objects.filter(pk=production.pk).update(alias="prod")
    production.refresh_from_db()
    build = Build.objects.create(function=function, commit_sha="a" * 40, architecture="arm64", inputs_digest="a",
                                 status=Build.Status.SUCCEEDED, digest="sha256:" + "a" * 64)
    for environment, version in ((staging, "3"), (staging, "4"), (production, "9")):
        Deployment.objects.create(function=function, environment=environment, trigger="cli", status="succeeded",
                                  version=version, build=build, commit_sha="a" * 40)
    return staging, production


def console(client, cast, who="bob", **query):
    client.force_login(cast[who])
    return client.get(reverse("portal-console", args=["hello"]), query)


def test_without_a_choice_the_console_targets_the_first_environment(client, cast, envs):
    html = console(client, cast).content.decode()
    assert "staging: Lambda <code>team-hello-stg</code>" in html
    assert '<option value="live" selected>live (what is live)</option>' in html
    assert 'value="4">version 4' in html and 'value="9"' not in html


def test_environment_production_targets_its_alias_and_its_versions(client, cast, envs):
    html = console(client, cast, environment="production").content.decode()
    assert "production: Lambda <code>team-hello</code>" in html
    assert 'value="prod"' in html and 'value="9">version 9' in html and 'value="4"' not in html
    assert 'action="/functions/hello/console/?environment=production"' in html  # the invoke goes there too


def test_an_unknown_environment_is_404(client, cast, envs):
    assert console(client, cast, environment="qa").status_code == 404


def test_an_invoke_goes_to_the_named_environments_lambda_and_the_run_records_it(client, cast, envs, aws_clients,
                                                                              astronaut):
    answer(aws_clients, detected(FACE), version="9")
    client.force_login(cast["bob"])
    url = reverse("portal-console", args=["hello"]) + "?environment=production"
    response = client.post(url, {"target": "prod", "detector": "face", "image": upload(astronaut)})
    assert response.status_code == 302
    call = aws_clients["lambda"].invoke.call_args.kwargs
    assert (call["FunctionName"], call["Qualifier"]) == ("team-hello", "prod")
    run = ConsoleRun.objects.get()
    assert run.environment == envs[1] and run.target == "prod"
    page = client.get(response["Location"]).content.decode()
    assert "production: prod" in page  # the result names where it ran
    assert "production: Lambda <code>team-hello</code>" in page  # and sending again goes there


def test_a_version_of_another_environment_is_not_a_choice(client, cast, envs, aws_clients, astronaut):
    client.force_login(cast["bob"])
    url = reverse("portal-console", args=["hello"]) + "?environment=production"
    response = client.post(url, {"target": "4", "detector": "face", "image": upload(astronaut)})
    assert response.status_code == 400 and b"invalid-input" in response.content
    aws_clients["lambda"].invoke.assert_not_called()
    assert not ConsoleRun.objects.exists()


def test_a_compare_run_records_the_environment_on_both_sides(client, cast, envs, aws_clients, astronaut):
    answer(aws_clients, detected(FACE), version="4")
    client.force_login(cast["bob"])
    url = reverse("portal-console", args=["hello"]) + "?environment=staging"
    response = client.post(url, {"target": "live", "compare_with": "3", "detector": "face",
                                 "image": upload(astronaut)})
    assert response.status_code == 302
    assert {c.kwargs["FunctionName"] for c in aws_clients["lambda"].invoke.call_args_list} == {"team-hello-stg"}
    assert list(ConsoleRun.objects.values_list("environment__name", flat=True)) == ["staging", "staging"]


def test_an_environment_with_nothing_deployed_says_so(client, cast, function, aws_clients, astronaut):
    staged(function)
    Deployment.objects.create(function=function, environment=function.environments.get(name="staging"),
                              trigger="cli", status="succeeded", version="1", commit_sha="a" * 40)
    html = console(client, cast, environment="production").content.decode()
    assert 'id="nothing-deployed"' in html and "in production" in html and "Promote to it first" in html


def test_the_history_names_each_runs_environment(client, cast, envs):
    ConsoleRun.objects.create(function=envs[0].function, environment=envs[1], user=cast["bob"], target="prod",
                              outcome="ok", result=detected(FACE), box_count=1, round_trip_ms=12)
    html = console(client, cast, who="charlie").content.decode()
    assert "<td>production</td>" in html


@pytest.mark.django_db(transaction=True)
def test_the_migration_gives_each_existing_run_its_functions_first_environment(migrations):
    old = migrations(("portal", "0019_promotion"))
    Fn, Env, Run = (old.get_model("portal", name) for name in ("Function", "Environment", "ConsoleRun"))
    function = Fn.objects.create(name="fn", repository_url="https://gitlab.example.com/t/fn.git",
                                 ecr_repository="slipway/fn")
    Env.objects.create(function=function, name="production", position=1, lambda_name="slipway-fn")
    staging = Env.objects.create(function=function, name="staging", position=0, lambda_name="slipway-fn-stg")
    run = Run.objects.create(function=function, target="live", outcome="ok", round_trip_ms=1)
    new = migrations(("portal", "0020_consolerun_environment"))
    assert new.get_model("portal", "ConsoleRun").objects.get(pk=run.pk).environment_id == staging.pk
