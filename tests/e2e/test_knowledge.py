"""Channel knowledge through the real daemon: a learning channel's thread answers a question there,
cited by permalink; never in another channel; an edit changes the answer, a deletion removes it;
`learn on` is for channel admins only; `learn off --forget` leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from pathlib import Path

import httpx
import pytest

from mchat_bot.devserver import DevServer
from mchat_bot.devserver.errors import AppError
from mchat_bot.devserver.fake_llm import FakeLLM
from tests.support.daemon import DaemonProcess, running_daemon, tag
from tests.support.ops import wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")

NO_LLM = {"MCHAT_LLM_MODEL": ""}


async def make_channel_admin(dev: DevServer, channel: str, user: str) -> None:
    """Through the real API, as the seed's system admin (PUT .../members/{user}/schemeRoles)."""
    admin = dev.seed.users["admin"]
    channel_id = dev.seed.channels[channel]
    async with httpx.AsyncClient(base_url=dev.url, timeout=10) as http:
        r = await http.put(
            f"/api/v4/channels/{channel_id}/members/{dev.seed.users[user].id}/schemeRoles",
            json={"scheme_admin": True, "scheme_user": True},
            headers={"Authorization": f"Bearer {admin.token}"},
        )
    assert r.status_code == 200, r.text


async def learned(bot: DaemonProcess, user: str, channel: str, question: str, marker: str) -> str:
    """Ask until the answer names ``marker`` (the indexer runs beside the socket), or fail."""

    async def ask() -> str:
        return (await bot.ask(user, channel, question))[1]

    answer: str = await wait_for(ask, lambda text: marker in text, timeout=20, every=0.3)
    return answer


async def test_a_thread_decision_is_found_in_its_channel_only(
    dev: DevServer, llm: FakeLLM, tmp_path: Path
) -> None:
    async with running_daemon(dev, llm, tmp_path, env=NO_LLM) as bot:
        _, refused = await bot.ask("lee", "qa", "@ai learn on")
        assert "Only an admin" in refused, refused
        await make_channel_admin(dev, "qa", "kim")
        _, notice = await bot.ask("kim", "qa", "@ai learn on")
        assert "Learning from this channel" in notice and "365 days" in notice, notice
        # the backfill of the last 30 days says in the channel what it read, once it is done
        qa, bot_id = dev.seed.channels["qa"], dev.seed.bot.id
        [line] = await dev.wait_for_posts(
            lambda p: (
                p["user_id"] == bot_id
                and p["channel_id"] == qa
                and "history" in p["message"]
                and "Learned" in p["message"]
                and not p["root_id"]
            ),
            timeout=20,
        )
        assert "from this channel's history" in line["message"], line

        supplier = f"Supplier{tag()}"
        root = await dev.user_post(
            "kim", dev.seed.channels["qa"], f"Which {supplier} lot do we take for line 3?"
        )
        decision = await dev.user_post(
            "lee",
            dev.seed.channels["qa"],
            "Decided: we take lot B from them, lot A failed the salt test.",
            root_id=root["id"],
        )
        answer = await learned(bot, "park", "qa", f"@ai what did we decide about {supplier}?", "lot B")
        assert f"/_redirect/pl/{decision['id']}" in answer or f"/_redirect/pl/{root['id']}" in answer, answer
        assert "lee" in answer, answer

        # the same question elsewhere: the channel's knowledge never leaves it
        _, elsewhere = await bot.ask("kim", "town-square", f"@ai what did we decide about {supplier}?")
        assert "lot B" not in elsewhere and decision["id"] not in elsewhere, elsewhere
        _, in_dm = await bot.ask("kim", "dm", f"what did we decide about {supplier}?")
        assert "lot B" not in in_dm, in_dm

        # search lists it, labelled as a channel message
        _, found = await bot.ask("park", "qa", f"@ai search {supplier} lot")
        assert "💬" in found and "lot B" in found, found

        # an edit changes the answer
        lee = dev.store.user_by_name("lee")
        assert lee is not None
        dev.posts.patch(lee, decision["id"], {"message": "Decided: we take lot C from them after all."})
        await learned(bot, "park", "qa", f"@ai what did we decide about {supplier}?", "lot C")

        # a deletion removes it
        dev.posts.delete(lee, decision["id"])

        async def ask() -> str:
            return (await bot.ask("park", "qa", f"@ai what did we decide about {supplier}?"))[1]

        await wait_for(ask, lambda text: "lot C" not in text, timeout=20, every=0.3)


