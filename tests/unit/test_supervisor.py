"""The supervisor: a part that crashes is restarted with the shared policy, again and again."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

import pytest

from mchat_bot.net.retry import RetryPolicy
from mchat_bot.supervisor import Supervisor

FAST = RetryPolicy(first_delay=0.01, max_delay=0.02, tries=None)


async def _until(cond, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not cond():  # noqa: ASYNC110 (a condition on plain state, no event to wait for)
            await asyncio.sleep(0.005)


async def test_a_part_that_keeps_crashing_is_restarted_every_time() -> None:
    sup = Supervisor(policy=FAST)
    runs = 0

    async def crashing() -> None:
        nonlocal runs
        runs += 1
        if runs < 6:
            raise RuntimeError(f"crash {runs}")
        await asyncio.Event().wait()  # then it stays up

    sup.start("flaky", crashing)
    await _until(lambda: runs == 6 and sup.parts["flaky"].running)
    state = sup.parts["flaky"]
    assert state.restarts == 5 and state.last_error == "RuntimeError: crash 5"
    assert sup.healthy()
    await sup.stop()
    assert state.task is not None and state.task.cancelled()


async def test_healthy_is_false_while_a_part_waits_to_restart() -> None:
    sup = Supervisor(policy=RetryPolicy(first_delay=5.0, max_delay=5.0, tries=None))

    async def dies() -> None:
        raise OSError("down")

    sup.start("dead", dies)
    await _until(lambda: sup.parts["dead"].restarts == 1)
    assert not sup.healthy()
    await asyncio.wait_for(sup.stop(), 1.0)  # cancellation wins over the restart delay


async def test_a_part_that_returns_is_finished_not_restarted() -> None:
    sup = Supervisor(policy=FAST)
    runs = 0

    async def once() -> None:
        nonlocal runs
        runs += 1

    sup.start("once", once)
    task = sup.parts["once"].task
    assert task is not None
    await asyncio.wait_for(task, 1.0)
    await asyncio.sleep(0.05)
    assert runs == 1 and sup.parts["once"].restarts == 0


async def test_cancelling_a_part_is_not_a_crash() -> None:
    sup = Supervisor(policy=FAST)
    started = asyncio.Event()

    async def waits() -> None:
        started.set()
        await asyncio.Event().wait()

    sup.start("waits", waits)
    await started.wait()
    await sup.stop(["waits"])
    assert sup.parts["waits"].restarts == 0
    with pytest.raises(asyncio.CancelledError):
        await sup.parts["waits"].task  # type: ignore[misc]


# --- each supervised loop of the daemon, with a real fault injected, is restarted and works again --


async def test_the_gateway_is_restarted_after_its_event_callback_raises() -> None:
    from mchat_bot.devserver import DevServer
    from mchat_bot.mattermost.events import Posted
    from mchat_bot.mattermost.gateway import Gateway

    async with DevServer() as dev:
        seen: list[str] = []
        raised = False

        async def on_event(event: object) -> None:
            nonlocal raised
            if isinstance(event, Posted):
                if not raised:
                    raised = True
                    raise RuntimeError("a bug in a listener")
                seen.append(event.post.id)

        async def on_gap(since_ms: int) -> None:
            return None

        gateway = Gateway(
            dev.url, dev.seed.bot.token, on_event, on_gap, initial_backoff=0.01, max_backoff=0.05
        )
        sup = Supervisor(policy=FAST)
        sup.start("gateway", gateway.run)
        try:
            await asyncio.wait_for(gateway.authenticated.wait(), 10)
            await dev.user_post("kim", dev.seed.channels["qa"], "the first post meets the bug")
            await _until(lambda: sup.parts["gateway"].restarts == 1)
            await asyncio.wait_for(gateway.authenticated.wait(), 10)
            later = await dev.user_post("kim", dev.seed.channels["qa"], "heard after the restart")
            await _until(lambda: later["id"] in seen)
            assert "RuntimeError" in sup.parts["gateway"].last_error
        finally:
            await sup.stop()


@pytest.mark.parametrize("loop", ["inbox", "audit"])
async def test_a_prune_loop_is_restarted_after_its_table_was_unreadable(tmp_path, loop: str) -> None:  # type: ignore[no-untyped-def]
    from mchat_bot.pipeline.audit import Audit
    from mchat_bot.pipeline.inbox import Inbox
    from mchat_bot.storage import SqliteStorage

    async with SqliteStorage(tmp_path / "db.sqlite3") as storage:
        table = "inbox" if loop == "inbox" else "audit_log"
        await storage.execute(f"ALTER TABLE {table} RENAME TO {table}_away")  # the fault
        run = (
            (lambda: Inbox(storage).prune_loop(retention_days=1, every=0.01))
            if loop == "inbox"
            else (lambda: Audit(storage, retention_days=1).prune_loop(every=0.01))
        )
        sup = Supervisor(policy=FAST)
        sup.start(f"{loop}-prune", run)
        try:
            await _until(lambda: sup.parts[f"{loop}-prune"].restarts >= 2)
            assert "no such table" in sup.parts[f"{loop}-prune"].last_error
            await storage.execute(f"ALTER TABLE {table}_away RENAME TO {table}")  # the fault is over
            await asyncio.sleep(0.2)
            restarts = sup.parts[f"{loop}-prune"].restarts
            await asyncio.sleep(0.2)
            assert sup.parts[f"{loop}-prune"].restarts == restarts and sup.healthy()  # running again
        finally:
            await sup.stop()


class FlakyStorage:
    """A real SQLite storage whose next ``fail`` writes raise, as a full disk or a locked file would."""

    @staticmethod
    async def open(path) -> Any:  # type: ignore[no-untyped-def]
        from mchat_bot.storage import SqliteStorage

        class _Flaky(SqliteStorage):
            fail = 0

            async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
                if self.fail:
                    self.fail -= 1
                    raise sqlite3.OperationalError("disk I/O error")
                return await super().execute(sql, params)

            async def execute_returning(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
                if self.fail:
                    self.fail -= 1
                    raise sqlite3.OperationalError("disk I/O error")
                return await super().execute_returning(sql, params)

        return await _Flaky(path).open()


async def test_the_catch_up_survives_a_storage_error_and_reads_the_gap(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from mchat_bot.devserver import DevServer
    from mchat_bot.doors.websocket import CATCH_UP_MARGIN_MS, Intake
    from mchat_bot.mattermost.rest import RestClient
    from mchat_bot.pipeline.inbox import Inbox
    from mchat_bot.pipeline.router import BotIdentity

    flaky = await FlakyStorage.open(tmp_path / "bot.sqlite")
    async with DevServer() as dev:
        rest = RestClient(dev.url, dev.seed.bot.token, max_tries=1, timeout=5.0)
        bot = BotIdentity(user_id=dev.seed.bot.id, username=dev.seed.bot.username)
        intake = Intake(rest, Inbox(flaky), flaky, bot, policy=FAST)
        since = int(time.time() * 1000) - 1
        mention = await dev.user_post("kim", dev.seed.channels["qa"], "@memorybot 뭐였지?")
        sup = Supervisor(policy=FAST)
        sup.start("catch-up", intake.run_catch_up)
        try:
            flaky.fail = 2  # the inbox write of the first two passes fails
            await intake.on_gap(since + CATCH_UP_MARGIN_MS)
            await _until(lambda: intake.catch_up_passes == 1)
        finally:
            await sup.stop()
            await rest.aclose()
    rows = await flaky.fetchall("SELECT post_id FROM inbox")
    await flaky.close()
    assert [r[0] for r in rows] == [mention["id"]]
    assert intake.catch_up_failures == 2
