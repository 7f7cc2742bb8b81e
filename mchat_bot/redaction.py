"""Sensitive-data filter: find and mask personal data and secrets before text is stored or logged.

Kinds (``Finding.kind``):

- ``rrn``: Korean resident registration number (주민등록번호), ``YYMMDD-GXXXXXX`` with or without the
  hyphen; the date and the gender/century digit (1-8) must be valid. The old checksum is computed
  (:func:`rrn_checksum_ok`) but not required: numbers issued since October 2020 do not follow it.
- ``phone``: Korean mobile (01x), landlines (02, 0xx area codes, 070, 050x, 080) and ``+82`` forms,
  with ``-``, ``.`` or spaces; other international ``+<country code>`` numbers of 8-15 digits.
- ``email``: e-mail addresses.
- ``card``: payment card numbers of 13-19 digits (plain, or in 4-digit groups / the 4-6-5 Amex
  shape) that pass the Luhn check and start with a card-network prefix (2221-2720, 3, 4, 5, 6, 9).
- ``password``: the value after ``password:``/``pw=``/``password is``/``비밀번호:``/``비번 x``/``암호는 x``.
- ``api_key``: tokens in well-known shapes (``sk-``, ``ghp_``/``github_pat_``, ``xox?-``, ``AKIA``,
  ``AIza``, JWTs, ``Bearer x``), ``api_key=``/``token: x`` assignments, and a 26-character
  Mattermost-style token after the word "token"/"토큰".

Masking replaces each finding by ``[REDACTED:<kind>]`` (for passwords and assignments only the value
is replaced, so "password: [REDACTED:password]" still reads). A placeholder is never a finding, so
masking masked text again (a stored memory on its way into an LLM prompt) changes nothing. Plain
numbers (dates, versions, IPs, ports, amounts, percentages, part and order numbers) are left alone:
every pattern is anchored on non-alphanumeric boundaries and the numeric kinds are validated.

All patterns are compiled once; each scans the text once, so 16k characters take a few milliseconds.
"""

from __future__ import annotations

import bisect
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date

KINDS = ("rrn", "phone", "email", "card", "password", "api_key")

# Korean / English names for replies (what was found, never the value).
KIND_LABELS: dict[str, tuple[str, str]] = {
    "rrn": ("주민등록번호", "resident registration number"),
    "phone": ("전화번호", "phone number"),
    "email": ("이메일 주소", "e-mail address"),
    "card": ("카드번호", "card number"),
    "password": ("비밀번호", "password"),
    "api_key": ("API 키/토큰", "API key/token"),
}

# When two findings overlap, the one with the lower rank wins (then the longer one).
_RANK = {"password": 0, "api_key": 1, "rrn": 2, "card": 3, "email": 4, "phone": 5}


@dataclass(frozen=True, slots=True)
class Finding:
    """One sensitive span: ``text[start:end]`` is the value (never stored here)."""

    kind: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class RedactionResult:
    """The (possibly masked) text and what was found in the original."""

    text: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def found(self) -> bool:
        return bool(self.findings)

    def counts(self) -> dict[str, int]:
        """Findings per kind, in :data:`KINDS` order."""
        c = Counter(f.kind for f in self.findings)
        return {k: c[k] for k in KINDS if c[k]}


def mask_label(kind: str) -> str:
    return f"[REDACTED:{kind}]"


PLACEHOLDER = re.compile(r"\[REDACTED:(?:" + "|".join(KINDS) + r")\]")


def kind_label(kind: str, lang: str) -> str:
    ko, en = KIND_LABELS.get(kind, (kind, kind))
    return ko if lang == "ko" else en


# --- patterns -------------------------------------------------------------------------------------

# A number must not be glued to letters, digits, a dot or a hyphen on the left (part numbers,
# versions, IPs) nor continue on the right; Hangul around it is fine ("010-1234-5678입니다").
_L = r"(?<![0-9A-Za-z_.\-+/])"
_R = r"(?![0-9A-Za-z_\-]|[.,]\d)"
_SEP = r"[-. ]?"