async def test_learn_off_forget_leaves_nothing(dev: DevServer, llm: FakeLLM, tmp_path: Path) -> None:
    async with running_daemon(dev, llm, tmp_path, env=NO_LLM) as bot:
        await make_channel_admin(dev, "qa-private", "kim")
        _, notice = await bot.ask("kim", "qa-private", "@ai 학습 켜기")
        assert "학습합니다" in notice, notice
        word = f"Gasket{tag()}"
        await dev.user_post("lee", dev.seed.channels["qa-private"], f"The {word} torque is 12 Nm.")
        await learned(bot, "kim", "qa-private", f"@ai search {word} torque", "12 Nm")
        _, off = await bot.ask("kim", "qa-private", "@ai learn off --forget")
        assert "deleted" in off and "1 message" in off, off
        _, after = await bot.ask("kim", "qa-private", f"@ai search {word} torque")
        assert "12 Nm" not in after, after
        _, status = await bot.ask("kim", "qa-private", "@ai learn status")
        assert "Learning is off" in status and "0 messages" in status, status
        # nothing of the message is left in the daemon's database either (the audit keeps the
        # search queries, which name the word, but never what the channel said)
        await bot.stop()
        for f in sorted(tmp_path.glob("mchat_bot.sqlite3*")):  # noqa: ASYNC240 (the daemon is stopped)
            assert b"is 12 Nm" not in f.read_bytes(), f
        await bot.start()


async def test_a_learned_line_edited_or_deleted_while_the_socket_was_down_follows(
    dev: DevServer, llm: FakeLLM, tmp_path: Path
) -> None:
    """The server restarts without replay while one learned line is edited and another deleted:
    the REST catch-up brings both, and search says what the channel says now."""
    async with running_daemon(dev, llm, tmp_path, env=NO_LLM) as bot:
        await make_channel_admin(dev, "qa-private", "kim")
        _, notice = await bot.ask("kim", "qa-private", "@ai learn on")
        assert "Learning from this channel" in notice, notice
        word = f"Valve{tag()}"
        channel = dev.seed.channels["qa-private"]
        torque = await dev.user_post("lee", channel, f"The {word} torque is 12 Nm.")
        spare = await dev.user_post("lee", channel, f"The {word} spare sits on shelf 4.")
        await learned(bot, "kim", "qa-private", f"@ai search {word} torque", "12 Nm")
        await learned(bot, "kim", "qa-private", f"@ai search {word} spare shelf", "shelf 4")
        lee = dev.store.user_by_name("lee")
        assert lee is not None
        dev.faults.freeze_sockets(True)
        try:
            dev.posts.patch(lee, torque["id"], {"message": f"The {word} torque is 15 Nm."})
            dev.posts.delete(lee, spare["id"])
            await dev.restart(lose_replay=True)
        finally:
            dev.faults.freeze_sockets(False)
        await learned(bot, "kim", "qa-private", f"@ai search {word} torque", "15 Nm")

        async def search_spare() -> str:
            return (await bot.ask("kim", "qa-private", f"@ai search {word} spare shelf"))[1]

        await wait_for(search_spare, lambda text: f"{word} spare sits" not in text, timeout=20, every=0.3)
        _, torque_now = await bot.ask("kim", "qa-private", f"@ai search {word} torque")
        assert f"{word} torque is 12 Nm" not in torque_now, torque_now


def cursor(db: Path, channel_id: str) -> str:
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT backfill_before FROM knowledge_channel WHERE channel_id = ?", (channel_id,)
        ).fetchone()
    return str(row[0]) if row else ""


def lines_with(db: Path, channel_id: str, marker: str) -> int:
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT count(*) FROM knowledge_line WHERE channel_id = ? AND text LIKE ?",
            (channel_id, f"%{marker}%"),
        ).fetchone()
    return int(row[0])


