"""`celery -A workers` finds the app here; it is defined on the web side
(portal/celery.py) so requests can send tasks by name without importing workers/."""

from portal.celery import app

__all__ = ["app"]
