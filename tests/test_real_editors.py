"""Real editors, offline: after `mcpctl install EDITOR`, the editor's own health
check reports every installed server connected, through mcpd.

The editors are the npm packages tests/peers/install.sh installs at exact
versions (Claude Code, Gemini CLI, opencode, Codex; `real_peers.editors_bin`),
each run as its user would run it: `claude mcp list`, `gemini mcp list`,
`opencode mcp list`, and Codex's `codex app-server` asked
`mcpServerStatus/list` (Codex's own `mcp list` only prints its configuration).
Every editor runs in a network namespace of its own with only a loopback
(`unshare -rn`, then `ip link set lo up`), in the throwaway HOME of a private
user (tests/harness.py's McpdEnv) whose editor files only `mcpctl install`
wrote, with variables that turn off its telemetry, updates and trust prompts.
The daemon's Unix socket is a file, so the bridges the editors start reach
it from inside; the MCP servers listen on the loopback *outside*, which the
namespace's own loopback is not, so they are reached through mcpd or not at
all (`test_inside_the_namespace_only_mcpd_reaches_the_servers` shows both).
No editor needs a model, an account or a key for these commands.

A server in `needs_auth` that was never signed in (the demo server): mcpd
answers the editor's `initialize` with an error whose message holds the
sign-in link (mcpd/signed_out.py; -32042 to an editor that declared URL
elicitation). Claude Code shows that message, link included (with the
server's name in it replaced by `[redacted]`); the link, opened as a browser
would, signs in, and `claude mcp list` then shows the server connected.
opencode and Codex show the message too; Gemini CLI shows `Disconnected` and
no text at all.
"""

from __future__ import annotations

import json
import queue
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import leakcheck
import pytest
from demo_peer import demo_server
from harness import MCPCTL, McpdEnv, browse, server_config, start_daemon, wait_state
from real_peers import (
    Peer,
    PeersNotInstalledError,
    editors_bin,
    node22,
    python_server,
    server_everything,
)

pytestmark = pytest.mark.timeout(120)

UNSHARE = shutil.which("unshare")
IP = shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/sbin")
RUN_TIMEOUT = 60.0
ANSI = re.compile(r"\x1b\[[0-9;]*m")
LINK = re.compile(r"http://127\.0\.0\.1:\d+/connect/[A-Za-z0-9_-]+")

# What each editor honours to stay quiet: no telemetry, update checks, error
# reports or non-essential traffic (nothing could get out anyway), and no
# folder-trust question (Gemini CLI leaves every server disabled in a folder
# it does not trust).
QUIET = {
    "CI": "1",
    "TERM": "dumb",
    "NO_COLOR": "1",
    "DO_NOT_TRACK": "1",
    "NO_UPDATE_NOTIFIER": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "GEMINI_TELEMETRY_ENABLED": "false",
    "GEMINI_CLI_NO_RELAUNCH": "true",
    "GEMINI_CLI_TRUST_WORKSPACE": "true",
    "OPENCODE_DISABLE_AUTOUPDATE": "1",
    "OPENCODE_DISABLE_MODELS_FETCH": "1",
    "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
    "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1",
    "OPENCODE_DISABLE_SHARE": "1",
}

EDITORS = ("claude-code", "gemini", "opencode", "codex")


def offline(argv: list[str]) -> list[str]:
    """`argv` in a new user and network namespace whose only interface is a loopback."""
    assert UNSHARE is not None, "util-linux's `unshare` is needed (apt-get install util-linux)"
    assert IP is not None, "iproute2's `ip` is needed (apt-get install iproute2)"
    up = f'{shlex.quote(IP)} link set lo up && exec "$@"'
    return [UNSHARE, "-rn", "sh", "-c", up, "sh", *argv]


def namespaces_work() -> None:
    if UNSHARE is None:
        pytest.fail("util-linux's `unshare` is not on PATH: the editors cannot be run offline")
    result = subprocess.run(
        offline(["true"]), capture_output=True, text=True, timeout=30, check=False
    )
    if result.returncode != 0:
        pytest.fail(
            "`unshare -rn` does not work here (unprivileged user namespaces disabled?), so "
            f"the editors cannot be run offline: {result.stderr.strip()}"
        )


