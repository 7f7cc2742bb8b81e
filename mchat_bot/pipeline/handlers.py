"""remember / search / forget / memories / help / answer: one routed message in, one typed reply out.

``my memories`` and ``export`` are answered by :mod:`mchat_bot.pipeline.self_service`, ``forget me``
by :mod:`mchat_bot.pipeline.forget_me`.

A handler always returns something to post: a failing store or LLM becomes a short apology in the
asker's language (outcome ``failed``/``llm_failed``), never silence. The reply names the memory ids
it stored, deleted, superseded or showed, for the audit step. Only programming errors escape
:meth:`Handlers.handle`.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import tzinfo
from typing import Protocol

import structlog

from mchat_bot.llm import LLMError
from mchat_bot.memory import extractor
from mchat_bot.memory.readers import Readers, may_post, split_postable
from mchat_bot.memory.relevance import Relevance
from mchat_bot.memory.store import (
    Hit,
    Memory,
    MemoryStore,
    Scope,
    Viewer,
    is_visible,
    new_memory_id,
    restore_previous,
)
from mchat_bot.net.http import permalink
from mchat_bot.observe import metrics
from mchat_bot.pipeline import texts
from mchat_bot.pipeline.audience import Audience
from mchat_bot.pipeline.buttons import Button
from mchat_bot.pipeline.forget_me import ForgetMe
from mchat_bot.pipeline.knowledge import ChannelKnowledge
from mchat_bot.pipeline.message import IncomingMessage, Outcome, Reply, unique
from mchat_bot.pipeline.router import BotIdentity, Command, Ignore, Question, Routed, parse_scope, route
from mchat_bot.pipeline.self_service import SelfService
from mchat_bot.pipeline.summaries import Summaries
from mchat_bot.pipeline.turn import AnswerSink, Completer, Turn
from mchat_bot.redaction import describe, redact

log = structlog.get_logger(__name__)

ANSWER_MEMORIES = 5
THREAD_CONTEXT_POSTS = 20
THREAD_CONTEXT_CHARS = 6000
REDACT_INLINE_CHARS = 4000  # longer texts are filtered in a thread (a few ms per 16k characters)


class ThreadReader(Protocol):
    """Earlier posts of a thread, oldest first, as (user_name, message)."""

    async def thread_context(self, root_id: str, before_post_id: str) -> list[tuple[str, str]]: ...


_CATEGORY_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("decision", re.compile(r"결정|합의|확정|하기로|decid|agreed|approved|we will go with", re.I)),
    ("task", re.compile(r"해야|할 일|마감|까지 제출|todo|to-do|deadline|must |need to|action item", re.I)),
    ("preference", re.compile(r"선호|좋아하|싫어하|원함|prefer|likes? |dislikes? |favou?rite", re.I)),
    ("event", re.compile(r"회의|미팅|일정|행사|출장|meeting|scheduled|conference|launch on|event", re.I)),
)


def guess_category(text: str) -> str:
    """A cheap rule, good enough for a label; ``fact`` when nothing else fits."""
    for category, pattern in _CATEGORY_RULES:
        if pattern.search(text):
            return category
    return "fact"


_ID_LIKE = re.compile(r"^`?([0-9A-Za-z-]{6,36})`?$")
HISTORY_MAX = 50  # versions shown by `history` (a chain is walked at most this far each way)


def same_place(old: Memory, new: Memory) -> bool:
    """Could `new` supersede `old`? Only within one scope and one audience."""
    if old.scope != new.scope or old.id == new.id:
        return False
    if new.scope == "channel":
        return old.channel_id == new.channel_id
    if new.scope == "user":
        return old.user_id == new.user_id and old.team_id == new.team_id
    return old.team_id == new.team_id


class Handlers:
    def __init__(
        self,
        store: MemoryStore,
        llm: Completer | None,
        bot: BotIdentity,
        site_url: str,
        thread_reader: ThreadReader | None = None,
        *,
        tz: tzinfo | None = None,
        thread_timeout: float = 10.0,
        sensitive: str = "mask",
        team_admins: Iterable[str] = (),
        extract_channels: Iterable[str] = (),
        memory_llm_timeout: float = 20.0,
        audience: Audience | None = None,
        relevance: Relevance | None = None,
        knowledge: ChannelKnowledge | None = None,
        summaries: Summaries | None = None,
        self_service: SelfService | None = None,
        forget_me: ForgetMe | None = None,
        buttons: bool = False,
    ) -> None:
        if sensitive not in ("mask", "refuse"):
            raise ValueError(f"sensitive must be 'mask' or 'refuse', got {sensitive!r}")
        self.store = store
        self.sensitive = sensitive
        self.team_admins = frozenset(n.strip().lstrip("@").lower() for n in team_admins if n.strip())
        self.extract_channels = frozenset(extract_channels)
        self.memory_llm_timeout = memory_llm_timeout
        self.llm = llm
        self.bot = bot
        self.site_url = site_url.rstrip("/")
        self.thread_reader = thread_reader
        self.tz = tz
        self.thread_timeout = thread_timeout
        # without a server to ask (tests of the handlers alone): nobody is a guest
        self.audience = audience if audience is not None else Audience(None, bot.user_id)
        self.relevance = relevance if relevance is not None else Relevance()
        self.knowledge = knowledge
        self.summaries = summaries
        self.self_service = self_service if self_service is not None else SelfService(store, None, tz=tz)
        self.forget_me = forget_me if forget_me is not None else ForgetMe(store, tz=tz)
        # replies may carry buttons (the daemon has an action door): Undo, Forget, "which is right?"
        self.buttons = buttons
        self.mention = next((a for a in bot.aliases if a), f"@{bot.username}")
        if not self.mention.startswith("@"):
            self.mention = "@" + self.mention

    async def __call__(self, turn: Turn) -> Reply:
        """The chain's last link: the turn is routed already, and may offer a stream for the answer."""
        return await self.handle(turn.msg, turn.routed, sink=turn.sink)

    async def handle_message(self, msg: IncomingMessage) -> Reply:
        """Route and handle (for callers outside the chain, which routes once for the turn)."""
        return await self.handle(msg, route(msg, self.bot))

    async def handle(self, msg: IncomingMessage, routed: Routed, *, sink: AnswerSink | None = None) -> Reply:
        """``sink``: the answer prompt goes through it (streaming); other LLM calls never do."""
        if isinstance(routed, Ignore):
            return Reply.nothing()
        reply = await self._handle(msg, routed, sink)
        return reply if self.buttons or not reply.buttons else replace(reply, buttons=())

    async def _handle(
        self, msg: IncomingMessage, routed: Command | Question, sink: AnswerSink | None
    ) -> Reply:
        lang = routed.lang
        try:
            if isinstance(routed, Question):
                return await self._answer(msg, routed.text, lang, sink)
            return await self._command(msg, routed, sink)
        except LLMError:
            return Reply(texts.llm_error(lang), Outcome.LLM_FAILED)
        except (ValueError, TypeError, AttributeError, KeyError, IndexError, NameError, AssertionError):
            raise  # programming errors: let them show
        except Exception as exc:
            # the store (or another I/O part) failed: tell the user instead of going silent
            log.error("handler.io_failed", post_id=msg.post_id, error=type(exc).__name__, exc_info=True)
            return Reply(texts.internal_error(lang), Outcome.FAILED)

    # --- commands ---------------------------------------------------------------------------

    async def _command(self, msg: IncomingMessage, cmd: Command, sink: AnswerSink | None = None) -> Reply:
        lang = cmd.lang
        if cmd.name in ("remember", "search", "history", "forget") and not cmd.arg:
            return Reply(texts.format_usage(cmd.name, lang), Outcome.REFUSED)
        if cmd.name == "remember":
            return await self._remember(msg, cmd.arg, lang)
        if cmd.name == "help":
            return Reply(texts.format_help(lang, self.mention), Outcome.HELP)
        if cmd.name == "learn":
            if self.knowledge is None:
                return Reply(texts.learn_not_here(lang), Outcome.REFUSED)
            return await self.knowledge.learn(msg, cmd.arg, lang)
        if cmd.name == "summarize":
            if self.summaries is None:
                return Reply(texts.summary_not_learning(lang, self.mention), Outcome.REFUSED)
            return await self.summaries.summarize(msg, cmd.arg, lang, sink)
        if cmd.name == "my_memories":
            return await self.self_service.my_memories(msg, lang, self.mention)
        if cmd.name == "export":
            return await self.self_service.export(msg, lang, self.mention)
        if cmd.name == "forget_me":
            return await self.forget_me.handle(msg, cmd.arg, lang, self.mention)
        viewer, readers = await self.audience.of(msg)
        if cmd.name == "memories":
            shown = await self.store.recent(viewer, limit=10)
            public, hidden = split_postable(shown, readers, _itself)
            ids = unique(*(m.id for m in shown))
            if hidden and not public:
                return self._withheld(
                    Reply(texts.withheld_here(lang), Outcome.LISTED, ids),
                    lang,
                    hidden_text=texts.format_memories(hidden, lang, self.tz),
                )
            reply = Reply(texts.format_memories(public, lang, self.tz), Outcome.LISTED, ids)
            return self._withheld(
                reply, lang, hidden_text=texts.format_memories(hidden, lang, self.tz) if hidden else ""
            )
        if cmd.name == "search":
            hits = await self._relevant(cmd.arg, viewer) + await self._messages(cmd.arg, msg)
            previous = await self._previous(hits, viewer)
            public_hits, hidden_hits = split_postable(hits, readers, _memory_of)
            hidden_text = (
                texts.format_search(cmd.arg, hidden_hits, lang, self.tz, previous) if hidden_hits else ""
            )
            text = (
                texts.withheld_here(lang)
                if hidden_hits and not public_hits
                else texts.format_search(cmd.arg, public_hits, lang, self.tz, previous)
            )
            return self._withheld(Reply(text, Outcome.LISTED, _ids(hits)), lang, hidden_text=hidden_text)
        if cmd.name == "history":
            return await self._history(viewer, readers, cmd.arg, lang)
        if cmd.name == "forget":
            return await self._forget(viewer, readers, cmd.arg, lang)
        return Reply(texts.format_help(lang, self.mention), Outcome.HELP)

    def _withheld(self, reply: Reply, lang: str, *, hidden_text: str) -> Reply:
        """``reply`` for the channel, and what only the asker may read beside it (if anything)."""
        if not hidden_text:
            return reply
        return replace(
            reply,
            private=f"{texts.only_you_head(lang)}\n\n{hidden_text}",
            private_fallback=texts.withheld_ask_in_dm(lang, self.mention),
        )

    async def _relevant(self, query: str, viewer: Viewer, limit: int = 5) -> list[Hit]:
        """What a user is shown, listed or answered from: the search after the relevance cut."""
        return self.relevance.keep(query, await self._search(query, viewer, limit))

    async def _messages(self, query: str, msg: IncomingMessage) -> list[Hit]:
        """What this channel said about ``query`` (a learning channel), after the same relevance cut."""
        if self.knowledge is None:
            return []
        return self.relevance.keep(query, await self.knowledge.messages_for(query, msg))

    async def _search(self, query: str, viewer: Viewer, limit: int = 5) -> list[Hit]:
        started = time.monotonic()
        hits = await self.store.search(query, viewer, limit=limit)
        metrics.MEMORY_SEARCH_LATENCY.observe(time.monotonic() - started)
        return hits

    async def _remember(self, msg: IncomingMessage, arg: str, lang: str) -> Reply:
        scope, text = parse_scope(arg)
        if not text:
            return Reply(texts.format_usage("remember", lang), Outcome.REFUSED)
        if scope == "team" and not self._may_make_team_memory(msg):
            log.info("memory.team_refused", channel_id=msg.channel_id, channel_type=msg.channel_type)
            return Reply(texts.format_scope_refused(lang, in_dm=not msg.team_id), Outcome.REFUSED)
        # the sensitive-data filter runs before anything is stored (long texts off the event loop)
        if len(text) > REDACT_INLINE_CHARS:
            filtered = await asyncio.to_thread(redact, text, self.sensitive)
        else:
            filtered = redact(text, self.sensitive)
        if filtered.found:
            kinds = describe(filtered, lang)
            log.info(
                "memory.sensitive_found",
                action=self.sensitive,
                kinds=sorted(filtered.counts()),
                channel_id=msg.channel_id,
            )
            if self.sensitive == "refuse":
                return Reply(texts.format_sensitive_refused(kinds, lang), Outcome.REFUSED)
            text = filtered.text
        memory, decision, old = await self._store_new(msg, text, scope, guess_category(text), ask=True)
        # the new text is the asker's own words, posted by them here; an older version may not be
        readers = (await self.audience.of(msg))[1] if old is not None else None
        old_postable = old is not None and readers is not None and may_post(old, readers)
        if decision.action == "keep" and old is not None:
            known = Reply(texts.format_already_known(old, lang), Outcome.KNOWN, (old.id,))
            if old_postable:
                return known
            return self._withheld(
                Reply(texts.withheld_here(lang), Outcome.KNOWN, (old.id,)), lang, hidden_text=known.text
            )
        reply = texts.format_remembered(memory, lang)
        undo = Button("undo", texts.button_undo(lang), (memory.id,), user_id=msg.user_id)
        if decision.action == "conflict" and old is not None:
            choose = (
                Button("choose", texts.button_keep(memory, lang), (memory.id, old.id), style="primary"),
                Button("choose", texts.button_keep(old, lang), (old.id, memory.id)),
            )
            text = f"{reply}\n\n{texts.format_conflict(memory, old, lang, self.tz)}"
            return Reply(text, Outcome.STORED, (memory.id, old.id), (memory.scope,), buttons=(*choose, undo))
        hidden = ""
        if old is not None:
            replaced = texts.format_replaced(old, lang, decision.action)
            if old_postable:
                reply += "\n" + replaced
            else:
                hidden = replaced
        if filtered.found:
            reply += "\n\n" + texts.format_sensitive_masked(len(filtered.findings), kinds, lang)
        touched = unique(memory.id, old.id if old is not None and memory.replaces else "")
        buttons = (undo,) if self.buttons else ()
        return self._withheld(
            Reply(reply, Outcome.STORED, touched, (memory.scope,), buttons=buttons), lang, hidden_text=hidden
        )

    def _may_make_team_memory(self, msg: IncomingMessage) -> bool:
        """Team memories come from a public channel of the team, or from a listed team admin."""
        if not msg.team_id:
            return False  # a DM or group DM has no team
        return msg.channel_type == "O" or msg.user_name.lstrip("@").lower() in self.team_admins

    async def _store_new(
        self, msg: IncomingMessage, text: str, scope: Scope, category: str, *, ask: bool = False
    ) -> tuple[Memory, extractor.Decision, Memory | None]:
        """Reconcile with the same scope's current memories, then store (or keep the old one)."""
        now = time.time()
        memory = Memory(
            id=new_memory_id(),
            text=text,
            category=category,
            scope=scope,
            team_id=msg.team_id,
            channel_id=msg.channel_id,
            user_id=msg.user_id,
            user_name=msg.user_name,
            source_post_id=msg.post_id,
            permalink=self.permalink(msg.post_id),
            created_at=now,
            valid_from=now,
        )
        viewer, _ = await self.audience.of(msg)
        candidates = [h.memory for h in await self._search(text, viewer) if same_place(h.memory, memory)]
        decision = await extractor.decide(text, candidates, self.llm, timeout=self.memory_llm_timeout)
        old = next((m for m in candidates if m.id == decision.target), None)
        if decision.action == "keep" and old is not None:
            log.info("memory.kept", memory_id=old.id, by=decision.by)
            return memory, decision, old
        if (
            decision.action in ("update", "delete")
            and old is not None
            and ask
            and await self._ask_instead(msg, old)
        ):
            decision = replace(decision, action="conflict")  # both stay current until someone chooses
        elif decision.action in ("update", "delete") and old is not None:
            memory = replace(memory, replaces=old.id)
        await self.store.add(memory)
        if memory.replaces and old is not None:
            await self.store.supersede(old.id, memory.id, now)
        log.info(
            "memory.remembered",
            memory_id=memory.id,
            channel_id=msg.channel_id,
            scope=scope,
            category=memory.category,
            action=decision.action,
            by=decision.by,
            replaces=memory.replaces or None,
        )
        return memory, decision, old

    async def _ask_instead(self, msg: IncomingMessage, old: Memory) -> bool:
        """Ask "which is right?" instead of superseding: another author's team or channel memory,
        buttons available, and the old text may be posted here (the question shows it)."""
        if not self.buttons or old.scope not in ("team", "channel") or old.user_id == msg.user_id:
            return False
        return may_post(old, (await self.audience.of(msg))[1])

    async def _forget(self, viewer: Viewer, readers: Readers, arg: str, lang: str) -> Reply:
        m = _ID_LIKE.match(arg.strip())
        if m:
            ref = m.group(1)
            found = await self._resolve_id(ref, viewer)
            if isinstance(found, Memory):
                if await self.store.delete(found.id):
                    log.info("memory.forgotten", memory_id=found.id, channel_id=viewer.channel_id)
                    await restore_previous(self.store, found)
                    done = Reply(texts.format_forgotten(found, lang), Outcome.FORGOTTEN, (found.id,))
                    if may_post(found, readers):
                        return done
                    short = Reply(
                        texts.format_forgotten_withheld(found, lang), Outcome.FORGOTTEN, (found.id,)
                    )
                    return self._withheld(short, lang, hidden_text=done.text)
                return Reply(texts.format_forget_not_found(ref, lang), Outcome.NOTHING_FOUND)
            if found == "ambiguous":
                return Reply(texts.format_forget_ambiguous(ref, lang), Outcome.NOTHING_FOUND)
            if " " not in arg and _looks_like_id(ref):
                return Reply(texts.format_forget_not_found(ref, lang), Outcome.NOTHING_FOUND)
        hits = await self._relevant(arg, viewer)
        public, hidden = split_postable(hits, readers, _memory_of)
        text = (
            texts.withheld_here(lang)
            if hidden and not public
            else texts.format_forget_candidates(arg, public, lang, self.tz)
        )
        hidden_text = texts.format_forget_candidates(arg, hidden, lang, self.tz) if hidden else ""
        offered = tuple(
            Button("forget", texts.button_forget(i, h.memory, lang), (h.memory.id,), style="danger")
            for i, h in enumerate(public, 1)
        )
        reply = Reply(text, Outcome.NOTHING_FOUND, _ids(hits), buttons=offered if self.buttons else ())
        return self._withheld(reply, lang, hidden_text=hidden_text)

    async def _resolve_id(self, ref: str, viewer: Viewer) -> Memory | str | None:
        """A full id, or the short id shown in lists (its last 8 characters); only visible ones."""
        memory = await self.store.get(ref)
        if memory is not None:
            return memory if is_visible(memory, viewer) else None
        if len(ref) > 12:
            return None
        want = ref.replace("-", "").upper()
        pool = await self.store.recent_all(viewer, limit=1000)  # superseded versions too
        matches = [
            mem for mem in pool if texts.short_id(mem.id).upper() == want or mem.id.upper().endswith(want)
        ]
        if len(matches) > 1:
            return "ambiguous"
        return matches[0] if matches else None

    async def _history(self, viewer: Viewer, readers: Readers, arg: str, lang: str) -> Reply:
        ref = arg.strip().strip("`")
        found = await self._resolve_id(ref, viewer) if _ID_LIKE.match(ref) else None
        if found == "ambiguous":
            return Reply(texts.format_forget_ambiguous(ref, lang), Outcome.NOTHING_FOUND)
        if not isinstance(found, Memory):
            return Reply(texts.format_history_not_found(ref, lang), Outcome.NOTHING_FOUND)
        versions = await self.chain(found, viewer)
        text = texts.format_history(versions, lang, self.tz)
        ids = unique(*(v.id for v in versions))
        if all(may_post(v, readers) for v in versions):  # one audience per chain: all or none
            return Reply(text, Outcome.LISTED, ids)
        return self._withheld(Reply(texts.withheld_here(lang), Outcome.LISTED, ids), lang, hidden_text=text)

    async def chain(self, memory: Memory, viewer: Viewer) -> list[Memory]:
        """The versions of a fact, oldest first: follow `replaces` back and `superseded_by` forward."""
        older: list[Memory] = []
        seen = {memory.id}
        cur = memory
        while cur.replaces and cur.replaces not in seen and len(older) < HISTORY_MAX:
            prev = await self.store.get(cur.replaces)
            if prev is None or not is_visible(prev, viewer):
                break
            older.append(prev)
            seen.add(prev.id)
            cur = prev
        newer: list[Memory] = []
        cur = memory
        while cur.superseded_by and cur.superseded_by not in seen and len(newer) < HISTORY_MAX:
            nxt = await self.store.get(cur.superseded_by)
            if nxt is None or not is_visible(nxt, viewer):
                break
            newer.append(nxt)
            seen.add(nxt.id)
            cur = nxt
        return [*reversed(older), memory, *newer]

    async def _previous(self, hits: Sequence[Hit], viewer: Viewer) -> dict[str, Memory]:
        """For each hit that replaced an older version the viewer may see: that version."""
        replaced = [hit.memory.replaces for hit in hits if hit.memory.replaces]
        if not replaced:
            return {}
        olds = await self.store.get_many(replaced)
        out: dict[str, Memory] = {}
        for hit in hits:
            old = olds.get(hit.memory.replaces) if hit.memory.replaces else None
            if old is not None and is_visible(old, viewer):
                out[hit.memory.id] = old
        return out

    # --- questions --------------------------------------------------------------------------

    async def _answer(
        self, msg: IncomingMessage, question: str, lang: str, sink: AnswerSink | None = None
    ) -> Reply:
        viewer, readers = await self.audience.of(msg)
        # curated memories first: where chat and a memory disagree, the memory wins (the prompt says so)
        found = await self._relevant(question, viewer, limit=ANSWER_MEMORIES)
        found += await self._messages(question, msg)
        previous = await self._previous(found, viewer)
        # only what every reader here may see goes into the prompt and the answer
        hits, hidden = split_postable(found, readers, _memory_of)
        hidden_text = texts.format_withheld_memories(hidden, lang, previous, self.tz) if hidden else ""
        if hidden and not hits:
            reply = texts.withheld_here(lang)
        elif self.llm is None:
            text = texts.format_retrieval_only(hits, lang, previous, self.tz)
            reply = texts.join_sources(text, self._sources(msg, hits, range(1, len(hits) + 1), lang))
        else:
            thread = await self._thread(msg)
            messages = build_prompt(question, hits, thread, lang, tz=self.tz, previous=previous)
            answer = await (
                sink.complete(self.llm, messages) if sink is not None else self.llm.complete(messages)
            )
            cited = texts.cited_numbers(answer, len(hits)) or list(range(1, len(hits) + 1))
            reply = texts.join_sources(answer, self._sources(msg, hits, cited, lang))
        extracted = await self._extract(msg, question)
        if extracted:
            reply += "\n\n" + texts.format_extracted(extracted, lang)
        ids = unique(*(m.id for m in extracted), *_ids(found))
        answered = Reply(reply, Outcome.ANSWERED, ids, tuple(m.scope for m in extracted))
        return self._withheld(answered, lang, hidden_text=hidden_text)

    async def _extract(self, msg: IncomingMessage, text: str) -> list[Memory]:
        """In extraction channels: remember what the user stated (their words only, after the answer).

        Only the user's own message is given to the extractor: never the bot's posts (the router drops
        them), never the recalled memories or the system prompt.
        """
        if msg.channel_id not in self.extract_channels or msg.from_bot or msg.user_id == self.bot.user_id:
            return []
        filtered = redact(text, "mask")
        if filtered.found and self.sensitive == "refuse":
            return []
        try:
            items = await extractor.extract(
                filtered.text, self.llm, guess_category, timeout=self.memory_llm_timeout
            )
        except LLMError:
            return []
        stored = []
        for fact, category in items:
            memory, decision, _old = await self._store_new(
                msg, redact(fact, "mask").text, "channel", category
            )
            if decision.action != "keep":
                stored.append(memory)
        return stored

    async def _thread(self, msg: IncomingMessage) -> list[tuple[str, str]]:
        if not msg.root_id or self.thread_reader is None:
            return []
        try:
            async with asyncio.timeout(self.thread_timeout):
                posts = await self.thread_reader.thread_context(msg.root_id, msg.post_id)
        except Exception as exc:  # context is a bonus: answer without it
            log.warning("handler.thread_context_failed", post_id=msg.post_id, error=type(exc).__name__)
            return []
        return posts[-THREAD_CONTEXT_POSTS:]

    def _sources(
        self, msg: IncomingMessage, hits: Sequence[Hit], numbers: Iterable[int], lang: str
    ) -> list[str]:
        lines = []
        for n in numbers:
            memory = hits[n - 1].memory
            channel = (
                msg.channel_name if memory.channel_id == msg.channel_id and msg.channel_type in "OP" else ""
            )
            lines.append(texts.format_source(n, memory, lang, channel_name=channel, tz=self.tz))
        return lines

    # --- helpers ----------------------------------------------------------------------------

    def permalink(self, post_id: str) -> str:
        return permalink(self.site_url, post_id)


