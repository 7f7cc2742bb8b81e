"""The seed's own webhook tests, as it wrote them, against the running daemon.

The seed's example handler lives at `/mchat/webhook/outgoing` and its unit tests send minimal
payloads (no `post_id`, no team, no names, no timestamp). The daemon serves that path as an alias of
its outgoing-webhook door; a payload without a post is accepted once its channel and user check out
with the server, and answered in the channel.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from mchat_bot.devserver import DevServer
from mchat_bot.devserver.fake_llm import FakeLLM
from tests.support.daemon import DaemonProcess, free_port

pytestmark = pytest.mark.asyncio(loop_scope="module")

VALID_TOKEN = "seed-outgoing-token"
USERNAME = "AI Memory Bot"
BUDGET = 1.5


class Seed:
    def __init__(self, base: str, user_id: str, channel_id: str, dev: DevServer, llm: FakeLLM) -> None:
        self.base, self.user_id, self.channel_id = base, user_id, channel_id
        self.dev, self.llm = dev, llm

    async def post(self, payload: dict[str, Any]) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.base, timeout=20) as client:
            return await client.post("/mchat/webhook/outgoing", json=payload)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def seed(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Seed]:
    folder = tmp_path_factory.mktemp("seed")
    async with DevServer() as dev, FakeLLM() as llm:
        port = free_port()
        env = {
            "MCHAT_HTTP_LISTEN": f"127.0.0.1:{port}",
            "MCHAT_WEBHOOKS_OUTGOING_TOKENS": VALID_TOKEN,
            "MCHAT_WEBHOOKS_USERNAME": USERNAME,
            "MCHAT_WEBHOOKS_RESPONSE_BUDGET": str(BUDGET),
        }
        bot = DaemonProcess(dev, llm, folder, env=env)
        await bot.start()
        try:
            yield Seed(
                f"http://127.0.0.1:{port}", dev.seed.users["kim"].id, dev.seed.channels["qa"], dev, llm
            )
        finally:
            assert await bot.stop() == 0, bot.log_tail()


async def test_outgoing_webhook_valid(seed: Seed) -> None:
    payload = {
        "token": VALID_TOKEN,
        "text": "@ai 테스트",
        "user_id": seed.user_id,
        "channel_id": seed.channel_id,
    }
    response = await seed.post(payload)
    assert response.status_code == 200
    body = response.json()
    assert body["text"] and body["username"] == USERNAME
    assert "response_type" not in body  # no post to reply under: the answer goes to the channel


async def test_outgoing_webhook_invalid_token(seed: Seed) -> None:
    payload = {"token": "invalid_token", "text": "@ai 테스트"}
    response = await seed.post(payload)
    assert response.status_code == 401


async def test_remember_command(seed: Seed) -> None:
    payload = {
        "token": VALID_TOKEN,
        "text": "/remember X부품 불량률 12%",
        "user_id": seed.user_id,
        "channel_id": seed.channel_id,
        "trigger_word": "/remember",
    }
    response = await seed.post(payload)
    assert response.status_code == 200
    assert "저장" in response.json()["text"]


async def test_a_minimal_payload_still_needs_a_member_of_a_public_channel(seed: Seed) -> None:
    payload = {
        "token": VALID_TOKEN,
        "text": "@ai memories",
        "user_id": "x" * 26,
        "channel_id": seed.channel_id,
    }
    assert (await seed.post(payload)).status_code == 403


async def test_a_late_answer_to_a_minimal_payload_is_posted_in_the_channel(seed: Seed) -> None:
    seed.llm.delay(BUDGET + 1.0)
    try:
        payload = {
            "token": VALID_TOKEN,
            "text": "@ai 오늘 라인 점검 일정은?",
            "user_id": seed.user_id,
            "channel_id": seed.channel_id,
        }
        response = await seed.post(payload)
        assert response.status_code == 200 and "답변을 준비" in response.json()["text"]
        bot_id = seed.dev.seed.bot.id
        late = await seed.dev.wait_for_posts(
            lambda p: (
                p["user_id"] == bot_id
                and p["channel_id"] == seed.channel_id
                and "mchat_reply_to" in p["props"]
                and p["props"]["mchat_reply_to"].startswith("hook-")
            ),
            timeout=20,
        )
        assert late[0]["root_id"] == ""  # there is no post to thread under
    finally:
        seed.llm.delay(0)
