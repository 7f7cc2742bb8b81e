"""`python -m mchat_bot` is `mchat-bot`."""

from mchat_bot.cli.main import main

raise SystemExit(main())
