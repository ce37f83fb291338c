"""Every page and action, as each of the cast: alice owns `hello`, bob deploys it,
charlie views it, dave has no role. Celery's send_task is the one seam patched."""


import pytest
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from portal.models import AuditEvent, Build, Deployment, Function, Membership
from tests.conftest import create_function, released, update_function

Status = Deployment.Status


@pytest.fixture(autouse=True)
def _no_broker(sent):
    return sent


def login(client, cast, name):
    client.force_login(cast[name])
    return client


@pytest.fixture
def history(function):
    return released(function, "1", "a" * 40), released(function, "2", "b" * 40)


@pytest.mark.parametrize("name, status", [("alice", 200), ("bob", 200), ("charlie", 200), ("dave", 404)])
def test_the_function_page_is_shown_to_members_only(client, cast, function, history, name, status):
    response = login(client, cast, name).get(reverse("portal-function", args=["hello"]))
    assert response.status_code == status
    if status == 200:
        assert b"release 2" in response.content


def test_the_list_shows_only_functions_the_user_may_see(client, cast, function, history):
    create_function(name="secret", repository_url="https://x.example/s.git", ecr_repository="slipway/s",
                    lambda_name="slipway-s")
    page = login(client, cast, "charlie").get(reverse("portal-functions")).content.decode()
    assert "hello" in page and "secret" not in page
    assert "release 2" in page  # what is live


def test_the_list_costs_the_same_queries_for_two_rows_and_a_full_page(client, cast, function, history,
                                                                      django_assert_max_num_queries):
    from django.db import connection

    login(client, cast, "alice")
    with CaptureQueriesContext(connection) as two:
        client.get(reverse("portal-functions"))
    for n in range(30):
        other = create_function(name=f"f{n:02}", repository_url="https://x.example/r.git",
                                ecr_repository=f"slipway/f{n}", lambda_name=f"slipway-f{n}")
        Membership.objects.create(function=other, user=cast["alice"], role="owner")
        released(other, "1", f"{n:02x}" * 20)
    with CaptureQueriesContext(connection) as full:
        response = client.get(reverse("portal-functions"))
    assert response.content.count(b'id="function-') == 25
    assert len(two.captured_queries) == len(full.captured_queries)


@pytest.mark.parametrize("name, status", [("alice", 302), ("bob", 302), ("charlie", 403), ("dave", 404)])
def test_only_deployers_and_owners_deploy(client, cast, function, name, status):
    response = login(client, cast, name).post(reverse("portal-function-deploy", args=["hello"]), {"ref": "main"})
    assert response.status_code == status
    assert Deployment.objects.filter(trigger="ui").count() == (1 if status == 302 else 0)


def test_a_bad_ref_is_refused_with_a_field_message_and_nothing_stored(client, cast, function):
    response = login(client, cast, "bob").post(reverse("portal-function-deploy", args=["hello"]),
                                               {"ref": "--upload-pack=x"})
    assert response.status_code == 400 and b"not a valid branch, tag or commit" in response.content
    assert Deployment.objects.count() == 0


def test_the_deploy_confirmation_needs_no_fetch(client, cast, function, history):
    response = login(client, cast, "bob").get(reverse("portal-function-deploy", args=["hello"]), {"ref": "main"})
    assert response.status_code == 200 and b"Not fetched yet" in response.content


@pytest.mark.parametrize("name, status", [("bob", 302), ("charlie", 403), ("dave", 404)])
def test_rollback_needs_a_deployer(client, cast, function, history, name, status):
    url = reverse("portal-function-rollback", args=["hello", history[0].pk])
    response = login(client, cast, name).post(url)
    assert response.status_code == status
    assert Deployment.objects.filter(kind="rollback").count() == (1 if status == 302 else 0)


def test_a_rollback_to_a_release_whose_image_is_gone_is_refused_and_offered_disabled(client, cast, function,
                                                                                      history):
    from django.utils import timezone

    Build.objects.filter(pk=history[0].build_id).update(image_gone_at=timezone.now())
    login(client, cast, "bob")
    page = client.get(reverse("portal-function", args=["hello"])).content.decode()
    assert "image gone from ECR" in page and "disabled" in page
    response = client.post(reverse("portal-function-rollback", args=["hello", history[0].pk]))
    assert response.status_code == 409 and b"gone from ECR" in response.content
    assert not Deployment.objects.filter(kind="rollback").exists()


