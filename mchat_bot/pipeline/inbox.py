"""The durable inbox: at least once in (deduped by post id), exactly once out (sent-log).

States: ``pending`` -> ``claimed`` -> ``done`` | ``failed``; ``retry_later`` and ``recover`` put an
item back to ``pending``. Done items stay (until :meth:`Inbox.prune`, run hourly by
:meth:`Inbox.prune_loop`) so a replayed or caught-up post is still recognised as a duplicate, but
their text does not: the user's words (which may hold a phone number or a password the user did not
ask to keep) and the saved reply are kept only until the item is finished, then blanked.

A thread (channel + root) has at most one claimed item and
its items are handed out in ``create_at`` order, so answers in one thread never overtake each other.
The claim is one statement on either engine: on SQLite an ``UPDATE … WHERE seq IN (…)`` (one writer
at a time), on PostgreSQL the same choice locked ``FOR UPDATE SKIP LOCKED``, so that claimers on
other connections (other daemons) skip what one of them is taking and never claim a thread's next
item while its earlier one is pending or claimed.

Several daemons share one inbox on PostgreSQL: a claim records its holder (the daemon's instance
id) and a lease, renewed by the holder while its turns run (:meth:`Inbox.renew`). A claim whose
lease ran out belongs to a daemon that died: the next claim takes it, as a re-send (its saved
reply, the sent-log and the thread's markers post only the missing parts). :meth:`Inbox.recover`
releases only this instance's claims and expired ones, never a live daemon's; releasing and
retrying are refused for an item another daemon holds now.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from mchat_bot.pipeline.message import IncomingMessage
from mchat_bot.storage import Dialect, Storage

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class InboxItem:
    post_id: str
    message: IncomingMessage
    attempts: int  # failed attempts so far
    enqueued_at: float  # epoch s
    last_error: str
    reply: str | None  # the reply text computed by an earlier attempt, reused so parts stay stable


def thread_key(msg: IncomingMessage) -> str:
    return f"{msg.channel_id}:{msg.thread_root}"


_PUT_COLUMNS = "(post_id, thread_key, create_at, payload, enqueued_at, updated_at)"
# What a finished item keeps: its ids and times for dedupe; nothing of the message (its words, who
# wrote it), nothing of the answer. Nothing reads a finished item's payload.
_SCRUB = "payload = '{}', reply = NULL"
_PUT_ROWS_PER_STATEMENT = 500  # 6 parameters a row, well under SQLite's 32,766 variables

# While a catch-up reads a gap, posts newer than the gap's start wait (kv rows, see Inbox.hold_after):
# a post the sockets missed must not be answered after later posts of its thread.
HELD_AFTER_KEY = "claims_held_after_ms"
HELD_UNTIL_KEY = "claims_held_until"
# The due items: the oldest open post of each thread that no live claim holds; an expired claim is
# due again (its holder died). Parameters: now (not_before), now (expired), now (hold), now (live), limit.
_DUE = f"""
    SELECT i.seq FROM inbox i
    WHERE ((i.state = 'pending' AND i.not_before <= ?) OR (i.state = 'claimed' AND i.lease_until < ?))
      AND NOT EXISTS (SELECT 1 FROM kv h, kv u WHERE h.key = '{HELD_AFTER_KEY}' AND u.key = '{HELD_UNTIL_KEY}'
                      AND i.create_at > CAST(h.value AS BIGINT) AND CAST(u.value AS DOUBLE PRECISION) > ?)
      AND NOT EXISTS (SELECT 1 FROM inbox c WHERE c.thread_key = i.thread_key AND c.state = 'claimed'
                      AND c.lease_until >= ?)
      AND NOT EXISTS (SELECT 1 FROM inbox e
                      WHERE e.thread_key = i.thread_key AND e.state IN ('pending', 'claimed')
                        AND (e.create_at < i.create_at OR (e.create_at = i.create_at AND e.seq < i.seq)))
    ORDER BY i.create_at, i.seq
    LIMIT ?"""
# An item whose holder died with it (an expired claim taken over, a claim found at start) counts an
# attempt: an item that kills every daemon that handles it is given up after bot.max_attempts, not
# taken over for ever. SET reads the row as it was, so ``state`` is the state before this claim.
_TAKEN_OVER = "attempts = attempts + CASE WHEN state = 'claimed' THEN 1 ELSE 0 END"
# One statement: mark the due items claimed by this daemon until its lease ends and return them with
# the parts of their answer already in the sent-log. SQLite: the subquery is read before any row
# changes, and one statement is one atomic transaction. PostgreSQL: the rows are locked as they are
# chosen and rows another claimer holds are skipped; a thread whose oldest item is being claimed
# elsewhere has no other candidate, since that item is still open in this statement's snapshot.
_CLAIM: dict[Dialect, str] = {
    "sqlite": f"""
