"""Freeze windows: when one is active (GitLab's deploy-freeze model).

A recurring window has a start cron, an end cron and an IANA time zone. It is
active at instant t when the latest start occurrence at or before t is later than
the latest end occurrence at or before t, both taken in the zone's wall-clock
time. Across daylight-saving changes: an occurrence in a skipped hour fires when
the gap ends (croniter's behaviour), and one in a repeated hour fires at its first
occurrence (the earlier of the two instants). A one-off window is active from
starts_at until ends_at. Global windows (no environment) apply to every
environment. Cron expressions are croniter's; nothing here parses them by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, croniter
from django.db.models import Q
from django.utils import timezone

from portal.deployments.models import FreezeWindow
from portal.functions import Environment

# croniter looks back this many occurrences at most for the latest one before t (a start
# cron that never fired in that span has, for this purpose, never fired).
_HORIZON = timedelta(days=400)


def valid_cron(expression: str) -> bool:
    return croniter.is_valid(expression)


def valid_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def latest_at_or_before(expression: str, zone: str, at: datetime) -> datetime | None:
    """The latest instant at or before `at` when `expression` fires in `zone`'s wall-clock
    time; an occurrence in a repeated hour counts at its first instant. None: none within
    the horizon."""
    local = at.astimezone(ZoneInfo(zone))
    if local.fold and local.replace(fold=0).utcoffset() != local.utcoffset():
        # `at` is in a repeated hour's second pass: every wall-clock time of that hour fired in
        # the first pass, so the latest is the latest before the first pass ended. (croniter,
        # asked from a second-pass time, skips the hour's later wall-clock times.)
        return latest_at_or_before(expression, zone, _second_pass_start(at, ZoneInfo(zone)) - timedelta(seconds=1))
    try:
        # croniter steps back from just after `at`, so an occurrence exactly at `at` counts.
        found = croniter(expression, local + timedelta(seconds=1)).get_prev(datetime)
    except (CroniterBadCronError, CroniterBadDateError):  # invalid, or fires on no date (30 February)
        return None
    if found is None:
        return None
    # Compare instants in UTC: aware datetimes sharing one tzinfo compare by wall-clock time.
    first = found.replace(fold=0).astimezone(UTC)  # a repeated wall-clock time's first instant
    found = min(found.astimezone(UTC), first)
    if at.astimezone(UTC) - found > _HORIZON:
        return None
    return found


def _second_pass_start(at: datetime, zone: ZoneInfo) -> datetime:
    """The instant a repeated hour's second pass began, for an `at` inside it (a second's
    precision: the earliest instant before `at` whose wall-clock time in `zone` is a repeat)."""
    local = at.astimezone(zone)
    span = int((local.replace(fold=0).utcoffset() - local.utcoffset()).total_seconds())
    low, high = 0, span  # seconds back from `at`: `low` is inside the second pass, `high` is not
    while high - low > 1:
        middle = (low + high) // 2
        if (at - timedelta(seconds=middle)).astimezone(zone).fold:
            low = middle
        else:
            high = middle
    return at - timedelta(seconds=low)


def active(window: FreezeWindow, at: datetime | None = None) -> bool:
    """Whether `window` holds deployments at instant `at` (default: now)."""
    at = at or timezone.now()
    if not window.start_cron:
        return window.starts_at <= at < window.ends_at
    start = latest_at_or_before(window.start_cron, window.timezone, at)
    if start is None:
        return False
    end = latest_at_or_before(window.end_cron, window.timezone, at)
    return end is None or start > end


def windows_for(environment: Environment):
    """The freeze windows that apply to `environment`: its own and the global ones."""
    return FreezeWindow.objects.filter(Q(environment=environment) | Q(environment__isnull=True))


def active_freeze(environment: Environment, at: datetime | None = None) -> FreezeWindow | None:
    """The first freeze window holding `environment` at `at` (default: now); None: not frozen."""
    at = at or timezone.now()
    return next((window for window in windows_for(environment).order_by("pk") if active(window, at)), None)


@dataclass
class Shown:
    """A freeze as the function page shows it: holding now (until `ends`), or the next one."""

    window: FreezeWindow
    active: bool
    starts: datetime | None  # the next start (None while active)
    ends: datetime | None  # when the active one ends next (None: not within the horizon)


def _next(expression: str, zone: str, at: datetime) -> datetime | None:
    try:
        found = croniter(expression, at.astimezone(ZoneInfo(zone))).get_next(datetime)
    except (CroniterBadCronError, CroniterBadDateError):
        return None
    return found.astimezone(UTC)


def current_or_next(environment: Environment, at: datetime | None = None) -> Shown | None:
    """The freeze holding `environment` at `at` (default now) and when it ends, else the one
    that starts next; None when none is due. For display: the gates ask active_freeze()."""
    at = at or timezone.now()
    windows = list(windows_for(environment).order_by("pk"))
    for window in windows:
        if active(window, at):
            ends = window.ends_at if not window.start_cron else _next(window.end_cron, window.timezone, at)
            return Shown(window, True, None, ends)
    upcoming = []
    for window in windows:
        starts = (window.starts_at if window.starts_at and window.starts_at > at else None) if not window.start_cron \
            else _next(window.start_cron, window.timezone, at)
        if starts is not None:
            upcoming.append(Shown(window, False, starts, None))
    return min(upcoming, key=lambda shown: shown.starts, default=None)
