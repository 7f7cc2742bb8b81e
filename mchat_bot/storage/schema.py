"""The schema, described once: migrations written in SQLite's DDL, rendered for PostgreSQL.

The migrations stay in the SQL the released SQLite databases were made with (their text is what
``PRAGMA user_version`` counts), and use only what both engines read alike except for three column
types: SQLite's ``INTEGER PRIMARY KEY AUTOINCREMENT`` (a row id) becomes an identity column, its
``INTEGER`` (64-bit) becomes ``BIGINT`` and its ``REAL`` becomes ``DOUBLE PRECISION``. Nothing else
is rewritten, so a migration that uses anything else must be written so both engines read it.
"""

from __future__ import annotations

import re

# Each entry moves the schema from version i to i + 1. Append only; never edit a released step.
MIGRATIONS: tuple[str, ...] = (
    # 1: key/value, inbox, sent-log
    """
    CREATE TABLE kv (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE inbox (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        post_id     TEXT NOT NULL UNIQUE,
        thread_key  TEXT NOT NULL,
        create_at   INTEGER NOT NULL,
        payload     TEXT NOT NULL,
        state       TEXT NOT NULL DEFAULT 'pending',
        attempts    INTEGER NOT NULL DEFAULT 0,
        not_before  REAL NOT NULL DEFAULT 0,
        last_error  TEXT NOT NULL DEFAULT '',
        reply       TEXT,
        enqueued_at REAL NOT NULL,
        updated_at  REAL NOT NULL
    );
    CREATE INDEX inbox_state ON inbox (state, create_at);
    CREATE INDEX inbox_thread ON inbox (thread_key, state);
    CREATE TABLE sent_log (
        source_post_id TEXT NOT NULL,
        part           INTEGER NOT NULL,
        reply_post_id  TEXT NOT NULL,
        sent_at        REAL NOT NULL,
        PRIMARY KEY (source_post_id, part)
    );
    """,
    # 2: channel/user mapping tables (the seed's section 7) and the context of web doors' requests
    """
    CREATE TABLE mchat_channel_mapping (
        mchat_channel_id     TEXT PRIMARY KEY,
        mchat_channel_name   TEXT NOT NULL DEFAULT '',
        mchat_team_id        TEXT NOT NULL DEFAULT '',
        agent_room_id        TEXT NOT NULL DEFAULT '',
        incoming_webhook_url TEXT NOT NULL DEFAULT '',
        is_active            INTEGER NOT NULL DEFAULT 1,
        created_at           REAL NOT NULL,
        updated_at           REAL NOT NULL
    );
    CREATE TABLE mchat_user_mapping (
        mchat_user_id  TEXT PRIMARY KEY,
        mchat_username TEXT NOT NULL DEFAULT '',
        agent_user_id  TEXT NOT NULL DEFAULT '',
        created_at     REAL NOT NULL
    );
    CREATE TABLE door_context (
        post_id       TEXT PRIMARY KEY,
        door          TEXT NOT NULL,
        response_url  TEXT NOT NULL DEFAULT '',
        response_type TEXT NOT NULL DEFAULT 'ephemeral',
        uses          INTEGER NOT NULL DEFAULT 0,
        created_at    REAL NOT NULL
    );
    """,
    # 3: the audit log (who did what, where, when, to which memories; pruned by retention)
    """
    CREATE TABLE audit_log (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        at           REAL NOT NULL,
        action       TEXT NOT NULL,
        outcome      TEXT NOT NULL DEFAULT 'ok',
        user_id      TEXT NOT NULL DEFAULT '',
        user_name    TEXT NOT NULL DEFAULT '',
        channel_id   TEXT NOT NULL DEFAULT '',
        channel_name TEXT NOT NULL DEFAULT '',
        team_id      TEXT NOT NULL DEFAULT '',
        door         TEXT NOT NULL DEFAULT '',
        post_id      TEXT NOT NULL DEFAULT '',
        memory_ids   TEXT NOT NULL DEFAULT '[]',
        detail       TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX audit_at ON audit_log (at);
    CREATE INDEX audit_user ON audit_log (user_id, at);
    CREATE INDEX audit_channel ON audit_log (channel_id, at);
    """,
    # 4: channel knowledge: the learning channels and the lines they said (masked), which are also
    # the indexer's durable queue (indexed < version: to be embedded)
    """
    CREATE TABLE knowledge_channel (
        channel_id   TEXT PRIMARY KEY,
        team_id      TEXT NOT NULL DEFAULT '',
        channel_name TEXT NOT NULL DEFAULT '',
        enabled_by   TEXT NOT NULL DEFAULT '',
        enabled_at   REAL NOT NULL,
        learning     INTEGER NOT NULL DEFAULT 1,
        backfill_before TEXT NOT NULL DEFAULT '',
        backfilled_to INTEGER NOT NULL DEFAULT 0,
        backfill_done INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE knowledge_line (
        post_id      TEXT PRIMARY KEY,
        channel_id   TEXT NOT NULL,
        team_id      TEXT NOT NULL DEFAULT '',
        channel_name TEXT NOT NULL DEFAULT '',
        root_id      TEXT NOT NULL DEFAULT '',
        user_id      TEXT NOT NULL DEFAULT '',
        user_name    TEXT NOT NULL DEFAULT '',
        create_at    INTEGER NOT NULL,
        text         TEXT NOT NULL,
        version      INTEGER NOT NULL DEFAULT 1,
        indexed      INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX knowledge_line_channel ON knowledge_line (channel_id, create_at);
    CREATE INDEX knowledge_line_root ON knowledge_line (root_id, create_at);
    CREATE INDEX knowledge_line_backlog ON knowledge_line (create_at) WHERE indexed < version;
    CREATE INDEX knowledge_line_channel_backlog ON knowledge_line (channel_id, create_at)
        WHERE indexed < version;
    CREATE INDEX knowledge_line_user ON knowledge_line (user_id);
    """,
    # 5: several daemons on one inbox: who holds a claimed item and until when (its lease), so that a
    # dead daemon's items are taken over and a live one's are never released by another
    """
    ALTER TABLE inbox ADD COLUMN claimed_by TEXT NOT NULL DEFAULT '';
    ALTER TABLE inbox ADD COLUMN lease_until REAL NOT NULL DEFAULT 0;
    """,
    # 6: an event every daemon's socket delivers (an edit, a deletion) is acted on by the one daemon
    # that claims it first
    """
    CREATE TABLE event_claim (
        key        TEXT PRIMARY KEY,
        claimed_by TEXT NOT NULL,
        at         REAL NOT NULL
    );
    CREATE INDEX event_claim_at ON event_claim (at);
    """,
)


_POSTGRES_TYPES = (
    (
        re.compile(r"\bINTEGER PRIMARY KEY AUTOINCREMENT\b"),
        "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
    ),
    (re.compile(r"\bINTEGER\b"), "BIGINT"),
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
)


def statements(script: str) -> list[str]:
    """Split a migration script into statements (no semicolons inside our DDL literals)."""
    return [s.strip() for s in script.split(";") if s.strip()]


def for_postgres(script: str) -> str:
    """A migration as PostgreSQL reads it: the column types mapped, nothing else changed."""
    for pattern, replacement in _POSTGRES_TYPES:
        script = pattern.sub(replacement, script)
    return script