@dataclass
class User:
    """One user: a daemon, its servers, and a HOME its editors share."""

    env: McpdEnv
    daemon: Any

    @property
    def home(self) -> Path:
        return self.env.root

    @property
    def project(self) -> Path:
        """The folder the editors run in (a project of the user's, empty)."""
        path = self.home / "project"
        path.mkdir(exist_ok=True)
        return path

    def editor_env(self) -> dict[str, str]:
        """The user's session as an editor gets it: the user's own XDG
        variables, Node 22 and the editors on PATH, and QUIET."""
        keep = ("HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_RUNTIME_DIR")
        return {
            **{key: self.env.vars[key] for key in keep},
            "PATH": f"{node22().parent}:{editors_bin()}:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            **QUIET,
        }

    def install(self, editor: str) -> None:
        done = self.env.mcpctl("install", editor)
        assert done.returncode == 0, done.stdout + done.stderr

    def run(self, *argv: str) -> str:
        """An editor's command, offline; its stdout and stderr, ANSI codes taken out
        (opencode prints them even with NO_COLOR), also kept under HOME for the
        session's secrets scan."""
        started = time.monotonic()
        result = subprocess.run(
            offline(list(argv)),
            env=self.editor_env(),
            cwd=self.project,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )
        output = ANSI.sub("", result.stdout + result.stderr)
        took = time.monotonic() - started
        kept = self.home / "editor-output.log"
        with kept.open("a") as log:
            log.write(f"$ {shlex.join(argv)}  (exit {result.returncode}, {took:.1f} s)\n{output}\n")
        return output

    def codex_status(self) -> dict[str, dict[str, Any]]:
        """Codex's own view of its MCP servers: `mcpServerStatus/list` asked of
        `codex app-server` (JSON-RPC lines on stdio), per server name."""
        with AppServer(self) as codex:
            codex.request(
                "initialize",
                {
                    "clientInfo": {"name": "mcpd-tests", "version": "0"},
                    "capabilities": {"experimentalApi": True},
                },
            )
            codex.notify("initialized")
            listed = codex.request("mcpServerStatus/list", {})
        kept = self.home / "editor-output.log"
        with kept.open("a") as log:
            log.write(f"codex app-server mcpServerStatus/list:\n{json.dumps(listed)}\n")
        return {server["name"]: server for server in listed["data"]}


