"""`mcpctl editors`, `import`, `install` and `uninstall` against real-looking editor
files (tests/fixtures/editors/: comments, other servers, other settings), one
throwaway HOME per test.

Per format: import finds the native and mcp-remote entries with their flags;
install then uninstall gives the file back byte for byte; install twice
changes nothing; a file that does not parse is left untouched with an error
naming the file, line and column; no secret of the fixtures is in an editor's
file once mcpctl has written it.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from mcpctl.editors import EDITOR_IDS, codex, importing, install, jsonc
from mcpctl.editors.entries import classify
from mcpctl.editors.files import EditorFileError, read
from mcpctl.editors.formats import EDITORS, Location, find, user_file

FIXTURES = Path(__file__).parent / "fixtures" / "editors"
MCPCTL = "/opt/mcpd/bin/mcpctl"
SECRET = re.compile(r"fixture-secret-[a-z0-9-]+")
ASANA_SECRET = "fixture-secret-claude-desktop-asana"

FIXTURE_FILES = {
    "claude-code": "claude-code.json",
    "claude-desktop": "claude-desktop.json",
    "cursor": "cursor.json",
    "vscode": "vscode.jsonc",
    "windsurf": "windsurf.json",
    "zed": "zed.jsonc",
    "codex": "codex.toml",
    "opencode": "opencode.jsonc",
    "gemini": "gemini.json",
    "qwen": "qwen.json",
    "copilot": "copilot.json",
}


def _bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


# What import finds in each fixture: the editor's name for the server, and the
# [servers.NAME] table mcpd gets.
EXPECTED: dict[str, dict[str, dict[str, Any]]] = {
    "claude-code": {
        "linear": {"url": "https://mcp.linear.app/mcp", "headers": _bearer("{env:LINEAR_API_KEY}")},
        "atlassian": {
            "url": "https://mcp.atlassian.com/v1/sse",
            "headers": {"X-Atlassian-Token": "fixture-secret-claude-code-atlassian"},
        },
        "sentry": {
            "url": "https://mcp.sentry.dev/mcp",
            "oauth": {"client_id": "sentry-claude-client"},
        },
        "stripe": {
            "url": "https://mcp.stripe.com/",
            "headers": _bearer("fixture-secret-claude-code-stripe"),
        },
    },
    "claude-desktop": {
        "cloudflare": {
            "url": "https://observability.mcp.cloudflare.com/sse",
            "oauth": {
                "client_id": "cf-desktop-client",
                "client_secret": "fixture-secret-claude-desktop-oauth",
                "resource": "https://observability.mcp.cloudflare.com/",
            },
        },
        "asana": {
            "url": "https://mcp.asana.com/sse",
            "oauth": {"client_id": "asana-desktop", "client_secret": ASANA_SECRET},
        },
    },
    "cursor": {
        "github": {
            "url": "https://api.githubcopilot.com/mcp/",
            "headers": _bearer("{env:GITHUB_PAT}"),
        },
        "pipeshub": {
            "url": "https://pipeshub.example.com/mcp",
            "oauth": {
                "client_id": "pipeshub-cursor",
                "client_secret": "fixture-secret-cursor-oauth",
                "scope": "openid offline_access kb:read",
            },
        },
        "notion": {
            "url": "https://mcp.notion.com/mcp",
            "headers": _bearer("fixture-secret-cursor-notion"),
        },
    },
    "vscode": {
        "linear": {"url": "https://mcp.linear.app/mcp"},
        # Authorization holds ${input:...}, which only VS Code can fill in: left out.
        "perplexity": {
            "url": "https://mcp.perplexity.ai/mcp",
            "headers": {"X-Workspace": "{env:PPLX_WORKSPACE}"},
        },
        "hubspot": {
            "url": "https://mcp.hubspot.com/anthropic",
            "headers": _bearer("fixture-secret-vscode-hubspot"),
            "tools": {"deny": ["delete_*"]},
        },
    },
    "windsurf": {
        "talaria": {
            "url": "https://api.newtalaria.com/mcp",
            "headers": _bearer("fixture-secret-windsurf-talaria"),
        },
        "context7": {
            "url": "https://mcp.context7.com/mcp",
            "headers": {"CONTEXT7_API_KEY": "{env:CONTEXT7_API_KEY}"},
        },
        "silabs": {"url": "https://silabs.mcp.kapa.ai", "enabled": False},
    },
    "zed": {
        "vercel": {"url": "https://mcp.vercel.com"},
        "grafana": {
            "url": "https://grafana.internal.example.com/api/mcp",
            "headers": _bearer("fixture-secret-zed-grafana"),
        },
        "figma": {"url": "https://mcp.figma.com/mcp", "oauth": {"resource": False}},
    },
    "codex": {
        "figma": {
            "url": "https://mcp.figma.com/mcp",
            "headers": _bearer("{env:FIGMA_OAUTH_TOKEN}"),
        },
        "datadog": {
            "url": "https://mcp.datadoghq.com/api/unstable/mcp-server/mcp",
            "headers": {
                "DD-API-KEY": "fixture-secret-codex-datadog",
                "DD-APPLICATION-KEY": "{env:DD_APP_KEY}",
            },
        },
        "intercom": {
            "url": "https://mcp.intercom.com/mcp",
            "headers": _bearer("fixture-secret-codex-intercom"),
        },
    },
    "opencode": {
        "sentry": {
            "url": "https://mcp.sentry.dev/mcp",
            "oauth": {
                "client_id": "opencode-sentry",
                "client_secret": "{env:SENTRY_CLIENT_SECRET}",
                "scope": "org:read project:read",
            },
        },
        "context7": {
            "url": "https://mcp.context7.com/mcp",
            "headers": {"CONTEXT7_API_KEY": "fixture-secret-opencode-context7"},
        },
        "jira": {
            "url": "https://mcp.atlassian.com/v1/sse",
            "enabled": False,
            "headers": _bearer("{env:JIRA_PAT}"),
        },
    },
    "gemini": {
        "cloudrun": {
            "url": "https://cloudrun-mcp.example.run.app/mcp",
            "headers": _bearer("{env:CLOUDRUN_TOKEN}"),
        },
        "legacy-sse": {
            "url": "https://legacy.example.com/sse",
            "headers": {"X-Api-Key": "fixture-secret-gemini-legacy"},
        },
        "huggingface": {
            "url": "https://huggingface.co/mcp",
            "headers": _bearer("fixture-secret-gemini-hf"),
        },
    },
    "qwen": {
        "team-tools": {
            "url": "https://mcp.example.com/mcp",
            "headers": _bearer("fixture-secret-qwen-team"),
        },
        "notion": {"url": "https://mcp.notion.com/mcp"},
    },
    "copilot": {
        "context7": {
            "url": "https://mcp.context7.com/mcp",
            "headers": {"CONTEXT7_API_KEY": "{env:CONTEXT7_API_KEY}"},
        },
        "linear": {
            "url": "https://mcp.linear.app/mcp",
            "headers": _bearer("fixture-secret-copilot-linear"),
        },
    },
}
# Entries that are not remote servers (left alone by everything).
LOCAL = {
    "claude-code": ["filesystem"],
    "claude-desktop": ["sqlite"],
    "cursor": ["playwright"],
    "vscode": ["memory"],
    "windsurf": ["git"],
    "zed": ["postgres"],
    "codex": ["context7"],
    "opencode": ["everything"],
    "gemini": ["github-local"],
    "qwen": ["local-tools"],
    "copilot": ["playwright"],
}
# mcp-remote entries, the others being native.
VIA_MCP_REMOTE = {
    "atlassian",
    "cloudflare",
    "asana",
    "notion",
    "hubspot",
    "silabs",
    "figma@zed",
    "intercom",
    "jira",
    "huggingface",
    "linear@copilot",
}
EXTRA_SERVER = ("extra", "https://extra.example.com/mcp")


def _env(home: Path) -> dict[str, str]:
    return {"HOME": str(home), "PATH": "/usr/bin:/bin"}


def _place(editor_id: str, home: Path) -> tuple[Path, bytes]:
    """The fixture, at the editor's user-level file under `home`."""
    editor = find(editor_id)
    assert editor is not None
    path = user_file(editor, _env(home))
    path.parent.mkdir(parents=True, exist_ok=True)
    text = (FIXTURES / FIXTURE_FILES[editor_id]).read_text().replace("{{HOME}}", str(home))
    path.write_text(text)
    asana = home / ".config" / "asana-client.json"
    asana.parent.mkdir(parents=True, exist_ok=True)
    asana.write_text(json.dumps({"client_id": "asana-desktop", "client_secret": ASANA_SECRET}))
    return path, path.read_bytes()


