"""A small faithful Mattermost (REST v4 subset + WebSocket) for tests and the demo.

``daemon.py`` runs the bot itself as a child process against it (the harness of the tests, the demo
and the benchmarks).
"""

from mchat_bot.devserver.seed import Seed
from mchat_bot.devserver.server import DevServer

__all__ = ["DevServer", "Seed"]
