"""`mchat-bot demo`: the dev server, the fake LLM and the real daemon, and a short conversation.

The daemon runs as its own process with a temporary config, exactly as `mchat-bot run` would
(``devserver/daemon.py``, the harness the tests use too); the script posts as users through the dev
server and prints each answer from the thread.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from mchat_bot.devserver import DevServer
from mchat_bot.devserver.daemon import replies_to, start_daemon, stop_daemon, wait_ready, write_config
from mchat_bot.devserver.fake_llm import FakeLLM

SCRIPT: list[tuple[str, str, str]] = [
    ("kim", "qa", "@ai remember X부품 불량률 12%"),
    ("kim", "qa", "@ai remember The release freeze for line 3 starts on December 1."),
    ("lee", "qa", "@ai search 불량률"),
    ("kim", "qa", "@ai 오늘 X부품 불량률 어때?"),
    ("lee", "qa", "@ai when does the release freeze start?"),
    ("kim", "qa", "@ai forget X부품"),
]


async def ask(dev: DevServer, user: str, channel_id: str, text: str) -> list[dict[str, Any]]:
    return await replies_to(dev, await dev.user_post(user, channel_id, text))


def _show(name: str, text: str, indent: str = "") -> None:
    lines = text.splitlines() or [""]
    print(f"{indent}{name}: {lines[0]}")
    pad = " " * (len(indent) + len(name) + 2)
    for line in lines[1:]:
        print(f"{pad}{line}")


async def run_demo() -> int:
    with tempfile.TemporaryDirectory(prefix="mchat-demo-") as tmp:
        folder = Path(tmp)
        async with DevServer() as dev, FakeLLM() as llm:
            config = write_config(folder, dev.url, llm.url)
            log_path = folder / "daemon.log"
            proc = await start_daemon(config, dev.seed.bot.token, log_path)
            try:
                print(f"dev server {dev.url}, fake LLM {llm.url}, daemon pid {proc.pid}")
                await wait_ready(dev, proc)
                print("the daemon is up and answering\n")
                print("#품질검사 (qa)")
                for user, channel, text in SCRIPT:
                    if text.endswith("forget X부품"):
                        replies = await ask(dev, user, dev.seed.channels[channel], text)
                        _show(user, text)
                        _show("AI Memory Bot", replies[0]["message"], "  └ ")
                        ids = re.findall(r"`([0-9A-Za-z]{6,})`", replies[0]["message"])
                        if not ids:
                            break
                        text = f"@ai 삭제 {ids[0]}"
                    replies = await ask(dev, user, dev.seed.channels[channel], text)
                    _show(user, text)
                    _show("AI Memory Bot", replies[0]["message"], "  └ ")
                    print()
            except (TimeoutError, RuntimeError):
                print("the daemon did not answer in time; its log:", file=sys.stderr)
                print(log_path.read_text(errors="replace")[-4000:], file=sys.stderr)
                await stop_daemon(proc)
                return 1
            code = await stop_daemon(proc)
            print(f"daemon stopped with exit code {code}")
            return 0 if code == 0 else 1
