"""What every benchmark shares: figures as median and p99, timing, and a
daemon of its own in a private XDG tree."""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from harness import McpdEnv, start_daemon  # noqa: E402

BIN = Path(sys.executable).parent


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {"median_ms": statistics.median(ordered) * 1000, "p99_ms": p99 * 1000, "n": len(ordered)}


def timed(action: Callable[[], Any], runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return samples


@contextmanager
def daemon_env(config: str = "") -> Iterator[tuple[McpdEnv, Any]]:
    with tempfile.TemporaryDirectory(prefix="mcpd-bench-") as root:
        home = Path(root) / "home"
        (home / "run").mkdir(parents=True, mode=0o700)
        env = McpdEnv(
            home,
            {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": str(home),
                "XDG_CONFIG_HOME": str(home / "config"),
                "XDG_STATE_HOME": str(home / "state"),
                "XDG_RUNTIME_DIR": str(home / "run"),
            },
        )
        if config:
            env.write_config(config)
        daemon, notify = start_daemon(env)
        try:
            yield env, daemon
        finally:
            daemon.stop()
            notify.close()
