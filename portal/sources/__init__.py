"""Sources: reading a function's repository — its access (SourceAccess: public, a
deploy token or a deploy key, and the last check for missed pushes), the mirror,
the fetch, and the checks of what a user enters.

Owns: model SourceAccess; SourceAuth; access (credentials, mirror, fetch: does I/O
through deploy.source); credentials (planning a change of access: pure); checks
(deploy tokens, SSH keys, known_hosts: pure).
May import: portal.core, deploy/. Knows a function by its attributes and names it
as "portal.Function" (it sits below the functions package).
Other packages use it through this module only.
"""

from portal.sources.access import SourceAuth, credentials_for, fetch, is_private, log_secrets, mirror_for
from portal.sources.checks import url_host
from portal.sources.credentials import Plan
from portal.sources.credentials import asked as asked_access
from portal.sources.credentials import plan as plan_access
from portal.sources.models import SourceAccess

__all__ = ["Plan", "SourceAccess", "SourceAuth", "asked_access", "credentials_for", "fetch", "is_private",
           "log_secrets", "mirror_for", "plan_access", "url_host"]
