"""What a reply keeps for a retry (`Reply.saved_form` / `Reply.from_saved`)."""

from __future__ import annotations

from mchat_bot.pipeline.buttons import Button
from mchat_bot.pipeline.message import Outcome, Reply


def test_a_plain_reply_is_kept_as_its_text() -> None:
    assert Reply("답", Outcome.ANSWERED).saved_form() == "답"
    assert Reply.from_saved("답") == Reply("답", Outcome.RESENT)


def test_the_buttons_come_back_as_they_were() -> None:
    buttons = (
        Button("undo", "되돌리기", ("m1",), user_id="u1"),
        Button("choose", 'Keep "8%"', ("m2", "m1"), style="primary", extra=(("lang", "en"),)),
    )
    back = Reply.from_saved(Reply("저장했습니다", Outcome.STORED, buttons=buttons).saved_form())
    assert back.buttons == buttons
    assert (back.text, back.outcome) == ("저장했습니다", Outcome.RESENT)  # a resend is not stored twice


def test_the_files_and_a_failure_come_back_and_any_other_outcome_is_resent() -> None:
    assert Reply("답", Outcome.ANSWERED).saved_form() == "답"
    back = Reply.from_saved(Reply("사과", Outcome.FAILED, file_ids=("f1",)).saved_form())
    assert (back.text, back.outcome, back.file_ids) == ("사과", Outcome.FAILED, ("f1",))
    assert (
        Reply.from_saved(Reply("답", Outcome.LISTED, file_ids=("f1",)).saved_form()).outcome is Outcome.RESENT
    )
