"""mcpctl against the real daemon: status, JSON, watch, shutdown, and how it
behaves without a daemon."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from harness import MCPCTL, imported_modules

from mcpctl import cli, entry

# Servers that stay `connecting` (see SilentServer), and one disabled.
CONFIG = """
[servers.linear]
url = "LINEAR_URL"

[servers.internal]
url = "INTERNAL_URL"
headers = { Authorization = "Bearer {env:MCP_API_KEY}" }
oauth = false

[servers.github]
url = "https://api.githubcopilot.com/mcp/"
enabled = false
oauth = { client_id = "Iv1.abc", scope = "repo read:org" }
"""


def _config(silent) -> str:
    return CONFIG.replace("LINEAR_URL", silent.url("linear")).replace(
        "INTERNAL_URL", silent.url("internal")
    )


def test_status_table_and_json(mcpd_env, run_daemon, silent):
    mcpd_env.write_config(_config(silent))
    mcpd_env.vars["MCP_API_KEY"] = "k"
    run_daemon()
    table = mcpd_env.mcpctl("status")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["NAME", "STATE", "URL", "TOKEN"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["linear"][1:3] == ["connecting", silent.url("linear")]
    assert rows["internal"][1] == "connecting"
    assert rows["github"][1] == "disabled"

    data = json.loads(mcpd_env.mcpctl("status", "--json").stdout)
    by_name = {s["name"]: s for s in data["servers"]}
    assert list(by_name) == ["linear", "internal", "github"]
    assert by_name["github"]["state"] == "disabled"
    for server in data["servers"]:
        assert {"access_expires_at", "last_refresh_at", "next_refresh_at", "next_retry_at"} <= set(
            server
        )
        assert server["error"] is None

    one = json.loads(mcpd_env.mcpctl("status", "linear", "--json").stdout)
    assert [s["name"] for s in one["servers"]] == ["linear"]


def test_status_of_unknown_server_names_the_configured_ones(mcpd_env, run_daemon, silent):
    mcpd_env.write_config(_config(silent))
    mcpd_env.vars["MCP_API_KEY"] = "k"
    run_daemon()
    result = mcpd_env.mcpctl("status", "nope")
    assert result.returncode == 1
    assert "no server named 'nope'" in result.stderr
    assert "github, internal, linear" in result.stderr


def test_status_with_no_servers_says_how_to_add_one(mcpd_env, run_daemon):
    run_daemon()
    result = mcpd_env.mcpctl("status")
    assert result.returncode == 0
    assert "no servers configured" in result.stdout


def test_not_running_is_reported_quickly_with_how_to_start(mcpd_env):
    started = time.monotonic()
    result = mcpd_env.mcpctl("status")
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert "mcpd is not running" in result.stderr
    assert "systemctl --user enable --now mcpd.socket" in result.stderr
    assert str(mcpd_env.socket) in result.stderr
    assert elapsed < 1.0, f"mcpctl took {elapsed:.2f}s to say the daemon is not running"


def test_a_bridge_reads_a_file_or_dev_null_as_its_input(mcpd_env, tmp_path):
    """epoll refuses regular files and /dev/null: such an input is read to its
    end (which ends the bridge), each request answered."""
    requests = tmp_path / "requests.jsonl"
    requests.write_text('{"jsonrpc": "2.0", "id": 7, "method": "ping"}\n')
    for source in (requests, "/dev/null"):
        with open(source, "rb") as stdin:
            result = subprocess.run(
                [MCPCTL, "stdio", "linear"],
                env=mcpd_env.vars,
                stdin=stdin,
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        assert "mcpd is not running" in result.stderr
        answers = [json.loads(line) for line in result.stdout.splitlines()]
        if source == requests:
            [answer] = answers
            assert answer["id"] == 7
            assert "mcpd is not running" in answer["error"]["message"]
        else:
            assert answers == []


def test_mcpctl_never_imports_the_daemons_dependencies(mcpd_env, run_daemon, silent):
    mcpd_env.write_config(_config(silent))
    mcpd_env.vars["MCP_API_KEY"] = "k"
    run_daemon()
    imported, stdout = imported_modules(mcpd_env, "status")
    assert "msgspec" in imported
    assert "mcpd.protocol" in imported
    heavy = {"anyio", "cryptography", "httpx", "h11", "asyncio", "mcpd.daemon", "mcpd.store"}
    heavy |= {"dataclasses"}  # 4 ms of a start of 150 here
    # typing_extensions is refused (clients/entry.py): `-X importtime` lists the
    # attempt, but not the inspect module it would have brought.
    heavy |= {"inspect"}
    assert not imported & heavy, f"mcpctl imported {imported & heavy}"
    assert "linear" in stdout


def test_every_module_of_mcpctl_imports_without_typing_extensions():
    """mcpctl refuses typing_extensions (msgspec's optional dependency) to start
    sooner: no module of it, nor any of mcpd's that its commands import inside
    their functions, may need it."""
    script = """
import importlib, pkgutil, sys
sys.modules["typing_extensions"] = None
import mcpctl
names = [m.name for m in pkgutil.walk_packages(mcpctl.__path__, "mcpctl.")]
names.remove("mcpctl.__main__")  # runs mcpctl
names += ["mcpd.config", "mcpd.configedit", "mcpd.atomicfile", "mcpd.paths", "mcpd.protocol"]
for name in names:
    importlib.import_module(name)
print(len(names))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) > 15


