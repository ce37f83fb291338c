"""Settings for pytest: the portal's own, in local mode, with a private state dir.

`make test` exports the test stack's variables (Redis, AWS plane); these
defaults only make a bare `pytest tests/test_models.py` work too.
"""

import os

from devstack.common import REPO_ROOT

os.environ.setdefault("SLIPWAY_LOCAL", "1")
os.environ.setdefault("SLIPWAY_STATE_DIR", str(REPO_ROOT / "var" / "pytest"))

from portal.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed only; never in production
SLIPWAY_HEALTH_CACHE_SECONDS = 0  # tests change what the checks see and ask again at once

# Real worker processes started by integration tests (SLIPWAY_WORKER_FOR_TESTS
# is set for them) must use the database pytest-django created, so it is named
# here: on SQLite a file, not memory, so they see the rows the tests write; on
# Postgres (DATABASE_URL, the `postgres` pass of `make test`) pytest-django's
# own "test_" + NAME, spelled out.
TEST_DB = STATE_DIR / "test-db.sqlite3"  # noqa: F405
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":  # noqa: F405
    TEST_DB_NAME = "test_" + DATABASES["default"]["NAME"]  # noqa: F405
else:
    TEST_DB_NAME = str(TEST_DB)
DATABASES["default"]["TEST"] = {"NAME": TEST_DB_NAME}  # noqa: F405
if os.environ.get("SLIPWAY_WORKER_FOR_TESTS") == "1":
    DATABASES["default"]["NAME"] = TEST_DB_NAME  # noqa: F405

# The cap on open previews per function is 2 in tests (the previews' end-to-end test fills it).
SLIPWAY_PREVIEW_CAP = 2
