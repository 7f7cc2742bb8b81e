"""Measurement hooks for the benchmark (bench/): when events left the server and when replies came back.

All times are `time.monotonic()` on this machine, so another local process (the load generator, the
bench runner) can compare them with its own clock. Only two small dicts grow, one entry per post;
`clear()` (control API) empties them between runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Timings:
    """`posted_sent[user_id][post_id]`: the `posted` event for that post was written to that user's socket.

    `reply_at[asking_post_id]`: the first POST /posts whose `props.mchat_reply_to` names the asking post
    arrived. `auth_at[user_id]`: each time a socket of that user authenticated.
    """

    posted_sent: dict[str, dict[str, float]] = field(default_factory=dict)
    reply_at: dict[str, float] = field(default_factory=dict)
    auth_at: dict[str, list[float]] = field(default_factory=dict)

    def on_sent(self, user_id: str, post_id: str) -> None:
        self.posted_sent.setdefault(user_id, {}).setdefault(post_id, time.monotonic())

    def on_reply(self, props: dict[str, Any], received_at: float) -> None:
        asked = props.get("mchat_reply_to")
        if isinstance(asked, str) and asked:
            self.reply_at.setdefault(asked, received_at)

    def on_auth(self, user_id: str) -> None:
        self.auth_at.setdefault(user_id, []).append(time.monotonic())

    def clear(self) -> None:
        self.posted_sent.clear()
        self.reply_at.clear()
        self.auth_at.clear()

    def to_json(self, user_id: str = "") -> dict[str, Any]:
        sent = self.posted_sent.get(user_id, {}) if user_id else self.posted_sent
        return {"posted_sent": sent, "reply_at": self.reply_at, "auth_at": self.auth_at}
