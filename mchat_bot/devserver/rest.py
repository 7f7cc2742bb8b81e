"""REST v4 subset (sections 2, 5): auth, users, teams, channels, posts, reactions, typing."""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from mchat_bot.devserver.actions import for_client
from mchat_bot.devserver.errors import (
    AppError,
    forbidden,
    invalid_param,
    invalid_url_param,
    json_response,
    session_expired,
)
from mchat_bot.devserver.hub import Hub, broadcast
from mchat_bot.devserver.posts import PostService
from mchat_bot.devserver.state import Channel, Store, Team, User, is_valid_id

SINCE_CAP = 1000
DEFAULT_PER_PAGE = 60
MAX_PER_PAGE = 200
_FALSE = {"0", "f", "F", "false", "FALSE", "False"}


def parse_token(request: web.Request) -> tuple[str, str]:
    """(token, location) following ParseAuthTokenFromRequest: cookie, then header, then query."""
    cookie = request.cookies.get("MMAUTHTOKEN")
    if cookie:
        return cookie, "cookie"
    h = request.headers.get("Authorization", "")
    if len(h) > 6 and h[:6].upper() == "BEARER":
        return h[7:], "header"
    if len(h) > 5 and h[:5].lower() == "token":
        return h[6:], "header"
    q = request.query.get("access_token", "")
    if q:
        return q, "query"
    return "", ""


async def read_json(request: web.Request) -> Any:
    try:
        raw = await request.read()
        return json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError):
        return None


