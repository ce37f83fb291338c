"""Environments: the form's rules (EnvironmentForm over LambdaSettingsForm, the function
form's Lambda rules) and the registry's (positions, never the last, environment-in-use),
each change audited."""

import pytest

from deploy.errors import SlipwayError
from portal import functions
from portal.functions.forms import SOAK_LIMIT, EnvironmentForm, FunctionForm
from portal.models import AuditEvent, Deployment, Environment
from tests.conftest import add_environment, create_function, released, staged

ROLE = "arn:aws:iam::123456789012:role/slipway-lambda"


@pytest.fixture(autouse=True)
def allowed(settings):
    settings.SLIPWAY_ALLOWED_LAMBDA_PREFIXES = ["team-"]
    settings.SLIPWAY_ALLOWED_EXECUTION_ROLES = ["arn:aws:iam::123456789012:role/slipway-*"]
    settings.SLIPWAY_DEFAULT_EXECUTION_ROLE = ""


def _form(function, environment=None, **data):
    data = {"name": "staging", "lambda_name": "team-hello-stg", "execution_role_arn": ROLE, **data}
    return EnvironmentForm(data, function=function, instance=environment)


def _names(function):
    return list(function.environments.order_by("position").values_list("name", "position"))


def test_a_new_environment_goes_last_with_the_models_defaults(function, cast):
    form = _form(function)
    assert form.is_valid(), form.errors
    environment = functions.create_environment(form, user=cast["alice"])
    assert _names(function) == [("production", 0), ("staging", 1)]
    assert (environment.alias, environment.memory_mb, environment.timeout_s, environment.promotion,
            environment.soak_seconds) == ("live", 1024, 30, "manual", 0)
    event = AuditEvent.objects.get(action="environment.created")
    assert event.detail["environment"] == "staging" and event.detail["lambda_name"] == "team-hello-stg"
    assert environment.drift_state is not None  # its side row came with it


@pytest.mark.postgres  # one position per environment, checked row by row as they move
def test_inserting_at_a_position_moves_the_others_down(function, cast):
    add_environment(function, "production-eu", "team-hello-eu", 1)
    form = _form(function, position=0)
    assert form.is_valid(), form.errors
    functions.create_environment(form, user=cast["alice"])
    assert _names(function) == [("staging", 0), ("production", 1), ("production-eu", 2)]


def test_two_environments_never_name_the_same_lambda(function):
    add_environment(function, "staging", "team-hello-stg", 1)
    form = _form(function, name="qa", lambda_name="team-hello-stg")
    assert not form.is_valid()
    assert form.errors["lambda_name"] == ["another environment (staging) already deploys to this Lambda"]
    other = create_function(name="other", repository_url="https://x.example/o.git", ecr_repository="team/o",
                            lambda_name="team-other")
    form = _form(function, name="qa", lambda_name=other.first_environment.lambda_name)
    assert not form.is_valid()
    assert form.errors["lambda_name"] == ["another function already deploys to this Lambda"]


@pytest.mark.parametrize("field, value, message", [
    ("lambda_name", "prod-hello", "Slipway may only manage Lambda functions whose names start with team-"),
    ("execution_role_arn", "arn:aws:iam::999999999999:role/admin",
     "this role is not one the platform team allows Slipway to pass"),
    ("execution_role_arn", "", "no default execution role is configured: name one"),
    ("soak_seconds", SOAK_LIMIT + 1, f"Ensure this value is less than or equal to {SOAK_LIMIT}."),
    ("position", 2, "hello has 1 other environment(s): the position is 0 to 1 (1 is after the others)"),
    ("name", "production", "hello already has an environment named production"),
    ("promotion", "sometimes", "Select a valid choice. sometimes is not one of the available choices."),
    ("environment_text", "AWS_REGION=x", "line 1: AWS_REGION is reserved by Lambda"),
])
def test_the_form_refuses_with_the_fields_message(function, field, value, message):
    form = _form(function, **{field: value})
    assert not form.is_valid()
    assert form.errors[field] == [message]
    assert Environment.objects.count() == 1


