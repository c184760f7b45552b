"""mcpd/configedit.py, the editor behind `mcpctl add/remove/enable/disable`, on
config files of every layout the daemon takes: the bytes it does not change
stay as they were, round trips give the file back, and what it cannot edit
exactly it refuses, leaving the file alone. (With the real daemon and mcpctl:
tests/test_manage.py.)"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from mcpd import configedit
from mcpd.configedit import EditRefused, NewServer

NEW = NewServer("https://new.example/mcp")
BLOCK = '[servers.new]\nurl = "https://new.example/mcp"\n'


def _file(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "config.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_bytes(text.encode())
    return path


def _add(path: Path, name: str = "new", server: NewServer = NEW, **kwargs) -> configedit.Edit:
    return configedit.add(
        path, name, server, replace=kwargs.pop("replace", False), env={}, **kwargs
    )


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("", BLOCK),
        ("# only a comment\n", f"# only a comment\n\n{BLOCK}"),
        ('[daemon]\nlog_level = "info"', f'[daemon]\nlog_level = "info"\n\n{BLOCK}'),
        (
            '[servers.a]\nurl = "https://a.example/mcp"\n# about a\n\n# daemon next\n[daemon]\n',
            '[servers.a]\nurl = "https://a.example/mcp"\n# about a\n\n'
            f"{BLOCK}\n# daemon next\n[daemon]\n",
        ),
        (
            '[servers]\na = { url = "https://a.example/mcp" }  # A\n\n[daemon]\n',
            f'[servers]\na = {{ url = "https://a.example/mcp" }}  # A\n\n{BLOCK}\n[daemon]\n',
        ),
    ],
    ids=["empty", "comment", "no-final-newline", "before-next-comment", "explicit-servers"],
)
def test_add_goes_after_the_last_server_with_a_blank_line(tmp_path, before, after):
    path = _file(tmp_path, before)
    edit = _add(path)
    assert edit.changed
    assert path.read_bytes().decode() == after


def test_add_then_remove_gives_the_file_back(tmp_path):
    for original in (
        "",
        "# header\n",
        '[servers.a]\nurl = "https://a.example/mcp"\n\n# tail\n[daemon]\nlog_level = "info"\n',
        '[daemon]\nlog_level = "info"\n\n[servers.a]\nurl = "https://a.example/mcp"\n',
        'servers = { a = { url = "https://a.example/mcp" } }\n',
    ):
        path = _file(tmp_path, original)
        _add(path)
        configedit.remove(path, "new", env={})
        assert path.read_bytes().decode() == original


def test_disable_then_enable_gives_the_file_back(tmp_path):
    original = (
        "[servers.a]\n"
        'url = "https://a.example/mcp"   # endpoint\n'
        "[servers.a.headers]\n"
        'X-Team = "docs"\n'
        "\n"
        "# b next\n"
        "[servers.b]\n"
        'url = "https://b.example/mcp"\n'
    )
    path = _file(tmp_path, original)
    configedit.set_enabled(path, "a", False, env={})
    assert path.read_text() == original.replace("# endpoint\n", "# endpoint\nenabled = false\n")
    configedit.set_enabled(path, "a", True, env={})
    assert path.read_text() == original


def test_an_enabled_line_with_a_comment_keeps_its_comment(tmp_path):
    original = '[servers.a]\nurl = "https://a.example/mcp"\nenabled = false  # for now\n'
    path = _file(tmp_path, original)
    configedit.set_enabled(path, "a", True, env={})
    assert path.read_text() == original.replace("false  # for now", "true  # for now")


def test_remove_keeps_the_comments_that_stand_above_the_next_table(tmp_path):
    original = (
        "# servers\n"
        "[servers.a]\n"
        'url = "https://a.example/mcp"\n'
        "\n"
        "# the daemon's settings\n"
        "[daemon]\n"
        'log_level = "info"\n'
    )
    path = _file(tmp_path, original)
    configedit.remove(path, "a", env={})
    assert (
        path.read_text() == '# servers\n\n# the daemon\'s settings\n[daemon]\nlog_level = "info"\n'
    )


def test_replace_keeps_the_place_and_what_follows(tmp_path):
    original = (
        '[servers.a]\nurl = "https://a.example/mcp"\ntimeout = 5\n\n# b\n'
        '[servers.b]\nurl = "https://b.example/mcp"\n'
    )
    path = _file(tmp_path, original)
    edit = _add(path, "a", NewServer("https://a2.example/mcp", oauth=False), replace=True)
    assert edit.summary.startswith("replaced server 'a'")
    assert path.read_text() == original.replace(
        'url = "https://a.example/mcp"\ntimeout = 5\n',
        'url = "https://a2.example/mcp"\noauth = false\n',
    )


def test_inline_entries_stay_inline(tmp_path):
    original = 'servers = { a = { url = "https://a.example/mcp" } }\n'
    path = _file(tmp_path, original)
    _add(path, "a", NewServer("https://a2.example/mcp"), replace=True)
    assert path.read_text() == 'servers = { a = { url = "https://a2.example/mcp" } }\n'
    configedit.set_enabled(path, "a", False, env={})
    assert "enabled = false" in path.read_text()
    configedit.set_enabled(path, "a", True, env={})
    assert path.read_text() == 'servers = { a = { url = "https://a2.example/mcp" } }\n'


def test_crlf_line_ends_stay(tmp_path):
    original = (
        b'[servers.a]\r\nurl = "https://a.example/mcp"\r\n\r\n[daemon]\r\nlog_level = "info"\r\n'
    )
    path = _file(tmp_path, original)
    _add(path, server=NewServer("https://new.example/mcp", per_client=True))
    assert path.read_bytes() == original.replace(
        b"\r\n\r\n[daemon]",
        b'\r\n\r\n[servers.new]\r\nurl = "https://new.example/mcp"\r\n'
        b'session = "per-client"\r\n\r\n[daemon]',
    )
    configedit.set_enabled(path, "new", False, env={})
    configedit.set_enabled(path, "new", True, env={})
    configedit.remove(path, "new", env={})
    assert path.read_bytes() == original


def test_names_and_values_are_quoted_as_toml_needs(tmp_path):
    path = _file(tmp_path, "")
    server = NewServer('https://x.example/mcp?q="a"', headers={"X-A.B": 'say "hi"'}, scope="a b")
    _add(path, "a.b", server)
    assert path.read_text() == (
        '[servers."a.b"]\n'
        'url = "https://x.example/mcp?q=\\"a\\""\n'
        'headers = { "X-A.B" = "say \\"hi\\"" }\n'
        'oauth = { scope = "a b" }\n'
    )
    configedit.remove(path, "a.b", env={})
    assert path.read_text() == ""


def test_the_new_file_is_private_and_its_directory_made(tmp_path):
    path = tmp_path / "config" / "mcpd" / "config.toml"
    _add(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert not [p for p in path.parent.iterdir() if p.name != "config.toml"]  # no temporaries


def test_a_symbolic_link_is_edited_where_it_points(tmp_path):
    real = tmp_path / "dotfiles" / "mcpd.toml"
    real.parent.mkdir()
    real.write_text('[servers.a]\nurl = "https://a.example/mcp"\n')
    link = tmp_path / "config.toml"
    link.symlink_to(real)
    _add(link)
    assert link.is_symlink()
    assert real.read_text().endswith(BLOCK)


@pytest.mark.parametrize(
    ("original", "change", "message"),
    [
        (
            '[servers.a]\nurl = "https://a.example/mcp"\n',
            lambda p: _add(p, "a"),
            "a server named 'a' is already in",
        ),
        ("", lambda p: configedit.remove(p, "a", env={}), "no server named 'a'"),
        (
            '[servers.a]\nurl = "https://a.example/mcp"\n',
            lambda p: _add(p, "b", NewServer("https://b.example:70000/mcp")),
            "server 'b': url",
        ),
        (
            '[servers.a]\nurl = "https://a.example/mcp"\n',
            lambda p: _add(p, "b", NewServer("https://b.example/mcp", headers={"Host": "x"})),
            "headers: 'Host' is set by mcpd itself",
        ),
        (
            '[sevrers.a]\nurl = "https://a.example/mcp"\n',
            _add,
            "config.toml:1: Object contains unknown field `sevrers`",
        ),
        (
            # In parts: [servers.a] and, after another table, its headers.
            '[servers.a]\nurl = "https://a.example/mcp"\n\n[daemon]\n\n'
            '[servers.a.headers]\nX = "y"\n',
            lambda p: configedit.set_enabled(p, "a", False, env={}),
            "written in a way mcpctl does not edit",
        ),
    ],
    ids=["duplicate", "unknown", "bad-port", "reserved-header", "unknown-table", "in-parts"],
)
def test_a_refusal_leaves_the_file_alone(tmp_path, original, change, message):
    path = _file(tmp_path, original)
    with pytest.raises(EditRefused) as refused:
        change(path)
    assert message in str(refused.value)
    assert path.read_text() == original


def test_an_unset_variable_is_a_warning_and_another_error_a_refusal(tmp_path):
    path = _file(tmp_path, "")
    server = NewServer("https://a.example/mcp", headers={"Authorization": "Bearer {env:TOKEN_A}"})
    edit = _add(path, "a", server)
    assert edit.warnings == (
        "$TOKEN_A is not set here: mcpd needs it in its own environment, or a shows failed",
    )
    with pytest.raises(EditRefused, match="is not set"):
        # An unset variable where a URL must be: the daemon's own message.
        _add(path, "b", NewServer("{env:URL_B}"))
    assert "[servers.b]" not in path.read_text()


def test_concurrent_edits_lose_nothing(tmp_path):
    path = _file(tmp_path, "")
    names = [f"s{i}" for i in range(12)]
    threads = [
        threading.Thread(target=_add, args=(path, name, NewServer(f"https://{name}.example/mcp")))
        for name in names
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    text = path.read_text()
    assert all(f"[servers.{name}]" in text for name in names)
    assert os.listdir(tmp_path) == ["config.toml"]
