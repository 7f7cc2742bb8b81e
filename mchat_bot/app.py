"""The daemon: builds the parts, runs them under the supervisor, handles signals and systemd.

Start-up order keeps the socket up early: storage and the inbox first (so nothing accepted is
lost), then the REST identity check, the memory store, then the gateway and the workers. The
embedder (and litellm, for a model that needs it) load in a thread only after the socket is
authenticated.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from mchat_bot.config import Settings
from mchat_bot.doors.backfill import Backfill, BackfillRunner
from mchat_bot.doors.web.actions import ActionEndpoint
from mchat_bot.doors.web.server import WebDoors
from mchat_bot.doors.websocket import Intake
from mchat_bot.knowledge.channels import LearningChannels
from mchat_bot.knowledge.index import MessageIndex, open_message_store
from mchat_bot.knowledge.indexer import Indexer
from mchat_bot.knowledge.learner import Learner
from mchat_bot.knowledge.lines import ChatLog
from mchat_bot.llm import LLM
from mchat_bot.mattermost.gateway import Gateway
from mchat_bot.mattermost.rest import RestClient, RestHooks
from mchat_bot.memory.embedder import Embedder, load_embedder
from mchat_bot.memory.relevance import Relevance
from mchat_bot.memory.store import MemoryStore, open_store
from mchat_bot.net.pacing import Priority
from mchat_bot.observe import health, metrics
from mchat_bot.observe.logging import quiet_loop_errors
from mchat_bot.pipeline.audience import Audience
from mchat_bot.pipeline.audit import Audit
from mchat_bot.pipeline.buttons import ActionSigner, ButtonMaker, stored_key
from mchat_bot.pipeline.clicks import Clicks
from mchat_bot.pipeline.forget_me import ForgetMe
from mchat_bot.pipeline.handlers import Handlers
from mchat_bot.pipeline.inbox import Inbox
from mchat_bot.pipeline.knowledge import ChannelKnowledge
from mchat_bot.pipeline.listeners.channels import Channels
from mchat_bot.pipeline.listeners.fanout import EventFanout, EventFn
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
from mchat_bot.storage import storage_for
from mchat_bot.storage.leader import Leadership
from mchat_bot.supervisor import Supervisor, sd_notify, watchdog_interval

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class Daemon:
    settings: Settings
    stop_event: asyncio.Event = field(default_factory=asyncio.Event)
    _background: list[asyncio.Task[None]] = field(default_factory=list)

    async def run(self) -> int:
        s = self.settings
        quiet_loop_errors(asyncio.get_running_loop())
        supervisor = Supervisor(max_backoff=s.mattermost.ws_max_backoff)
        storage = await storage_for(s.storage).open()
        readiness = health.Readiness()  # /readyz asks the parts as they are built
        readiness.checks["storage"] = health.storage_check(storage)
        rest = RestClient(
            s.mattermost.url,
            s.mattermost.token.get(),
            timeout=s.mattermost.request_timeout,
            rate_per_sec=s.mattermost.rate_per_sec or None,
            safety_rate_per_sec=s.mattermost.safety_rate_per_sec,
            hooks=RestHooks(on_wait=metrics.observe_wait, on_drop=metrics.observe_drop),
        )
        # One try and short timeouts for what may be skipped (feedback) or must see a 429 (streaming
        # edits), at a lower priority than replies; one pacer for all, so replies go first and
        # together they follow the server's limit.
        short = min(5.0, s.mattermost.request_timeout)
        courtesy = rest.variant(tries=1, timeout=short, priority=Priority.COURTESY)
        edits = rest.variant(tries=1, timeout=short, priority=Priority.EDIT)
        store: MemoryStore | None = None
        messages: MemoryStore | None = None
        pool: WorkerPool | None = None
        doors: WebDoors | None = None
        feedback: Feedback | None = None
        streams: Streams | None = None
        llm: LLM | None = None
        try:
            instance = s.bot.instance_id or f"{socket.gethostname()}-{os.getpid()}"
            inbox = Inbox(storage, instance=instance, lease=s.bot.claim_lease)
            leadership = Leadership(storage, instance=instance)
            if s.storage.url and not s.memory.url:
                log.warning(
                    "memory.embedded_with_shared_state",
                    hint="each daemon keeps its own memories: for tests and development only",
                )
            recovered = await inbox.recover()
            me = await rest.get_me()
            bot = BotIdentity(user_id=me["id"], username=me["username"], aliases=tuple(s.mattermost.aliases))
            log.info(
                "identity",
                bot_user_id=bot.user_id,
                bot_username=bot.username,
                recovered=recovered,
                instance=instance,
                storage=storage.dialect,
            )
            embedder = load_embedder(s.memory.embedder)  # lazy: the model loads in _warm_up
            store = open_store(
                s.memory.path, s.memory.url or None, embedder, api_key=s.memory.api_key.get() or None
            )
            # channel knowledge: the lines in SQLite, their index in a collection of its own
            messages = open_message_store(
                s.memory.path, s.memory.url or None, embedder, api_key=s.memory.api_key.get() or None
            )
            chat_log = await ChatLog(storage).load()
            learning = await LearningChannels(storage, s.knowledge.channels).load()
            message_index = MessageIndex(messages, chat_log, s.mattermost.url)
            indexer = Indexer(
                chat_log, message_index, batch=s.knowledge.batch, retention_days=s.knowledge.retention_days
            )
            learner = Learner(learning, chat_log, bot.user_id, indexer.wake)
            backfills = BackfillRunner(
                Backfill(rest, learner, learning, bot), learning, rest, days=s.knowledge.backfill_days
            )
            audit = Audit(storage, retention_days=s.audit.retention_days)
            readiness.checks["memory"] = health.memory_check(store)
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
            doors = WebDoors(s, storage, inbox, rest, bot)
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
            if ux.stream:
                streams = Streams(
                    edits,
                    writer,
                    interval=ux.stream_edit_interval,
                    first_post_after=ux.stream_first_post_after,
                )
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
                    mention=_mention(bot),
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
                        mention=_mention(bot),
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
                mention=_mention(bot),
                greeter=rest.variant(priority=Priority.COURTESY),
            )
            knowledge_follower = KnowledgeFollower(learner, message_index)
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
            intake = Intake(rest, inbox, storage, bot, wake=pool.wake, learner=learner)
            gateway = Gateway(
                s.mattermost.url,
                s.mattermost.token.get(),
                metrics.counting_events(EventFanout(intake.on_event, listeners)),
                intake.on_gap,
                silence_timeout=s.mattermost.ws_silence_timeout,
                ping_interval=s.mattermost.ws_ping_interval,
                max_backoff=s.mattermost.ws_max_backoff,
            )
            # the HTTP server always runs (/metrics, /healthz, /readyz); the webhook
            # routes reject every request while no webhook/slash token is configured
            readiness.checks["socket"] = health.socket_check(gateway.authenticated)
            metrics.LIVE.gateway, metrics.LIVE.inbox = gateway, inbox
            metrics.LIVE.memory_counts = store.count_by_scope
            metrics.LIVE.knowledge_sizes = chat_log.sizes
            metrics.prime(llm.model if llm is not None else "")
            health.install(doors.server.app, readiness)
            doors.bind()  # a busy port fails the start-up before any part runs
            log.info("http_listening", host=doors.server.host, port=doors.server.port)
            supervisor.start("workers", pool.run)
            supervisor.start("inbox-lease", inbox.renew_loop)
            supervisor.start("gateway", gateway.run)
            supervisor.start("ux", lambda: _together(background))  # memories following edits
            supervisor.start("http", doors.run)
            supervisor.start("knowledge-intake", learner.run)
            # the singleton jobs: run by the one daemon that leads (always this one on SQLite)
            supervisor.start("leader", leadership.run)
            singletons: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
                "catch-up": lambda: intake.run_as_leader(gateway.authenticated),
                "auto-join": channels.run,
                "audit-prune": audit.prune_loop,
                "knowledge-indexer": indexer.run,
                "knowledge-backfill": backfills.run,
                "inbox-prune": lambda: inbox.prune_loop(s.storage.retention_days),
            }
            for name, job in singletons.items():
                supervisor.start(name, leadership.singleton(name, job))
            self._install_signals()
            await self._until_ready(gateway, llm, embedder)
            await self._serve(supervisor)
            log.info("stopping", grace_s=s.bot.shutdown_grace)
            await supervisor.stop(["gateway", "http", "catch-up"])  # stop intake first
            await pool.stop(s.bot.shutdown_grace)
            await supervisor.stop()
            with contextlib.suppress(Exception):  # what the socket gathered for the log, written
                await learner.flush()
            for task in self._background:
                task.cancel()
            await asyncio.gather(*self._background, return_exceptions=True)
        finally:
            if store is not None:
                await store.close()
            if messages is not None:
                await messages.close()
            if doors is not None:
                await doors.aclose()
            if feedback is not None:
                await feedback.aclose()
            if streams is not None:
                await streams.aclose()
            if llm is not None:
                await llm.aclose()  # the direct LLM client's connection pool
            await rest.aclose()
            await storage.close()
        log.info("stopped")
        return 0

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop_event.set)

    async def _until_ready(self, gateway: Gateway, llm: LLM | None, embedder: Embedder) -> None:
        """Wait for the first authenticated socket, then tell systemd and warm up the slow parts."""
        waiter = asyncio.create_task(gateway.authenticated.wait())
        stopper = asyncio.create_task(self.stop_event.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        for t in (waiter, stopper):
            t.cancel()
        if self.stop_event.is_set():
            return
        sd_notify("READY=1")
        log.info("ready", startup_s=round(time.monotonic() - _STARTED, 3))
        self._background.append(asyncio.create_task(_warm_up(llm, embedder), name="warm-up"))

    async def _serve(self, supervisor: Supervisor) -> None:
        """Feed the systemd watchdog only while every part runs (none is crashed or in backoff).

        A Mattermost outage is not a reason for systemd to restart us: the gateway keeps
        reconnecting with backoff, and its own silence watchdog catches a deaf socket.
        """
        interval = watchdog_interval()
        while not self.stop_event.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), timeout=interval or 3600)
            if interval and supervisor.healthy():
                sd_notify("WATCHDOG=1")
        sd_notify("STOPPING=1")


_STARTED = time.monotonic()


def _mention(bot: BotIdentity) -> str:
    mention = next((a for a in bot.aliases if a), f"@{bot.username}")
    return mention if mention.startswith("@") else "@" + mention


async def _together(loops: Sequence[Callable[[], Awaitable[None]]]) -> None:
    """For the supervisor: run the listeners' loops until cancelled."""
    await asyncio.gather(*(loop() for loop in loops))


async def _warm_up(llm: LLM | None, embedder: Embedder) -> None:
    """Load the embedding model (and litellm, if the model needs it) off the loop, once the socket is up."""
    try:
        await asyncio.to_thread(embedder.embed_query, "warm up")
        if llm is not None:
            await llm.warm_up()
    except Exception as exc:  # the first real request will load them (and report) again
        log.warning("warm_up_failed", error=f"{type(exc).__name__}: {exc}")
    # Everything alive now (modules, the web app, models, settings) lives as long as the process:
    # out of the collector's sight, a full collection no longer walks it. Those walks paused the
    # socket reader for tens of ms, long enough at 5,000 events/s for the server to drop us.
    gc.collect()
    gc.freeze()
    log.info("warmed_up", since_start_s=round(time.monotonic() - _STARTED, 3), frozen=gc.get_freeze_count())


async def run_daemon(settings: Settings) -> int:
    return await Daemon(settings).run()
