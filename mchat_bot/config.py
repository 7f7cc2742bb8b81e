"""One Settings object: config.toml first, then systemd credentials, then MCHAT_<SECTION>_<KEY>.

Every error names the key it is about, so an operator can fix it from the message alone, and
secrets are wrapped so that no repr, log line or traceback ever shows them.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import math
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mchat_bot.net.http import is_server_hook_url


class ConfigError(ValueError):
    """A setting is missing, unknown or of the wrong type; the message names the key."""


class OneOrMany(list[str]):
    """A setting that is one string or a list of them (``model = "a"`` or ``model = ["a", "b"]``);
    an empty string is none."""


class Secret:
    """A string that never shows itself in repr/str, so it cannot leak through logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str = "") -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(slots=True)
class MattermostSettings:
    url: str = ""
    token: Secret = field(default_factory=Secret)
    aliases: list[str] = field(default_factory=lambda: ["@ai"])
    request_timeout: float = 10.0
    rate_per_sec: float = 0.0  # the operator's cap on REST calls per second; 0 = none (pace to the server)
    # the cap while the server sends no X-RateLimit-* (its limiter off): a guard against a runaway, set
    # above what the daemon can use (1-2 calls per answer), so that it never holds answers back
    safety_rate_per_sec: float = 1000.0
    ws_ping_interval: float = 10.0
    ws_silence_timeout: float = 30.0
    ws_max_backoff: float = 30.0
    auto_join: list[str] = field(default_factory=list)  # "team/channel" names joined at start


@dataclass(slots=True)
class LLMSettings:
    # one model, or several deployments (every model at every api_base) balanced with failover
    model: OneOrMany = field(default_factory=OneOrMany)
    api_base: OneOrMany = field(default_factory=OneOrMany)
    api_key: Secret = field(default_factory=Secret)
    timeout: float = 60.0
    client: str = "auto"  # "auto": openai/ models over a direct HTTP client, others litellm; "litellm"
    mask_sensitive: bool = True  # questions, threads and memories pass the sensitive filter before the LLM
    cooldown: float = 30.0  # seconds a deployment that failed is left out (with several deployments)


@dataclass(slots=True)
class MemorySettings:
    path: Path = Path("data/qdrant")
    url: str = ""
    api_key: Secret = field(default_factory=Secret)
    embedder: str = "default"
    top_k: int = 5
    # the relevance cut (memory/relevance.py): weaker memories are never shown, listed or quoted; 0 = off
    min_relevance: float = 0.83
    sensitive: str = "mask"  # what to do with sensitive data in a memory: "mask" or "refuse"
    team_admins: list[str] = field(default_factory=list)  # usernames who may make team memories anywhere
    extract_channels: list[str] = field(default_factory=list)  # channel ids with automatic extraction
    # state in PostgreSQL is for several daemons, which must share one memory store (memory.url);
    # true lets an embedded store (one per daemon) stand beside it, for tests and development only
    allow_embedded_with_shared_state: bool = False


@dataclass(slots=True)
class KnowledgeSettings:
    """Channel knowledge: what learning channels said, indexed apart from curated memories."""

    channels: list[str] = field(default_factory=list)  # channel ids that learn; "*" = every channel
    retention_days: int = 365  # indexed messages older than this are deleted
    backfill_days: float = 30.0  # history read when a channel starts learning (0 = none)
    answer_messages: int = 5  # channel messages given to an answer beside the memories
    batch: int = 8  # messages the background indexer reads from the log and writes to the index at once
    summary_chunk_tokens: int = 3000  # a summary's lines go to the LLM in calls of at most this many tokens
    summary_budget_tokens: int = 24000  # all of one summary's LLM calls together (tokens = characters / 3)


@dataclass(slots=True)
class StorageSettings:
    path: Path = Path("data/mchat_bot.sqlite3")
    # postgresql://user:password@host:port/db: the state in PostgreSQL instead of the SQLite file
    url: Secret = field(default_factory=Secret)
    pool_size: int = 10  # PostgreSQL connections at most
    retention_days: int = 7  # finished inbox items (ids only) are kept this long for dedupe


