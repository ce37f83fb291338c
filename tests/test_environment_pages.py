"""The function page's environments: columns in promotion order, the same-digest badge,
a soak's wait, Promote (confirm, then POST), refusals, rollback and resume per
environment, and every action as a plain form (no JavaScript). alice owns `hello`,
bob deploys it, charlie views it, dave has no role; Celery's send_task is patched."""

from datetime import timedelta
from html.parser import HTMLParser

import pytest
from django.urls import reverse
from django.utils import timezone

from portal.models import Deployment, Environment
from tests.conftest import released, staged

Status = Deployment.Status
A, B, C = "a" * 40, "b" * 40, "c" * 40


@pytest.fixture(autouse=True)
def _no_broker(sent):
    return sent


def ago(minutes: int):
    return timezone.now() - timedelta(minutes=minutes)


@pytest.fixture
def envs(function):
    """staging serves v2 (commit b); production serves v1 (commit a, promoted): b is what production lacks."""
    staging, production = staged(function)
    one = released(function, "1", A, environment=staging, finished_at=ago(50))
    two = released(function, "2", B, environment=staging, finished_at=ago(40))
    promoted = Deployment.objects.create(
        function=function, environment=production, kind="promotion", trigger="ui", status=Status.SUCCEEDED,
        version="7", build=one.build, digest=one.build.digest, upstream=one, commit_sha=A,
        commit_message="release 1", finished_at=ago(45))
    return {"staging": staging, "production": production, "one": one, "two": two, "promoted": promoted}


def page(client, user, name="hello") -> str:
    client.force_login(user)
    response = client.get(reverse("portal-function", args=[name]))
    assert response.status_code == 200
    return response.content.decode()


def column(html: str, env: str) -> str:
    """The part of the page that is `env`'s column."""
    start = html.index(f'id="environment-{env}"')
    end = html.find('<div class="card environment"', start + 1)
    return html[start:end if end != -1 else html.index("</section>", start)]