def _write_mcpd_config(home: Path, text: str) -> Path:
    path = home / ".config" / "mcpd" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _import(editor_id: str, home: Path, *, dry_run: bool = False) -> list[importing.Outcome]:
    editor = find(editor_id)
    assert editor is not None
    files, errors = importing.scan(editor, _env(home), None)
    assert errors == []
    config_path = home / ".config" / "mcpd" / "config.toml"
    return importing.run(importing.remotes(files), config_path, _env(home), dry_run=dry_run)


def _mcpd_servers(home: Path) -> dict[str, Any]:
    path = home / ".config" / "mcpd" / "config.toml"
    return tomllib.loads(path.read_text()).get("servers", {}) if path.exists() else {}


def _secrets_in(text: str) -> set[str]:
    return set(SECRET.findall(text))


def _without_servers(editor_id: str, plain: Any) -> Any:
    """The document with its objects of servers emptied: what install must keep."""
    plain = json.loads(json.dumps(plain))
    editor = find(editor_id)
    assert editor is not None
    keys = list(editor.container)
    holder = plain
    for key in keys[:-1]:
        holder = holder[key]
    holder[keys[-1]] = {k: v for k, v in holder[keys[-1]].items() if k in LOCAL[editor_id]}
    for project in (plain.get("projects") or {}).values():
        if "mcpServers" in project:
            project["mcpServers"] = {}
    return plain


