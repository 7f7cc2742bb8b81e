"""The parts built once the socket is up: memory store, LLM, handlers, steps, workers, HTTP doors.

This module is imported only then: numpy, the store's engine, FastAPI and uvicorn take most of
the daemon's import time, and the socket (with the durable inbox behind it) needs none of them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from mchat_bot.doors.backfill import Backfill, BackfillRunner
from mchat_bot.doors.web.actions import ActionEndpoint
from mchat_bot.doors.web.server import WebDoors
from mchat_bot.knowledge.index import MessageIndex, open_message_store
from mchat_bot.knowledge.indexer import Indexer
from mchat_bot.llm import LLM
from mchat_bot.memory.embedder import Embedder, load_embedder
from mchat_bot.memory.relevance import Relevance
from mchat_bot.memory.store import open_store
from mchat_bot.net.pacing import Priority
from mchat_bot.observe import health, metrics
from mchat_bot.observe.readiness import memory_check
from mchat_bot.pipeline.audience import Audience
from mchat_bot.pipeline.audit import Audit
from mchat_bot.pipeline.buttons import ActionSigner, ButtonMaker, stored_key
from mchat_bot.pipeline.clicks import Clicks
from mchat_bot.pipeline.forget_me import ForgetMe
from mchat_bot.pipeline.handlers import Handlers
from mchat_bot.pipeline.knowledge import ChannelKnowledge
from mchat_bot.pipeline.listeners.channels import Channels
from mchat_bot.pipeline.listeners.fanout import EventFn
from mchat_bot.pipeline.listeners.follow import Follower
from mchat_bot.pipeline.listeners.knowledge import KnowledgeFollower
from mchat_bot.pipeline.replying import ReplyWriter
from mchat_bot.pipeline.router import BotIdentity
from mchat_bot.pipeline.self_service import SelfService
from mchat_bot.pipeline.steps.asker_only import AskerOnly
from mchat_bot.pipeline.steps.attachments import Attachments
from mchat_bot.pipeline.steps.audit import AuditStep
from mchat_bot.pipeline.steps.feedback import Feedback
from mchat_bot.pipeline.steps.gate import ChannelGate
from mchat_bot.pipeline.steps.late import LateNote
from mchat_bot.pipeline.steps.streaming import Streams
from mchat_bot.pipeline.summaries import Summaries
from mchat_bot.pipeline.threads import RestThreadReader
from mchat_bot.pipeline.turn import Chain, Step
from mchat_bot.pipeline.workers import WorkerPool

if TYPE_CHECKING:
    from mchat_bot.app.daemon import Core

log = structlog.get_logger(__name__)

Job = Callable[[], Coroutine[Any, Any, None]]


@dataclass(slots=True)
class Pipeline:
    """What the daemon starts and stops after the socket: the loops, the singletons, the workers."""

    pool: WorkerPool
    embedder: Embedder
    llm: LLM | None
    listeners: list[EventFn]
    loops: dict[str, Callable[[], Awaitable[None]]]  # run by every daemon
    singletons: dict[str, Job]  # run by the one daemon that leads


async def build(core: Core, closing: contextlib.AsyncExitStack) -> Pipeline:
    """Build the parts behind the inbox; each one that holds a resource is closed by `closing`."""
    s, storage, rest, inbox, bot = core.settings, core.storage, core.rest, core.inbox, core.bot
    # One try and short timeouts for what may be skipped (feedback) or must see a 429 (streaming
    # edits), at a lower priority than replies; one pacer for all, so replies go first and
    # together they follow the server's limit.
    short = min(5.0, s.mattermost.request_timeout)
    courtesy = rest.variant(tries=1, timeout=short, priority=Priority.COURTESY)
    edits = rest.variant(tries=1, timeout=short, priority=Priority.EDIT)
    embedder = load_embedder(s.memory.embedder)  # lazy: the model loads in the warm-up
    api_key = s.memory.api_key.get() or None
    store = open_store(s.memory.path, s.memory.url or None, embedder, api_key=api_key)
    closing.push_async_callback(store.close)
    # channel knowledge: the lines in SQLite, their index in a collection of its own
    messages = open_message_store(s.memory.path, s.memory.url or None, embedder, api_key=api_key)
    closing.push_async_callback(messages.close)
    learning, chat_log = core.learning, core.chat_log
    message_index = MessageIndex(messages, chat_log, s.mattermost.url)
    indexer = Indexer(
        chat_log, message_index, batch=s.knowledge.batch, retention_days=s.knowledge.retention_days
    )
    core.wake_indexer.connect(indexer.wake)
    backfills = BackfillRunner(
        Backfill(rest, core.learner, learning, bot), learning, rest, days=s.knowledge.backfill_days
    )
    audit = Audit(storage, retention_days=s.audit.retention_days)
    core.readiness.checks["memory"] = memory_check(store)
    llm: LLM | None = None
    if s.llm.model:
        llm = LLM(
            s.llm.model,
            s.llm.api_base,
            s.llm.api_key.get(),
            s.llm.timeout,
            client=s.llm.client,
            mask_sensitive=s.llm.mask_sensitive,
            cooldown=s.llm.cooldown,
        )
        closing.push_async_callback(llm.aclose)  # the direct LLM client's connection pool
    doors = WebDoors(s, storage, inbox, rest, bot)
    closing.push_async_callback(doors.aclose)
    signer: ActionSigner | None = None
    if s.http.public_url:  # Mattermost can reach the daemon: replies may carry buttons
        signer = ActionSigner(s.http.actions_key.get() or await stored_key(storage))
    writer = ReplyWriter(
        rest,
        inbox,
        waiters=doors.waiters,
        hooks=doors.hooks,
        edit_sent_parts=s.ux.stream,
        bot_user_id=bot.user_id,
        buttons=ButtonMaker(s.http.public_url, signer) if signer is not None else None,
    )
    ux = s.ux
    feedback = Feedback(
        courtesy,
        bot.user_id,
        typing=ux.typing,
        reactions=ux.reactions,
        typing_interval=ux.typing_interval,
        delay=ux.feedback_delay,
        done_on_fast=ux.done_on_fast_answers,
    )
    closing.push_async_callback(feedback.aclose)
    streams: Streams | None = None
    if ux.stream:
        streams = Streams(
            edits, writer, interval=ux.stream_edit_interval, first_post_after=ux.stream_first_post_after
        )
        closing.push_async_callback(streams.aclose)
    audience = Audience(rest, bot.user_id)
    handlers = Handlers(
        store,
        llm,
        bot,
        site_url=s.mattermost.url,
        thread_reader=RestThreadReader(rest, {bot.user_id: bot.username}),
        sensitive=s.memory.sensitive,
        team_admins=s.memory.team_admins,
        extract_channels=s.memory.extract_channels,
        audience=audience,
        relevance=Relevance(s.memory.min_relevance),
        knowledge=ChannelKnowledge(
            learning,
            message_index,
            rest,
            retention_days=s.knowledge.retention_days,
            answer_messages=s.knowledge.answer_messages,
            on_turned_on=backfills.request,
        ),
        summaries=Summaries(
            rest,
            chat_log,
            learning,
            llm,
            bot.user_id,
            s.mattermost.url,
            chunk_tokens=s.knowledge.summary_chunk_tokens,
            budget_tokens=s.knowledge.summary_budget_tokens,
            mention=mention(bot),
        ),
        self_service=SelfService(store, rest),
        forget_me=ForgetMe(store, index=message_index, inbox=inbox, audit=audit),
        buttons=signer is not None,
    )
    if signer is not None:
        clicks = Clicks(handlers, store, rest, audit)
        doors.install(
            ActionEndpoint(
                signer,
                clicks,
                doors.endpoints.claims,
                bot.user_id,
                mention=mention(bot),
                max_body_bytes=s.http.max_body_bytes,
            ).router()
        )
    # The one ordered list of steps every message passes, the handler last.
    steps: list[Step] = [ChannelGate(doors.mappings)]
    if ux.late_after:
        steps.append(LateNote(ux.late_after))
    steps += [AuditStep(audit), feedback]
    if streams is not None:
        steps.append(streams)
    if ux.attachments:
        steps.append(
            Attachments(
                rest,
                store,
                bot,
                site_url=s.mattermost.url,
                max_bytes=ux.attachment_max_bytes,
                chunk_chars=ux.attachment_chunk_chars,
                sensitive=s.memory.sensitive,
            )
        )
    pool = WorkerPool(
        inbox,
        Chain([*steps, AskerOnly(writer, s.mattermost.url)], handlers),
        writer,
        bot,
        workers=s.bot.workers,
        max_attempts=s.bot.max_attempts,
    )
    channels = Channels(
        rest,
        storage,
        bot.user_id,
        auto_join=s.mattermost.auto_join,
        greet=ux.greet,
        mention=mention(bot),
        greeter=rest.variant(priority=Priority.COURTESY),
    )
    knowledge_follower = KnowledgeFollower(core.learner, message_index)
    listeners: list[EventFn] = [channels.on_event, audience.on_event, knowledge_follower.on_event]
    background = [knowledge_follower.run]
    if ux.follow_edits:
        follower = Follower(
            store,
            rest,
            inbox,
            bot,
            sensitive=s.memory.sensitive,
            extract_channels=s.memory.extract_channels,
            audit=audit,
        )
        listeners.append(follower.on_event)
        background.append(follower.run)
    metrics.LIVE.memory_counts = store.count_by_scope
    metrics.LIVE.knowledge_sizes = chat_log.sizes
    metrics.prime(llm.model if llm is not None else "")
    # the HTTP server always runs (/metrics, /healthz, /readyz); the webhook
    # routes reject every request while no webhook/slash token is configured
    health.install(doors.server.app, core.readiness)
    doors.bind()  # a busy port fails the start-up before the workers run
    log.info("http_listening", host=doors.server.host, port=doors.server.port)
    intake, gateway = core.intake, core.gateway
    return Pipeline(
        pool=pool,
        embedder=embedder,
        llm=llm,
        listeners=listeners,
        loops={
            "workers": pool.run,
            "ux": lambda: _together(background),  # memories following edits
            "http": doors.run,
        },
        singletons={
            "catch-up": lambda: intake.run_as_leader(gateway.authenticated),
            "auto-join": channels.run,
            "audit-prune": audit.prune_loop,
            "knowledge-indexer": indexer.run,
            "knowledge-backfill": backfills.run,
            "inbox-prune": lambda: inbox.prune_loop(s.storage.retention_days),
        },
    )


def mention(bot: BotIdentity) -> str:
    name = next((a for a in bot.aliases if a), f"@{bot.username}")
    return name if name.startswith("@") else "@" + name


async def _together(loops: Sequence[Callable[[], Awaitable[None]]]) -> None:
    """For the supervisor: run the listeners' loops until cancelled."""
    await asyncio.gather(*(loop() for loop in loops))
