"""A small faithful Mattermost (REST v4 subset + WebSocket) for tests and the demo."""

from mchat_bot.devserver.seed import Seed
from mchat_bot.devserver.server import DevServer

__all__ = ["DevServer", "Seed"]