@dataclass(slots=True)
class HTTPSettings:
    listen: str = "127.0.0.1:8080"
    public_url: str = ""  # how Mattermost reaches this daemon: register-commands, and the buttons
    actions_key: Secret = field(default_factory=Secret)  # signs the buttons (else one kept in the state)
    allow_from: list[str] = field(default_factory=list)  # CIDRs allowed to call the webhook endpoints
    allow_from_metrics: list[str] = field(
        default_factory=list
    )  # /metrics, /openapi.json, health (else allow_from)
    max_body_bytes: int = 65536
    header_timeout: float = 10.0  # seconds a request head may take before the connection is closed
    max_connections: int = 512  # connections at once; past it every request is a 503


@dataclass(slots=True)
class WebhookSettings:
    outgoing_tokens: list[Secret] = field(default_factory=list)
    slash_tokens: list[Secret] = field(default_factory=list)
    incoming_url: Secret = field(default_factory=Secret)
    response_budget: float = 4.5  # seconds an outgoing webhook may wait for its answer inline
    username: str = "AI Memory Bot"
    icon_url: str = ""


@dataclass(slots=True)
class BotSettings:
    # items worked on at once: answers/s is at most workers / seconds per answer (an LLM answer takes
    # seconds, and under load the CPU-bound part waits its turn too)
    workers: int = 16
    shutdown_grace: float = 10.0
    max_attempts: int = 5
    # several daemons on one PostgreSQL: the name of this one in the inbox's claims ("" = host-pid;
    # a name kept across restarts lets a restarted daemon take its own claims back at once)
    instance_id: str = ""
    claim_lease: float = 30.0  # seconds a claim holds without renewal before another daemon takes it


@dataclass(slots=True)
class LogSettings:
    level: str = "info"


@dataclass(slots=True)
class AuditSettings:
    retention_days: int = 90  # audit rows older than this are pruned daily


@dataclass(slots=True)
class UXSettings:
    """What users see while the bot works; each switch defaults on."""

    typing: bool = True  # the typing indicator while an answer is worked on
    typing_interval: float = 4.0  # seconds between typing notices
    feedback_delay: float = 1.0  # typing and 👀 only for work not done after this (0 = at once)
    reactions: bool = True  # 👀 while working, ✅ done, ⚠️ failed, on the asking post
    done_on_fast_answers: bool = False  # ✅ also on answers too fast for 👀 (the reply is the signal)
    stream: bool = True  # long LLM answers appear progressively (edits of the reply post)
    stream_edit_interval: float = 0.5  # at least this many seconds between two edits of a reply
    stream_first_post_after: float = 1.0  # answers finished sooner are posted once, not streamed
    follow_edits: bool = True  # memories follow edits and deletions of their source post
    greet: bool = True  # a short help message the first time the bot is in a channel
    attachments: bool = True  # text/Markdown files attached to a `remember` become memories
    attachment_max_bytes: int = 262144  # larger files are refused with a message
    attachment_chunk_chars: int = 1200  # memory size when a file is cut into pieces
    late_after: float = 120.0  # an answer this many seconds after its question says why (0 = never)


