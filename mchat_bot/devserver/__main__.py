"""`python -m mchat_bot.devserver` and `mchat-bot devserver` (a sync entry point returning the exit code)."""

from __future__ import annotations

import sys

import uvloop

from mchat_bot.devserver import cli


def main(argv: list[str] | None = None) -> int:
    """Run the dev server until SIGINT/SIGTERM; `cli.main` is the async variant. On uvloop, as the
    daemon runs: as an instrument (`make bench`) its own cost per post must stay below the bot's."""
    try:
        return uvloop.run(cli.main(sys.argv[1:] if argv is None else list(argv)))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
