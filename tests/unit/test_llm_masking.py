"""The one seam between the bot and the model: what leaves for the LLM passes the sensitive filter.

Over real sockets: the fake LLM records each request body as it arrived.
"""

from __future__ import annotations

import json

from mchat_bot.devserver.fake_llm import FakeLLM
from mchat_bot.llm import LLM, PLACEHOLDER_NOTE, mask_messages
from mchat_bot.memory.store import Hit, Memory
from mchat_bot.pipeline.handlers import build_prompt

PHONE = "010-4821-9375"
EMAIL = "jiyoung.park@factory-example.co.kr"
RRN = "900101-1234567"


def prompt() -> list[dict[str, str]]:
    """An answer prompt with a value in the question, the thread and a recalled memory."""
    memory = Memory(id="m1", text=f"박지영 대리 주민번호 {RRN}", user_name="kim", created_at=0.0)
    thread = [("kim", f"연락처는 {PHONE} 입니다")]
    return build_prompt(f"{EMAIL} 로 메일 보내도 돼?", [Hit(memory, 0.9)], thread, "ko")


def test_question_thread_and_memories_are_masked_and_the_note_explains_it() -> None:
    messages = prompt()
    out, found = mask_messages(messages)
    body = json.dumps(out, ensure_ascii=False)
    assert found == 3
    for value in (PHONE, EMAIL, RRN):
        assert value not in body
    assert "[REDACTED:phone]" in out[0]["content"] and "[REDACTED:rrn]" in out[0]["content"]
    assert out[1]["content"] == "[REDACTED:email] 로 메일 보내도 돼?"
    assert out[0]["content"].endswith(PLACEHOLDER_NOTE)
    assert messages == prompt()  # the caller's messages are left as they were


def test_unmasked_messages_pass_as_they_are() -> None:
    messages = prompt()
    out, found = mask_messages(messages, mask=False)
    assert (out, found) == (messages, 0)


def test_a_stored_placeholder_is_explained_even_unmasked_and_never_twice() -> None:
    stored = [{"role": "user", "content": "what is kim's number? memory: [REDACTED:phone]"}]
    out, found = mask_messages(stored, mask=False)
    assert found == 0 and out[0] == {"role": "system", "content": PLACEHOLDER_NOTE} and out[1] == stored[0]
    again, _ = mask_messages(out)
    assert again == out
    plain = [{"role": "user", "content": "Reply with the word OK."}]
    assert mask_messages(plain) == (plain, 0)


async def test_every_call_masks_what_it_sends_plain_and_streamed() -> None:
    async with FakeLLM() as fake:
        llm = LLM("openai/fake", f"{fake.url}/v1", "", timeout=5.0)
        long = [*prompt(), {"role": "user", "content": "x " * 3000 + PHONE}]  # masked in a thread
        try:
            await llm.complete(prompt())
            await llm.complete_streaming(prompt(), lambda _text: None)
            await llm.complete(long)
        finally:
            await llm.aclose()
        sent = json.dumps(fake.requests, ensure_ascii=False)
        assert len(fake.requests) == 3
        for value in (PHONE, EMAIL, RRN):
            assert value not in sent
        assert sent.count("[REDACTED:phone]") >= 3


async def test_mask_sensitive_false_sends_the_values() -> None:
    async with FakeLLM() as fake:
        llm = LLM("openai/fake", f"{fake.url}/v1", "", timeout=5.0, mask_sensitive=False)
        try:
            await llm.complete(prompt())
        finally:
            await llm.aclose()
        sent = json.dumps(fake.requests, ensure_ascii=False)
        assert PHONE in sent and EMAIL in sent and RRN in sent
