"""`mcpctl editors/import/install/uninstall` as commands, and an installed entry
reaching the real daemon from the bare environment an editor like Codex gives
its servers (`env -i HOME=... PATH=...`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest
from harness import MCPCTL, stdio_session, wait_state
from real_peers import python_server

FIXTURES = Path(__file__).parent / "fixtures" / "editors"


def _place(home: Path, fixture: str, relative: str) -> Path:
    path = home / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(FIXTURES / fixture, path)
    return path


def test_editors_lists_files_servers_and_what_goes_through_mcpd(mcpd_env):
    home = mcpd_env.root
    _place(home, "cursor.json", ".cursor/mcp.json")
    _place(home, "codex.toml", ".codex/config.toml")
    broken = _place(home, "zed.jsonc", "config/zed/settings.json")  # XDG_CONFIG_HOME
    broken.write_text(broken.read_text().replace('"vim_mode": true,', '"vim_mode": true,,'))
    mcpd_env.write_config('[servers.github]\nurl = "https://api.githubcopilot.com/mcp/"\n')

    shown = mcpd_env.mcpctl("editors")
    assert shown.returncode == 1  # Zed's file does not parse
    out = shown.stdout
    assert "Cursor: ~/.cursor/mcp.json" in out
    assert "Codex: ~/.codex/config.toml" in out
    assert "in mcpd as github: mcpctl install cursor" in out
    assert "not through mcpd (mcp-remote); not in mcpd: mcpctl import cursor" in out
    assert "and 1 local (stdio) server(s)" in out
    assert f"Zed: cannot read: {broken}: line 6, column 20" in out
    assert "not found here:" in out
    assert "Windsurf" in out

    data = json.loads(mcpd_env.mcpctl("editors", "--json").stdout)
    cursor = next(e for e in data["editors"] if e["editor"] == "cursor")
    servers = {s["key"]: s for s in cursor["files"][0]["servers"]}
    assert servers["github"]["in_mcpd"]
    assert not servers["github"]["through_mcpd"]
    assert servers["notion"]["via"] == "mcp-remote"


def test_import_dry_run_then_import_then_install_and_uninstall(mcpd_env):
    home = mcpd_env.root
    cursor = _place(home, "cursor.json", ".cursor/mcp.json")
    original = cursor.read_bytes()

    dry = mcpd_env.mcpctl("import", "cursor", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "dry run: 3 server(s) would be added" in dry.stdout
    assert not mcpd_env.config_file.exists()

    done = mcpd_env.mcpctl("import", "cursor")
    assert done.returncode == 0, done.stderr
    assert "added to" in done.stdout
    assert "github, pipeshub, notion" in done.stdout
    assert "mcpd is not running" in done.stdout
    assert "fixture-secret" not in done.stdout + done.stderr
    servers = tomllib.loads(mcpd_env.config_file.read_text())["servers"]
    assert sorted(servers) == ["github", "notion", "pipeshub"]
    again = mcpd_env.mcpctl("import", "cursor")
    assert again.stdout.count("already in mcpd") == 3

    installed = mcpd_env.mcpctl("install", "cursor")
    assert installed.returncode == 0, installed.stderr
    assert re.search(
        r"notion +replaced: was mcp-remote https://mcp.notion.com/mcp", installed.stdout
    )
    assert "the file as it was is saved in ~/state/mcpd/editors/backups/cursor-" in (
        installed.stdout
    )
    entry = json.loads(cursor.read_text())["mcpServers"]["notion"]
    assert entry["command"] == MCPCTL
    assert entry["args"] == ["stdio", "--socket", str(mcpd_env.socket), "notion"]
    assert "fixture-secret" not in cursor.read_text()
    assert "nothing to change" in mcpd_env.mcpctl("install", "cursor").stdout

    undone = mcpd_env.mcpctl("uninstall", "cursor")
    assert undone.returncode == 0, undone.stderr
    assert "back exactly as it was" in undone.stdout
    assert cursor.read_bytes() == original


def test_commands_refuse_unknown_editors_and_broken_files(mcpd_env):
    unknown = mcpd_env.mcpctl("install", "emacs")
    assert unknown.returncode != 0
    assert "no editor called 'emacs'" in unknown.stderr
    mcpd_env.write_config('[servers.a]\nurl = "https://a.example/mcp"\n')
    settings = _place(mcpd_env.root, "gemini.json", ".gemini/settings.json")
    settings.write_text(settings.read_text()[:-3])
    before = settings.read_bytes()
    refused = mcpd_env.mcpctl("install", "gemini")
    assert refused.returncode == 1
    assert f"{settings}: line " in refused.stderr
    assert "left as it is" in refused.stderr
    assert settings.read_bytes() == before


def _talk(argv: list[str], env: dict[str, str]) -> tuple[list[dict[str, Any]], str]:
    """initialize, then tools/list, through the command an editor would launch."""
    requests = [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "codex-like", "version": "1"},
            },
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
    ]
    replies, stderr, _ = stdio_session(argv, env, requests)
    return replies, stderr


def _bare(home: Path) -> dict[str, str]:
    """What Codex passes a stdio server: a fixed few variables, no XDG_RUNTIME_DIR."""
    return {"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}


def test_an_installed_entry_reaches_the_daemon_from_a_bare_environment(
    mcpd_env, run_daemon, tmp_path
):
    with python_server(tmp_path) as peer:
        codex = mcpd_env.root / ".codex" / "config.toml"
        codex.parent.mkdir()
        codex.write_text(
            '# Codex configuration\nmodel = "gpt-5-codex"\n\n'
            "[mcp_servers.intercom]\n"
            f'command = "npx"\nargs = ["-y", "mcp-remote", "{peer.url}"]\n'
            "tool_timeout_sec = 90\n\n"
            '[mcp_servers.context7]\ncommand = "npx"\nargs = ["-y", "@upstash/context7-mcp"]\n'
        )
        daemon = run_daemon()
        imported = mcpd_env.mcpctl("import", "codex")
        assert "mcpd reloaded its config" in imported.stdout, imported.stdout + imported.stderr
        wait_state(daemon, "intercom", "connected")
        installed = mcpd_env.mcpctl("install", "codex", "intercom")
        assert installed.returncode == 0, installed.stderr
        entry = tomllib.loads(codex.read_text())["mcp_servers"]["intercom"]
        # This daemon's socket is not where a bare environment would look: named.
        assert entry["args"] == ["stdio", "--socket", str(mcpd_env.socket), "intercom"]
        assert entry["tool_timeout_sec"] == 90  # Codex's own setting of the entry, kept

        replies, stderr = _talk([entry["command"], *entry["args"]], _bare(mcpd_env.root))
        assert replies[0]["result"]["serverInfo"], stderr
        assert [tool["name"] for tool in replies[1]["result"]["tools"]], stderr
        assert "not running" not in stderr


def test_without_xdg_runtime_dir_the_bridge_finds_the_daemon_unaided(
    mcpd_env, run_daemon, tmp_path
):
    """Daemon and bridge both without XDG_RUNTIME_DIR (as under a bare login): the
    entry names no socket, and the bridge finds the daemon from `env -i`."""
    from mcpd import paths

    runtime = paths.runtime_dir({})
    if runtime.exists():
        pytest.skip(f"{runtime} is in use on this machine")
    del mcpd_env.vars["XDG_RUNTIME_DIR"]
    with python_server(tmp_path) as peer:
        mcpd_env.write_config(f'[servers.here]\nurl = "{peer.url}"\n')
        daemon = run_daemon()
        try:
            wait_state(daemon, "here", "connected")
            assert mcpd_env.mcpctl("install", "claude-code").returncode == 0
            settings = json.loads((mcpd_env.root / ".claude.json").read_text())
            entry = settings["mcpServers"]["here"]
            assert entry == {"type": "stdio", "command": MCPCTL, "args": ["stdio", "here"]}
            replies, stderr = _talk([entry["command"], *entry["args"]], _bare(mcpd_env.root))
            assert replies[0]["result"]["serverInfo"], stderr
            assert replies[1]["result"]["tools"], stderr
        finally:
            daemon.stop()
            if runtime.exists() and not any(runtime.iterdir()):
                os.rmdir(runtime)


def test_a_bridge_that_finds_no_daemon_says_so_without_needing_the_name(mcpd_env, tmp_path):
    socket = tmp_path / "nowhere" / "mcpd.sock"
    replies, _stderr = _talk(
        [MCPCTL, "stdio", "--socket", str(socket), "linear"], _bare(mcpd_env.root)
    )
    message = replies[0]["error"]["message"]
    assert f"mcpd is not running (no socket at {socket})" in message
    assert "systemctl --user enable --now mcpd.socket" in message
