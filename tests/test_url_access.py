"""Walk the URLconf and request every URL, with real objects, as an anonymous
visitor and as dave (no role on `hello`): nothing may answer with content it
should not. Open URLs are listed with the reason they are open."""

import re
from unittest import mock

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from portal.models import (
    Build,
    ConsoleImage,
    ConsoleRun,
    Deployment,
    Environment,
    FreezeWindow,
    GoldenCase,
    Preview,
    PreviewPolicy,
    WebhookDelivery,
)
from tests.rollout_fixtures import rolling_out

OPEN = {
    "portal-home": "only redirects to the functions list, which asks to sign in",
    "portal-login": "the sign-in page",
    "portal-healthz": "load balancers poll it; it names no function and carries no secret",
    "openapi-json": "the API's schema: it names no function and no secret",
    "openapi-view": "the browsable rendering of that schema",
    "api-root": "answers 404: nothing is there",
    "portal-metrics": "Prometheus scrapes it without a session: guarded by its own token or network list "
                      "(tests/test_metrics.py)",
    "portal-webhook-gitlab": "GitLab cannot sign in: each delivery carries the function's secret token or "
                             "signature instead, and without one it gets the same 401 whether the function "
                             "exists or not",
}
SIGNED_IN_PAGES = {  # pages of their own that any signed-in user sees (they list only what they may see)
    "portal-functions", "portal-function-register", "portal-audit", "portal-health", "portal-logout",
    "portal-tokens", "list_functions", "create_function",
    "list_approvals",  # the held deployments the user could approve: none of a function they have no role on
    "portal-console-sample",  # scikit-image's bundled sample photos: no function's data
    "list_global_freezes", "get_global_freeze",  # global freeze windows: they hold every signed-in user's deploys
}
STAFF_ONLY = {  # 403 to any signed-in user who is not staff (they name no function)
    "portal-global-freezes", "portal-global-freeze-delete",
    "create_global_freeze", "edit_global_freeze", "delete_global_freeze",
}


def patterns(resolver=None, prefix=""):
    for entry in (resolver or get_resolver()).url_patterns:
        if isinstance(entry, URLResolver):
            if str(entry.pattern).startswith("admin/"):
                continue  # Django's admin: staff only, its own login
            yield from patterns(entry, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            yield entry.name, prefix + str(entry.pattern)


@pytest.fixture
def urls(function, cast):
    build = Build.objects.create(function=function, commit_sha="a" * 40, architecture="arm64", inputs_digest="x",
                                 status=Build.Status.SUCCEEDED, digest="sha256:" + "a" * 64)
    deployment = Deployment.objects.create(function=function, trigger="cli", status="succeeded", version="1",
                                           build=build, commit_sha="a" * 40)
    delivery = WebhookDelivery.objects.create(function=function, event_type="Push Hook", outcome="ignored",
                                              body="{}", detail="a push to another branch")
    image = ConsoleImage.objects.create(function=function, sha256="e" * 64, data=b"\x89PNG", format="png", width=1,
                                        height=1, size_bytes=4, name="hello.png")
    run = ConsoleRun.objects.create(function=function, image=image, target="live", outcome="ok",
                                    result={"boxes": []}, box_count=0, round_trip_ms=1)
    case = GoldenCase.objects.create(function=function, name="hello", image=image)
    window = FreezeWindow.objects.create(environment=function.first_environment, reason="quiet",
                                         start_cron="0 1 * * *", end_cron="0 2 * * *")
    global_window = FreezeWindow.objects.create(reason="year end", start_cron="0 0 20 12 *", end_cron="0 0 4 1 *")
    preview_env = Environment.objects.create(function=function, name="preview", position=2000, preview=True,
                                             lambda_name="team-hello-preview")
    PreviewPolicy.objects.create(environment=preview_env)
    Preview.objects.create(function=function, environment=preview_env, mr_iid=12, head_sha="f" * 40, fork=True)
    values = {"name": function.name, "pk": str(deployment.pk), "deployment_id": str(deployment.pk),
              "user_id": str(cast["alice"].pk), "delivery_id": str(delivery.pk), "sample": "astronaut",
              "env": function.first_environment.name, "window_id": str(window.pk), "iid": "12"}
    found = {}
    for name, pattern in patterns():
        path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: values[m.group(1)], pattern)
        found[name] = "/" + path
    # The console's own objects, by their real ids (a deployment's id would 404 for anyone).
    for name, pk in (("portal-console-run", run.pk), ("portal-console-image", image.pk),
                     ("portal-golden-save", run.pk), ("portal-golden", case.pk), ("portal-golden-delete", case.pk)):
        found[name] = re.sub(r"/\d+/", f"/{pk}/", found[name])
    # Freeze windows by their real ids: the environment's, or the global one under /freezes.
    found["portal-freeze-delete"] = f"/functions/hello/environments/production/freezes/{window.pk}/delete/"
    for name in ("portal-global-freeze-delete", "get_global_freeze", "edit_global_freeze", "delete_global_freeze"):
        found[name] = re.sub(r"/\d+(/|$)", rf"/{global_window.pk}\1", found[name])
    assert len(found) >= 15, found
    found["_deployment"] = str(deployment.pk)
    return found


