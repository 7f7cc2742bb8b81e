"""`mchat-bot audit`: the --since forms."""

from __future__ import annotations

import pytest

from mchat_bot.cli.audit import parse_since


def test_parse_since_forms() -> None:
    now = 1_000_000.0
    assert parse_since("24h", now) == now - 86400
    assert parse_since("7d", now) == now - 7 * 86400
    assert parse_since("30m", now) == now - 1800
    assert parse_since("2024-05-01", now) == 1714521600.0  # UTC midnight
    assert parse_since("2024-05-01T09:00+09:00", now) == 1714521600.0
    assert parse_since("1714521600", now) == 1714521600.0
    with pytest.raises(ValueError, match="--since"):
        parse_since("yesterday", now)