class Forms(HTMLParser):
    """The page's forms as a browser without JavaScript sees them: method, action, fields, buttons."""

    def __init__(self):
        super().__init__()
        self.forms, self.current = [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.current = {"method": attrs.get("method", "get").lower(), "action": attrs.get("action", ""),
                            "fields": {}, "buttons": []}
            self.forms.append(self.current)
        elif tag == "input" and self.current is not None and attrs.get("name"):
            self.current["fields"][attrs["name"]] = attrs.get("value", "")
        elif tag == "button" and self.current is not None:
            self.current["buttons"].append(attrs)

    def handle_endtag(self, tag):
        if tag == "form":
            self.current = None


def forms(html: str) -> list[dict]:
    parser = Forms()
    parser.feed(html)
    return parser.forms


def form_to(html: str, fragment: str) -> dict:
    found = [f for f in forms(html) if fragment in f["action"]]
    assert len(found) == 1, [f["action"] for f in forms(html)]
    return found[0]


# --- Columns ---------------------------------------------------------------------------


def test_the_columns_come_in_promotion_order_with_what_is_live_in_each(client, cast, envs):
    html = page(client, cast["charlie"])
    assert html.index('id="environment-staging"') < html.index('id="environment-production"')
    staging, production = column(html, "staging"), column(html, "production")
    assert "version <strong class=\"version\">2</strong>" in staging and B[:8] in staging
    assert envs["two"].build.digest[:19] in staging
    assert "version <strong class=\"version\">7</strong>" in production and A[:8] in production
    assert envs["one"].build.digest[:19] in production
    assert "pushes deploy here" in staging and "pushes deploy here" not in production


def test_the_production_column_lists_what_staging_has_and_production_lacks(client, cast, envs):
    production = column(page(client, cast["charlie"]), "production")
    assert "staging has, production not yet" in production
    assert B[:8] in production.split("not yet")[1] and "release 2" in production
    assert "release 1" not in production.split("not yet")[1]  # production serves it already


def test_the_same_digest_badge_shows_only_where_the_digest_matches(client, cast, envs):
    html = page(client, cast["charlie"])
    assert "same digest as" not in html
    Deployment.objects.create(function=envs["production"].function, environment=envs["production"],
                              kind="promotion", trigger="ui", status=Status.SUCCEEDED, version="8",
                              build=envs["two"].build, digest=envs["two"].build.digest, upstream=envs["two"],
                              commit_sha=B, finished_at=ago(1))
    production = column(page(client, cast["charlie"]), "production")
    assert "same digest as staging" in production
    assert "Nothing in staging that production lacks" in production


def test_a_soaking_promotion_says_since_when_it_waits_and_when_it_promotes(client, cast, envs):
    promote_at = timezone.now() + timedelta(minutes=10)
    soak = Deployment.objects.create(function=envs["production"].function, environment=envs["production"],
                                     kind="promotion", trigger="promotion", status=Status.SOAKING,
                                     build=envs["two"].build, digest=envs["two"].build.digest,
                                     upstream=envs["two"], commit_sha=B, promote_at=promote_at)
    production = column(page(client, cast["charlie"]), "production")
    assert f"#{soak.pk}" in production and "waiting since" in production
    assert f"promotes at {timezone.localtime(promote_at):%H:%M:%S}" in production
    assert "soaking" not in column(page(client, cast["charlie"]), "staging")


def test_the_fragment_polls_every_2_s_while_something_waits_and_every_15_s_otherwise(client, cast, envs):
    client.force_login(cast["charlie"])
    url = reverse("portal-environments-state", args=["hello"])
    idle = client.get(url).content.decode()
    assert idle.startswith('<section id="environments"') and 'hx-trigger="every 15s"' in idle
    Deployment.objects.create(function=envs["staging"].function, environment=envs["staging"], trigger="ui",
                              ref="main", status=Status.BUILDING)
    busy = client.get(url).content.decode()
    assert 'hx-trigger="every 2s"' in busy and "building" in column(busy, "staging")
    assert "<html" not in busy  # the fragment only


@pytest.mark.parametrize("who, buttons", [("bob", True), ("alice", True), ("charlie", False)])
def test_promote_and_roll_back_are_offered_to_deployers_only(client, cast, envs, who, buttons):
    html = page(client, cast[who])
    assert ("Promote to production" in column(html, "production")) is buttons
    assert "Promote to" not in column(html, "staging")  # pushes deploy there: nothing promotes into it
    assert ("Roll back staging to version 1" in column(html, "staging")) is buttons


# --- Promote ---------------------------------------------------------------------------


def test_the_confirmation_shows_exactly_the_digest_and_commit_that_ship(client, cast, envs):
    client.force_login(cast["bob"])
    response = client.get(reverse("portal-environment-promote", args=["hello", "production"]))
    html = response.content.decode()
    assert response.status_code == 200
    assert f'<code id="promote-digest">{envs["two"].build.digest}</code>' in html
    assert f'<code id="promote-commit">{B}</code>' in html
    post = [f for f in forms(html) if f["method"] == "post" and "release" in f["fields"]]
    assert [f["fields"]["release"] for f in post] == [envs["two"].build.digest]
    assert not Deployment.objects.filter(kind="promotion", status=Status.QUEUED).exists()  # GET queues nothing


def test_posting_the_confirmation_queues_a_promotion_of_that_digest(client, cast, envs, sent,
                                                                    django_capture_on_commit_callbacks):
    client.force_login(cast["bob"])
    url = reverse("portal-environment-promote", args=["hello", "production"])
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url, {"release": envs["two"].build.digest})
    assert response.status_code == 302 and response["Location"].endswith("/functions/hello/#environments")
    promotion = Deployment.objects.get(kind="promotion", status=Status.QUEUED)
    assert (promotion.environment, promotion.digest, promotion.commit_sha) == (envs["production"],
                                                                              envs["two"].build.digest, B)
    assert promotion.upstream == envs["two"] and promotion.requested_by == cast["bob"]
    assert sent.call_count == 1
    production = column(page(client, cast["bob"]), "production")
    assert f"#{promotion.pk}" in production and "queued" in production