@pytest.fixture(autouse=True)
def no_outside_calls():
    """The broker and the health probes are not what is checked here."""
    with mock.patch("portal.core.sending.app.send_task", autospec=True), \
            mock.patch("portal.core.health.run_all", autospec=True, return_value=[]):
        yield


@pytest.mark.parametrize("method", ["get", "post"])
def test_an_anonymous_visitor_is_sent_to_sign_in_everywhere_but_the_open_urls(client, urls, method):
    checked = 0
    for name, url in urls.items():
        if name in OPEN or name.startswith("_"):
            continue
        response = getattr(client, method)(url)
        if url.startswith("/api/"):  # the API answers 401, it does not redirect
            assert response.status_code in (401, 405), f"{method} {url} answered {response.status_code}"
            checked += 1
            continue
        assert response.status_code in (302, 405), f"{method} {url} answered {response.status_code}"
        if response.status_code == 302:
            assert response["Location"].startswith("/login/"), f"{url} redirects to {response['Location']}"
        checked += 1
    assert checked >= 15


@pytest.mark.parametrize("method", ["get", "post"])
def test_a_user_without_a_role_learns_nothing_about_the_function(client, cast, urls, method):
    client.force_login(cast["dave"])
    checked = 0
    for name, url in urls.items():
        if name in OPEN or name == "portal-logout" or name.startswith("_"):
            continue
        response = getattr(client, method)(url)
        if url.startswith("/api/") and name not in SIGNED_IN_PAGES | STAFF_ONLY:
            # The API may refuse a bad body before it looks the function up: the answer about
            # `hello` must then be the answer about a function that does not exist.
            stranger = getattr(client, method)(url.replace("/hello", "/no-such-function").replace(
                f"/{urls['_deployment']}", "/999999"))
            assert (response.status_code, response.content) == (stranger.status_code, stranger.content), url
            assert response.status_code in (400, 404, 405), f"{method} {url} answered {response.status_code}"
        elif name in STAFF_ONLY:
            # An API write's URL also reads the global windows (GET), which any signed-in user may.
            reads = (200,) if url.startswith("/api/") and method == "get" else ()
            assert response.status_code in (400, 403, 405, *reads), f"{method} {url}: {response.status_code}"
            assert b"hello" not in response.content, f"{method} {url} mentions the function"
        elif name in SIGNED_IN_PAGES:
            assert response.status_code in (200, 302, 400, 405), f"{method} {url}: {response.status_code}"
            assert b"hello" not in response.content, f"{method} {url} mentions the function"
        else:
            assert response.status_code in (404, 405), f"{method} {url} answered {response.status_code}"
        checked += 1
    assert checked >= 15
    assert Deployment.objects.count() == 1  # nothing was queued by any of it
    assert GoldenCase.objects.count() == 1 and ConsoleRun.objects.count() == 1  # nor saved or deleted
    assert FreezeWindow.objects.count() == 2  # nor a freeze window added or deleted


def test_every_open_url_exists(urls):
    assert set(OPEN) <= set(urls)


def test_the_feedback_and_drift_urls_are_walked(urls):
    """They need a role like every function URL (the two walks above); this keeps them in the walk."""
    walked = {"portal-feedback", "portal-feedback-webhook-secret", "portal-drift-check", "portal-drift-accept",
              "get_feedback", "edit_feedback", "get_drift", "check_drift", "accept_drift"}
    assert walked <= set(urls), walked - set(urls)


def test_the_environment_urls_are_walked(urls):
    """The pages and API endpoints that manage environments and promote need a role like
    every function URL (the two walks above); this keeps them in the walk."""
    walked = {"portal-environment-new", "portal-environment-edit", "portal-environment-delete",
              "list_environments", "create_environment", "get_environment", "edit_environment",
              "delete_environment", "promote"}
    assert walked <= set(urls), walked - set(urls)
    assert urls["portal-environment-edit"] == "/functions/hello/environments/production/edit/"


