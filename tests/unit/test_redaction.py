"""Sensitive-data filter: what gets masked (and what must not), the remember reply, and the logs."""

from __future__ import annotations

import io
import json
import logging
import re
import time
from collections.abc import Iterator

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from mchat_bot.observe.logging import configure_logging
from mchat_bot.pipeline.handlers import Handlers
from mchat_bot.redaction import (
    Finding,
    find_sensitive,
    luhn_ok,
    redact,
    rrn_checksum_ok,
)
from tests.support.factories import BOT, SITE, ask
from tests.support.fakes import FakeStore


def luhn_complete(prefix: str) -> str:
    """prefix + the check digit that makes it pass Luhn."""
    for d in "0123456789":
        if luhn_ok(prefix + d):
            return prefix + d
    raise AssertionError


def rrn_with_checksum(first12: str) -> str:
    weights = (2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5)
    check = (11 - sum(int(c) * w for c, w in zip(first12, weights, strict=True)) % 11) % 10
    return first12 + str(check)


CARD = luhn_complete("411111111111111")  # 4111111111111111
assert CARD == "4111111111111111"
RRN_OK = rrn_with_checksum("900101123456")  # passes the old checksum
RRN_NEW = RRN_OK[:12] + str((int(RRN_OK[12]) + 1) % 10)  # a post-2020 style number that fails it
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IktpbSJ9"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)


def kinds(text: str) -> list[str]:
    return [f.kind for f in find_sensitive(text)]


def masked(text: str) -> str:
    return redact(text).text


# --- positives: (sentence, the sensitive value in it, kind) ---------------------------------------

POSITIVES = [
    # 주민등록번호
    (f"제 주민등록번호는 {RRN_OK[:6]}-{RRN_OK[6:]}입니다", f"{RRN_OK[:6]}-{RRN_OK[6:]}", "rrn"),
    (f"주민번호 {RRN_OK} 로 조회", RRN_OK, "rrn"),
    (f"RRN {RRN_NEW[:6]}-{RRN_NEW[6:]} (issued 2021)", f"{RRN_NEW[:6]}-{RRN_NEW[6:]}", "rrn"),
    ("아이 주민번호: 150228-3123456", "150228-3123456", "rrn"),
    # phones
    ("김과장 연락처는 010-1234-5678입니다", "010-1234-5678", "phone"),
    ("call me at 010 9876 5432 tomorrow", "010 9876 5432", "phone"),
    ("번호 010.2222.3333 로 문자 주세요", "010.2222.3333", "phone"),
    ("휴대폰 01055556666", "01055556666", "phone"),
    ("예전 번호 011-234-5678", "011-234-5678", "phone"),
    ("본사 대표번호 02-3456-7890", "02-3456-7890", "phone"),
    ("공장 031-123-4567, 내선 12", "031-123-4567", "phone"),
    ("인터넷전화 070-1234-5678", "070-1234-5678", "phone"),
    ("From abroad dial +82 10-1234-5678.", "+82 10-1234-5678", "phone"),
    ("해외: +82-2-3456-7890", "+82-2-3456-7890", "phone"),
    ("US office +1 (415) 555-2671", "+1 (415) 555-2671", "phone"),
    ("London +44 20 7946 0958", "+44 20 7946 0958", "phone"),
    # e-mail
    ("메일은 kim.gwajang@example.co.kr 로 보내 주세요", "kim.gwajang@example.co.kr", "email"),
    ("Contact jane_doe+qa@mail.example.com for access", "jane_doe+qa@mail.example.com", "email"),
    # cards
    (f"법인카드 {CARD[:4]}-{CARD[4:8]}-{CARD[8:12]}-{CARD[12:]} 로 결제", CARD[:4] + "-" + CARD[4:8], "card"),
    (f"card {CARD[:4]} {CARD[4:8]} {CARD[8:12]} {CARD[12:]} expires 12/27", CARD[:4] + " ", "card"),
    (f"카드번호 {CARD}.", CARD, "card"),
    ("Amex 3782 822463 10005 on file", "3782 822463 10005", "card"),
    ("마스터 5555555555554444", "5555555555554444", "card"),
    # passwords
    ("password: hunter2", "hunter2", "password"),
    ("db pw=S3cr3t!", "S3cr3t!", "password"),
    ("My password is correcthorse9.", "correcthorse9", "password"),
    ("와이파이 비밀번호: 1q2w3e4r!", "1q2w3e4r!", "password"),
    ("서버 비번 qwer1234 입니다", "qwer1234", "password"),
    ("금고 암호는 tiger99이에요", "tiger99", "password"),
    ('config {"password": "p@ss w0rd"}', "p@ss w0rd", "password"),
    ("DB_PASSWORD='Zx9!pl'", "Zx9!pl", "password"),
    # API keys / tokens
    (
        "OpenAI 키 sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z 사용",
        "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z",
        "api_key",
    ),
    ("ghp_16C7e42F292c6912E7710c838347Ae178B4a in CI", "ghp_16C7e42F292c6912E7710c838347Ae178B4a", "api_key"),
    (
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnop",
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnop",
        "api_key",
    ),
    (
        "slack xoxb-123456789012-1234567890123-AbCdEfGhIjKl",
        "xoxb-123456789012-1234567890123-AbCdEfGhIjKl",
        "api_key",
    ),
    ("AWS AKIAIOSFODNN7EXAMPLE 키", "AKIAIOSFODNN7EXAMPLE", "api_key"),
    ("maps AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY", "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY", "api_key"),
    (f"jwt {JWT} expired", JWT, "api_key"),
    ("Authorization: Bearer abc123DEF456ghi789", "abc123DEF456ghi789", "api_key"),
    ("set api_key=9f8e7d6c5b4a3210 in .env", "9f8e7d6c5b4a3210", "api_key"),
    ("token: a1b2c3d4e5f6g7h8", "a1b2c3d4e5f6g7h8", "api_key"),
    ("봇 토큰은 8xk3h5yq7pbgdb4bfd5ygxjr3o 입니다", "8xk3h5yq7pbgdb4bfd5ygxjr3o", "api_key"),
    ("the bot token is 8xk3h5yq7pbgdb4bfd5ygxjr3o", "8xk3h5yq7pbgdb4bfd5ygxjr3o", "api_key"),
]


