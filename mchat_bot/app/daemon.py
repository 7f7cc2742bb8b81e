"""The daemon: builds the parts, runs them under the supervisor, handles signals and systemd.

Start-up order puts the socket first: storage and the inbox (so nothing accepted is lost), the
REST identity check, then the gateway with the WebSocket door in front of the durable inbox.
Only once the socket is authenticated does the rest load (`mchat_bot.app.parts`: the memory
store, the LLM client, the workers, the HTTP doors; the heavy imports), then the embedding model
in a thread. Mentions that arrive meanwhile wait in the inbox; the other events wait in the fanout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from mchat_bot.app.warm_up import WarmUp
from mchat_bot.config import Settings
from mchat_bot.doors.websocket import Intake
from mchat_bot.knowledge.channels import LearningChannels
from mchat_bot.knowledge.learner import Learner
from mchat_bot.knowledge.lines import ChatLog
from mchat_bot.mattermost.gateway import Gateway
from mchat_bot.mattermost.rest import RestClient, RestHooks
from mchat_bot.observe import metrics
from mchat_bot.observe.logging import quiet_loop_errors
from mchat_bot.observe.readiness import Readiness, socket_check, storage_check
from mchat_bot.pipeline.inbox import Inbox
from mchat_bot.pipeline.listeners.fanout import EventFanout
from mchat_bot.pipeline.router import BotIdentity
from mchat_bot.storage import Storage, storage_for
from mchat_bot.storage.leader import Leadership
from mchat_bot.supervisor import Supervisor, sd_notify, watchdog_interval

log = structlog.get_logger(__name__)

_STARTED = time.monotonic()


class Relay:
    """A wake-up for a part built later: calls made before `connect` are passed on at connect."""

    def __init__(self) -> None:
        self._target: Callable[[], None] | None = None
        self._missed = False

    def __call__(self) -> None:
        if self._target is None:
            self._missed = True
        else:
            self._target()

    def connect(self, target: Callable[[], None]) -> None:
        self._target = target
        if self._missed:
            target()


@dataclass(slots=True)
class Core:
    """What runs before the socket is up, and what the later parts are built on."""

    settings: Settings
    storage: Storage
    rest: RestClient
    inbox: Inbox
    leadership: Leadership
    bot: BotIdentity
    chat_log: ChatLog
    learning: LearningChannels
    learner: Learner
    intake: Intake
    gateway: Gateway
    fanout: EventFanout
    readiness: Readiness
    wake_indexer: Relay


@dataclass(slots=True)
class Daemon:
    settings: Settings
    stop_event: asyncio.Event = field(default_factory=asyncio.Event)
    _background: list[asyncio.Task[None]] = field(default_factory=list)

    async def run(self) -> int:
        s = self.settings
        quiet_loop_errors(asyncio.get_running_loop())
        supervisor = Supervisor(max_backoff=s.mattermost.ws_max_backoff)
        async with contextlib.AsyncExitStack() as closing:  # closed in reverse order, also on errors
            storage = await storage_for(s.storage).open()
            closing.push_async_callback(storage.close)
            rest = RestClient(
                s.mattermost.url,
                s.mattermost.token.get(),
                timeout=s.mattermost.request_timeout,
                rate_per_sec=s.mattermost.rate_per_sec or None,
                safety_rate_per_sec=s.mattermost.safety_rate_per_sec,
                hooks=RestHooks(on_wait=metrics.observe_wait, on_drop=metrics.observe_drop),
            )
            closing.push_async_callback(rest.aclose)
            closing.push_async_callback(supervisor.stop)  # on an error: the socket stops first
            core = await self._core(storage, rest, supervisor)
            self._install_signals()
            if await self._authenticated(core.gateway):
                log.info("socket_up", since_start_s=round(time.monotonic() - _STARTED, 3))
                # the heavy imports, now the socket is up, in a thread: the loop keeps reading frames
                await asyncio.to_thread(_import_parts)
                from mchat_bot.app.parts import build

                pipeline = await build(core, closing)
                closing.push_async_callback(supervisor.stop)  # on an error: before the parts close
                warm_up = WarmUp(pipeline.embedder, pipeline.llm, _STARTED)
                core.readiness.checks["embedder"] = warm_up.check
                await core.fanout.attach(pipeline.listeners)  # what they missed, before any answer
                for name, loop in pipeline.loops.items():
                    supervisor.start(name, loop)
                # the singleton jobs: run by the one daemon that leads (always this one on SQLite)
                supervisor.start("leader", core.leadership.run)
                for name, job in pipeline.singletons.items():
                    supervisor.start(name, core.leadership.singleton(name, job))
                sd_notify("READY=1")
                log.info("ready", startup_s=round(time.monotonic() - _STARTED, 3))
                self._background.append(asyncio.create_task(warm_up.run(), name="warm-up"))
                await self._serve(supervisor)
                log.info("stopping", grace_s=s.bot.shutdown_grace)
                await supervisor.stop(["gateway", "http", "catch-up"])  # stop intake first
                await pipeline.pool.stop(s.bot.shutdown_grace)
            await supervisor.stop()
            with contextlib.suppress(Exception):  # what the socket gathered for the log, written
                await core.learner.flush()
            for task in self._background:
                task.cancel()
            await asyncio.gather(*self._background, return_exceptions=True)
        log.info("stopped")
        return 0

    async def _core(self, storage: Storage, rest: RestClient, supervisor: Supervisor) -> Core:
        """Identity, inbox and the socket with its door: started at once, before the rest loads."""
        s = self.settings
        readiness = Readiness()  # /readyz asks the parts as they are built
        readiness.checks["storage"] = storage_check(storage)
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
        chat_log = await ChatLog(storage).load()
        learning = await LearningChannels(storage, s.knowledge.channels).load()
        wake_indexer = Relay()
        learner = Learner(learning, chat_log, bot.user_id, wake_indexer)
        # the workers claim what is in the inbox when they start; until then a wake-up waits there
        intake = Intake(rest, inbox, storage, bot, wake=inbox.changed.set, learner=learner)
        fanout = EventFanout(intake.on_event)  # the listeners are attached once they are built
        intake.on_missed = fanout.missed  # edits and deletions a catch-up finds
        gateway = Gateway(
            s.mattermost.url,
            s.mattermost.token.get(),
            metrics.counting_events(fanout),
            intake.on_gap,
            silence_timeout=s.mattermost.ws_silence_timeout,
            ping_interval=s.mattermost.ws_ping_interval,
            max_backoff=s.mattermost.ws_max_backoff,
            wants=intake.wants,
        )
        readiness.checks["socket"] = socket_check(gateway.authenticated)
        metrics.LIVE.gateway, metrics.LIVE.inbox = gateway, inbox
        supervisor.start("gateway", gateway.run)
        supervisor.start("inbox-lease", inbox.renew_loop)
        supervisor.start("knowledge-intake", learner.run)
        return Core(
            s,
            storage,
            rest,
            inbox,
            leadership,
            bot,
            chat_log,
            learning,
            learner,
            intake,
            gateway,
            fanout,
            readiness,
            wake_indexer,
        )

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop_event.set)

    async def _authenticated(self, gateway: Gateway) -> bool:
        """Wait for the first authenticated socket; False when asked to stop first."""
        waiter = asyncio.create_task(gateway.authenticated.wait())
        stopper = asyncio.create_task(self.stop_event.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        for t in (waiter, stopper):
            t.cancel()
        return not self.stop_event.is_set()

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


def _import_parts() -> None:
    import mchat_bot.app.parts  # noqa: F401  (numpy, the store, FastAPI, uvicorn: most of the import time)


async def run_daemon(settings: Settings) -> int:
    return await Daemon(settings).run()
