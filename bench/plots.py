"""The bench's figures, next to results.md: latency CDFs per phase and replies/s over time per step.

Phases are bench/run.py's `Phase` objects (read by attribute: bot, name, rate, overhead_ms, reply_times,
t0, t_end), so this module needs matplotlib and nothing else of the bench.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

COLOURS = {"mchat-bot": "tab:blue", "mchat-bot, use": "tab:green", "mmpy_bot": "tab:red"}
BIN_S = 0.5  # the throughput plot's bin


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: no plots (pip install matplotlib)", file=sys.stderr)
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _grid(plt: Any, n: int, cols: int = 4) -> tuple[Any, list[Any]]:
    rows = max(1, math.ceil(n / cols))
    cols = min(cols, max(1, n))
    # wide enough for the title even with one panel
    fig, axes = plt.subplots(rows, cols, figsize=(max(8.0, 4.2 * cols), 3.6 * rows), squeeze=False)
    flat = [ax for line in axes for ax in line]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _loads(phases: list[Any], names: tuple[str, ...]) -> list[tuple[str, float]]:
    """(name, rate) of every load some bot ran, fixed rates first, in rate order."""
    seen = {(p.name, p.rate) for p in phases if p.name in names}
    return sorted(seen, key=lambda k: (names.index(k[0]), k[1]))


def latency_cdfs(phases: list[Any], path: Path, title: str) -> bool:
    """One panel per load (fixed rates, then the steps), a CDF of overhead per bot, log x."""
    plt = _pyplot()
    loads = _loads(phases, ("mentions", "step"))
    if plt is None or not loads:
        return False
    from matplotlib import ticker

    fig, axes = _grid(plt, len(loads))
    for ax, (name, rate) in zip(axes, loads, strict=True):
        for p in phases:
            if (p.name, p.rate) != (name, rate) or not p.overhead_ms:
                continue
            xs = sorted(max(x, 0.01) for x in p.overhead_ms)
            ys = [(i + 1) / len(xs) for i in range(len(xs))]
            lost = "" if p.replied == p.posted else f", {p.posted - p.replied} unanswered"
            ax.plot(xs, ys, color=COLOURS.get(p.bot, "grey"), lw=1.3, label=f"{p.bot}{lost}")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x:g}"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_title(f"{'step' if name == 'step' else 'fixed'} {rate:.0f} mentions/s", fontsize=9)
        ax.set_xlabel("overhead ms (log)", fontsize=8)
        ax.set_ylabel("fraction of replies", fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"Reply overhead CDFs (posted written → reply POST)\n{title}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def step_throughput(phases: list[Any], path: Path, title: str) -> bool:
    """One panel per step rate: replies/s over time since the phase began, both bots on one axis,
    the offered rate dotted. A bot that lagged at a lower step has no line in the later panels."""
    plt = _pyplot()
    loads = _loads(phases, ("step",))
    if plt is None or not loads:
        return False
    fig, axes = _grid(plt, len(loads))
    for ax, (_, rate) in zip(axes, loads, strict=True):
        end = 0.0
        for p in phases:
            if (p.name, p.rate) != ("step", rate) or not p.reply_times:
                continue
            times = [t - p.t0 for t in p.reply_times]
            end = max(end, max(times), p.t_end - p.t0)
            counts = [0] * (int(max(times) / BIN_S) + 1)
            for t in times:
                counts[max(0, int(t / BIN_S))] += 1
            ax.plot(
                [(i + 0.5) * BIN_S for i in range(len(counts))],
                [c / BIN_S for c in counts],
                color=COLOURS.get(p.bot, "grey"),
                lw=1.2,
                label=f"{p.bot} ({p.replied}/{p.posted}{'' if p.sustained else ', lagged'})",
            )
            ax.hlines(rate, 0, p.t_end - p.t0, colors="black", linestyles="dotted", lw=1)
        ax.set_xlim(0, max(end, 1.0))
        ax.set_ylim(bottom=0)
        ax.set_title(f"step {rate:.0f} mentions/s offered (dotted)", fontsize=9)
        ax.set_xlabel("seconds since the phase began", fontsize=8)
        ax.set_ylabel(f"replies/s ({BIN_S} s bins)", fontsize=8)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Throughput over time in the step phases\n{title}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