@dataclass(slots=True)
class Settings:
    mattermost: MattermostSettings = field(default_factory=MattermostSettings)
    llm: LLMSettings = field(default_factory=LLMSettings)
    memory: MemorySettings = field(default_factory=MemorySettings)
    knowledge: KnowledgeSettings = field(default_factory=KnowledgeSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    http: HTTPSettings = field(default_factory=HTTPSettings)
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    bot: BotSettings = field(default_factory=BotSettings)
    log: LogSettings = field(default_factory=LogSettings)
    ux: UXSettings = field(default_factory=UXSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)

    @property
    def secrets(self) -> list[str]:
        """Every secret value, for the log redaction processor."""
        found: list[str] = []
        for section in dataclasses.fields(self):
            obj = getattr(self, section.name)
            for f in dataclasses.fields(obj):
                value = getattr(obj, f.name)
                items = value if isinstance(value, list) else [value]
                found.extend(v.get() for v in items if isinstance(v, Secret) and v)
        # a webhook token may carry its team/channel after ':'; the token alone is the secret too
        found.extend(t.get().partition(":")[0] for t in self.webhooks.outgoing_tokens if ":" in t.get())
        # the database password alone, as a driver's message might quote it
        password = urlsplit(self.storage.url.get()).password if self.storage.url else None
        if password:
            found.append(password)
        return found


# systemd LoadCredential= names mapped to keys: the token never has to sit in a file we read.
CREDENTIALS = {
    "mattermost_token": ("mattermost", "token"),
    "llm_api_key": ("llm", "api_key"),
    "memory_api_key": ("memory", "api_key"),
    "actions_key": ("http", "actions_key"),
    "storage_url": ("storage", "url"),
}

ENV_PREFIX = "MCHAT_"


def _type_name(tp: Any) -> str:
    if tp is Secret:
        return "string"
    if tp is Path:
        return "path (string)"
    if tp is OneOrMany:
        return "string or list of strings"
    origin = typing.get_origin(tp)
    if origin is list:
        return "list of strings"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(tp, str(tp))


def _coerce(key: str, tp: Any, value: Any, base_dir: Path) -> Any:
    """Check one TOML value against the field type; the error names the key and what was expected."""
    want = _type_name(tp)
    if tp is Secret:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a {want}, got {type(value).__name__}")
        return Secret(value)
    if tp is Path:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a {want}, got {type(value).__name__}")
        path = Path(value).expanduser()
        return path if path.is_absolute() else (base_dir / path)
    if tp is OneOrMany:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
            raise ConfigError(f"{key}: expected a {want}, got {value!r:.60}")
        return OneOrMany(v.strip() for v in items if v.strip())
    if typing.get_origin(tp) is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key}: expected a {want}, got {value!r:.60}")
        return [Secret(v) if inner is Secret else v for v in value]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected a {want}, got {type(value).__name__}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an {want}, got {type(value).__name__}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a {want}, got {type(value).__name__}")
        return float(value)
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected a {want}, got {type(value).__name__}")
    return value


def _parse_env(key: str, env_name: str, tp: Any, raw: str) -> Any:
    """Turn an environment string into the TOML-like value the field expects."""
    if typing.get_origin(tp) is list or tp is OneOrMany:
        raw = raw.strip()
        if raw.startswith("["):
            try:
                return json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{key} (from {env_name}): not a JSON list: {exc.msg}") from None
        return [part.strip() for part in raw.split(",") if part.strip()]
    if tp is bool:
        lowered = raw.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"{key} (from {env_name}): expected a boolean, got {raw!r:.40}")
    if tp in (int, float):
        try:
            return tp(raw)
        except ValueError:
            raise ConfigError(
                f"{key} (from {env_name}): expected {_type_name(tp)}, got {raw!r:.40}"
            ) from None
    return raw


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, globalns=vars(typing) | globals(), localns=vars(types))


