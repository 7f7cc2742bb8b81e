"""`python -m mchat_bot` is `mchat-bot`."""

from mchat_bot.cli import main

raise SystemExit(main())
