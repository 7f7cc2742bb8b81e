"""A throwaway PostgreSQL cluster for the tests: ``initdb`` into a temporary folder, 127.0.0.1 on a
free port, stopped and deleted at the end.

PostgreSQL refuses to run as root, and CI runs as root: then the cluster belongs to an
unprivileged user (``nobody``, or ``MCHAT_TEST_PG_USER``) and its programs run as that user. The
binaries are found on PATH or in Debian's ``/usr/lib/postgresql/<version>/bin``. Without them the
tests that need PostgreSQL are skipped locally and fail in CI (``CI`` set), never skipped silently.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

START_TIMEOUT_S = 30
ADMIN = "mchat"
# a test cluster needs no durability: a killed test run is thrown away anyway
FAST_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off", "max_connections=200")


class ClusterUnavailable(RuntimeError):
    """No PostgreSQL binaries, no unprivileged user, or the server would not start."""


def pg_bin(name: str) -> str:
    """The path of a PostgreSQL program (``initdb``, ``pg_ctl``): PATH first, then Debian's folders."""
    found = shutil.which(name)
    if found:
        return found
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        candidate = Path(folder) / name
        if candidate.exists():
            return str(candidate)
    raise ClusterUnavailable(
        f"{name} not found on PATH or in /usr/lib/postgresql/*/bin (apt-get install postgresql)"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresCluster:
    """One running cluster; :meth:`url` names a database in it (``create_database`` makes one)."""

    folder: Path
    port: int
    password: str
    user: str | None  # the OS user it runs as, None for the current one

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{ADMIN}:{self.password}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = START_TIMEOUT_S) -> None:
        ids = _ids(self.user)
        proc = subprocess.run(
            list(args),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.folder,
            env={**os.environ, "LC_ALL": "C", "HOME": str(self.folder)},
            **ids,  # type: ignore[arg-type]
        )
        if proc.returncode != 0:
            raise ClusterUnavailable(f"{Path(args[0]).name} failed: {(proc.stderr or proc.stdout)[-800:]}")

    def start(self) -> None:
        settings = (*FAST_SETTINGS, "listen_addresses=127.0.0.1", f"unix_socket_directories={self.folder}")
        options = " ".join(f"-c {s}" for s in settings)
        self._run(
            pg_bin("pg_ctl"),
            "start",
            "-w",
            "-t",
            str(START_TIMEOUT_S),
            "-D",
            str(self.data),
            "-l",
            str(self.folder / "server.log"),
            "-o",
            f"-p {self.port} {options}",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run(pg_bin("pg_ctl"), "stop", "-w", "-m", mode, "-D", str(self.data))

    def restart(self) -> None:
        self.stop()
        self.start()

    def remove(self) -> None:
        with contextlib.suppress(ClusterUnavailable, subprocess.TimeoutExpired, OSError):
            self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)


def _ids(user: str | None) -> dict[str, object]:
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _run_as() -> str | None:
    """None when not root; else the unprivileged user the cluster runs as."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get("MCHAT_TEST_PG_USER", "nobody")
    try:
        pwd.getpwnam(name)
    except KeyError:
        raise ClusterUnavailable(
            f"running as root and there is no user {name!r} to run PostgreSQL as"
        ) from None
    return name


def start_cluster() -> PostgresCluster:
    """initdb + start; the caller removes it (``cluster.remove()``)."""
    initdb = pg_bin("initdb")
    user = _run_as()
    # as root, under /tmp (which every user can enter) rather than a TMPDIR the server's user may not
    folder = Path(tempfile.mkdtemp(prefix="mchat-pg-", dir="/tmp" if user else None))
    password = secrets.token_hex(16)
    (folder / "pw").write_text(password + "\n")
    if user is not None:
        ids = _ids(user)
        os.chown(folder, int(ids["user"]), int(ids["group"]))  # type: ignore[call-overload]
        os.chown(folder / "pw", int(ids["user"]), int(ids["group"]))  # type: ignore[call-overload]
    cluster = PostgresCluster(folder=folder, port=free_port(), password=password, user=user)
    try:
        cluster._run(
            initdb,
            "-D",
            str(cluster.data),
            "-U",
            ADMIN,
            "--pwfile",
            str(folder / "pw"),
            "--auth=scram-sha-256",
            "-E",
            "UTF8",
            "--no-sync",
            timeout=120,
        )
        for attempt in range(3):  # the free port may be taken between the probe and the start
            try:
                cluster.start()
                break
            except ClusterUnavailable:
                if attempt == 2:
                    raise
                cluster.port = free_port()
    except BaseException:
        cluster.remove()
        raise
    return cluster


def unavailable(reason: str) -> None:
    """Skip locally, fail in CI: a CI run must not pass without the PostgreSQL tests."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"PostgreSQL tests cannot run in CI: {reason}")
    pytest.skip(f"no PostgreSQL for the tests: {reason}")
