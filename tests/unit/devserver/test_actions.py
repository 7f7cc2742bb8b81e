"""The dev server's interactive buttons, as Mattermost does them, over real sockets: action ids given,
the integration kept from clients, the click relayed to the integration with the real payload, and
its update / ephemeral answer applied."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiohttp import web

from mchat_bot.devserver import DevServer

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def dev() -> AsyncIterator[DevServer]:
    async with DevServer(port=0) as d:
        yield d


class Integration:
    """An HTTP endpoint standing in for the bot's action door: records requests, answers ``answer``."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.answer: dict[str, Any] | None = {}
        self.status = 200
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> Integration:
        app = web.Application()
        app.router.add_post("/act", self._act)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/act"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _act(self, request: web.Request) -> web.Response:
        self.requests.append(await request.json())
        return web.json_response(self.answer, status=self.status)


def headers(dev: DevServer, user: str) -> dict[str, str]:
    token = dev.seed.bot.token if user == "bot" else dev.seed.users[user].token
    return {"Authorization": f"Bearer {token}"}


async def bot_post_with_button(dev: DevServer, url: str) -> dict[str, Any]:
    props = {
        "attachments": [
            {
                "text": "",
                "actions": [
                    {"name": "Undo", "type": "button", "integration": {"url": url, "context": {"k": 1}}}
                ],
            }
        ]
    }
    async with httpx.AsyncClient(base_url=dev.url, timeout=10) as http:
        r = await http.post(
            "/api/v4/posts",
            json={"channel_id": dev.seed.channels["qa"], "message": "saved", "props": props},
            headers=headers(dev, "bot"),
        )
    assert r.status_code == 201, r.text
    return dict(r.json())


def actions(post: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for att in post["props"].get("attachments", []) for a in att.get("actions", [])]


async def test_actions_get_ids_and_clients_never_see_the_integration(dev: DevServer) -> None:
    async with Integration() as hook:
        created = await bot_post_with_button(dev, hook.url)
        [action] = actions(created)
        assert action["id"] and "integration" not in action
        async with httpx.AsyncClient(base_url=dev.url, timeout=10) as http:
            got = (await http.get(f"/api/v4/posts/{created['id']}", headers=headers(dev, "kim"))).json()
            thread = (
                await http.get(f"/api/v4/posts/{created['id']}/thread", headers=headers(dev, "kim"))
            ).json()
        assert "integration" not in actions(got)[0]
        assert "integration" not in actions(thread["posts"][created["id"]])[0]
        assert (
            actions(dev.store.posts[created["id"]])[0]["integration"]["url"] == hook.url
        )  # kept server-side


async def test_a_click_sends_the_real_payload_and_applies_the_answer(dev: DevServer) -> None:
    async with Integration() as hook:
        created = await bot_post_with_button(dev, hook.url)
        [action] = actions(created)
        hook.answer = {
            "update": {"message": "undone", "props": {"attachments": []}},
            "ephemeral_text": "done!",
        }
        async with httpx.AsyncClient(base_url=dev.url, timeout=10) as http:
            r = await http.post(
                f"/api/v4/posts/{created['id']}/actions/{action['id']}", json={}, headers=headers(dev, "kim")
            )
        assert r.status_code == 200 and r.json()["status"] == "OK" and r.json()["trigger_id"]
        [sent] = hook.requests
        kim = dev.seed.users["kim"]
        assert {k: sent[k] for k in ("user_id", "user_name", "post_id", "channel_id", "team_id", "type")} == {
            "user_id": kim.id,
            "user_name": "kim",
            "post_id": created["id"],
            "channel_id": dev.seed.channels["qa"],
            "team_id": dev.seed.team_id,
            "type": "button",
        }
        assert sent["context"] == {"k": 1} and sent["channel_name"] == "qa" and sent["trigger_id"]
        stored = dev.store.posts[created["id"]]
        assert stored["message"] == "undone" and stored["props"]["attachments"] == []
        assert stored["props"]["from_bot"] == "true"  # kept, as the server does
        [eph] = [e for e in dev.rest.posts.ephemeral if e["to_user_id"] == kim.id]
        assert eph["message"] == "done!" and eph["root_id"] == created["id"]


async def test_an_update_without_props_keeps_the_buttons(dev: DevServer) -> None:
    async with Integration() as hook:
        created = await bot_post_with_button(dev, hook.url)
        hook.answer = {"update": {"message": "one done"}}
        async with httpx.AsyncClient(base_url=dev.url, timeout=10) as http:
            r = await http.post(
                f"/api/v4/posts/{created['id']}/actions/{actions(created)[0]['id']}",
                headers=headers(dev, "kim"),
            )
        assert r.status_code == 200
        stored = dev.store.posts[created["id"]]
        assert stored["message"] == "one done" and actions(stored)[0]["integration"]["url"] == hook.url


@pytest.mark.parametrize(
    ("who", "action_id", "status", "hook_status"),
    [
        ("kim", "nosuchaction", 404, 200),  # no such action on the post
        ("park", "", 403, 200),  # park is not in #qa... (set below)
        ("kim", "", 400, 500),  # the integration answered 500
    ],
)
async def test_refusals(dev: DevServer, who: str, action_id: str, status: int, hook_status: int) -> None:
    async with Integration() as hook:
        created = await bot_post_with_button(dev, hook.url)
        hook.status = hook_status
        if who == "park":
            dev.store.channels[dev.seed.channels["qa"]].members.pop(dev.seed.users["park"].id, None)
        async with httpx.AsyncClient(base_url=dev.url, timeout=10) as http:
            r = await http.post(
                f"/api/v4/posts/{created['id']}/actions/{action_id or actions(created)[0]['id']}",
                content=json.dumps({}),
                headers=headers(dev, who),
            )
        assert r.status_code == status, r.text
        assert dev.store.posts[created["id"]]["message"] == "saved"
