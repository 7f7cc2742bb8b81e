"""RestClient and Gateway against the in-process DevServer (real sockets on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from mchat_bot.doors.websocket import message_from_posted
from mchat_bot.mattermost.gateway import Gateway
from mchat_bot.mattermost.rest import MattermostError, RestClient
from tests.support.gateway import Recorder, running_gateway

devserver = pytest.importorskip("mchat_bot.devserver")
DevServer = devserver.DevServer


def ident(x: Any) -> str:
    """Seed entries may be ids or objects with an ``id``."""
    return x if isinstance(x, str) else x.id


@pytest.fixture
async def dev() -> AsyncIterator[Any]:
    async with DevServer(host="127.0.0.1", port=0) as server:
        yield server


def rest(dev: Any, **kw: Any) -> RestClient:
    kw.setdefault("backoff_factor", 0.05)
    return RestClient(dev.url, dev.seed.bot.token, **kw)


async def wait_until(predicate: Callable[[], bool], within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - gateway exposes counters, not events
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def gateway(dev: Any, rec: Recorder, **kw: Any) -> AsyncIterator[Gateway]:
    kw.setdefault("initial_backoff", 0.1)
    kw.setdefault("max_backoff", 0.5)
    async with running_gateway(dev.url, dev.seed.bot.token, rec.on_event, rec.on_gap, **kw) as gw:
        yield gw


async def test_rest_endpoints_round_trip(dev: Any) -> None:
    qa = ident(dev.seed.channels["qa"])
    async with rest(dev) as rc:
        me = await rc.get_me()
        assert me["id"] == dev.seed.bot.id and me["is_bot"] is True
        assert (await rc.get_user(me["id"]))["username"] == me["username"]
        assert [u["id"] for u in await rc.get_users_by_ids([me["id"]])] == [me["id"]]
        channel = await rc.get_channel(qa)
        assert channel["name"] == "qa"
        assert qa in {c["id"] for c in await rc.get_my_channels(me["id"])}
        assert (await rc.get_team(channel["team_id"]))["id"] == channel["team_id"]
        root = await rc.create_post(qa, "root")
        reply = await rc.create_post(qa, "reply", root_id=root["id"], props={"k": "v"})
        assert reply["root_id"] == root["id"] and reply["props"]["k"] == "v"
        assert (await rc.get_post(root["id"]))["message"] == "root"
        thread = await rc.get_thread(root["id"])
        assert set(thread["order"]) == {root["id"], reply["id"]}
        edited = await rc.patch_post(reply["id"], message="reply (edited)")
        assert edited["message"] == "reply (edited)" and edited["edit_at"] > 0
        reaction = await rc.add_reaction(me["id"], root["id"], "white_check_mark")
        assert reaction["emoji_name"] == "white_check_mark"
        await rc.typing(me["id"], qa, root["id"])
        since = await rc.get_channel_posts(qa, since=root["create_at"] - 1)
        assert {root["id"], reply["id"]} <= set(since["posts"])
        page = await rc.get_channel_posts(qa, page=0, per_page=1)
        assert len(page["order"]) == 1
        await rc.delete_post(reply["id"])
        with pytest.raises(MattermostError) as info:
            await rc.create_post(qa, "reply to a reply", root_id=reply["id"])
        assert info.value.status in (400, 404)
        with pytest.raises(MattermostError) as info:
            await rc.create_post(qa, "bad root", root_id="x" * 26)
        assert info.value.error_id == "api.post.create_post.root_id.app_error"
        assert await rc.ping() is not None


async def test_create_post_survives_two_500s_with_one_post(dev: Any) -> None:
    qa = ident(dev.seed.channels["qa"])
    async with rest(dev) as rc:
        dev.faults.fail_posts(2, 500)
        post = await rc.create_post(qa, "exactly once please", pending_post_id="pp-once-1")
        listing = await rc.get_channel_posts(qa, since=post["create_at"] - 60_000)
    same = [p for p in listing["posts"].values() if p["message"] == "exactly once please"]
    assert [p["id"] for p in same] == [post["id"]]


async def test_429_waits_and_succeeds(dev: Any) -> None:
    dev.faults.rate_limit(enabled=True, per_sec=5, burst=1)
    try:
        # Six at once against a burst of one: the server's 429s are what we hit first.
        async with rest(dev, max_tries=5) as rc:
            t0 = time.monotonic()
            results = await asyncio.gather(*(rc.get_me() for _ in range(6)))
            elapsed = time.monotonic() - t0
    finally:
        dev.faults.rate_limit(enabled=False)
    assert all(r["id"] == dev.seed.bot.id for r in results)
    assert elapsed >= 0.5  # at least one Retry-After wait happened


async def test_gateway_delivers_posted_events(dev: Any) -> None:
    qa = ident(dev.seed.channels["qa"])
    rec = Recorder()
    async with gateway(dev, rec) as gw:
        for i in range(3):
            await dev.user_post("kim", qa, f"@ai hello {i}")
        got = await rec.posts(3)
        assert [p.post.message for p in got] == [f"@ai hello {i}" for i in range(3)]
        msg = message_from_posted(got[0])
        assert (msg.user_name, msg.channel_type, msg.channel_id, msg.from_bot) == ("kim", "O", qa, False)
        assert gw.stats.fresh_hellos == 1 and rec.gaps == []


async def test_drop_sockets_resumes_without_hello_or_loss(dev: Any) -> None:
    qa = ident(dev.seed.channels["qa"])
    rec = Recorder()
    async with gateway(dev, rec, initial_backoff=0.5, max_backoff=0.5) as gw:
        await dev.user_post("kim", qa, "before")
        await rec.posts(1)
        assert dev.faults.drop_sockets() >= 1
        for i in range(3):  # posted right after the drop, before the client can have reconnected
            await dev.user_post("kim", qa, f"missed {i}")
        got = await rec.posts(3)
        assert [p.post.message for p in got] == [f"missed {i}" for i in range(3)]
        await dev.user_post("kim", qa, "after")
        assert (await rec.posts(1))[0].post.message == "after"
        assert gw.stats.connects == 2 and gw.stats.resumes == 1
        assert gw.stats.fresh_hellos == 1 and rec.gaps == []
        assert rec.events.empty()  # no duplicates, no second hello


async def test_restart_losing_replay_calls_on_gap(dev: Any) -> None:
    qa = ident(dev.seed.channels["qa"])
    rec = Recorder()
    async with gateway(dev, rec) as gw:
        await dev.user_post("kim", qa, "seen")
        (seen,) = await rec.posts(1)
        await dev.restart(lose_replay=True)
        await asyncio.wait_for(rec.gap_seen.wait(), 10)
        assert rec.gaps[0] == max(seen.post.create_at, seen.post.update_at) - 1
        assert gw.stats.fresh_hellos == 2
        await wait_until(gw.authenticated.is_set)
        await dev.user_post("kim", qa, "after restart")
        assert (await rec.posts(1))[0].post.message == "after restart"


async def test_frozen_socket_reconnects_after_silence(dev: Any) -> None:
    qa = ident(dev.seed.channels["qa"])
    rec = Recorder()
    async with gateway(dev, rec, silence_timeout=1.5, ping_interval=0.5) as gw:
        dev.faults.freeze_sockets(True)
        t0 = time.monotonic()
        await wait_until(lambda: gw.stats.silences >= 1, within=5)
        assert 1.3 <= time.monotonic() - t0 < 3.5
        dev.faults.freeze_sockets(False)
        await wait_until(lambda: gw.stats.connects >= 2 and gw.authenticated.is_set())
        await dev.user_post("kim", qa, "after thaw")
        assert (await rec.posts(1))[0].post.message == "after thaw"


async def test_malformed_frame_is_skipped_and_next_event_delivered(dev: Any) -> None:
    qa = ident(dev.seed.channels["qa"])
    rec = Recorder()
    async with gateway(dev, rec) as gw:
        await dev.faults.send_raw_to_bot('{"event": "posted", "seq": 1, "data": {"post": "{broken')
        await dev.faults.send_raw_to_bot("\x00 not json at all")
        await dev.user_post("kim", qa, "next one")
        assert (await rec.posts(1))[0].post.message == "next one"
        assert gw.stats.bad_frames == 2 and gw.stats.connects == 1


async def test_dm_post_maps_to_direct_message(dev: Any) -> None:
    dm = ident(dev.seed.dm["kim"])
    rec = Recorder()
    async with gateway(dev, rec):
        await dev.user_post("kim", dm, "안녕 봇")
        (p,) = await rec.posts(1)
        msg = message_from_posted(p)
        assert (msg.channel_type, msg.team_id, msg.user_name, msg.channel_id) == ("D", "", "kim", dm)