def _plain(editor_id: str, text: str) -> Any:
    if editor_id == "codex":
        return tomllib.loads(text)
    document = jsonc.parse(text)
    assert document.root is not None
    return document.root.plain()


def test_every_editor_has_a_fixture_and_the_ids_agree():
    assert tuple(editor.id for editor in EDITORS) == EDITOR_IDS
    assert set(FIXTURE_FILES) == set(EDITOR_IDS) == set(EXPECTED)


# --- import -------------------------------------------------------------------------------


@pytest.mark.parametrize("editor_id", EDITOR_IDS)
def test_import_finds_native_and_mcp_remote_entries_with_their_flags(tmp_path, editor_id):
    home = tmp_path / "home"
    _place(editor_id, home)
    editor = find(editor_id)
    assert editor is not None
    files, errors = importing.scan(editor, _env(home), None)
    assert errors == []
    found = importing.remotes(files)
    tables = {item.key: item.remote.table(tool_filters=True) for item in found}
    assert tables == EXPECTED[editor_id]
    for item in found:
        via = "mcp-remote" if {item.key, f"{item.key}@{editor_id}"} & VIA_MCP_REMOTE else "native"
        assert item.remote.via == via, item.key
        # Said to be copied as written exactly when a secret of the fixture is.
        has_secret = "fixture-secret" in json.dumps(tables[item.key])
        assert bool(item.remote.literal_values) == has_secret, item.key
    entries = [entry for file in files for c in file.containers for entry in c.entries]
    assert sorted(e.key for e in entries if e.kind == "local") == sorted(LOCAL[editor_id])

    outcomes = _import(editor_id, home)
    assert {o.name: o.status for o in outcomes} == dict.fromkeys(EXPECTED[editor_id], "added")
    assert _mcpd_servers(home) == EXPECTED[editor_id]
    config = home / ".config" / "mcpd" / "config.toml"
    assert config.stat().st_mode & 0o077 == 0  # literal secrets live in a private file
    before = config.read_bytes()
    again = _import(editor_id, home)
    assert {o.status for o in again} == {"present"}
    assert config.read_bytes() == before


def test_import_notes_what_did_not_carry_over(tmp_path):
    home = tmp_path / "home"
    _place("vscode", home)
    outcomes = {o.found.key: o for o in _import("vscode", home, dry_run=True)}
    assert {o.status for o in outcomes.values()} == {"would add"}
    assert not (home / ".config" / "mcpd" / "config.toml").exists()  # a dry run writes nothing
    perplexity = " ".join(outcomes["perplexity"].notes)
    assert "header Authorization left out" in perplexity
    assert "${input:perplexity-key}" in perplexity
    assert "$PPLX_WORKSPACE" in perplexity
    hubspot = " ".join(outcomes["hubspot"].notes)
    assert "header Authorization: copied as written into mcpd's config" in hubspot
    assert "fixture-secret" not in hubspot  # the value itself is never shown

    _place("claude-desktop", home)
    notes = " ".join(n for o in _import("claude-desktop", home, dry_run=True) for n in o.notes)
    assert "callback port 7878" in notes
    assert "--transport http-first: not needed" in notes
    assert "redirect URIs must include" in notes


