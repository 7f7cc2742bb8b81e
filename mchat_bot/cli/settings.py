"""The settings loader every command shares: a bad settings file exits with code 2, nothing started."""

from __future__ import annotations

import sys
from pathlib import Path

from mchat_bot.config import ConfigError, Settings, load_settings
from mchat_bot.observe.logging import configure_logging

EXIT_CONFIG = 2


def settings_or_exit(path: Path) -> Settings:
    """The settings at ``path``, or a one-line message on stderr and ``SystemExit(2)``."""
    try:
        return load_settings(path)
    except ConfigError as exc:
        print(f"mchat-bot: settings error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def command_settings(path: Path) -> Settings:
    """Settings for an operator command (admin, audit): only warnings are logged, secrets masked."""
    settings = settings_or_exit(path)
    configure_logging("warning", secrets=settings.secrets)
    return settings
