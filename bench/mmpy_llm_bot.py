"""mmpy_bot 2.2.1 with a minimal plugin that calls the (fake) LLM and replies in the thread.

Runs in bench/.mmpy-venv (made by bench/run.py), never in the project's venv:

    MMPY_URL=http://127.0.0.1:PORT MMPY_TOKEN=... MMPY_LLM=http://127.0.0.1:PORT/v1 \
        bench/.mmpy-venv/bin/python bench/mmpy_llm_bot.py

The plugin is what a user of mmpy_bot would write: an async listener on every mention, one chat
completion through aiohttp, then `driver.reply_to` (the reply carries `props.mchat_reply_to` so the dev
server times it the same way as the daemon's). No durable queue, no retrieval.
"""

from __future__ import annotations

import logging
import os
from urllib.parse import urlsplit

import aiohttp
from mmpy_bot import Bot, Message, Plugin, Settings, listen_to


class LLMReply(Plugin):
    """Answers every mention with one LLM call."""

    session: aiohttp.ClientSession | None = None

    @listen_to(".+", needs_mention=True)
    async def answer(self, message: Message) -> None:
        if self.session is None:
            self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        body = {
            "model": "fake",
            "messages": [
                {"role": "system", "content": "You are a helpful team assistant."},
                {"role": "user", "content": message.text},
            ],
        }
        async with self.session.post(f"{os.environ['MMPY_LLM']}/chat/completions", json=body) as r:
            data = await r.json()
        text = data["choices"][0]["message"]["content"]
        self.driver.reply_to(message, text, props={"mchat_reply_to": message.id})


def main() -> None:
    url = urlsplit(os.environ["MMPY_URL"])
    settings = Settings(
        MATTERMOST_URL=f"{url.scheme}://{url.hostname}",
        MATTERMOST_PORT=url.port or 80,
        BOT_TOKEN=os.environ["MMPY_TOKEN"],
        BOT_TEAM="mchat",
        SSL_VERIFY=False,
        LOG_LEVEL=logging.WARNING,
    )
    Bot(settings=settings, plugins=[LLMReply()]).run()


if __name__ == "__main__":
    main()
