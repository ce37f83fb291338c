from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = "Slipway"

    def ready(self) -> None:
        # The feedback and hooks packages react to the deployments package's events
        # (portal/deployments/events.py), which cannot import them: wired here.
        from portal.feedback import receivers as feedback_receivers
        from portal.hooks import receivers as hooks_receivers

        feedback_receivers.connect()
        hooks_receivers.connect()
