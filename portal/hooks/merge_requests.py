"""GitLab's Merge Request Hook: what a merge request event asks of a function's previews.

Pure over the payload and the function's settings (its preview policy), like
gitlab.decide. GitLab documents the event ("Webhook events", Merge request events):
`object_kind` merge_request; `user` (who acted); `project` (the target project);
`object_attributes` with `iid`, `action` (open, close, reopen, update, approved,
unapproved, approval, unapproval, merge), `source_project_id`, `target_project_id`,
`source_branch`, `target_branch`, `source` (null once a fork is deleted), `target`,
`last_commit` (null when the source branch is gone), `draft`, `updated_at`, and
`oldrev` only on an update that added commits; `changes` lists what an update changed.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from django.utils.dateparse import parse_datetime

from portal.deployments import MergeRequest
from portal.hooks.gitlab import FULL_SHA, Malformed, clean_text

EVENT = "Merge Request Hook"
HANDLED = ("open", "reopen", "update", "close", "merge")
APPROVALS = ("approved", "unapproved", "approval", "unapproval")


@dataclass(frozen=True)
class Decision:
    """`merge_request` set: Slipway acts on it; else ignored (or `refused`), with why."""

    detail: str
    merge_request: MergeRequest | None = None
    refused: bool = False  # a fork the owner does not allow, a deleted source project: audited


def _int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Malformed(f"{what} is not a GitLab id")
    return value


def _text(value) -> str:
    return clean_text(value, 255) if isinstance(value, str) else ""


def _when(value) -> datetime.datetime:
    """updated_at as GitLab writes it: ISO 8601, or "2026-11-20 09:02:11 UTC" in some versions."""
    if not isinstance(value, str):
        raise Malformed("object_attributes.updated_at is missing")
    text = value.strip()
    text = text[:-4] + "+00:00" if text.endswith(" UTC") else text
    try:
        parsed = parse_datetime(text.replace(" ", "T", 1))
    except ValueError:
        parsed = None
    if parsed is None:
        raise Malformed(f"object_attributes.updated_at is not a time: {clean_text(value, 40)!r}")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def _normal(url) -> str:
    return url.strip().lower().removesuffix("/").removesuffix(".git") if isinstance(url, str) else ""


def _repository_path(url: str) -> tuple[str, str]:
    """(host, path) of a git URL in any of the forms a function's repository may take."""
    url = _normal(url)
    if url.startswith("git@") and ":" in url:
        host, path = url[len("git@"):].split(":", 1)
        return host, path.strip("/")
    for scheme in ("https://", "http://", "ssh://"):
        if url.startswith(scheme):
            rest = url[len(scheme):].split("@", 1)[-1]
            host, _, path = rest.partition("/")
            return host.split(":")[0], path.strip("/")
    return "", url


def same_repository(repository_url: str, project) -> bool:
    """Whether a payload's project is the function's repository: one of its git URLs, or its
    path_with_namespace on the same host."""
    if not isinstance(project, dict):
        return False
    mine = _normal(repository_url)
    urls = [_normal(project.get(key)) for key in ("git_http_url", "git_ssh_url", "http_url", "ssh_url", "url",
                                                  "web_url")]
    if mine and mine in urls:
        return True
    host, path = _repository_path(repository_url)
    theirs = _repository_path(project.get("web_url") or "")[0]
    return bool(path) and path == _normal(project.get("path_with_namespace")) and host == theirs


def decide(function, payload: dict, policy) -> Decision:
    """What a Merge Request Hook asks of `function`; `policy` its PreviewPolicy (None: previews
    are off). Raises Malformed for what GitLab never sends."""
    attributes = payload.get("object_attributes")
    if payload.get("object_kind") != "merge_request" or not isinstance(attributes, dict):
        raise Malformed("not a merge request event: object_kind merge_request with object_attributes expected")
    action = attributes.get("action")
    iid = _int(attributes.get("iid"), "object_attributes.iid")
    if policy is None:
        return Decision(f"!{iid}: previews are off for {function.name}")
    if action in APPROVALS:
        return Decision(f"!{iid} {action}: approvals do not change a preview")
    if action not in HANDLED:
        return Decision(f"!{iid}: action {clean_text(action, 40)!r} is not handled")
    target = attributes.get("target") if isinstance(attributes.get("target"), dict) else payload.get("project")
    if not same_repository(function.repository_url, target):
        return Decision(f"!{iid} targets {_text((target or {}).get('path_with_namespace')) or 'another project'}, "
                        f"not {function.name}'s repository")
    user = payload.get("user") if isinstance(payload.get("user"), dict) else {}
    source_id = attributes.get("source_project_id")
    target_id = _int(attributes.get("target_project_id"), "object_attributes.target_project_id")
    fork = source_id is None or source_id != target_id
    fields = {"iid": iid, "action": action, "updated_at": _when(attributes.get("updated_at")),
              "author": _text(user.get("username")), "title": _text(attributes.get("title")),
              "source_project_id": None if source_id is None else _int(source_id, "source_project_id"),
              "target_project_id": target_id, "source_branch": _text(attributes.get("source_branch")),
              "target_branch": _text(attributes.get("target_branch")), "fork": fork}
    if action in ("close", "merge"):
        return Decision(f"!{iid} {'merged' if action == 'merge' else 'closed'}", MergeRequest(**fields))
    return _opening(attributes, fields, policy, ready=_ready(payload))


def _ready(payload: dict) -> bool:
    """An update that took the draft off (GitLab sends no oldrev then): it previews now."""
    changes = payload.get("changes")
    change = changes.get("draft") if isinstance(changes, dict) else None
    return isinstance(change, dict) and change.get("previous") is True and change.get("current") is False


def _opening(attributes: dict, fields: dict, policy, *, ready: bool) -> Decision:
    iid, action = fields["iid"], fields["action"]
    if action == "update" and not attributes.get("oldrev") and not ready:
        return Decision(f"!{iid} updated without new commits (no oldrev): the preview stays")
    commit = attributes.get("last_commit")
    if commit is None:
        return Decision(f"!{iid}: no last_commit (its source branch is gone): nothing to preview")
    if not isinstance(commit, dict) or not isinstance(commit.get("id"), str) or not FULL_SHA.match(commit["id"]):
        raise Malformed("object_attributes.last_commit.id is not a full commit SHA")
    if not policy.targets(fields["target_branch"]):
        wanted = ", ".join(policy.target_branches) or policy.environment.function.branch
        return Decision(f"!{iid} targets {fields['target_branch'] or '(no branch)'}; previews are for "
                        f"merge requests into {wanted}")
    if (attributes.get("draft") or attributes.get("work_in_progress")) and not policy.allow_drafts:
        return Decision(f"!{iid} is a draft: drafts do not preview")
    if attributes.get("source") is None and "source" in attributes:
        return Decision(f"!{iid}: its source project was deleted: refused", refused=True)
    if fields["fork"] and not policy.allow_forks:
        return Decision(f"!{iid} comes from a fork (project {fields['source_project_id']}): forks' previews are "
                        "not allowed: refused", refused=True)
    author = commit.get("author") if isinstance(commit.get("author"), dict) else {}
    return Decision(f"!{iid} {action}: preview {commit['id'][:12]}", MergeRequest(
        **fields, head_sha=commit["id"], commit_message=_text(commit.get("title") or commit.get("message")).split(
            "\n")[0][:300], commit_author=_text(author.get("name"))[:200]))

