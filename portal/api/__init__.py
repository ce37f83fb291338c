"""The JSON API package: builds the NinjaAPI mounted at /api/v1/ and wires its parts.

Owns only the assembly: the API object (its two authentications, the parser
every body goes through, the error handlers) and the routers, one per
resource — functions, environments, deployments, feedback, approvals, freezes, previews.
What each part owns is in its own docstring: auth.py (who is calling, the
token-scope access layer), errors.py (the one error shape), schemas.py (the one
set of schemas),
limits.py (body cap, body shape, deploy rate).

May import: ninja and the modules of this package. The domain never imports
this package, and this package imports no view module (portal/views/).
"""

from __future__ import annotations

from ninja import NinjaAPI

from portal.api import approvals, deployments, environments, errors, feedback, freezes, functions, previews
from portal.api.auth import SessionAuth, TokenAuth
from portal.api.limits import ObjectParser

DESCRIPTION = """The JSON API under /api/v1/: everything the UI does, for scripts and CI.

Requests are validated by the same forms as the UI (the request schemas in
the OpenAPI document are generated from them) and checked by the same access
helper, so the two can never disagree. Authentication: `Authorization:
Bearer <token>` (portal.models.ApiToken) or the browser session with CSRF.
Errors are `{"error": {"code", "message", "fields"}}`. Approvals are read-only
here: approving or rejecting needs a signed-in session (the deployment's page).
"""


class SlipwayAPI(NinjaAPI):
    def get_openapi_operation_id(self, operation) -> str:
        # The ids the one-module API had (portal_api_<endpoint>): clients generated from the
        # document name their methods after them, so where an endpoint's code lives must not show.
        return f"portal_api_{operation.view_func.__name__}"


api = SlipwayAPI(
    title="Slipway API",
    version="1",
    urls_namespace="api",
    auth=[TokenAuth(), SessionAuth()],
    description=DESCRIPTION,
    parser=ObjectParser(),
)
errors.install(api)
for resource in (functions, environments, deployments, feedback, approvals, freezes, previews):
    api.add_router("", resource.router)
