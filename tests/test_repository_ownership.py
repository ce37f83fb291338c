"""An ECR repository belongs to the first function registered with it: another function
may use it only when that function's owners share it (its images, and so what retention
may delete there). Through the form (register, edit) and the API; and the migration that
grants the sharing that already exists. alice owns `hello`, on slipway/hello."""

import pytest
from django.urls import reverse

from portal.models import AuditEvent, Function, Membership
from tests.api_client import Api, openapi
from tests.conftest import create_function, update_function
from tests.test_api import _new_function
from tests.test_views import _form


@pytest.fixture(autouse=True)
def _no_broker(sent):
    return sent


@pytest.fixture
def owned(function):
    update_function(function, ecr_repository="slipway/hello", lambda_name="slipway-hello",
                    execution_role_arn="arn:aws:iam::000000000000:role/x")
    function.refresh_from_db()
    return function


def register(client, user, **fields):
    client.force_login(user)
    return client.post(reverse("portal-function-register"), _form(**fields))


def errors(response) -> str:
    return " ".join(str(e) for e in response.context["form"].errors.get("ecr_repository", []))


def test_registering_onto_a_repository_another_function_owns_is_refused_naming_it_to_who_may_see_it(
        client, cast, owned):
    response = register(client, cast["charlie"], ecr_repository="slipway/hello")  # charlie views hello
    assert response.status_code == 400
    assert errors(response).startswith("slipway/hello belongs to hello: its owners can let this function use it")
    assert not Function.objects.filter(name="detector2").exists()


def test_who_may_not_see_the_owner_is_told_only_that_another_function_owns_it(client, cast, owned):
    response = register(client, cast["dave"], ecr_repository="slipway/hello")
    assert response.status_code == 400
    assert errors(response) == ("slipway/hello is owned by another function: its owners can let this function use "
                                "it (Shares images with, in their settings)")
    assert "belongs to hello" not in response.content.decode()


def test_an_owner_shares_the_repository_audited_and_the_function_named_may_then_use_it(client, cast, owned):
    client.force_login(cast["alice"])
    edit = _form(name="hello", lambda_name="slipway-hello", ecr_repository="slipway/hello",
                 shares_images_with_text="detector2, other-team\ndetector2")
    assert client.post(reverse("portal-function-edit", args=["hello"]), edit).status_code == 302
    owned.refresh_from_db()
    assert owned.shares_images_with == ["detector2", "other-team"]
    audit = AuditEvent.objects.get(function=owned, action="function.edited")
    assert (audit.actor, audit.detail["shares_images_with"]) == (cast["alice"], ["detector2", "other-team"])
    assert register(client, cast["dave"], ecr_repository="slipway/hello").status_code == 302
    assert Function.objects.get(name="detector2").ecr_repository == "slipway/hello"


def test_editing_a_function_onto_an_owned_repository_is_refused_but_its_own_stays_its_own(client, cast, owned):
    other = create_function(name="other", repository_url="https://gitlab.example.com/t/o.git",
                            ecr_repository="slipway/other", lambda_name="slipway-other")
    Membership.objects.create(function=other, user=cast["alice"], role="owner")
    client.force_login(cast["alice"])
    data = _form(name="other", lambda_name="slipway-other", ecr_repository="slipway/hello")
    response = client.post(reverse("portal-function-edit", args=["other"]), data)
    assert response.status_code == 400 and errors(response).startswith("slipway/hello belongs to hello")
    assert Function.objects.get(pk=other.pk).ecr_repository == "slipway/other"
    # A function already on a repository (granted, or there before this rule) keeps it through edits.
    Function.objects.filter(pk=other.pk).update(ecr_repository="slipway/hello")
    data = _form(name="other", lambda_name="slipway-other", ecr_repository="slipway/hello", memory_mb="2048")
    assert client.post(reverse("portal-function-edit", args=["other"]), data).status_code == 302


def test_the_api_applies_the_same_rule_and_shares_through_a_list(client, cast, owned):
    from portal.models import ApiToken

    api = Api(client, openapi(client))
    alice, dave = (ApiToken.issue(cast[name], "t")[1] for name in ("alice", "dave"))
    refused = api.call("post", "/functions", _new_function(ecr_repository="slipway/hello"), token=dave)
    assert refused.status_code == 400
    assert refused.json()["error"]["fields"]["ecr_repository"][0].startswith(
        "slipway/hello is owned by another function")
    shared = api.call("patch", "/functions/{name}", {"shares_images_with": ["api-made"]}, name="hello", token=alice)
    assert shared.status_code == 200 and shared.json()["shares_images_with"] == ["api-made"]
    made = api.call("post", "/functions", _new_function(ecr_repository="slipway/hello"), token=dave)
    assert made.status_code == 201, made.json()


@pytest.mark.django_db(transaction=True)
def test_the_migration_grants_the_sharing_that_exists_and_records_each_builds_repository(migrations):
    old = migrations(("portal", "0009_reconcile_last_check"))
    Fn, Build = old.get_model("portal", "Function"), old.get_model("portal", "Build")
    first, second, alone = (Fn.objects.create(name=name, repository_url="https://x.example/r.git",
                                              ecr_repository=repository, lambda_name=f"slipway-{name}")
                            for name, repository in (("first", "slipway/shared"), ("second", "slipway/shared"),
                                                     ("alone", "slipway/alone")))
    pushed = Build.objects.create(function=second, commit_sha="a" * 40, architecture="arm64", inputs_digest="a",
                                  image_uri="1.dkr.ecr.eu-west-1.amazonaws.com/slipway/moved@sha256:" + "a" * 64)
    pending = Build.objects.create(function=alone, commit_sha="b" * 40, architecture="arm64", inputs_digest="b")

    new = migrations(("portal", "0010_build_repository"))
    Fn, Build = new.get_model("portal", "Function"), new.get_model("portal", "Build")
    Audit = new.get_model("portal", "AuditEvent")
    assert {f.name: f.shares_images_with for f in Fn.objects.all()} == {"first": ["second"], "second": [],
                                                                         "alone": []}
    (audit,) = Audit.objects.filter(action="function.images_shared")
    assert (audit.function_id, audit.actor_label) == (first.pk, "migration")
    assert audit.detail["repository"] == "slipway/shared"
    assert "second already used slipway/shared" in audit.detail["why"]
    assert Build.objects.get(pk=pushed.pk).repository == "slipway/moved"  # where its image really went
    assert Build.objects.get(pk=pending.pk).repository == "slipway/alone"
