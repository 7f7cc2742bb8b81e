"""Messages and the ask-the-handlers helper the pipeline tests share."""

from __future__ import annotations

import itertools
import time
from typing import Any

from mchat_bot.devserver.fake_llm import FakeLLM
from mchat_bot.llm import LLM
from mchat_bot.memory.store import Memory, MemoryStore, new_memory_id
from mchat_bot.pipeline.handlers import Handlers
from mchat_bot.pipeline.message import ChannelType, IncomingMessage, Reply
from mchat_bot.pipeline.router import BotIdentity, route

BOT = BotIdentity("bot1", "memorybot", ("@ai",))
SITE = "http://mm.local:8065"

_post_ids = itertools.count(1)


def message(
    text: str,
    *,
    channel: str = "c1",
    user: str = "u1",
    name: str = "김과장",
    root: str = "",
    team: str = "t1",
    ctype: ChannelType = "O",
    channel_name: str = "품질검사",
    post_id: str = "",
    at: int | None = None,
) -> IncomingMessage:
    """A user's post as the pipeline sees it: posted now (or ``at``, in ms), a fresh post id unless given."""
    return IncomingMessage(
        post_id=post_id or f"post{next(_post_ids):05d}",
        channel_id=channel,
        channel_type=ctype,
        channel_name=channel_name,
        team_id=team,
        user_id=user,
        user_name=name,
        message=text,
        root_id=root,
        create_at=int(time.time() * 1000) if at is None else at,
    )


async def ask(h: Handlers, text: str, **kw: object) -> str:
    """Route ``text`` as :func:`message` builds it (``kw`` are its fields), hand it to ``h``, and
    return the text of its reply."""
    return (await answer(h, text, **kw)).text


async def answer(h: Handlers, text: str, **kw: object) -> Reply:
    """The whole reply to ``text``: what is posted, and what only the asker may be shown."""
    m = message(text, **kw)  # type: ignore[arg-type]
    return await h.handle(m, route(m, BOT))


def llm_for(fake: FakeLLM, timeout: float = 5.0) -> LLM:
    """The real LLM client pointed at the fake LLM server, with quick retries."""
    return LLM("openai/fake", f"{fake.url}/v1", "k", timeout=timeout, retry_base=0.01)


# -- the memories of two people (self-service: my memories, export, forget me) --

KIM, LEE = "u_kim", "u_lee"


def mem(text: str, scope: str, user: str, *, channel: str = "c1", team: str = "t1", **kw: Any) -> Memory:
    return Memory(
        id=new_memory_id(),
        text=text,
        scope=scope,  # type: ignore[arg-type]
        team_id=team,
        channel_id=channel,
        user_id=user,
        user_name=user,
        **kw,
    )


async def seed(store: MemoryStore) -> dict[str, Memory]:
    now = time.time()
    made = {
        "kim_personal": mem("kim likes green tea", "user", KIM),
        "kim_channel": mem("the release is on Friday", "channel", KIM),
        "kim_team": mem("the office moves in March", "team", KIM),
        "kim_left": mem("the old project used Java", "channel", KIM, channel="c_left"),
        "lee_channel": mem("lee's channel note about the budget", "channel", LEE),
        "lee_personal": mem("lee prefers coffee", "user", LEE),
        "lee_team": mem("lee's team note about parking", "team", LEE),
    }
    old = mem("the release is on Thursday", "channel", KIM, created_at=now - 100)
    made["kim_old"] = old
    await store.add_many(list(made.values()))
    await store.supersede(old.id, made["kim_channel"].id, now)
    return made


async def in_dm(h: Handlers, text: str, user: str = KIM) -> Reply:
    return await answer(h, text, channel=f"dm_{user}", user=user, name=user, team="", ctype="D")
