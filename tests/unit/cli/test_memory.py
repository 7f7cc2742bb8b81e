"""`mchat-bot memory list | search | forget | export | import | history` as subprocesses on a temp store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROWS = [
    {
        "id": "m1",
        "text": "X부품 불량률 12%",
        "scope": "channel",
        "team_id": "t1",
        "channel_id": "c1",
        "user_id": "u1",
        "category": "fact",
        "created_at": "2026-11-20T09:00:00+09:00",
        "valid_until": "2026-11-25T09:00:00+09:00",
        "source_post_id": "p1",
        "superseded_by": "m2",
    },
    {
        "id": "m2",
        "text": "X부품 불량률 8%",
        "scope": "channel",
        "team_id": "t1",
        "channel_id": "c1",
        "user_id": "u1",
        "category": "fact",
        "created_at": "2026-11-25T09:00:00+09:00",
        "valid_until": None,
        "source_post_id": "p2",
        "replaces": "m1",
    },
    {
        "id": "m3",
        "text": "나는 아침 회의를 선호함",
        "scope": "user",
        "team_id": "t1",
        "channel_id": "c1",
        "user_id": "u1",
        "category": "preference",
        "created_at": "2026-11-21T09:00:00+09:00",
    },
    {
        "id": "m4",
        "text": "배포는 금요일에 하지 않는다",
        "scope": "team",
        "team_id": "t1",
        "channel_id": "c2",
        "user_id": "u2",
        "category": "decision",
        "created_at": "2026-11-22T09:00:00Z",
    },
    {
        "id": "m5",
        "text": "다른 팀 배포는 월요일",
        "scope": "team",
        "team_id": "t2",
        "channel_id": "c9",
        "user_id": "u9",
        "category": "fact",
        "created_at": "2026-11-22T09:00:00Z",
    },
]


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mchat_bot", "memory", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=120,
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli")
    src = folder / "in.jsonl"
    src.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in ROWS) + "\n", encoding="utf-8")
    out = cli("import", "--path", str(folder / "qdrant"), "--jsonl", str(src))
    assert out.returncode == 0, out.stderr
    assert "imported 5 memories" in out.stderr and "embedding" in out.stderr
    return folder / "qdrant"


def test_the_store_is_readable_by_its_owner_only(store: Path) -> None:
    entries = [store, *store.rglob("*")]
    assert len(entries) > 1
    for entry in entries:
        mode = entry.stat().st_mode & 0o777
        assert mode & 0o077 == 0, f"{entry} is {oct(mode)}: others may read it"


def test_list_with_selection_and_jsonl(store: Path) -> None:
    out = cli("list", "--path", str(store), "--team", "t1", "--jsonl")
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert {r["id"] for r in rows} == {"m1", "m2", "m3", "m4"}  # not the other team's
    m1 = next(r for r in rows if r["id"] == "m1")
    assert (
        m1["created_at"] == "2026-11-20T00:00:00+00:00" and m1["valid_until"] == "2026-11-25T00:00:00+00:00"
    )
    assert set(m1) >= {
        "id",
        "text",
        "scope",
        "team_id",
        "channel_id",
        "user_id",
        "category",
        "created_at",
        "valid_until",
        "source_post_id",
    }
    current = cli("list", "--path", str(store), "--channel", "c1", "--current")
    assert "m2" in current.stdout and "m1\t" not in current.stdout


def test_search_as_a_viewer_and_in_batch(store: Path, tmp_path: Path) -> None:
    out = cli(
        "search", "--path", str(store), "--channel", "c1", "--team", "t1", "--user", "u1", "X부품 불량률"
    )
    assert out.returncode == 0, out.stderr
    first = out.stdout.splitlines()[0]
    assert "\tm2\t" in first and "m1\t" not in out.stdout  # the current version only
    queries = tmp_path / "q.jsonl"
    queries.write_text(
        json.dumps({"id": "q1", "query": "배포 요일", "channel_id": "c5", "user_id": "u7", "team_id": "t1"})
        + "\n"
        + json.dumps({"id": "q2", "query": "회의 선호", "channel_id": "c5", "user_id": "u7", "team_id": "t2"})
        + "\n",
        encoding="utf-8",
    )
    out = cli("search", "--path", str(store), "--jsonl", str(queries), "--limit", "5")
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [line["id"] for line in lines] == ["q1", "q2"]
    assert lines[0]["results"][0]["id"] == "m4" and set(lines[0]["results"][0]) == {"id", "score", "text"}
    assert lines[1]["results"] == []  # the one memory q2 may see is about something else: cut
    every = cli("search", "--path", str(store), "--jsonl", str(queries), "--limit", "5", "--all")
    lines = [json.loads(line) for line in every.stdout.splitlines()]
    assert {r["id"] for r in lines[1]["results"]} == {"m5"}  # team t2, not u1's personal memory


def test_history_export_import_roundtrip_and_forget(store: Path, tmp_path: Path) -> None:
    hist = cli("history", "--path", str(store), "m2", "--jsonl")
    assert [json.loads(line)["id"] for line in hist.stdout.splitlines()] == ["m1", "m2"]
    dump = tmp_path / "dump.jsonl"
    out = cli("export", "--path", str(store), "--jsonl", str(dump))
    assert out.returncode == 0 and "exported 5 memories" in out.stderr
    copy = tmp_path / "copy"
    assert cli("import", "--path", str(copy), "--jsonl", str(dump)).returncode == 0
    again = cli("export", "--path", str(copy))
    assert sorted(again.stdout.splitlines()) == sorted(dump.read_text(encoding="utf-8").splitlines())
    # forget: by id; a selection needs --yes
    assert cli("forget", "--path", str(copy), "m3").returncode == 0
    refused = cli("forget", "--path", str(copy), "--team", "t2")
    assert refused.returncode == 1 and "--yes" in refused.stderr
    assert cli("forget", "--path", str(copy), "--team", "t2", "--yes").returncode == 0
    left = cli("list", "--path", str(copy), "--jsonl").stdout
    assert {json.loads(x)["id"] for x in left.splitlines()} == {"m1", "m2", "m4"}
    assert cli("forget", "--path", str(copy), "nope").returncode == 1


def test_bad_import_line_stores_nothing(tmp_path: Path) -> None:
    src = tmp_path / "bad.jsonl"
    good = '{"id": "a", "text": "ok", "channel_id": "c1"}'
    bad = '{"id": "b", "text": "x", "created_at": "yesterday", "channel_id": "c1"}'
    src.write_text(good + "\n" + bad + "\n")
    out = cli("import", "--path", str(tmp_path / "q"), "--jsonl", str(src))
    assert out.returncode == 1 and "line 2: created_at" in out.stderr
    assert cli("list", "--path", str(tmp_path / "q")).stdout == ""
