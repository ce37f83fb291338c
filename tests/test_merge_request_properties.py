"""Whatever a Merge Request Hook holds, the parser decides without raising anything but
Malformed, and what it hands on is sound: an opening event names a full head SHA, a fork
is exactly a source project other than the target, and a refused or ignored event hands
on nothing. GitLab's documented payload with its fields replaced by anything; each path
the parser can take is counted and must have been taken."""

from __future__ import annotations

import copy
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portal.hooks import merge_requests
from portal.hooks.gitlab import Malformed
from tests.gitlab_hooks import payload

ACTIONS = ["open", "reopen", "update", "close", "merge", "approved", "unapproved", "approval", "unapproval",
           "bogus", None, 7]
anything = st.none() | st.booleans() | st.integers(-3, 10**12) | st.text(max_size=12) | st.lists(st.integers(),
                                                                                                max_size=2)
shas = st.text(alphabet="0123456789abcdef", min_size=40, max_size=40)
PATHS = Counter()


@st.composite
def events(draw):
    """A documented payload with valid variations, and at most one field replaced by anything."""
    body = copy.deepcopy(payload(draw(st.sampled_from(["merge_request.json", "merge_request_fork.json"]))))
    attributes = body["object_attributes"]
    attributes["action"] = draw(st.sampled_from(["open", "reopen", "update"]) | st.sampled_from(ACTIONS))
    attributes["iid"] = draw(st.integers(1, 10**6))
    attributes["oldrev"] = draw(st.none() | shas)
    attributes["draft"] = draw(st.integers(0, 3)) == 0
    attributes["target_branch"] = draw(st.sampled_from(["main", "main", "main", "release", ""]))
    attributes["updated_at"] = draw(st.sampled_from(["2026-11-20T09:02:11Z", "2026-11-20 09:02:11 UTC",
                                                     "2026-11-20T10:02:11+01:00"]))
    attributes["last_commit"] = None if draw(st.integers(0, 4)) == 0 else {"id": draw(shas)}
    if draw(st.integers(0, 5)) == 0:
        attributes["source"] = None
    broken = None if draw(st.booleans()) else draw(st.sampled_from(
        ["iid", "updated_at", "last_commit", "source_project_id", "target_project_id", "target", "title"]))
    if broken is not None:
        attributes[broken] = draw(anything)
    return body


class Policy:
    def __init__(self, allow_forks: bool, allow_drafts: bool):
        self.allow_forks, self.allow_drafts, self.target_branches = allow_forks, allow_drafts, []
        self.environment = type("Env", (), {"function": Function})

    def targets(self, branch: str) -> bool:
        return branch == "main"


class Function:
    name, branch, repository_url = "hello", "main", "https://gitlab.example.com/team/hello.git"


@settings(max_examples=400, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(events(), st.booleans(), st.booleans())
def decides_soundly(body, allow_forks, allow_drafts):
    try:
        decision = merge_requests.decide(Function, body, Policy(allow_forks, allow_drafts))
    except Malformed:
        PATHS["malformed"] += 1
        return
    mr = decision.merge_request
    if mr is None:
        PATHS["refused" if decision.refused else "ignored"] += 1
        assert decision.detail
        return
    attributes = body["object_attributes"]
    assert mr.fork == (attributes.get("source_project_id") != attributes["target_project_id"])
    assert mr.updated_at.tzinfo is not None and mr.iid == attributes["iid"]
    if mr.action in ("close", "merge"):
        PATHS["closing"] += 1
        return
    PATHS["fork" if mr.fork else "opening"] += 1
    assert len(mr.head_sha) == 40 and int(mr.head_sha, 16) >= 0
    assert allow_forks or not mr.fork
    assert allow_drafts or not attributes["draft"]


def test_the_parser_decides_anything_soundly_on_every_path():
    PATHS.clear()
    decides_soundly()
    assert set(PATHS) == {"malformed", "ignored", "refused", "closing", "opening", "fork"}, PATHS
