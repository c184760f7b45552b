"""What every benchmark shares: figures as median and p99, timing, and a
daemon of its own in a private XDG tree."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from harness import DaemonProcess, McpdEnv, start_daemon  # noqa: E402

BIN = Path(sys.executable).parent


def percentile(ordered: list[float], q: float) -> float:
    """The sample at fraction `q` of sorted samples (nearest rank, from below)."""
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = percentile(ordered, 0.99)
    return {"median_ms": statistics.median(ordered) * 1000, "p99_ms": p99 * 1000, "n": len(ordered)}


def timed(action: Callable[[], Any], runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return samples


# A directory holding another `mcpd` package (`git archive REV mcpd | tar -x -C DIR`)
# for the daemon and the bridges to run instead of the installed one.
SOURCE_VARIABLE = "MCPD_BENCH_SOURCE"
# What the benchmarks' editors send to initialize.
INITIALIZE = {
    "protocolVersion": "2025-11-25",
    "capabilities": {},
    "clientInfo": {"name": "bench", "version": "1"},
}


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for pid {pid}")


@contextmanager
def installed_product() -> Iterator[Path]:
    """The bin directory of the project installed as the README says (`pip install .`,
    into a venv of its own, from a copy of the work tree so that setuptools'
    build directory stays out of it). For what times a process's start: an
    editable install adds its import hook to every Python start (about 25 ms
    here), which no user's `mcpctl` pays."""
    with tempfile.TemporaryDirectory(prefix="mcpd-bench-install-") as root:
        source = Path(root) / "source"
        shutil.copytree(
            REPO,
            source,
            ignore=shutil.ignore_patterns(".*", "build", "*.egg-info", "__pycache__", "results"),
        )
        venv = Path(root) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", str(source)], check=True)
        yield venv / "bin"


@contextmanager
def private_env(
    config: str = "", python_path: Sequence[str] = (), **extra: str
) -> Iterator[McpdEnv]:
    """A user's private XDG tree, for a daemon of its own (with `extra` in its
    environment, and `python_path` before the source under test)."""
    with tempfile.TemporaryDirectory(prefix="mcpd-bench-") as root:
        source = os.environ.get(SOURCE_VARIABLE)
        path = [*python_path, *([source] if source else [])]
        if path:
            extra["PYTHONPATH"] = os.pathsep.join(path)
        env = McpdEnv.private(Path(root) / "home", **extra)
        env.write_config(config)
        yield env


@contextmanager
def daemon_env(
    config: str = "", python_path: Sequence[str] = (), **extra: str
) -> Iterator[tuple[McpdEnv, DaemonProcess]]:
    """A private XDG tree with mcpd running in it (ready); see private_env."""
    with private_env(config, python_path, **extra) as env:
        daemon, notify = start_daemon(env)
        try:
            yield env, daemon
        finally:
            daemon.stop()
            notify.close()
