"""Billing periods: the month of a store's traffic, starting on its ``billing_day`` (UTC)."""

from __future__ import annotations

import datetime


def period_start(now: float, billing_day: int = 1) -> datetime.date:
    """The first day (UTC) of the billing period holding the instant ``now`` (seconds
    since the epoch): this month's ``billing_day`` if it has come, else last month's."""
    if not 1 <= billing_day <= 28:
        raise ValueError(f"billing_day must be 1..28 (got {billing_day})")
    today = datetime.datetime.fromtimestamp(now, tz=datetime.UTC).date()
    if today.day >= billing_day:
        return today.replace(day=billing_day)
    if today.month == 1:
        return datetime.date(today.year - 1, 12, billing_day)
    return datetime.date(today.year, today.month - 1, billing_day)


def period_end(start: datetime.date) -> datetime.date:
    """The first day of the period after the one starting on ``start``."""
    if start.month == 12:
        return start.replace(year=start.year + 1, month=1)
    return start.replace(month=start.month + 1)



def seconds_of(day: datetime.date) -> float:
    """The instant (seconds since the epoch) ``day`` starts at, UTC."""
    return datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.UTC).timestamp()