@pytest.mark.parametrize(("text", "value", "kind"), POSITIVES, ids=[p[0][:40] for p in POSITIVES])
def test_each_kind_is_found_and_masked(text: str, value: str, kind: str) -> None:
    result = redact(text)
    assert kind in [f.kind for f in result.findings]
    assert value not in result.text
    assert f"[REDACTED:{kind}]" in result.text
    # no run of 4+ digits of the value survives
    for run in re.findall(r"\d{4,}", value):
        assert run not in result.text


def test_mask_keeps_the_sentence_around_the_value() -> None:
    assert masked("김과장 연락처는 010-1234-5678입니다") == "김과장 연락처는 [REDACTED:phone]입니다"
    assert masked("password: hunter2") == "password: [REDACTED:password]"
    assert masked("Authorization: Bearer abc123DEF456ghi789") == "Authorization: Bearer [REDACTED:api_key]"
    assert masked("mail a@b.io, 010-1111-2222") == "mail [REDACTED:email], [REDACTED:phone]"
    findings = find_sensitive("x 010-1234-5678")
    assert findings == [Finding("phone", 2, 15)]


# --- negatives: ordinary numbers and words stay as they are -------------------------------------

NEGATIVES = [
    "불량률 12%, 2026-11-25 기준",
    "X부품 불량률 8% (2026.11.20 측정)",
    "release 1.2.3 and 10.20.30.40, v2.14.0-rc1",
    "server 10.0.0.1:8065, port 8080, 192.168.100.200",
    "금액 12,000원, 1,234,567원, $1,299.00",
    "part no. A-010-1234-5678, SKU 0101-2345-6789-01",
    "order 1234567890123456 shipped",  # fails Luhn
    f"card {CARD[:-1]}{(int(CARD[-1]) + 1) % 10} declined",  # one digit changed: not Luhn
    "생년월일 901301-1234567 은 없는 날짜",  # month 13
    "900230-1234567 (2월 30일)",
    "900101-9234567 (9 is not a gender digit)",
    "회의실 3층, 내선 1234, 사번 20231234",
    "timestamp 2026-11-25T10:00:00.123Z, elapsed 1732500000 s",
    "ISBN 978-89-123-4567-8",
    "post id 8xk3h5yq7pbgdb4bfd5ygxjr3o was deleted",  # a 26-char id, not after a token word
    "비밀번호는 8자 이상이어야 합니다",
    "비밀번호 변경 방법을 알려주세요",
    "비밀번호가 2024년에 바뀌었어요",
    "암호화 방식은 AES256",
    "the password policy requires 12 characters",
    "token: expired, please log in again",
    "a bearer instrument",
    "score +5 points, temp -3.5, 3+4=7",
    "전화 주세요 (번호는 나중에)",
    "사용률 99.9%, 점유율 0.5%",
]


