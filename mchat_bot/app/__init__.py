"""The composition root: the daemon (`daemon`), the parts built once its socket is up (`parts`)."""

from mchat_bot.app.daemon import Daemon, run_daemon

__all__ = ["Daemon", "run_daemon"]