def test_the_bridge_starts_without_argparse_or_the_commands(mcpd_env, run_daemon, silent):
    """`mcpctl stdio NAME` starts with every editor: the entry point hands it to
    the bridge without building a parser."""
    mcpd_env.write_config(_config(silent))
    mcpd_env.vars["MCP_API_KEY"] = "k"
    run_daemon()
    imported, _ = imported_modules(mcpd_env, "stdio", "linear")
    assert "mcpctl.bridge" in imported
    assert not imported & {"argparse", "gettext", "shutil", "mcpctl.cli", "mcpctl.manage"}
    assert "inspect" not in imported  # typing_extensions refused, as for every command
    imported, _ = imported_modules(mcpd_env, "stdio", "linear", "--socket", str(mcpd_env.socket))
    assert {"argparse", "mcpctl.cli", "mcpctl.bridge"} <= imported  # not plain: argparse's


def test_watch_prints_state_changes(mcpd_env, run_daemon, silent):
    mcpd_env.write_config(f'[servers.a]\nurl = "{silent.url("a")}"\n')
    daemon = run_daemon()
    watcher = subprocess.Popen(
        [MCPCTL, "watch", "--json"], env=mcpd_env.vars, stdout=subprocess.PIPE, text=True
    )
    try:
        assert watcher.stdout is not None
        initial = json.loads(watcher.stdout.readline())
        assert [s["name"] for s in initial["servers"]] == ["a"]
        mcpd_env.write_config(f'[servers.a]\nurl = "{silent.url("a")}"\nenabled = false\n')
        assert daemon.mcpctl("reload").returncode == 0
        event = json.loads(watcher.stdout.readline())
        assert event["type"] == "event"
        assert event["name"] == "state"
        assert event["data"]["server"]["name"] == "a"
        assert (event["data"]["previous"], event["data"]["server"]["state"]) == (
            "connecting",
            "disabled",
        )
    finally:
        watcher.terminate()
        watcher.wait(timeout=5)
        watcher.stdout.close()


def test_shutdown_stops_the_daemon_and_removes_its_socket(mcpd_env, run_daemon):
    daemon = run_daemon()
    assert mcpd_env.socket.exists()
    result = daemon.mcpctl("shutdown")
    assert result.returncode == 0, result.stderr
    assert daemon.process.wait(timeout=10) == 0
    assert not mcpd_env.socket.exists()
    assert "mcpd is not running" in mcpd_env.mcpctl("status").stderr


# One command line for each command, with its options.
COMMAND_LINES = [
    ["status"],
    ["status", "linear", "--json"],
    ["add", "n", "https://example.com/mcp", "--header", "A: b", "--per-client"],
    ["remove", "n"],
    ["enable", "n"],
    ["disable", "n"],
    ["list", "--json"],
    ["reload"],
    ["rotate-key"],
    ["watch", "a", "b", "--json"],
    ["shutdown"],
    ["tools", "n", "--json"],
    ["call", "n", "echo", '{"text": "x"}'],
    ["auth", "n", "--paste", "--no-browser"],
    ["logout", "--forget-client"],
    ["token", "n"],
    ["stdio", "n", "--socket", "/tmp/s.sock"],
    ["editors", "--json"],
    ["import", "codex", "--dry-run"],
    ["install", "codex", "a", "b"],
    ["uninstall", "codex"],
    ["remote", "setup", "host", "--write"],
]


def _choices(parser: argparse.ArgumentParser) -> set[str]:
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return set(commands.choices)


def _meaning(args: argparse.Namespace) -> dict[str, object]:
    """A parse's values, a function as its name and what it closes over."""
    return {
        key: (value.__qualname__, [c.cell_contents for c in value.__closure__ or ()])
        if callable(value)
        else value
        for key, value in vars(args).items()
    }


def test_a_run_builds_the_parser_of_its_command_alone_and_it_means_the_same():
    """A run builds only the parser of the command it names (each costs about a
    millisecond, and every run is a process of its own): every entry adds
    exactly the commands it declares, together they are all the commands, and
    each command line means the same to its own parser as to the whole one."""
    for names, _ in cli.COMMANDS:
        for name in names:
            assert _choices(cli._parser([name, "x"])) == set(names)
    every = _choices(cli._parser([]))
    assert every == {name for names, _ in cli.COMMANDS for name in names}
    assert {argv[0] for argv in COMMAND_LINES} == every
    for argv in COMMAND_LINES:
        alone = cli._parser(argv).parse_args(argv)
        assert _meaning(alone) == _meaning(cli._parser([]).parse_args(argv)), argv
    # Help, and a command line that names no command, get every command.
    for argv in (["--help"], ["statsu"], ["-h", "status"]):
        assert _choices(cli._parser(argv)) == every, argv


# `stdio` command lines: the plain ones the entry point reads itself, and
# others it leaves to argparse.
PLAIN_STDIO = [
    ["stdio", "n"],
    ["stdio", "my server"],
    ["stdio", "--socket", "/tmp/s.sock", "n"],
]
NOT_PLAIN = [
    ["stdio", "n", "--socket", "/tmp/s.sock"],
    ["stdio", "--socket=/tmp/s.sock", "n"],
    ["stdio", "--sock", "/tmp/s.sock", "n"],
    ["stdio", "--socket", "-x", "n"],
    ["stdio", "--", "-n"],
    ["stdio", "-n"],
    ["stdio", "--help"],
    ["stdio"],
    ["stdio", "a", "b"],
    ["status"],
    [],
]


def test_a_plain_stdio_command_line_means_to_the_entry_point_what_it_means_to_argparse():
    for argv in PLAIN_STDIO:
        args = cli._parser([]).parse_args(argv)
        assert entry.plain_stdio(argv) == (args.name, args.socket), argv
    for argv in NOT_PLAIN:
        assert entry.plain_stdio(argv) is None, argv
