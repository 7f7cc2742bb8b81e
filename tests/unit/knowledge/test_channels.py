"""Which channels learn, on SQLite and PostgreSQL: the operator's list, "*", and what channel admins
turned on or off, kept across a restart (a new LearningChannels on the same database)."""

from __future__ import annotations

import pytest

from mchat_bot.knowledge.channels import LearningChannels
from mchat_bot.storage import Storage

pytestmark = pytest.mark.both_dialects


async def test_configured_ids_learn_in_public_and_private_channels_only(storage: Storage) -> None:
    ch = await LearningChannels(storage, [" c1 ", "c2", ""]).load()
    assert ch.learns("c1") and ch.learns("c1", "P") and ch.learns("c2", "O")
    assert not ch.learns("c3")
    assert not ch.learns("c1", "D") and not ch.learns("c1", "G")
    assert ch.any and not ch.every


async def test_nothing_configured_learns_nothing(storage: Storage) -> None:
    ch = await LearningChannels(storage, []).load()
    assert not ch.any and not ch.learns("c1")


async def test_star_learns_every_public_and_private_channel_but_never_dms_or_group_dms(
    storage: Storage,
) -> None:
    ch = await LearningChannels(storage, ["*"]).load()
    assert ch.every and ch.any
    assert ch.learns("anything", "O") and ch.learns("whatever", "P")
    assert not ch.learns("dm", "D") and not ch.learns("gm", "G")


async def test_turn_off_over_star_sticks_across_a_reload(storage: Storage) -> None:
    ch = await LearningChannels(storage, ["*"]).load()
    assert await ch.turn_off("c1", "u-admin") is True  # it learned (by "*")
    assert not ch.learns("c1") and ch.learns("c2")
    assert await ch.turn_off("c1", "u-admin") is False  # already off
    reloaded = await LearningChannels(storage, ["*"]).load()
    assert not reloaded.learns("c1") and reloaded.learns("c2")


async def test_turn_off_over_the_operators_list_sticks_too(storage: Storage) -> None:
    ch = await LearningChannels(storage, ["c1"]).load()
    await ch.turn_off("c1", "u-admin")
    assert not (await LearningChannels(storage, ["c1"]).load()).learns("c1")


async def test_turn_on_persists_across_a_reload_and_undoes_a_turn_off(storage: Storage) -> None:
    ch = await LearningChannels(storage).load()
    assert not ch.any
    assert await ch.turn_on("c1", "t1", "품질검사", "u-admin") is True
    assert await ch.turn_on("c1", "t1", "품질검사", "u-admin") is False  # already on
    assert ch.learns("c1") and ch.any and not ch.learns("c1", "D")
    reloaded = await LearningChannels(storage).load()
    assert reloaded.learns("c1") and reloaded.any and not reloaded.learns("c2")
    await reloaded.turn_off("c1", "u-admin")
    await reloaded.turn_on("c1", "t1", "품질검사", "u-other")
    again = await LearningChannels(storage).load()
    assert again.learns("c1")
    state = await again.get("c1")
    assert state is not None and state.enabled_by == "u-other"


async def test_get_describes_a_channel_turned_on(storage: Storage) -> None:
    ch = await LearningChannels(storage).load()
    assert await ch.get("c1") is None
    await ch.turn_on("c1", "t1", "품질검사", "u-admin")
    state = await ch.get("c1")
    assert state is not None
    assert (state.channel_id, state.team_id, state.channel_name, state.enabled_by) == (
        "c1",
        "t1",
        "품질검사",
        "u-admin",
    )
    assert state.enabled_at > 0 and state.backfilled_to == 0


async def test_backfill_cursor_done_and_pending(storage: Storage) -> None:
    ch = await LearningChannels(storage).load()
    await ch.turn_on("c1", "t1", "품질검사", "u-admin")
    assert await ch.pending_backfills() == ["c1"]
    await ch.set_backfill_cursor("c1", "post-oldest", 1_700_000_000_000)
    state = await ch.get("c1")
    assert state is not None
    assert (state.backfill_before, state.backfilled_to, state.backfill_done) == (
        "post-oldest",
        1_700_000_000_000,
        False,
    )
    assert state.channel_name == "품질검사"  # the cursor leaves the rest alone
    reloaded = await LearningChannels(storage).load()
    resumed = await reloaded.get("c1")
    assert resumed is not None and resumed.backfill_before == "post-oldest"
    await ch.set_backfill_done("c1")
    done = await ch.get("c1")
    assert done is not None and done.backfill_done and done.backfill_before == ""
    assert await ch.pending_backfills() == []
    # off forgets the cursor; on again reads the history afresh
    await ch.turn_off("c1", "u-admin")
    off = await ch.get("c1")
    assert off is not None and (off.backfill_before, off.backfilled_to, off.backfill_done) == ("", 0, False)
    assert await ch.pending_backfills() == []  # not learning: nothing to read
    await ch.turn_on("c1", "t1", "품질검사", "u-admin")
    assert await ch.pending_backfills() == ["c1"]


async def test_the_progress_line_is_kept_until_learning_is_turned_off(storage: Storage) -> None:
    channels = await LearningChannels(storage).load()
    assert await channels.progress_line("c1") == ("", "")
    await channels.set_progress_line("c1", "", "ko")  # asked in Korean, nothing posted yet
    assert await (await LearningChannels(storage).load()).progress_line("c1") == ("", "ko")
    await channels.set_progress_line("c1", "p1", "ko")
    assert await channels.progress_line("c1") == ("p1", "ko")
    await channels.turn_off("c1", "u1")  # turned on again later: a new backfill, a new line
    assert await channels.progress_line("c1") == ("", "")