class RestApi:
    """Route handlers; the rules shared with the Python API live in PostService."""

    def __init__(self, store: Store, hub: Hub, posts: PostService) -> None:
        self.store, self.hub, self.posts = store, hub, posts
        self.post_fault: Any = None  # set by Faults: async (request) -> web.Response | None

    # ---- auth
    def optional_user(self, request: web.Request) -> User | None:
        token, loc = parse_token(request)
        if loc in ("", "query"):
            return None
        return self.store.user_by_token(token)

    def user(self, request: web.Request) -> User:
        token, loc = parse_token(request)
        if not token:
            raise session_expired()
        user = self.store.user_by_token(token)
        if user is None:
            raise session_expired()
        if loc == "query":
            raise AppError(
                401,
                "api.context.token_provided.app_error",
                "Session is not OAuth but token was provided in the query string.",
            )
        if loc == "cookie" and request.method not in ("GET", "HEAD"):
            if request.headers.get("X-Requested-With") != "XMLHttpRequest" and not request.headers.get(
                "X-CSRF-Token"
            ):
                raise session_expired()  # checkCSRFToken
        return user

    def target_user(self, me: User, raw: str) -> User:
        if raw == "me":
            return me
        if not is_valid_id(raw):
            raise invalid_url_param("user_id")
        u = self.store.users.get(raw)
        if u is None:
            raise AppError(404, "app.user.missing_account.const", "Unable to find the user.")
        return u

    def self_only(self, me: User, raw: str) -> User:
        u = self.target_user(me, raw)
        if u.id != me.id and not me.is_admin:
            raise forbidden()
        return u

    def team(self, me: User, team_id: str) -> Team:
        if not is_valid_id(team_id):
            raise invalid_url_param("team_id")
        t = self.store.teams.get(team_id)
        if t is None:
            raise AppError(404, "app.team.get.find.app_error", "Unable to find the existing team.")
        if me.id not in t.members and not me.is_admin:
            raise forbidden()
        return t

    def readable_channel(self, me: User, channel_id: str) -> Channel:
        if not is_valid_id(channel_id):
            raise invalid_url_param("channel_id")
        c = self.store.channels.get(channel_id)
        if c is None:
            raise AppError(404, "app.channel.get.existing.app_error", "Unable to find the existing channel.")
        team = self.store.teams.get(c.team_id)
        if (
            me.id in c.members
            or me.is_admin
            or (c.type == "O" and team is not None and me.id in team.members)
        ):
            return c
        raise forbidden()

    # ---- routes
    def routes(self) -> list[web.RouteDef]:
        r = web
        return [
            r.get("/api/v4/system/ping", self.system_ping),
            r.post("/api/v4/users/ids", self.users_by_ids),
            r.get("/api/v4/users/{user_id}", self.get_user),
            r.get("/api/v4/users/{user_id}/channels", self.user_channels),
            r.get("/api/v4/users/{user_id}/teams", self.user_teams),
            r.get("/api/v4/users/{user_id}/teams/{team_id}/channels", self.user_team_channels),
            r.post("/api/v4/users/{user_id}/typing", self.typing),
            r.delete("/api/v4/users/{user_id}/posts/{post_id}/reactions/{emoji}", self.delete_reaction),
            r.get("/api/v4/teams/name/{name}", self.team_by_name),
            r.get("/api/v4/teams/{team_id}", self.get_team),
            r.get("/api/v4/teams/{team_id}/channels", self.team_channels),
            r.get("/api/v4/teams/{team_id}/channels/name/{name}", self.channel_by_name),
            r.post("/api/v4/teams/{team_id}/members", self.add_team_member),
            r.post("/api/v4/channels/direct", self.create_direct),
            r.post("/api/v4/channels/group", self.create_group),
            r.get("/api/v4/channels/{channel_id}", self.get_channel),
            r.get("/api/v4/channels/{channel_id}/stats", self.channel_stats),
            r.get("/api/v4/channels/{channel_id}/members", self.channel_members),
            r.get("/api/v4/channels/{channel_id}/members/{user_id}", self.channel_member),
            r.post("/api/v4/channels/{channel_id}/members", self.add_channel_member),
            r.put("/api/v4/channels/{channel_id}/members/{user_id}/schemeRoles", self.channel_scheme_roles),
            r.get("/api/v4/channels/{channel_id}/posts", self.channel_posts),
            r.post("/api/v4/posts", self.create_post),
            r.post("/api/v4/posts/ephemeral", self.create_ephemeral_post),
            r.get("/api/v4/posts/{post_id}", self.get_post),
            r.delete("/api/v4/posts/{post_id}", self.delete_post),
            r.put("/api/v4/posts/{post_id}/patch", self.patch_post),
            r.get("/api/v4/posts/{post_id}/thread", self.get_thread),
            r.get("/api/v4/posts/{post_id}/reactions", self.post_reactions),
            r.post("/api/v4/reactions", self.add_reaction),
        ]

    async def system_ping(self, request: web.Request) -> web.Response:
        return json_response({"status": "OK", "ActiveSearchBackend": "database"})

    async def get_user(self, request: web.Request) -> web.Response:
        me = self.user(request)
        return json_response(self.target_user(me, request.match_info["user_id"]).to_json())

    async def users_by_ids(self, request: web.Request) -> web.Response:
        self.user(request)
        ids = await read_json(request)
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise invalid_param("user_ids")
        return json_response([self.store.users[i].to_json() for i in ids if i in self.store.users])

    async def user_channels(self, request: web.Request) -> web.Response:
        me = self.user(request)
        u = self.self_only(me, request.match_info["user_id"])
        return json_response([c.to_json() for c in self.store.channels_of(u.id)])

    async def user_teams(self, request: web.Request) -> web.Response:
        me = self.user(request)
        u = self.self_only(me, request.match_info["user_id"])
        return json_response([t.to_json() for t in self.store.teams_of(u.id)])

    async def user_team_channels(self, request: web.Request) -> web.Response:
        me = self.user(request)
        u = self.self_only(me, request.match_info["user_id"])
        t = self.team(me, request.match_info["team_id"])
        chans = [c for c in self.store.channels_of(u.id) if c.team_id in (t.id, "")]
        return json_response([c.to_json() for c in chans])

    async def get_team(self, request: web.Request) -> web.Response:
        me = self.user(request)
        return json_response(self.team(me, request.match_info["team_id"]).to_json())

    async def team_by_name(self, request: web.Request) -> web.Response:
        me = self.user(request)
        t = self.store.team_by_name(request.match_info["name"])
        if t is None:
            raise AppError(404, "app.team.get_by_name.missing.app_error", "Unable to find the existing team.")
        return json_response(self.team(me, t.id).to_json())

    async def team_channels(self, request: web.Request) -> web.Response:
        me = self.user(request)
        t = self.team(me, request.match_info["team_id"])
        return json_response(
            [c.to_json() for c in self.store.channels.values() if c.team_id == t.id and c.type == "O"]
        )

    async def channel_by_name(self, request: web.Request) -> web.Response:
        me = self.user(request)
        t = self.team(me, request.match_info["team_id"])
        name = request.match_info["name"]
        for c in self.store.channels.values():
            if c.team_id == t.id and c.name == name:
                return json_response(self.readable_channel(me, c.id).to_json())
        raise AppError(404, "app.channel.get_by_name.missing.app_error", "Channel does not exist.")

    async def add_team_member(self, request: web.Request) -> web.Response:
        me = self.user(request)
        t = self.team(me, request.match_info["team_id"])
        body = await read_json(request)
        uid = body.get("user_id") if isinstance(body, dict) else None
        if not isinstance(uid, str) or uid not in self.store.users:
            raise invalid_param("user_id")
        if uid not in t.members:
            t.members.add(uid)
            self.hub.publish("added_to_team", {"team_id": t.id, "user_id": uid}, broadcast(user_id=uid), None)
        return json_response({"team_id": t.id, "user_id": uid, "roles": "team_user", "delete_at": 0}, 201)

    async def get_channel(self, request: web.Request) -> web.Response:
        me = self.user(request)
        return json_response(self.readable_channel(me, request.match_info["channel_id"]).to_json())

    async def channel_members(self, request: web.Request) -> web.Response:
        me = self.user(request)
        c = self.readable_channel(me, request.match_info["channel_id"])
        return json_response([c.member_json(u, guest=self._guest(u)) for u in c.members])

    def _guest(self, user_id: str) -> bool:
        u = self.store.users.get(user_id)
        return u is not None and u.is_guest

    async def channel_stats(self, request: web.Request) -> web.Response:
        """api4/channel.go getChannelStats: read_channel on the channel; counts of its members (bots
        included) and of the guests among them."""
        me = self.user(request)
        c = self.readable_channel(me, request.match_info["channel_id"])
        guests = sum(1 for u in c.members if self._guest(u))
        return json_response(
            {
                "channel_id": c.id,
                "member_count": len(c.members),
                "guest_count": guests,
                "pinnedpost_count": 0,
                "files_count": 0,
            }
        )

    async def channel_member(self, request: web.Request) -> web.Response:
        """One membership (api4/channel.go getChannelMember): the caller needs read_channel (403), and a
        user who is not a member is a 404 ``app.channel.get_member.missing.app_error``."""
        me = self.user(request)
        user_id = request.match_info["user_id"]
        if not is_valid_id(user_id):
            raise invalid_url_param("user_id")
        c = self.readable_channel(me, request.match_info["channel_id"])
        if user_id not in c.members:
            raise AppError(
                404,
                "app.channel.get_member.missing.app_error",
                "No channel member found for that user ID and channel ID.",
            )
        return json_response(c.member_json(user_id, guest=self._guest(user_id)))

    async def channel_scheme_roles(self, request: web.Request) -> web.Response:
        """api4/channel.go updateChannelMemberSchemeRoles: body ``{scheme_admin, scheme_user}`` (both
        booleans, else 400); the caller needs manage_channel_roles (a channel admin or a system admin,
        else 403); the user must be a member (404). Answers ``{"status": "OK"}``."""
        me = self.user(request)
        user_id = request.match_info["user_id"]
        if not is_valid_id(user_id):
            raise invalid_url_param("user_id")
        c = self.readable_channel(me, request.match_info["channel_id"])
        body = await read_json(request)
        if not isinstance(body, dict) or not all(
            isinstance(body.get(k), bool) for k in ("scheme_admin", "scheme_user")
        ):
            raise invalid_param("scheme_roles")
        if not me.is_admin and me.id not in c.admins:
            raise AppError(
                403,
                "api.context.permissions.app_error",
                "You do not have the appropriate permissions.",
            )
        if user_id not in c.members:
            raise AppError(
                404,
                "app.channel.get_member.missing.app_error",
                "No channel member found for that user ID and channel ID.",
            )
        if body["scheme_admin"]:
            c.admins.add(user_id)
        else:
            c.admins.discard(user_id)
        return json_response({"status": "OK"})

    async def add_channel_member(self, request: web.Request) -> web.Response:
        me = self.user(request)
        c = self.readable_channel(me, request.match_info["channel_id"])
        body = await read_json(request)
        uid = body.get("user_id") if isinstance(body, dict) else None
        if not isinstance(uid, str) or uid not in self.store.users:
            raise invalid_param("user_id")
        if c.type in ("D", "G"):
            raise AppError(
                400,
                "api.channel.add_user_to_channel.type.app_error",
                "Can not add user to this channel type.",
            )
        if me.id not in c.members and not me.is_admin and not (c.type == "O" and uid == me.id):
            raise forbidden()
        team = self.store.teams.get(c.team_id)
        if team is not None and uid not in team.members:
            raise AppError(403, "api.channel.add_members.user_denied", "User is not a member of the team.")
        if self.store.join(c, uid):
            self.hub.publish(
                "user_added",
                {"team_id": c.team_id, "user_id": uid},
                broadcast(channel_id=c.id),
                set(c.members),
            )
        return json_response(c.member_json(uid), 201)

    async def create_direct(self, request: web.Request) -> web.Response:
        me = self.user(request)
        ids = await read_json(request)
        if not isinstance(ids, list) or len(ids) != 2 or not all(i in self.store.users for i in ids):
            raise invalid_param("user_ids")
        if me.id not in ids and not me.is_admin:
            raise forbidden()
        c = self.store.dm_between(ids[0], ids[1])
        if c is None:
            c = self.store.create_dm(ids[0], ids[1])
            other = ids[1] if ids[0] == me.id else ids[0]
            self.hub.publish(
                "direct_added",
                {"creator_id": me.id, "teammate_id": other},
                broadcast(channel_id=c.id),
                set(c.members),
            )
        return json_response(c.to_json(), 201)

    async def create_group(self, request: web.Request) -> web.Response:
        me = self.user(request)
        ids = await read_json(request)
        if not isinstance(ids, list) or not all(i in self.store.users for i in ids):
            raise invalid_param("user_ids")
        members = sorted(set(ids) | {me.id})
        if not 3 <= len(members) <= 8:
            raise AppError(
                400,
                "api.channel.create_group.bad_size.app_error",
                "Group message channels must contain at least 3 and no more than 8 users.",
            )
        c = self.store.gm_with(members)
        if c is None:
            c = self.store.create_gm(members, me.id)
            self.hub.publish(
                "group_added",
                {"teammate_ids": json.dumps(members)},
                broadcast(channel_id=c.id),
                set(c.members),
            )
        return json_response(c.to_json(), 201)

    # ---- posts
    async def create_post(self, request: web.Request) -> web.StreamResponse:
        received = time.monotonic()
        me = self.user(request)
        if self.post_fault is not None:
            faulted = await self.post_fault(request)
            if faulted is not None:
                return faulted
        body = await read_json(request)
        if not isinstance(body, dict):
            raise invalid_param("post")
        set_online = request.query.get("set_online", "true") not in _FALSE
        post = await self.posts.create(me, body, set_online=set_online, received_at=received)
        return json_response(post, 201)

    async def create_ephemeral_post(self, request: web.Request) -> web.Response:
        """api4/post.go createEphemeralPost: ``{"user_id", "post"}``; the caller needs
        create_post_ephemeral, which only system admins have. The post is sent to that one user over
        the WebSocket and never stored."""
        me = self.user(request)
        body = await read_json(request)
        if not isinstance(body, dict):
            raise invalid_param("body")
        user_id, post = body.get("user_id"), body.get("post")
        if not isinstance(user_id, str) or not user_id:
            raise invalid_param("user_id")
        if not isinstance(post, dict):
            raise invalid_param("post")
        if not me.is_admin:
            raise AppError(
                403,
                "api.context.permissions.app_error",
                "You do not have the appropriate permissions. (create_post_ephemeral)",
            )
        return json_response(self.posts.send_ephemeral(me, user_id, post), 201)

    async def get_post(self, request: web.Request) -> web.Response:
        me = self.user(request)
        return json_response(for_client(self.posts.readable_post(me, request.match_info["post_id"])))

    async def delete_post(self, request: web.Request) -> web.Response:
        me = self.user(request)
        self.posts.delete(me, request.match_info["post_id"])
        return json_response({"status": "OK"})

    async def patch_post(self, request: web.Request) -> web.Response:
        me = self.user(request)
        body = await read_json(request)
        if not isinstance(body, dict):
            raise invalid_param("post")
        return json_response(self.posts.patch(me, request.match_info["post_id"], body))

    def _post_list(
        self, order: list[dict[str, Any]], extra: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        posts = {p["id"]: p for p in order}
        for p in [*order, *(extra or [])]:
            posts.setdefault(p["id"], p)
            root = self.store.posts.get(p["root_id"]) if p["root_id"] else None
            if root is not None:
                posts.setdefault(root["id"], root)
        return {
            "order": [p["id"] for p in order],
            "posts": {pid: for_client(p) for pid, p in posts.items()},
            "next_post_id": "",
            "prev_post_id": "",
            "has_next": False,
            "first_inaccessible_post_time": 0,
        }

    async def get_thread(self, request: web.Request) -> web.Response:
        me = self.user(request)
        p = self.posts.readable_post(me, request.match_info["post_id"])
        rows = self.store.thread_posts(p["root_id"] or p["id"])
        rows.sort(key=lambda q: q["create_at"], reverse=True)
        return json_response(self._post_list(rows))

    async def channel_posts(self, request: web.Request) -> web.Response:
        me = self.user(request)
        c = self.readable_channel(me, request.match_info["channel_id"])
        q = request.query
        try:
            page = max(0, int(q.get("page", "0")))
            per_page = min(MAX_PER_PAGE, max(0, int(q.get("per_page", str(DEFAULT_PER_PAGE)))))
            since = int(q["since"]) if q.get("since") else None
        except ValueError:
            raise invalid_url_param("page") from None
        if since is not None:
            rows = [self.store.posts[i] for i in self.store.channel_posts[c.id]]
            changed = sorted(
                (p for p in rows if p["update_at"] > since), key=lambda p: p["create_at"], reverse=True
            )
            return json_response(self._post_list(changed[:SINCE_CAP]))
        live = self.store.live_posts(c.id)  # oldest first (not needed by `since`: it sorts them all)
        before, after = q.get("before", ""), q.get("after", "")
        newest_first = list(reversed(live))
        if after or before:
            cursor = self.store.posts.get(after or before)
            if cursor is None:
                return json_response(self._post_list([]))
            if after:
                newer = [p for p in live if p["create_at"] > cursor["create_at"]]
                chunk = newer[page * per_page : (page + 1) * per_page]
                out = self._post_list(list(reversed(chunk)))
                rest = newer[(page + 1) * per_page :]
                out["next_post_id"] = rest[0]["id"] if rest else ""
                out["has_next"] = bool(rest)
                out["prev_post_id"] = cursor["id"]
                return json_response(out)
            older = [p for p in newest_first if p["create_at"] < cursor["create_at"]]
            chunk = older[page * per_page : (page + 1) * per_page]
            out = self._post_list(chunk)
            rest = older[(page + 1) * per_page :]
            out["prev_post_id"] = rest[0]["id"] if rest else ""
            out["next_post_id"] = cursor["id"]
            return json_response(out)
        chunk = newest_first[page * per_page : (page + 1) * per_page]
        out = self._post_list(chunk)
        older = newest_first[(page + 1) * per_page :]
        newer = newest_first[: page * per_page]
        out["prev_post_id"] = older[0]["id"] if older else ""
        out["next_post_id"] = newer[-1]["id"] if newer else ""
        return json_response(out)

    # ---- reactions, typing
    async def add_reaction(self, request: web.Request) -> web.Response:
        me = self.user(request)
        body = await read_json(request)
        if not isinstance(body, dict):
            raise invalid_param("reaction")
        return json_response(self.posts.add_reaction(me, body))

    async def post_reactions(self, request: web.Request) -> web.Response:
        me = self.user(request)
        p = self.posts.readable_post(me, request.match_info["post_id"])
        return json_response([r.to_json() for r in self.store.reactions.get(p["id"], [])])

    async def delete_reaction(self, request: web.Request) -> web.Response:
        me = self.user(request)
        mi = request.match_info
        self.posts.remove_reaction(me, mi["user_id"], mi["post_id"], mi["emoji"])
        return json_response({"status": "OK"})

    async def typing(self, request: web.Request) -> web.Response:
        me = self.user(request)
        u = self.target_user(me, request.match_info["user_id"])
        if u.id != me.id:
            raise forbidden()
        body = await read_json(request)
        if not isinstance(body, dict):
            raise invalid_param("typing")
        self.posts.typing(me, body.get("channel_id"), body.get("parent_id", ""))
        return json_response({"status": "OK"})