@pytest.mark.parametrize("text", NEGATIVES)
def test_ordinary_text_is_untouched(text: str) -> None:
    assert find_sensitive(text) == []
    assert redact(text).text == text


def test_card_luhn_decides() -> None:
    assert kinds(f"카드 {CARD}") == ["card"]
    for i in range(len(CARD)):
        changed = CARD[:i] + str((int(CARD[i]) + 1) % 10) + CARD[i + 1 :]
        assert kinds(f"카드 {changed}") == [], changed  # one changed digit always breaks Luhn


def test_rrn_checksum_is_checked_but_not_required() -> None:
    assert rrn_checksum_ok(RRN_OK)
    assert not rrn_checksum_ok(RRN_NEW)
    assert kinds(f"주민번호 {RRN_OK}") == ["rrn"]
    assert kinds(f"주민번호 {RRN_NEW}") == ["rrn"]


def test_refuse_mode_returns_no_text_when_something_is_found() -> None:
    result = redact("연락처 010-1234-5678", mode="refuse")
    assert result.text == "" and [f.kind for f in result.findings] == ["phone"]
    assert redact("nothing here 12%", mode="refuse").text == "nothing here 12%"
    with pytest.raises(ValueError):
        redact("x", mode="drop")


def test_counts_and_overlaps() -> None:
    text = f"pw: 010-1234-5678, 010-2222-3333, a@b.co, 주민 {RRN_OK}"
    result = redact(text)
    # the password value is a password (not also a phone); nothing is masked twice
    assert result.counts() == {"rrn": 1, "phone": 1, "email": 1, "password": 1}
    assert result.text == ("pw: [REDACTED:password], [REDACTED:phone], [REDACTED:email], 주민 [REDACTED:rrn]")


digits_st = st.text(alphabet="0123456789", min_size=4, max_size=4)
filler_st = st.sampled_from(["연락처는 ", "call ", "메모: ", "(", "x ", "번호 "])
after_st = st.sampled_from(["입니다", " now", ".", ")", "", " 로 연락"])


@settings(max_examples=200, deadline=None)
@given(
    mid=digits_st, last=digits_st, before=filler_st, after=after_st, sep=st.sampled_from(["-", " ", ".", ""])
)
def test_masking_never_leaves_phone_digits(mid: str, last: str, before: str, after: str, sep: str) -> None:
    phone = f"010{sep}{mid}{sep}{last}"
    out = masked(before + phone + after)
    assert phone not in out and mid + sep + last not in out
    assert "[REDACTED:phone]" in out


@settings(max_examples=200, deadline=None)
@given(body=st.text(alphabet="0123456789", min_size=14, max_size=14), grouped=st.booleans())
def test_masking_never_leaves_card_digits(body: str, grouped: bool) -> None:
    card = luhn_complete("4" + body)
    shown = " ".join(card[i : i + 4] for i in range(0, 16, 4)) if grouped else card
    out = masked(f"결제 카드 {shown} 확인")
    assert not re.search(r"\d{4}", out), out


