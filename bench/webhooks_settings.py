"""The portal's production settings, plus the durable baseline view to compare with (bench/webhooks.py)."""

from portal.settings import *  # noqa: F403

ROOT_URLCONF = "bench.webhooks_urls"
