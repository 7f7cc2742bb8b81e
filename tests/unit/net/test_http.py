"""The network layer's URL rule: the bot posts only to its Mattermost server's own hook URLs."""

from __future__ import annotations

from mchat_bot.net.http import is_server_hook_url


def test_only_the_servers_own_hook_urls_are_called() -> None:
    own = "https://mchat.example.com"
    assert is_server_hook_url("https://mchat.example.com/hooks/commands/abc", own)
    assert is_server_hook_url("https://mchat.example.com:443/hooks/abc", own)  # the default port said
    for url in (
        "http://mchat.example.com/hooks/commands/abc",  # another scheme
        "https://mchat.example.com:8443/hooks/abc",  # another port
        "https://evil.example.com/hooks/abc",
        "https://mchat.example.com.evil.example/hooks/abc",
        "https://user@mchat.example.com/hooks/abc",
        "https://mchat.example.com/api/v4/users/me",  # not a hook
        "https://mchat.example.com/hooks/../api/v4/users",
        "https://mchat.example.com:x/hooks/abc",
        "",
    ):
        assert not is_server_hook_url(url, own), url
