"""The door-independent message type every door (WebSocket, webhooks, slash) hands to the pipeline."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

ChannelType = Literal["O", "P", "D", "G"]


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """One user post the bot may have to answer, as the pipeline sees it.

    It carries only what routing, memory scoping and replying need, so the pipeline
    never depends on the shape of a Mattermost frame.
    """

    post_id: str
    channel_id: str
    channel_type: ChannelType
    channel_name: str
    team_id: str  # "" for DM/GM
    user_id: str
    user_name: str  # without the leading "@"
    message: str
    root_id: str = ""  # "" when the post is a thread root
    create_at: int = 0  # ms since the epoch
    door: str = "websocket"
    from_bot: bool = False
    from_webhook: bool = False
    post_type: str = ""  # "" for user posts, "system_*" for system messages

    @property
    def thread_root(self) -> str:
        """The id a reply must use as root_id: the server rejects a root_id that is itself a reply."""
        return self.root_id or self.post_id

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IncomingMessage:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