_RRN = re.compile(_L + r"(\d{6})(?:-| - | -|- | )?([1-8]\d{6})" + _R)

_PHONE_KR = re.compile(
    _L
    + r"(?:"
    # mobile 010-1234-5678, 011-123-4567, 01012345678
    + rf"01[016789]{_SEP}\d{{3,4}}{_SEP}\d{{4}}"
    # landlines need a separator: 02-123-4567, 031.123.4567, 070 1234 5678, 0505-123-4567, 080-...
    + r"|(?:02|0[3-6][1-5]|070|050\d|080)[-. )]\s?\d{3,4}[-. ]\d{4}"
    + r"|\(0(?:2|[3-6][1-5]|70)\)\s?\d{3,4}[-. ]\d{4}"
    + r")"
    + _R
)
_PHONE_INTL = re.compile(
    r"(?<![0-9A-Za-z_])\+[1-9]\d{0,2}+(?:[-. ]?\(0?\d{0,4}\)[-. ]?|[-. ])?\d++(?:[-. ]\d++){0,5}" + _R
)

_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9][A-Za-z0-9._%+\-]{0,63}@"
    r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)*"
    r"\.[A-Za-z]{2,24}(?![A-Za-z0-9\-])"
)

_CARD = re.compile(
    _L
    + r"(?:\d{13,19}"
    + r"|\d{4}([ .-])\d{4}\1\d{4}\1\d{1,7}"  # 4-4-4-4 (and 13-19 digit variants), dotted too
    + r"|\d{4}([ .-])\d{6}\2\d{4,5}"  # Amex 4-6-5, Diners 4-6-4
    + r")"
    + _R
)

# Password values: printable ASCII without spaces (Hangul after it is a particle: "abc123이에요").
_PW_VALUE = r"[!-~]"
_PASSWORD = re.compile(
    r"(?i)(?:"
    # explicit assignment: password: x, pw=x, 비밀번호: x, 비번=x
    r"(?<![A-Za-z])(?:password|passwd|passcode|pwd|pw|비밀번호|비번|암호|패스워드)[\"']?\s*[:=]\s*"
    r"(?:\"(?P<q1>[^\"\n]{1,200})\"|'(?P<q2>[^'\n]{1,200})'"
    r"|`?(?P<a>" + _PW_VALUE + r"+?)`?(?=[\s,;)\]}]|$|[\uac00-\ud7a3]|\.(?:\s|$)))"
    # words: "password is x", "비밀번호는 x", "비번 x", "암호는 x" (the value needs 4+ characters)
    r"|(?<![A-Za-z])(?:password|passwd|pwd)\s+is\s+[\"'`]?(?P<b>" + _PW_VALUE + r"{4,}?)[\"'`]?"
    r"(?=[\s,;)\]}]|$|[\uac00-\ud7a3]|\.(?:\s|$))"
    r"|(?:비밀번호|비번|암호|패스워드)(?:는|은|가|이|로|도)?\s+[\"'`]?(?P<c>" + _PW_VALUE + r"{4,}?)[\"'`]?"
    r"(?=[\s,;)\]}]|$|[\uac00-\ud7a3]|\.(?:\s|$))"
    r"|(?:비밀번호|비번|암호|패스워드)(?:는|은|가|이|로|도)[\"'`]?(?P<d>" + _PW_VALUE + r"{4,}?)[\"'`]?"
    r"(?=[\s,;)\]}]|$|[\uac00-\ud7a3]|\.(?:\s|$))"
    r")"
)

