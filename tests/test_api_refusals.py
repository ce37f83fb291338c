"""The API's one handler of Slipway's error type: a refusal of the domain, a rate
limit, or an endpoint's own ApiError each answer with their own status, code and
headers, in the one body."""

from unittest import mock

import pytest
from django.utils import timezone

from portal.core import ratelimit
from portal.models import ApiToken, Function
from tests.api_client import Api, openapi


@pytest.fixture(autouse=True)
def _no_broker(sent):
    return sent


@pytest.fixture
def api(client, cast):
    api = Api(client, openapi(client))
    api.token = ApiToken.issue(cast["bob"], "bob's")[1]
    return api


def _error(response) -> tuple[int, str, str]:
    error = response.json()["error"]
    return response.status_code, error["code"], error["message"]


def test_a_deploy_the_domain_refuses_is_400_refused(api, function, settings):
    settings.SLIPWAY_API_DEPLOY_RATE = 0
    refused = api.call("post", "/functions/{name}/deployments", {"ref": "main", "commit": "a" * 40}, name="hello")
    assert _error(refused) == (400, "refused", "give a ref or a commit, not both")


def test_a_deploy_of_an_archived_function_is_409_refused(api, function, settings):
    settings.SLIPWAY_API_DEPLOY_RATE = 0
    Function.objects.filter(pk=function.pk).update(archived_at=timezone.now())
    refused = api.call("post", "/functions/{name}/deployments", {"ref": "main"}, name="hello")
    assert _error(refused) == (409, "refused", "hello is archived: it accepts no deploys")


def test_a_rollback_with_nothing_to_roll_back_to_is_409_refused(api, function):
    refused = api.call("post", "/functions/{name}/rollback", {}, name="hello")
    assert _error(refused) == (409, "refused", "hello has no successful deployment to roll back from")


def test_a_deploy_over_the_rate_is_429_with_retry_after(api, function, settings):
    settings.SLIPWAY_API_DEPLOY_RATE, settings.SLIPWAY_API_DEPLOY_WINDOW = 30, 60
    redis = mock.Mock()
    redis.pipeline.return_value.execute.return_value = [31, True, 42]  # the 31st in the window, 42 s left
    with mock.patch.object(ratelimit, "_redis", autospec=True, return_value=redis):
        limited = api.call("post", "/functions/{name}/deployments", {"ref": "main"}, name="hello")
    assert _error(limited) == (429, "rate-limited", "at most 30 deploys per 60 s; retry after 42 s")
    assert limited["Retry-After"] == "42"
