"""When a freeze window is active (portal/deployments/freezes.py), with fixed clocks.

The DST cases name the UTC instants a window opens and closes. Europe/Berlin, 2026: on
29 March 02:00–03:00 local does not exist (at 01:00 UTC, 02:00 CET becomes 03:00 CEST),
so a start or end in that hour fires at 01:00 UTC; on 25 October 02:00–03:00 local
happens twice (00:00–01:00 UTC in CEST, then 01:00–02:00 UTC in CET), so a start or end
there fires at its first occurrence, 00:xx UTC.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portal.deployments import freezes
from portal.models import FreezeWindow

BERLIN = "Europe/Berlin"


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def recurring(start: str, end: str, zone: str = BERLIN) -> FreezeWindow:
    return FreezeWindow(reason="quiet", start_cron=start, end_cron=end, timezone=zone)


def opens_and_closes(window: FreezeWindow, opens: str, closes: str) -> None:
    """Inactive a second before `opens`, active at it and a second before `closes`, inactive at it."""
    start, end = utc(opens), utc(closes)
    assert not freezes.active(window, start - timedelta(seconds=1))
    assert freezes.active(window, start)
    assert freezes.active(window, end - timedelta(seconds=1))
    assert not freezes.active(window, end)


# --- The skipped hour: 2026-03-29, Europe/Berlin ----------------------------------------------


def test_a_start_in_the_skipped_hour_opens_when_the_gap_ends():
    # 02:30 local does not exist that night: it opens at 03:00 CEST = 01:00 UTC; closes 06:00 CEST.
    opens_and_closes(recurring("30 2 29 3 *", "0 6 29 3 *"), "2026-03-29T01:00", "2026-03-29T04:00")


def test_an_end_in_the_skipped_hour_closes_when_the_gap_ends():
    # Opens 01:30 CET = 00:30 UTC; 02:15 local is skipped: closes at 01:00 UTC.
    opens_and_closes(recurring("30 1 29 3 *", "15 2 29 3 *"), "2026-03-29T00:30", "2026-03-29T01:00")


def test_a_daily_window_over_the_skipped_hour_keeps_its_local_times():
    # 22:00–02:30 every night: the night of the 28th ends at the gap's end (01:00 UTC); the next
    # night opens at 22:00 CEST = 20:00 UTC, an hour earlier in UTC than the night before.
    window = recurring("0 22 * * *", "30 2 * * *")
    opens_and_closes(window, "2026-03-28T21:00", "2026-03-29T01:00")
    opens_and_closes(window, "2026-03-29T20:00", "2026-03-30T00:30")


# --- The repeated hour: 2026-10-25, Europe/Berlin ---------------------------------------------


def test_a_start_in_the_repeated_hour_opens_at_its_first_occurrence():
    # 02:30 local first happens at 00:30 UTC (CEST); the window stays open through the second
    # 02:30 (01:30 UTC) and closes at 04:00 CET = 03:00 UTC.
    window = recurring("30 2 25 10 *", "0 4 25 10 *")
    opens_and_closes(window, "2026-10-25T00:30", "2026-10-25T03:00")
    assert freezes.active(window, utc("2026-10-25T01:30"))
    assert freezes.active(window, utc("2026-10-25T01:00"))  # 02:00 again, before the second 02:30


def test_an_end_in_the_repeated_hour_closes_at_its_first_occurrence():
    # Opens 01:00 CEST = 23:00 UTC the day before; 02:30 local first happens at 00:30 UTC: it
    # closes then and does not reopen in the second pass of the hour.
    window = recurring("0 1 25 10 *", "30 2 25 10 *")
    opens_and_closes(window, "2026-10-24T23:00", "2026-10-25T00:30")
    for minute in ("00:45", "01:00", "01:29", "01:30", "01:59", "02:00"):
        assert not freezes.active(window, utc(f"2026-10-25T{minute}")), minute


def test_a_window_inside_the_repeated_hour_is_open_once():
    # 02:10–02:40 local: 00:10–00:40 UTC; the second pass (01:10–01:40 UTC) is not frozen.
    window = recurring("10 2 25 10 *", "40 2 25 10 *")
    opens_and_closes(window, "2026-10-25T00:10", "2026-10-25T00:40")
    for minute in ("01:00", "01:10", "01:25", "01:40", "01:59"):
        assert not freezes.active(window, utc(f"2026-10-25T{minute}")), minute


def test_a_second_pass_instant_sees_every_occurrence_of_the_first_pass():
    # Every 15 minutes in hour 2: at 01:00 UTC (the second 02:00) the latest is the first 02:45.
    assert freezes.latest_at_or_before("*/15 2 * * *", BERLIN, utc("2026-10-25T01:00")) == utc("2026-10-25T00:45")
    assert freezes.latest_at_or_before("30 2 * * *", BERLIN, utc("2026-10-25T01:00")) == utc("2026-10-25T00:30")
    assert freezes.latest_at_or_before("59 2 25 10 *", BERLIN, utc("2026-10-25T01:59")) == utc("2026-10-25T00:59")


def test_the_hour_after_the_repeated_one_is_ordinary():
    window = recurring("0 3 25 10 *", "0 5 25 10 *")  # 03:00 CET = 02:00 UTC, 05:00 CET = 04:00 UTC
    opens_and_closes(window, "2026-10-25T02:00", "2026-10-25T04:00")


# --- Ordinary windows -------------------------------------------------------------------------


def test_a_weekday_evening_window():
    # Mon–Fri 18:00–08:00 next morning, Berlin (CET in January: UTC+1).
    window = recurring("0 18 * * 1-5", "0 8 * * *")
    opens_and_closes(window, "2026-01-12T17:00", "2026-01-13T07:00")  # Monday evening
    assert not freezes.active(window, utc("2026-01-13T12:00"))  # Tuesday noon
    assert not freezes.active(window, utc("2026-01-17T20:00"))  # Saturday evening: no start


def test_a_weekend_window():
    # Friday 17:00 to Monday 07:00 in New York (EST, UTC-5, in February).
    window = recurring("0 17 * * 5", "0 7 * * 1", zone="America/New_York")
    opens_and_closes(window, "2026-02-06T22:00", "2026-02-09T12:00")
    assert freezes.active(window, utc("2026-02-08T03:00"))  # Saturday night
    assert not freezes.active(window, utc("2026-02-11T15:00"))  # Wednesday


def test_a_start_and_an_end_in_the_same_minute_is_never_active():
    # Both fire at 12:00: the latest start is not later than the latest end.
    window = recurring("0 12 * * *", "0 12 * * *", zone="UTC")
    for at in ("2026-05-01T11:59", "2026-05-01T12:00", "2026-05-01T12:01", "2026-05-02T00:00"):
        assert not freezes.active(window, utc(at)), at


def test_a_window_whose_start_never_fired_within_the_horizon_is_not_active():
    # 30 February never happens.
    assert not freezes.active(recurring("0 0 30 2 *", "0 0 1 3 *"), utc("2026-06-01T00:00"))


def test_a_one_off_window_starts_inclusive_and_ends_exclusive():
    window = FreezeWindow(reason="launch", starts_at=utc("2026-12-24T00:00"), ends_at=utc("2026-12-27T00:00"))
    opens_and_closes(window, "2026-12-24T00:00", "2026-12-27T00:00")


def test_it_takes_a_zone_aware_instant_in_any_zone():
    # 03:30 CEST = 01:30 UTC (open); 01:59 CET = 00:59 UTC (not yet).
    window = recurring("30 2 29 3 *", "0 6 29 3 *")
    assert freezes.active(window, datetime(2026, 3, 29, 3, 30, tzinfo=ZoneInfo(BERLIN)))
    assert not freezes.active(window, datetime(2026, 3, 29, 1, 59, tzinfo=ZoneInfo(BERLIN)))


def test_zones_and_crons_are_checked_by_croniter_and_zoneinfo():
    assert freezes.valid_cron("0 18 * * 1-5") and not freezes.valid_cron("0 25 * * *")
    assert freezes.valid_zone("Europe/Berlin") and not freezes.valid_zone("Europe/Atlantis")
    assert not freezes.valid_zone("../etc/passwd")


# --- Which windows hold an environment --------------------------------------------------------


@pytest.fixture
def environments(function):
    from tests.conftest import staged

    return staged(function)


def test_a_global_window_applies_to_every_environment(environments):
    staging, production = environments
    window = FreezeWindow.objects.create(reason="year end", starts_at=utc("2026-12-20T00:00"),
                                         ends_at=utc("2027-01-04T00:00"))
    for environment in (staging, production):
        assert freezes.active_freeze(environment, utc("2026-12-24T12:00")) == window
        assert freezes.active_freeze(environment, utc("2027-01-04T00:00")) is None


def test_an_environments_window_holds_that_environment_only(environments):
    staging, production = environments
    window = FreezeWindow.objects.create(environment=production, reason="launch",
                                         starts_at=utc("2026-06-01T00:00"), ends_at=utc("2026-06-02T00:00"))
    assert freezes.active_freeze(production, utc("2026-06-01T08:00")) == window
    assert freezes.active_freeze(staging, utc("2026-06-01T08:00")) is None
    assert list(freezes.windows_for(staging)) == []


# --- Property: active() against a minute-by-minute simulation ---------------------------------

ZONES = {  # a zone, and a day of 2026 on which its clocks change (either way)
    "Europe/Berlin": ["2026-03-29", "2026-10-25"],
    "America/New_York": ["2026-03-08", "2026-11-01"],
    "Australia/Lord_Howe": ["2026-04-05", "2026-10-04"],  # a 30-minute change
    "Asia/Kolkata": ["2026-03-29"],  # no change at all
}
minutes = st.sampled_from(["0", "15", "30", "45", "59", "*/20", "10-12"])
hours = st.sampled_from(["0", "1", "2", "3", "*/2", "1-3", "22", "*"])
weekdays = st.sampled_from(["*", "*", "0", "1-5"])


@st.composite
def crons(draw) -> str:
    return f"{draw(minutes)} {draw(hours)} * * {draw(weekdays)}"


def matcher(expression: str):
    """A minute matcher for the crons drawn here (day of month and month always `*`), from
    croniter's own expansion of the fields: the reference shares croniter's reading of the
    expression, not its arithmetic over dates and zones."""
    minute, hour, _, _, weekday = croniter(expression).expanded
    every = ["*"]
    days = None if weekday == every else {d % 7 for d in weekday}  # cron: 0 and 7 are Sunday
    return lambda wall: ((minute == every or wall.minute in minute) and (hour == every or wall.hour in hour)
                         and (days is None or (wall.weekday() + 1) % 7 in days))


def simulate(expression: str, zone: str, first: datetime, last: datetime) -> tuple[list[datetime], list[datetime]]:
    """The UTC minutes in [first, last] at which `expression` fires in `zone`, decided minute by
    minute from the wall clock: a wall-clock minute fires at its first instant; the minutes of
    a skipped stretch fire together at the instant it ends. And the instants the offset changed."""
    tz, fires, changes, at = ZoneInfo(zone), [], [], first
    matches = matcher(expression)
    before = (first - timedelta(minutes=1)).astimezone(tz)
    while at <= last:
        local = at.astimezone(tz)
        wall, previous_wall = local.replace(tzinfo=None), before.replace(tzinfo=None)
        if local.utcoffset() != before.utcoffset():
            changes.append(at)
        repeat = local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset()
        gap = [previous_wall + timedelta(minutes=m) for m in range(1, (wall - previous_wall) // timedelta(minutes=1))]
        if not repeat and (matches(wall) or any(matches(skipped) for skipped in gap)):
            fires.append(at)
        before = local
        at += timedelta(minutes=1)
    return fires, changes


reached = Counter()
EXAMPLES = 50


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(zone=st.sampled_from(sorted(ZONES)), start=crons(), end=crons(), data=st.data())
def test_active_matches_a_minute_by_minute_simulation(zone, start, end, data):
    day = datetime.fromisoformat(data.draw(st.sampled_from(ZONES[zone]))).replace(tzinfo=UTC)
    first, last = day - timedelta(days=2), day + timedelta(days=1)
    (starts, changes), (ends, _) = simulate(start, zone, first, last), simulate(end, zone, first, last)
    window = recurring(start, end, zone)
    # Sample: every fire minute and the minutes either side, every 5 minutes within two hours
    # of a clock change, and a minute of each hour of the last two days.
    samples = {first + timedelta(days=1, hours=h, minutes=data.draw(st.integers(0, 59))) for h in range(48)}
    samples |= {at + timedelta(minutes=d) for at in starts + ends for d in (-1, 0, 1)}
    samples |= {change + timedelta(minutes=m) for change in changes for m in range(-120, 121, 5)}
    for at in sorted(s for s in samples if first + timedelta(days=1) <= s <= last):
        latest_start = max((s for s in starts if s <= at), default=None)
        latest_end = max((e for e in ends if e <= at), default=None)
        if latest_start is None or latest_end is None:
            reached["undecided"] += 1  # an occurrence before the simulated span decides it
            continue
        expected = latest_start > latest_end
        assert freezes.active(window, at) == expected, (zone, start, end, at, latest_start, latest_end)
        reached["active" if expected else "inactive"] += 1
        if any(min(latest_start, latest_end) < change <= at for change in changes):
            reached["across a change"] += 1
        local = at.astimezone(ZoneInfo(zone))
        if local.fold and local.replace(fold=0).utcoffset() != local.utcoffset():
            reached["in a repeated hour"] += 1
        if expected and changes and latest_start in changes:
            reached["opened when a gap ended"] += 1
    reached["examples"] += 1


def test_the_simulation_reached_every_path():
    """Runs after the property (same module, in order): what its examples reached."""
    assert reached["examples"] == EXAMPLES
    for path in ("active", "inactive", "across a change", "in a repeated hour", "opened when a gap ended"):
        assert reached[path] >= 20, (path, reached)


# --- What the function page shows -------------------------------------------------------------


def test_the_page_shows_the_active_freeze_and_when_it_ends(environments):
    staging, production = environments
    FreezeWindow.objects.create(environment=production, reason="nightly", start_cron="0 22 * * *",
                                end_cron="30 2 * * *", timezone=BERLIN)
    shown = freezes.current_or_next(production, utc("2026-03-28T23:00"))
    assert shown.active and shown.window.reason == "nightly"
    assert shown.ends == utc("2026-03-29T01:00")  # 02:30 is skipped that night: the gap's end
    assert freezes.current_or_next(staging, utc("2026-03-28T23:00")) is None


def test_the_page_shows_the_freeze_that_starts_next(environments):
    staging, production = environments
    FreezeWindow.objects.create(environment=production, reason="nightly", start_cron="0 22 * * *",
                                end_cron="0 6 * * *", timezone=BERLIN)
    FreezeWindow.objects.create(reason="launch", starts_at=utc("2026-07-01T08:00"), ends_at=utc("2026-07-01T12:00"))
    shown = freezes.current_or_next(production, utc("2026-07-01T07:00"))
    assert (shown.active, shown.window.reason, shown.starts) == (False, "launch", utc("2026-07-01T08:00"))
    shown = freezes.current_or_next(production, utc("2026-07-01T13:00"))
    assert (shown.window.reason, shown.starts) == ("nightly", utc("2026-07-01T20:00"))  # 22:00 CEST
    assert freezes.current_or_next(staging, utc("2026-07-01T13:00")) is None  # the one-off is over