_TOKEN_CHARS = r"[A-Za-z0-9_\-]"
_API_SHAPES = re.compile(
    r"(?<![A-Za-z0-9_\-])(?:"
    r"sk-(?:proj-|ant-|live-)?[A-Za-z0-9_\-]{20,}"  # OpenAI, Anthropic
    r"|(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}"  # Stripe
    r"|gh[pousr]_[A-Za-z0-9]{30,}"  # GitHub
    r"|github_pat_[A-Za-z0-9_]{22,}"
    r"|xox[bpasr]-[A-Za-z0-9\-]{10,}"  # Slack
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}"  # AWS access key id
    r"|AIza[0-9A-Za-z_\-]{35}"  # Google API key
    r"|eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*"  # JWT
    r")(?![A-Za-z0-9_\-])"
)
_API_CONTEXT = re.compile(
    r"(?i)(?:"
    r"\bbearer\s+(?P<bearer>[A-Za-z0-9._~+/\-]{8,}=*)"
    # api_key=x, token: x, client_secret = "x", 토큰: x, API 키: x
    r"|(?<![A-Za-z0-9])(?:api[_\- ]?key|apikey|access[_\- ]?token|refresh[_\- ]?token|auth[_\- ]?token"
    r"|secret[_\- ]?key|client[_\- ]?secret|private[_\- ]?key|token|secret|토큰|api\s?키|시크릿)"
    r"[\"']?(?:\s*[:=]|\s+is|은|는|이)\s*[\"'`]?(?P<assign>[A-Za-z0-9._~+/\-]{8,}=*)"
    # a key-shaped value right after the word, with no ':' or '=' ("aws secret wJalrXUt..."): longer,
    # so that "the token expired" or "secret sauce" stay words
    r"|(?<![A-Za-z0-9])(?:api[_\- ]?key|apikey|access[_\- ]?token|secret[_\- ]?(?:access[_\- ]?)?key"
    r"|client[_\- ]?secret|private[_\- ]?key|token|secret|토큰|api\s?키|시크릿)"
    r"\s+[\"'`]?(?P<spaced>[A-Za-z0-9_~+/\-]{16,}=*)"
    # a Mattermost-style 26-character token shortly after the word token
    r"|(?:token|토큰)[^\n]{0,30}?(?<![A-Za-z0-9])(?P<mm>(?-i:[a-z0-9]{26}))(?![A-Za-z0-9])"
    r")"
)


# --- validators -----------------------------------------------------------------------------------


def rrn_date_ok(digits: str) -> bool:
    """YYMMDD plus the 7th digit (1,2,5,6: 1900s; 3,4,7,8: 2000s) form a real date."""
    century = 1900 if digits[6] in "1256" else 2000
    try:
        date(century + int(digits[:2]), int(digits[2:4]), int(digits[4:6]))
    except ValueError:
        return False
    return True


def rrn_checksum_ok(digits: str) -> bool:
    """The pre-2020 check digit; informative only (newer numbers do not follow it)."""
    weights = (2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5)
    total = sum(int(d) * w for d, w in zip(digits[:12], weights, strict=True))
    return (11 - total % 11) % 10 == int(digits[12])


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_prefix_ok(digits: str) -> bool:
    if digits[0] in "345689":
        return True
    return digits[0] == "2" and 2221 <= int(digits[:4]) <= 2720


def _digits(s: str) -> str:
    return "".join(ch for ch in s if ch.isdigit())


# --- finding --------------------------------------------------------------------------------------


def _rrn(text: str) -> Iterator[Finding]:
    for m in _RRN.finditer(text):
        if rrn_date_ok(m.group(1) + m.group(2)):
            yield Finding("rrn", m.start(), m.end())


def _phone(text: str) -> Iterator[Finding]:
    for m in _PHONE_KR.finditer(text):
        yield Finding("phone", m.start(), m.end())
    for m in _PHONE_INTL.finditer(text):
        if 8 <= len(_digits(m.group())) <= 15:
            yield Finding("phone", m.start(), m.end())


def _email(text: str) -> Iterator[Finding]:
    for m in _EMAIL.finditer(text):
        yield Finding("email", m.start(), m.end())