def test_import_reports_a_clash_and_changes_nothing_for_the_same_server(tmp_path):
    home = tmp_path / "home"
    _place("cursor", home)
    config = _write_mcpd_config(
        home,
        "# my servers\n"
        '[servers.github]\nurl = "https://github.example.com/mcp"  # another GitHub\n\n'
        '[servers.notion]\nurl = "https://mcp.notion.com/mcp"\n\n'
        '[servers.kb]\nurl = "https://pipeshub.example.com/mcp/"\n',
    )
    before = config.read_text()
    outcomes = {o.found.key: o for o in _import("cursor", home)}
    assert outcomes["github"].status == "clash"
    assert "https://github.example.com/mcp" in outcomes["github"].detail
    assert outcomes["notion"].status == "present"
    assert outcomes["pipeshub"].status == "elsewhere"
    assert "already in mcpd as kb" in outcomes["pipeshub"].detail
    assert config.read_text() == before  # nothing to add: not even rewritten


def test_invalid_names_become_valid_server_names(tmp_path):
    assert importing.server_name("My Server (prod)") == "My-Server-prod"
    assert importing.server_name("_x") == "x"
    assert importing.server_name("***") == "server"
    assert importing.server_name("a" * 80) == "a" * 64


# --- install and uninstall ----------------------------------------------------------------


def _installed(editor_id: str, home: Path) -> tuple[Path, bytes]:
    path, original = _place(editor_id, home)
    _write_mcpd_config(home, f'[servers.{EXTRA_SERVER[0]}]\nurl = "{EXTRA_SERVER[1]}"\n')
    _import(editor_id, home)
    editor = find(editor_id)
    assert editor is not None
    result = install.install(editor, _env(home), [], mcpctl=MCPCTL)
    assert result.written
    assert result.backup is not None
    assert result.backup.read_bytes() == original
    assert result.backup.stat().st_mode & 0o077 == 0
    return path, original


@pytest.mark.parametrize("editor_id", EDITOR_IDS)
def test_install_then_uninstall_gives_the_file_back_byte_for_byte(tmp_path, editor_id):
    home = tmp_path / "home"
    path, original = _installed(editor_id, home)
    editor = find(editor_id)
    assert editor is not None
    text = path.read_text()

    # Every remote server now launches `mcpctl stdio NAME`; everything else is as it was.
    file = read(editor, Location(path, "user", True))
    through = {e.key: e.mcpd_server for c in file.containers for e in c.entries if e.kind == "mcpd"}
    assert through == {key: key for key in [*EXPECTED[editor_id], EXTRA_SERVER[0]]}
    assert all(
        e.mcpd_command == MCPCTL and e.mcpd_socket is None
        for c in file.containers
        for e in c.entries
        if e.kind == "mcpd"
    )
    assert sorted(e.key for c in file.containers for e in c.entries if e.kind == "local") == (
        sorted(LOCAL[editor_id])
    )
    assert _without_servers(editor_id, _plain(editor_id, text)) == _without_servers(
        editor_id, _plain(editor_id, original.decode())
    )
    if editor.syntax == "json":
        # Comments outside the replaced entries are kept.
        source = original.decode()
        document = jsonc.parse(source)
        replaced = []
        for container in _json_containers(document, editor.container):
            replaced += [
                (m.value.start, m.value.end)
                for m in container.members
                if m.key in EXPECTED[editor_id]
            ]
        offset = 0
        for line in source.splitlines(keepends=True):
            inside = any(start <= offset < end for start, end in replaced)
            if line.strip().startswith(("//", "/*")) and not inside:
                assert line in text
            offset += len(line)

    # Nothing secret was written into the editor's file.
    assert _secrets_in(text) == set()

    # Twice: no change.
    second = install.install(editor, _env(home), [], mcpctl=MCPCTL)
    assert not second.written
    assert {c.action for c in second.changes} == {"unchanged"}
    assert path.read_bytes() == text.encode()

    undone = install.uninstall(editor, _env(home))
    assert undone.how == "restored"
    assert path.read_bytes() == original
    assert not install.record_path(_env(home), editor).exists()
    assert install.uninstall(editor, _env(home)).how == "nothing"


