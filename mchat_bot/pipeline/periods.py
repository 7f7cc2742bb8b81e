"""The period a channel summary covers, from the words the asker used, in the asker's time zone.

Pure functions of (words, now): "today" starts at the asker's midnight, not the server's, so the
same words give the same period wherever the daemon runs. What is not a period word is handed back
(a ``#channel``), so the command's argument can hold both in any order.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

DEFAULT_HOURS = 24

_WEEKDAYS = {
    "monday": 0,
    "mon": 0,
    "월요일": 0,
    "tuesday": 1,
    "tue": 1,
    "화요일": 1,
    "wednesday": 2,
    "wed": 2,
    "수요일": 2,
    "thursday": 3,
    "thu": 3,
    "목요일": 3,
    "friday": 4,
    "fri": 4,
    "금요일": 4,
    "saturday": 5,
    "sat": 5,
    "토요일": 5,
    "sunday": 6,
    "sun": 6,
    "일요일": 6,
}
_HOURS = re.compile(r"^(\d{1,3})\s*(?:h|hours?|시간)$")
_DAYS = re.compile(r"^(\d{1,3})\s*(?:d|days?|일)$")
_SINCE_KO = re.compile(r"^(월|화|수|목|금|토|일)요일(?:부터|이후)$")


@dataclass(frozen=True, slots=True)
class Period:
    """``[start, end)`` as aware datetimes; ``name`` is the words it came from (for the heading).

    A period that ends now (``until_now``) holds everything after its start: the server stamps
    posts by its own clock, which may run ahead of ours (and does in a burst: one ms per post)."""

    start: datetime
    end: datetime
    name: str
    until_now: bool = True

    @property
    def start_ms(self) -> int:
        return int(self.start.timestamp() * 1000)

    @property
    def end_ms(self) -> int:
        return int(self.end.timestamp() * 1000)

    def holds(self, ms: int) -> bool:
        return self.start_ms <= ms and (self.until_now or ms < self.end_ms)


def _midnight(at: datetime) -> datetime:
    return at.replace(hour=0, minute=0, second=0, microsecond=0)


def _since_weekday(now: datetime, weekday: int) -> datetime:
    """The last ``weekday`` at midnight (today's, when today is that day)."""
    back = (now.weekday() - weekday) % 7
    return _midnight(now - timedelta(days=back))


def parse_period(arg: str, now: datetime) -> tuple[Period, str]:
    """(the period the words name, the words that are not about the period); 24 hours by default.

    ``now`` must be aware, in the asker's zone: midnights are theirs.
    """
    text = " ".join(arg.lower().split())
    for phrase, make in _phrases(now):
        for variant in phrase:
            if re.search(rf"(?<!\S){re.escape(variant)}(?!\S)", text):
                rest = re.sub(rf"(?<!\S){re.escape(variant)}(?!\S)", " ", text, count=1)
                return make(variant), " ".join(rest.split())
    words = text.split()
    for i, word in enumerate(words):
        period = _one_word(word, words[i - 1] if i else "", now)
        if period is not None:
            drop = {i, i - 1} if i and words[i - 1] in ("since", "last", "지난", "최근") else {i}
            return period, " ".join(w for j, w in enumerate(words) if j not in drop)
    return Period(now - timedelta(hours=DEFAULT_HOURS), now, "24h"), " ".join(words)


def _phrases(now: datetime) -> list[tuple[tuple[str, ...], Callable[[str], Period]]]:
    today = _midnight(now)

    def week(name: str) -> Period:
        return Period(_since_weekday(now, 0), now, name)

    return [
        (("this week", "이번 주", "이번주", "금주"), week),
        (("today", "오늘"), lambda name: Period(today, now, name)),
        (("yesterday", "어제"), lambda name: Period(today - timedelta(days=1), today, name, until_now=False)),
    ]


def _one_word(word: str, before: str, now: datetime) -> Period | None:
    if before == "since" and word in _WEEKDAYS:
        return Period(_since_weekday(now, _WEEKDAYS[word]), now, f"since {word}")
    m = _SINCE_KO.match(word)
    if m:
        return Period(_since_weekday(now, _WEEKDAYS[m.group(1) + "요일"]), now, word)
    m = _HOURS.match(word)
    if m and 0 < int(m.group(1)) <= 24 * 31:
        return Period(now - timedelta(hours=int(m.group(1))), now, word)
    m = _DAYS.match(word)
    if m and 0 < int(m.group(1)) <= 366:
        return Period(now - timedelta(days=int(m.group(1))), now, word)
    return None