def test_sixteen_thousand_characters_are_fast() -> None:
    chunk = (
        "김과장 연락처는 010-1234-5678입니다. 불량률 12%, 2026-11-25 기준, v1.2.3, 10.0.0.1:8080, "
        f"order 1234567890123456, card {CARD}, password: x1y2, token: a1b2c3d4e5f6, mail a@b.io. "
    )
    text = (chunk * (16000 // len(chunk) + 1))[:16000]
    start = time.thread_time()  # CPU time: tests running alongside (pytest-xdist) do not count
    result = redact(text)
    elapsed = time.thread_time() - start
    assert result.counts()["phone"] > 50
    assert "010-1234-5678" not in result.text
    assert elapsed < 0.25, elapsed  # measured ~6 ms on the 2-core box


# --- remember: mask and refuse ------------------------------------------------------------------


async def test_remember_masks_and_says_what_was_masked() -> None:
    store = FakeStore()
    h = Handlers(store, None, BOT, SITE)
    reply = await ask(h, "@ai remember 김과장 연락처는 010-1234-5678입니다")
    [saved] = store.memories.values()
    assert saved.text == "김과장 연락처는 [REDACTED:phone]입니다"
    assert "010-1234-5678" not in reply
    assert "민감정보 1건(전화번호)을 가려서 저장했습니다" in reply

    reply = await ask(h, "@ai remember ops mail is ops@example.com, pager +1 (415) 555-2671")
    assert "Masked 2 sensitive items (phone number, e-mail address)" in reply
    assert "ops@example.com" not in reply and "555-2671" not in reply
    assert all("ops@example.com" not in m.text for m in store.memories.values())


async def test_remember_without_sensitive_data_is_unchanged() -> None:
    store = FakeStore()
    h = Handlers(store, None, BOT, SITE)
    reply = await ask(h, "@ai remember X부품 불량률 12%, 2026-11-25 기준")
    [saved] = store.memories.values()
    assert saved.text == "X부품 불량률 12%, 2026-11-25 기준"
    assert "민감정보" not in reply


async def test_remember_refuse_stores_nothing_and_names_the_kind() -> None:
    store = FakeStore()
    h = Handlers(store, None, BOT, SITE, sensitive="refuse")
    reply = await ask(h, f"@ai remember 제 카드번호는 {CARD} 이고 비번 qwer1234 입니다")
    assert store.memories == {}
    assert "저장하지 않았습니다" in reply
    assert "카드번호" in reply and "비밀번호" in reply
    assert CARD not in reply and "qwer1234" not in reply

    reply = await ask(h, "@ai remember my token: a1b2c3d4e5f6g7h8")
    assert store.memories == {}
    assert reply.startswith("🔒 Not saved") and "API key/token" in reply and "a1b2c3d4" not in reply

    await ask(h, "@ai remember the deploy is on Friday")
    assert [m.text for m in store.memories.values()] == ["the deploy is on Friday"]


def test_handlers_reject_an_unknown_mode() -> None:
    with pytest.raises(ValueError):
        Handlers(FakeStore(), None, BOT, SITE, sensitive="drop")


# --- logs -----------------------------------------------------------------------------------------


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    configure_logging("info", stream=out, secrets=["configured-secret-value"])
    yield out
    structlog.reset_defaults()
    logging.basicConfig(force=True)


def test_log_lines_mask_personal_data_and_tokens(log_stream: io.StringIO) -> None:
    log = structlog.get_logger("test.redaction")
    log.info(
        "user.said",
        message="김과장 010-1234-5678, kim@example.com",
        detail={"note": "Bearer abc123DEF456ghi789", "card": f"card {CARD}"},
        items=["github ghp_16C7e42F292c6912E7710c838347Ae178B4a", "v1.2.3 at 10.0.0.1:8065"],
        extra="uses configured-secret-value",
        token="whatever",
    )
    line = log_stream.getvalue().strip().splitlines()[-1]
    event = json.loads(line)
    for secret in (
        "010-1234-5678",
        "kim@example.com",
        "abc123DEF456ghi789",
        CARD,
        "ghp_16C7",
        "configured-secret",
    ):
        assert secret not in line
    assert "[REDACTED:phone]" in event["message"] and "[REDACTED:email]" in event["message"]
    assert event["detail"]["card"] == "card [REDACTED:card]"
    assert event["items"][1] == "v1.2.3 at 10.0.0.1:8065"  # ordinary values stay readable
    assert event["token"] == "[REDACTED]"
    assert event["event"] == "user.said"


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("주민번호 900101－1234567 입니다", "rrn", "900101－1234567"),  # full-width hyphen
        ("주민번호 ９００１０１－１２３４５６７", "rrn", "９００１０１－１２３４５６７"),  # all full-width
        ("전화 ０１０-1234-5678 로 주세요", "phone", "０１０-1234-5678"),  # full-width digits
        ("phone 010–1234–5678 please", "phone", "010–1234–5678"),  # en dashes from a word processor
        ("card 4111.1111.1111.1111 expires", "card", "4111.1111.1111.1111"),  # dotted groups
        ("card 4111 1111 1111 1111 expires", "card", "4111 1111 1111 1111"),  # spaced groups
        (
            "aws secret wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "api_key",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ),
        (
            "secret access key wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "api_key",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ),
        ("토큰 abcd1234efgh5678ijkl 입니다", "api_key", "abcd1234efgh5678ijkl"),
    ],
)
def test_masking_variants_that_ime_and_copy_paste_produce(text: str, kind: str, value: str) -> None:
    result = redact(text)
    assert [f.kind for f in result.findings] == [kind]
    assert value not in result.text
    assert f"[REDACTED:{kind}]" in result.text
    finding = result.findings[0]
    assert text[finding.start : finding.end] == value  # the span indexes the original text


@pytest.mark.parametrize(
    "text",
    [
        "the token expired yesterday",
        "our secret sauce is patience",
        "version ４.２.０ released",
        "room １２０４, floor ３",
        "secret meeting at 10:30",
    ],
)
def test_variants_leave_ordinary_text_alone(text: str) -> None:
    assert redact(text).text == text


@pytest.mark.parametrize(
    "text",
    [
        "password: hunter22 and 010-1234-5678",
        "비밀번호는 abcd1234, 메일 kim@example.com",
        "pw=s3cret!, card 4111 1111 1111 1111, 주민 900101-1234567",
        "api_key=abc123def456ghi, Bearer abc123DEF456ghi789",
    ],
)
def test_masking_masked_text_changes_nothing(text: str) -> None:
    once = redact(text)
    assert once.found
    again = redact(once.text)
    assert again.text == once.text and not again.found


def unguarded(text: str) -> list[tuple[str, int, int]]:
    """Every finder run on the text, no cheap test first: what the guards must never hide."""
    from mchat_bot import redaction

    folded = redaction.fold_width(text)
    found = {(f.kind, f.start, f.end) for finder, _ in redaction._FINDERS for f in finder(folded)}
    return sorted(found)


GUARD_CASES = [
    *[p[0] for p in POSITIVES],
    *NEGATIVES,
    "PASSWORD: hunter2x",
    "pa\u017f\u017fword: hunter2x",  # long s: (?i) reads it as s
    "ap\u0131_key=abcd1234efgh5678",  # dotless i
    "api_\u212aey=abcd1234efgh5678",  # the Kelvin sign is a K
    "BEARER abcdef1234567890",
    "토큰: abcdefgh1234",
    "시크릿 wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY",
    "mail me at kim@example.co.kr",
    "part P123 at 45% since 2026-11-20",
]


@pytest.mark.parametrize("text", GUARD_CASES)
def test_the_cheap_tests_never_hide_a_finding(text: str) -> None:
    # each finding that all six patterns make on their own is still found with the guards
    assert set(unguarded(text)) >= {(f.kind, f.start, f.end) for f in find_sensitive(text)}
    for kind, start, end in unguarded(text):
        assert any(f.start <= start and end <= f.end for f in find_sensitive(text)) or any(
            f.start < end and start < f.end for f in find_sensitive(text)
        ), (kind, text)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("aksPWpw0189@-_:= 토큰키비번\u017f\u0131\u212a"), max_size=40))
def test_the_cheap_tests_agree_with_the_patterns(text: str) -> None:
    # a finding made without the guards overlaps one made with them
    guarded = find_sensitive(text)
    for _kind, start, end in unguarded(text):
        assert any(f.start < end and start < f.end for f in guarded)