@pytest.mark.parametrize("editor_id", EDITOR_IDS)
def test_uninstall_after_other_changes_puts_back_each_entry(tmp_path, editor_id):
    home = tmp_path / "home"
    path, original = _installed(editor_id, home)
    editor = find(editor_id)
    assert editor is not None
    extra_entry = {"command": "uvx", "args": ["mcp-server-time"]}

    def user_edit(text: str) -> str:
        """The user adds a server of their own after mcpctl install."""
        if editor_id == "codex":
            return codex.set_entry(text, ("mcp_servers",), "time", extra_entry)
        document = jsonc.parse(text)
        container = editor.container
        obj = jsonc.lookup(document, container)
        assert obj is not None
        value = {"type": "local", "command": ["uvx", "mcp-server-time"]}
        return jsonc.set_member(
            document, obj, "time", value if editor_id == "opencode" else extra_entry
        )

    path.write_text(user_edit(path.read_text()))
    undone = install.uninstall(editor, _env(home))
    assert undone.how == "entries"
    restored = path.read_text()
    expected = user_edit(original.decode())
    assert _plain(editor_id, restored) == _plain(editor_id, expected)
    if editor.syntax == "json":
        assert restored == expected  # byte for byte, but for the user's own change


def test_install_keeps_the_mode_and_writes_through_a_symbolic_link(tmp_path):
    home = tmp_path / "home"
    path, original = _place("cursor", home)
    dotfiles = tmp_path / "dotfiles" / "cursor-mcp.json"
    dotfiles.parent.mkdir()
    path.rename(dotfiles)
    path.symlink_to(dotfiles)
    dotfiles.chmod(0o640)
    _import("cursor", home)
    editor = find("cursor")
    assert editor is not None
    install.install(editor, _env(home), ["notion"], mcpctl=MCPCTL)
    assert path.is_symlink()
    assert dotfiles.stat().st_mode & 0o777 == 0o640
    assert "mcp-remote" not in json.loads(dotfiles.read_text())["mcpServers"]["notion"]["args"]
    assert [p.name for p in dotfiles.parent.iterdir()] == ["cursor-mcp.json"]  # no temporaries
    install.uninstall(editor, _env(home))
    assert dotfiles.read_bytes() == original
    assert path.is_symlink()


def test_install_adds_into_a_missing_file_and_uninstall_removes_it(tmp_path):
    home = tmp_path / "home"
    _write_mcpd_config(home, '[servers.linear]\nurl = "https://mcp.linear.app/mcp"\n')
    for editor_id in ("vscode", "codex", "opencode"):
        editor = find(editor_id)
        assert editor is not None
        path = user_file(editor, _env(home))
        result = install.install(editor, _env(home), [], mcpctl=MCPCTL)
        assert result.written
        assert result.backup is None
        entry = classify(editor, "linear", _servers_of(editor_id, path.read_text())["linear"])
        assert entry.kind == "mcpd"
        assert entry.mcpd_server == "linear"
        assert install.uninstall(editor, _env(home)).how == "created-removed"
        assert not path.exists()


def _json_containers(document: jsonc.Document, path: tuple[str, ...]) -> list[jsonc.Node]:
    """The objects of servers: the file's own, and Claude Code's local scopes."""
    found = [jsonc.lookup(document, path)]
    projects = jsonc.lookup(document, ("projects",))
    if projects is not None:
        found += [m.value.get("mcpServers") for m in projects.members]
    return [node for node in found if node is not None]


def _servers_of(editor_id: str, text: str) -> dict[str, Any]:
    plain = _plain(editor_id, text)
    if editor_id == "codex":
        return dict(plain["mcp_servers"])
    editor = find(editor_id)
    assert editor is not None
    for key in editor.container:
        plain = plain[key]
    return dict(plain)


def test_install_names_the_socket_only_when_a_bare_environment_would_miss_it(tmp_path):
    home = tmp_path / "home"
    _write_mcpd_config(home, '[servers.linear]\nurl = "https://mcp.linear.app/mcp"\n')
    editor = find("cursor")
    assert editor is not None
    env = {**_env(home), "XDG_RUNTIME_DIR": str(tmp_path / "run")}
    install.install(editor, env, [], mcpctl=MCPCTL)
    entry = json.loads(user_file(editor, env).read_text())["mcpServers"]["linear"]
    assert entry == {
        "command": MCPCTL,
        "args": ["stdio", "--socket", str(tmp_path / "run" / "mcpd" / "mcpd.sock"), "linear"],
    }


