"""Reporting periods, one grammar for the usage page, the CSV export and GET /api/v1/usage:

    current | previous | last_7_days | last_30_days | YYYY-MM | YYYY-MM-DD..YYYY-MM-DD (inclusive)

Days are UTC days, like the ledger's rollups.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, timedelta

from django.utils import timezone
from django.utils.translation import gettext as _

from billing.quota import next_period_start

MAX_DAYS = 366
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_RANGE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.\.(\d{4}-\d{2}-\d{2})$")


@dataclass(frozen=True)
class Period:
    key: str
    start: date
    end: date  # inclusive

    @property
    def days(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range((self.end - self.start).days + 1)]

    @property
    def is_month(self) -> bool:
        return self.start.day == 1 and self.end == next_period_start(self.start) - timedelta(days=1)


def today_utc() -> date:
    return timezone.now().astimezone(UTC).date()


def month_period(year: int, month: int) -> Period:
    start = date(year, month, 1)
    return Period(f"{year:04d}-{month:02d}", start, next_period_start(start) - timedelta(days=1))


def parse_period(value: str | None, *, today: date | None = None) -> Period:
    """Raise ValueError with a message fit to show when the value is not one of the forms above."""
    today = today or today_utc()
    value = (value or "current").strip()
    if value == "current":
        return month_period(today.year, today.month)
    if value == "previous":
        last = today.replace(day=1) - timedelta(days=1)
        return month_period(last.year, last.month)
    if value in ("last_7_days", "last_30_days"):
        days = 7 if value == "last_7_days" else 30
        return Period(value, today - timedelta(days=days - 1), today)
    if m := _MONTH.match(value):
        year, month = int(m[1]), int(m[2])
        if not 1 <= month <= 12 or year < 2000:
            raise ValueError(_("Unknown month %(value)s.") % {"value": value})
        return month_period(year, month)
    if m := _RANGE.match(value):
        try:
            start, end = date.fromisoformat(m[1]), date.fromisoformat(m[2])
        except ValueError as exc:
            raise ValueError(_("Not a valid date range: %(value)s.") % {"value": value}) from exc
        if end < start:
            raise ValueError(_("The period ends before it starts."))
        if (end - start).days + 1 > MAX_DAYS:
            raise ValueError(_("A period can span at most %(days)s days.") % {"days": MAX_DAYS})
        return Period(value, start, end)
    raise ValueError(
        _("Unknown period %(value)s: use current, previous, last_7_days, last_30_days, YYYY-MM or "
          "YYYY-MM-DD..YYYY-MM-DD.") % {"value": value[:40]}
    )


def recent_months(*, today: date | None = None, count: int = 12) -> list[Period]:
    today = today or today_utc()
    months, year, month = [], today.year, today.month
    for _i in range(count):
        months.append(month_period(year, month))
        year, month = (year - 1, 12) if month == 1 else (year, month - 1)
    return months