def test_after_a_rollback_the_page_shows_the_banner_and_resume_lifts_it(client, cast, function, history):
    login(client, cast, "bob").post(reverse("portal-function-rollback", args=["hello", history[0].pk]))
    assert b"auto-deploy paused" in client.get(reverse("portal-function", args=["hello"])).content
    assert client.post(reverse("portal-function-resume", args=["hello"])).status_code == 302
    function.refresh_from_db()
    assert function.first_environment.paused_reason == ""


@pytest.mark.parametrize("name, status", [("alice", 200), ("bob", 403), ("charlie", 403), ("dave", 404)])
def test_only_owners_edit(client, cast, function, name, status):
    assert login(client, cast, name).get(reverse("portal-function-edit", args=["hello"])).status_code == status


def _form(**overrides):
    data = {"name": "detector2", "description": "", "repository_url": "https://gitlab.example.com/t/d.git",
            "branch": "main", "context_path": ".", "dockerfile_path": "Dockerfile", "architecture": "arm64",
            "ecr_repository": "slipway/detector2", "lambda_name": "slipway-detector2", "alias": "live",
            "memory_mb": "1024", "timeout_s": "30", "execution_role_arn": "arn:aws:iam::000000000000:role/x",
            "auto_deploy": "on", "environment_text": "MODE=fast", "secret_environment_text": "TOKEN=s3cr3t-value",
            "build_args_text": "{}", "smoke_event_text": '{"ping": 1}'}
    data.update(overrides)
    return data


def test_anyone_signed_in_registers_a_function_and_becomes_its_owner(client, cast):
    response = login(client, cast, "dave").post(reverse("portal-function-register"), _form())
    assert response.status_code == 302, response.content.decode()[:2000]
    function = Function.objects.get(name="detector2")
    assert Membership.objects.get(function=function, user=cast["dave"]).role == "owner"
    environment = function.first_environment
    assert environment.variables == {"MODE": "fast", "TOKEN": "s3cr3t-value"} and environment.secret_keys == ["TOKEN"]
    assert "s3cr3t-value" not in str(list(AuditEvent.objects.values_list("detail", flat=True)))


@pytest.mark.parametrize("field, value, message", [
    ("repository_url", "ext::sh -c touch% /tmp/x", "not an allowed repository URL"),
    ("context_path", "../etc", "must be a relative path inside the repository"),
    ("lambda_name", "prod-payments", "whose names start with slipway-"),
    ("ecr_repository", "prod/payments", "starting with slipway/"),
    ("execution_role_arn", "arn:aws:iam::999999999999:role/admin", "not one the platform team allows"),
    ("smoke_event_text", "[1, 2]", "must be a JSON object"),
    ("environment_text", "AWS_REGION=x", "reserved by Lambda"),
    ("build_args_text", '{"bad name": "x"}', "not a valid identifier"),
])
def test_registration_refuses_bad_input_field_by_field_and_stores_nothing(client, cast, field, value, message):
    response = login(client, cast, "dave").post(reverse("portal-function-register"), _form(**{field: value}))
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not Function.objects.filter(name="detector2").exists()


def test_a_lambda_already_managed_cannot_be_registered_again(client, cast, function):
    update_function(function, lambda_name="slipway-detector2")
    response = login(client, cast, "dave").post(reverse("portal-function-register"), _form())
    assert response.status_code == 400 and b"another function already deploys to this Lambda" in response.content


def test_secret_values_are_write_only_and_an_empty_value_keeps_them(client, cast, function):
    update_function(function, environment={"TOKEN": "s3cr3t-value", "MODE": "a"},
                    secret_keys=["TOKEN"], lambda_name="slipway-hello",
                    ecr_repository="slipway/hello")
    login(client, cast, "alice")
    page = client.get(reverse("portal-function-edit", args=["hello"])).content.decode()
    assert "s3cr3t-value" not in page and "TOKEN=" in page
    data = _form(name="hello", lambda_name="slipway-hello", ecr_repository="slipway/hello",
                 environment_text="MODE=b", secret_environment_text="TOKEN=")
    assert client.post(reverse("portal-function-edit", args=["hello"]), data).status_code == 302
    function.refresh_from_db()
    assert function.first_environment.variables == {"MODE": "b", "TOKEN": "s3cr3t-value"}
    assert "s3cr3t-value" not in str(list(AuditEvent.objects.values_list("detail", flat=True)))


