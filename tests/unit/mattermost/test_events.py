"""parse_frame: real frames from the protocol page, format variations, and a fuzz run."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mchat_bot.doors.websocket import message_from_posted
from mchat_bot.mattermost.events import (
    ActionReply,
    FrameError,
    Hello,
    OtherEvent,
    PassedPost,
    Post,
    Posted,
    parse_frame,
)
from mchat_bot.pipeline.router import BotIdentity, route
from tests.support.frames import BOT, BROADCAST, KIM, POST, POST_ID, TEAM, posted_frame

HELLO: dict[str, Any] = {
    "event": "hello",
    "data": {"connection_id": "k3i8fz1ud7bfmm1wq5cbx9qx3o", "server_hostname": "mm-app-1",
             "server_version": "10.5.0.12345.3c1f9e7a.true"},
    "broadcast": {**BROADCAST, "user_id": BOT, "channel_id": ""},
    "seq": 0,
}  # fmt: skip
PONG = {
    "status": "OK",
    "seq_reply": 3,
    "data": {"text": "pong", "version": "10.5.0", "server_time": 1, "node_id": ""},
}
FAIL = {"status": "FAIL", "error": {"id": "api.web_socket_router.bad_action.app_error", "status_code": 500}}
REACTION = {
    "event": "reaction_added",
    "seq": 9,
    "broadcast": BROADCAST,
    "data": {"reaction": json.dumps({"user_id": KIM, "post_id": POST_ID, "emoji_name": "+1"})},
}
EDITED = {"event": "post_edited", "seq": 8, "broadcast": BROADCAST, "data": {"post": json.dumps(POST)}}
TYPING = {"event": "typing", "seq": 10, "broadcast": {**BROADCAST, "omit_users": {KIM: True}},
          "data": {"parent_id": "", "user_id": KIM}}  # fmt: skip
REAL_FRAMES: list[dict[str, Any]] = [
    HELLO,
    posted_frame(),
    posted_frame(channel_type="D", channel_name=f"{BOT}__{KIM}", team_id=""),
    PONG,
    FAIL,
    REACTION,
    EDITED,
    TYPING,
]


def test_posted_decodes_post_and_mentions_twice() -> None:
    frame = parse_frame(json.dumps(posted_frame(), ensure_ascii=False))
    assert isinstance(frame, Posted)
    assert frame.seq == 7
    assert frame.post.id == POST_ID
    assert frame.post.message == "@ai remember X부품 불량률 12%"
    assert frame.mentions == (BOT,)
    assert frame.channel_type == "O" and frame.team_id == TEAM


def test_a_posted_event_the_reader_filter_refuses_is_read_only_to_its_channel_and_times() -> None:
    asked: list[tuple[str, str, str]] = []

    def refuse(channel_id: str, channel_type: str, message: str) -> bool:
        asked.append((channel_id, channel_type, message))
        return False

    raw = json.dumps(posted_frame({**POST, "update_at": POST["create_at"] + 5}), ensure_ascii=False)
    passed = parse_frame(raw, wants=refuse)
    assert passed == PassedPost(7, POST["channel_id"], POST["create_at"], POST["create_at"] + 5)
    assert asked == [(POST["channel_id"], "O", POST["message"])]
    wanted = parse_frame(raw, wants=lambda *_: True)
    assert isinstance(wanted, Posted) and wanted.post.id == POST_ID


@pytest.mark.parametrize(
    "changes", [{"create_at": True}, {"id": ""}, {"channel_id": 5}, {"update_at": "soon"}, {"message": None}]
)
def test_a_malformed_post_is_never_passed_unread(changes: dict[str, Any]) -> None:
    """The filter sees only posts whose fields it reads have their types; any other goes through
    the full checks (a FrameError that says what is wrong, or the post as it reads)."""
    raw = json.dumps(posted_frame({**POST, **changes}))
    try:
        frame = parse_frame(raw, wants=lambda *_: False)
    except FrameError:
        return
    assert isinstance(frame, Posted), frame


def test_hello_reply_and_other_events() -> None:
    hello = parse_frame(json.dumps(HELLO).encode())
    assert hello == Hello(
        seq=0, connection_id="k3i8fz1ud7bfmm1wq5cbx9qx3o", server_version="10.5.0.12345.3c1f9e7a.true"
    )
    pong = parse_frame(json.dumps(PONG))
    assert isinstance(pong, ActionReply) and pong.is_pong and pong.seq_reply == 3
    fail = parse_frame(json.dumps(FAIL))
    assert isinstance(fail, ActionReply) and not fail.ok and fail.seq_reply == 0
    assert fail.error["id"] == "api.web_socket_router.bad_action.app_error"
    edited = parse_frame(json.dumps(EDITED))
    assert isinstance(edited, OtherEvent) and edited.event == "post_edited"
    post = edited.post()
    assert post is not None and post.id == POST_ID
    typing = parse_frame(json.dumps(TYPING))
    assert (
        isinstance(typing, OtherEvent)
        and typing.post() is None
        and typing.broadcast["omit_users"] == {KIM: True}
    )


def test_format_variations_are_tolerated() -> None:
    # spaces, trailing newline, extra fields, absent mentions, null props/file_ids, int-valued floats
    post = {**POST, "props": None, "file_ids": None, "create_at": 1.7e12, "new_field": {"x": 1}}
    del post["update_at"]
    data = posted_frame(post)
    del data["data"]["mentions"]
    data["extra"] = [1, 2]
    raw = json.dumps(data, indent=2) + "\n"
    frame = parse_frame(raw)
    assert isinstance(frame, Posted)
    assert frame.mentions == () and frame.post.props == {} and frame.post.file_ids == ()
    assert frame.post.create_at == 1_700_000_000_000 == frame.post.update_at
    # a server that sends post/mentions already decoded
    frame2 = parse_frame(
        json.dumps(posted_frame(mentions=[BOT]) | {"data": {**posted_frame()["data"], "post": POST}})
    )
    assert isinstance(frame2, Posted) and frame2.post.id == POST_ID


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xfe{}",  # invalid UTF-8
        "{not json",
        "[]",
        "null",
        '"hello"',
        "{}",  # neither event nor reply
        json.dumps({"event": "posted", "seq": "7", "data": {}}),  # seq wrong type
        json.dumps({"event": "posted", "seq": True, "data": {}}),  # bool is not an int
        json.dumps({"event": "posted", "data": {}}),  # seq missing
        json.dumps({"event": "posted", "seq": -1, "data": {}}),
        json.dumps({"event": "hello", "seq": 0, "data": {}}),  # no connection_id
        json.dumps(posted_frame(post={**POST, "id": 5})),
        json.dumps(posted_frame(channel_type="Z")),
        json.dumps(posted_frame(mentions="[1, 2]")),
        json.dumps(posted_frame(mentions="not json")),
        json.dumps({**posted_frame(), "data": {**posted_frame()["data"], "post": "{bad"}}),
        json.dumps({"event": "typing", "seq": 1, "data": []}),
        json.dumps({"status": 1}),
        "[" * 100_000,  # deep nesting: RecursionError must become FrameError
        "\ud800",  # lone surrogate
    ],
)
def test_malformed_frames_raise_frame_error(raw: str | bytes) -> None:
    with pytest.raises(FrameError):
        parse_frame(raw)


def test_oversized_frames_are_rejected() -> None:
    raw = json.dumps(posted_frame(post={**POST, "message": "가" * 400_000}), ensure_ascii=False)
    assert len(raw) < 1_048_576 < len(raw.encode())  # fewer chars than the limit, more bytes
    with pytest.raises(FrameError, match="exceeds"):
        parse_frame(raw)
    with pytest.raises(FrameError, match="exceeds"):
        parse_frame(raw.encode())
    assert isinstance(parse_frame(raw, max_bytes=16 * 1024 * 1024), Posted)


# --- fuzz: >= 10,000 frames, nothing but FrameError may escape ------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
INTERESTING_KEYS = [
    "event",
    "seq",
    "data",
    "post",
    "status",
    "seq_reply",
    "connection_id",
    "channel_type",
    "mentions",
    "id",
    "create_at",
    "channel_id",
    "user_id",
    "props",
    "file_ids",
    "error",
]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def _decoded(frame: dict[str, Any]) -> dict[str, Any]:
    """Decode the string-encoded payloads so mutations can reach inside them too."""
    frame = json.loads(json.dumps(frame))
    data = frame.get("data")
    if isinstance(data, dict):
        for key in ("post", "mentions", "reaction"):
            if isinstance(data.get(key), str):
                data[key] = json.loads(data[key])
    return frame


@st.composite
def mutated_frames(draw: st.DrawFn) -> str | bytes:
    base = _decoded(draw(st.sampled_from(REAL_FRAMES)))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(base) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = base
        for step in path[:-1]:
            parent = parent[step]
        op = draw(st.sampled_from(["delete", "replace", "add"]))
        if op == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif op == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(INTERESTING_KEYS))] = draw(json_values)
        else:
            parent[path[-1]] = draw(json_values)
    data = base.get("data")
    if isinstance(data, dict) and draw(st.booleans()):  # re-encode the inner JSON, as the server does
        for key in ("post", "mentions", "reaction"):
            if key in data and not isinstance(data[key], str):
                data[key] = json.dumps(data[key])
    text = json.dumps(base, ensure_ascii=draw(st.booleans()))
    if draw(st.integers(0, 3)) == 0:  # byte-level damage
        raw = bytearray(text.encode())
        if raw:
            i = draw(st.integers(0, len(raw) - 1))
            kind = draw(st.sampled_from(["flip", "cut", "insert"]))
            if kind == "flip":
                raw[i] ^= draw(st.integers(1, 255))
            elif kind == "cut":
                del raw[i:]
            else:
                raw[i:i] = draw(st.binary(min_size=1, max_size=4))
        return bytes(raw)
    return text


FUZZ_BOT = BotIdentity(user_id="b" * 26, username="memorybot", aliases=("@ai",))

any_frame = st.one_of(
    json_values.map(json.dumps),
    st.dictionaries(st.sampled_from(INTERESTING_KEYS), json_values, max_size=6).map(json.dumps),
    mutated_frames(),
    st.binary(max_size=64),
    st.text(max_size=64),
)


def test_fuzz_only_frame_error_escapes() -> None:
    """>= 10,000 generated frames (random JSON, mutated real frames, random bytes/text) through the
    parser and, for every frame that parses as `posted`, the router: nothing but FrameError escapes."""
    seen = 0

    @settings(max_examples=420, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.lists(any_frame, min_size=25, max_size=25))
    def run(frames: list[str | bytes]) -> None:
        nonlocal seen
        for raw in frames:
            seen += 1
            try:
                result = parse_frame(raw)
            except FrameError:
                continue
            assert isinstance(result, Hello | Posted | OtherEvent | ActionReply)
            if isinstance(result, Posted):
                route(message_from_posted(result), FUZZ_BOT)  # a parsed Posted is always routable
                # with the reader's filter refusing it, the same frame passes read only to its times
                passed = parse_frame(raw, wants=lambda *_: False)
                assert passed == PassedPost(
                    result.seq, result.post.channel_id, result.post.create_at, result.post.update_at
                ) or isinstance(passed, Posted)

    run()
    assert seen >= 10_000, seen


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, {}),
        ({"root_id": None, "props": None, "file_ids": None, "message": None}, {"root_id": "", "message": ""}),
        (
            {"create_at": 1.7e12, "update_at": None},
            {"create_at": 1_700_000_000_000, "update_at": 1_700_000_000_000},
        ),
        (
            {"file_ids": ["f1", "f2"], "pending_post_id": "p1"},
            {"file_ids": ("f1", "f2"), "pending_post_id": "p1"},
        ),
    ],
)
def test_a_post_reads_the_same_whatever_shape_the_server_writes(
    changes: dict[str, Any], expected: dict[str, Any]
) -> None:
    """The one-test shape and the field-by-field checks give the same Post."""
    post = Post.from_dict({**POST, **changes})
    for key, value in expected.items():
        assert getattr(post, key) == value, key
    assert post.id == POST_ID and post.props == (
        {} if changes.get("props", 1) is None else POST.get("props", {})
    )


@pytest.mark.parametrize(
    "changes",
    [{"create_at": True}, {"id": ""}, {"channel_id": 5}, {"user_id": None}, {"file_ids": [1]}, {"props": []}],
)
def test_a_post_of_the_wrong_shape_is_a_frame_error(changes: dict[str, Any]) -> None:
    with pytest.raises(FrameError):
        Post.from_dict({**POST, **changes})
