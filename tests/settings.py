"""Settings for pytest: the portal's own, in local mode, with a private state dir.

`make test` exports the test stack's variables (Redis, AWS plane); these
defaults only make a bare `pytest tests/test_models.py` work too.
"""

import os

from deploy.local.common import REPO_ROOT

os.environ.setdefault("SLIPWAY_LOCAL", "1")
os.environ.setdefault("SLIPWAY_STATE_DIR", str(REPO_ROOT / "var" / "pytest"))

from portal.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed only; never in production

# A file, not memory, so that real worker processes started by integration
# tests see the rows the tests write (SLIPWAY_WORKER_FOR_TESTS is set for them).
TEST_DB = STATE_DIR / "test-db.sqlite3"  # noqa: F405
DATABASES["default"]["TEST"] = {"NAME": str(TEST_DB)}  # noqa: F405
if os.environ.get("SLIPWAY_WORKER_FOR_TESTS") == "1":
    DATABASES["default"]["NAME"] = str(TEST_DB)  # noqa: F405
