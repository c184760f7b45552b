"""Fixtures over tests/harness.py: each test gets its own user and daemons."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import reliability
from harness import (
    DaemonProcess,
    Editor,
    McpdEnv,
    Notifications,
    RawClient,
    SilentServer,
    start_daemon,
)


@pytest.fixture
def mcpd_env(tmp_path: Path) -> McpdEnv:
    root = tmp_path / "home"
    (root / "run").mkdir(parents=True, mode=0o700)
    variables = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(root),
        "XDG_CONFIG_HOME": str(root / "config"),
        "XDG_STATE_HOME": str(root / "state"),
        "XDG_RUNTIME_DIR": str(root / "run"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    return McpdEnv(root, variables)


@pytest.fixture
def run_daemon(mcpd_env: McpdEnv) -> Iterator[Any]:
    """Start mcpd (waiting for READY=1); every daemon started is stopped afterwards."""
    started: list[tuple[DaemonProcess, Notifications]] = []

    def run(*args: str, **kwargs: Any) -> DaemonProcess:
        daemon, notify = start_daemon(mcpd_env, *args, **kwargs)
        started.append((daemon, notify))
        return daemon

    yield run
    for daemon, notify in started:
        daemon.stop()
        notify.close()


@pytest.fixture
def raw_client() -> Iterator[Any]:
    clients: list[RawClient] = []

    def connect(path: Path) -> RawClient:
        client = RawClient(path)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.close()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


@pytest.fixture
def editors(mcpd_env: McpdEnv) -> Iterator[Any]:
    """Start `mcpctl stdio NAME` bridges; all are closed afterwards."""
    started: list[Editor] = []

    def start(server: str) -> Editor:
        editor = Editor(mcpd_env, server, mcpd_env.root / f"editor-{len(started)}.log")
        started.append(editor)
        return editor

    yield start
    for editor in started:
        if editor.process.poll() is None:
            editor.close()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    counts = reliability.recorded()
    if not counts:
        return
    terminalreporter.section("reliability")
    for count in counts:
        terminalreporter.write_line(f"{count.count:>9,}  {count.what}  ({count.test})")
