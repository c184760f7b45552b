"""Fixtures over tests/harness.py: each test gets its own user and daemons.

And the session's secrets scan (tests/leakcheck.py): every test's captured
output and failure report is kept, every user's store is decrypted when its
test ends, and at the end of the session all of mcpd's output is searched for
every secret seen; one found fails the run, naming where, never the secret.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import leakcheck
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
def mcpd_env(tmp_path: Path) -> Iterator[McpdEnv]:
    env = McpdEnv.private(tmp_path / "home", PYTHONDONTWRITEBYTECODE="1")
    yield env
    # After run_daemon's teardown (it depends on this fixture): the daemons are stopped.
    leakcheck.register_store(env.key_file, env.credentials_dir)


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


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    for title, content in report.sections:
        leakcheck.capture(f"{report.nodeid}: {title}", content)
    if report.failed:
        leakcheck.capture(f"{report.nodeid}: failure report ({report.when})", report.longreprtext)


_leaks: list[leakcheck.Finding] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        # A pytest-xdist worker: the controller scans everything and prints the
        # table (it has every test's report, and so their captured outputs).
        workeroutput["leakcheck"] = leakcheck.export()
        workeroutput["reliability"] = reliability.export()
        return
    if not leakcheck.active():
        return
    result = leakcheck.scan()
    if result.findings:
        _leaks.extend(result.findings)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        return
    where = "the session's secrets scan"
    reliability.record("secrets searched for in mcpd's output (none found)", result.secrets, where)
    reliability.record("files of mcpd output scanned (logs, mcpctl, bridges)", result.files, where)
    reliability.record("captured test outputs and failure reports scanned", result.outputs, where)
    reliability.record("bytes scanned", result.bytes, where)
    reliability.record("credential stores decrypted for their secrets", result.stores_read, where)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """pytest-xdist, in the controller: a worker's registrations and counts."""
    output = getattr(node, "workeroutput", {})
    if "leakcheck" in output:
        leakcheck.merge(output["leakcheck"])
        reliability.merge(output["reliability"])


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _leaks:
        terminalreporter.section("SECRETS LEAKED", red=True, bold=True)
        for finding in _leaks:
            kinds = ", ".join(f"{n} x {kind}" for kind, n in sorted(finding.kinds.items()))
            terminalreporter.write_line(f"{finding.where}: {kinds}", red=True)
            terminalreporter.write_line(f"    ...{finding.context}...")
        terminalreporter.write_line(
            "The run fails: these outputs hold secrets a test saw (the secrets are not shown)."
        )
    counts = reliability.recorded()
    if not counts:
        return
    terminalreporter.section("reliability")
    for count in counts:
        terminalreporter.write_line(f"{count.count:>9,}  {count.what}  ({count.test})")
