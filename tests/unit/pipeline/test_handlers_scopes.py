"""Scopes end to end through Handlers and the real embedded store: who sees what.

The randomized test makes memories in many channels, users, teams and scopes through the real
`remember` grammar, then asks from every kind of place and checks that no reply (search, answer,
memories, forget, history) ever shows a memory the asker may not see.
"""

from __future__ import annotations

import random
import re
from typing import Any

from mchat_bot.memory.readers import Readers, may_post
from mchat_bot.memory.store import Memory, Selection, Viewer, is_visible
from mchat_bot.pipeline.handlers import Handlers
from mchat_bot.pipeline.message import ChannelType, Reply
from mchat_bot.pipeline.router import parse_scope
from mchat_bot.pipeline.texts import short_id
from tests.support.factories import BOT, answer


async def said(
    h: Handlers,
    text: str,
    *,
    channel: str,
    user: str,
    team: str = "t1",
    ctype: ChannelType = "O",
    name: str = "",
) -> Reply:
    """``text`` from ``user`` in ``channel``; a channel's name is its id (a DM's is the two user ids,
    as on the server), a user's name is the id too."""
    channel_name = f"{user}__{BOT.user_id}" if ctype == "D" else channel
    return await answer(
        h,
        text,
        channel=channel,
        user=user,
        name=name or user,
        team=team,
        ctype=ctype,
        channel_name=channel_name,
    )


async def say(h: Handlers, text: str, **kw: Any) -> str:
    """What the asker is shown: the channel's reply and what only they may read."""
    reply = await said(h, text, **kw)
    return f"{reply.text}\n{reply.private}"


def test_scope_grammar() -> None:
    assert parse_scope("--me 나는 아침 회의 선호") == ("user", "나는 아침 회의 선호")
    assert parse_scope("개인: 나는 아침 회의 선호") == ("user", "나는 아침 회의 선호")
    assert parse_scope("--team 배포 금지 요일은 금요일") == ("team", "배포 금지 요일은 금요일")
    assert parse_scope("팀：배포 금지") == ("team", "배포 금지")
    assert parse_scope("팀장님 회의는 3시") == ("channel", "팀장님 회의는 3시")  # no colon: not a marker
    assert parse_scope("개인정보 처리방침 개정") == ("channel", "개인정보 처리방침 개정")
    assert parse_scope("X부품 불량률 12%") == ("channel", "X부품 불량률 12%")


async def test_labels_and_team_rule(store, tmp_path) -> None:
    h = Handlers(store, None, BOT, "http://mm", team_admins=["boss"])
    reply = await say(h, "@ai remember 개인: 나는 아침 회의를 선호함", channel="c1", user="u1")
    assert "개인" in reply and "이 채팅방" not in reply
    reply = await say(h, "@ai remember --team release freeze starts Friday", channel="c1", user="u1")
    assert "team" in reply.lower() and "Memory saved" in reply
    reply = await say(h, "@ai remember 이 채널 회의는 3시", channel="c1", user="u1")
    assert "이 채팅방" in reply
    # private channel: refused, nothing stored
    before = await store.count()
    reply = await say(h, "@ai remember 팀: 비밀 프로젝트 코드명은 오로라", channel="p1", user="u1", ctype="P")
    assert "저장하지 않았습니다" in reply
    reply = await say(
        h, "remember --team secret codename aurora", channel="d1", user="u1", team="", ctype="D"
    )
    assert "Nothing was saved" in reply
    assert await store.count() == before
    # ... unless the asker is a listed team admin
    reply = await say(
        h, "@ai remember 팀: 분기 목표는 매출 20% 성장", channel="p1", user="u7", name="boss", ctype="P"
    )
    assert "메모리 저장됨" in reply and "팀" in reply
    assert await store.count() == before + 1


async def test_personal_memory_follows_its_author_and_nobody_else(store) -> None:
    h = Handlers(store, None, BOT, "http://mm")
    await say(h, "@ai remember --me my locker code is behind the blue poster", channel="c1", user="u1")
    found = await say(h, "@ai search locker code", channel="c2", user="u1")
    assert "blue poster" in found
    other = await say(h, "@ai search locker code", channel="c2", user="u2")
    assert "blue poster" not in other
    same_channel_other_user = await say(h, "@ai search locker code", channel="c1", user="u2")
    assert "blue poster" not in same_channel_other_user
    # a DM (no team): the author sees all of their personal memories there
    dm = await say(h, "search locker code", channel="d-u1", user="u1", team="", ctype="D")
    assert "blue poster" in dm
    # another team: not there
    assert "blue poster" not in await say(h, "@ai search locker code", channel="x1", user="u1", team="t2")


