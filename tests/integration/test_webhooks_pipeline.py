"""GitLab deliveries end to end on the real local stack: the receiver (Django's
test client, in this process), a Celery worker process, git, BuildKit and the
local AWS plane. An amd64 fixture function (a one-file handler on the local
base image), not the detector: the webhook path is the same and it builds in
seconds without QEMU."""

import random

import pytest

from portal.deployments.requesting import request_deploy
from portal.models import Deployment, WebhookDelivery
from tests.conftest import wait_for
from tests.gitlab_hooks import deliver, hook, push
from tests.integration.conftest import invoke_live, wait_done

pytestmark = pytest.mark.integration
Status = Deployment.Status
ZERO = "0" * 40


def delivered(client, function, sha: str, before: str = ZERO) -> Deployment:
    response = deliver(client, function.name, push(sha, before=before))
    assert response.status_code == 200 and response.json()["outcome"] == "accepted", response.content
    return Deployment.objects.get(pk=response.json()["deployment"])


def test_a_push_for_a_new_commit_makes_it_live(worker, fixture_function, repo, client):
    hook(fixture_function)
    first = repo.release("one")
    assert wait_done(request_deploy(fixture_function, trigger="cli")).status == Status.SUCCEEDED
    second = repo.release("two")

    deployment = wait_done(delivered(client, fixture_function, second, before=first))

    assert (deployment.status, deployment.error_message) == (Status.SUCCEEDED, "")
    assert (deployment.trigger, deployment.commit_sha, deployment.version) == ("webhook", second, "2")
    assert invoke_live(fixture_function)["release"] == "two"
    assert WebhookDelivery.objects.get(deployment=deployment).outcome == "accepted"


def test_an_older_commit_delivered_after_a_newer_one_is_skipped_as_stale(worker, fixture_function, repo, client):
    hook(fixture_function)
    older, newer = repo.release("one"), repo.release("two")
    assert wait_done(delivered(client, fixture_function, newer, before=older)).status == Status.SUCCEEDED

    late = wait_done(delivered(client, fixture_function, older))

    assert (late.status, late.error_code) == (Status.SUPERSEDED, "stale")
    assert f"{older[:12]} is older than {newer[:12]}" in late.error_message
    assert [step.name for step in late.steps.all()] == ["source"]  # nothing built, nothing touched
    delivery = WebhookDelivery.objects.get(deployment=late)
    assert delivery.outcome == "stale" and "is older than" in delivery.detail
    assert invoke_live(fixture_function)["release"] == "two"
    # An explicit deploy may go back.
    back = wait_done(request_deploy(fixture_function, trigger="ui", commit=older))
    assert back.status == Status.SUCCEEDED and invoke_live(fixture_function)["release"] == "one"


def test_a_burst_of_twenty_pushes_in_any_order_leaves_the_newest_commit_live(worker, fixture_function, repo,
                                                                              client):
    hook(fixture_function)
    commits = [repo.release(f"r{n}") for n in range(1, 21)]
    order = list(range(20))
    random.Random(20).shuffle(order)
    assert order[-1] != 19  # the newest push is not the last delivery
    requested = [delivered(client, fixture_function, commits[i], before=commits[i - 1] if i else ZERO)
                 for i in order]

    def all_ended():
        return not Deployment.objects.filter(pk__in=[d.pk for d in requested]).exclude(
            status__in=Deployment.TERMINAL).exists()
    wait_for(all_ended, 600, "the twenty webhook deployments to end", interval=1)

    rows = Deployment.objects.filter(pk__in=[d.pk for d in requested])
    assert invoke_live(fixture_function)["release"] == "r20"
    assert rows.get(commit_sha=commits[19]).status == Status.SUCCEEDED
    assert not rows.filter(status=Status.FAILED).exists(), list(rows.values_list("error_message", flat=True))
    skipped = rows.filter(status=Status.SUPERSEDED, error_code="stale").count()
    built = rows.filter(status=Status.SUCCEEDED).count()
    assert skipped >= 10 and skipped + built == 20  # most were skipped, none waited for a build in vain
    assert WebhookDelivery.objects.filter(outcome="stale").count() == skipped
