"""Managing servers from mcpctl, against the real daemon: `mcpctl add/remove/
enable/disable` edit a commented config.toml (everything they do not change
stays byte for byte) and reload the daemon; `mcpctl list`; `mcpctl auth` and
`mcpctl logout` with no NAME, on a pseudo-terminal and without one.

The edits' handling of other layouts (inline tables, CRLF, symbolic links...)
is in tests/test_configedit.py."""

from __future__ import annotations

import json
import os
import pty
import select
import stat
import subprocess
import sys
import time

import pytest
from demo_peer import demo_server
from harness import MCPCTL, McpdEnv, imported_modules, status_of, wait_state

from mcpd.config import parse_server

ORIGINAL = """\
# mcpd, as this user likes it.

[daemon]
log_level = "info"   # chatty enough

# Linear, for the team.
[servers.linear]
url = "LINEAR_URL"   # their endpoint
timeout = 10

# Our own, behind a key.
[servers.internal]
url = "INTERNAL_URL"
oauth = false   # the key is enough
headers = { Authorization = "Bearer {env:MCP_API_KEY}" }

# Servers above; nothing else below.
"""


def _original(silent) -> str:
    return ORIGINAL.replace("LINEAR_URL", silent.url("linear")).replace(
        "INTERNAL_URL", silent.url("internal")
    )


def _servers(env: McpdEnv) -> dict[str, dict]:
    result = env.mcpctl("status", "--json")
    assert result.returncode == 0, result.stderr
    return {s["name"]: s for s in json.loads(result.stdout)["servers"]}


def test_edits_keep_the_rest_of_a_commented_config_byte_for_byte_and_reload(
    mcpd_env, run_daemon, silent
):
    original = _original(silent)
    mcpd_env.write_config(original)
    mcpd_env.vars["MCP_API_KEY"] = "k"
    run_daemon()
    config = mcpd_env.config_file

    added = mcpd_env.mcpctl("add", "docs", silent.url("docs"), "--header", "X-Team: docs")
    assert added.returncode == 0, added.stderr
    assert f"added server 'docs' to {config}" in added.stdout
    assert "mcpd reloaded: added: docs" in added.stdout
    assert "docs is connecting (`mcpctl list` shows how it goes on)" in added.stdout
    block = f'[servers.docs]\nurl = "{silent.url("docs")}"\nheaders = {{ X-Team = "docs" }}\n'
    with_docs = original.replace(
        "\n# Servers above", f"\n{block}\n# Servers above"
    )  # after the last server, before the comment that closes the file
    assert config.read_text() == with_docs
    assert _servers(mcpd_env)["docs"]["state"] == "connecting"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600

    disabled = mcpd_env.mcpctl("disable", "linear")
    assert disabled.returncode == 0, disabled.stderr
    assert "mcpd reloaded: restarted: linear" in disabled.stdout
    assert "linear is disabled" in disabled.stdout
    assert config.read_text() == with_docs.replace(
        "# their endpoint\n", "# their endpoint\nenabled = false\n"
    )
    assert _servers(mcpd_env)["linear"]["state"] == "disabled"
    again = mcpd_env.mcpctl("disable", "linear")
    assert again.returncode == 0
    assert "already disabled; nothing changed" in again.stdout
    assert "reloaded" not in again.stdout

    enabled = mcpd_env.mcpctl("enable", "linear")
    assert enabled.returncode == 0, enabled.stderr
    assert config.read_text() == with_docs  # `enabled = false` is taken out again
    assert _servers(mcpd_env)["linear"]["state"] == "connecting"

    removed = mcpd_env.mcpctl("remove", "docs")
    assert removed.returncode == 0, removed.stderr
    assert "mcpd reloaded: removed: docs" in removed.stdout
    assert config.read_text() == original
    assert "docs" not in _servers(mcpd_env)

    replaced = mcpd_env.mcpctl("add", "linear", silent.url("linear2"), "--replace", "--per-client")
    assert replaced.returncode == 0, replaced.stderr
    assert "mcpd reloaded: restarted: linear" in replaced.stdout
    old_entry = (
        f'[servers.linear]\nurl = "{silent.url("linear")}"   # their endpoint\ntimeout = 10\n'
    )
    new_entry = f'[servers.linear]\nurl = "{silent.url("linear2")}"\nsession = "per-client"\n'
    assert config.read_text() == original.replace(old_entry, new_entry)
    assert _servers(mcpd_env)["linear"]["url"] == silent.url("linear2")