async def test_backfill_of_2000_posts_resumes_after_a_kill(
    dev: DevServer, llm: FakeLLM, tmp_path: Path
) -> None:
    channel_id = dev.seed.channels["town-square"]
    marker = f"Hist{tag()}"
    for i in range(2000):
        await dev.user_post(
            ("kim", "lee", "park")[i % 3], channel_id, f"{marker} note {i}: item K{i}X{marker}"
        )
    db = tmp_path / "mchat_bot.sqlite3"
    async with running_daemon(dev, llm, tmp_path, env=NO_LLM | {"MCHAT_KNOWLEDGE_BACKFILL_DAYS": "0"}) as bot:
        await make_channel_admin(dev, "town-square", "kim")
        _, notice = await bot.ask("kim", "town-square", "@ai learn on")
        assert "Learning from this channel" in notice, notice
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCHAT_")}
    env["MCHAT_MATTERMOST_TOKEN"] = dev.seed.bot.token
    command = [sys.executable, "-m", "mchat_bot", "knowledge", "backfill", "--channel", channel_id]
    command += ["--since", "0d", "--config", str(tmp_path / "config.toml")]
    dev.faults.rate_limit(per_sec=4, burst=1)  # slow enough to be killed halfway
    try:
        with (tmp_path / "first.log").open("wb") as log:
            first = await asyncio.create_subprocess_exec(*command, env=env, stdout=log, stderr=log)
        try:
            await wait_for(lambda: asyncio.sleep(0, cursor(db, channel_id)), bool, timeout=30, every=0.05)
        except AssertionError:
            raise AssertionError((tmp_path / "first.log").read_text()) from None
        first.send_signal(signal.SIGKILL)
        await first.wait()
    finally:
        dev.faults.rate_limit(enabled=False)
    partial = lines_with(db, channel_id, marker)
    assert 100 <= partial < 2000, partial  # a page or more (the newest holds the `learn on` too)
    second = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(second.communicate(), 120)
    assert second.returncode == 0, err.decode()
    read = int(out.decode().split("read ")[1].split()[0])
    assert read <= 2000 - partial + 200, out  # resumed from the cursor, not from the newest post
    assert lines_with(db, channel_id, marker) == 2000
    # the daemon finds a backfilled message at once (by keywords, before it is embedded)
    async with running_daemon(dev, llm, tmp_path, env=NO_LLM) as bot:
        _, found = await bot.ask("park", "town-square", f"@ai search K1234X{marker}")
        assert f"note 1234: item K1234X{marker}" in found, found


async def test_an_archived_learning_channel_is_forgotten(
    dev: DevServer, llm: FakeLLM, tmp_path: Path
) -> None:
    """A member archives the channel (DELETE /channels/{id}): the team hears `channel_deleted`, and
    the daemon deletes what it learned there and stops learning it."""
    seed = dev.seed
    channel = dev.store.add_channel(seed.team_id, "O", f"line-{tag().lower()}", "Line 4")
    for user in (seed.users["kim"].id, seed.users["lee"].id, seed.bot.id):
        dev.store.join(channel, user)
    marker = f"Seal{tag()}"
    db = tmp_path / "mchat_bot.sqlite3"
    env = NO_LLM | {"MCHAT_KNOWLEDGE_CHANNELS": channel.id, "MCHAT_KNOWLEDGE_BACKFILL_DAYS": "0"}
    async with running_daemon(dev, llm, tmp_path, env=env):
        await dev.user_post("lee", channel.id, f"The {marker} on line 4 is replaced every 500 hours.")
        await wait_for(
            lambda: asyncio.sleep(0, lines_with(db, channel.id, marker)), bool, timeout=15, every=0.1
        )
        async with httpx.AsyncClient(base_url=dev.url, timeout=10) as http:
            r = await http.delete(
                f"/api/v4/channels/{channel.id}",
                headers={"Authorization": f"Bearer {seed.users['kim'].token}"},
            )
            assert r.status_code == 200, r.text
            again = await http.delete(
                f"/api/v4/channels/{channel.id}",
                headers={"Authorization": f"Bearer {seed.users['kim'].token}"},
            )
            assert again.status_code == 400, again.text  # archived once
        await wait_for(
            lambda: asyncio.sleep(0, lines_with(db, channel.id, marker)), lambda n: n == 0, timeout=15
        )
        with pytest.raises(AppError, match=r"400 api\.post\.create_post\.can_not_post_to_deleted"):
            await dev.user_post("lee", channel.id, "one more")  # the channel takes no posts any more
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT learning FROM knowledge_channel WHERE channel_id = ?", (channel.id,)
        ).fetchone()
    assert row is not None and row[0] == 0, row
