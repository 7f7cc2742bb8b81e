"""Speaks Mattermost and nothing else: typed events, a REST client and the WebSocket gateway."""

from mchat_bot.mattermost.events import (
    ActionReply,
    Event,
    Frame,
    FrameError,
    Hello,
    OtherEvent,
    PassedPost,
    Post,
    Posted,
    PostFilter,
    parse_frame,
)
from mchat_bot.mattermost.gateway import Decision, Gateway, GatewaySession, GatewayStats
from mchat_bot.mattermost.rest import MattermostError, MattermostUnavailable, RestClient

__all__ = [
    "ActionReply",
    "Decision",
    "Event",
    "Frame",
    "FrameError",
    "Gateway",
    "GatewaySession",
    "GatewayStats",
    "Hello",
    "MattermostError",
    "MattermostUnavailable",
    "OtherEvent",
    "PassedPost",
    "Post",
    "PostFilter",
    "Posted",
    "RestClient",
    "parse_frame",
]
