"""Hooks: GitLab webhook deliveries — the log, the dedupe keys, the ring of
refused ones, signatures and tokens, the decision whether a push or tag deploys,
and replay.

Owns: models WebhookDelivery, DeliveryRing, SeenSignature; gitlab (signatures,
decisions); keys (webhook tokens); replay; caused (the automatic promotions a
delivery's deployment led to); forms; receivers.
May import: portal.deployments, portal.functions, portal.core, deploy/. The
receiver itself is a view (portal/views/webhooks.py).
Other packages use it through this module only.
"""

from portal.hooks.caused import promotions_caused
from portal.hooks.keys import remove_webhook_token, set_webhook_secret, set_webhook_signing_token
from portal.hooks.replay import replay_delivery

__all__ = ["promotions_caused", "remove_webhook_token", "replay_delivery", "set_webhook_secret",
           "set_webhook_signing_token"]