def _card(text: str) -> Iterator[Finding]:
    for m in _CARD.finditer(text):
        digits = _digits(m.group())
        if 13 <= len(digits) <= 19 and _card_prefix_ok(digits) and luhn_ok(digits):
            yield Finding("card", m.start(), m.end())


_COUNTERS = "년월일자개번회시분초차주%"


def _password(text: str) -> Iterator[Finding]:
    for m in _PASSWORD.finditer(text):
        for g in ("q1", "q2", "a", "b", "c", "d"):
            value = m.group(g)
            if value is None:
                continue
            # "비밀번호는 8자 이상", "비밀번호가 2024년에": a count or a year, not a password
            after = text[m.end(g) : m.end(g) + 1]
            if not (value.isdigit() and after and after in _COUNTERS):
                yield Finding("password", m.start(g), m.end(g))
            break


def _api_key(text: str) -> Iterator[Finding]:
    for m in _API_SHAPES.finditer(text):
        yield Finding("api_key", m.start(), m.end())
    for m in _API_CONTEXT.finditer(text):
        for g in ("bearer", "assign", "spaced", "mm"):
            if m.group(g) is not None:
                value = m.group(g)
                # a token mixes letters and digits: "token: expired", "bearer instrument" are words
                if g != "mm" and not (any(c.isdigit() for c in value) and any(c.isalpha() for c in value)):
                    break
                yield Finding("api_key", m.start(g), m.end(g))
                break


# Each finder with a cheap test its pattern cannot match without: a text passes a finder's test
# unless that finder could find something in it. ``low`` is the text lowercased as the patterns'
# (?i) reads it (ı and ſ match i and s there), so a keyword test on it is never stricter than the
# pattern. Most texts (log values, prompts, memories) then run two or three patterns, not six.
_NUMERIC = re.compile(r"\d")
_LOWER_FIXES = str.maketrans({"ı": "i", "ſ": "s"})
_PASSWORD_WORDS = ("pass", "pw", "비밀번호", "비번", "암호", "패스워드")
_API_CONTEXT_WORDS = ("bearer", "key", "token", "secret", "토큰", "키", "시크릿")
_API_SHAPE_MARKS = ("sk-", "_", "xox", "AKIA", "ASIA", "AIza", "eyJ")


def lowered(text: str) -> str:
    """``text`` lowercased as a (?i) pattern reads it, for keyword tests that stand before one."""
    low = text.lower()
    if not low.isascii() and ("ı" in low or "ſ" in low):
        low = low.translate(_LOWER_FIXES)
    return low


# The fewest digits (\d, as the patterns count them) each number needs: a resident registration
# number 13, a card 13 (13-19), a phone 8 (international, 8-15; a Korean landline has 9). Most chat
# lines that have a digit at all ("P123", "3층", "12%") have fewer, and skip those three patterns.
RRN_DIGITS, CARD_DIGITS, PHONE_DIGITS = 13, 13, 8


def _digit_count(text: str) -> int:
    return len(_NUMERIC.findall(text))


def _may_hold_rrn(text: str, low: str, digits: int) -> bool:
    return digits >= RRN_DIGITS


def _may_hold_card(text: str, low: str, digits: int) -> bool:
    return digits >= CARD_DIGITS


def _may_hold_phone(text: str, low: str, digits: int) -> bool:
    return digits >= PHONE_DIGITS


def _has_at(text: str, low: str, digits: int) -> bool:
    return "@" in text


# one search in C instead of a substring test per word
_PASSWORD_WORD = re.compile("|".join(map(re.escape, _PASSWORD_WORDS)))
_API_WORD = re.compile("|".join(map(re.escape, _API_CONTEXT_WORDS)))
_API_MARK = re.compile("|".join(map(re.escape, _API_SHAPE_MARKS)))


def _may_hold_password(text: str, low: str, digits: int) -> bool:
    return _PASSWORD_WORD.search(low) is not None


def _may_hold_api_key(text: str, low: str, digits: int) -> bool:
    return _API_WORD.search(low) is not None or _API_MARK.search(text) is not None


