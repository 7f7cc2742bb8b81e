"""What the bot says outside the handlers' formatted replies (``replies.py``), in Korean and English.

The web doors' answers, the channel greeting, the follow-up notes about edited and deleted
sources, and the attachment lines; with :func:`pick` and :func:`one_line`, which every module that
writes text for users shares.
"""

from __future__ import annotations


def pick(lang: str, ko: str, en: str) -> str:
    """The text in the asker's language (``ko`` or anything else = English)."""
    return ko if lang == "ko" else en


def one_line(text: str, limit: int = 300) -> str:
    """Whitespace folded to single spaces, cut at ``limit`` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def plural(n: int) -> str:
    return "memory" if n == 1 else "memories"


# --- the web doors ---------------------------------------------------------------------------------


def working_on_it(lang: str) -> str:
    return pick(lang, "⏳ 답변을 준비하고 있습니다…", "⏳ Working on it…")


def unknown_slash_command(lang: str, name: str) -> str:
    return pick(lang, f"알 수 없는 명령입니다: /{name}", f"Unknown command: /{name}")


def switched_off_here(lang: str) -> str:
    return pick(lang, "이 채널에서는 봇이 꺼져 있습니다.", "The bot is switched off in this channel.")


# --- channels --------------------------------------------------------------------------------------


def greeting(mention: str) -> str:
    """Short, in both languages (a channel has no single language)."""
    return (
        "👋 안녕하세요! 저는 AI 메모리 봇입니다. / Hi, I'm the AI Memory Bot.\n"
        f"- `{mention} remember 내용`: 이 채널에 기억합니다 / remember something for this channel\n"
        f"- `{mention} 질문`: 기억한 내용을 근거로 답합니다 / ask, and I answer from what I remember\n"
        f"- `{mention} help`: 자세한 사용법 / all commands"
    )


# --- memories following their source post ----------------------------------------------------------


def source_edited_note(lang: str) -> str:
    return pick(
        lang,
        "_✏️ 원본 메시지가 수정되어 메모리도 새 내용으로 바꿨습니다 (이전 내용은 이력에 남습니다)._",
        "_✏️ The source message was edited, so the memory now says this (the old text stays in its history)._",
    )


def source_deleted_head(lang: str, n: int) -> str:
    return pick(
        lang,
        f"#### 🗑️ 원본 메시지가 삭제되어 메모리 {n}개를 잊었습니다",
        f"#### 🗑️ The source message was deleted, so I forgot {n} {plural(n)}",
    )
