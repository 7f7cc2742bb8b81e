"""Every line a full daemon run writes is a JSON line, and none carries a secret or personal data.

The run has the bot token in its environment, an LLM API key, webhook and slash tokens, debug
logging, and a session that exercises every door: remembers holding a phone number and an e-mail
address, search, a question, an LLM that rejects the key, outgoing-webhook and slash requests
(with good and bad tokens, in the body and in an Authorization header), 429s from the server, a
dropped socket, then SIGTERM. Then each line of daemon.log is read and searched for those values.
"""

from __future__ import annotations

import json
import secrets
import uuid
from pathlib import Path

import httpx

from mchat_bot.devserver import DevServer
from mchat_bot.devserver.fake_llm import FakeLLM
from tests.support.daemon import DaemonProcess

PHONE = "010-4821-9375"
EMAIL = "jiyoung.park@factory-example.co.kr"


async def test_no_secret_or_personal_data_on_any_log_line(tmp_path: Path) -> None:
    api_key = "sk-live-" + secrets.token_hex(20)
    outgoing_token = secrets.token_hex(13)
    slash_token = secrets.token_hex(13)
    async with DevServer() as dev, FakeLLM() as llm:
        env = {
            "MCHAT_LLM_API_KEY": api_key,
            "MCHAT_WEBHOOKS_OUTGOING_TOKENS": outgoing_token,
            "MCHAT_WEBHOOKS_SLASH_TOKENS": slash_token,
            "MCHAT_LOG_LEVEL": "debug",
        }
        bot = DaemonProcess(dev, llm, tmp_path, env)
        await bot.start()
        base = await bot.http_url()
        qa = dev.seed.channels["qa"]
        kim = dev.seed.users["kim"]

        _, saved = await bot.ask("kim", "qa", f"@ai remember 박지영 대리 연락처 {PHONE}, 메일 {EMAIL}")
        assert PHONE not in saved  # masked before storing
        await bot.ask("kim", "dm", f"remember my contact is {EMAIL} / {PHONE}")
        await bot.ask("lee", "qa", f"@ai search {PHONE}")
        await bot.ask("lee", "qa", f"@ai 박지영 대리 연락처 {EMAIL} 맞아?")
        llm.fail_next(1, status=401)  # the provider rejects the key: the error path logs too
        await bot.ask("lee", "qa", "@ai 내일 회의는 몇 시?")

        async with httpx.AsyncClient(timeout=30) as c:
            post = await dev.user_post("kim", qa, f"ask 연락처 {PHONE}")
            hook = {
                "token": outgoing_token,
                "channel_id": qa,
                "channel_name": "qa",
                "team_id": dev.seed.team_id,
                "user_id": kim.id,
                "user_name": "kim",
                "post_id": post["id"],
                "text": f"@ai search {EMAIL}",
                "trigger_word": "@ai",
            }
            r = await c.post(f"{base}/mattermost/outgoing", json=hook)
            assert r.status_code == 200, r.text
            r = await c.post(f"{base}/mattermost/outgoing", json=hook | {"token": outgoing_token[::-1]})
            assert r.status_code == 401
            slash = {"channel_id": qa, "user_id": kim.id, "command": "/search", "text": PHONE}
            r = await c.post(f"{base}/mattermost/slash", data=slash | {"token": slash_token})
            assert r.status_code == 200, r.text
            r = await c.post(
                f"{base}/mattermost/slash", data=slash, headers={"Authorization": f"Token {slash_token}"}
            )
            assert r.status_code == 200, r.text
            r = await c.post(f"{base}/mattermost/slash", data=slash | {"token": f"{slash_token}x"})
            assert r.status_code == 401
            assert (await c.get(f"{base}/metrics")).status_code == 200

        dev.faults.rate_limit(True, per_sec=2, burst=1)
        try:
            posts = [await dev.user_post("kim", qa, f"@ai help {uuid.uuid4().hex[:6]}") for _ in range(3)]
            for p in posts:
                await bot.replies_to(p, timeout=30)
        finally:
            dev.faults.rate_limit(False)
        # the bot paces itself to the limiter's headers, so a retry is made sure of: two failed posts
        dev.faults.fail_posts(2, status=503)
        await bot.ask("kim", "qa", f"@ai help {uuid.uuid4().hex[:6]}", timeout=30)
        dev.faults.drop_sockets()
        await bot.ask("kim", "qa", f"@ai search {EMAIL}", timeout=60)
        assert await bot.stop() == 0, bot.log_tail()

    lines = bot.log_path.read_text(encoding="utf-8").splitlines()
    assert len(lines) > 50, "the run logged too little to prove anything"
    forbidden = {
        "bot token": dev.seed.bot.token,
        "LLM API key": api_key,
        "outgoing webhook token": outgoing_token,
        "slash token": slash_token,
        "phone number": PHONE,
        "phone digits": PHONE.replace("-", ""),
        "e-mail address": EMAIL,
    }
    events = set()
    for n, line in enumerate(lines, 1):
        for what, secret in forbidden.items():
            assert secret not in line, f"daemon.log line {n} carries the {what}: {line[:300]}"
        event = json.loads(line)  # every line is structured: nothing bypassed the redacting formatter
        assert event.get("service") == "mchat-bot", line[:300]
        events.add(event.get("event"))
    # the session really went through the paths that handle the secrets
    assert {"http_listening", "ready", "handled", "replied", "memory.sensitive_found"} <= events
    assert "http.bad_token" in events and "mattermost.rest.retry" in events
