"""The freeze windows API: each endpoint as each member and as staff, its refusals with
status and code, and what it leaves stored. Every answer is validated against the OpenAPI
document (tests/api_client.py)."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from portal.models import ApiToken, AuditEvent, FreezeWindow
from tests.api_client import Api, openapi

ENV = "/functions/{name}/environments/{env}/freezes"
ONE = ENV + "/{window_id}"
WEEKEND = {"reason": "weekend", "start_cron": "0 17 * * 5", "end_cron": "0 8 * * 1", "timezone": "Europe/Berlin"}


@pytest.fixture
def tokens(cast):
    erin = get_user_model().objects.create_user("erin", "erin@example.org", "password-erin", is_staff=True)
    return {name: ApiToken.issue(user, f"{name}'s")[1] for name, user in {**cast, "erin": erin}.items()}


@pytest.fixture
def api(client, tokens):
    return Api(client, openapi(client), tokens["alice"])


def _delete(client, token: str, path: str):
    return client.delete("/api/v1" + path, HTTP_AUTHORIZATION=f"Bearer {token}")


def _code(response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


def test_the_owner_adds_reads_edits_and_deletes_a_window(api, client, tokens, function):
    where = {"name": "hello", "env": "production"}
    created = api.call("post", ENV, WEEKEND, **where)
    assert created.status_code == 201
    body = created.json()
    assert (body["environment"], body["timezone"], body["created_by"]) == ("production", "Europe/Berlin", "alice")
    listed = api.call("get", ENV, **where).json()
    assert [item["id"] for item in listed["items"]] == [body["id"]]
    edited = api.call("patch", ONE, {"end_cron": "0 6 * * 1"}, window_id=body["id"], **where).json()
    assert (edited["start_cron"], edited["end_cron"]) == ("0 17 * * 5", "0 6 * * 1")
    assert _delete(client, tokens["alice"], f"/functions/hello/environments/production/freezes/{body['id']}"
                   ).status_code == 204
    assert not FreezeWindow.objects.exists()
    assert list(AuditEvent.objects.filter(action__startswith="freeze.").order_by("pk").values_list(
        "action", flat=True)) == ["freeze.created", "freeze.edited", "freeze.deleted"]


def test_a_one_off_window_shows_whether_it_holds_now(api, function):
    now = timezone.now()
    body = {"reason": "launch", "starts_at": (now - timedelta(hours=1)).isoformat(),
            "ends_at": (now + timedelta(hours=1)).isoformat()}
    created = api.call("post", ENV, body, name="hello", env="production").json()
    assert created["active"] is True and created["start_cron"] == ""


@pytest.mark.parametrize("body, field", [
    ({**WEEKEND, "start_cron": "0 25 * * *"}, "start_cron"),
    ({**WEEKEND, "timezone": "Mars/Olympus"}, "timezone"),
    ({"reason": "x", "starts_at": "2026-12-24T00:00:00Z", "ends_at": "2026-12-23T00:00:00Z"}, "ends_at"),
    ({"reason": "x", "start_cron": "0 1 * * *"}, "end_cron"),
    ({**WEEKEND, "reason": " "}, "reason"),
    ({**WEEKEND, "starts_at": "2026-12-24T00:00:00Z", "ends_at": "2026-12-25T00:00:00Z"}, "__all__"),
])
def test_an_invalid_window_is_400_naming_the_field(api, function, body, field):
    response = api.call("post", ENV, body, name="hello", env="production")
    assert _code(response) == (400, "invalid") and field in response.json()["error"]["fields"]
    assert not FreezeWindow.objects.exists()


@pytest.mark.parametrize("who, status", [("bob", 403), ("charlie", 403), ("dave", 404)])
def test_only_owners_write_an_environments_windows(api, tokens, function, who, status):
    window = FreezeWindow.objects.create(environment=function.first_environment, reason="launch",
                                         start_cron="0 1 * * *", end_cron="0 2 * * *")
    where = {"name": "hello", "env": "production", "token": tokens[who]}
    assert api.call("post", ENV, WEEKEND, **where).status_code == status
    assert api.call("patch", ONE, {"reason": "x"}, window_id=window.pk, **where).status_code == status
    assert api.call("delete", ONE, window_id=window.pk, **where).status_code == status
    assert api.call("get", ENV, **where).status_code == (200 if who != "dave" else 404)
    assert FreezeWindow.objects.get().reason == "launch"


def test_global_windows_are_written_by_staff_and_read_by_anyone(api, client, tokens, function):
    for who in ("alice", "bob", "dave"):
        response = api.call("post", "/freezes", WEEKEND, token=tokens[who])
        assert _code(response) == (403, "forbidden"), who
    created = api.call("post", "/freezes", WEEKEND, token=tokens["erin"])
    assert created.status_code == 201 and created.json()["environment"] is None
    window_id = created.json()["id"]
    assert api.call("get", "/freezes", token=tokens["dave"]).json()["count"] == 1
    assert api.call("patch", "/freezes/{window_id}", {"reason": "x"}, window_id=window_id,
                    token=tokens["alice"]).status_code == 403
    assert api.call("delete", "/freezes/{window_id}", window_id=window_id, token=tokens["alice"]).status_code == 403
    assert _delete(client, tokens["erin"], f"/freezes/{window_id}").status_code == 204
    assert not FreezeWindow.objects.exists()


def test_an_environments_window_is_not_reachable_as_a_global_one(api, tokens, function):
    window = FreezeWindow.objects.create(environment=function.first_environment, reason="launch",
                                         start_cron="0 1 * * *", end_cron="0 2 * * *")
    response = api.call("get", "/freezes/{window_id}", window_id=window.pk, token=tokens["erin"])
    assert _code(response) == (404, "not-found")


def test_a_deploy_only_token_cannot_write_windows(api, cast, function):
    token = ApiToken.issue(cast["alice"], "ci", deploy_only=True)[1]
    response = api.call("post", ENV, WEEKEND, name="hello", env="production", token=token)
    assert _code(response) == (403, "token-scope")
    assert not FreezeWindow.objects.exists()


def test_there_is_no_override_endpoint(client):
    paths = openapi(client)["paths"]
    assert any("freezes" in path for path in paths)
    assert not [path for path in paths if "override" in path]
