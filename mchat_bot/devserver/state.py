"""In-memory data of the dev server: users, teams, channels, posts, reactions.

Plain data and lookups only; the rules (permissions, events) live in `posts.py` and `rest.py`.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

ID_ALPHABET = "ybndrfg8ejkmcpqxot1uwisza345h769"  # Mattermost's base32 alphabet (model.NewId)
SERVER_VERSION = "10.5.0"
VERSION_ID = "10.5.0.12345.devserver.true"  # <version>.<build>.<config hash>.<licensed>


def new_id() -> str:
    """A 26-char lowercase id like model.NewId()."""
    # one read of the OS's randomness, not 26; 256 is a multiple of 32, so `% 32` is unbiased
    return "".join(ID_ALPHABET[b % 32] for b in secrets.token_bytes(26))


def is_valid_id(value: str) -> bool:
    return len(value) == 26 and value.isalnum() and value == value.lower() and value.isascii()


class Clock:
    """Unix milliseconds that never repeat, so ordering and `since` are deterministic."""

    def __init__(self) -> None:
        self._last = 0

    def now_ms(self) -> int:
        now = int(time.time() * 1000)
        self._last = max(now, self._last + 1)
        return self._last


@dataclass
class User:
    id: str
    username: str
    token: str
    first_name: str = ""
    last_name: str = ""
    nickname: str = ""
    is_bot: bool = False
    roles: str = "system_user"
    create_at: int = 0

    @property
    def is_admin(self) -> bool:
        return "system_admin" in self.roles.split()

    @property
    def is_guest(self) -> bool:
        """A guest account (``system_guest``): a member of its channels as a channel guest."""
        return "system_guest" in self.roles.split()

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "create_at": self.create_at,
            "update_at": self.create_at,
            "delete_at": 0,
            "username": self.username,
            "auth_data": "",
            "auth_service": "",
            "email": f"{self.username}@mchat.invalid",
            "nickname": self.nickname,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "position": "",
            "roles": self.roles,
            "locale": "ko",
            "timezone": {"automaticTimezone": "", "manualTimezone": "", "useAutomaticTimezone": "true"},
            "disable_welcome_email": False,
        }
        if self.is_bot:
            d["is_bot"] = True
            d["bot_description"] = ""
        return d


@dataclass
class Team:
    id: str
    name: str
    display_name: str
    create_at: int = 0
    members: set[str] = field(default_factory=set)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "create_at": self.create_at,
            "update_at": self.create_at,
            "delete_at": 0,
            "display_name": self.display_name,
            "name": self.name,
            "description": "",
            "email": "",
            "type": "O",
            "company_name": "",
            "allowed_domains": "",
            "invite_id": "",
            "allow_open_invite": False,
            "scheme_id": None,
            "group_constrained": None,
            "policy_id": None,
            "cloud_limits_archived": False,
        }


@dataclass
class Channel:
    id: str
    team_id: str
    type: str  # O P D G
    name: str
    display_name: str
    creator_id: str = ""
    create_at: int = 0
    members: dict[str, int] = field(default_factory=dict)  # user id -> join time (ms)
    admins: set[str] = field(default_factory=set)  # members with the channel_admin role (scheme_admin)
    last_post_at: int = 0
    total_msg_count: int = 0
    delete_at: int = 0  # archived (DELETE /channels/{id}): kept, readable, closed to new posts

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "create_at": self.create_at,
            "update_at": max(self.create_at, self.delete_at),
            "delete_at": self.delete_at,
            "team_id": self.team_id,
            "type": self.type,
            "display_name": self.display_name,
            "name": self.name,
            "header": "",
            "purpose": "",
            "last_post_at": self.last_post_at,
            "total_msg_count": self.total_msg_count,
            "extra_update_at": 0,
            "creator_id": self.creator_id,
            "scheme_id": None,
            "props": None,
            "group_constrained": None,
            "shared": None,
            "total_msg_count_root": self.total_msg_count,
            "policy_id": None,
            "last_root_post_at": self.last_post_at,
        }

    def member_json(self, user_id: str, *, guest: bool = False) -> dict[str, Any]:
        joined = self.members.get(user_id, 0)
        admin = user_id in self.admins and not guest
        roles = "channel_guest" if guest else ("channel_user channel_admin" if admin else "channel_user")
        return {
            "channel_id": self.id,
            "user_id": user_id,
            "roles": roles,
            "last_viewed_at": 0,
            "msg_count": 0,
            "mention_count": 0,
            "mention_count_root": 0,
            "msg_count_root": 0,
            "notify_props": {
                "desktop": "default",
                "email": "default",
                "ignore_channel_mentions": "default",
                "mark_unread": "all",
                "push": "default",
            },
            "last_update_at": joined,
            "scheme_guest": guest,
            "scheme_user": not guest,
            "scheme_admin": admin,
            "explicit_roles": "",
        }


def new_post(
    *, post_id: str, user_id: str, channel_id: str, message: str, root_id: str, props: dict[str, Any], at: int
) -> dict[str, Any]:
    """A Post as the server stores and serialises it (field order as on the wire)."""
    return {
        "id": post_id,
        "create_at": at,
        "update_at": at,
        "edit_at": 0,
        "delete_at": 0,
        "is_pinned": False,
        "user_id": user_id,
        "channel_id": channel_id,
        "root_id": root_id,
        "original_id": "",
        "message": message,
        "type": "",
        "props": props,
        "hashtags": "",
        "file_ids": [],
        "pending_post_id": "",
        "reply_count": 0,
        "last_reply_at": 0,
        "participants": None,
        "metadata": {},
    }


@dataclass
class Reaction:
    user_id: str
    post_id: str
    emoji_name: str
    channel_id: str
    create_at: int

    def to_json(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "post_id": self.post_id,
            "emoji_name": self.emoji_name,
            "create_at": self.create_at,
            "update_at": self.create_at,
            "delete_at": 0,
            "remote_id": "",
            "channel_id": self.channel_id,
        }


class Store:
    """All server data. Posts include hidden edit versions and deleted rows, as in the SQL store."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.users: dict[str, User] = {}
        self.teams: dict[str, Team] = {}
        self.channels: dict[str, Channel] = {}
        self.posts: dict[str, dict[str, Any]] = {}
        self.channel_posts: dict[str, list[str]] = {}  # channel id -> post ids in insertion order
        self.reactions: dict[str, list[Reaction]] = {}  # post id -> reactions

    def user_by_token(self, token: str) -> User | None:
        if not token:
            return None
        for u in self.users.values():
            if secrets.compare_digest(u.token, token):
                return u
        return None

    def user_by_name(self, username: str) -> User | None:
        for u in self.users.values():
            if u.username == username:
                return u
        return None

    def team_by_name(self, name: str) -> Team | None:
        for t in self.teams.values():
            if t.name == name:
                return t
        return None

    def add_user(self, username: str, *, token: str | None = None, **kw: Any) -> User:
        u = User(id=new_id(), username=username, token=token or new_id(), create_at=self.clock.now_ms(), **kw)
        self.users[u.id] = u
        return u

    def add_team(self, name: str, display_name: str) -> Team:
        t = Team(id=new_id(), name=name, display_name=display_name, create_at=self.clock.now_ms())
        self.teams[t.id] = t
        return t

    def add_channel(
        self, team_id: str, type_: str, name: str, display_name: str, creator_id: str = ""
    ) -> Channel:
        c = Channel(
            id=new_id(),
            team_id=team_id,
            type=type_,
            name=name,
            display_name=display_name,
            creator_id=creator_id,
            create_at=self.clock.now_ms(),
        )
        self.channels[c.id] = c
        self.channel_posts[c.id] = []
        return c

    def join(self, channel: Channel, user_id: str) -> bool:
        if user_id in channel.members:
            return False
        channel.members[user_id] = self.clock.now_ms()
        return True

    def dm_between(self, a: str, b: str) -> Channel | None:
        name = "__".join(sorted([a, b]))
        for c in self.channels.values():
            if c.type == "D" and c.name == name:
                return c
        return None

    def create_dm(self, a: str, b: str) -> Channel:
        c = self.add_channel("", "D", "__".join(sorted([a, b])), "", creator_id=a)
        self.join(c, a)
        self.join(c, b)
        return c

    def gm_with(self, user_ids: list[str]) -> Channel | None:
        want = set(user_ids)
        for c in self.channels.values():
            if c.type == "G" and set(c.members) == want:
                return c
        return None

    def create_gm(self, user_ids: list[str], creator_id: str) -> Channel:
        names = sorted(self.users[u].username for u in user_ids)
        c = self.add_channel("", "G", new_id(), ", ".join(names), creator_id=creator_id)
        for u in user_ids:
            self.join(c, u)
        return c

    def channels_of(self, user_id: str) -> list[Channel]:
        return [c for c in self.channels.values() if user_id in c.members]

    def teams_of(self, user_id: str) -> list[Team]:
        return [t for t in self.teams.values() if user_id in t.members]

    def live_posts(self, channel_id: str) -> list[dict[str, Any]]:
        """Visible posts of a channel (not deleted, not hidden versions), oldest first."""
        rows = [self.posts[i] for i in self.channel_posts.get(channel_id, [])]
        rows = [p for p in rows if p["delete_at"] == 0 and not p["original_id"]]
        rows.sort(key=lambda p: p["create_at"])
        return rows

    def thread_posts(self, root_id: str) -> list[dict[str, Any]]:
        root = self.posts.get(root_id)
        if root is None:
            return []
        rows = [
            p for p in self.live_posts(root["channel_id"]) if p["id"] == root_id or p["root_id"] == root_id
        ]
        return rows
