"""Feedback: what Slipway tells the outside world about deployments — GitLab commit
statuses, notifications (email, webhook), and drift between Lambda and what
Slipway last left there.

Owns: model NotificationAttempt; status (what to report, sent by task name; the
commit status name of each environment);
delivery (posting to GitLab and webhooks, sending mail: does I/O); drift (reads
Lambda: does I/O); configure; forms; receivers (the deployments package's events).
May import: portal.deployments, portal.functions, portal.core, deploy/.
Other packages use it through this module only.
"""

from portal.feedback.configure import set_notify_webhook_secret, update_feedback
from portal.feedback.status import status_name

__all__ = ["set_notify_webhook_secret", "status_name", "update_feedback"]