def test_install_replaces_the_editors_own_entry_and_skips_a_name_in_the_way(tmp_path):
    home = tmp_path / "home"
    path, _ = _place("cursor", home)
    _write_mcpd_config(
        home,
        '[servers.notion-team]\nurl = "https://mcp.notion.com/mcp/"\n\n'
        '[servers.playwright]\nurl = "https://playwright.example.com/mcp"\n',
    )
    editor = find("cursor")
    assert editor is not None
    result = install.install(editor, _env(home), [], mcpctl=MCPCTL)
    actions = {(c.key, c.server): c.action for c in result.changes}
    # The editor's name stays (its tool names and permissions use it).
    assert actions[("notion", "notion-team")] == "replaced"
    assert actions[("playwright", "playwright")] == "skipped"
    servers = json.loads(path.read_text())["mcpServers"]
    assert servers["notion"]["args"] == ["stdio", "notion-team"]
    assert servers["playwright"] == {"command": "npx", "args": ["@playwright/mcp@latest"]}


def test_install_of_unknown_server_names_the_configured_ones(tmp_path):
    home = tmp_path / "home"
    _write_mcpd_config(home, '[servers.linear]\nurl = "https://mcp.linear.app/mcp"\n')
    editor = find("zed")
    assert editor is not None
    with pytest.raises(install.InstallError, match=r"no server named nope \(configured: linear\)"):
        install.install(editor, _env(home), ["nope"], mcpctl=MCPCTL)


# --- files that do not parse --------------------------------------------------------------

WHERE = re.compile(r"line \d+, column \d+")


@pytest.mark.parametrize("editor_id", EDITOR_IDS)
def test_a_file_that_does_not_parse_is_left_untouched_with_file_line_and_column(
    tmp_path, editor_id
):
    home = tmp_path / "home"
    path, original = _place(editor_id, home)
    editor = find(editor_id)
    assert editor is not None
    # A stray brace after the servers' opening one, or a table header left open.
    marker = "[mcp_servers.figma]" if editor_id == "codex" else f'"{editor.container[0]}": {{'
    damaged = marker[:-1] if editor_id == "codex" else marker + "{"
    broken = original.decode().replace(marker, damaged, 1).encode()
    where = WHERE
    assert broken != original
    path.write_bytes(broken)
    _write_mcpd_config(home, '[servers.linear]\nurl = "https://mcp.linear.app/mcp"\n')

    with pytest.raises(EditorFileError) as caught:
        install.install(editor, _env(home), [], mcpctl=MCPCTL)
    message = str(caught.value)
    assert str(path) in message
    assert where.search(message)
    assert "left as it is" in message
    assert path.read_bytes() == broken

    files, errors = importing.scan(editor, _env(home), None)
    assert files == []
    assert len(errors) == 1
    assert where.search(errors[0])
    assert path.read_bytes() == broken
    assert not install.record_path(_env(home), editor).exists()


def test_project_files_of_the_current_directory_are_read_but_never_written(tmp_path):
    home, project = tmp_path / "home", tmp_path / "project"
    (project / ".vscode").mkdir(parents=True)
    (project / ".mcp.json").write_text(
        '{"mcpServers": {"docs": {"type": "http", "url": "https://docs.example.com/mcp"}}}'
    )
    (project / ".vscode" / "mcp.json").write_text(
        '{\n  // team servers\n  "servers": {"wiki": {"type": "sse", "url": "https://wiki.example/sse"}}\n}'
    )
    found = {}
    for editor_id in ("claude-code", "vscode"):
        editor = find(editor_id)
        assert editor is not None
        files, errors = importing.scan(editor, _env(home), project)
        assert errors == []
        found.update({f.key: (f.scope, f.remote.url) for f in importing.remotes(files)})
    assert found == {
        "docs": ("project", "https://docs.example.com/mcp"),
        "wiki": ("project", "https://wiki.example/sse"),
    }
    _write_mcpd_config(home, '[servers.docs]\nurl = "https://docs.example.com/mcp"\n')
    before = (project / ".mcp.json").read_bytes()
    editor = find("claude-code")
    assert editor is not None
    install.install(editor, _env(home), [], mcpctl=MCPCTL)
    assert (project / ".mcp.json").read_bytes() == before
    assert json.loads((home / ".claude.json").read_text())["mcpServers"]["docs"]["args"] == [
        "stdio",
        "docs",
    ]


def test_a_file_changed_while_mcpctl_worked_is_not_overwritten(tmp_path):
    from mcpctl.editors.files import replace

    path = tmp_path / "mcp.json"
    path.write_text("{}")
    with pytest.raises(EditorFileError, match="changed while mcpctl was working"):
        replace(path, b'{"a": 1}', b"{ }")
    assert path.read_text() == "{}"
    replace(path, b'{"a": 1}', b"{}")
    assert path.read_text() == '{"a": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["mcp.json"]