def test_a_release_staging_no_longer_serves_is_refused_and_the_refusal_shown(client, cast, envs):
    client.force_login(cast["bob"])
    url = reverse("portal-environment-promote", args=["hello", "production"])
    response = client.post(url, {"release": envs["one"].build.digest})  # what the page showed before v2
    html = response.content.decode()
    assert response.status_code == 409
    assert 'id="error"' in html and "not-verified-upstream" in html and "is not what hello (staging) serves" in html
    assert not Deployment.objects.filter(kind="promotion").exclude(pk=envs["promoted"].pk).exists()


def test_promoting_into_the_first_environment_is_refused(client, cast, envs):
    client.force_login(cast["bob"])
    url = reverse("portal-environment-promote", args=["hello", "staging"])
    assert client.get(url).status_code == 400
    response = client.post(url, {"release": envs["two"].build.digest})
    assert response.status_code == 400 and b"deploy-instead" in response.content
    assert 'id="promote"' not in response.content.decode()
    assert Deployment.objects.filter(kind="promotion").count() == 1


def test_with_nothing_live_upstream_there_is_nothing_to_promote(client, cast, function):
    staged(function)
    client.force_login(cast["bob"])
    response = client.get(reverse("portal-environment-promote", args=["hello", "production"]))
    assert response.status_code == 409 and b"nothing is live in staging" in response.content
    assert "Promote to production" not in column(page(client, cast["bob"]), "production")


@pytest.mark.parametrize("who, status", [("charlie", 403), ("dave", 404)])
def test_only_deployers_promote(client, cast, envs, who, status):
    client.force_login(cast[who])
    url = reverse("portal-environment-promote", args=["hello", "production"])
    assert client.post(url, {"release": envs["two"].build.digest}).status_code == status
    assert Deployment.objects.filter(kind="promotion").count() == 1


def test_an_unknown_environment_is_404(client, cast, envs):
    client.force_login(cast["bob"])
    assert client.get(reverse("portal-environment-promote", args=["hello", "qa"])).status_code == 404


# --- Rollback and resume per environment ------------------------------------------------


def test_a_rollback_from_the_production_column_rolls_back_production_only(client, cast, envs):
    function = envs["production"].function
    Deployment.objects.create(function=function, environment=envs["production"], kind="promotion", trigger="ui",
                              status=Status.SUCCEEDED, version="8", build=envs["two"].build,
                              digest=envs["two"].build.digest, upstream=envs["two"], commit_sha=B,
                              finished_at=ago(1))
    html = page(client, cast["bob"])
    rollback = form_to(column(html, "production"), "/rollback/")
    assert rollback["method"] == "get" and rollback["action"].endswith(f"/rollback/{envs['promoted'].pk}/")
    confirm = client.get(rollback["action"])
    assert confirm.status_code == 200 and b"Roll back" in confirm.content and b"production" in confirm.content
    assert client.post(rollback["action"]).status_code == 302
    done = Deployment.objects.get(kind="rollback")
    assert done.environment == envs["production"] and done.target_version == "7"
    paused = dict(Environment.objects.values_list("name", "paused_reason"))
    assert "rolled back to version 7" in paused["production"] and paused["staging"] == ""


def test_resume_lifts_the_pause_of_the_environment_its_form_names(client, cast, envs):
    Environment.objects.filter(pk__in=[envs["staging"].pk, envs["production"].pk]).update(
        paused_reason="rolled back to version 1 by bob; resume auto-deploy when fixed")
    html = page(client, cast["bob"])
    resumes = [f for f in forms(html) if f["action"].endswith("/resume/")]
    assert sorted(f["fields"]["environment"] for f in resumes) == ["production", "staging"]
    production = next(f for f in resumes if f["fields"]["environment"] == "production")
    assert client.post(production["action"], production["fields"]).status_code == 302
    paused = dict(Environment.objects.values_list("name", "paused_reason"))
    assert paused["production"] == "" and paused["staging"].startswith("rolled back")


