"""Previews in tests: enabling them as an owner's form does, and merge request deliveries."""

from __future__ import annotations

import copy

from tests.gitlab_hooks import deliver, payload

MR_EVENT = "Merge Request Hook"


def previews_on(function, user=None, **policy):
    """Enable `function`'s previews with the form's defaults and `policy` (PreviewPolicy fields)."""
    from portal.functions import PreviewsForm, save_previews

    data = {"lambda_name": "", "url_auth": "", "target_branches": "", **{k: v for k, v in policy.items()
                                                                        if k != "target_branches"}}
    if "target_branches" in policy:
        data["target_branches"] = "\n".join(policy["target_branches"])
    form = PreviewsForm({k: v for k, v in data.items() if v is not False}, function=function)
    assert form.is_valid(), form.errors
    return save_previews(form, user=user)


def merge_request(name: str = "merge_request.json", **attributes) -> dict:
    """A fixture payload with `attributes` set on its object_attributes."""
    body = copy.deepcopy(payload(name))
    body["object_attributes"].update(attributes)
    return body


def mr_deliver(client, body, **kwargs):
    response = deliver(client, "hello", body, event=MR_EVENT, **kwargs)
    assert response.status_code == 200, response.content
    return response.json()
