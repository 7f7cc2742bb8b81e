"""The network layer: no project imports. One retry policy and one HTTP session per remote service."""

from mchat_bot.net.retry import Backoff, HttpStatusError, RetryPolicy, is_transient, server_wait

__all__ = ["Backoff", "HttpStatusError", "RetryPolicy", "is_transient", "server_wait"]