async def test_personal_memory_made_in_a_dm_is_seen_in_the_authors_channels(store) -> None:
    h = Handlers(store, None, BOT, "http://mm")
    await say(h, "remember 개인: 내 연차는 12월 24일부터", channel="d-u1", user="u1", team="", ctype="D")
    assert "12월 24일" in await say(h, "@ai search 연차 언제", channel="c3", user="u1")
    assert "12월 24일" not in await say(h, "@ai search 연차 언제", channel="c3", user="u2")


async def test_randomized_no_reply_shows_an_invisible_memory(store) -> None:
    """Many channels, users, teams, scopes; every command from every kind of place."""
    rng = random.Random(5)
    h = Handlers(store, None, BOT, "http://mm")
    teams = {"t1": ["a1", "a2", "a3"], "t2": ["b1", "b2"]}
    users = [f"u{i}" for i in range(6)]
    topics = ["배포 일정", "회의실 예약", "서버 주소", "고객사 담당자", "점심 메뉴", "release plan", "budget"]
    made: list[Memory] = []
    for i in range(60):
        team = rng.choice(list(teams))
        channel = rng.choice(teams[team])
        user = rng.choice(users)
        marker = rng.choice(["", "개인: ", "--me ", "팀: ", "--team "])
        in_dm = rng.random() < 0.15
        text = f"{rng.choice(topics)} 메모 {i} 값 {rng.randint(1, 99)} tag{i:03d}"
        if in_dm:
            await say(h, f"remember {marker}{text}", channel=f"d-{user}", user=user, team="", ctype="D")
        else:
            await say(h, f"@ai remember {marker}{text}", channel=channel, user=user, team=team)
    async for m in store.scan(Selection()):
        made.append(m)
    assert len(made) >= 40
    by_tag = {re.search(r"tag\d{3}", m.text).group(0): m for m in made}  # type: ignore[union-attr]
    places = [(t, c, "O") for t, cs in teams.items() for c in cs] + [("", "d-{u}", "D")]
    checked = posted = 0
    for _ in range(80):
        team, channel, ctype = rng.choice(places)
        user = rng.choice(users)
        channel = channel.format(u=user)
        viewer = Viewer(team, channel, user, direct=ctype == "D")
        query = rng.choice([*topics, "메모", "값", "tag"])
        prefix = "" if ctype == "D" else "@ai "
        readers = Readers(channel, team, only_user=user if ctype == "D" else "")
        for command in (f"search {query}", query + "?", "memories"):
            whole = await said(h, prefix + command, channel=channel, user=user, team=team, ctype=ctype)
            reply = f"{whole.text}\n{whole.private}"
            for tag in set(re.findall(r"tag\d{3}", reply)):
                assert is_visible(by_tag[tag], viewer), (command, viewer, by_tag[tag])
                checked += 1
            # the reader rule: what is posted, every reader of the place may see
            for tag in set(re.findall(r"tag\d{3}", whole.text)):
                assert may_post(by_tag[tag], readers), (command, readers, by_tag[tag])
                posted += 1
            for sid in re.findall(r"`([0-9A-Z]{8})`", reply):
                mem = next(m for m in made if short_id(m.id) == sid)
                assert is_visible(mem, viewer)
        # forget and history by id of a memory this asker may not see: refused, nothing deleted
        hidden = [m for m in made if not is_visible(m, viewer)]
        if hidden:
            target = rng.choice(hidden)
            for command in (f"forget {target.id}", f"history {target.id}", f"forget {short_id(target.id)}"):
                reply = await say(h, prefix + command, channel=channel, user=user, team=team, ctype=ctype)
                assert target.text not in reply
            assert await store.get(target.id) is not None
        # the store itself, asked directly
        for hit in await store.search(query, viewer, limit=10):
            assert is_visible(hit.memory, viewer)
    assert checked > 50  # the test saw many visible memories, so it could have seen invisible ones
    assert posted > 20 and posted < checked  # some were posted, some only shown to their author
