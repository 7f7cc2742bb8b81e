"""The daemon's process runs its math single-threaded: an idle pool of BLAS threads spins on a core."""

from __future__ import annotations

import os
import subprocess
import sys

CODE = """
import contextlib, os, sys
from mchat_bot.cli.main import main
with contextlib.suppress(SystemExit), contextlib.redirect_stdout(open(os.devnull, "w")):
    main(["run", "--help"])  # builds the whole parser, which imports numpy
import numpy
numpy.ones((64, 64)) @ numpy.ones((64, 64))
print("numpy" in sys.modules, len(os.listdir("/proc/self/task")))
"""


def test_numpy_gets_no_blas_thread_pool() -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    imported, threads = out.stdout.split()
    assert imported == "True"
    assert threads == "1", f"{threads} threads: a BLAS pool was started"


def test_an_operators_setting_wins() -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")} | {
        "OPENBLAS_NUM_THREADS": "2"
    }
    out = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[1] == "2"