UPDATE inbox SET state = 'claimed', claimed_by = ?, lease_until = ?, updated_at = ?, {_TAKEN_OVER}
WHERE seq IN ({_DUE})
RETURNING post_id, payload, attempts, enqueued_at, last_error, reply, create_at, seq,
    (SELECT json_group_array(json_array(part, reply_post_id)) FROM sent_log
     WHERE source_post_id = inbox.post_id)
""",
    "postgresql": f"""
WITH claim_time AS (SELECT ?::double precision AS now),
due AS ({_DUE}
    FOR UPDATE OF i SKIP LOCKED)
UPDATE inbox SET state = 'claimed', claimed_by = ?, lease_until = ?, updated_at = claim_time.now,
    {_TAKEN_OVER}
FROM due, claim_time WHERE inbox.seq = due.seq
RETURNING inbox.post_id, inbox.payload, inbox.attempts, inbox.enqueued_at, inbox.last_error,
    inbox.reply, inbox.create_at, inbox.seq,
    (SELECT coalesce(json_agg(json_build_array(s.part, s.reply_post_id)), '[]')::text FROM sent_log s
     WHERE s.source_post_id = inbox.post_id)
""",
}
# Held by this daemon (parameter: its instance id): what it may release, retry or renew.
_MINE = "state = 'claimed' AND claimed_by = ?"
DEFAULT_LEASE_S = 30.0


class Inbox:
    """SQLite-backed queue on a :class:`Storage`; ``changed`` is set whenever work may be claimable.

    Every write is one statement, i.e. one hop to the connection's thread and one commit.
    The sent-log of the items this inbox holds claimed is also kept in memory: it is loaded by the
    claim itself and every write to it goes through :meth:`record_sent`, so :meth:`sent_parts` for a
    claimed item needs no read; an item that is finished or let go is read from SQLite again.
    """

    def __init__(self, storage: Storage, *, instance: str = "local", lease: float = DEFAULT_LEASE_S) -> None:
        self.storage = storage
        self.instance = instance
        self.lease = lease
        self._claim_sql = _CLAIM[storage.dialect]
        self.changed = asyncio.Event()
        self._sent: dict[str, dict[int, str]] = {}  # claimed here: post id -> part -> reply post id

    @staticmethod
    def _now() -> float:
        return time.time()

    async def put(self, msg: IncomingMessage) -> bool:
        """Enqueue; False if this post id was seen before (pending, done or failed).

        When this returns, the item is committed (one ``INSERT … ON CONFLICT DO NOTHING``, one hop).
        """
        now = self._now()
        added = (
            await self.storage.execute(
                f"INSERT INTO inbox {_PUT_COLUMNS} VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                _put_row(msg, now),
            )
            == 1
        )
        if added:
            self.changed.set()
        return added

    async def put_many(self, msgs: Sequence[IncomingMessage]) -> list[bool]:
        """Enqueue several (e.g. a catch-up page) in one statement per 500; which ones were new."""
        now = self._now()
        new: set[str] = set()
        for start in range(0, len(msgs), _PUT_ROWS_PER_STATEMENT):
            chunk = msgs[start : start + _PUT_ROWS_PER_STATEMENT]
            rows = await self.storage.execute_returning(
                f"INSERT INTO inbox {_PUT_COLUMNS} VALUES"
                f" {', '.join(['(?, ?, ?, ?, ?, ?)'] * len(chunk))} ON CONFLICT DO NOTHING RETURNING post_id",
                [v for m in chunk for v in _put_row(m, now)],
            )
            new.update(str(r[0]) for r in rows)
        added = []
        for m in msgs:  # a post id twice in the batch: only its first occurrence is new
            added.append(m.post_id in new)
            new.discard(m.post_id)
        if any(added):
            self.changed.set()
        return added

    async def claim(self, limit: int = 1) -> list[InboxItem]:
        """Hand out up to ``limit`` due items, at most one per thread, the oldest post of each thread."""
        if limit <= 0:
            return []
        now = self._now()
        until = now + self.lease
        params: tuple[object, ...]
        if self.storage.dialect == "postgresql":
            params = (now, now, now, now, now, limit, self.instance, until)
        else:
            params = (self.instance, until, now, now, now, now, now, limit)
        rows = await self.storage.execute_returning(self._claim_sql, params)
        rows.sort(key=lambda r: (r[6], r[7]))  # RETURNING has no order
        items = []
        for row in rows:
            self._sent[row[0]] = {int(p): str(r) for p, r in json.loads(row[8] or "[]")}
            items.append(
                InboxItem(
                    post_id=row[0],
                    message=IncomingMessage.from_dict(json.loads(row[1])),
                    attempts=int(row[2]),
                    enqueued_at=float(row[3]),
                    last_error=row[4],
                    reply=row[5],
                )
            )
        return items

    async def _set_state(self, post_id: str, sql: str, params: tuple[object, ...]) -> None:
        self._sent.pop(post_id, None)  # no longer held here: read the sent-log from SQLite again
        await self.storage.execute(sql, (*params, self._now(), post_id))
        # a finished or released item may unblock the next one of its thread
        self.changed.set()

    async def ack(self, post_id: str) -> None:
        """The reply is posted: done for good, and the text is no longer kept."""
        await self._set_state(
            post_id, f"UPDATE inbox SET state = 'done', {_SCRUB}, updated_at = ? WHERE post_id = ?", ()
        )

    async def save_reply(self, post_id: str, text: str) -> None:
        """Keep the computed reply so a retry sends the same parts instead of asking the LLM again."""
        await self.storage.execute("UPDATE inbox SET reply = ? WHERE post_id = ?", (text, post_id))

    async def retry_later(self, post_id: str, error: str, delay: float) -> int:
        """Back to pending after ``delay`` seconds; returns the number of failed attempts so far
        (0 when another daemon took the item over meanwhile: it is theirs now)."""
        self._sent.pop(post_id, None)
        now = self._now()
        rows = await self.storage.execute_returning(
            "UPDATE inbox SET state = 'pending', attempts = attempts + 1, last_error = ?,"
            f" not_before = ?, updated_at = ? WHERE post_id = ? AND {_MINE} RETURNING attempts",
            (error[:2000], now + max(0.0, delay), now, post_id, self.instance),
        )
        self.changed.set()
        return int(rows[0][0]) if rows else 0

    async def fail(self, post_id: str, error: str) -> None:
        """Give up on an item (it stays for dedupe and inspection)."""
        await self._set_state(
            post_id,
            f"UPDATE inbox SET state = 'failed', attempts = attempts + 1, last_error = ?, {_SCRUB},"
            " updated_at = ? WHERE post_id = ?",
            (error[:2000],),
        )

    async def release(self, post_id: str) -> None:
        """Claimed -> pending without counting an attempt (shutdown mid-work); only while this
        daemon holds it."""
        self._sent.pop(post_id, None)
        await self.storage.execute(
            f"UPDATE inbox SET state = 'pending', updated_at = ? WHERE post_id = ? AND {_MINE}",
            (self._now(), post_id, self.instance),
        )
        self.changed.set()

    async def hold_after(self, create_at_ms: int, *, seconds: float = 30.0) -> None:
        """Claim no post newer than ``create_at_ms`` for up to ``seconds`` (a catch-up reads the gap
        since then: what it finds goes in before the thread's later posts are answered)."""
        async with self.storage.transaction() as db:
            for key, value in (
                (HELD_AFTER_KEY, str(create_at_ms)),
                (HELD_UNTIL_KEY, str(self._now() + seconds)),
            ):
                await db.execute(
                    "INSERT INTO kv (key, value) VALUES (?, ?)"
                    " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (key, value),
                )

    async def stop_holding(self) -> None:
        await self.storage.execute("DELETE FROM kv WHERE key = ?", (HELD_UNTIL_KEY,))
        self.changed.set()

    async def renew(self) -> int:
        """Extend the lease of every item this daemon holds; how many it holds."""
        now = self._now()
        return await self.storage.execute(
            f"UPDATE inbox SET lease_until = ? WHERE {_MINE}", (now + self.lease, self.instance)
        )

    async def renew_loop(self) -> None:
        """For the supervisor: renew the leases three times per lease, so one late renewal is harmless."""
        while True:
            await asyncio.sleep(self.lease / 3)
            await self.renew()

    async def recover(self) -> int:
        """On start: items claimed by a process that died go back to pending. Returns how many.

        On SQLite one daemon owns the file, so every claim is a dead one's; on PostgreSQL only this
        instance's claims (an earlier run under the same id) and expired ones, never a live daemon's.
        """
        self._sent.clear()
        now = self._now()
        params: tuple[object, ...] = ()
        if self.storage.dialect == "sqlite":
            where = "state = 'claimed'"
        else:
            where = "state = 'claimed' AND (claimed_by = ? OR lease_until < ?)"
            params = (self.instance, now)
        n = await self.storage.execute(
            f"UPDATE inbox SET state = 'pending', attempts = attempts + 1, updated_at = ? WHERE {where}",
            (now, *params),
        )
        if n:
            log.info("inbox.recovered", items=n)
            self.changed.set()
        return n

    async def state(self, post_id: str) -> str | None:
        row = await self.storage.fetchone("SELECT state FROM inbox WHERE post_id = ?", (post_id,))
        return str(row[0]) if row else None

    async def depth(self) -> int:
        """Items not finished yet (pending or claimed)."""
        row = await self.storage.fetchone("SELECT COUNT(*) FROM inbox WHERE state IN ('pending', 'claimed')")
        return int(row[0]) if row else 0

    async def oldest_age(self) -> float:
        """Seconds since the oldest unfinished item was enqueued; 0.0 when empty."""
        row = await self.storage.fetchone(
            "SELECT MIN(enqueued_at) FROM inbox WHERE state IN ('pending', 'claimed')"
        )
        if not row or row[0] is None:
            return 0.0
        return max(0.0, self._now() - float(row[0]))

    async def claim_event(self, key: str) -> bool:
        """True for exactly one of the daemons sharing the state that ask with the same ``key`` (an
        event each of their sockets delivers: an edit, a deletion), the first, and for that one
        again (its retry of the same event); one hop. The claims are forgotten with the finished
        items."""
        rows = await self.storage.execute_returning(
            "INSERT INTO event_claim (key, claimed_by, at) VALUES (?, ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET at = excluded.at"
            " WHERE event_claim.claimed_by = excluded.claimed_by RETURNING key",
            (key, self.instance, self._now()),
        )
        return bool(rows)

    async def prune(self, older_than: float = 14 * 86400.0) -> int:
        """Forget finished items (and their sent-log) and event claims older than ``older_than`` s."""
        cutoff = self._now() - older_than
        async with self.storage.transaction() as db:
            await db.execute("DELETE FROM event_claim WHERE at < ?", (cutoff,))
            await db.execute(
                "DELETE FROM sent_log WHERE source_post_id IN (SELECT post_id FROM inbox"
                " WHERE state IN ('done', 'failed') AND updated_at < ?)",
                (cutoff,),
            )
            return await db.execute(
                "DELETE FROM inbox WHERE state IN ('done', 'failed') AND updated_at < ?", (cutoff,)
            )

    async def prune_loop(self, retention_days: float, every: float = 3600.0) -> None:
        """For the supervisor, hourly: forget finished items older than ``retention_days``, and fold
        the write-ahead log into the database, so that the frames written while an item's words were
        still kept do not outlive it on disk."""
        while True:
            pruned = await self.prune(retention_days * 86400.0)
            if pruned:
                log.info("inbox.pruned", items=pruned, retention_days=retention_days)
            await self.storage.checkpoint()
            await asyncio.sleep(every)

    async def scrub_finished(self) -> int:
        """Blank every finished item that still holds its message (rows finished before finished
        items were blanked whole); how many. ``forget me`` runs it so no old row names the asker."""
        rows = await self.storage.execute_returning(
            f"UPDATE inbox SET {_SCRUB} WHERE state IN ('done', 'failed') AND payload != '{{}}' RETURNING seq"
        )
        return len(rows)

    async def record_sent(self, source_post_id: str, part: int, reply_post_id: str) -> None:
        """A part is posted; committed when this returns (one statement, one hop)."""
        await self.storage.execute(
            "INSERT INTO sent_log (source_post_id, part, reply_post_id, sent_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (source_post_id, part) DO UPDATE SET reply_post_id = excluded.reply_post_id,"
            " sent_at = excluded.sent_at",
            (source_post_id, part, reply_post_id, self._now()),
        )
        held = self._sent.get(source_post_id)
        if held is not None:
            held[part] = reply_post_id

    async def sent_parts(self, source_post_id: str) -> dict[int, str]:
        """part index -> reply post id, for the parts of this answer already posted."""
        held = self._sent.get(source_post_id)
        if held is not None:
            return dict(sorted(held.items()))
        rows = await self.storage.fetchall(
            "SELECT part, reply_post_id FROM sent_log WHERE source_post_id = ? ORDER BY part",
            (source_post_id,),
        )
        return {int(r[0]): str(r[1]) for r in rows}


def _put_row(msg: IncomingMessage, now: float) -> tuple[object, ...]:
    return (
        msg.post_id,
        thread_key(msg),
        msg.create_at,
        json.dumps(msg.to_dict(), ensure_ascii=False),
        now,
        now,
    )
