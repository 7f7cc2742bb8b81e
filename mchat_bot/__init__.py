"""mchat-bot: an AI memory bot for Mattermost-based messengers."""

__version__ = "0.1.0"
