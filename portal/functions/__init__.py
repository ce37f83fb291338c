"""Functions: the registry of Lambda functions, their members and roles, audit
events, API tokens, the settings form, and the one place a function's secret
values are known (masking).

Owns: models Function, Environment, Membership, AuditEvent, ApiToken; access (roles);
registry (register, update, archive, environments, members); forms; masking.
May import: portal.sources, portal.core, deploy/. Other packages use it through
this module only.
"""

from portal.functions.access import APPROVING_ROLES
from portal.functions.fields import JSONObjectField
from portal.functions.forms import EnvironmentForm, role_allowed, user_error
from portal.functions.masking import MASK, environment_secrets, scrub, secret_values, secrets_wanted
from portal.functions.models import (
    PREVIEW_POSITION,
    Architecture,
    AuditEvent,
    Environment,
    Function,
    Membership,
    PreviewPolicy,
)
from portal.functions.previews import PreviewsForm, preview_environment, save_previews
from portal.functions.registry import (
    archive_function,
    create_environment,
    delete_environment,
    environment_changing,
    register_function,
    remove_member,
    restore_function,
    set_member,
    store_new_secret,
    transfer_ownership,
    update_environment,
    update_function,
)

__all__ = [
    "APPROVING_ROLES",
    "Architecture",
    "AuditEvent",
    "Environment",
    "EnvironmentForm",
    "Function",
    "JSONObjectField",
    "MASK",
    "Membership",
    "PREVIEW_POSITION",
    "PreviewsForm",
    "preview_environment",
    "save_previews",
    "PreviewPolicy",
    "archive_function",
    "create_environment",
    "delete_environment",
    "environment_changing",
    "register_function",
    "remove_member",
    "restore_function",
    "role_allowed",
    "scrub",
    "environment_secrets",
    "secret_values",
    "secrets_wanted",
    "set_member",
    "store_new_secret",
    "transfer_ownership",
    "update_environment",
    "update_function",
    "user_error",
]
