"""The reader rule: what the bot may post where, given who reads it there.

Search filters by what the *asker* may see (``store.visibility_clauses``); a post is read by every
member of the channel, so what is posted must also be visible to each of them. One function,
:func:`may_post`, decides it for the answer, search, list, history and forget paths alike; what it
refuses goes to the asker alone (an ephemeral post, or their DM with the bot).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from mchat_bot.memory.store import Memory

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Readers:
    """Who reads a post in one place.

    ``only_user``: the one human who reads it, when there is exactly one (the asker's 1:1 DM with the
    bot, or an answer shown only to the asker); "" when others may read it.
    ``guests``: a guest account is among the readers (guests see no team memories).
    """

    channel_id: str
    team_id: str
    only_user: str = ""
    guests: bool = False


def may_post(memory: Memory, readers: Readers) -> bool:
    """May every reader of this place see ``memory``?

    - a channel memory: only in its own channel (where every member may see it);
    - a personal memory: only where its author is the only human reader;
    - a team memory: in the team's channels, unless a guest reads there.
    """
    if memory.scope == "channel":
        return bool(memory.channel_id) and memory.channel_id == readers.channel_id
    if memory.scope == "user":
        return bool(memory.user_id) and memory.user_id == readers.only_user
    if memory.scope == "team":
        return bool(memory.team_id) and memory.team_id == readers.team_id and not readers.guests
    return False


def split_postable(
    items: Iterable[T], readers: Readers, memory_of: Callable[[T], Memory]
) -> tuple[list[T], list[T]]:
    """(what may be posted here, what only the asker may be shown), each in the given order."""
    postable: list[T] = []
    withheld: list[T] = []
    for item in items:
        (postable if may_post(memory_of(item), readers) else withheld).append(item)
    return postable, withheld
