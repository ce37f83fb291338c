"""The console during a rollout: the alias serves two versions (and the local plane ignores the
weights), so the console sends to the canary and the stable version side by side, each named by
its share. deploy.aws.client is the one seam patched, as in test_console."""

import re

from django.urls import reverse

from portal.models import ConsoleRun
from tests.conftest import released
from tests.rollout_fixtures import rolling_out
from tests.test_console import FACE, answer, detected, upload
from tests.test_console import astronaut as astronaut  # noqa: F401 - fixtures, by name
from tests.test_console import aws_clients as aws_clients  # noqa: F401


def _page(client, user) -> str:
    client.force_login(user)
    response = client.get(reverse("portal-console", args=["hello"]))
    assert response.status_code == 200
    return response.content.decode()


def _selected(html: str, field: str) -> str:
    select = re.search(rf'<select name="{field}"[^>]*>(.*?)</select>', html, re.S).group(1)
    return re.search(r'<option value="([^"]*)" selected>', select).group(1)


def test_during_a_rollout_the_console_preselects_the_canary_and_the_stable_version(client, cast, function):
    released(function, "1", "a" * 40)
    rolling_out(function, weights=(0.1, 0.2), strategy="linear")
    html = _page(client, cast["bob"])
    assert (_selected(html, "target"), _selected(html, "compare_with")) == ("2", "1")
    assert 'value="2" selected>version 2 (canary, 20 %)</option>' in html
    assert "version 1 (stable, 80 %)" in html
    assert 'id="console-rollout"' in html and "takes 20 %" in html


def test_without_a_rollout_the_console_targets_the_alias(client, cast, function):
    released(function, "1", "a" * 40)
    html = _page(client, cast["bob"])
    assert _selected(html, "target") == "live" and 'id="console-rollout"' not in html and "canary" not in html


def test_a_side_by_side_run_invokes_both_versions_qualified(client, cast, function, aws_clients, astronaut):
    released(function, "1", "a" * 40)
    rolling_out(function)
    answer(aws_clients, detected(FACE))
    client.force_login(cast["bob"])
    response = client.post(reverse("portal-console", args=["hello"]), {
        "target": "2", "compare_with": "1", "detector": "face", "image": upload(astronaut)})
    assert response.status_code == 302
    calls = aws_clients["lambda"].invoke.call_args_list
    assert sorted(c.kwargs["Qualifier"] for c in calls) == ["1", "2"]
    assert sorted(ConsoleRun.objects.values_list("target", flat=True)) == ["1", "2"]
