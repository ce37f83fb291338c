"""The Celery app, configured from Django settings (CELERY_* names).

Run a worker with `celery -A workers worker -Q deploys,rollbacks` and the
sweeper schedule with `celery -A workers beat`.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("slipway")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["workers"], related_name="tasks")
