"""Button contexts: signed, so a click cannot be forged or changed; good for a week; rendered as
Mattermost message attachments pointing at the daemon's action door."""

from __future__ import annotations

import asyncio

import pytest

from mchat_bot.pipeline.buttons import ActionSigner, Button, ButtonMaker, Click, new_key, stored_key
from mchat_bot.storage import Storage

KEY = new_key()
UNDO = Button("undo", "Undo", ("m1",), user_id="u_kim")


def test_a_context_verifies_to_what_the_button_said() -> None:
    signer = ActionSigner(KEY)
    click = signer.verify(signer.context(UNDO, "c1", now=1000.0), now=1001.0)
    assert click == Click("undo", ("m1",), "u_kim", "c1", {})


@pytest.mark.parametrize(
    "change",
    [
        {"kind": "forget"},
        {"memory_ids": ["m2"]},
        {"user_id": "u_lee"},
        {"channel_id": "c2"},
        {"expires": 10**12},
        {"sig": "0" * 64},
        {"extra": {"a": "b"}},
    ],
)
def test_any_change_to_a_context_makes_it_forged(change: dict[str, object]) -> None:
    signer = ActionSigner(KEY)
    context = signer.context(UNDO, "c1")
    assert signer.verify({**context, **change}) == "forged"


def test_another_daemons_key_and_bad_shapes_are_forged() -> None:
    context = ActionSigner(new_key()).context(UNDO, "c1")
    signer = ActionSigner(KEY)
    assert signer.verify(context) == "forged"
    assert (
        signer.verify(None) == "forged" and signer.verify("x") == "forged" and signer.verify({}) == "forged"
    )


def test_an_old_context_is_expired() -> None:
    signer = ActionSigner(KEY, ttl=60)
    assert signer.verify(signer.context(UNDO, "c1", now=0.0), now=61.0) == "expired"


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        ActionSigner("short")


def test_attachments_point_at_the_action_door_with_unique_alphanumeric_ids() -> None:
    maker = ButtonMaker("https://bot.example.com/", ActionSigner(KEY))
    [attachment] = maker.attachments([UNDO, Button("forget", "Forget 1", ("m2",))], "c1")
    ids = [a["id"] for a in attachment["actions"]]
    assert len(set(ids)) == 2 and all(i.isalnum() for i in ids)
    assert {a["integration"]["url"] for a in attachment["actions"]} == {
        "https://bot.example.com/mattermost/actions"
    }
    assert maker.attachments([], "c1") == []


async def test_replies_carry_buttons_only_where_the_daemon_has_an_action_door(store) -> None:
    from mchat_bot.pipeline.handlers import Handlers
    from tests.support.factories import BOT, SITE, answer

    with_door = Handlers(store, None, BOT, SITE, buttons=True)
    saved = await answer(with_door, "@ai remember the release is on Friday", user="u_kim")
    [undo] = saved.buttons
    assert undo.kind == "undo" and undo.user_id == "u_kim" and undo.memory_ids == saved.memory_ids[:1]
    without = Handlers(store, None, BOT, SITE)
    assert (await answer(without, "@ai remember the office moves in March", user="u_kim")).buttons == ()
    assert (await answer(without, "@ai forget release")).buttons == ()
    offered = await answer(with_door, "@ai forget release")
    assert [b.kind for b in offered.buttons] == ["forget"]


async def test_daemons_starting_together_on_one_state_share_one_key(storage: Storage) -> None:
    first, second = await asyncio.gather(stored_key(storage), stored_key(storage))
    assert first == second == await stored_key(storage)