def test_a_duplicate_or_an_invalid_server_is_refused_and_nothing_changes(
    mcpd_env, run_daemon, silent
):
    original = _original(silent)
    mcpd_env.write_config(original)
    mcpd_env.vars["MCP_API_KEY"] = "k"
    run_daemon()
    config = mcpd_env.config_file

    duplicate = mcpd_env.mcpctl("add", "linear", silent.url("other"))
    assert duplicate.returncode == 1
    assert "a server named 'linear' is already in" in duplicate.stderr
    assert "--replace" in duplicate.stderr

    bad = mcpd_env.mcpctl("add", "files", "ftp://files.example/")
    assert bad.returncode == 1
    # The daemon's own message for that entry, word for word.
    daemons_word = parse_server("files", {"url": "ftp://files.example/"}, {}).error
    assert daemons_word is not None
    assert bad.stderr == f"mcpctl: {daemons_word}; nothing was changed\n"

    badname = mcpd_env.mcpctl("add", "no/slashes", silent.url("x"))
    assert badname.returncode == 1
    assert "names may use letters, digits" in badname.stderr

    unknown = mcpd_env.mcpctl("remove", "nope")
    assert unknown.returncode == 1
    assert "no server named 'nope'" in unknown.stderr
    assert "(configured: internal, linear)" in unknown.stderr

    # A credential is never written into the file: only as {env:VAR}.
    literal = mcpd_env.mcpctl("add", "keyed", silent.url("k"), "--header", "X-Api-Key: s3cr3t")
    assert literal.returncode == 2
    assert "{env:VAR}" in literal.stderr

    assert config.read_text() == original
    assert set(_servers(mcpd_env)) == {"linear", "internal"}


def test_a_broken_file_is_refused_with_the_daemons_message(mcpd_env):
    broken = '[servers.a]\nurl = "https://a.example/mcp"\nenabled = tru\n'
    mcpd_env.write_config(broken)
    result = mcpd_env.mcpctl("add", "b", "https://b.example/mcp")
    assert result.returncode == 1
    assert f"{mcpd_env.config_file}: invalid TOML" in result.stderr
    assert "line 3" in result.stderr
    assert mcpd_env.config_file.read_text() == broken


def test_without_a_daemon_the_change_applies_when_it_starts(mcpd_env, run_daemon, silent):
    assert not mcpd_env.config_file.parent.exists()  # a new user: no config yet
    mcpd_env.vars["GH_SECRET"] = "not-in-the-file-0451"
    added = mcpd_env.mcpctl(
        "add",
        "gh",
        silent.url("gh"),
        "--client-id",
        "Iv1.abc",
        "--client-secret-env",
        "GH_SECRET",
        "--scope",
        "repo read:org",
        "--header",
        "Authorization: Bearer {env:GH_SECRET}",
    )
    assert added.returncode == 0, added.stderr
    assert "mcpd is not running; the change applies when it starts" in added.stdout
    text = mcpd_env.config_file.read_text()
    assert text == (
        "[servers.gh]\n"
        f'url = "{silent.url("gh")}"\n'
        'headers = { Authorization = "Bearer {env:GH_SECRET}" }\n'
        'oauth = { client_id = "Iv1.abc", client_secret = "{env:GH_SECRET}", '
        'scope = "repo read:org" }\n'
    )
    assert "not-in-the-file" not in text
    assert stat.S_IMODE(mcpd_env.config_file.parent.stat().st_mode) == 0o700

    disabled = mcpd_env.mcpctl("disable", "gh")
    assert disabled.returncode == 0, disabled.stderr
    assert "the change applies when it starts" in disabled.stdout

    run_daemon()
    assert _servers(mcpd_env)["gh"]["state"] == "disabled"


def test_an_unset_variable_warns_but_is_written(mcpd_env, silent):
    result = mcpd_env.mcpctl(
        "add", "x", silent.url("x"), "--header", "Authorization: Bearer {env:MCPD_TEST_UNSET}"
    )
    assert result.returncode == 0, result.stderr
    assert "$MCPD_TEST_UNSET is not set here" in result.stderr
    assert "{env:MCPD_TEST_UNSET}" in mcpd_env.config_file.read_text()


