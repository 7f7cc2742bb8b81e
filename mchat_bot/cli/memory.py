"""`mchat-bot memory list | search | forget | export | import | history`: the memory store by hand.

The store comes from the settings (`--config`, the [memory] section) or, without settings, from
`--path DIR` (an embedded store directory). Stop the daemon first when it uses the same embedded
directory: one process at a time opens an embedded store. A Qdrant server (memory.url) has no such limit.

JSONL (one object a line): id, text, scope, team_id, channel_id, user_id, category, created_at (ISO 8601),
valid_until (ISO 8601 or null), source_post_id; export adds user_name, permalink, replaces,
superseded_by, valid_from, and import accepts them back. Import stores each line as given (its id kept,
no extraction, no supersession); the sensitive-data filter still masks it unless `--raw`.
`search` applies the bot's relevance cut (memory.min_relevance), as users get it; `--all` shows every hit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from mchat_bot.cli.settings import EXIT_CONFIG
from mchat_bot.memory.jsonl import iso, to_json
from mchat_bot.memory.relevance import Relevance
from mchat_bot.memory.store import SCOPES, AnyStore, Memory, Selection, Viewer, new_memory_id

EXIT_BAD_INPUT = 1
OPTIMIZE_FROM = 20_000  # an embedded store this big gets its vector index built after an import
JSONL_FIELDS = (
    "id",
    "text",
    "scope",
    "team_id",
    "channel_id",
    "user_id",
    "category",
    "created_at",
    "valid_until",
    "source_post_id",
)


def add_memory_commands(subparsers: Any) -> None:
    """Add `memory ...` to `mchat-bot`'s parser."""
    mem = subparsers.add_parser("memory", help="list, search, forget, export, import memories; history")
    sub = mem.add_subparsers(dest="memory_command", required=True)

    p = sub.add_parser("list", help="memories matching --channel/--user/--team, newest first")
    _common(p)
    p.add_argument("--scope", choices=SCOPES)
    p.add_argument("--current", action="store_true", help="leave out superseded versions")
    p.add_argument("--limit", type=int, default=50, help="0 = all")
    p.add_argument("--jsonl", action="store_true", help="print JSON lines instead of a table")
    p.set_defaults(func=_run(_list))

    p = sub.add_parser("search", help="search as a viewer (--channel, --user, --team), or a batch (--jsonl)")
    _common(p)
    p.add_argument("query", nargs="?", help="the query (omit with --jsonl)")
    p.add_argument(
        "--jsonl", type=Path, help="QUERIES.jsonl: lines of id, query, channel_id, user_id, team_id"
    )
    p.add_argument("--limit", type=int, default=10)
    p.add_argument("--all-versions", action="store_true", help="include superseded versions")
    p.add_argument(
        "--all",
        action="store_true",
        help="show every hit, also below the relevance cut (memory.min_relevance)",
    )
    p.set_defaults(func=_run(_search))

    p = sub.add_parser("forget", help="delete memories by id, or all matching a selection with --yes")
    _common(p)
    p.add_argument("ids", nargs="*")
    p.add_argument("--yes", action="store_true", help="confirm deleting everything the selection matches")
    p.set_defaults(func=_run(_forget))

    p = sub.add_parser("export", help="write memories as JSON lines (all, or a selection)")
    _common(p)
    p.add_argument("--jsonl", type=Path, default=Path("-"), help="output file (default: stdout)")
    p.set_defaults(func=_run(_export))

    p = sub.add_parser("import", help="store JSON lines as given (ids kept, no extraction/supersession)")
    _common(p)
    p.add_argument("--jsonl", type=Path, required=True, help="input file ('-' = stdin)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--raw", action="store_true", help="skip the sensitive-data filter (store text as given)")
    p.set_defaults(func=_run(_import))

    p = sub.add_parser("history", help="the versions of a memory, oldest first")
    _common(p)
    p.add_argument("id")
    p.add_argument("--jsonl", action="store_true")
    p.set_defaults(func=_run(_history))


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=Path("config.toml"))
    p.add_argument("--path", type=Path, help="an embedded store directory (instead of the settings)")
    p.add_argument("--embedder", default=None, help="with --path: the embedder name (default: 'default')")
    p.add_argument("--channel", default="", help="channel id")
    p.add_argument("--user", default="", help="user id")
    p.add_argument("--team", default="", help="team id")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _run(fn: Any) -> Any:
    def call(args: argparse.Namespace) -> int:
        from mchat_bot.observe.logging import configure_logging

        configure_logging("error")
        try:
            store = _open(args)
        except _Exit as exc:
            print(f"mchat-bot memory: {exc.message}", file=sys.stderr)
            return exc.code

        async def main() -> int:
            try:
                return int(await fn(store, args))
            finally:
                await store.close()

        try:
            return asyncio.run(main())
        except _Exit as exc:
            print(f"mchat-bot memory: {exc.message}", file=sys.stderr)
            return exc.code
        except BrokenPipeError:  # `... | head`: the reader is gone, which is fine
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0

    return call


