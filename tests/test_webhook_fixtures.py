"""One test per GitLab payload in tests/fixtures/gitlab/: what each delivery caused.
Celery's send_task is the one seam patched."""


import pytest

from portal.models import Deployment, WebhookDelivery
from tests.gitlab_hooks import deliver, hook, payload

Outcome = WebhookDelivery.Outcome


@pytest.fixture(autouse=True)
def _no_broker(sent):
    return sent


@pytest.fixture
def hooked(function):
    function.tag_pattern = "v1.*"
    function.save(update_fields=["tag_pattern"])
    return hook(function)


def post(client, name, event="Push Hook"):
    response = deliver(client, "hello", payload(name), event=event)
    assert response.status_code == 200, response.content
    return response.json(), WebhookDelivery.objects.get()


def test_a_push_to_the_deploy_branch_deploys_its_checkout_sha(client, hooked, sent,
                                                               django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        answer, delivery = post(client, "push.json")
    deployment = Deployment.objects.get()
    assert (answer["outcome"], answer["deployment"]) == ("accepted", deployment.pk)
    assert (deployment.commit_sha, deployment.ref, deployment.trigger) == (
        "c3e8a1f0b2d4968778695a4b3c2d1e0f9a8b7c6d", "main", "webhook")
    assert delivery.deployment == deployment and delivery.outcome == Outcome.ACCEPTED
    assert sent.call_args.kwargs["args"] == [deployment.pk]  # enqueued after commit, by primary key


def test_creating_the_deploy_branch_deploys_its_head(client, hooked):
    answer, delivery = post(client, "branch_create.json")
    assert answer["outcome"] == "accepted"
    assert Deployment.objects.get().commit_sha == "4d7e9a1b3c5f7e9d1a3b5c7e9f1a3c5e7b9d1f3a"


def test_deleting_the_deploy_branch_is_ignored(client, hooked):
    answer, delivery = post(client, "branch_delete.json")
    assert (answer["outcome"], delivery.detail) == ("ignored", "branch main was deleted")
    assert not Deployment.objects.exists()


def test_a_force_push_deploys_the_new_head(client, hooked):
    answer, delivery = post(client, "force_push.json")
    assert answer["outcome"] == "accepted"
    assert Deployment.objects.get().commit_sha == "e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4"


def test_a_lightweight_tag_matching_the_pattern_deploys_its_commit(client, hooked):
    answer, delivery = post(client, "tag_push_lightweight.json", event="Tag Push Hook")
    deployment = Deployment.objects.get()
    assert answer["outcome"] == "accepted" and delivery.detail.startswith("tag v1.4.0")
    assert (deployment.commit_sha, deployment.ref) == ("c3e8a1f0b2d4968778695a4b3c2d1e0f9a8b7c6d", "v1.4.0")


def test_an_annotated_tag_deploys_the_commit_not_the_tag_object(client, hooked):
    body = payload("tag_push_annotated.json")
    assert body["after"] != body["checkout_sha"]  # the fixture is what it claims to be
    post(client, "tag_push_annotated.json", event="Tag Push Hook")
    assert Deployment.objects.get().commit_sha == body["checkout_sha"]


def test_deleting_a_tag_is_ignored(client, hooked):
    answer, delivery = post(client, "tag_delete.json", event="Tag Push Hook")
    assert (answer["outcome"], delivery.detail) == ("ignored", "tag v1.5.0 was deleted")
    assert not Deployment.objects.exists()


def test_a_merge_request_event_is_ignored_while_previews_are_off(client, hooked):
    answer, delivery = post(client, "merge_request.json", event="Merge Request Hook")
    assert answer["outcome"] == "ignored" and delivery.detail == "!12: previews are off for hello"
    assert delivery.event_type == "Merge Request Hook" and not Deployment.objects.exists()
