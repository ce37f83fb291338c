"""The Celery app, configured from Django settings (CELERY_* names).

It lives on the web side so that requests can send tasks by name without
importing workers/: routing is in settings (CELERY_TASK_ROUTES), the task
code is found by the worker alone (`celery -A workers worker`), which
autodiscovers workers.tasks.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("slipway")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["workers"], related_name="tasks")  # by name, in the worker: invisible to import-linter

# Task names: the web depends on workers/ through these strings, which import-linter
# cannot see (the contracts in pyproject.toml only say the web never *imports* workers/).
DEPLOY_TASK = "slipway.deploy"
ROLLBACK_TASK = "slipway.rollback"
SWEEP_TASK = "slipway.sweep"
PROMOTE_DUE_TASK = "slipway.promote_due"
GATES_DUE_TASK = "slipway.gates_due"
# Progressive delivery (portal/deployments/rollout.py): the beat's tick, and an abort.
ROLLOUT_TICK_TASK = "slipway.rollout_tick"
ROLLOUT_ABORT_TASK = "slipway.rollout_abort"
CONSOLE_CLEANUP_TASK = "slipway.console_cleanup"
RETENTION_TASK = "slipway.retention"
RECONCILE_ALL_TASK = "slipway.reconcile_all"
RECONCILE_TASK = "slipway.reconcile"
COMMIT_STATUS_TASK = "slipway.commit_status"
NOTIFY_TASK = "slipway.notify"
GITLAB_DEPLOYMENT_TASK = "slipway.gitlab_deployment"
DRIFT_CHECK_TASK = "slipway.drift_check"
# Merge requests' previews (portal/deployments/preview_cleanup.py, portal/feedback/preview_notes.py).
PREVIEW_CLEANUP_TASK = "slipway.preview_cleanup"
PREVIEW_SWEEP_TASK = "slipway.preview_sweep"
PREVIEW_NOTE_TASK = "slipway.preview_note"