_FINDERS: tuple[tuple[Callable[[str], Iterator[Finding]], Callable[[str, str, int], bool]], ...] = (
    (_password, _may_hold_password),
    (_api_key, _may_hold_api_key),
    (_rrn, _may_hold_rrn),
    (_card, _may_hold_card),
    (_email, _has_at),
    (_phone, _may_hold_phone),
)


# Full-width forms (０１０, －, ．, the ideographic space) and the other dashes that IMEs and word
# processors produce are read as their ASCII twins. Each maps one character to one, so a finding's
# span in the folded text is its span in the original.
_FOLD = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)} | {
    0x3000: 0x20,  # ideographic space
    0x00A0: 0x20,  # no-break space
    0x2010: 0x2D,  # hyphen
    0x2011: 0x2D,  # non-breaking hyphen
    0x2012: 0x2D,  # figure dash
    0x2013: 0x2D,  # en dash
    0x2014: 0x2D,  # em dash
    0x2212: 0x2D,  # minus sign
    0xFE63: 0x2D,  # small hyphen-minus
}


# str.translate walks a dict per character (~0.1 µs each); a character class finds in C whether
# there is anything to fold at all, which for Korean text there almost never is.
_FOLDABLE = re.compile("[" + "".join(re.escape(chr(code)) for code in sorted(_FOLD)) + "]")


def fold_width(text: str) -> str:
    """``text`` with full-width ASCII and dash variants as plain ASCII, the same length."""
    if text.isascii() or _FOLDABLE.search(text) is None:
        return text
    return text.translate(_FOLD)


def find_sensitive(text: str) -> list[Finding]:
    """Non-overlapping findings, in text order (spans index the original text)."""
    if not text:
        return []
    text = fold_width(text)
    low = lowered(text)
    digits = _digit_count(text)
    candidates = [f for finder, may_match in _FINDERS if may_match(text, low, digits) for f in finder(text)]
    if not candidates:
        return []
    if "[REDACTED:" in text:  # already masked: "password: [REDACTED:password]" is not a password
        held = [(m.start(), m.end()) for m in PLACEHOLDER.finditer(text)]
        candidates = [
            f for f in candidates if not any(f.start < end and start < f.end for start, end in held)
        ]
    candidates.sort(key=lambda f: (_RANK[f.kind], f.start - f.end, f.start))
    kept: list[Finding] = []  # non-overlapping, sorted by start: only the neighbours can clash
    starts: list[int] = []
    for f in candidates:
        i = bisect.bisect_left(starts, f.start)
        if (i == 0 or kept[i - 1].end <= f.start) and (i == len(kept) or kept[i].start >= f.end):
            kept.insert(i, f)
            starts.insert(i, f.start)
    return kept


def redact(text: str, mode: str = "mask") -> RedactionResult:
    """``mask``: each finding becomes ``[REDACTED:<kind>]``.

    ``refuse``: nothing is rewritten; the text comes back only when nothing was found (else ``""``),
    so a caller that stores ``result.text`` can never store a finding by mistake.
    """
    if mode not in ("mask", "refuse"):
        raise ValueError(f"mode must be 'mask' or 'refuse', got {mode!r}")
    findings = find_sensitive(text)
    if not findings:
        return RedactionResult(text, [])
    if mode == "refuse":
        return RedactionResult("", findings)
    out: list[str] = []
    pos = 0
    for f in findings:
        out.append(text[pos : f.start])
        out.append(mask_label(f.kind))
        pos = f.end
    out.append(text[pos:])
    return RedactionResult("".join(out), findings)


def describe(result: RedactionResult, lang: str) -> str:
    """Kinds only, never values: "전화번호 2, 이메일 주소" / "phone number ×2, e-mail address"."""
    parts = []
    for kind, n in result.counts().items():
        label = kind_label(kind, lang)
        if n > 1:
            label = f"{label} {n}" if lang == "ko" else f"{label} ×{n}"
        parts.append(label)
    return ", ".join(parts)
