"""GatewaySession (sans-I/O): resume query, deliver/duplicate/gap, lost-on-hello; URL building."""

from __future__ import annotations

import pytest

from mchat_bot.mattermost.events import Hello, OtherEvent
from mchat_bot.mattermost.gateway import Decision, GatewaySession, websocket_url


def ev(seq: int) -> OtherEvent:
    return OtherEvent(seq=seq, event="typing", data={})


def test_fresh_session_connects_without_resume() -> None:
    s = GatewaySession()
    assert s.connect_query() == {}
    assert s.on_hello(Hello(0, "conn1", "10.5")) is False  # first hello is not a loss
    assert s.connect_query() == {"connection_id": "conn1", "sequence_number": "1"}


def test_in_order_events_advance_and_resume_asks_for_next_seq() -> None:
    s = GatewaySession()
    s.on_hello(Hello(0, "conn1", ""))
    assert [s.on_event(ev(i)) for i in (1, 2, 3)] == [Decision.DELIVER] * 3
    assert s.last_seq == 3
    assert s.connect_query() == {"connection_id": "conn1", "sequence_number": "4"}


def test_replayed_events_are_duplicates_and_do_not_move_seq() -> None:
    s = GatewaySession()
    s.on_hello(Hello(0, "conn1", ""))
    for i in (1, 2, 3):
        s.on_event(ev(i))
    assert s.on_event(ev(3)) is Decision.DUPLICATE
    assert s.on_event(ev(1)) is Decision.DUPLICATE
    assert s.last_seq == 3
    assert s.on_event(ev(4)) is Decision.DELIVER


def test_seq_jump_is_a_gap_and_numbering_continues_from_it() -> None:
    s = GatewaySession()
    s.on_hello(Hello(0, "conn1", ""))
    s.on_event(ev(1))
    assert s.on_event(ev(5)) is Decision.GAP
    assert s.last_seq == 5
    assert s.on_event(ev(6)) is Decision.DELIVER


def test_hello_with_new_id_after_a_connection_means_loss() -> None:
    s = GatewaySession()
    s.on_hello(Hello(0, "conn1", ""))
    s.on_event(ev(1))
    assert s.on_hello(Hello(0, "conn2", "")) is True
    assert (s.connection_id, s.last_seq) == ("conn2", 0)
    assert s.on_event(ev(1)) is Decision.DELIVER  # numbering restarted on the new connection
    assert s.on_hello(Hello(0, "conn2", "")) is False  # same id: nothing new lost


def test_forget_resume_starts_fresh_but_still_reports_loss() -> None:
    s = GatewaySession()
    s.on_hello(Hello(0, "conn1", ""))
    s.forget_resume()
    assert s.connect_query() == {}
    assert s.on_hello(Hello(0, "conn9", "")) is True


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://127.0.0.1:8065", "ws://127.0.0.1:8065/api/v4/websocket"),
        ("https://chat.example.com/", "wss://chat.example.com/api/v4/websocket"),
        ("https://example.com/mm/api/v4", "wss://example.com/mm/api/v4/websocket"),
        ("ws://h:1/api/v4/websocket", "ws://h:1/api/v4/websocket"),
    ],
)
def test_websocket_url(given: str, expected: str) -> None:
    assert websocket_url(given) == expected


def test_websocket_url_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        websocket_url("ftp://x")