def test_list_shows_state_signed_in_and_url(mcpd_env, run_daemon, silent):
    mcpd_env.write_config(
        _original(silent) + f'\n[servers.off]\nurl = "{silent.url("off")}"\nenabled = false\n'
    )
    mcpd_env.vars["MCP_API_KEY"] = "k"
    run_daemon()
    wait_listed = time.monotonic() + 10
    while True:
        table = mcpd_env.mcpctl("list")
        assert table.returncode == 0, table.stderr
        rows = {line.split()[0]: line.split() for line in table.stdout.splitlines()[1:]}
        if rows["linear"][2] != "-" or time.monotonic() > wait_listed:
            break  # its stored record read (there is none): "no"
        time.sleep(0.05)
    assert table.stdout.splitlines()[0].split() == ["NAME", "STATE", "SIGNED", "IN", "URL"]
    assert rows["linear"] == ["linear", "connecting", "no", silent.url("linear")]
    assert rows["internal"] == ["internal", "connecting", "-", silent.url("internal")]  # oauth off
    assert rows["off"] == ["off", "disabled", "-", silent.url("off")]

    listed = json.loads(mcpd_env.mcpctl("list", "--json").stdout)
    by_name = {s["name"]: s for s in listed["servers"]}
    assert list(by_name) == ["linear", "internal", "off"]
    assert by_name["linear"] == {
        "name": "linear",
        "state": "connecting",
        "signed_in": False,
        "url": silent.url("linear"),
        "error": None,
    }
    assert by_name["internal"]["signed_in"] is None

    logout = mcpd_env.mcpctl("logout")  # no NAME, no terminal
    assert logout.returncode == 2
    assert "mcpctl logout NAME (none is signed in now)" in logout.stderr


def test_mcpctl_status_imports_neither_tomlkit_nor_the_daemons_modules(mcpd_env, run_daemon):
    run_daemon()
    for command in (["status"], ["list"]):
        imported, _ = imported_modules(mcpd_env, *command)
        assert "mcpctl.manage" in imported
        daemons = {name for name in imported if name.startswith("mcpd.")}
        assert daemons <= {"mcpd", "mcpd.protocol", "mcpd.paths"}, daemons
        assert "tomlkit" not in imported
    # The editing commands do load them (lazily, from their function).
    imported, _ = imported_modules(mcpd_env, "disable", "nope", check=False)
    assert "tomlkit" in imported
    assert "mcpd.configedit" in imported


# --- auth and logout with no NAME, against the demo OAuth server ------------------------


def _browser_env(env: McpdEnv) -> dict[str, str]:
    """A headless browser that follows the sign-in to its end (mcpd/demo/browser.py)."""
    return {**env.vars, "BROWSER": f"{sys.executable} -m mcpd.demo.browser %s"}


def _two_to_sign_in(mcpd_env, silent, peer) -> None:
    mcpd_env.write_config(
        "[daemon]\ncallback_port = 0\n\n"
        f'[servers.one]\nurl = "{peer.url}"\n\n'
        f'[servers.two]\nurl = "{peer.url}"\n\n'
        f'[servers.plain]\nurl = "{silent.url("plain")}"\noauth = false\n'
    )