def test_secret_values_are_write_only_and_an_empty_value_keeps_the_stored_one(function, cast):
    staging = add_environment(function, "staging", "team-hello-stg", 1, environment={"TOKEN": "s3cret", "MODE": "x"},
                              secret_keys=["TOKEN"], execution_role_arn=ROLE)
    shown = EnvironmentForm(function=function, instance=staging)
    assert shown.initial["secret_environment_text"] == "TOKEN=" and "s3cret" not in str(shown.initial)
    form = _form(function, staging, environment_text="MODE=y", secret_environment_text="TOKEN=")
    assert form.is_valid(), form.errors
    functions.update_environment(form, user=cast["alice"])
    staging.refresh_from_db()
    assert staging.variables == {"MODE": "y", "TOKEN": "s3cret"} and staging.secret_keys == ["TOKEN"]
    event = AuditEvent.objects.get(action="environment.edited")
    assert event.detail == {"environment": "staging", "env.MODE": "y"}


def test_a_secret_named_as_plain_too_is_refused(function):
    form = _form(function, environment_text="MODE=x", secret_environment_text="MODE=y")
    assert not form.is_valid()
    assert form.errors["secret_environment_text"] == ["MODE also set as plain environment"]


def test_the_function_form_still_edits_the_first_environment_with_the_same_rules(function):
    staging, production = staged(function)
    form = FunctionForm(instance=function)
    assert form.environment == staging and form.initial["lambda_name"] == staging.lambda_name


def test_an_environment_cannot_be_renamed_on_its_edit_form(function):
    staging = add_environment(function, "staging", "team-hello-stg", 1, execution_role_arn=ROLE)
    form = _form(function, staging, name="qa")
    assert form.is_valid(), form.errors
    assert form.cleaned_data["name"] == "staging"  # the field is disabled: its initial value stands


@pytest.mark.postgres  # one position per environment, checked row by row as they move
def test_moving_an_environment_renumbers_the_others_and_keeps_a_pause_set_meanwhile(function, cast):
    staging = add_environment(function, "staging", "team-hello-stg", 1, execution_role_arn=ROLE)
    form = _form(function, staging, position=0)
    assert form.is_valid(), form.errors
    Environment.objects.filter(pk=staging.pk).update(paused_reason="rolled back by bob")  # after the form read it
    functions.update_environment(form, user=cast["alice"])
    assert _names(function) == [("staging", 0), ("production", 1)]
    staging.refresh_from_db()
    assert staging.paused_reason == "rolled back by bob"
    assert AuditEvent.objects.get(action="environment.edited").detail["position"] == 0


def test_the_order_does_not_change_while_a_deployment_is_unfinished(function, cast):
    staging = add_environment(function, "staging", "team-hello-stg", 1, execution_role_arn=ROLE)
    queued = Deployment.objects.create(function=function, trigger="cli", ref="main")  # to production
    form = _form(function, staging, position=0)
    assert form.is_valid(), form.errors
    with pytest.raises(SlipwayError) as refused:
        functions.update_environment(form, user=cast["alice"])
    assert refused.value.code == "environment-in-use"
    assert refused.value.message == (f"deployment #{queued.pk} of hello (production) is queued: the promotion order "
                                     "cannot change until it finishes")
    assert _names(function) == [("production", 0), ("staging", 1)]
    assert not AuditEvent.objects.filter(action="environment.edited").exists()
    form = _form(function, staging, memory_mb=2048)  # a setting, not the order: fine
    assert form.is_valid(), form.errors
    assert functions.update_environment(form, user=cast["alice"]).memory_mb == 2048


@pytest.mark.postgres  # one position per environment, checked row by row as they move
def test_deleting_closes_up_the_order_and_is_audited(function, cast):
    staging, production = staged(function)
    add_environment(function, "dr", "team-hello-dr", 2)
    functions.delete_environment(production, user=cast["alice"])
    assert _names(function) == [("staging", 0), ("dr", 1)]
    event = AuditEvent.objects.get(action="environment.deleted")
    assert event.detail == {"environment": "production", "lambda_name": "team-hello"}


def test_an_environment_something_is_live_in_is_not_deleted(function, cast):
    staging, production = staged(function)
    live = released(function, "3", "a" * 40, environment=production)
    with pytest.raises(SlipwayError) as refused:
        functions.delete_environment(production, user=cast["alice"])
    assert (refused.value.code, refused.value.status) == ("environment-in-use", 409)
    assert refused.value.message == (f"version 3 is live in production (deployment #{live.pk}): an environment that "
                                     "serves a release cannot be deleted")
    assert _names(function) == [("staging", 0), ("production", 1)]
    assert Deployment.objects.filter(pk=live.pk).exists()
    assert not AuditEvent.objects.filter(action="environment.deleted").exists()


