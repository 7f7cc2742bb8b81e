"""Posts, reactions and typing: the server rules of sections 4 and 5, shared by REST and the Python API.

Every change publishes its WebSocket event here, before the caller's HTTP response is written,
as the real server does.
"""

from __future__ import annotations

import asyncio
import copy
import re
import time
from collections.abc import Callable
from typing import Any

from mchat_bot.devserver import mentions, wire
from mchat_bot.devserver.actions import client_json, for_client, generate_action_ids
from mchat_bot.devserver.errors import AppError, forbidden, invalid_param
from mchat_bot.devserver.hub import Hub, broadcast
from mchat_bot.devserver.state import Channel, Reaction, Store, User, is_valid_id, new_id, new_post
from mchat_bot.devserver.timing import Timings

MAX_MESSAGE_RUNES = 16383
MAX_PROPS_RUNES = 800_000
PENDING_TTL = 30.0
MAX_DISTINCT_REACTIONS = 50
_EMOJI = re.compile(r"^[a-zA-Z0-9\-+_]{1,64}$")


def _root_id_error() -> AppError:
    return AppError(400, "api.post.create_post.root_id.app_error", "Invalid RootId parameter.")


class PostService:
    """Creates, edits and deletes posts and publishes the matching events."""

    def __init__(self, store: Store, hub: Hub) -> None:
        self.store, self.hub = store, hub
        self.post_delay = 0.0
        # How long a pending_post_id is remembered (30 s on the real server); tests shorten it to
        # prove the bot's own sent-log and thread check, which must hold beyond that window.
        self.pending_ttl = PENDING_TTL
        # Delay the 201 to a bot's post after the post is created: a client killed meanwhile
        # never learns that its post landed (the crash window between posting and the sent-log).
        self.bot_reply_delay = 0.0
        self.pending: dict[str, tuple[str | None, float]] = {}  # pending_post_id -> (post id | None, expiry)
        self.post_timestamps: dict[str, float] = {}
        self.edit_timestamps: dict[str, list[float]] = {}  # post id -> monotonic times of its edits
        self.ephemeral: list[dict[str, Any]] = []  # ephemeral posts sent (never stored), for tests
        self.timings = Timings()  # bench hooks: socket write and reply arrival times
        self._changed = asyncio.Event()
        # called after every created post (outgoing webhooks fire from here): (post, channel, sender)
        self.after_create: list[Callable[[dict[str, Any], Channel, User], None]] = []

    # ---- helpers
    def channel_for(self, user: User, channel_id: str) -> Channel:
        ch = self.store.channels.get(channel_id)
        if ch is None or user.id not in ch.members:
            raise forbidden()
        return ch

    def live_post(self, post_id: str) -> dict[str, Any]:
        p = self.store.posts.get(post_id)
        if p is None or p["delete_at"] or p["original_id"]:
            raise AppError(404, "app.post.get.app_error", "Unable to get the post.")
        return p

    def readable_post(self, user: User, post_id: str) -> dict[str, Any]:
        if not is_valid_id(post_id):
            raise AppError(
                400, "api.context.invalid_url_param.app_error", "Invalid or missing post_id parameter."
            )
        p = self.store.posts.get(post_id)
        if p is not None and not p["delete_at"]:
            ch = self.store.channels.get(p["channel_id"])
            # api4/post.go getPost: a member may read it; so may any team member when the channel
            # is public (read_public_channel)
            team = self.store.teams.get(ch.team_id) if ch is not None else None
            public_to_team = (
                ch is not None and ch.type == "O" and team is not None and user.id in team.members
            )
            if ch is None or not (user.id in ch.members or user.is_admin or public_to_team):
                raise forbidden()
        return self.live_post(post_id)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self, within: float) -> None:
        ev = self._changed
        try:
            await asyncio.wait_for(ev.wait(), within)
        except TimeoutError:
            pass

    def _purge_pending(self) -> None:
        now = time.monotonic()
        for k in [k for k, (_, exp) in self.pending.items() if exp < now]:
            del self.pending[k]

    # ---- create
    async def create(
        self,
        user: User,
        body: dict[str, Any],
        *,
        set_online: bool = True,
        received_at: float | None = None,
        integration: bool = False,
    ) -> dict[str, Any]:
        """Create a post (POST /posts). Returns the post; a deduplicated repeat returns the first one.

        ``integration``: a webhook/command post, made without the poster being a channel member.
        """
        received_at = time.monotonic() if received_at is None else received_at
        channel_id = body.get("channel_id")
        if not isinstance(channel_id, str) or not channel_id:
            raise invalid_param("channel_id")
        if integration and channel_id in self.store.channels:
            channel = self.store.channels[channel_id]
        else:
            channel = self.channel_for(user, channel_id)
        if channel.delete_at:
            raise AppError(
                400, "api.post.create_post.can_not_post_to_deleted.error", "Can not post to deleted channel."
            )
        message = body.get("message", "")
        root_id = body.get("root_id", "") or ""
        props = body.get("props") or {}
        if not isinstance(message, str) or not isinstance(root_id, str) or not isinstance(props, dict):
            raise invalid_param("post")
        file_ids = body.get("file_ids") or []
        if not isinstance(file_ids, list) or len(file_ids) > 10:
            raise invalid_param("file_ids")
        if not all(isinstance(f, str) for f in file_ids):
            raise invalid_param("file_ids")
        pending_id = body.get("pending_post_id") or ""
        if not isinstance(pending_id, str):
            raise invalid_param("pending_post_id")
        if pending_id:
            self._purge_pending()
            hit = self.pending.get(pending_id)
            if hit is not None:
                if hit[0] is None:
                    raise AppError(
                        500,
                        "api.post.deduplicate_create_post.pending",
                        "Rejected post with the same pending post ID while the original is processing.",
                    )
                existing = self.store.posts.get(hit[0])
                if existing is not None:
                    return for_client(existing)
            self.pending[pending_id] = (None, time.monotonic() + self.pending_ttl)
        try:
            if self.post_delay > 0:
                await asyncio.sleep(self.post_delay)
            post = self._insert(user, channel, message, root_id, dict(props), pending_id)
        except BaseException:
            if pending_id:
                self.pending.pop(pending_id, None)
            raise
        if file_ids:
            post["file_ids"] = list(file_ids)
        if pending_id:
            self.pending[pending_id] = (post["id"], time.monotonic() + self.pending_ttl)
        self.post_timestamps[post["id"]] = received_at
        self.timings.on_reply(post["props"], received_at)
        self._publish_posted(post, channel, user, set_online)
        self.hub.touch_user(user.id)
        self._notify()
        for callback in self.after_create:
            callback(wire.copied(post), channel, user)
        if self.bot_reply_delay > 0 and user.is_bot:
            await asyncio.sleep(self.bot_reply_delay)  # the post exists; the answer is late
        return for_client(post)

    def _insert(
        self, user: User, channel: Channel, message: str, root_id: str, props: dict[str, Any], pending_id: str
    ) -> dict[str, Any]:
        root: dict[str, Any] | None = None
        if root_id:
            root = self.store.posts.get(root_id)
            if root is None or root["delete_at"] or root["original_id"] or root["root_id"]:
                raise _root_id_error()
            if root["channel_id"] != channel.id:
                raise AppError(
                    400,
                    "api.post.create_post.channel_root_id.app_error",
                    "Invalid ChannelId for RootId parameter.",
                )
        if len(message) > MAX_MESSAGE_RUNES:
            raise AppError(
                400, "model.post.is_valid.message_length.app_error", "Invalid Message property length."
            )
        if user.is_bot:
            props["from_bot"] = "true"
        generate_action_ids(props)
        if props and len(wire.dumps(props)) > MAX_PROPS_RUNES:
            raise AppError(400, "model.post.is_valid.props.app_error", "Invalid Props.")
        at = self.store.clock.now_ms()
        post = new_post(
            post_id=new_id(),
            user_id=user.id,
            channel_id=channel.id,
            message=message,
            root_id=root_id,
            props=props,
            at=at,
        )
        post["pending_post_id"] = pending_id
        if root is not None:
            root["reply_count"] += 1
            root["last_reply_at"] = at
            root["update_at"] = at
            post["reply_count"] = root["reply_count"]
        self.store.posts[post["id"]] = post
        self.store.channel_posts[channel.id].append(post["id"])
        channel.last_post_at = at
        channel.total_msg_count += 1
        return post

    def send_ephemeral(self, sender: User, user_id: str, post: dict[str, Any]) -> dict[str, Any]:
        """app.SendEphemeralPost: typed ``system_ephemeral``, given an id and a time if it has none,
        published as ``ephemeral_message`` to that one user in the channel, and never stored."""
        sent = {
            **new_post(
                post_id=str(post.get("id") or new_id()),
                user_id=sender.id,
                channel_id=str(post.get("channel_id", "")),
                message=str(post.get("message", "")),
                root_id=str(post.get("root_id", "")),
                props=dict(post["props"]) if isinstance(post.get("props"), dict) else {},
                at=self.store.clock.now_ms(),
            ),
            "type": "system_ephemeral",
        }
        self.ephemeral.append({**sent, "to_user_id": user_id})
        self.hub.publish(
            "ephemeral_message",
            {"post": wire.dumps(sent)},
            broadcast(channel_id=sent["channel_id"], user_id=user_id),
            {user_id},
        )
        self._notify()
        return copy.deepcopy(sent)

    def _mentioned(self, post: dict[str, Any], channel: Channel, sender: User) -> set[str]:
        members = set(channel.members)
        if channel.type in ("D", "G"):
            out = set(members)
        elif "@" not in post["message"]:
            return set()  # every mention (@name, @channel, @all, @here) starts with "@"
        else:
            by_name = {self.store.users[u].username.lower(): u for u in members if u in self.store.users}
            found = mentions.parse(post["message"], set(by_name))
            out = {by_name[n] for n in found.usernames}
            if found.channel_wide:
                out |= members
            if found.here:
                out |= {c.user_id for c in self.hub.conns.values() if c.active and c.user_id in members}
        out.discard(sender.id)
        return out

    def _channel_display(self, channel: Channel, sender: User) -> str:
        if channel.type == "D":
            return "@" + sender.username
        if channel.type == "G":
            return ", ".join(sorted(self.store.users[u].username for u in channel.members))
        return channel.display_name

    def _publish_posted(self, post: dict[str, Any], channel: Channel, sender: User, set_online: bool) -> None:
        base = {
            "channel_display_name": self._channel_display(channel, sender),
            "channel_name": channel.name,
            "channel_type": channel.type,
            "post": client_json(post),
            "sender_name": "@" + sender.username,
            "set_online": set_online,
            "team_id": channel.team_id,
        }
        mentioned = self._mentioned(post, channel, sender)
        bc = broadcast(channel_id=channel.id)

        def tailor(uid: str) -> tuple[dict[str, Any], dict[str, Any]]:
            if uid not in mentioned:
                return base, bc
            d = dict(base)
            d["mentions"] = wire.dumps([uid])
            return dict(sorted(d.items())), bc

        self.hub.publish("posted", base, bc, set(channel.members), tailor, tag=post["id"])

    # ---- edit / delete
    def patch(self, user: User, post_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """PUT /posts/{id}/patch: omitted fields stay, `props` replaces the whole map."""
        if not is_valid_id(post_id):
            raise AppError(
                400, "api.context.invalid_url_param.app_error", "Invalid or missing post_id parameter."
            )
        p = self.store.posts.get(post_id)
        if p is None or p["original_id"]:
            raise AppError(404, "app.post.get.app_error", "Unable to get the post.")
        channel = self.store.channels[p["channel_id"]]
        if user.id not in channel.members and not user.is_admin:
            raise forbidden()
        if p["user_id"] != user.id and not user.is_admin:
            raise forbidden()
        if p["delete_at"]:
            raise AppError(400, "api.post.update_post.permissions_details.app_error", "Already deleted id.")
        if p["type"].startswith("system_"):
            raise AppError(
                400, "api.post.update_post.system_message.app_error", "Unable to update system message."
            )
        message = body.get("message")
        props = body.get("props")
        if message is not None and (not isinstance(message, str) or len(message) > MAX_MESSAGE_RUNES):
            raise AppError(
                400, "model.post.is_valid.message_length.app_error", "Invalid Message property length."
            )
        if props is not None and not isinstance(props, dict):
            raise invalid_param("props")
        for key, typ in (("is_pinned", bool), ("has_reactions", bool), ("file_ids", list)):
            if isinstance(body.get(key), typ):
                p[key] = body[key]
        self._edit(user, p, message, props)
        return for_client(p)

    def apply_action_update(self, post_id: str, update: dict[str, Any]) -> None:
        """An integration's answer to a click changes its post (app.UpdatePost): the message, and
        the props when it gives them (else the old ones stay); ``from_bot`` is kept."""
        p = self.store.posts.get(post_id)
        if p is None or p["delete_at"]:
            return
        message, props = update.get("message"), update.get("props")
        if not isinstance(message, str) or len(message) > MAX_MESSAGE_RUNES:
            message = None
        if not isinstance(props, dict):
            props = None
        poster = self.store.users[p["user_id"]]
        self._edit(poster, p, message, props)

    def _edit(self, user: User, p: dict[str, Any], message: str | None, props: dict[str, Any] | None) -> None:
        """Keep the old version (``original_id``), apply the change, publish ``post_edited``."""
        channel = self.store.channels[p["channel_id"]]
        post_id = p["id"]
        self.edit_timestamps.setdefault(post_id, []).append(time.monotonic())
        at = self.store.clock.now_ms()
        old = copy.deepcopy(p)
        old.update(id=new_id(), original_id=p["id"], delete_at=at, update_at=at)
        self.store.posts[old["id"]] = old
        self.store.channel_posts[channel.id].append(old["id"])
        if message is not None and message != p["message"]:
            p["message"] = message
            p["edit_at"] = at
        if props is not None:
            from_bot = p["props"].get("from_bot")
            p["props"] = copy.deepcopy(props)
            if from_bot is not None:
                p["props"]["from_bot"] = from_bot
            generate_action_ids(p["props"])
        p["update_at"] = at
        self.hub.publish(
            "post_edited",
            {"post": client_json(p)},
            broadcast(channel_id=channel.id),
            set(channel.members),
        )
        self.hub.touch_user(user.id)
        self._notify()

    def delete(self, user: User, post_id: str) -> None:
        """DELETE /posts/{id}; a root takes its replies with it."""
        p = self.readable_post(user, post_id)
        if p["user_id"] != user.id and not user.is_admin:
            raise forbidden()
        channel = self.store.channels[p["channel_id"]]
        before = wire.dumps(p)
        at = self.store.clock.now_ms()
        p["delete_at"] = at
        p["update_at"] = at
        if not p["root_id"]:
            for q in self.store.posts.values():
                if q["root_id"] == p["id"] and not q["delete_at"]:
                    q["delete_at"] = at
                    q["update_at"] = at
        else:
            root = self.store.posts.get(p["root_id"])
            if root is not None and root["reply_count"] > 0:
                root["reply_count"] -= 1

        def tailor(uid: str) -> tuple[dict[str, Any], dict[str, Any]]:
            if self.store.users[uid].is_admin:
                return {"delete_by": user.id, "post": before}, broadcast(
                    channel_id=channel.id, contains_sensitive_data=True
                )
            return {"post": before}, broadcast(channel_id=channel.id, contains_sanitized_data=True)

        self.hub.publish(
            "post_deleted", {"post": before}, broadcast(channel_id=channel.id), set(channel.members), tailor
        )
        self.hub.touch_user(user.id)
        self._notify()

    # ---- reactions, typing
    def add_reaction(self, user: User, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("user_id") != user.id:
            raise AppError(
                403,
                "api.reaction.save_reaction.user_id.app_error",
                "You cannot save reaction for the other user.",
            )
        post_id, emoji = body.get("post_id"), body.get("emoji_name")
        if not isinstance(post_id, str) or not is_valid_id(post_id):
            raise invalid_param("post_id")
        if not isinstance(emoji, str) or not _EMOJI.match(emoji):
            raise AppError(400, "model.reaction.is_valid.emoji_name.app_error", "Invalid emoji name.")
        p = self.store.posts.get(post_id)
        if p is None or p["delete_at"]:
            raise forbidden()
        channel = self.channel_for(user, p["channel_id"])
        rs = self.store.reactions.setdefault(post_id, [])
        found = next((r for r in rs if r.user_id == user.id and r.emoji_name == emoji), None)
        if found is None:
            if (
                emoji not in {r.emoji_name for r in rs}
                and len({r.emoji_name for r in rs}) >= MAX_DISTINCT_REACTIONS
            ):
                raise AppError(
                    400, "app.reaction.save.save.too_many_reactions", "Reaction limit has been reached."
                )
            found = Reaction(user.id, post_id, emoji, channel.id, self.store.clock.now_ms())
            rs.append(found)
        p["has_reactions"] = True
        p["update_at"] = self.store.clock.now_ms()
        data = {"reaction": wire.dumps(found.to_json())}
        self.hub.publish("reaction_added", data, broadcast(channel_id=channel.id), set(channel.members))
        return found.to_json()

    def remove_reaction(self, user: User, user_id: str, post_id: str, emoji: str) -> None:
        if user_id != user.id and not user.is_admin:
            raise forbidden()
        p = self.store.posts.get(post_id)
        if p is None:
            raise forbidden()
        channel = self.channel_for(user, p["channel_id"])
        rs = self.store.reactions.get(post_id, [])
        found = next((r for r in rs if r.user_id == user_id and r.emoji_name == emoji), None)
        if found is None:
            return
        rs.remove(found)
        p["has_reactions"] = bool(rs)
        p["update_at"] = self.store.clock.now_ms()
        data = {"reaction": wire.dumps(found.to_json())}
        self.hub.publish("reaction_removed", data, broadcast(channel_id=channel.id), set(channel.members))

    def typing(self, user: User, channel_id: Any, parent_id: Any) -> None:
        if not isinstance(channel_id, str) or not is_valid_id(channel_id):
            raise AppError(
                400, "api.websocket_handler.invalid_param.app_error", "Invalid channel_id parameter."
            )
        channel = self.channel_for(user, channel_id)
        self.hub.publish(
            "typing",
            {"parent_id": parent_id if isinstance(parent_id, str) else "", "user_id": user.id},
            broadcast(channel_id=channel.id, omit_users={user.id: True}),
            set(channel.members),
        )

    # ---- queries for the Python API
    def find(self, pred: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        rows = [p for p in self.store.posts.values() if not p["delete_at"] and not p["original_id"]]
        rows.sort(key=lambda p: p["create_at"])
        return [copy.deepcopy(p) for p in rows if pred(p)]
