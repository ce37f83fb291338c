from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = "Slipway"

    def ready(self) -> None:
        # The feedback and hooks packages react to the deployments package's events
        # (portal/deployments/events.py), which cannot import them: wired here.
        from django.db.models.signals import post_save

        from portal import functions, models
        from portal.deployments import events, guards, preview_cleanup
        from portal.feedback import receivers as feedback_receivers
        from portal.hooks import receivers as hooks_receivers

        feedback_receivers.connect()
        hooks_receivers.connect()
        # A closed preview's alias, URL and statements are removed (a task sent after the close commits).
        events.preview_closed.connect(preview_cleanup.on_closed, dispatch_uid="portal.preview_removal")
        # The functions registry asks the deployments package before an environment in use
        # is deleted or the promotion order changes (it cannot import it).
        functions.environment_changing.connect(guards.refuse_environment_in_use,
                                               dispatch_uid="portal.environment_in_use")
        # A function's side rows (hook keys, source access, feedback settings) are
        # made with it, whichever entry point made it.
        post_save.connect(models.make_side_rows_on_create, sender=models.Function, dispatch_uid="portal.side_rows")
        # An environment's drift state is made with it the same way.
        post_save.connect(models.make_environment_side_rows_on_create, sender=models.Environment,
                          dispatch_uid="portal.environment_side_rows")
