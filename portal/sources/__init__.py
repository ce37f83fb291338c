"""Sources: reading a function's repository — its credentials, the mirror, the
fetch, and the checks of deploy keys, tokens and known_hosts.

Owns: SourceAuth (how a repository is read), access (credentials, mirror, fetch;
does I/O through deploy.source), checks (pure validation).
May import: portal.core, deploy/. Knows a function only by its attributes.
Other packages use it through this module only.
"""

from portal.sources.access import SourceAuth, credentials_for, fetch, is_private, log_secrets, mirror_for
from portal.sources.checks import TOKEN, USERNAME, known_hosts_problem, private_key_problem, url_host

__all__ = [
    "SourceAuth",
    "TOKEN",
    "USERNAME",
    "credentials_for",
    "fetch",
    "is_private",
    "known_hosts_problem",
    "log_secrets",
    "mirror_for",
    "private_key_problem",
    "url_host",
]
