"""The Previews page: the list, enabling previews and their policy (owners), Approve
preview, Redeploy and Remove (deployers), and Try in console: the preview's alias as a
target, compared with what is live."""

from __future__ import annotations

import pytest

from portal.models import AuditEvent, ConsoleRun, Deployment, Environment, Preview
from tests.conftest import released
from tests.gitlab_hooks import hook
from tests.previews import merge_request, mr_deliver, previews_on

FORK_SHA = "7a1c3e5b9d2f4a6c8e0b1d3f5a7c9e2b4d6f8a0c"


@pytest.fixture(autouse=True)
def _allowed(settings, sent):
    settings.SLIPWAY_ALLOWED_LAMBDA_PREFIXES = ["team-"]


def test_an_owner_enables_previews_on_the_page(client, cast, function):
    client.force_login(cast["alice"])
    page = client.get("/functions/hello/previews/")
    assert page.status_code == 200 and b"Previews are off" in page.content and b"Enable previews" in page.content
    response = client.post("/functions/hello/previews/", {"lambda_name": "", "url_auth": "AWS_IAM",
                                                           "target_branches": "main\nrelease"})
    assert response.status_code == 302
    environment = Environment.objects.get(function=function, preview=True)
    assert environment.lambda_name == "team-hello-preview"
    assert (environment.preview_policy.url_auth, environment.preview_policy.target_branches) == (
        "AWS_IAM", ["main", "release"])
    assert AuditEvent.objects.filter(action="previews.enabled", actor=cast["alice"]).exists()


def test_a_field_error_is_shown_on_the_page(client, cast, function):
    client.force_login(cast["alice"])
    response = client.post("/functions/hello/previews/", {"lambda_name": "team-" + "x" * 70})
    assert response.status_code == 400 and b"a Lambda name has at most 64" in response.content
    assert not Environment.objects.filter(preview=True).exists()


@pytest.mark.parametrize("who", ["bob", "charlie"])
def test_only_owners_change_the_policy(client, cast, function, who):
    client.force_login(cast[who])
    assert client.get("/functions/hello/previews/").status_code == 200  # anyone with a role sees the list
    assert client.post("/functions/hello/previews/", {"lambda_name": ""}).status_code == 403
    assert not Environment.objects.filter(preview=True).exists()


def test_the_list_shows_each_preview_and_a_deployer_approves_a_forks_head(client, cast, function):
    hook(function)
    previews_on(function, allow_forks=True)
    mr_deliver(client, merge_request())
    mr_deliver(client, merge_request("merge_request_fork.json"))
    client.force_login(cast["bob"])
    page = client.get("/functions/hello/previews/").content.decode()
    assert 'data-mr="12"' in page and 'data-mr="13"' in page and "outsider" in page
    assert "Approve preview of 7a1c3e5b9d2f" in page
    response = client.post("/functions/hello/previews/13/approve/", {"commit": FORK_SHA})
    assert response.status_code == 302
    assert Deployment.objects.filter(preview__mr_iid=13, commit_sha=FORK_SHA, requested_by=cast["bob"]).exists()
    stale = client.post("/functions/hello/previews/13/approve/", {"commit": "0" * 40}, follow=True)
    assert b"look at it again before approving" in stale.content


def test_a_viewer_cannot_approve_remove_or_redeploy(client, cast, function):
    hook(function)
    previews_on(function)
    mr_deliver(client, merge_request())
    client.force_login(cast["charlie"])
    for action in ("approve", "redeploy", "remove"):
        assert client.post(f"/functions/hello/previews/12/{action}/", {"commit": "a" * 40}).status_code == 403
    assert Preview.objects.get().state == "open"


def test_remove_then_redeploy_from_the_page(client, cast, function):
    hook(function)
    previews_on(function)
    mr_deliver(client, merge_request())
    client.force_login(cast["bob"])
    assert client.post("/functions/hello/previews/12/remove/").status_code == 302
    assert Preview.objects.get().state == "closed"
    assert b"Redeploy" in client.get("/functions/hello/previews/").content
    assert client.post("/functions/hello/previews/12/redeploy/").status_code == 302
    assert Preview.objects.get().state == "open"


def test_a_preview_deployments_page_names_its_merge_request_and_alias(client, cast, function):
    hook(function)
    previews_on(function)
    mr_deliver(client, merge_request())
    deployment = Deployment.objects.get(kind="preview")
    client.force_login(cast["bob"])
    page = client.get(f"/deployments/{deployment.pk}/").content.decode()
    head = page.split('id="deployment-environment"')[1].split("</p>")[0]
    assert "alias <code>mr-12</code>" in head and "<code>live</code>" not in head
    assert 'id="preview-of" href="/functions/hello/previews/">!12</a>' in head


