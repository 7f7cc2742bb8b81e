"""The deterministic seed: team `mchat`, the bot, three humans (+ admin), channels, a DM and a GM."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mchat_bot.devserver.state import Store, User

HUMANS = (
    ("kim", {"first_name": "김", "last_name": "과장", "nickname": "김과장"}),
    ("lee", {"first_name": "이", "last_name": "대리", "nickname": "이대리"}),
    ("park", {"first_name": "박", "last_name": "사원", "nickname": "박사원"}),
)
TEAM_CHANNELS = (
    ("town-square", "O", "Town Square"),
    ("qa", "O", "품질검사"),
    ("qa-private", "P", "QA Private"),
    ("no-bot", "O", "No Bot"),
)
BOT_NAME = "memorybot"


@dataclass
class Seed:
    """Ids and tokens of the seeded world (ids random, names fixed)."""

    bot: User
    users: dict[str, User]  # humans by username: kim, lee, park, admin
    team_id: str
    team_name: str
    channels: dict[str, str]  # team channel name -> id
    dm: dict[str, str] = field(default_factory=dict)  # human username -> DM channel id with the bot
    gm: str = ""

    def to_json(self, url: str = "") -> dict[str, Any]:
        return {
            "url": url,
            "team_id": self.team_id,
            "team_name": self.team_name,
            "bot": {"id": self.bot.id, "username": self.bot.username, "token": self.bot.token},
            "users": {
                n: {"id": u.id, "username": u.username, "token": u.token} for n, u in self.users.items()
            },
            "channels": dict(self.channels),
            "dm": dict(self.dm),
            "gm": self.gm,
        }

    def to_text(self, url: str = "") -> str:
        lines = [
            f"url          {url}",
            f"team         {self.team_name} ({self.team_id})",
            f"bot          @{self.bot.username} id={self.bot.id} token={self.bot.token}",
        ]
        for n, u in self.users.items():
            lines.append(f"user         @{n} id={u.id} token={u.token}")
        for n, cid in self.channels.items():
            lines.append(f"channel      {n} {cid}")
        for n, cid in self.dm.items():
            lines.append(f"dm           {n}<->{self.bot.username} {cid}")
        lines.append(f"gm           kim,lee,{self.bot.username} {self.gm}")
        return "\n".join(lines)


def build_seed(store: Store, bot_token: str | None = None, user_tokens: dict[str, str] | None = None) -> Seed:
    tokens = user_tokens or {}
    team = store.add_team("mchat", "Mchat")
    bot = store.add_user(
        BOT_NAME, token=bot_token or tokens.get(BOT_NAME), first_name="AI Memory Bot", is_bot=True
    )
    users: dict[str, User] = {}
    for name, kw in HUMANS:
        users[name] = store.add_user(name, token=tokens.get(name), **kw)
    users["admin"] = store.add_user(
        "admin", token=tokens.get("admin"), first_name="Admin", roles="system_admin system_user"
    )
    humans = list(users.values())
    for u in [bot, *humans]:
        team.members.add(u.id)
    channels: dict[str, str] = {}
    for name, type_, display in TEAM_CHANNELS:
        ch = store.add_channel(team.id, type_, name, display, creator_id=users["admin"].id)
        for u in humans:
            store.join(ch, u.id)
        if name != "no-bot":
            store.join(ch, bot.id)
        channels[name] = ch.id
    dm = {"kim": store.create_dm(users["kim"].id, bot.id).id}
    gm = store.create_gm([users["kim"].id, users["lee"].id, bot.id], users["kim"].id).id
    return Seed(bot=bot, users=users, team_id=team.id, team_name=team.name, channels=channels, dm=dm, gm=gm)