class AppServer:
    """`codex app-server`, offline, driven as its IDE extensions drive it."""

    def __init__(self, user: User) -> None:
        self.stderr_path = user.home / "codex-app-server.stderr.log"
        self._stderr = self.stderr_path.open("ab")
        self.process = subprocess.Popen(
            offline(["codex", "app-server"]),
            env=user.editor_env(),
            cwd=user.project,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.next_id = 0

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def _send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()

    def notify(self, method: str) -> None:
        self._send({"jsonrpc": "2.0", "method": method})

    def request(self, method: str, params: dict[str, Any]) -> Any:
        self.next_id += 1
        request_id = self.next_id
        self._send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        deadline = time.monotonic() + RUN_TIMEOUT
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.process.poll() is not None:
                raise AssertionError(
                    f"no answer to {method} from codex app-server; stderr:\n"
                    + self.stderr_path.read_text(errors="replace")
                )
            try:
                message = json.loads(self.lines.get(timeout=min(remaining, 0.5)))
            except queue.Empty:
                continue
            if "method" in message and "id" in message:  # asks the host something: no
                refusal = {"code": -32601, "message": "not supported by the test"}
                self._send({"jsonrpc": "2.0", "id": message["id"], "error": refusal})
            elif message.get("id") == request_id:
                assert "error" not in message, f"{method}: {message['error']}"
                return message["result"]

    def __enter__(self) -> AppServer:
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()  # the end of its input ends it
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.reader.join(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._stderr.close()


def installed(user: User, editor: str) -> dict[str, list[str]]:
    """The editor's entries that launch this mcpctl, as `mcpctl install` wrote
    them into its user file: name -> the command line."""
    home = user.home
    if editor == "codex":
        entries = tomllib.loads((home / ".codex" / "config.toml").read_text())["mcp_servers"]
        argv = {name: [e["command"], *e["args"]] for name, e in entries.items()}
    elif editor == "opencode":
        config = json.loads((home / "config" / "opencode" / "opencode.json").read_text())
        argv = {name: e["command"] for name, e in config["mcp"].items()}
    else:
        file = home / (".claude.json" if editor == "claude-code" else ".gemini/settings.json")
        entries = json.loads(file.read_text())["mcpServers"]
        argv = {name: [e["command"], *e["args"]] for name, e in entries.items()}
    return {name: command for name, command in argv.items() if command[0] == MCPCTL}


@pytest.fixture(scope="module")
def python_peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    with python_server(tmp_path_factory.mktemp("python-server")) as peer:
        yield peer


@pytest.fixture(scope="module")
def connected(tmp_path_factory: pytest.TempPathFactory, python_peer: Peer) -> Iterator[User]:
    """A user whose daemon has two real servers connected (the Python SDK's and
    server-everything), with `mcpctl install EDITOR` done for the four editors."""
    namespaces_work()
    root = tmp_path_factory.mktemp("editors-connected")
    env = McpdEnv.private(root / "home", PYTHONDONTWRITEBYTECODE="1")
    with server_everything(root) as everything:
        env.write_config(
            "[daemon]\ncallback_port = 0\n"
            + server_config("python", python_peer.url)
            + server_config("everything", everything.url)
        )
        daemon, notify = start_daemon(env)
        try:
            for name in ("python", "everything"):
                wait_state(daemon, name, "connected")
            user = User(env, daemon)
            for editor in EDITORS:
                user.install(editor)
            yield user
        finally:
            daemon.stop()
            notify.close()
            leakcheck.register_store(env.key_file, env.credentials_dir)


@pytest.fixture
def signed_out(mcpd_env: McpdEnv, run_daemon: Any, python_peer: Peer, tmp_path: Path):
    """A user with the Python server connected and the demo server, never
    signed in to, in `needs_auth` (nothing kept of it), installed into the four
    editors."""
    namespaces_work()
    with demo_server(tmp_path) as demo:
        mcpd_env.write_config(
            "[daemon]\ncallback_port = 0\n"
            + server_config("python", python_peer.url)
            + server_config("demo", demo.url)
        )
        daemon = run_daemon()
        wait_state(daemon, "python", "connected")
        wait_state(daemon, "demo", "needs_auth")
        user = User(mcpd_env, daemon)
        for editor in EDITORS:
            user.install(editor)
        yield user


def test_inside_the_namespace_only_mcpd_reaches_the_servers(connected, python_peer):
    """The namespace's loopback is its own: the servers are not there, mcpd's socket is."""
    probe = (
        "import socket, sys\n"
        "try:\n"
        f"    socket.create_connection(('127.0.0.1', {python_peer.port}), timeout=5)\n"
        "except OSError as error:\n"
        "    print('refused:', error)\n"
        "else:\n"
        "    print('reached')\n"
    )
    assert connected.run(sys.executable, "-c", probe).startswith("refused:")
    status = connected.run(MCPCTL, "status")
    assert re.search(r"^python +connected ", status, re.MULTILINE), status
    assert re.search(r"^everything +connected ", status, re.MULTILINE), status


@pytest.mark.parametrize("editor", EDITORS)
def test_the_editors_own_health_check_shows_every_installed_server_connected(connected, editor):
    entries = installed(connected, editor)
    assert sorted(entries) == ["everything", "python"]
    commands = {name: shlex.join(argv) for name, argv in entries.items()}

    if editor == "claude-code":
        output = connected.run("claude", "mcp", "list")
        shown = re.findall(r"^(\S+): .* - (.+)$", output, re.MULTILINE)
        for name, command in commands.items():
            assert f"{name}: {command} - ✔ Connected" in output.splitlines(), output
    elif editor == "gemini":
        output = connected.run("gemini", "mcp", "list")
        shown = re.findall(r"^. (\S+): .* - (\S+)$", output, re.MULTILINE)
        for name, command in commands.items():
            assert f"✓ {name}: {command} (stdio) - Connected" in output.splitlines(), output
    elif editor == "opencode":
        # opencode's list connects, initializes and lists the tools of each server.
        output = connected.run("opencode", "mcp", "list")
        shown = re.findall(r"^●\s+. (\S+) (\S+)$", output, re.MULTILINE)
        for name in commands:
            assert re.search(rf"^●\s+✓ {name} connected$", output, re.MULTILINE), output
    else:
        status = connected.codex_status()
        shown = [(name, server["toolsError"]) for name, server in status.items()]
        for name in commands:
            assert status[name]["toolsError"] is None, status[name]
            assert status[name]["serverInfo"]["name"], status[name]
            assert status[name]["tools"], status[name]
        assert "echo" in status["python"]["tools"]
        assert "echo" in status["everything"]["tools"]
    # Every server the editor lists is one of those (and shown once).
    assert sorted(name for name, _ in shown) == sorted(commands), shown


def test_claude_code_shows_the_sign_in_link_which_signs_in(signed_out):
    entries = installed(signed_out, "claude-code")
    command = shlex.join(entries["demo"])
    output = signed_out.run("claude", "mcp", "list")
    [line] = [line for line in output.splitlines() if line.startswith(f"demo: {command} - ")]
    # Claude Code declares URL elicitation: mcpd's answer to its initialize is
    # -32042, whose message holds the link; Claude Code redacts the name.
    assert line.startswith(f"demo: {command} - ✘ Failed to connect — -32042: "), output
    [link] = LINK.findall(line)
    assert "open " + link + " in a browser" in line
    assert "mcpctl auth [redacted]" in line
    assert f"python: {shlex.join(entries['python'])} - ✔ Connected" in output.splitlines()

    # The user opens the link Claude Code showed (in a browser outside the
    # namespace): the daemon's listener starts the sign-in, the demo
    # authorization server approves, and the server is connected.
    assert browse(link)[0] == 200
    wait_state(signed_out.daemon, "demo", "connected")
    again = signed_out.run("claude", "mcp", "list")
    assert f"demo: {command} - ✔ Connected" in again.splitlines(), again


def test_the_other_editors_show_a_signed_out_server_as_failed(signed_out):
    # opencode declares no elicitation: the error is -32001, its message the link.
    output = signed_out.run("opencode", "mcp", "list")
    failed = re.search(r"^●\s+✗ demo failed\n│\s+(.*)$", output, re.MULTILINE)
    assert failed is not None, output
    assert failed.group(1).startswith("MCP error -32001: Sign in to use this server (")
    assert ": open http://127.0.0.1:" in failed.group(1)
    [link] = LINK.findall(failed.group(1))
    assert "mcpctl auth demo" in failed.group(1)
    assert re.search(r"^●\s+✓ python connected$", output, re.MULTILINE), output

    # Codex declares URL elicitation (while offering 2025-06-18): -32042, and
    # its toolsError repeats the message, the one link (one per server at a time).
    status = signed_out.codex_status()
    assert status["demo"]["serverInfo"] is None
    error = status["demo"]["toolsError"]
    assert "JSON-RPC error: -32042: " in error, error
    assert set(LINK.findall(error)) == {link}
    assert status["python"]["toolsError"] is None

    # Gemini CLI shows no error text at all (even with --debug), only that the
    # server is not connected.
    output = signed_out.run("gemini", "mcp", "list")
    demo = shlex.join(installed(signed_out, "gemini")["demo"])
    assert f"✗ demo: {demo} (stdio) - Disconnected" in output.splitlines(), output
    assert "/connect/" not in output
    assert re.search(r"^✓ python: .* - Connected$", output, re.MULTILINE), output


def test_missing_or_stale_editors_say_to_run_install_sh(tmp_path, monkeypatch):
    monkeypatch.setenv("MCPD_PEERS_CACHE", str(tmp_path))
    with pytest.raises(PeersNotInstalledError, match=r"bash tests/peers/install\.sh"):
        editors_bin()
    (tmp_path / "editors").mkdir()
    (tmp_path / "editors" / "installed-versions").write_text("opencode-ai@0.0.1\n")
    with pytest.raises(PeersNotInstalledError, match=r"not \['@anthropic-ai/claude-code@"):
        editors_bin()
