"""Interactive buttons through the real daemon and the dev server's action callback: Undo on a
`remember` (its author only), Forget per candidate, "which is right?" on a contradiction by another
author; a forged click (wrong signature, a changed memory id) refused; every click audited."""

from __future__ import annotations

import inspect
import sqlite3
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from mchat_bot.devserver import DevServer
from mchat_bot.devserver.fake_llm import FakeLLM
from mchat_bot.mattermost.rest import RestClient
from tests.support.daemon import DaemonProcess, free_port, running_daemon, tag

pytestmark = pytest.mark.asyncio(loop_scope="module")

# the tries of one send (the daemon builds its RestClient with the default)
SEND_TRIES = int(inspect.signature(RestClient).parameters["max_tries"].default)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bot(
    dev: DevServer, llm: FakeLLM, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[DaemonProcess]:
    port = free_port()
    env = {
        "MCHAT_LLM_MODEL": "",
        "MCHAT_HTTP_LISTEN": f"127.0.0.1:{port}",
        "MCHAT_HTTP_PUBLIC_URL": f"http://127.0.0.1:{port}",
    }
    async with running_daemon(dev, llm, tmp_path_factory.mktemp("buttons"), env=env) as daemon:
        yield daemon


def buttons_of(post: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for att in (post.get("props") or {}).get("attachments") or [] for a in att.get("actions") or []]


async def client_post(dev: DevServer, user: str, post_id: str) -> dict[str, Any]:
    """The post as a user's client gets it over REST (no integration: Mattermost keeps that)."""
    async with httpx.AsyncClient(base_url=dev.url, timeout=10) as http:
        r = await http.get(f"/api/v4/posts/{post_id}", headers=auth(dev, user))
    assert r.status_code == 200, r.text
    return dict(r.json())


def auth(dev: DevServer, user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {dev.seed.users[user].token}"}


async def press(dev: DevServer, user: str, post_id: str, action_id: str) -> httpx.Response:
    """What the webapp sends when ``user`` presses the button."""
    async with httpx.AsyncClient(base_url=dev.url, timeout=30) as http:
        return await http.post(
            f"/api/v4/posts/{post_id}/actions/{action_id}", json={}, headers=auth(dev, user)
        )


async def reply_with_buttons(bot: DaemonProcess, user: str, channel: str, text: str) -> dict[str, Any]:
    post, _ = await bot.ask(user, channel, text)
    [reply] = await bot.replies_to(post)
    shown = await client_post(bot.dev, user, reply["id"])
    assert buttons_of(shown), shown
    assert all("integration" not in b for b in buttons_of(shown)), "clients never see the integration"
    return shown


def ephemeral_to(dev: DevServer, user: str) -> list[str]:
    uid = dev.seed.users[user].id
    return [str(e["message"]) for e in dev.rest.posts.ephemeral if e.get("to_user_id") == uid]


async def search(bot: DaemonProcess, user: str, words: str) -> str:
    return (await bot.ask(user, "qa", f"@ai search {words}"))[1]


async def test_undo_is_for_its_author_and_removes_the_memory(bot: DaemonProcess, dev: DevServer) -> None:
    mark = tag()
    shown = await reply_with_buttons(bot, "kim", "qa", f"@ai remember 회의실 예약은 하루 전까지 {mark}")
    [undo] = [b for b in buttons_of(shown) if "되돌리기" in b["name"]]
    # lee presses kim's Undo: refused, to lee alone, nothing changes
    before = len(ephemeral_to(dev, "lee"))
    assert (await press(dev, "lee", shown["id"], undo["id"])).status_code == 200
    assert "@kim" in ephemeral_to(dev, "lee")[before]
    assert f"하루 전까지 {mark}" in await search(bot, "kim", f"회의실 예약 {mark}")
    # kim presses it: the memory is gone and the reply says so, without its buttons
    assert (await press(dev, "kim", shown["id"], undo["id"])).status_code == 200
    after = await client_post(dev, "kim", shown["id"])
    assert "되돌렸습니다" in after["message"] and not buttons_of(after), after
    assert f"하루 전까지 {mark}" not in await search(bot, "kim", f"회의실 예약 {mark}")
    with sqlite3.connect(bot.folder / "mchat_bot.sqlite3") as conn:
        rows = conn.execute(
            "SELECT outcome, user_name FROM audit_log WHERE action = 'click_undo' ORDER BY id"
        ).fetchall()
    assert rows[-2:] == [("refused", "lee"), ("ok", "kim")], rows


async def test_a_reply_sent_again_after_a_failed_send_keeps_a_working_undo(
    bot: DaemonProcess, dev: DevServer
) -> None:
    """Every try of the first send answers 503; the retry posts the saved reply, buttons included,
    signed anew."""
    mark = tag()
    dev.faults.fail_posts(SEND_TRIES, 503)  # the REST client's tries of one send: the item is retried
    try:
        shown = await reply_with_buttons(bot, "kim", "qa", f"@ai remember 교대 근무표는 금요일에 공지 {mark}")
    finally:
        dev.faults.fail_posts(0)
    [undo] = [b for b in buttons_of(shown) if "되돌리기" in b["name"]]
    assert (await press(dev, "kim", shown["id"], undo["id"])).status_code == 200
    assert "되돌렸습니다" in (await client_post(dev, "kim", shown["id"]))["message"]
    assert f"금요일에 공지 {mark}" not in await search(bot, "kim", f"교대 근무표 {mark}")


async def test_forget_buttons_one_per_candidate(bot: DaemonProcess, dev: DevServer) -> None:
    mark = tag()
    await bot.ask("kim", "qa", f"@ai remember 주차 등록은 총무팀에서 {mark}")
    await bot.ask("kim", "qa", f"@ai remember 주차장은 지하 2층까지 {mark}")
    shown = await reply_with_buttons(bot, "kim", "qa", f"@ai forget 주차 {mark}")
    offered = [b for b in buttons_of(shown) if b["name"].startswith("🗑️")]
    assert len(offered) == 2, offered
    assert (await press(dev, "kim", shown["id"], offered[0]["id"])).status_code == 200
    after = await client_post(dev, "kim", shown["id"])
    assert "삭제" in after["message"] and len(buttons_of(after)) == 2  # the list stays, one is done
    left = await search(bot, "kim", f"주차 {mark}")
    assert sum(t in left for t in (f"총무팀에서 {mark}", f"지하 2층까지 {mark}")) == 1, left
    # the same button again: already handled, nothing more is deleted
    before = len(ephemeral_to(dev, "kim"))
    assert (await press(dev, "kim", shown["id"], offered[0]["id"])).status_code == 200
    assert "이미 처리된" in ephemeral_to(dev, "kim")[before]


async def test_a_contradiction_by_another_author_asks_which_is_right(
    bot: DaemonProcess, dev: DevServer
) -> None:
    part = f"Q{tag()}"
    await bot.ask("lee", "qa", f"@ai remember {part}부품 불량률 12%")
    shown = await reply_with_buttons(bot, "kim", "qa", f"@ai remember {part}부품 불량률 8%")
    assert "어느 쪽이 맞나요" in shown["message"], shown["message"]
    both = await search(bot, "kim", f"{part}부품 불량률")
    assert "12%" in both and "8%" in both, "both stay current until someone chooses"
    keep_new = next(b for b in buttons_of(shown) if "8%" in b["name"])
    # park is neither author nor a channel admin: refused
    before = len(ephemeral_to(dev, "park"))
    assert (await press(dev, "park", shown["id"], keep_new["id"])).status_code == 200
    assert "작성자나 채널 관리자" in ephemeral_to(dev, "park")[before]
    # lee, the other author, agrees the new one is right
    assert (await press(dev, "lee", shown["id"], keep_new["id"])).status_code == 200
    after = await client_post(dev, "kim", shown["id"])
    assert "골랐습니다" in after["message"] and not buttons_of(after)
    now = await search(bot, "kim", f"{part}부품 불량률")
    listed = [line for line in now.splitlines() if part in line and line[:1].isdigit()]
    assert len(listed) == 1 and "8% (이전: 12%" in listed[0], now  # one current memory, the other its history


async def test_forged_clicks_are_refused_and_change_nothing(bot: DaemonProcess, dev: DevServer) -> None:
    mark = tag()
    shown = await reply_with_buttons(bot, "kim", "qa", f"@ai remember 보안 교육은 분기마다 {mark}")
    stored = dev.store.posts[shown["id"]]  # the server's copy: what Mattermost would send on a click
    [undo] = [b for b in buttons_of(stored) if "되돌리기" in b["name"]]
    context = dict(undo["integration"]["context"])
    url = undo["integration"]["url"]
    body = {"user_id": dev.seed.users["kim"].id, "post_id": shown["id"], "channel_id": shown["channel_id"]}
    async with httpx.AsyncClient(timeout=10) as http:
        wrong_sig = await http.post(url, json={**body, "context": {**context, "sig": "0" * 64}})
        other_id = await http.post(
            url, json={**body, "context": {**context, "memory_ids": ["01HZZZZZZZZZZZZZZZZZZZZZZZ"]}}
        )
        no_context = await http.post(url, json=body)
        other_channel = await http.post(
            url, json={**body, "channel_id": dev.seed.channels["town-square"], "context": context}
        )
    assert [r.status_code for r in (wrong_sig, other_id, no_context, other_channel)] == [403] * 4
    assert f"분기마다 {mark}" in await search(bot, "kim", f"보안 교육 {mark}")
    assert buttons_of(await client_post(dev, "kim", shown["id"])), "the reply is untouched"
    with sqlite3.connect(bot.folder / "mchat_bot.sqlite3") as conn:
        refused = conn.execute(
            "SELECT count(*) FROM audit_log WHERE action LIKE 'click_%' AND outcome = 'refused'"
        ).fetchone()
    assert refused[0] >= 4


async def test_forget_me_is_confirmed_with_a_button_in_the_dm(bot: DaemonProcess, dev: DevServer) -> None:
    mark = tag()
    await bot.ask("kim", "dm", f"remember 개인: 내 사번 메모 {mark}")
    shown = await reply_with_buttons(bot, "kim", "dm", "forget me")
    assert "nothing deleted yet" in shown["message"]
    [confirm] = [b for b in buttons_of(shown) if b["name"] == "🧹 Forget me"]
    # nobody else can reach kim's DM to press it (the server refuses a non-member)
    assert (await press(dev, "lee", shown["id"], confirm["id"])).status_code == 403
    assert f"내 사번 메모 {mark}" in (await bot.ask("kim", "dm", f"search 사번 메모 {mark}"))[1]
    assert (await press(dev, "kim", shown["id"], confirm["id"])).status_code == 200
    after = await client_post(dev, "kim", shown["id"])
    assert "Forgotten" in after["message"] and not buttons_of(after), after["message"]
    assert f"내 사번 메모 {mark}" not in (await bot.ask("kim", "dm", f"search 사번 메모 {mark}"))[1]