def test_try_in_console_targets_the_preview_alias_compared_with_live(client, cast, function):
    environment = previews_on(function)
    released(function, "2", "b" * 40)  # what production's alias serves
    Preview.objects.create(function=function, environment=environment, mr_iid=7, title="Bigger boxes",
                           head_sha="c" * 40, version="3")
    client.force_login(cast["bob"])
    page = client.get("/functions/hello/previews/").content.decode()
    assert "/functions/hello/console/?environment=preview&amp;target=mr-7" in page
    console = client.get("/functions/hello/console/?environment=preview&target=mr-7")
    form = console.context["form"]
    assert [value for value, _ in form.fields["target"].choices] == ["mr-7", "production:live"]
    assert (form.initial["target"], form.initial["compare_with"]) == ("mr-7", "production:live")


def test_a_console_compare_invokes_the_preview_on_its_lambda_and_live_on_productions(client, cast, function,
                                                                                     monkeypatch):
    from portal.console import invoke

    environment = previews_on(function)
    released(function, "2", "b" * 40)
    Preview.objects.create(function=function, environment=environment, mr_iid=7, head_sha="c" * 40, version="3")
    called = []

    def fake(function, target, data, options, *, attempts=1, environment=None):
        called.append((environment.lambda_name, target))
        return invoke.Answer(target=target, outcome=ConsoleRun.Outcome.OK, result={"boxes": []}, request={},
                             via_s3=False, round_trip_ms=1.0)
    monkeypatch.setattr(invoke, "invoke_image", fake)
    client.force_login(cast["bob"])
    response = client.post("/functions/hello/console/?environment=preview",
                           {"target": "mr-7", "compare_with": "production:live", "sample": "astronaut",
                            "detector": "face"})
    assert response.status_code == 302, response.content[:500]
    assert called == [("team-hello-preview", "mr-7"), ("team-hello", "live")]
    first, second = ConsoleRun.objects.order_by("pk")
    assert (first.environment, second.environment.name, second.compared_with) == (environment, "production", first)


def test_the_delivery_log_links_the_preview_a_delivery_moved(client, cast, function):
    hook(function)
    previews_on(function)
    mr_deliver(client, merge_request())
    mr_deliver(client, merge_request("merge_request_close.json"))
    client.force_login(cast["alice"])
    page = client.get("/functions/hello/deliveries/").content.decode()
    assert page.count('href="/functions/hello/previews/#mr-12">preview !12</a>') == 2


def test_a_merge_request_delivery_is_not_replayed(client, cast, function):
    from portal.models import WebhookDelivery

    hook(function)
    previews_on(function)
    mr_deliver(client, merge_request())
    client.force_login(cast["alice"])
    delivery = WebhookDelivery.objects.get()
    page = client.post(f"/functions/hello/deliveries/{delivery.pk}/replay/", follow=True).content.decode()
    assert "Redeploy its preview on the Previews page" in page
    assert WebhookDelivery.objects.count() == 1 and Deployment.objects.count() == 1


def test_the_console_offers_the_preview_environment_last(client, cast, function):
    previews_on(function)
    client.force_login(cast["bob"])
    page = client.get("/functions/hello/console/").content.decode()
    assert '<option value="production" selected>' in page and '<option value="preview">' in page
    assert page.index('value="production"') < page.index('value="preview"')


def test_an_owner_opts_a_secret_in_for_previews_on_the_preview_environments_page(client, cast, function):
    environment = previews_on(function)
    client.force_login(cast["alice"])
    assert b'id="preview-environment-edit"' in client.get("/functions/hello/previews/").content
    url = "/functions/hello/environments/preview/edit/"
    page = client.get(url)
    assert page.status_code == 200 and page.context["form"].fields["execution_role_arn"].disabled
    response = client.post(url, {"lambda_name": environment.lambda_name, "memory_mb": 512, "timeout_s": 20,
                                 "environment_text": "MODE=preview", "secret_environment_text": "API_KEY=p",
                                 "execution_role_arn": "arn:aws:iam::000000000000:role/production",
                                 "position": 0})
    assert response.status_code == 302, response.content[:2000]
    environment.refresh_from_db()
    assert (environment.memory_mb, environment.variables, environment.secret_keys, environment.position) == (
        512, {"MODE": "preview", "API_KEY": "p"}, ["API_KEY"], 2000)
    assert environment.execution_role_arn.endswith("role/slipway-preview")  # never production's