@pytest.mark.parametrize("user, status", [("bob", 403), ("charlie", 403), ("dave", 404)])
def test_only_an_owner_reaches_the_environment_pages(client, cast, urls, user, status):
    from portal.models import Environment

    client.force_login(cast[user])
    for name in ("portal-environment-new", "portal-environment-edit", "portal-environment-delete"):
        assert client.get(urls[name]).status_code == status, name
        assert client.post(urls[name], {"name": "qa", "lambda_name": "slipway-qa"}).status_code == status, name
    assert list(Environment.objects.in_order().values_list("name", flat=True)) == ["production"]


# approvals: the role matrix of the approve and reject URLs (the freeze and override URLs have their own)
DECISION_URLS = ("portal-deployment-approve", "portal-deployment-reject")


@pytest.fixture
def held_urls(function, cast, urls):
    """The decision URLs of a promotion held for approval; erin approves on `hello`, root is staff."""
    from django.contrib.auth import get_user_model

    from portal.models import Membership

    cast["erin"] = get_user_model().objects.create_user("erin", "erin@example.org", "password-erin")
    cast["root"] = get_user_model().objects.create_user("root", "root@example.org", "password-root", is_staff=True)
    Membership.objects.create(function=function, user=cast["erin"], role="approver")
    held = Deployment.objects.create(function=function, trigger="ui", kind="promotion", status="awaiting_approval",
                                     digest="sha256:" + "a" * 64, approvals_required=1)
    return {name: urls[name].replace(f"/{urls['_deployment']}/", f"/{held.pk}/") for name in DECISION_URLS}, held


@pytest.mark.parametrize("user, status", [("bob", 403), ("charlie", 403), ("dave", 404)])
def test_the_decision_urls_refuse_deployers_viewers_and_users_without_a_role(client, cast, held_urls, user, status):
    found, held = held_urls
    client.force_login(cast[user])
    for name in DECISION_URLS:
        assert client.post(found[name]).status_code == status, name
    held.refresh_from_db()
    assert held.status == "awaiting_approval" and not held.approvals.exists()


