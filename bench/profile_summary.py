"""Top functions of a py-spy raw profile (collapsed stacks), as text a closing note can quote.

    python bench/profile_summary.py bench/out/profile-mchat-bot-gil.txt [--top 25]

Each line of py-spy's `--format raw` is `frame;frame;...;frame COUNT`, a frame `function (file:line)`.
Self = samples where the function is the innermost frame; inclusive = samples where it is anywhere on
the stack (counted once per stack, so recursion does not inflate it). Line numbers are dropped so that
a function's lines add up. With `--gil` a sample is only taken while a thread holds the GIL, which is
what costs the event loop time.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

FRAME_RE = re.compile(r"^(?P<func>.*) \((?P<file>.*?)(?::\d+)?\)$")


@dataclass
class Profile:
    samples: int
    self_: Counter[str]
    inclusive: Counter[str]


def function_of(frame: str) -> str | None:
    """`func (file:line)` -> `func (file)`; py-spy's thread/process pseudo-frames -> None."""
    if frame.startswith(("thread (", "process ")):
        return None
    m = FRAME_RE.match(frame.strip())
    return f"{m['func']} ({m['file']})" if m else frame.strip()


def parse(text: str) -> Profile:
    prof = Profile(0, Counter(), Counter())
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        funcs = [f for f in (function_of(fr) for fr in stack.split(";")) if f]
        prof.samples += n
        if funcs:
            prof.self_[funcs[-1]] += n
        for f in set(funcs):
            prof.inclusive[f] += n
    return prof


def summary(prof: Profile, title: str, top: int = 25, instants: int = 0) -> str:
    """The two top-N tables; `instants` (rate × seconds) says how many samples py-spy tried, so a
    --gil profile also tells how often any thread held the GIL."""

    def table(counts: Counter[str]) -> list[str]:
        return [
            f"  {n:7d}  {100 * n / max(1, prof.samples):5.1f}%  {name}" for name, n in counts.most_common(top)
        ]

    return "\n".join(
        [
            f"{title}: {prof.samples} samples"
            + (
                f" of ~{instants} sampling instants ({100 * prof.samples / instants:.0f}%)"
                if instants
                else ""
            ),
            "",
            f"top {top} by self samples (the innermost frame):",
            *table(prof.self_),
            "",
            f"top {top} inclusive (anywhere on the stack):",
            *table(prof.inclusive),
            "",
        ]
    )


def write_summary(raw: Path, title: str, top: int = 25, instants: int = 0) -> Path | None:
    """`raw`'s summary next to it (NAME.top.txt); None when py-spy wrote nothing."""
    if not raw.exists():
        return None
    out = raw.with_name(raw.stem + ".top.txt")
    out.write_text(summary(parse(raw.read_text(errors="replace")), title, top, instants))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("raw", type=Path)
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args(argv)
    print(summary(parse(args.raw.read_text(errors="replace")), str(args.raw), args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
