"""The span-based JSONC editor (clients/editors/jsonc.py), the mcp-remote command
line reader, and where a bridge looks for the daemon without XDG_RUNTIME_DIR."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mcpctl.editors import jsonc
from mcpctl.editors.entries import classify, translate, url_key
from mcpctl.editors.formats import BRACE_ENV, DOLLAR, DOLLAR_BRACE, ENV_COLON, find
from mcpd import paths


def _insert(text: str, path: tuple[str, ...], key: str, value: object) -> str:
    document = jsonc.parse(text)
    obj = jsonc.lookup(document, path)
    assert obj is not None
    return jsonc.set_member(document, obj, key, value)


def _remove(text: str, path: tuple[str, ...], key: str) -> str:
    document = jsonc.parse(text)
    obj = jsonc.lookup(document, path)
    assert obj is not None
    member = obj.member(key)
    assert member is not None
    return jsonc.remove_member(document, obj, member)


LAYOUTS = [
    # two spaces, a comment after the last member
    '{\n  "servers": {\n    "a": {"url": "https://a"} // a\n  }\n}\n',
    # tabs, trailing commas, CRLF
    '{\r\n\t"servers": {\r\n\t\t"a": {\r\n\t\t\t"url": "https://a",\r\n\t\t},\r\n\t},\r\n}\r\n',
    # one line
    '{"servers": {"a": {"url": "https://a"}}}',
    # a BOM and a block comment before the root
    '\ufeff/* settings */\n{\n    "x": 1,\n    "servers": {\n        "a": 1\n    }\n}',
    # an empty object, on one line and over several
    '{\n  "servers": {}\n}\n',
    '{\n  "servers": {\n    // nothing yet\n  }\n}\n',
]


@pytest.mark.parametrize("text", LAYOUTS)
def test_insert_then_remove_gives_the_text_back(text):
    value = {"command": "/usr/bin/mcpctl", "args": ["stdio", "b"]}
    inserted = _insert(text, ("servers",), "b", value)
    document = jsonc.parse(inserted)
    assert document.root is not None
    assert document.root.plain()["servers"]["b"] == value
    assert inserted.startswith(text[: text.index('"servers"')])
    if "\r\n" in text:
        assert "\n" not in inserted.replace("\r\n", "")
    if "\t" in text:
        assert '\t\t"b": {' in inserted
    removed = _remove(inserted, ("servers",), "b")
    if text.count("{") > 2 and 'servers": {}' not in text and "nothing yet" not in text:
        assert removed == text
    else:  # an object left empty: valid, its comments kept
        assert jsonc.parse(removed).root.plain() == jsonc.parse(text).root.plain()  # type: ignore[union-attr]
        assert ("nothing yet" in removed) == ("nothing yet" in text)


def test_replacing_a_value_keeps_everything_around_it():
    text = '{\n  // keep\n  "s": {\n    "a": {"url": "https://a"}, /* mid */\n    "b": 2\n  }\n}\n'
    new = _insert(text, ("s",), "a", {"command": "x"})
    expected = (
        '{\n  // keep\n  "s": {\n    "a": {\n      "command": "x"\n    }, /* mid */\n'
        '    "b": 2\n  }\n}\n'
    )
    assert new == expected


def test_a_missing_object_is_created_and_an_empty_file_gets_one():
    document = jsonc.parse('{\n  "theme": "dark"\n}\n')
    text, changed = jsonc.ensure_object(document, ("mcp", "servers"))
    assert changed
    assert jsonc.parse(text).root.plain() == {"theme": "dark", "mcp": {"servers": {}}}  # type: ignore[union-attr]
    text, changed = jsonc.ensure_object(jsonc.parse("// only a comment\n"), ("mcpServers",))
    assert text == '// only a comment\n{\n  "mcpServers": {}\n}\n'


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        ('{\n  "a": 1\n  "b": 2\n}', 3, 3),
        ('{"a": [1, 2}', 1, 12),
        ('{\n  "a": "unterminated\n}', 2, 21),
        ("{\n  /* never closed\n}", 2, 3),
        ('{"a": 1} trailing', 1, 10),
        ('{"a": tru}', 1, 7),
    ],
)
def test_errors_say_line_and_column(text, line, column):
    with pytest.raises(jsonc.JsoncError) as caught:
        jsonc.parse(text)
    assert (caught.value.line, caught.value.column) == (line, column)


def test_later_duplicate_keys_win_like_json_parse():
    document = jsonc.parse('{"a": 1, "a": 2}')
    assert document.root is not None
    assert document.root.plain() == {"a": 2}
    assert document.root.get("a").value == 2  # type: ignore[union-attr]


# --- Entries --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["npx", "-y", "mcp-remote", "https://x.example/mcp"],
        ["npx", "mcp-remote@0.1.29", "https://x.example/mcp"],
        ["npx", "--yes", "-p", "mcp-remote", "mcp-remote", "https://x.example/mcp"],
        ["pnpm", "dlx", "mcp-remote", "https://x.example/mcp"],
        ["bunx", "mcp-remote@latest", "https://x.example/mcp"],
        ["/home/u/.npm-global/bin/mcp-remote", "https://x.example/mcp"],
    ],
)
def test_mcp_remote_is_recognised_however_it_is_launched(argv):
    editor = find("cursor")
    assert editor is not None
    entry = classify(editor, "x", {"command": argv[0], "args": argv[1:]})
    assert entry.kind == "remote"
    assert entry.remote is not None
    assert entry.remote.via == "mcp-remote"
    assert entry.remote.url == "https://x.example/mcp"


def test_mcp_remote_flags_map_to_mcpd_settings():
    editor = find("claude-code")
    assert editor is not None
    args = [
        "-y",
        "mcp-remote",
        "https://x.example/mcp",
        "--header",
        "X-Team:docs",
        "--header",
        "Authorization: Bearer ${TOKEN}",
        "--static-oauth-client-info",
        '{"client_id": "cid", "client_secret": "${CLIENT_SECRET}"}',
        "--static-oauth-client-metadata",
        '{"scope": "read write", "client_name": "x"}',
        "--disable-resource-parameter",
        "--authorize-param",
        "audience=https://api.example",
        "--ignore-tool",
        "delete*",
        "--debug",
    ]
    entry = classify(editor, "x", {"command": "npx", "args": args})
    assert entry.remote is not None
    assert entry.remote.table(tool_filters=True) == {
        "url": "https://x.example/mcp",
        "headers": {"X-Team": "docs", "Authorization": "Bearer {env:TOKEN}"},
        "oauth": {
            "client_id": "cid",
            "client_secret": "{env:CLIENT_SECRET}",
            "scope": "read write",
            "resource": False,
            "authorize_params": {"audience": "https://api.example"},
        },
        "tools": {"deny": ["delete*"]},
    }
    assert entry.remote.literal_values == ["header X-Team"]  # "Bearer " is no secret
    assert sorted(set(entry.remote.variables)) == ["CLIENT_SECRET", "TOKEN"]


def test_an_mcpctl_entry_is_mcpds_whatever_its_path_and_socket():
    editor = find("opencode")
    assert editor is not None
    entry = classify(
        editor,
        "x",
        {"type": "local", "command": ["/opt/bin/mcpctl", "stdio", "--socket", "/s", "linear"]},
    )
    assert (entry.kind, entry.mcpd_server, entry.mcpd_socket) == ("mcpd", "linear", "/s")


def test_variables_become_mcpds_and_other_placeholders_are_refused():
    assert translate("Bearer ${env:T}", (ENV_COLON,)).value == "Bearer {env:T}"
    gemini = translate("$A:${B}", (DOLLAR_BRACE, DOLLAR))
    assert gemini.value == "{env:A}:{env:B}"
    assert not gemini.literal
    assert translate("Bearer ${T}", (DOLLAR_BRACE,)).literal is False
    assert translate("Bearer abc${T}", (DOLLAR_BRACE,)).literal is True
    with_default = translate("${A:-x}", (DOLLAR_BRACE,))
    assert with_default.value == "{env:A}"
    assert with_default.warning
    assert translate("${input:key}", (ENV_COLON,)).problem
    # opencode's jira: mcp-remote's ${JIRA_PAT}, defined in the entry as {env:JIRA_PAT}
    via_entry = translate(
        "Bearer ${JIRA_PAT}", (BRACE_ENV, DOLLAR_BRACE), {"JIRA_PAT": "{env:JIRA_PAT}"}
    )
    assert via_entry.value == "Bearer {env:JIRA_PAT}"
    assert not via_entry.literal
    from_entry = translate("Bearer ${T}", (DOLLAR_BRACE,), {"T": "lit"})
    assert from_entry.value == "Bearer lit"
    assert from_entry.literal


def test_urls_compare_as_the_same_server():
    assert url_key("HTTPS://Mcp.Example.com:443/mcp/") == url_key("https://mcp.example.com/mcp")
    assert url_key("https://a/mcp") != url_key("https://a/sse")


# --- Where the bridge looks without XDG_RUNTIME_DIR ----------------------------------------


def test_without_xdg_runtime_dir_the_users_run_directory_is_used(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "RUN_USER", tmp_path)
    mine = tmp_path / str(os.getuid())
    fallback = Path("/tmp") / f"mcpd-{os.getuid()}"
    assert paths.runtime_dir({"HOME": "/h"}) == fallback  # no /run/user/UID
    mine.mkdir(mode=0o700)
    assert paths.runtime_dir({"HOME": "/h"}) == mine / "mcpd"
    assert paths.socket_path({}) == mine / "mcpd" / "mcpd.sock"
    assert paths.runtime_dir({"XDG_RUNTIME_DIR": "/x"}) == Path("/x/mcpd")  # still first
    mine.chmod(0o777)
    assert paths.runtime_dir({}) == fallback  # anyone could plant a socket there
    mine.chmod(0o700)
    (tmp_path / "link").symlink_to(mine)
    monkeypatch.setattr(paths, "RUN_USER", tmp_path / "elsewhere")
    assert paths.runtime_dir({}) == fallback
