"""What the deployments package announces, for packages above it to act on.

The deployments package must not import the packages that report on it (feedback
posts GitLab commit statuses and notifications, hooks marks webhook deliveries),
or the two would import each other. So it sends these Django signals, and the
receivers live with the packages that react: portal/feedback/receivers.py and
portal/hooks/receivers.py, connected by portal/apps.py when Django starts — a
dependency import checkers cannot see. Receivers run in the sender's transaction;
anything they send leaves after commit (transaction.on_commit).
"""

from django.dispatch import Signal

# deployment=: its status moved — queued (and its commit known), soaking (a promotion
# waiting out its environment's soak time), running, canceled.
status_changed = Signal()
# deployment=: it entered its first Lambda step (Deployment.enter_lambda: a deploy's or a
# promotion's update, a rollback's alias move); GitLab's deployment starts running here.
lambda_entered = Signal()
# deployment=: it ended, by its worker, the web's rollback or the sweeper.
finished = Signal()
# function=, queued=: these queued deployments (a queryset, read before the update) are
# about to be superseded by a newer request.
superseding = Signal()
# function=, by=, environment=: auto-deploy of `environment` (the Environment row whose
# pause a rollback set) was resumed, by a user's name or the trigger.
resumed = Signal()
# deployment=, written=: its alias moved; `written` is what it wrote to $LATEST (a dict),
# or None when it moved the alias alone (a rollback to a version that exists); optional
# version=: the version the alias serves now when it is not the deployment's (an aborted rollout).
shifted = Signal()
# deployment=, by=, reason=: an owner let this frozen deployment through its freeze
# (portal/deployments/freezing.py override), `by` a user's name.
freeze_overridden = Signal()
# deployment=, reason=: the worker skipped it as older than one live or queued.
stale = Signal()
# deployment=, approval=: a user approved or rejected a held deployment (portal/deployments/approving.py);
# a rejected one has already ended.
decided = Signal()
# preview=: a merge request's preview was removed from its Lambda (portal/deployments/preview_cleanup.py):
# its merge request's note says so.
preview_changed = Signal()
# preview=: a merge request's preview was closed (closed or merged in GitLab, or removed by a
# person) under its row lock: its alias, URL and permission statements are to be removed
# (the clean-up runs in the merge request's queue, under the preview Lambda's lock).
preview_closed = Signal()
