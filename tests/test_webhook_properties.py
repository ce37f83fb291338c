"""Whatever arrives, the receiver answers it without a 500: random JSON bodies (and
raw bytes), random headers, real-shaped pushes with random fields. At least half of
the examples carry valid credentials (a secret token, or a signature over the exact
body), so they reach the parser and the transaction, not only the 401. Marked
`postgres`: Postgres refuses what SQLite lets through (NUL, lone surrogates, overlong
values), so both databases must take every recorded delivery."""

import itertools
import json
import time
import uuid
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portal.hooks import gitlab
from portal.models import Function, WebhookDelivery
from tests.conftest import create_function
from tests.gitlab_hooks import TOKEN, hook, payload, signed

pytestmark = pytest.mark.postgres
SIGNING = gitlab.new_signing_token()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12)
shas = st.text(alphabet="0123456789abcdef", min_size=40, max_size=40)
refs = st.sampled_from(["refs/heads/main", "refs/heads/feature/x", "refs/tags/v1.2", "refs/tags/nightly"])


@st.composite
def intact(draw):
    """A push to the deploy branch or a tag matching the pattern, as GitLab sends them."""
    after, before = draw(shas), draw(shas)
    if draw(st.booleans()):
        return json.dumps({**payload("push.json"), "before": before, "after": after, "checkout_sha": after}), \
            "Push Hook"
    tag = "v" + draw(st.from_regex(r"[0-9]{1,2}\.[0-9]{1,2}", fullmatch=True))
    return json.dumps({**payload("tag_push_annotated.json"), "ref": f"refs/tags/{tag}", "checkout_sha": after}), \
        "Tag Push Hook"


@st.composite
def mutated(draw):
    """GitLab's push or tag push payload with some fields replaced by anything."""
    body = payload(draw(st.sampled_from(["push.json", "tag_push_annotated.json", "branch_delete.json"])))
    body["ref"] = draw(refs | st.text(max_size=30) | json_values)
    body["before"] = draw(shas | st.just("0" * 40) | json_values)
    body["after"] = draw(shas | st.just("0" * 40))
    body["checkout_sha"] = draw(st.just(body["after"]) | shas | st.none() | st.text(max_size=41) | json_values)
    for field in draw(st.lists(st.sampled_from(sorted(body)), max_size=2)):
        body.pop(field, None)
    return json.dumps(body)


def surrogatepass(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


events = st.sampled_from(["Push Hook", "Tag Push Hook", "Merge Request Hook", "Pipeline Hook"]) | st.text(max_size=40)
deliveries = (intact().map(lambda pair: (pair[0].encode(), pair[1]))
              | st.tuples((mutated() | json_values.map(json.dumps)).map(str.encode), events)
              | st.tuples(st.binary(max_size=64) | st.text(max_size=64).map(surrogatepass), events))
extra_headers = st.dictionaries(
    st.sampled_from(["Idempotency-Key", "X-Gitlab-Event-UUID", "X-Gitlab-Webhook-UUID", "webhook-id",
                     "webhook-timestamp", "webhook-signature", "X-Gitlab-Token", "User-Agent"]),
    st.text(max_size=150), max_size=4)


@pytest.fixture(autouse=True)
def _no_broker(sent):
    return sent


def test_no_delivery_gets_a_500(client, function):
    Function.objects.filter(pk=function.pk).update(tag_pattern="v*")
    hook(Function.objects.get(pk=function.pk))
    signing = create_function(name="signed", repository_url="https://gitlab.example.com/t/s.git",
                              ecr_repository="slipway/signed", lambda_name="slipway-signed")
    hook(signing, token="", signing=SIGNING)
    seen, numbers = Counter(), itertools.count()

    @settings(max_examples=150, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(delivery=deliveries, extra=extra_headers, key=st.none() | st.uuids().map(str) | st.text(max_size=140))
    def deliver(delivery, extra, key):
        body, event = delivery
        n = next(numbers)
        authenticated = n % 3 != 0  # two examples in three carry valid credentials
        name = "signed" if authenticated and n % 4 == 1 else "hello"
        headers = {"X-Gitlab-Event": event, "Idempotency-Key": key if key is not None else str(uuid.uuid4()),
                   **extra}
        if authenticated and name == "hello":
            headers["X-Gitlab-Token"] = TOKEN
        elif authenticated:
            headers.update(signed(SIGNING, body, str(uuid.uuid4()), at=time.time()))
        response = client.post(f"/hooks/gitlab/{name}", data=body, content_type="application/json",
                               headers=headers)
        # Django's test client sends no Content-Length for an empty body: 411, as for chunked requests
        # (once the headers authenticate: a stranger learns nothing but 401).
        assert response.status_code in ((200, 400, 401) if body else (401, 411)), response.content
        if authenticated and not body:
            assert response.status_code == 411, response.content
        if authenticated and body:
            assert response.status_code != 401, response.content
        if authenticated:
            seen["authenticated"] += 1
        seen[response.json().get("outcome", response.status_code)] += 1
        seen["examples"] += 1

    deliver()
    assert seen["examples"] >= 100 and seen["authenticated"] * 2 >= seen["examples"], seen
    assert seen["accepted"] > 0 and seen["ignored"] > 0, seen
    assert WebhookDelivery.objects.count() >= seen["authenticated"]  # every authenticated one was recorded
