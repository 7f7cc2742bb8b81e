"""The WebSocket door's conversion from the wire's Post to the pipeline's IncomingMessage."""

from __future__ import annotations

import json

import pytest

from mchat_bot.doors.websocket import message_from_post, message_from_posted
from mchat_bot.mattermost.events import Post, Posted, parse_frame
from tests.support.frames import CH, KIM, POST, POST_ID, TEAM, posted_frame


def test_a_posted_event_maps_every_field() -> None:
    post = {**POST, "root_id": "r" * 26, "type": "", "props": {"from_bot": "true", "from_webhook": "true"}}
    frame = parse_frame(json.dumps(posted_frame(post)))
    assert isinstance(frame, Posted)
    msg = message_from_posted(frame)
    assert msg.user_name == "kim"
    assert msg.user_id == KIM and msg.channel_id == CH and msg.post_id == POST_ID
    assert msg.channel_name == "qa" and msg.channel_type == "O" and msg.team_id == TEAM
    assert msg.root_id == "r" * 26 and msg.thread_root == "r" * 26
    assert msg.create_at == 1764057600000
    assert msg.from_bot is True and msg.from_webhook is True
    assert msg.door == "websocket"


def test_flags_need_the_string_true_and_system_type_passes_through() -> None:
    post = {**POST, "type": "system_join_channel", "props": {"from_bot": True, "from_webhook": "false"}}
    frame = parse_frame(json.dumps(posted_frame(post, sender_name="webhook")))
    assert isinstance(frame, Posted)
    msg = message_from_posted(frame)
    assert (msg.from_bot, msg.from_webhook, msg.post_type, msg.user_name) == (
        False,
        False,
        "system_join_channel",
        "webhook",
    )


def test_a_post_read_over_rest_takes_its_channel_from_the_rest_channel() -> None:
    channel = {"id": CH, "type": "P", "name": "secret", "team_id": TEAM}
    msg = message_from_post(Post.from_dict(POST), channel, "@kim")
    assert (msg.post_id, msg.channel_type, msg.channel_name, msg.team_id, msg.user_name, msg.door) == (
        POST_ID,
        "P",
        "secret",
        TEAM,
        "kim",
        "websocket",
    )
    with pytest.raises(ValueError):
        message_from_post(Post.from_dict(POST), {**channel, "type": "X"}, "")
