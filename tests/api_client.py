"""A test client for /api/v1/ that checks every answer against the OpenAPI
document the API serves: the status must be declared for the operation and
the body must validate against its schema."""

from __future__ import annotations

import json

from jsonschema import Draft202012Validator

PREFIX = "/api/v1"


def openapi(client) -> dict:
    response = client.get(f"{PREFIX}/openapi.json")
    assert response.status_code == 200
    return response.json()


def validate(doc: dict, template: str, method: str, status: int, body) -> None:
    """Raise jsonschema.ValidationError when `body` does not match what `doc` declares."""
    operation = doc["paths"][PREFIX + template][method]
    declared = operation["responses"]
    assert str(status) in declared, f"{method.upper()} {template} answered {status}, not declared ({list(declared)})"
    schema = declared[str(status)]["content"]["application/json"]["schema"]
    Draft202012Validator({**schema, "components": doc["components"]}).validate(body)


class Api:
    def __init__(self, client, doc: dict, token: str = ""):
        self.client, self.doc, self.token = client, doc, token
        self.checked = 0

    def call(self, method: str, template: str, body=None, *, token: str | None = None, **params):
        url = PREFIX + template.format(**params)
        token = self.token if token is None else token
        headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
        query = params.pop("query", None)
        kwargs = {"data": json.dumps(body), "content_type": "application/json"} if body is not None else {}
        if query:
            url += "?" + "&".join(f"{k}={v}" for k, v in query.items())
        response = getattr(self.client, method)(url, **kwargs, **headers)
        validate(self.doc, template, method, response.status_code, response.json())
        self.checked += 1
        return response


def follow(api: Api, deployment: dict, timeout: float = 600, interval: float = 0.5) -> dict:
    """Poll a deployment the API answered with until it ends; its last body."""
    from tests.conftest import wait_for

    def ended():
        body = api.call("get", "/deployments/{deployment_id}", deployment_id=deployment["id"]).json()
        return body if body["terminal"] else None
    return wait_for(ended, timeout, f"deployment #{deployment['id']} to end", interval=interval)
