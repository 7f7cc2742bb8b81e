"""The door-independent message every door hands to the pipeline, and the typed reply it comes back as."""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass
from typing import Any, Literal

from mchat_bot.pipeline.buttons import Button

ChannelType = Literal["O", "P", "D", "G"]


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """One user post the bot may have to answer, as the pipeline sees it.

    It carries only what routing, memory scoping and replying need, so the pipeline
    never depends on the shape of a Mattermost frame.
    """

    post_id: str
    channel_id: str
    channel_type: ChannelType
    channel_name: str
    team_id: str  # "" for DM/GM
    user_id: str
    user_name: str  # without the leading "@"
    message: str
    root_id: str = ""  # "" when the post is a thread root
    create_at: int = 0  # ms since the epoch
    door: str = "websocket"
    from_bot: bool = False
    from_webhook: bool = False
    post_type: str = ""  # "" for user posts, "system_*" for system messages
    # False when a door made this message without a post on the server (an outgoing-webhook body
    # with no post_id, a slash command): there is no thread to answer in, only the channel
    has_post: bool = True
    # True when the answer is shown to the asker alone (a slash command's ephemeral response)
    private_reply: bool = False

    @property
    def thread_root(self) -> str:
        """The id a reply must use as root_id (the server rejects a root_id that is itself a reply);
        "" (the channel itself) when there is no post to answer under."""
        return self.root_id or (self.post_id if self.has_post else "")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IncomingMessage:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


class Outcome(enum.Enum):
    """What a handled message came to; the steps choose reactions, audit rows and metrics by it."""

    ANSWERED = "answered"  # a question answered (by the LLM or from the memories alone)
    STORED = "stored"  # a memory (or file pieces) remembered
    KNOWN = "known"  # remember: the same fact was already there, nothing stored
    LISTED = "listed"  # memories, search or history shown
    FORGOTTEN = "forgotten"
    NOTHING_FOUND = "nothing_found"  # forget/history: no such memory, or only candidates shown
    REFUSED = "refused"  # not allowed (team scope, sensitive data) or a usage hint
    HELP = "help"
    LLM_FAILED = "llm_failed"  # an apology: the model could not answer
    FAILED = "failed"  # an apology: the store or another part failed
    IGNORED = "ignored"  # not addressed to us, or the channel is off: nothing to post
    RESENT = "resent"  # a reply saved by an earlier attempt, sent again (its outcome was not kept)

    @property
    def is_failure(self) -> bool:
        return self in (Outcome.LLM_FAILED, Outcome.FAILED)


@dataclass(frozen=True, slots=True)
class Reply:
    """A handler's answer: the text to post and what happened, with the memory ids it showed or touched."""

    text: str
    outcome: Outcome
    memory_ids: tuple[str, ...] = ()  # added, deleted, superseded, then shown; each once
    saved_scopes: tuple[str, ...] = ()  # one scope per memory stored (for the saved-memories metric)
    # what only the asker may read (memories others in the channel may not see): shown to them
    # alone, never in ``text``; ``private_fallback`` is posted instead when that cannot be done
    private: str = ""
    private_fallback: str = ""
    file_ids: tuple[str, ...] = ()  # uploaded files the first part carries (an export)
    buttons: tuple[Button, ...] = ()  # interactive buttons under the first part (when the daemon has a URL)

    @classmethod
    def nothing(cls) -> Reply:
        return cls("", Outcome.IGNORED)

    def saved_form(self) -> str:
        """What the inbox keeps for a retry: the text, with what else a retry must keep when there
        is any (the file ids: never the text without the file it is about; a failure's outcome: an
        apology sent again still gets ⚠️, not ✅; the buttons: a reply sent again after a failed send
        or a crash still offers Undo, signed anew when it is posted)."""
        if not self.file_ids and not self.outcome.is_failure and not self.buttons:
            return self.text
        fields: dict[str, Any] = {
            "text": self.text,
            "file_ids": list(self.file_ids),
            "outcome": self.outcome.value,
        }
        if self.buttons:
            fields["buttons"] = [asdict(b) for b in self.buttons]
        return SAVED_WITH_FIELDS + json.dumps(fields, ensure_ascii=False)

    @classmethod
    def from_saved(cls, saved: str) -> Reply:
        if not saved.startswith(SAVED_WITH_FIELDS):
            return cls(saved, Outcome.RESENT)
        data = json.loads(saved[len(SAVED_WITH_FIELDS) :])
        try:
            outcome = Outcome(data.get("outcome", ""))
        except ValueError:
            outcome = Outcome.RESENT
        if not outcome.is_failure:
            outcome = Outcome.RESENT
        return cls(
            str(data["text"]),
            outcome,
            file_ids=tuple(map(str, data.get("file_ids") or ())),
            buttons=tuple(_saved_button(b) for b in data.get("buttons") or ()),
        )

    @property
    def empty(self) -> bool:
        return not self.text.strip()

    def plus(self, other: Reply, sep: str = "\n\n") -> Reply:
        """Both texts, both sets of ids, both files; the outcome stays this one's unless it was empty."""
        text = f"{self.text}{sep}{other.text}" if self.text and other.text else self.text or other.text
        return Reply(
            text,
            self.outcome if not self.empty else other.outcome,
            unique(*self.memory_ids, *other.memory_ids),
            (*self.saved_scopes, *other.saved_scopes),
            "\n\n".join(t for t in (self.private, other.private) if t),
            self.private_fallback or other.private_fallback,
            unique(*self.file_ids, *other.file_ids),
            (*self.buttons, *other.buttons),
        )


SAVED_WITH_FIELDS = "\x1e"  # a record separator: no reply text starts with one


def unique(*ids: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(i for i in ids if i))


def _saved_button(data: dict[str, Any]) -> Button:
    """A button as ``Reply.saved_form`` kept it (its tuples came back as JSON lists)."""
    return Button(
        kind=str(data["kind"]),
        label=str(data["label"]),
        memory_ids=tuple(map(str, data.get("memory_ids") or ())),
        user_id=str(data.get("user_id", "")),
        style=str(data.get("style", "default")),
        extra=tuple((str(k), str(v)) for k, v in data.get("extra") or ()),
    )
