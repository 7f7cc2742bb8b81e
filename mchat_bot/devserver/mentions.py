"""Mention detection the way the Mattermost server does it (section 4.6 of the protocol notes).

Words are split on every character that is not a letter, digit, `:`, `.`, `-`, `_` or `@`; each word is
compared lower-cased with `@<username>`; on no match trailing `.`, `-`, `:`, `_` are stripped one at a
time. Code (fenced blocks, indented blocks, inline spans) is not scanned.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})[^\n]*\n.*?(?:^\1?\2[`~]*[ \t]*$|\Z)", re.S | re.M)
_INLINE = re.compile(r"(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.S)
_INDENTED = re.compile(r"(?:^|\n\n)((?:(?: {4}|\t)[^\n]*(?:\n|$))+)")
_WORD_CHARS = ":.-_@"
_SPECIAL = {"@channel": "channel", "@all": "all", "@here": "here"}


def strip_code(text: str) -> str:
    """Remove code blocks and inline code spans (replaced by a space so words stay apart)."""
    text = _FENCE.sub(" ", text)
    text = _INDENTED.sub("\n\n", text)
    return _INLINE.sub(" ", text)


def words(text: str) -> list[str]:
    out: list[str] = []
    cur: list[str] = []
    for ch in text:
        if ch.isalnum() or ch in _WORD_CHARS:
            cur.append(ch)
        elif cur:
            out.append("".join(cur))
            cur = []
    if cur:
        out.append("".join(cur))
    return out


@dataclass
class Mentions:
    usernames: set[str] = field(default_factory=set)  # lower-case usernames mentioned with @
    channel_wide: bool = False  # @channel / @all
    here: bool = False


def parse(text: str, usernames: set[str]) -> Mentions:
    """Mentions of the given (lower-case) usernames, plus @channel/@all/@here, in a message."""
    keywords = {"@" + u for u in usernames}
    m = Mentions()
    for word in words(strip_code(text)):
        w = word.lower()
        while w:
            if w in _SPECIAL:
                if _SPECIAL[w] == "here":
                    m.here = True
                else:
                    m.channel_wide = True
                break
            if w in keywords:
                m.usernames.add(w[1:])
                break
            if w[-1] in ".-:_":
                w = w[:-1]
                continue
            break
    return m
