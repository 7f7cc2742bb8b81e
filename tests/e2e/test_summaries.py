"""`summarize` through the real daemon over real sockets: a 300-message day of a learning channel
with the fake LLM (every cited permalink is a post of that channel and day; nothing from another
channel, learning too) and without an LLM (labelled extractive); a thread in a channel that does not
learn; another channel for the asker alone, in their DM.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from mchat_bot.devserver import DevServer
from mchat_bot.devserver.fake_llm import FakeLLM
from tests.support.daemon import DaemonProcess, running_daemon, tag
from tests.support.ops import wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")

DAY = 300
LINK = re.compile(r"/_redirect/pl/([a-z0-9]{26})")
TOPICS = (
    "Decided: lot {k} goes to line 3",
    "Who signs the lot {k} order?",
    "@lee will send the lot {k} certificate by Friday",
    "moisture on lot {k} was {p}%",
    "lot {k} salt test passed",
)


def lines_of(db: Path, channel_id: str) -> int:
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT count(*) FROM knowledge_line WHERE channel_id = ?", (channel_id,)
        ).fetchone()
    return int(row[0])


async def post_a_day(dev: DevServer, channel_id: str, marker: str) -> set[str]:
    ids = set()
    for i in range(DAY):
        text = TOPICS[i % len(TOPICS)].format(k=i % 11, p=i % 17) + f" ({marker} {i})"
        post = await dev.user_post(("kim", "lee", "park")[i % 3], channel_id, text)
        ids.add(post["id"])
    return ids


async def settled(db: Path, channel_id: str, count: int) -> None:
    async def size() -> int:
        return lines_of(db, channel_id)

    await wait_for(size, lambda n: n >= count, timeout=30, every=0.1)


async def test_a_learning_channels_day_with_and_without_an_llm(
    dev: DevServer, llm: FakeLLM, tmp_path: Path
) -> None:
    qa, town = dev.seed.channels["qa"], dev.seed.channels["town-square"]
    learning = {"MCHAT_KNOWLEDGE_CHANNELS": f"{qa},{town}"}
    db = tmp_path / "mchat_bot.sqlite3"
    marker, elsewhere = f"Day{tag()}", f"Elsewhere{tag()}"
    async with running_daemon(dev, llm, tmp_path, env=learning) as bot:
        day = await post_a_day(dev, qa, marker)
        other = await dev.user_post("kim", town, f"{elsewhere}: Decided: lot 3 goes to line 3")
        await settled(db, qa, DAY)
        await settled(db, town, 1)
        llm.reset()
        _, summary = await bot.ask("kim", "qa", "@ai 24시간 요약해줘", timeout=60)
        cited = LINK.findall(summary)
        print("SUMMARY>>", summary[:1500], len(llm.requests), llm.prompt_tokens)
        assert cited and set(cited) <= day, summary
        assert other["id"] not in summary and elsewhere not in summary, summary
        assert "결정 사항" in summary and "글 300개" in summary, summary
        sent = "\n".join(str(m.get("content")) for body in llm.requests for m in body["messages"])
        assert elsewhere not in sent and marker in sent
        assert len(llm.requests) >= 3, len(llm.requests)  # the day is longer than one chunk: parts, merge
        assert llm.prompt_tokens <= 24000, llm.prompt_tokens

        await thread_in_a_channel_that_does_not_learn(dev, bot)
        await another_channel_for_the_asker_alone(dev, bot, day)

    async with running_daemon(dev, llm, tmp_path, env=learning | {"MCHAT_LLM_MODEL": ""}) as bot:
        _, summary = await bot.ask("park", "qa", "@ai summarize", timeout=60)
        assert "Extractive summary (no LLM)" in summary, summary
        cited = LINK.findall(summary)
        print("SUMMARY>>", summary[:1500], len(llm.requests), llm.prompt_tokens)
        assert cited and set(cited) <= day, summary
        assert "Looks like decisions" in summary and "Decided: lot" in summary, summary
        assert elsewhere not in summary


async def thread_in_a_channel_that_does_not_learn(dev: DevServer, bot: DaemonProcess) -> None:
    channel = dev.seed.channels["qa-private"]
    word = f"Valve{tag()}"
    root = await dev.user_post("kim", channel, f"Which {word} do we order?")
    answer = await dev.user_post("lee", channel, f"The {word} from Daesung, 12 units.", root_id=root["id"])
    _, summary = await bot.ask("park", "qa-private", "@ai summarize", root_id=root["id"], timeout=60)
    assert set(LINK.findall(summary)) <= {root["id"], answer["id"]} and LINK.findall(summary), summary
    _, refused = await bot.ask("park", "qa-private", "@ai summarize today")
    assert "does not learn" in refused and "learn on" in refused, refused


async def another_channel_for_the_asker_alone(dev: DevServer, bot: DaemonProcess, day: set[str]) -> None:
    post, public = await bot.ask("kim", "town-square", "@ai summarize #qa", timeout=60)
    assert "sent it to you alone" in public and not LINK.findall(public), public
    [private] = await dev.wait_for_posts(
        lambda p: (
            p["channel_id"] == dev.seed.dm["kim"]
            and p["user_id"] == dev.seed.bot.id
            and p["props"].get("mchat_reply_to") == post["id"]
        ),
        timeout=30,
    )
    assert set(LINK.findall(private["message"])) - {post["id"]} <= day, private["message"]
    _, missing = await bot.ask("kim", "town-square", "@ai summarize #no-bot")
    assert "I am not in" in missing, missing