def load_settings(path: Path | None, env: typing.Mapping[str, str] | None = None) -> Settings:
    """Read settings from `path` (may be None), the credentials directory and the environment."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    base_dir = Path.cwd()
    if path is not None:
        base_dir = path.resolve().parent
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not UTF-8 text") from None

    settings = Settings()
    section_types = _hints(Settings)
    for section_name, section_value in raw.items():
        if section_name not in section_types:
            known = ", ".join(section_types)
            raise ConfigError(f"[{section_name}]: unknown section (known: {known})")
        if not isinstance(section_value, dict):
            raise ConfigError(f"{section_name}: expected a [{section_name}] table")
        section_obj = getattr(settings, section_name)
        field_types = _hints(type(section_obj))
        for key, value in section_value.items():
            full = f"{section_name}.{key}"
            if key not in field_types:
                raise ConfigError(f"{full}: unknown key (known: {', '.join(field_types)})")
            setattr(section_obj, key, _coerce(full, field_types[key], value, base_dir))

    cred_dir = env.get("CREDENTIALS_DIRECTORY")
    if cred_dir:
        for name, (section_name, key) in CREDENTIALS.items():
            cred = Path(cred_dir) / name
            if cred.is_file():
                setattr(getattr(settings, section_name), key, Secret(cred.read_text().strip()))

    for section_name in section_types:
        section_obj = getattr(settings, section_name)
        for key, tp in _hints(type(section_obj)).items():
            env_name = f"{ENV_PREFIX}{section_name.upper()}_{key.upper()}"
            if env_name in env:
                full = f"{section_name}.{key}"
                value = _parse_env(full, env_name, tp, env[env_name])
                setattr(section_obj, key, _coerce(full, tp, value, Path.cwd()))

    _validate(settings)
    return settings


def _validate(settings: Settings) -> None:
    mm = settings.mattermost
    if not mm.url:
        raise ConfigError("mattermost.url: missing (set it in the config file or MCHAT_MATTERMOST_URL)")
    parts = urlsplit(mm.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"mattermost.url: expected scheme://host[:port], got {mm.url!r}")
    if parts.path not in ("", "/"):
        raise ConfigError(f"mattermost.url: give the server root without a path, got {mm.url!r}")
    mm.url = mm.url.rstrip("/")
    if not mm.token:
        raise ConfigError(
            "mattermost.token: missing (set MCHAT_MATTERMOST_TOKEN, or a systemd credential "
            "'mattermost_token'; avoid writing it into the file)"
        )
    for alias in mm.aliases:
        if not alias.startswith("@") or len(alias) < 2 or any(c.isspace() for c in alias):
            raise ConfigError(f"mattermost.aliases: each alias is '@word', got {alias!r}")
    _validate_numbers(settings)
    _validate_ux(settings)
    if settings.memory.sensitive not in ("mask", "refuse"):
        raise ConfigError(f"memory.sensitive: 'mask' or 'refuse', got {settings.memory.sensitive!r}")
    if settings.llm.client not in ("auto", "litellm"):
        raise ConfigError(f"llm.client: 'auto' or 'litellm', got {settings.llm.client!r}")
    if settings.log.level.lower() not in {"debug", "info", "warning", "error"}:
        raise ConfigError(f"log.level: one of debug, info, warning, error; got {settings.log.level!r}")
    host, sep, port = settings.http.listen.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"http.listen: expected host:port, got {settings.http.listen!r}")
    for cidr in [*settings.http.allow_from, *settings.http.allow_from_metrics]:
        try:
            ipaddress.ip_network(cidr.strip(), strict=False)
        except ValueError:
            key = "http.allow_from" if cidr in settings.http.allow_from else "http.allow_from_metrics"
            raise ConfigError(f"{key}: not an address or CIDR (e.g. 10.0.0.0/8): {cidr!r:.60}") from None
    hook = settings.webhooks.incoming_url.get()
    if hook and not is_server_hook_url(hook, mm.url):
        raise ConfigError(
            "webhooks.incoming_url: must be an incoming webhook of mattermost.url (its scheme, host and"
            " port, path /hooks/...); the bot posts to no other address"
        )
    db_url = settings.storage.url.get()
    if db_url and (urlsplit(db_url).scheme.lower() not in ("postgresql", "postgres") or "://" not in db_url):
        raise ConfigError("storage.url: expected postgresql://user:password@host:port/database")
    if db_url and not settings.memory.url and not settings.memory.allow_embedded_with_shared_state:
        raise ConfigError(
            "memory.url: storage.url puts the state in PostgreSQL, for several daemons, and they must"
            " share one memory store: set memory.url to a Qdrant server (an embedded store at"
            " memory.path belongs to one process; memory.allow_embedded_with_shared_state = true"
            " allows one per daemon, for tests and development only)"
        )
    if settings.memory.url:
        u = urlsplit(settings.memory.url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ConfigError(f"memory.url: expected http(s)://host:port, got {settings.memory.url!r}")


# The range of every numeric setting: (lowest, whether the lowest itself is allowed, highest or None).
# A number not listed here must be finite and 0 or more; every number must be finite (nan and inf are
# refused everywhere, and `nan <= 0` is false, so a plain comparison would let them through).
_RANGES: dict[str, tuple[float, bool, float | None]] = {
    "mattermost.request_timeout": (0, False, 600),
    "mattermost.rate_per_sec": (0, True, 1_000_000),
    "mattermost.safety_rate_per_sec": (0, False, 1_000_000),
    "mattermost.ws_ping_interval": (0, False, 3600),
    "mattermost.ws_silence_timeout": (0, False, 3600),
    "mattermost.ws_max_backoff": (0, False, 3600),
    "llm.timeout": (0, False, 3600),
    "memory.top_k": (1, True, 100),
    "memory.min_relevance": (0, True, 2),
    "knowledge.retention_days": (1, True, 36500),
    "knowledge.backfill_days": (0, True, 36500),
    "knowledge.answer_messages": (0, True, 50),
    "knowledge.batch": (1, True, 1024),
    "knowledge.summary_chunk_tokens": (500, True, 1_000_000),
    "knowledge.summary_budget_tokens": (1000, True, 10_000_000),
    "http.max_body_bytes": (1024, True, 64 * 1024 * 1024),
    "http.header_timeout": (0, False, 300),
    "http.max_connections": (1, True, 100_000),
    "webhooks.response_budget": (0, False, 30),
    "bot.workers": (1, True, 1024),
    "bot.shutdown_grace": (0, True, 3600),
    "bot.max_attempts": (1, True, 100),
    "bot.claim_lease": (1, True, 3600),
    "audit.retention_days": (1, True, 36500),
    "storage.retention_days": (1, True, 36500),
    "storage.pool_size": (1, True, 1000),
    "ux.typing_interval": (0, False, 3600),
    "ux.feedback_delay": (0, True, 3600),
    "ux.stream_edit_interval": (0, False, 3600),
    "ux.stream_first_post_after": (0, True, 3600),
    "ux.attachment_max_bytes": (1, True, 64 * 1024 * 1024),
    "ux.attachment_chunk_chars": (100, True, 100_000),
}


def _numbers(settings: Settings) -> typing.Iterator[tuple[str, float]]:
    """Every int and float setting by its dotted key (booleans are not numbers here)."""
    for section in dataclasses.fields(settings):
        section_obj = getattr(settings, section.name)
        for f in dataclasses.fields(section_obj):
            value = getattr(section_obj, f.name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                yield f"{section.name}.{f.name}", value


def _validate_numbers(settings: Settings) -> None:
    for key, value in _numbers(settings):
        if not math.isfinite(value):
            raise ConfigError(f"{key}: must be a finite number, got {value}")
        low, inclusive, high = _RANGES.get(key, (0, True, None))
        if value < low or (value == low and not inclusive):
            bound = "at least" if inclusive else "greater than"
            raise ConfigError(f"{key}: must be {bound} {low:g}, got {value:g}")
        if high is not None and value > high:
            raise ConfigError(f"{key}: must be at most {high:g}, got {value:g}")


def _validate_ux(settings: Settings) -> None:
    """mattermost.auto_join entries are team/channel names."""
    for name in settings.mattermost.auto_join:
        team, sep, channel = name.partition("/")
        if not sep or not team or not channel or "/" in channel or any(c.isspace() for c in name):
            raise ConfigError(f"mattermost.auto_join: each entry is 'team/channel', got {name!r}")
