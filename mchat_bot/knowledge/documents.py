"""What is indexed for one chat message: the speaker, the date and its neighbours as context."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

CONTEXT_CHARS = 300  # per neighbour; e5-small reads 512 tokens, the message itself comes first


@dataclass(frozen=True, slots=True)
class ChatLine:
    post_id: str
    channel_id: str
    user_name: str
    text: str
    create_at: float  # epoch seconds
    root_id: str = ""


def index_text(
    line: ChatLine, before: Sequence[ChatLine], after: Sequence[ChatLine], tz: tzinfo | None = None
) -> str:
    """``Speaker (8 May 2023): text`` then the neighbours, each cut to CONTEXT_CHARS."""
    day = datetime.fromtimestamp(line.create_at, tz or UTC).strftime("%-d %B %Y")
    parts = [f"{line.user_name or '?'} ({day}): {line.text}"]
    for other in [*before, *after]:
        parts.append(f"{other.user_name or '?'}: {other.text[:CONTEXT_CHARS]}")
    return "\n".join(parts)