class _Exit(Exception):
    def __init__(self, message: str, code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def _open(args: argparse.Namespace) -> AnyStore:
    from mchat_bot.memory.embedder import load_embedder
    from mchat_bot.memory.store import open_store

    if args.path is not None:
        return open_store(args.path, None, load_embedder(args.embedder or "default"))
    from mchat_bot.config import ConfigError, load_settings

    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        raise _Exit(f"settings error: {exc}", EXIT_CONFIG) from None
    m = settings.memory
    embedder = load_embedder(args.embedder or m.embedder)
    return open_store(m.path, m.url or None, embedder, api_key=m.api_key.get() or None)


def _relevance(args: argparse.Namespace) -> Relevance:
    """The bot's own cut (from the settings, or the measured default with --path); --all turns it off."""
    if args.all:
        return Relevance(0)
    if args.path is not None:
        return Relevance()
    from mchat_bot.config import load_settings

    return Relevance(load_settings(args.config).memory.min_relevance)  # _open has checked them


def _selection(args: argparse.Namespace, **kw: Any) -> Selection:
    return Selection(channel_id=args.channel, user_id=args.user, team_id=args.team, **kw)


# -- conversions ---------------------------------------------------------------------------------------


def _epoch(value: Any, field: str, line: int) -> float:
    if value in (None, "", 0):
        return 0.0
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise _Exit(f"line {line}: {field}: not an ISO 8601 time: {value!r:.40}") from None
        return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()
    raise _Exit(f"line {line}: {field}: expected an ISO 8601 string")


def from_json(row: Any, line: int) -> Memory:
    if not isinstance(row, dict):
        raise _Exit(f"line {line}: expected a JSON object")
    text = row.get("text")
    if not isinstance(text, str) or not text.strip():
        raise _Exit(f"line {line}: text: missing or empty")
    scope = row.get("scope") or "channel"
    if scope not in SCOPES:
        raise _Exit(f"line {line}: scope: one of {', '.join(SCOPES)}, got {scope!r}")
    strings = {}
    for key in ("team_id", "channel_id", "user_id", "category", "source_post_id", "user_name", "permalink"):
        value = row.get(key) or ""
        if not isinstance(value, str):
            raise _Exit(f"line {line}: {key}: expected a string")
        strings[key] = value
    for key in ("replaces", "superseded_by"):
        strings[key] = str(row.get(key) or "")
    if scope == "channel" and not strings["channel_id"]:
        raise _Exit(f"line {line}: channel_id: a channel memory needs one")
    if scope == "user" and not strings["user_id"]:
        raise _Exit(f"line {line}: user_id: a personal memory needs one")
    if scope == "team" and not strings["team_id"]:
        raise _Exit(f"line {line}: team_id: a team memory needs one")
    created = _epoch(row.get("created_at"), "created_at", line) or time.time()
    mid = row.get("id")
    return Memory(
        id=str(mid) if mid not in (None, "") else new_memory_id(),
        text=text,
        scope=scope,
        category=strings["category"] or "fact",
        team_id=strings["team_id"],
        channel_id=strings["channel_id"],
        user_id=strings["user_id"],
        user_name=strings["user_name"],
        source_post_id=strings["source_post_id"],
        permalink=strings["permalink"],
        replaces=strings["replaces"],
        superseded_by=strings["superseded_by"],
        created_at=created,
        valid_until=_epoch(row.get("valid_until"), "valid_until", line),
        valid_from=_epoch(row.get("valid_from"), "valid_from", line),
    )


def _read_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    stream: TextIO = sys.stdin if str(path) == "-" else path.open(encoding="utf-8")
    try:
        for n, raw in enumerate(stream, 1):
            if not raw.strip():
                continue
            try:
                yield n, json.loads(raw)
            except json.JSONDecodeError as exc:
                raise _Exit(f"line {n}: not JSON: {exc.msg}") from None
    finally:
        if stream is not sys.stdin:
            stream.close()


def _progress(total: int | None, desc: str, quiet: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="mem", file=sys.stderr, disable=quiet or None, leave=False)


def _line(m: Memory) -> str:
    state = "" if m.current else f" [until {iso(m.valid_until)}, superseded by {m.superseded_by}]"
    where = {"channel": m.channel_id, "user": f"{m.user_id}@{m.team_id or 'dm'}", "team": m.team_id}[m.scope]
    when = (iso(m.created_at) or "")[:19]
    return f"{m.id}\t{m.scope}:{where}\t{when}\t{m.category}\t{' '.join(m.text.split())}{state}"


# -- commands ------------------------------------------------------------------------------------------


async def _list(store: AnyStore, args: argparse.Namespace) -> int:
    sel = _selection(args, scope=args.scope or "", include_superseded=not args.current)
    for m in await store.select(sel, args.limit):
        print(json.dumps(to_json(m), ensure_ascii=False) if args.jsonl else _line(m))
    return 0


async def _search(store: AnyStore, args: argparse.Namespace) -> int:
    current_only = not args.all_versions
    cut = _relevance(args)
    if args.jsonl is not None:
        for n, row in _read_jsonl(args.jsonl):
            if not isinstance(row, dict) or not isinstance(row.get("query"), str):
                raise _Exit(f"line {n}: expected an object with a 'query' string")
            viewer = Viewer(
                str(row.get("team_id") or ""), str(row.get("channel_id") or ""), str(row.get("user_id") or "")
            )
            found = await store.search(row["query"], viewer, args.limit, current_only=current_only)
            hits = cut.keep(row["query"], found)
            results = [{"id": h.memory.id, "score": round(h.score, 4), "text": h.memory.text} for h in hits]
            print(json.dumps({"id": row.get("id"), "results": results}, ensure_ascii=False), flush=True)
        return 0
    if not args.query:
        raise _Exit("give a QUERY, or --jsonl QUERIES.jsonl")
    viewer = Viewer(args.team, args.channel, args.user)
    if not (args.team or args.channel or args.user):
        raise _Exit("search as whom? give --channel, --user and/or --team (what that viewer may see)")
    found = await store.search(args.query, viewer, args.limit, current_only=current_only)
    for h in cut.keep(args.query, found):
        print(f"{h.score:.3f}\t{_line(h.memory)}")
    return 0


async def _forget(store: AnyStore, args: argparse.Namespace) -> int:
    if args.ids:
        missing = 0
        for mid in args.ids:
            if await store.delete(mid):
                print(f"forgot {mid}")
            else:
                print(f"no memory {mid}", file=sys.stderr)
                missing += 1
        return 1 if missing else 0
    sel = _selection(args)
    if not sel.equals():
        raise _Exit("give ids, or a selection (--channel/--user/--team) with --yes")
    matches = await store.select(sel)
    if not args.yes:
        print(f"{len(matches)} memories match; run again with --yes to delete them", file=sys.stderr)
        return 1
    for m in matches:
        await store.delete(m.id)
    print(f"forgot {len(matches)} memories")
    return 0


async def _export(store: AnyStore, args: argparse.Namespace) -> int:
    out: TextIO = sys.stdout if str(args.jsonl) == "-" else args.jsonl.open("w", encoding="utf-8")
    sel = _selection(args)
    total = await store.count() if not sel.equals() else None
    n = 0
    try:
        with _progress(total, "export", args.quiet or out is sys.stdout) as bar:
            async for m in store.scan(sel):
                out.write(json.dumps(to_json(m), ensure_ascii=False) + "\n")
                n += 1
                bar.update(1)
    finally:
        if out is not sys.stdout:
            out.close()
    print(f"exported {n} memories", file=sys.stderr)
    return 0


async def _import(store: AnyStore, args: argparse.Namespace) -> int:
    from mchat_bot.redaction import redact

    rows = list(_read_jsonl(args.jsonl))
    memories = [from_json(row, n) for n, row in rows]  # validate everything before storing anything
    masked = 0
    if not args.raw:
        cleaned = []
        for m in memories:
            r = redact(m.text, "mask")
            if r.found:
                masked += 1
                m = Memory.from_payload({**m.to_payload(), "text": r.text})
            cleaned.append(m)
        memories = cleaned
    embed_s = store_s = 0.0
    batch = max(1, args.batch)
    with _progress(len(memories), "import", args.quiet) as bar:
        for i in range(0, len(memories), batch):
            chunk = memories[i : i + batch]
            t0 = time.perf_counter()
            vectors = await asyncio.to_thread(store.embedder.embed_documents, [m.text for m in chunk])
            t1 = time.perf_counter()
            await store.add_embedded(list(zip(chunk, vectors, strict=True)))
            embed_s += t1 - t0
            store_s += time.perf_counter() - t1
            bar.update(len(chunk))
    n = len(memories)
    optimize = getattr(store, "optimize", None)
    if optimize is not None and await store.count() >= OPTIMIZE_FROM:
        print("building the search index...", file=sys.stderr)
        await optimize()
    total = embed_s + store_s
    print(
        f"imported {n} memories in {total:.1f}s ({n / total if total else 0:.0f}/s): "
        f"embedding {embed_s:.1f}s ({n / embed_s if embed_s else 0:.0f}/s), "
        f"store {store_s:.1f}s ({n / store_s if store_s else 0:.0f}/s); masked {masked}",
        file=sys.stderr,
    )
    return 0


async def _history(store: AnyStore, args: argparse.Namespace) -> int:
    first = await store.get(args.id)
    if first is None:
        raise _Exit(f"no memory {args.id}")
    older: list[Memory] = []
    seen = {first.id}
    cur = first
    while cur.replaces and cur.replaces not in seen:
        prev = await store.get(cur.replaces)
        if prev is None:
            break
        older.append(prev)
        seen.add(prev.id)
        cur = prev
    newer: list[Memory] = []
    cur = first
    while cur.superseded_by and cur.superseded_by not in seen:
        nxt = await store.get(cur.superseded_by)
        if nxt is None:
            break
        newer.append(nxt)
        seen.add(nxt.id)
        cur = nxt
    for m in [*reversed(older), first, *newer]:
        print(json.dumps(to_json(m), ensure_ascii=False) if args.jsonl else _line(m))
    return 0
