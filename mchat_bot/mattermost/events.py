"""Typed Mattermost WebSocket frames.

Every frame from the server goes through :func:`parse_frame`, which either returns a typed, frozen
object or raises :class:`FrameError`. Nothing else escapes, so the gateway can skip a bad frame and
keep the socket. Payload values that are JSON inside a string (``data.post``, ``data.mentions``) are
decoded a second time here, so no other module ever sees the double encoding.

JSON is read with orjson: every event of every channel the bot is in passes here (thousands a
second on a busy server), and orjson reads a posted frame and its post in a quarter of the time of
the standard library, rejecting what the protocol never sends (NaN, lone surrogates, invalid UTF-8).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, cast

import orjson

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "ActionReply",
    "ChannelType",
    "Event",
    "Frame",
    "FrameError",
    "Hello",
    "OtherEvent",
    "Post",
    "Posted",
    "parse_channel_type",
    "parse_frame",
]

DEFAULT_MAX_FRAME_BYTES = 1_048_576
ChannelType = Literal["O", "P", "D", "G"]  # open, private, direct, group
_CHANNEL_TYPES = frozenset({"O", "P", "D", "G"})


class FrameError(ValueError):
    """A frame (or a post inside one) that is not what the protocol promises."""


# --- small typed accessors: each raises FrameError, never KeyError/TypeError ----------------------


def _obj(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FrameError(f"{what} must be an object, got {type(value).__name__}")
    return cast(dict[str, Any], value)


def _req_str(d: Mapping[str, Any], key: str, what: str, *, non_empty: bool = False) -> str:
    if key not in d:
        raise FrameError(f"{what}.{key} is missing")
    value = d[key]
    if not isinstance(value, str):
        raise FrameError(f"{what}.{key} must be a string")
    if non_empty and not value:
        raise FrameError(f"{what}.{key} must not be empty")
    return value


def _opt_str(d: Mapping[str, Any], key: str, what: str) -> str:
    """Optional string; absent or null means "" (servers omit empty fields)."""
    value = d.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise FrameError(f"{what}.{key} must be a string")
    return value


def _as_int(value: object, name: str) -> int:
    # bool is an int subclass in Python but never a valid number on the wire.
    if isinstance(value, bool):
        raise FrameError(f"{name} must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)  # some encoders write 1.7e12 for large ints
    raise FrameError(f"{name} must be an integer")


def _req_int(d: Mapping[str, Any], key: str, what: str) -> int:
    if key not in d:
        raise FrameError(f"{what}.{key} is missing")
    return _as_int(d[key], f"{what}.{key}")


def _opt_int(d: Mapping[str, Any], key: str, what: str) -> int:
    value = d.get(key)
    if value is None:
        return 0
    return _as_int(value, f"{what}.{key}")


def _loads(text: str | bytes, what: str) -> Any:
    try:
        return orjson.loads(text)
    except (ValueError, RecursionError) as exc:  # orjson.JSONDecodeError is a ValueError
        raise FrameError(f"{what} is not valid JSON: {exc.__class__.__name__}") from None


def _maybe_json(value: object, what: str) -> Any:
    """A value the server sends as a JSON string; tolerate an already-decoded one."""
    if isinstance(value, str):
        return _loads(value, what)
    return value


# --- the typed objects ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Post:
    """The fields of a Mattermost Post the bot uses; the rest of the post is ignored."""

    id: str
    create_at: int
    update_at: int
    edit_at: int
    delete_at: int
    user_id: str
    channel_id: str
    root_id: str
    original_id: str
    message: str
    type: str
    props: Mapping[str, Any] = field(default_factory=dict, hash=False)
    file_ids: tuple[str, ...] = ()
    pending_post_id: str = ""

    @classmethod
    def from_dict(cls, value: object) -> Post:
        """Build a Post from decoded JSON (a frame's ``data.post`` or a REST response).

        Every post the bot sees passes here, so the usual shape (every field of its type, as the
        server writes it) is taken in one test; anything else goes through the field-by-field
        checks, which say what is wrong."""
        d = _obj(value, "post")
        get = d.get
        post_id, channel_id, user_id = get("id"), get("channel_id"), get("user_id")
        create_at, update_at = get("create_at"), get("update_at", 0)
        edit_at, delete_at = get("edit_at", 0), get("delete_at", 0)
        root_id, original_id = get("root_id", ""), get("original_id", "")
        message, kind, pending = get("message", ""), get("type", ""), get("pending_post_id", "")
        props, file_ids = get("props"), get("file_ids")
        if (
            type(post_id) is str
            and post_id
            and type(channel_id) is str
            and channel_id
            and type(user_id) is str
            and type(create_at) is int
            and type(update_at) is int
            and type(edit_at) is int
            and type(delete_at) is int
            and type(root_id) is str
            and type(original_id) is str
            and type(message) is str
            and type(kind) is str
            and type(pending) is str
            and (props is None or type(props) is dict)
            and (file_ids is None or (type(file_ids) is list and all(type(f) is str for f in file_ids)))
        ):
            return cls(
                post_id,
                create_at,
                update_at or create_at,
                edit_at,
                delete_at,
                user_id,
                channel_id,
                root_id,
                original_id,
                message,
                kind,
                props if props is not None else {},
                tuple(file_ids) if file_ids else (),
                pending,
            )
        return cls._checked(d)

    @classmethod
    def _checked(cls, d: dict[str, Any]) -> Post:
        props = d.get("props")
        if props is None:
            props = {}
        props = _obj(props, "post.props")
        file_ids_raw = d.get("file_ids")
        if file_ids_raw is None:
            file_ids_raw = []
        if not isinstance(file_ids_raw, list) or not all(isinstance(f, str) for f in file_ids_raw):
            raise FrameError("post.file_ids must be a list of strings")
        create_at = _req_int(d, "create_at", "post")
        return cls(
            id=_req_str(d, "id", "post", non_empty=True),
            create_at=create_at,
            update_at=_opt_int(d, "update_at", "post") or create_at,
            edit_at=_opt_int(d, "edit_at", "post"),
            delete_at=_opt_int(d, "delete_at", "post"),
            user_id=_req_str(d, "user_id", "post"),
            channel_id=_req_str(d, "channel_id", "post", non_empty=True),
            root_id=_opt_str(d, "root_id", "post"),
            original_id=_opt_str(d, "original_id", "post"),
            message=_opt_str(d, "message", "post"),
            type=_opt_str(d, "type", "post"),
            props=props,
            file_ids=tuple(file_ids_raw),
            pending_post_id=_opt_str(d, "pending_post_id", "post"),
        )

    @property
    def from_bot(self) -> bool:
        return self.props.get("from_bot") == "true"

    @property
    def from_webhook(self) -> bool:
        return self.props.get("from_webhook") == "true"

    @property
    def changed_at(self) -> int:
        """The newest time the server touched this post (what ``?since=`` compares against)."""
        return max(self.create_at, self.update_at, self.edit_at, self.delete_at)


@dataclass(frozen=True, slots=True)
class Hello:
    """First event of a fresh connection; a new ``connection_id`` after a reconnect means loss."""

    seq: int
    connection_id: str
    server_version: str


@dataclass(frozen=True, slots=True)
class Posted:
    """A new post in a channel the bot belongs to (including the bot's own posts)."""

    seq: int
    post: Post
    channel_type: ChannelType
    channel_name: str
    channel_display_name: str
    sender_name: str  # "@kim", or a webhook override name without "@"
    team_id: str  # "" for DM/GM
    mentions: tuple[str, ...] = ()  # only a hint: the recipient's own id or empty


@dataclass(frozen=True, slots=True)
class OtherEvent:
    """Any other event (post_edited, reaction_added, typing, ...), with its raw ``data``."""

    seq: int
    event: str
    data: Mapping[str, Any] = field(default_factory=dict, hash=False)
    broadcast: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def post(self) -> Post | None:
        """The decoded ``data.post`` of post_edited/post_deleted/ephemeral_message, else None."""
        if "post" not in self.data:
            return None
        return Post.from_dict(_maybe_json(self.data["post"], f"{self.event}.data.post"))


@dataclass(frozen=True, slots=True)
class ActionReply:
    """The server's answer to one of our actions (ping, user_typing); not an event, no seq."""

    seq_reply: int
    status: str
    data: Mapping[str, Any] = field(default_factory=dict, hash=False)
    error: Mapping[str, Any] = field(default_factory=dict, hash=False)

    @property
    def ok(self) -> bool:
        return self.status == "OK"

    @property
    def is_pong(self) -> bool:
        return self.ok and self.data.get("text") == "pong"


@dataclass(frozen=True, slots=True)
class PassedPost:
    """A ``posted`` event that the reader's ``PostFilter`` said nothing wants, read only as far as
    its channel and the times the catch-up cursor needs: most posts of a busy server end here,
    and building a ``Post`` and a ``Posted`` for them was most of the reader's work per event."""

    seq: int
    channel_id: str
    create_at: int
    update_at: int
    event: ClassVar[str] = "posted"  # what it is on the wire (the event counter's label)


# (channel id, channel type, message) -> whether a ``posted`` event is wanted as a ``Posted``; a
# cheap test the reader runs on the decoded post before any object is built
PostFilter = Callable[[str, ChannelType, str], bool]

Event = Hello | Posted | PassedPost | OtherEvent
Frame = Hello | Posted | PassedPost | OtherEvent | ActionReply


# --- parsing -------------------------------------------------------------------------------------


def parse_frame(
    raw: str | bytes, *, max_bytes: int = DEFAULT_MAX_FRAME_BYTES, wants: PostFilter | None = None
) -> Frame:
    """Parse one server frame; raise :class:`FrameError` on anything malformed.

    Events are told from action replies by the presence of ``"event"`` (protocol 3.4). Unknown
    extra fields are ignored; formatting (spaces, trailing newline, key order) does not matter.
    With ``wants``, a well-formed ``posted`` event it refuses is a :class:`PassedPost`.
    """
    try:
        text: str | bytes
        if isinstance(raw, bytes | bytearray | memoryview):
            text = bytes(raw)  # orjson checks the UTF-8 itself
            if len(text) > max_bytes:
                raise FrameError(f"frame of {len(text)} bytes exceeds {max_bytes}")
        elif isinstance(raw, str):
            # Cheap bounds first: UTF-8 has at least one and at most four bytes per code point, so
            # only a frame near the limit is encoded to be measured (orjson rejects lone surrogates).
            if len(raw) > max_bytes:
                raise FrameError(f"frame exceeds {max_bytes} bytes")
            if len(raw) * 4 > max_bytes:
                try:
                    size = len(raw.encode("utf-8"))
                except UnicodeEncodeError:
                    raise FrameError("frame is not valid UTF-8 (lone surrogate)") from None
                if size > max_bytes:
                    raise FrameError(f"frame of {size} bytes exceeds {max_bytes}")
            text = raw
        else:
            raise FrameError(f"frame must be str or bytes, got {type(raw).__name__}")
        return _parse_object(_obj(_loads(text, "frame"), "frame"), wants)
    except FrameError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError, OverflowError) as exc:
        # Belt and braces: whatever slipped past the checks above is still a bad frame.
        raise FrameError(f"malformed frame: {exc.__class__.__name__}") from None


def _parse_object(d: dict[str, Any], wants: PostFilter | None = None) -> Frame:
    if "event" not in d:
        return _parse_reply(d)
    event = _req_str(d, "event", "frame", non_empty=True)
    seq = _req_int(d, "seq", "frame")
    if seq < 0:
        raise FrameError("frame.seq must not be negative")
    data_raw = d.get("data")
    data = {} if data_raw is None else _obj(data_raw, "frame.data")
    broadcast_raw = d.get("broadcast")
    broadcast = {} if broadcast_raw is None else _obj(broadcast_raw, "frame.broadcast")
    if event == "hello":
        return Hello(
            seq=seq,
            connection_id=_req_str(data, "connection_id", "hello.data", non_empty=True),
            server_version=_opt_str(data, "server_version", "hello.data"),
        )
    if event == "posted":
        return _parse_posted(seq, data, wants)
    return OtherEvent(seq=seq, event=event, data=data, broadcast=broadcast)


def _parse_posted(seq: int, data: dict[str, Any], wants: PostFilter | None = None) -> Posted | PassedPost:
    if "post" not in data:
        raise FrameError("posted.data.post is missing")
    decoded = _maybe_json(data["post"], "posted.data.post")
    if wants is not None:
        passed = _passed(seq, decoded, data.get("channel_type"), wants)
        if passed is not None:
            return passed
    post = Post.from_dict(decoded)
    get = data.get
    kind, mentions_raw = get("channel_type"), get("mentions")
    names: tuple[Any, ...] = (
        get("channel_name", ""),
        get("channel_display_name", ""),
        get("sender_name", ""),
        get("team_id", ""),
    )
    if kind not in _CHANNEL_TYPES or not all(type(n) is str for n in names):
        kind = parse_channel_type(_req_str(data, "channel_type", "posted.data"), "posted.data.channel_type")
        names = tuple(
            _opt_str(data, k, "posted.data")
            for k in ("channel_name", "channel_display_name", "sender_name", "team_id")
        )
    if mentions_raw is None:
        mentions: tuple[str, ...] = ()
    else:
        decoded = _maybe_json(mentions_raw, "posted.data.mentions")
        if decoded is None:
            decoded = []
        if not isinstance(decoded, list) or not all(isinstance(m, str) for m in decoded):
            raise FrameError("posted.data.mentions must be a list of strings")
        mentions = tuple(decoded)
    return Posted(seq, post, cast(ChannelType, kind), names[0], names[1], names[2], names[3], mentions)


def _passed(seq: int, post: object, kind: object, wants: PostFilter) -> PassedPost | None:
    """The event as a ``PassedPost`` when its usual fields have their types and ``wants`` refuses
    it; None otherwise (a post it wants, or one the full parse must look at to say what is wrong)."""
    if type(post) is not dict or kind not in _CHANNEL_TYPES:
        return None
    get = post.get
    channel_id, message = get("channel_id"), get("message", "")
    create_at, update_at = get("create_at"), get("update_at", 0)
    if (
        type(channel_id) is not str
        or not channel_id
        or type(message) is not str
        or type(create_at) is not int
        or type(update_at) is not int
        or type(get("id")) is not str
        or not get("id")
    ):
        return None
    if wants(channel_id, cast(ChannelType, kind), message):
        return None
    return PassedPost(seq, channel_id, create_at, update_at or create_at)


def parse_channel_type(value: str, what: str = "channel_type") -> ChannelType:
    """``value`` as a channel type (a frame's ``channel_type``, a REST channel's ``type``)."""
    if value not in _CHANNEL_TYPES:
        raise FrameError(f"{what} must be one of O, P, D, G, got {value[:20]!r}")
    return cast(ChannelType, value)


def _parse_reply(d: dict[str, Any]) -> ActionReply:
    status = _req_str(d, "status", "reply", non_empty=True)
    seq_reply = _opt_int(d, "seq_reply", "reply")  # omitted when 0
    data_raw = d.get("data")
    error_raw = d.get("error")
    return ActionReply(
        seq_reply=seq_reply,
        status=status,
        data={} if data_raw is None else _obj(data_raw, "reply.data"),
        error={} if error_raw is None else _obj(error_raw, "reply.error"),
    )