@pytest.mark.parametrize("status", ["queued", "soaking", "building"])
def test_an_environment_with_an_unfinished_deployment_is_not_deleted(function, cast, status):
    staging, production = staged(function)
    busy = Deployment.objects.create(function=function, environment=production, trigger="cli", status=status)
    with pytest.raises(SlipwayError) as refused:
        functions.delete_environment(production, user=cast["alice"])
    assert refused.value.code == "environment-in-use"
    assert refused.value.message == (f"deployment #{busy.pk} to production is {status}: cancel it or let it finish "
                                     "before deleting the environment")
    assert Environment.objects.filter(pk=production.pk).exists()


def test_the_last_environment_is_never_deleted(function, cast):
    with pytest.raises(SlipwayError) as refused:
        functions.delete_environment(function.first_environment, user=cast["alice"])
    assert refused.value.message == "production is hello's only environment: a function always deploys somewhere"
    assert Environment.objects.filter(function=function).count() == 1


def test_a_failed_deploy_does_not_keep_an_environment(function, cast):
    staging, production = staged(function)
    Deployment.objects.create(function=function, environment=production, trigger="cli", status="failed")
    functions.delete_environment(production, user=cast["alice"])
    assert _names(function) == [("staging", 0)]


# --- the pages (owner only; plain forms, no JavaScript) --------------------------------------


def test_the_owner_adds_an_environment_on_its_page(client, cast, function):
    client.force_login(cast["alice"])
    page = client.get("/functions/hello/environments/new/")
    assert page.status_code == 200 and b'name="lambda_name"' in page.content and b"us-east-1" in page.content
    response = client.post("/functions/hello/environments/new/", {
        "name": "staging", "position": "0", "lambda_name": "team-hello-stg", "execution_role_arn": ROLE,
        "secret_environment_text": "TOKEN=s3cret"})
    assert response.status_code == 302 and response["Location"] == "/functions/hello/"
    assert _names(function) == [("staging", 0), ("production", 1)]
    edit = client.get("/functions/hello/environments/staging/edit/")
    assert edit.status_code == 200 and b"TOKEN=" in edit.content and b"s3cret" not in edit.content


def test_the_page_shows_the_fields_error_and_saves_nothing(client, cast, function):
    client.force_login(cast["alice"])
    response = client.post("/functions/hello/environments/new/", {"name": "qa", "lambda_name": "team-hello",
                                                                  "execution_role_arn": ROLE})
    assert response.status_code == 400
    assert b"another environment (production) already deploys to this Lambda" in response.content
    assert _names(function) == [("production", 0)]


def test_the_delete_page_says_why_it_refuses(client, cast, function):
    staging, production = staged(function)
    released(function, "1", "a" * 40, environment=production)
    client.force_login(cast["alice"])
    assert b"Version 1 is live in production" in client.get("/functions/hello/environments/production/delete/").content
    response = client.post("/functions/hello/environments/production/delete/")
    assert response.status_code == 409 and b"version 1 is live in production" in response.content
    assert _names(function) == [("staging", 0), ("production", 1)]
    deleted = client.post("/functions/hello/environments/staging/delete/")
    assert deleted.status_code == 302 and _names(function) == [("production", 0)]


def test_the_pages_need_the_csrf_token(cast, function):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(cast["alice"])
    add_environment(function, "staging", "team-hello-stg", 1)
    assert client.post("/functions/hello/environments/staging/delete/").status_code == 403
    assert _names(function) == [("production", 0), ("staging", 1)]


def test_two_saves_that_both_passed_the_form_meet_the_database(function, cast):
    first, second = _form(function), _form(function, name="qa")
    assert first.is_valid() and second.is_valid()  # both read before either saved
    functions.create_environment(first, user=cast["alice"])
    with pytest.raises(SlipwayError) as refused:
        functions.create_environment(second, user=cast["alice"])
    assert (refused.value.code, refused.value.status) == ("taken", 409)
    assert _names(function) == [("production", 0), ("staging", 1)]


def test_a_function_has_at_most_ten_environments(function, cast):
    for position in range(1, 10):
        add_environment(function, f"env{position}", f"team-hello-{position}", position)
    form = _form(function)
    assert form.is_valid(), form.errors
    with pytest.raises(SlipwayError, match="hello has 10 environments, the most a function may have"):
        functions.create_environment(form, user=cast["alice"])
    assert function.environments.count() == 10