def _itself(memory: Memory) -> Memory:
    return memory


def _memory_of(hit: Hit) -> Memory:
    return hit.memory


def _ids(hits: Sequence[Hit]) -> tuple[str, ...]:
    return unique(*(h.memory.id for h in hits))


def _looks_like_id(ref: str) -> bool:
    """Ids mix digits and letters (or are upper-case, as lists show them); "meeting" is a query."""
    if any(c.isdigit() for c in ref) and any(c.isalpha() for c in ref):
        return True
    return ref.isupper() and len(ref.replace("-", "")) in (8, 26, 32)


# what the model is told when the relevance cut left nothing: say so rather than guess
NO_MEMORIES_NOTE = (
    "(none: the memory search found nothing relevant to this question. Unless the thread below "
    "answers it, tell the user that you have no memory about that, and do not guess.)"
)


# what the model is told when channel messages are among the sources
CHAT_NOTE = (
    "Entries marked (chat) are messages people wrote in this channel, not checked facts: use them, "
    "cite them like the others, and where a memory and a chat message disagree, the memory wins."
)


def build_prompt(
    question: str,
    hits: Sequence[Hit],
    thread: Sequence[tuple[str, str]],
    lang: str,
    *,
    tz: tzinfo | None = None,
    previous: dict[str, Memory] | None = None,
) -> list[dict[str, str]]:
    """System prompt with memories numbered [1]..[n] (one per line), the thread, then the question.

    Memories are current facts; one that replaced an older version says what it was and until when.
    With none (nothing passed the relevance cut), the prompt says so, so the model admits it.
    """
    language = "Korean" if lang == "ko" else "English"
    lines = [
        "You are AI Memory Bot, the team's assistant in a company messenger.",
        "Answer the user's question using the memories below. Cite every memory you use with its "
        "number in square brackets, like [1]. If the memories do not contain the answer, say so "
        "briefly instead of guessing. The memories are the current facts; where one notes what it "
        "replaced, mention the earlier value when it helps.",
        f"Answer in the user's language ({language}), concisely, in Markdown.",
    ]
    if any(h.memory.is_message for h in hits):
        lines.append(CHAT_NOTE)
    lines += ["", "Memories:"]
    if hits:
        for i, hit in enumerate(hits, 1):
            m = hit.memory
            said = "(chat) " if m.is_message else ""
            lines.append(f"[{i}] {said}{' '.join(m.shown.split())}")
            lines.append(f"    (by {m.user_name or '?'}, {texts.format_date(m.created_at, tz)})")
            if previous and m.id in previous:
                lines.append(f"    {texts.was_note(previous[m.id], m, 'en', tz)}")
    else:
        lines.append(NO_MEMORIES_NOTE)
    if thread:
        lines += ["", "Earlier messages in this thread (oldest first):"]
        budget = THREAD_CONTEXT_CHARS
        kept: list[str] = []
        for user, text in reversed(thread):
            entry = f"{user}: {' '.join(text.split())}"
            if len(entry) > budget:
                break
            kept.append(entry)
            budget -= len(entry)
        lines += list(reversed(kept))
    return [{"role": "system", "content": "\n".join(lines)}, {"role": "user", "content": question}]