@pytest.mark.parametrize("user", ["erin", "alice", "root"])
def test_the_decision_urls_refuse_a_token_even_an_approvers(client, cast, held_urls, user):
    from portal.models import ApiToken

    found, held = held_urls
    _, raw = ApiToken.issue(cast[user], "ci")
    for name in DECISION_URLS:
        assert client.post(found[name], HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 403, name
    assert not held.approvals.exists()


@pytest.mark.parametrize("user", ["erin", "alice", "root"])
def test_the_decision_urls_work_for_approvers_owners_and_staff(client, cast, held_urls, user):
    found, held = held_urls
    client.force_login(cast[user])
    assert client.post(found["portal-deployment-approve"]).status_code == 302
    assert held.approvals.get().user == cast[user]
    assert client.post(found["portal-deployment-reject"]).status_code == 302  # already decided: shown, not done
    assert held.approvals.count() == 1
# /approvals


# --- The role matrix of the freeze and override URLs (issue 31) ------------------------------

FREEZE_PAGES = ("portal-freezes", "portal-freeze-delete", "portal-global-freezes", "portal-global-freeze-delete",
                "portal-deployment-override")


def test_the_freeze_urls_are_walked(urls):
    walked = {*FREEZE_PAGES, "list_freezes", "create_freeze", "get_freeze", "edit_freeze", "delete_freeze",
              *STAFF_ONLY, "list_global_freezes", "get_global_freeze"}
    assert walked <= set(urls), walked - set(urls)
    assert not [name for name in urls if "override" in name and name.startswith(("api", "list", "create"))]


@pytest.fixture
def staff(db):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user("erin", "erin@example.org", "password-erin", is_staff=True)


@pytest.fixture
def held(function, urls):
    """The walk's deployment, frozen by a window of production active now."""
    from datetime import timedelta

    from django.utils import timezone

    now = timezone.now()
    FreezeWindow.objects.create(environment=function.first_environment, reason="launch",
                                starts_at=now - timedelta(hours=1), ends_at=now + timedelta(hours=1))
    Deployment.objects.filter(pk=urls["_deployment"]).update(status=Deployment.Status.FROZEN)
    return Deployment.objects.get(pk=urls["_deployment"])


def _token(user) -> str:
    from portal.models import ApiToken

    return ApiToken.issue(user, "matrix")[1]


@pytest.mark.parametrize("who", ["charlie", "bob", "token"])
def test_viewers_deployers_and_tokens_get_403_on_the_freeze_and_override_pages(client, cast, urls, held, who):
    """The token is the owner's: a form that acts for a person never acts for a script."""
    headers = {}
    if who == "token":
        headers = {"HTTP_AUTHORIZATION": f"Bearer {_token(cast['alice'])}"}
    else:
        client.force_login(cast[who])
    for name in FREEZE_PAGES:
        response = client.post(urls[name], {"reason": "x", "start_cron": "0 1 * * *", "end_cron": "0 2 * * *"},
                               **headers)
        assert response.status_code == 403, (who, name, response.status_code)
        if name != "portal-deployment-override" and not name.endswith("delete"):
            assert client.get(urls[name], **headers).status_code == 403, (who, name)
    held.refresh_from_db()
    assert (held.status, held.override_reason) == (Deployment.Status.FROZEN, "")
    assert FreezeWindow.objects.count() == 3


@pytest.mark.parametrize("who", ["charlie", "bob"])
def test_viewers_and_deployers_tokens_get_403_on_the_freeze_api_writes(client, cast, urls, who):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {_token(cast[who])}", "content_type": "application/json"}
    body = '{"reason": "x", "start_cron": "0 1 * * *", "end_cron": "0 2 * * *"}'
    for name, method in (("create_freeze", "post"), ("edit_freeze", "patch"), ("delete_freeze", "delete"),
                         ("create_global_freeze", "post"), ("edit_global_freeze", "patch"),
                         ("delete_global_freeze", "delete")):
        response = getattr(client, method)(urls[name], body, **headers)
        assert response.status_code == 403, (who, name, response.status_code)
    assert FreezeWindow.objects.count() == 2


def test_only_staff_write_global_windows_through_the_api(client, cast, staff, urls):
    body = '{"reason": "x", "start_cron": "0 1 * * *", "end_cron": "0 2 * * *"}'
    owner = {"HTTP_AUTHORIZATION": f"Bearer {_token(cast['alice'])}", "content_type": "application/json"}
    assert client.post(urls["create_global_freeze"], body, **owner).status_code == 403
    assert client.post(urls["create_freeze"], body, **owner).status_code == 201  # her environment's: hers
    erin = {"HTTP_AUTHORIZATION": f"Bearer {_token(staff)}", "content_type": "application/json"}
    assert client.post(urls["create_global_freeze"], body, **erin).status_code == 201
    assert FreezeWindow.objects.filter(environment__isnull=True).count() == 2


def test_only_staff_override_a_global_freeze(client, cast, staff, urls, held):
    from datetime import timedelta

    from django.utils import timezone

    now = timezone.now()
    FreezeWindow.objects.create(reason="year end", starts_at=now - timedelta(hours=1), ends_at=now + timedelta(hours=1))
    client.force_login(cast["alice"])
    assert client.post(urls["portal-deployment-override"], {"reason": "hotfix"}).status_code == 403
    assert Deployment.objects.get(pk=held.pk).status == Deployment.Status.FROZEN
    client.force_login(staff)
    assert client.post(urls["portal-deployment-override"], {"reason": "hotfix"}).status_code == 302
    held.refresh_from_db()
    assert held.status == Deployment.Status.QUEUED and held.overridden_by == staff


# rollouts: the manual control of a rollout, on the pages and in the API
ROLLOUT_CONTROLS = ("promote", "pause", "resume", "abort")


def test_the_rollout_urls_are_walked(urls):
    walked = {f"portal-rollout-{action}" for action in ROLLOUT_CONTROLS} | {
        f"rollout_{action}" for action in ROLLOUT_CONTROLS}
    assert walked <= set(urls), walked - set(urls)
    assert urls["portal-rollout-abort"] == f"/deployments/{urls['_deployment']}/rollout/abort/"


@pytest.mark.parametrize("user, status", [("charlie", 403), ("dave", 404)])
def test_viewers_and_users_without_a_role_cannot_control_a_rollout(client, cast, function, user, status):
    deployment = rolling_out(function)
    client.force_login(cast[user])
    for action in ROLLOUT_CONTROLS:
        assert client.post(f"/deployments/{deployment.pk}/rollout/{action}/").status_code == status, action
        assert client.post(f"/api/v1/deployments/{deployment.pk}/rollout/{action}").status_code == status, action
    assert Deployment.objects.get(pk=deployment.pk).status == Deployment.Status.ROLLING_OUT
    assert deployment.rollout.events.count() == 2  # start and shift: nothing added


@pytest.mark.parametrize("user", ["alice", "bob"])
def test_owners_and_deployers_control_a_rollout(client, cast, function, user):
    deployment = rolling_out(function)
    client.force_login(cast[user])
    assert client.post(f"/deployments/{deployment.pk}/rollout/pause/").status_code == 302
    assert client.post(f"/api/v1/deployments/{deployment.pk}/rollout/resume").status_code == 200
    assert list(deployment.rollout.events.values_list("action", flat=True))[-2:] == ["pause", "resume"]