def test_the_last_owner_cannot_leave_or_be_demoted(client, cast, function):
    login(client, cast, "alice")
    alice = cast["alice"].pk
    client.post(reverse("portal-member-remove", args=["hello", alice]))
    client.post(reverse("portal-member-role", args=["hello", alice]), {"role": "viewer"})
    assert Membership.objects.get(function=function, user=cast["alice"]).role == "owner"


def test_a_refused_member_change_comes_back_to_the_function_page_saying_why(client, cast, function):
    login(client, cast, "alice")
    page = reverse("portal-function", args=["hello"])
    removed = client.post(reverse("portal-member-remove", args=["hello", cast["alice"].pk]), follow=True)
    assert removed.redirect_chain == [(page, 302)] and "alice is the last owner of hello" in removed.content.decode()
    kept = client.post(reverse("portal-member-transfer", args=["hello", cast["alice"].pk]), follow=True)
    assert kept.redirect_chain == [(page, 302)] and "you already own it" in kept.content.decode()


def test_owners_add_members_by_email_and_transfer_ownership(client, cast, function):
    login(client, cast, "alice")
    client.post(reverse("portal-member-add", args=["hello"]), {"user": "dave@example.org", "role": "viewer"})
    assert Membership.objects.get(function=function, user=cast["dave"]).role == "viewer"
    client.post(reverse("portal-member-transfer", args=["hello", cast["bob"].pk]))
    roles = dict(Membership.objects.filter(function=function).values_list("user__username", "role"))
    assert (roles["bob"], roles["alice"]) == ("owner", "deployer")


@pytest.mark.parametrize("name, status", [("alice", 302), ("bob", 403), ("dave", 404)])
def test_archive_is_for_owners_and_an_archived_function_takes_no_deploys(client, cast, function, name, status):
    assert login(client, cast, name).post(reverse("portal-function-archive", args=["hello"])).status_code == status
    function.refresh_from_db()
    assert function.is_archived == (status == 302)
    if function.is_archived:
        client.force_login(cast["bob"])
        response = client.post(reverse("portal-function-deploy", args=["hello"]), {"ref": "main"})
        assert response.status_code == 400 and b"archived" in response.content


def test_the_deployment_page_polls_while_running_and_stops_when_done(client, cast, function):
    deployment = Deployment.objects.create(function=function, trigger="ui", status=Status.BUILDING)
    login(client, cast, "charlie")
    url = reverse("portal-deployment", args=[deployment.pk])
    assert b"hx-trigger=\"every 1s\"" in client.get(url).content
    fragment = client.get(url, HTTP_HX_REQUEST="true").content
    assert fragment.startswith(b"<div id=\"live-deployment\"") and b"<html" not in fragment
    deployment.finish(Status.FAILED, "build-failed", "docker build failed: boom")
    page = client.get(url).content
    assert b"hx-trigger" not in page and b"build-failed" in page


@pytest.mark.parametrize("name, status", [("bob", 302), ("charlie", 403), ("dave", 404)])
def test_cancel_needs_a_deployer(client, cast, function, name, status):
    deployment = Deployment.objects.create(function=function, trigger="ui")
    response = login(client, cast, name).post(reverse("portal-deployment-cancel", args=[deployment.pk]))
    assert response.status_code == status
    deployment.refresh_from_db()
    assert (deployment.status == Status.CANCELLED) == (status == 302)


def test_the_audit_log_shows_only_visible_functions(client, cast, function):
    other = create_function(name="secret", repository_url="https://x.example/s.git",
                            ecr_repository="slipway/s", lambda_name="slipway-s")
    AuditEvent.record("function.edited", function=function, actor=cast["alice"])
    AuditEvent.record("function.edited", function=other, actor_label="mallory")
    page = login(client, cast, "charlie").get(reverse("portal-audit")).content.decode()
    assert "hello" in page and "mallory" not in page


def test_the_admin_shows_a_function_but_edits_go_through_the_portal(admin_client, function):
    url = f"/admin/portal/function/{function.pk}/change/"
    assert admin_client.get(url).status_code == 200
    admin_client.post(url, {"repository_url": "ext::sh -c touch% /tmp/pwned", "name": function.name,
                            "memberships-TOTAL_FORMS": "0", "memberships-INITIAL_FORMS": "0"})
    function.refresh_from_db()
    assert function.repository_url != "ext::sh -c touch% /tmp/pwned"
    assert admin_client.get("/admin/portal/function/add/").status_code == 403
