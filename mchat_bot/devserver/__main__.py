"""`python -m mchat_bot.devserver` and `mchat-bot devserver` (a sync entry point returning the exit code)."""

from __future__ import annotations

import asyncio
import sys

from mchat_bot.devserver import cli


def main(argv: list[str] | None = None) -> int:
    """Run the dev server until SIGINT/SIGTERM; `cli.main` is the async variant."""
    try:
        return asyncio.run(cli.main(sys.argv[1:] if argv is None else list(argv)))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
