"""Django settings, read from the environment (see README for every variable).

Defaults are the embedded local stack: SQLite, Redis on 127.0.0.1, the local
AWS plane. Production sets DATABASE_URL, REDIS_URL, DJANGO_SECRET_KEY and the
usual AWS variables, and leaves AWS_ENDPOINT_URL unset.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from deploy import budgets
from portal.core.env import database_from_url, env_bool, env_choice, env_int, env_list, env_networks, env_str, env_url

BASE_DIR = Path(__file__).resolve().parent.parent
STATE_DIR = Path(env_str("SLIPWAY_STATE_DIR", str(BASE_DIR / "var")))
# Git mirrors and build workspaces (the web side reads the mirrors to list commits).
WORK_DIR = STATE_DIR / "work"

DEBUG = env_bool("DJANGO_DEBUG", False)
# Local mode: the embedded stack. Allows local git paths as repositories and
# generates a persistent secret key; never on in production.
LOCAL_MODE = env_bool("SLIPWAY_LOCAL", False)
# Repositories given as a local path (a checkout mounted into the workers, as in the
# compose demo). On in local mode; elsewhere only on purpose: any path the workers can read.
SLIPWAY_ALLOW_LOCAL_REPOSITORIES = env_bool("SLIPWAY_ALLOW_LOCAL_REPOSITORIES", LOCAL_MODE)


def _outbound_networks():
    """Where requests to owner-given URLs (GitLab API, notification webhook, git
    repository) may go: networks and/or `public`. Link-local and metadata addresses
    never, whatever this lists (deploy/addresses.py)."""
    from deploy.addresses import Allowed

    default = ["public", "127.0.0.0/8", "::1/128"] if LOCAL_MODE else ["public"]
    try:  # set but empty (a bare `NAME=` in compose's .env): the default, not "nowhere"
        return Allowed.parse(env_list("SLIPWAY_OUTBOUND_ALLOWED_NETWORKS") or default)
    except ValueError as exc:
        raise ImproperlyConfigured(f"SLIPWAY_OUTBOUND_ALLOWED_NETWORKS: {exc}") from None


SLIPWAY_OUTBOUND_ALLOWED_NETWORKS = _outbound_networks()


def _secret_key() -> str:
    key = env_str("DJANGO_SECRET_KEY")
    if key:
        if len(key) < 50 or len(set(key)) < 5:
            raise ImproperlyConfigured("DJANGO_SECRET_KEY must be at least 50 random characters "
                                       "(python -c 'import secrets; print(secrets.token_urlsafe(50))')")
        return key
    if not LOCAL_MODE:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY is required unless SLIPWAY_LOCAL=1")
    # One random key per local state directory, kept so sessions survive restarts.
    path = STATE_DIR / "secret_key"
    if not path.exists():
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "ninja",
    "portal",
]

# Dotted paths below (middleware, URL conf, WSGI app, log formatter) are imports
# import-linter cannot see: the classes they name are the web layer's and the core's.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",  # static files from the web process itself
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "portal.api.limits.BodyCap",
    "portal.core.sending.BudgetMiddleware",  # one budget per request for the broker
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": database_from_url("DATABASE_URL", str(STATE_DIR / "slipway.sqlite3"))}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "portal-login"
LOGIN_REDIRECT_URL = "portal-functions"
LOGOUT_REDIRECT_URL = "portal-login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = STATE_DIR / "static"
WHITENOISE_AUTOREFRESH = LOCAL_MODE  # local mode serves from the apps' folders, no collectstatic needed
WHITENOISE_USE_FINDERS = LOCAL_MODE

if not LOCAL_MODE:  # hashed, compressed names; `manage.py collectstatic` at image build
    STORAGES = {"default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
                "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"}}

# --- HTTPS, for production behind a TLS-terminating proxy -----------------------
PRODUCTION = not LOCAL_MODE and not DEBUG
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", PRODUCTION)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
# The proxy says the original request was HTTPS; only trust it when one is in front.
# Behind it, /metrics no longer trusts loopback callers (portal/views/metrics.py).
SLIPWAY_BEHIND_TLS_PROXY = env_bool("SLIPWAY_BEHIND_TLS_PROXY", False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if SLIPWAY_BEHIND_TLS_PROXY else None
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", PRODUCTION)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]  # load balancers and Prometheus probe over plain HTTP
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 31_536_000 if PRODUCTION else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", False)
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else [
    # HSTS preload puts the whole domain on browsers' built-in lists, hard to undo: a decision for
    # whoever owns the domain (DJANGO_SECURE_HSTS_PRELOAD=1), not a default of an internal portal.
    "security.W021",
]

# JSON lines on stdout in production (one event a line, with deployment and function ids);
# plain text in local mode, where a person reads the terminal.
LOG_FORMAT = env_choice("SLIPWAY_LOG_FORMAT", "text" if LOCAL_MODE else "json", ("json", "text"))
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "portal.core.jsonlog.JsonFormatter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout",
                             **({"formatter": "json"} if LOG_FORMAT == "json" else {})}},
    "root": {"handlers": ["console"], "level": env_choice("SLIPWAY_LOG_LEVEL", "INFO",
                                                           ("DEBUG", "INFO", "WARNING", "ERROR"))},
}

# --- Celery -----------------------------------------------------------------
REDIS_URL = env_url("REDIS_URL", "redis://127.0.0.1:6379/0", schemes=("redis", "rediss"))
# The longest a deployment task may run (a cold arm64 build of a heavy image
# under QEMU is minutes, not hours). Soft limit first, so the task can record
# why it stopped; the hard limit kills it.
TASK_SOFT_TIME_LIMIT = env_int("SLIPWAY_TASK_SOFT_TIME_LIMIT", 1800, minimum=10)
TASK_TIME_LIMIT = env_int("SLIPWAY_TASK_TIME_LIMIT", TASK_SOFT_TIME_LIMIT + 120, minimum=10)
if TASK_TIME_LIMIT <= TASK_SOFT_TIME_LIMIT:
    raise ImproperlyConfigured("SLIPWAY_TASK_TIME_LIMIT must be greater than SLIPWAY_TASK_SOFT_TIME_LIMIT")
# With acks_late, Redis re-delivers an unacknowledged message after the
# visibility timeout: it must outlast the longest task or a running deployment
# would be started a second time.
VISIBILITY_TIMEOUT = TASK_TIME_LIMIT + 600

CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = None  # state lives in the database rows, not in Celery results
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
# A pool process that dies mid-task: the main process acknowledges the message (it is
# not run again) and settles the row it had claimed (workers/lost.py).
CELERY_TASK_REJECT_ON_WORKER_LOST = False
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = TASK_SOFT_TIME_LIMIT
CELERY_TASK_TIME_LIMIT = TASK_TIME_LIMIT
# Bounded waits on Redis (deploy/budgets.py): the read timeout bounds a publish to a frozen
# Redis, the connect timeout one to a host that drops packets.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": VISIBILITY_TIMEOUT, "socket_timeout": budgets.REDIS_TIMEOUT,
                                   "socket_connect_timeout": budgets.REDIS_TIMEOUT}
# A web request waits on the broker at most this in all (portal/core/sending.py); its publishes are not retried.
SLIPWAY_REQUEST_BUDGET = budgets.REQUEST_BUDGET
SLIPWAY_WEB_SEND_RETRIES = budgets.WEB_SEND_RETRIES
SLIPWAY_ROLLBACK_AWS_DEADLINE = budgets.ROLLBACK_DEADLINE  # a rollback fails aws-unreachable within this
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"visibility_timeout": VISIBILITY_TIMEOUT}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_DEFAULT_QUEUE = "deploys"
# Routing lives here only: requests send tasks by name (portal/deployments/queue.py), names of
# workers/tasks.py that import-linter cannot see.
CELERY_TASK_ROUTES = {
    "slipway.deploy": {"queue": "deploys"},
    "slipway.rollback": {"queue": "rollbacks"},  # never behind a build
    "slipway.sweep": {"queue": "rollbacks"},
    "slipway.promote_due": {"queue": "rollbacks"},  # a few queries a tick: never behind a build
    "slipway.gates_due": {"queue": "rollbacks"},  # likewise
    "slipway.rollout_tick": {"queue": "rollbacks"},  # a rollout's next weight is never behind a build
    "slipway.rollout_abort": {"queue": "rollbacks"},  # an abort puts the stable version back, like a rollback
    "slipway.console_cleanup": {"queue": "rollbacks"},  # housekeeping: small, never behind a build
    # Retention walks every function with AWS calls (minutes at scale) and would hold the
    # rollbacks worker's only process meanwhile; behind a build it only starts later.
    "slipway.retention": {"queue": "deploys"},
    # Missed pushes: each check waits on a git host for up to SLIPWAY_RECONCILE_TIMEOUT s, so never
    # in front of a rollback; behind a build they only start late, and expire rather than pile up.
    "slipway.reconcile_all": {"queue": "deploys"},
    "slipway.reconcile": {"queue": "deploys"},
    # Telling others (GitLab commit status, notifications) and drift checks: a queue of their own, so a
    # slow receiver never holds up a build or a rollback.
    "slipway.commit_status": {"queue": "feedback"},
    "slipway.notify": {"queue": "feedback"},
    "slipway.gitlab_deployment": {"queue": "feedback"},
    "slipway.drift_check": {"queue": "feedback"},
    # A preview's removal is a few AWS calls that never wait (a running preview sends it again when it
    # ends): never behind a build. The sweep lists every preview Lambda's aliases: behind builds is fine.
    "slipway.preview_cleanup": {"queue": "rollbacks"},
    "slipway.preview_sweep": {"queue": "deploys"},
    "slipway.preview_note": {"queue": "feedback"},
}
CELERY_WORKER_SEND_TASK_EVENTS = False
SWEEP_INTERVAL_SECONDS = env_int("SLIPWAY_SWEEP_INTERVAL", 30, minimum=5)
# A running deployment whose heartbeat is older than this lost its worker.
HEARTBEAT_STALE_SECONDS = env_int("SLIPWAY_HEARTBEAT_STALE", 120, minimum=10)
# Retention (portal/deployments/retention.py): per function, Lambda versions older than the last
# SLIPWAY_RETAIN_RELEASES releases that no alias uses, then the images no remaining
# version runs. SLIPWAY_RETENTION_DRY_RUN=1: the periodic run only reports.
SLIPWAY_RETAIN_RELEASES = env_int("SLIPWAY_RETAIN_RELEASES", 10, minimum=1)
SLIPWAY_RETENTION_DRY_RUN = env_bool("SLIPWAY_RETENTION_DRY_RUN", False)
RETENTION_INTERVAL_HOURS = env_int("SLIPWAY_RETENTION_INTERVAL_HOURS", 24, minimum=1)
# Missed pushes: how often every function's branch head is compared with what is live, and
# how long one `git ls-remote` may take (the page's button waits for it too).
SLIPWAY_RECONCILE_INTERVAL = env_int("SLIPWAY_RECONCILE_INTERVAL", 300, minimum=30)
SLIPWAY_RECONCILE_TIMEOUT = env_int("SLIPWAY_RECONCILE_TIMEOUT", 20, minimum=1)
# Soaking promotions (portal/deployments/promotion.py): how often the beat queues those whose soak ended.
SLIPWAY_PROMOTION_TICK = env_int("SLIPWAY_PROMOTION_TICK", 15, minimum=1)
# Gates (portal/deployments/gates.py): a held deploy or promotion ends cancelled `gate-expired`
# after SLIPWAY_GATE_MAX_WAIT s; an approval counts for SLIPWAY_APPROVAL_TTL s.
SLIPWAY_GATE_MAX_WAIT = env_int("SLIPWAY_GATE_MAX_WAIT", 7 * 24 * 3600, minimum=60)
SLIPWAY_APPROVAL_TTL = env_int("SLIPWAY_APPROVAL_TTL", 24 * 3600, minimum=60)
# How often the beat releases what a freeze that ended held, re-checks what awaits approval
# and expires what waited too long (gates.gates_due).
SLIPWAY_GATE_TICK = env_int("SLIPWAY_GATE_TICK", 15, minimum=1)
# Progressive delivery (portal/deployments/rollout.py): how often the beat advances rollouts,
# how long a rollout "minute" is (shortened in tests, never mocked), and how long a paused
# rollout may stay paused before it is aborted.
SLIPWAY_ROLLOUT_TICK = env_int("SLIPWAY_ROLLOUT_TICK", 3, minimum=1)
SLIPWAY_ROLLOUT_MINUTE = env_int("SLIPWAY_ROLLOUT_MINUTE", 60, minimum=1)
SLIPWAY_ROLLOUT_PAUSE_MAX = env_int("SLIPWAY_ROLLOUT_PAUSE_MAX", 3600, minimum=60)
CELERY_BEAT_SCHEDULE = {
    "rollout-tick": {"task": "slipway.rollout_tick", "schedule": float(SLIPWAY_ROLLOUT_TICK)},
    "sweep": {"task": "slipway.sweep", "schedule": float(SWEEP_INTERVAL_SECONDS)},
    "promote-due": {"task": "slipway.promote_due", "schedule": float(SLIPWAY_PROMOTION_TICK)},
    "gates-due": {"task": "slipway.gates_due", "schedule": float(SLIPWAY_GATE_TICK)},
    "console-cleanup": {"task": "slipway.console_cleanup", "schedule": 3600.0},
    "retention": {"task": "slipway.retention", "schedule": RETENTION_INTERVAL_HOURS * 3600.0},
    "reconcile": {"task": "slipway.reconcile_all", "schedule": float(SLIPWAY_RECONCILE_INTERVAL)},
    "drift-check": {"task": "slipway.drift_check", "schedule": float(env_int("SLIPWAY_DRIFT_INTERVAL", 900,
                                                                             minimum=60))},
}

# Preview deploys of merge requests (portal/deployments/previews.py): an idle preview's alias and
# URL are removed this many days after its last new commit; at most this many live previews per
# function (the oldest idle one makes room). Its Lambda runs with its own role, which must be
# allowed below (empty: previews cannot be enabled).
SLIPWAY_PREVIEW_TTL_DAYS = env_int("SLIPWAY_PREVIEW_TTL_DAYS", 7, minimum=1)
SLIPWAY_PREVIEW_CAP = env_int("SLIPWAY_PREVIEW_CAP", 10, minimum=1)
# How often the preview sweep runs (TTL, removals to retry, mr-* aliases nobody owns), in seconds.
SLIPWAY_PREVIEW_SWEEP_INTERVAL = env_int("SLIPWAY_PREVIEW_SWEEP_INTERVAL", 3600, minimum=10)
CELERY_BEAT_SCHEDULE["preview-sweep"] = {"task": "slipway.preview_sweep",
                                         "schedule": float(SLIPWAY_PREVIEW_SWEEP_INTERVAL)}

# --- AWS and builds -----------------------------------------------------------
# Unset against real AWS: boto3's own credential chain and region apply.
AWS_ENDPOINT_URL = env_url("AWS_ENDPOINT_URL", "", schemes=("http", "https"))
AWS_REGION = env_str("AWS_REGION", env_str("AWS_DEFAULT_REGION", "us-east-1"))
# The local plane advertises a registry host that is not reachable; this
# overrides the host:port used to push and pull (empty: use what ECR says).
SLIPWAY_REGISTRY_HOST = env_str("SLIPWAY_REGISTRY_HOST")
SLIPWAY_BUILDKIT_DOCKER = env_str("SLIPWAY_BUILDKIT_DOCKER", "/usr/bin/docker")
# One Docker host per architecture: arm64 builds on a native arm64 machine.
SLIPWAY_DOCKER_HOSTS = {
    "arm64": env_str("SLIPWAY_DOCKER_HOST_ARM64", env_str("DOCKER_HOST")),
    "x86_64": env_str("SLIPWAY_DOCKER_HOST_X86_64", env_str("DOCKER_HOST")),
}
# ssh:// builders: their host keys, pinned (known_hosts lines, or the path of a file
# holding them), and the key Slipway logs in with (empty: ssh's default identities).
SLIPWAY_SSH_KNOWN_HOSTS = env_str("SLIPWAY_SSH_KNOWN_HOSTS")
SLIPWAY_SSH_IDENTITY_FILE = env_str("SLIPWAY_SSH_IDENTITY_FILE")
# Base images passed as BASE_IMAGE to function builds; empty: the Dockerfile's default.
SLIPWAY_BASE_IMAGES = {
    "arm64": env_str("SLIPWAY_BASE_IMAGE_ARM64"),
    "x86_64": env_str("SLIPWAY_BASE_IMAGE_X86_64"),
}
SLIPWAY_PYTHON_VERSION = env_str("SLIPWAY_PYTHON_VERSION")
# An image with pip for the *build* platform, passed as BUILDER_IMAGE: Dockerfiles
# resolve target-arch wheels natively in a `FROM --platform=$BUILDPLATFORM` stage.
SLIPWAY_BUILDER_IMAGE = env_str("SLIPWAY_BUILDER_IMAGE")
SLIPWAY_DEFAULT_EXECUTION_ROLE = env_str("SLIPWAY_DEFAULT_EXECUTION_ROLE")

# The execution role of every preview Lambda (a merge request's unreviewed code never runs
# with an environment's role); it must be one of SLIPWAY_ALLOWED_EXECUTION_ROLES.
SLIPWAY_PREVIEW_EXECUTION_ROLE = env_str(
    "SLIPWAY_PREVIEW_EXECUTION_ROLE", "arn:aws:iam::000000000000:role/slipway-preview" if LOCAL_MODE else "")

# What a registration may point at, so nobody can take over a Lambda or pass a
# role the platform team did not hand to Slipway. Prefixes: a name must start
# with one of them (an empty list allows none). Roles: exact ARNs, or patterns
# with a trailing `*`; an empty role on a function means the default role.
SLIPWAY_ALLOWED_LAMBDA_PREFIXES = env_list("SLIPWAY_ALLOWED_LAMBDA_PREFIXES", ["slipway-"])
SLIPWAY_ALLOWED_ECR_PREFIXES = env_list("SLIPWAY_ALLOWED_ECR_PREFIXES", ["slipway/"])
SLIPWAY_ALLOWED_EXECUTION_ROLES = env_list(
    "SLIPWAY_ALLOWED_EXECUTION_ROLES",
    ["arn:aws:iam::000000000000:role/*"] if LOCAL_MODE else
    [SLIPWAY_DEFAULT_EXECUTION_ROLE] if SLIPWAY_DEFAULT_EXECUTION_ROLE else [])
# The JSON API: deploys a token (or a signed-in user) may trigger per window, and the body cap.
SLIPWAY_API_DEPLOY_RATE = env_int("SLIPWAY_API_DEPLOY_RATE", 30, minimum=0)  # 0: no limit
SLIPWAY_API_DEPLOY_WINDOW = env_int("SLIPWAY_API_DEPLOY_WINDOW", 60, minimum=1)
SLIPWAY_API_MAX_BODY = env_int("SLIPWAY_API_MAX_BODY", 64 * 1024, minimum=1024)
# /metrics: open to this bearer token, or to clients in these networks (CIDRs).
SLIPWAY_METRICS_TOKEN = env_str("SLIPWAY_METRICS_TOKEN")
SLIPWAY_METRICS_NETWORKS = env_networks("SLIPWAY_METRICS_NETWORKS", ["127.0.0.1/32", "::1/128"])
# The test console. Images live in the database (or, while an invoke needs it, in the
# console bucket), never on a web host's disk. An event over Lambda's synchronous payload
# limit goes through the bucket: named here on AWS, created if missing on the local plane.
SLIPWAY_CONSOLE_BUCKET = env_str("SLIPWAY_CONSOLE_BUCKET", "slipway-console" if LOCAL_MODE else "")
SLIPWAY_CONSOLE_MAX_UPLOAD = env_int("SLIPWAY_CONSOLE_MAX_UPLOAD", 20 * 1024 * 1024, minimum=1024)
# The detector's own pixel cap (function/src/detector/sniff.py MAX_PIXELS; a test keeps them equal).
# A function whose environment sets DETECTOR_MAX_PIXELS lower gets that one.
SLIPWAY_CONSOLE_MAX_PIXELS = env_int("SLIPWAY_CONSOLE_MAX_PIXELS", 40_000_000, minimum=1)
SLIPWAY_CONSOLE_PAYLOAD_LIMIT = env_int("SLIPWAY_CONSOLE_PAYLOAD_LIMIT", 6 * 1024 * 1024, minimum=1024)
# Uploaded images no golden case holds are removed this long after their last use.
SLIPWAY_CONSOLE_KEEP_IMAGES_HOURS = env_int("SLIPWAY_CONSOLE_KEEP_IMAGES_HOURS", 24, minimum=1)

# Only staff may register functions (default: any signed-in user, who becomes its owner).
SLIPWAY_REGISTER_STAFF_ONLY = env_bool("SLIPWAY_REGISTER_STAFF_ONLY", False)

# /healthz and /health/ answer from one probe run per this many seconds per process
# (anyone may call /healthz, and each run pings the broker and calls AWS). 0: every call probes.
SLIPWAY_HEALTH_CACHE_SECONDS = env_int("SLIPWAY_HEALTH_CACHE_SECONDS", 5, minimum=0)
SLIPWAY_HEALTH_TIMEOUT = budgets.HEALTH_TIMEOUT  # /healthz answers within this whatever hangs

# Health checks beyond the portal's own, by dotted path. Local mode adds the
# embedded stack's builder side (Docker engine, QEMU, base images); production
# leaves them out: the web process does not build. Dotted paths: a portal -> devstack
# dependency import-linter cannot see (pyproject.toml forbids only the import).
SLIPWAY_EXTRA_HEALTH_CHECKS = {
    "docker": "devstack.health.check_docker",
    "qemu_arm64": "devstack.health.check_qemu",
    "base_images": "devstack.health.check_base_images",
} if LOCAL_MODE else {}

# --- Webhooks ------------------------------------------------------------------


def _fernet_keys() -> list[str]:
    """Keys for the credentials Slipway must read back (webhook signing keys):
    SLIPWAY_FERNET_KEY, comma-separated for rotation (the first encrypts, every
    one decrypts). Local mode keeps one under the state directory; production
    without it cannot store signing keys (the page says so) but runs."""
    from cryptography.fernet import Fernet

    keys = env_list("SLIPWAY_FERNET_KEY")
    if not keys and LOCAL_MODE:
        path = STATE_DIR / "fernet_key"
        if not path.exists():
            STATE_DIR.mkdir(parents=True, exist_ok=True)
            path.write_bytes(Fernet.generate_key())
            path.chmod(0o600)
        keys = [path.read_text().strip()]
    for key in keys:
        try:
            Fernet(key)
        except ValueError:
            raise ImproperlyConfigured("SLIPWAY_FERNET_KEY holds a value that is not a Fernet key "
                                       "(32 url-safe base64-encoded bytes)") from None
    return keys


SLIPWAY_FERNET_KEYS = _fernet_keys()
# GitLab does not send a payload whose JSON is over 25 MiB (its encoder's limit), so
# the cap takes anything it sends; above it: 413 without reading the body.
SLIPWAY_WEBHOOK_MAX_BODY_BYTES = env_int("SLIPWAY_WEBHOOK_MAX_BODY_BYTES", 25 * 1024 * 1024, minimum=64 * 1024)
# Refused deliveries (not authenticated, too large) are kept in a ring of this many per function,
# and one more for unknown names; the delivery log counts the ones beyond it.
SLIPWAY_WEBHOOK_REJECTED_KEPT = env_int("SLIPWAY_WEBHOOK_REJECTED_KEPT", 50, minimum=1)

# --- Feedback: GitLab commit status, notifications, drift -------------------------------
# Links in commit statuses, webhooks and emails point here (the portal as its users reach it).
SLIPWAY_BASE_URL = env_url("SLIPWAY_BASE_URL", f"http://127.0.0.1:{env_int('SLIPWAY_WEB_PORT', 8000, minimum=1)}"
                           if LOCAL_MODE else "", schemes=("http", "https")).rstrip("/")
# Each outgoing request (commit status, webhook, email) gets this long, this many times, with
# backoff between attempts (1 s, 2 s, 4 s, ...): a slow receiver costs the feedback queue, never a deploy.
SLIPWAY_NOTIFY_TIMEOUT = env_int("SLIPWAY_NOTIFY_TIMEOUT", 5, minimum=1)
SLIPWAY_NOTIFY_ATTEMPTS = env_int("SLIPWAY_NOTIFY_ATTEMPTS", 3, minimum=1)
SLIPWAY_NOTIFY_BACKOFF = float(env_int("SLIPWAY_NOTIFY_BACKOFF_MS", 1000, minimum=0)) / 1000
# The name of Slipway's commit status in GitLab (one per function: "slipway/<function>").
SLIPWAY_GITLAB_STATUS_NAME = env_str("SLIPWAY_GITLAB_STATUS_NAME", "slipway")
# Email: a file per message under the state directory in local mode; SMTP otherwise.
EMAIL_BACKEND = env_str("DJANGO_EMAIL_BACKEND", "django.core.mail.backends.filebased.EmailBackend" if LOCAL_MODE
                        else "django.core.mail.backends.smtp.EmailBackend")
EMAIL_FILE_PATH = str(STATE_DIR / "mail")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = SLIPWAY_NOTIFY_TIMEOUT
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "slipway@localhost")

# Test-only fault injection at the boto3 seam (deploy/aws.py); refused otherwise.
if env_str("SLIPWAY_FAULTS_FILE") and not env_bool("SLIPWAY_TESTING", False):
    raise ImproperlyConfigured("SLIPWAY_FAULTS_FILE is a test-only switch; it is refused without SLIPWAY_TESTING=1")
