"""A rollout on the pages: the environment's column (state, weight, stable and new version,
the controls for deployers), the deployment page (the timeline of weights, the inline SVG
chart) and the control forms. alice owns `hello`, bob deploys it, charlie views it, dave has no role."""

import pytest
from django.urls import reverse

from portal.models import Deployment, Environment, Rollout
from tests.rollout_fixtures import rolling_out

Status = Deployment.Status


@pytest.fixture(autouse=True)
def _no_broker(sent):
    return sent


def _get(client, user, url) -> str:
    client.force_login(user)
    response = client.get(url)
    assert response.status_code == 200
    return response.content.decode()


def _column(client, user, function) -> str:
    html = _get(client, user, reverse("portal-environments-state", args=[function.name]))
    start = html.index('data-rollout="production"')
    return html[start:html.index('<div class="ahead"', start) if '<div class="ahead"' in html[start:] else None]


def test_the_column_shows_the_weight_and_both_versions_with_the_controls_for_a_deployer(client, function, cast):
    deployment = rolling_out(function, weights=(0.1,))
    column = _column(client, cast["bob"], function)
    assert 'data-state="rolling_out"' in column and '<strong class="weight">10 %</strong>' in column
    assert '<strong class="new-version">2</strong>' in column and '<strong class="stable-version">1</strong>' in column
    assert "canary: 10 % for 5 min, then 100 %" in column and "step 1 of 2" in column
    for action in ("promote", "pause", "abort"):
        assert reverse(f"portal-rollout-{action}", args=[deployment.pk]) in column
    assert reverse("portal-rollout-resume", args=[deployment.pk]) not in column


def test_a_viewer_sees_the_rollout_but_no_controls(client, function, cast):
    rolling_out(function, weights=(0.1, 0.2), strategy="linear")
    column = _column(client, cast["charlie"], function)
    assert '<strong class="weight">20 %</strong>' in column and "rollout-controls" not in column


def test_a_paused_rollout_offers_resume(client, function, cast):
    deployment = rolling_out(function)
    client.force_login(cast["bob"])
    answer = client.post(reverse("portal-rollout-pause", args=[deployment.pk]), {"back": "function"})
    assert answer.status_code == 302 and answer["Location"] == "/functions/hello/#environments"
    assert Rollout.objects.get(deployment=deployment).paused_at is not None
    column = _column(client, cast["bob"], function)
    assert 'data-state="paused"' in column and reverse("portal-rollout-resume", args=[deployment.pk]) in column
    assert reverse("portal-rollout-pause", args=[deployment.pk]) not in column


def test_abort_from_the_deployment_page_and_a_refusal_once_it_is_not_rolling_out(client, function, cast):
    deployment = rolling_out(function)
    client.force_login(cast["bob"])
    url = reverse("portal-rollout-abort", args=[deployment.pk])
    answer = client.post(url, follow=True)
    assert answer.redirect_chain[-1][0] == f"/deployments/{deployment.pk}/"
    assert "Aborting: the alias goes back to version 1" in answer.content.decode()
    assert Deployment.objects.get(pk=deployment.pk).status == Status.ABORTING
    again = client.post(url, follow=True).content.decode()
    assert "is aborting, not rolling out" in again


@pytest.mark.parametrize("who, status", [("charlie", 403), ("dave", 404)])
def test_viewers_and_strangers_cannot_use_the_controls(client, function, cast, who, status):
    deployment = rolling_out(function)
    client.force_login(cast[who])
    assert client.post(reverse("portal-rollout-pause", args=[deployment.pk])).status_code == status
    assert Rollout.objects.get(deployment=deployment).paused_at is None


def test_the_deployment_page_draws_the_weight_over_time(client, function, cast):
    deployment = rolling_out(function, status=Status.SUCCEEDED, weights=(0.1, 0.2, 0.3, 1.0), strategy="linear",
                             percent=10, minutes=1)
    html = _get(client, cast["charlie"], reverse("portal-deployment", args=[deployment.pk]))
    svg = html[html.index("<svg"):html.index("</svg>")]
    assert 'role="img"' in svg and '<title id="weight-title">Rollout of version 2: weight over time</title>' in svg
    assert "0% → 10% → 20% → 30% → 100%" in svg  # the description says what the line shows
    points = svg.split('points="')[1].split('"')[0].split()
    assert len(points) == 10  # start, two points per change (held, then the new weight), the end
    ys = [float(p.split(",")[1]) for p in points]
    assert ys[0] > ys[-1] and ys == sorted(ys, reverse=True)  # only ever up: 0 % at the bottom to 100 % at the top
    steps = html[html.index('<table id="steps">'):]
    assert steps.count('class="rollout-event substep"') == 5 and 'data-action="shift"' in steps
    assert steps.index('data-step="shift"') < steps.index('class="rollout-event substep"')  # under the shift step
    assert "rollout-controls" not in html  # ended: nothing to control


def test_a_deployment_without_a_rollout_has_no_rollout_section(client, function, cast):
    plain = Deployment.objects.create(function=function, environment=function.first_environment, trigger="ui")
    html = _get(client, cast["alice"], reverse("portal-deployment", args=[plain.pk]))
    assert 'id="rollout"' not in html


def test_the_admin_shows_a_rollout_and_its_events_read_only(admin_client, function):
    deployment = rolling_out(function, weights=(0.1, 0.2), strategy="linear")
    item = deployment.rollout
    assert admin_client.get("/admin/portal/rollout/").status_code == 200
    page = admin_client.get(f"/admin/portal/rollout/{item.pk}/change/").content.decode()
    assert "shift" in page and 'name="weight"' not in page  # shown, not editable
    assert admin_client.get("/admin/portal/rollout/add/").status_code == 403


def test_an_aborted_rollouts_chart_comes_back_down_to_0_percent(client, function, cast):
    deployment = rolling_out(function, status=Status.FAILED, weights=(0.1, 0.0), abort_signal="alarm:slipway-hello-x")
    html = _get(client, cast["charlie"], reverse("portal-deployment", args=[deployment.pk]))
    assert "0% → 10% → 0%" in html and "Aborted by <code>alarm:slipway-hello-x</code>" in html
    ys = [float(p.split(",")[1]) for p in html.split('points="')[1].split('"')[0].split()]
    assert ys[0] == ys[-1] and min(ys) < ys[0]  # up to 10 %, back down to 0 %


def test_the_column_says_how_a_version_takes_the_alias_when_it_is_not_all_at_once(client, function, cast):
    html = _get(client, cast["charlie"], reverse("portal-environments-state", args=[function.name]))
    assert "rollout-plan" not in html  # all at once: nothing to say
    Environment.objects.filter(function=function).update(rollout_strategy="linear", rollout_percent=10,
                                                         rollout_minutes=3)
    html = _get(client, cast["charlie"], reverse("portal-environments-state", args=[function.name]))
    assert "Rollout: linear: +10 % every 3 min (27 min in all) (Linear10PercentEvery3Minutes)" in html