def test_resume_naming_no_environment_of_several_is_refused_on_the_page(client, cast, envs):
    Environment.objects.filter(pk=envs["production"].pk).update(paused_reason="rolled back")
    client.force_login(cast["bob"])
    response = client.post(reverse("portal-function-resume", args=["hello"]), follow=True)
    assert b"name one" in response.content
    assert Environment.objects.get(pk=envs["production"].pk).paused_reason == "rolled back"


# --- Without JavaScript -------------------------------------------------------------------


def test_promote_works_as_plain_forms_from_the_function_page(client, cast, envs):
    """GET form in the column, then the confirmation's POST form with its hidden release:
    exactly what a browser without JavaScript submits."""
    html = page(client, cast["bob"])
    start = form_to(column(html, "production"), "/promote/")
    assert start["method"] == "get"
    confirm = client.get(start["action"], start["fields"])
    post = [f for f in forms(confirm.content.decode()) if f["method"] == "post" and "release" in f["fields"]]
    assert len(post) == 1
    response = client.post(post[0]["action"] or start["action"], post[0]["fields"], follow=True)
    assert response.status_code == 200 and b"queued" in response.content
    assert Deployment.objects.get(kind="promotion", status=Status.QUEUED).digest == envs["two"].build.digest


# --- The deployment page --------------------------------------------------------------------


def test_a_promotions_page_shows_its_environment_pinned_digest_and_upstream(client, cast, envs):
    client.force_login(cast["charlie"])
    html = client.get(reverse("portal-deployment", args=[envs["promoted"].pk])).content.decode()
    assert "Environment <strong>production</strong>" in html
    assert f'<code id="pinned-digest">{envs["one"].build.digest}</code>' in html
    assert f'href="{reverse("portal-deployment", args=[envs["one"].pk])}"' in html and "made live in staging" in html
    upstream = client.get(reverse("portal-deployment", args=[envs["one"].pk])).content.decode()
    assert "Environment <strong>staging</strong>" in upstream and 'id="promotions"' in upstream
    assert f"#{envs['promoted'].pk}</a> (production" in upstream


def test_a_soaking_promotions_page_says_when_it_promotes_and_offers_cancel(client, cast, envs):
    soak = Deployment.objects.create(function=envs["production"].function, environment=envs["production"],
                                     kind="promotion", trigger="promotion", status=Status.SOAKING,
                                     build=envs["two"].build, digest=envs["two"].build.digest,
                                     upstream=envs["two"], commit_sha=B,
                                     promote_at=timezone.now() + timedelta(minutes=5))
    client.force_login(cast["bob"])
    html = client.get(reverse("portal-deployment", args=[soak.pk])).content.decode()
    assert 'id="soak"' in html and "promotes at" in html
    assert client.post(reverse("portal-deployment-cancel", args=[soak.pk])).status_code == 302
    assert Deployment.objects.get(pk=soak.pk).status == Status.CANCELLED


def test_a_single_environment_function_page_is_as_before(client, cast, function):
    released(function, "1", A, finished_at=ago(5))
    html = page(client, cast["bob"])
    assert 'id="environment-production"' in html and "Promote to" not in html
    assert "Lambda <code>team-hello</code>" in html


# --- Links to the environments pages ----------------------------------------------------------


def test_owners_get_links_to_each_environments_settings(client, cast, envs):
    html = page(client, cast["alice"])
    assert 'href="/functions/hello/environments/new/"' in html
    assert 'href="/functions/hello/environments/staging/edit/"' in column(html, "staging")
    deployer = page(client, cast["bob"])  # settings are the owners'
    assert "Add an environment" not in deployer and "/edit/\"" not in column(deployer, "staging")
