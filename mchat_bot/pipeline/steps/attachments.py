"""Text and Markdown files attached to a ``remember`` become memories, cut into pieces.

The file list is read from the post itself (``GET /posts/{id}``: the inbox message carries no
files), only for ``remember`` commands. Each file is checked by name and size before it is
downloaded, the download stops past the limit, the sensitive-data filter runs on the text, and the
pieces (category ``document``, each starting with the file name) are stored in one engine call.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import replace

import structlog

from mchat_bot.memory.store import Memory, MemoryStore, new_memory_id
from mchat_bot.net.http import permalink
from mchat_bot.pipeline import texts
from mchat_bot.pipeline.message import IncomingMessage, Outcome, Reply, unique
from mchat_bot.pipeline.ports import ChatServer
from mchat_bot.pipeline.router import BotIdentity, Command, parse_scope
from mchat_bot.pipeline.turn import Next, Turn
from mchat_bot.redaction import describe, redact

log = structlog.get_logger(__name__)

TEXT_EXTENSIONS = frozenset({"txt", "text", "md", "markdown", "mdown", "log", "csv", "tsv"})
DOCUMENT = "document"
MAX_FILES = 10


def chunk_text(text: str, size: int) -> list[str]:
    """Pieces of about ``size`` characters, cut at blank lines, then lines, then sentences, then anywhere."""
    text = text.replace("\r\n", "\n").strip()
    if not text:
        return []
    blocks = [b.strip() for b in re.split(r"\n\s*\n", text) if b.strip()]
    units: list[str] = []
    for block in blocks:
        if len(block) <= size:
            units.append(block)
            continue
        for line in block.split("\n"):
            while len(line) > size:
                cut = max(line.rfind(". ", 0, size), line.rfind("다. ", 0, size), line.rfind(" ", 0, size))
                cut = cut + 1 if cut > size // 2 else size
                units.append(line[:cut].strip())
                line = line[cut:]
            if line.strip():
                units.append(line.strip())
    pieces: list[str] = []
    current = ""
    for unit in units:
        if current and len(current) + 2 + len(unit) > size:
            pieces.append(current)
            current = unit
        else:
            current = f"{current}\n\n{unit}" if current else unit
    if current:
        pieces.append(current)
    return pieces


def decode(data: bytes) -> str | None:
    """UTF-8 (with or without BOM), else CP949 (Korean Windows files); None for binary data."""
    if b"\x00" in data[:4096]:
        return None
    for encoding in ("utf-8-sig", "cp949"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return None


class Attachments:
    def __init__(
        self,
        rest: ChatServer,
        store: MemoryStore,
        bot: BotIdentity,
        *,
        site_url: str,
        max_bytes: int = 262144,
        chunk_chars: int = 1200,
        sensitive: str = "mask",
    ) -> None:
        self.rest = rest
        self.store = store
        self.bot = bot
        self.site_url = site_url.rstrip("/")
        self.max_bytes = max_bytes
        self.chunk_chars = chunk_chars
        self.sensitive = sensitive

    async def __call__(self, turn: Turn, next: Next) -> None:
        """A ``remember`` with files: the text (if any) as before, then each file."""
        routed, msg = turn.routed, turn.msg
        if not (isinstance(routed, Command) and routed.name == "remember") or not msg.has_post:
            await next(turn)
            return
        try:
            post = await self.rest.get_post(msg.post_id)
        except Exception as exc:  # the files are a bonus: the text is still remembered
            log.warning("attachments.post_unreadable", post_id=msg.post_id, error=type(exc).__name__)
            await next(turn)
            return
        file_ids = [f for f in (post.get("file_ids") or []) if isinstance(f, str)][:MAX_FILES]
        if not file_ids:
            await next(turn)
            return
        said = Reply.nothing()
        if parse_scope(routed.arg)[1].strip():
            await next(turn)
            said = turn.reply or said
        files = await self.remember_files(msg, file_ids, routed.lang)
        reply = said.plus(files)
        if files.outcome is Outcome.STORED:  # something was stored, whatever the text part came to
            reply = replace(reply, outcome=Outcome.STORED)
        turn.reply = reply

    async def settle(self, turn: Turn) -> None:
        return None

    async def remember_files(self, msg: IncomingMessage, file_ids: list[str], lang: str) -> Reply:
        lines = [texts.attached_files_head(lang)]
        stored: list[Memory] = []
        for file_id in file_ids:
            lines.append(await self._one(msg, file_id, lang, stored))
        outcome = Outcome.STORED if stored else Outcome.REFUSED
        return Reply(
            "\n".join(lines), outcome, unique(*(m.id for m in stored)), tuple(m.scope for m in stored)
        )

    async def _one(self, msg: IncomingMessage, file_id: str, lang: str, stored: list[Memory]) -> str:
        try:
            info = await self.rest.get_file_info(file_id)
        except Exception as exc:
            log.warning("attachments.info_failed", file_id=file_id, error=type(exc).__name__)
            return texts.file_unreadable(lang)
        name = str(info.get("name") or file_id)
        ext = str(info.get("extension") or name.rpartition(".")[2]).lower()
        size = int(info.get("size") or 0)
        if ext not in TEXT_EXTENSIONS:
            return texts.file_not_text(lang, name)
        if size > self.max_bytes:
            return texts.file_too_large(lang, name, size, self.max_bytes)
        try:
            data = await self.rest.get_file(file_id, self.max_bytes)
        except ValueError:
            return texts.file_too_large(lang, name, size, self.max_bytes)
        except Exception as exc:
            log.warning("attachments.download_failed", file_id=file_id, error=type(exc).__name__)
            return texts.file_download_failed(lang, name)
        content = decode(data)
        if content is None:
            return texts.file_not_utf8(lang, name)
        filtered = await asyncio.to_thread(redact, content, self.sensitive)
        masked = ""
        if filtered.found:
            kinds = describe(filtered, lang)
            if self.sensitive == "refuse":
                return f"- `{name}`: " + texts.format_sensitive_refused(kinds, lang)
            content = filtered.text
            masked = " " + texts.file_masked(lang, kinds)
        pieces = chunk_text(content, self.chunk_chars)
        if not pieces:
            return texts.file_empty(lang, name)
        now = time.time()
        memories = [
            Memory(
                id=new_memory_id(),
                text=f"[{name}] {piece}",
                category=DOCUMENT,
                scope="channel",
                team_id=msg.team_id,
                channel_id=msg.channel_id,
                user_id=msg.user_id,
                user_name=msg.user_name,
                source_post_id=msg.post_id,
                permalink=permalink(self.site_url, msg.post_id),
                created_at=now,
            )
            for piece in pieces
        ]
        await self.store.add_many(memories)
        stored.extend(memories)
        log.info(
            "memory.remembered_file",
            post_id=msg.post_id,
            channel_id=msg.channel_id,
            memories=len(memories),
            chars=len(content),
        )
        return texts.file_saved(lang, name, len(data), len(memories), masked)
