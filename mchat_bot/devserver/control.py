"""Control API under /__dev/ (JSON, no auth) so another process (demo, bench) can drive the faults."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from aiohttp import web

from mchat_bot.devserver.errors import AppError, json_response
from mchat_bot.devserver.rest import read_json

if TYPE_CHECKING:
    from mchat_bot.devserver.server import DevServer


def control_routes(dev: DevServer) -> list[web.RouteDef]:
    async def body(request: web.Request) -> dict[str, Any]:
        b = await read_json(request)
        return b if isinstance(b, dict) else {}

    async def seed(request: web.Request) -> web.Response:
        return json_response(dev.seed.to_json(dev.url))

    async def user_post(request: web.Request) -> web.Response:
        b = await body(request)
        try:
            post = await dev.user_post(
                str(b.get("username", "")),
                str(b.get("channel_id", "")),
                str(b.get("message", "")),
                root_id=str(b.get("root_id", "")),
                props=b.get("props") if isinstance(b.get("props"), dict) else None,
            )
        except KeyError as e:
            raise AppError(400, "devserver.unknown_user", f"unknown user {e}") from None
        return json_response(post, 201)

    async def posts(request: web.Request) -> web.Response:
        q = request.query
        uid, root, cid = q.get("user_id"), q.get("root_id"), q.get("channel_id")
        rows = dev.posts.find(
            lambda p: (
                (not uid or p["user_id"] == uid)
                and (not root or p["id"] == root or p["root_id"] == root)
                and (not cid or p["channel_id"] == cid)
            )
        )
        return json_response(rows)

    async def timestamps(request: web.Request) -> web.Response:
        return json_response(dev.post_timestamps)

    # ---- bench hooks (bench/, devserver/timing.py)
    async def user_posts(request: web.Request) -> web.Response:
        """Many posts by one user in one call, so a load generator can offer thousands per second."""
        b = await body(request)
        messages = b.get("messages")
        if not isinstance(messages, list) or not all(isinstance(m, str) for m in messages):
            raise AppError(400, "devserver.bad_messages", "messages: a list of strings")
        ids = []
        try:
            for message in messages:
                post = await dev.user_post(str(b.get("username", "")), str(b.get("channel_id", "")), message)
                ids.append(post["id"])
                await asyncio.sleep(0)  # let the socket writers run between posts, as separate requests would
        except KeyError as e:
            raise AppError(400, "devserver.unknown_user", f"unknown user {e}") from None
        return json_response({"ids": ids}, 201)

    async def timings(request: web.Request) -> web.Response:
        return json_response(dev.posts.timings.to_json(request.query.get("user_id", "")))

    async def timings_clear(request: web.Request) -> web.Response:
        dev.posts.timings.clear()
        dev.post_timestamps.clear()
        dev.posts.timings.loop_lag.start()  # a bench run begins: watch the loop from now on
        return json_response({"status": "OK"})

    async def loop_lag(request: web.Request) -> web.Response:
        dev.posts.timings.loop_lag.start()
        return json_response(dev.posts.timings.loop_lag.to_json())

    async def fault(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        b = await body(request)
        f = dev.faults
        out: Any = None
        if name == "drop_sockets":
            out = f.drop_sockets()
        elif name == "drop_every":
            f.drop_every(b.get("seconds"))
        elif name == "fail_posts":
            f.fail_posts(int(b.get("n", 1)), int(b.get("status", 500)))
        elif name == "fail_post_ratio":
            f.fail_post_ratio(
                float(b.get("ratio", 0)), tuple(b.get("statuses", (429, 500, 502, 503))), b.get("seed")
            )
        elif name == "delay_posts":
            f.delay_posts(float(b.get("seconds", 0)))
        elif name == "freeze_sockets":
            f.freeze_sockets(bool(b.get("frozen", True)))
        elif name == "half_open_sockets":
            out = f.half_open_sockets()
        elif name == "send_raw_to_bot":
            out = await f.send_raw_to_bot(str(b.get("frame", "")))
        elif name == "rate_limit":
            f.rate_limit(
                bool(b.get("enabled", True)),
                float(b.get("per_sec", 10)),
                int(b.get("burst", 100)),
                bool(b.get("vary_by_user", False)),
            )
        elif name == "reset":
            f.reset()
        else:
            raise AppError(404, "devserver.unknown_fault", f"unknown fault {name}")
        return json_response({"status": "OK", "result": out})

    async def restart(request: web.Request) -> web.Response:
        b = await body(request)
        await dev.restart(lose_replay=bool(b.get("lose_replay", True)))
        return json_response({"status": "OK"})

    return [
        web.get("/__dev/seed", seed),
        web.post("/__dev/user_post", user_post),
        web.get("/__dev/posts", posts),
        web.get("/__dev/post_timestamps", timestamps),
        web.post("/__dev/user_posts", user_posts),
        web.get("/__dev/timings", timings),
        web.post("/__dev/timings/clear", timings_clear),
        web.get("/__dev/loop_lag", loop_lag),
        web.post("/__dev/faults/{name}", fault),
        web.post("/__dev/restart", restart),
    ]