def _run(env: McpdEnv, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [MCPCTL, *args],
        env=_browser_env(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    env.keep_output(args, result.stdout, result.stderr)
    return result


def on_terminal(env: McpdEnv, args: list[str], prompt: str, *answers: str) -> tuple[int, str]:
    """Run mcpctl on a pseudo-terminal: type each of `answers` when `prompt` shows
    (again), and read to the end."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [MCPCTL, *args],
        env=_browser_env(env),
        stdin=follower,
        stdout=follower,
        stderr=follower,
        start_new_session=True,
    )
    os.close(follower)
    output = b""
    answered = 0
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(leader, 4096)
                except OSError:  # EIO: the terminal's other side is closed
                    break
                if not chunk:
                    break
                output += chunk
            if answered < len(answers) and output.count(prompt.encode()) > answered:
                os.write(leader, answers[answered].encode() + b"\n")
                answered += 1
            if process.poll() is not None and not ready:
                break
        code = process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(leader)
    text = output.decode(errors="replace").replace("\r\n", "\n")
    env.keep_output(["(terminal)", *args], text, "")
    assert answered == len(answers), f"not {len(answers)} x {prompt!r} in:\n{text}"
    return code, text


@pytest.mark.timeout(120)
def test_auth_and_logout_with_no_name(mcpd_env, run_daemon, silent, tmp_path):
    with demo_server(tmp_path) as peer:
        _two_to_sign_in(mcpd_env, silent, peer)
        assert mcpd_env.mcpctl("remove", "two").returncode == 0
        daemon = run_daemon()
        wait_state(daemon, "one", "needs_auth")
        # Added to the running daemon: it says what the server needs.
        added = mcpd_env.mcpctl("add", "two", peer.url)
        assert added.returncode == 0, added.stderr
        assert "mcpd reloaded: added: two" in added.stdout
        assert "two is needs_auth: sign in with `mcpctl auth two`" in added.stdout

        # No terminal: every server that needs it, one after another.
        signed = _run(mcpd_env, "auth")
        assert signed.returncode == 0, signed.stdout + signed.stderr
        assert "Signing in to one, two, one after another." in signed.stdout
        assert signed.stdout.index("[1/2] one") < signed.stdout.index("[2/2] two")
        assert signed.stdout.count("Signed in; ") == 2
        assert status_of(daemon, "one")["state"] == "connected"
        assert status_of(daemon, "two")["state"] == "connected"

        listed = mcpd_env.mcpctl("list")
        rows = {line.split()[0]: line.split() for line in listed.stdout.splitlines()[1:]}
        assert rows["one"][1:3] == ["connected", "yes"]
        assert rows["two"][1:3] == ["connected", "yes"]
        assert rows["plain"][2] == "-"

        nothing = _run(mcpd_env, "auth")
        assert nothing.returncode == 0
        assert nothing.stdout == "No server needs a sign-in.\n"

        # No terminal, no name: an error that lists the signed-in servers.
        refused = _run(mcpd_env, "logout")
        assert refused.returncode == 2
        assert "name the server to sign out of: mcpctl logout NAME" in refused.stderr
        assert "(signed in: one, two)" in refused.stderr

        # On a terminal: a choice among them.
        code, shown = on_terminal(
            mcpd_env, ["logout"], "Sign out of which? (numbers or names; Enter: none)", "one"
        )
        assert code == 0, shown
        assert "1. one" in shown
        assert "2. two" in shown
        assert "Signed out of one" in shown
        assert status_of(daemon, "one")["signed_in"] is False
        assert status_of(daemon, "two")["signed_in"] is True
        wait_state(daemon, "one", "needs_auth")

        code, shown = on_terminal(mcpd_env, ["logout"], "Sign out of which?", "")
        assert code == 0, shown
        assert "1. two" in shown
        assert "Signed out of nothing." in shown
        assert status_of(daemon, "two")["signed_in"] is True


@pytest.mark.timeout(120)
def test_auth_with_no_name_on_a_terminal_asks_which(mcpd_env, run_daemon, silent, tmp_path):
    with demo_server(tmp_path) as peer:
        _two_to_sign_in(mcpd_env, silent, peer)
        daemon = run_daemon()
        wait_state(daemon, "one", "needs_auth")
        wait_state(daemon, "two", "needs_auth")

        code, shown = on_terminal(mcpd_env, ["auth"], "Sign in to which? [all]", "nine", "2")
        assert code == 0, shown
        assert "not in the list: nine; answer with numbers or names from it" in shown
        assert "These servers need a sign-in:" in shown
        assert "1. one" in shown
        assert "2. two" in shown
        assert "Signed in; two is connected." in shown
        assert "[1/1] two" in shown
        assert status_of(daemon, "two")["state"] == "connected"
        assert status_of(daemon, "one")["state"] == "needs_auth"

        code, shown = on_terminal(mcpd_env, ["auth"], "Sign in to which? [all]", "")
        assert code == 0, shown
        assert "1. one" in shown
        assert "2. two" not in shown
        assert status_of(daemon, "one")["state"] == "connected"
