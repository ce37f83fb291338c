"""A local GitLab that checks the Environments and Deployments APIs as GitLab documents them
(https://docs.gitlab.com/api/environments/, https://docs.gitlab.com/api/deployments/):
the method, the path under /api/v4/projects/<url-encoded project>, the PRIVATE-TOKEN header,
the body's fields and their types. It answers as GitLab does: 201 with an id, 400 "The
branch or tag does not exist" for a ref it does not have, 403 for a protected environment,
401 for another token, 404 for an unknown deployment, and it hangs a POST on demand after
making the deployment (a timeout whose request GitLab did carry out).

A request it finds malformed is answered 400 and kept in `errors`: tests assert there are none."""

from __future__ import annotations

import json
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.http_receiver import reply_json, serve, shut

TOKEN = "glpat-test-token-123"
PROJECT = "team/hello"
TIERS = {"production", "staging", "testing", "development", "other"}
STATUSES = {"created", "running", "success", "failed", "canceled", "skipped", "blocked"}


@dataclass
class Call:
    method: str
    path: str
    query: dict
    body: dict | None
    status: int


@dataclass
class FakeGitLab:
    project: str = PROJECT
    token: str = TOKEN
    refs: dict = field(default_factory=lambda: {"main": False, "v1.2.0": True})  # name -> is a tag
    protected: set = field(default_factory=set)  # environment names whose deployments answer 403
    hang_posts: int = 0  # this many deployment POSTs are carried out, then hang (the client times out)
    lose_posts: int = 0  # this many deployment POSTs hang before GitLab made anything
    calls: list[Call] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    environments: list[dict] = field(default_factory=list)
    deployments: list[dict] = field(default_factory=list)
    notes: dict = field(default_factory=dict)  # merge requests' notes: id -> {"iid", "body"}
    foreign_notes: set = field(default_factory=set)  # note ids another user wrote: a PUT answers 403
    released: threading.Event = field(default_factory=threading.Event)
    host: str = "127.0.0.1"
    server: ThreadingHTTPServer | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.server.server_address[1]}"

    @property
    def prefix(self) -> str:
        return f"/api/v4/projects/{urllib.parse.quote(self.project, safe='')}"

    def of(self, method: str, suffix: str) -> list[Call]:
        """The calls of `method` whose path (after the project) starts with `suffix`."""
        return [c for c in self.calls if c.method == method and c.path.startswith(self.prefix + suffix)]

    def start(self) -> FakeGitLab:
        gitlab = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self):
                parts = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(parts.query))
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = None
                if raw:
                    try:
                        body = json.loads(raw)
                    except ValueError:
                        body = {"<not json>": raw.decode(errors="replace")}
                with gitlab.lock:
                    status, answer, hang = gitlab.answer(self.command, parts.path, query, body,
                                                         self.headers.get("PRIVATE-TOKEN"),
                                                         self.headers.get("Content-Type"))
                    gitlab.calls.append(Call(self.command, parts.path, query, body, status))
                if hang:
                    gitlab.released.wait(30)
                    return
                reply_json(self, status, json.dumps(answer).encode())

            do_GET = do_POST = do_PUT = _handle  # noqa: N815 - http.server's naming

            def log_message(self, *args):
                pass

        self.server = serve(Handler, self.host, 0, "fake-gitlab")
        return self

    def stop(self) -> None:
        shut(self.server, self.released)

    # --- GitLab's answers ------------------------------------------------------------------

    def bad(self, why: str) -> tuple[int, dict, bool]:
        self.errors.append(why)
        return 400, {"error": why}, False

    def answer(self, method, path, query, body, token, content_type) -> tuple[int, dict | list, bool]:
        if token != self.token:
            return 401, {"message": "401 Unauthorized"}, False
        if not path.startswith(self.prefix + "/"):
            return self.bad(f"path {path} is not under {self.prefix}")
        if body is not None and content_type != "application/json":
            return self.bad(f"a body sent as {content_type}")
        rest = path[len(self.prefix):]
        if method == "POST" and rest.startswith("/statuses/"):  # commit statuses (tests/test_feedback.py checks them)
            return 201, {"id": 1, "status": (body or {}).get("state")}, False
        if method == "GET" and rest == "/environments":
            if set(query) - {"name", "search", "states", "per_page", "page"}:
                return self.bad(f"unknown query parameters {sorted(query)}")
            return 200, [e for e in self.environments if e["name"] == query.get("name", e["name"])], False
        if method == "POST" and rest == "/environments":
            return self.create_environment(body or {})
        if method == "PUT" and rest.startswith("/environments/"):
            return self.edit_environment(rest.rsplit("/", 1)[1], body or {})
        if method == "POST" and rest == "/deployments":
            return self.create_deployment(body or {})
        if method == "PUT" and rest.startswith("/deployments/"):
            return self.update_deployment(rest.rsplit("/", 1)[1], body or {})
        if method == "GET" and rest == "/deployments":
            return self.list_deployments(query)
        if rest.startswith("/merge_requests/") and "/notes" in rest:
            return self.note(method, rest, body or {})
        return self.bad(f"{method} {rest} is not an endpoint Slipway should call")

    def note(self, method: str, rest: str, body: dict):
        """POST /merge_requests/:iid/notes and PUT /merge_requests/:iid/notes/:id
        (https://docs.gitlab.com/api/notes/): a `body` string; only its author edits a note (403)."""
        parts = rest.split("/")  # "", merge_requests, iid, notes[, id]
        if not parts[2].isdigit() or set(body) != {"body"} or not isinstance(body["body"], str):
            return self.bad(f"a note {method} {rest} with {body}")
        if method == "POST" and len(parts) == 4:
            note_id = 100 + sum(1 for c in self.calls if c.method == "POST" and c.path.endswith("/notes"))
            self.notes[note_id] = {"iid": int(parts[2]), "body": body["body"]}
            return 201, {"id": note_id, "body": body["body"], "noteable_iid": int(parts[2])}, False
        if method == "PUT" and len(parts) == 5 and parts[4].isdigit():
            note_id = int(parts[4])
            if note_id in self.foreign_notes:
                return 403, {"message": "403 Forbidden"}, False
            if self.notes.get(note_id, {}).get("iid") != int(parts[2]):
                return 404, {"message": "404 Not found"}, False
            self.notes[note_id]["body"] = body["body"]
            return 200, {"id": note_id, "body": body["body"]}, False
        return self.bad(f"{method} {rest} is not a notes endpoint Slipway should call")

    def create_environment(self, body: dict):
        if set(body) - {"name", "external_url", "tier"} or not isinstance(body.get("name"), str):
            return self.bad(f"environment fields {sorted(body)}")
        if body.get("tier", "other") not in TIERS:
            return self.bad(f"tier {body.get('tier')!r}")
        if any(e["name"] == body["name"] for e in self.environments):
            return 400, {"message": {"name": ["has already been taken"]}}, False
        environment = {"id": 100 + len(self.environments), "name": body["name"], "state": "available",
                       "external_url": body.get("external_url"), "tier": body.get("tier", "other")}
        self.environments.append(environment)
        return 201, environment, False

    def edit_environment(self, environment_id: str, body: dict):
        found = [e for e in self.environments if str(e["id"]) == environment_id]
        if not found:
            return 404, {"message": "404 Environment Not Found"}, False
        if set(body) - {"external_url", "tier"} or body.get("tier", "other") not in TIERS:
            return self.bad(f"environment edit {body}")
        found[0].update(body)
        return 200, found[0], False

    def create_deployment(self, body: dict):
        if self.lose_posts > 0:
            self.lose_posts -= 1
            return 0, {}, True
        required = {"environment": str, "sha": str, "ref": str, "tag": bool, "status": str}
        for name, kind in required.items():
            if not isinstance(body.get(name), kind):
                return self.bad(f"deployment field {name!r} is {body.get(name)!r}, not a {kind.__name__}")
        if set(body) - set(required):
            return self.bad(f"unknown deployment fields {sorted(set(body) - set(required))}")
        if body["status"] not in STATUSES:
            return self.bad(f"status {body['status']!r}")
        if len(body["sha"]) != 40:
            return self.bad(f"sha {body['sha']!r}")
        if body["ref"] not in self.refs or self.refs[body["ref"]] != body["tag"]:
            return 400, {"message": "The branch or tag does not exist"}, False
        if body["environment"] in self.protected:
            return 403, {"message": "403 Forbidden"}, False
        deployment = {"id": 900 + len(self.deployments), "iid": len(self.deployments) + 1, "ref": body["ref"],
                      "sha": body["sha"], "status": body["status"], "environment": {"name": body["environment"]},
                      "tag": body["tag"]}
        self.deployments.append(deployment)
        hang = self.hang_posts > 0
        self.hang_posts -= 1 if hang else 0
        return 201, deployment, hang

    def update_deployment(self, deployment_id: str, body: dict):
        found = [d for d in self.deployments if str(d["id"]) == deployment_id]
        if not found:
            return 404, {"message": "404 Not found"}, False
        if set(body) != {"status"} or body["status"] not in {"running", "success", "failed", "canceled"}:
            return self.bad(f"deployment update {body}")
        found[0]["status"] = body["status"]
        return 200, found[0], False

    def list_deployments(self, query: dict):
        allowed = {"environment", "status", "order_by", "sort", "per_page", "page", "updated_after",
                   "updated_before", "finished_after", "finished_before"}
        if set(query) - allowed:
            return self.bad(f"unknown query parameters {sorted(set(query) - allowed)}")
        if query.get("order_by") not in (None, "id", "iid", "created_at", "updated_at", "finished_at", "ref"):
            return self.bad(f"order_by {query.get('order_by')!r}")
        rows = [d for d in self.deployments if d["environment"]["name"] == query.get("environment", d["environment"]
                                                                                     ["name"])
                and d["status"] == query.get("status", d["status"])]
        rows.sort(key=lambda d: d["id"], reverse=query.get("sort") == "desc")
        return 200, rows, False
