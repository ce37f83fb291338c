"""Rate limits held in Redis, so they hold across web processes and hosts.

A fixed window per key: `SLIPWAY_API_DEPLOY_RATE` deploys per
`SLIPWAY_API_DEPLOY_WINDOW` seconds for each token (or signed-in user).
Redis being down lets requests through (logged): deploying matters more than
counting.
"""

from __future__ import annotations

import logging
import threading

from django.conf import settings

from deploy.errors import SlipwayError

log = logging.getLogger(__name__)
_lock = threading.Lock()
_client = None


def _redis():
    global _client
    with _lock:
        if _client is None:
            import redis

            _client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=0.5, socket_connect_timeout=0.5)
        return _client


class Limited(SlipwayError):
    """Over the limit: 429 `rate-limited`, with Retry-After."""

    def __init__(self, retry_after: int, message: str):
        super().__init__("rate-limited", message, status=429, headers={"Retry-After": str(retry_after)})
        self.retry_after = retry_after


def hit(key: str, limit: int, window: int, what: str = "requests") -> None:
    """Count one event under `key`; Limited when over `limit` `what` in the current window."""
    import redis

    if limit <= 0:
        return
    name = f"slipway:ratelimit:{key}"
    try:
        pipe = _redis().pipeline()
        pipe.incr(name)
        pipe.expire(name, window, nx=True)
        pipe.ttl(name)
        count, _, ttl = pipe.execute()
    except redis.RedisError as exc:
        log.warning("rate limit not applied (%s): %s", key, exc)
        return
    if count > limit:
        retry_after = max(int(ttl), 1)
        raise Limited(retry_after, f"at most {limit} {what} per {window} s; retry after {retry_after} s")


def check_deploy(who) -> None:
    """One deploy by `who` (an ApiToken or a user); Limited past the configured rate."""
    kind = "token" if who.__class__.__name__ == "ApiToken" else "user"
    hit(f"deploy:{kind}:{who.pk}", settings.SLIPWAY_API_DEPLOY_RATE, settings.SLIPWAY_API_DEPLOY_WINDOW, "deploys")
