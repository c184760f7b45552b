"""Configuration on the real daemon: bad entries, bad files, reload and SIGHUP."""

from __future__ import annotations

import json
import signal

from harness import launch


def _config(silent, *names: str) -> str:
    """Servers that stay `connecting` (see SilentServer)."""
    return "".join(f'[servers.{name}]\nurl = "{silent.url(name)}"\n' for name in names)


def _servers(daemon) -> dict[str, dict]:
    result = daemon.mcpctl("status", "--json")
    assert result.returncode == 0, result.stderr
    return {s["name"]: s for s in json.loads(result.stdout)["servers"]}


def test_bad_entries_fail_alone(mcpd_env, run_daemon, silent):
    mcpd_env.write_config(
        _config(silent, "good")
        + """

[servers.typo]
urll = "https://typo.example/mcp"

[servers.wrongtype]
url = "https://wrong.example/mcp"
enabled = "yes"

[servers.noenv]
url = "https://noenv.example/mcp"
headers = { Authorization = "Bearer {env:MCPD_TEST_UNSET}" }

[servers.ftp]
url = "ftp://files.example/"

[servers."bad name!"]
url = "https://x.example/mcp"
"""
    )
    daemon = run_daemon()
    servers = _servers(daemon)
    assert servers["good"]["state"] == "connecting"
    assert servers["good"]["error"] is None
    expected = {
        "typo": "unknown field `urll`",
        "wrongtype": "servers.wrongtype.enabled",
        "noenv": "headers.Authorization refers to {env:MCPD_TEST_UNSET} but $MCPD_TEST_UNSET",
        "ftp": "is not an http:// or https:// URL",
        "bad name!": "rename the table",
    }
    for name, fragment in expected.items():
        assert servers[name]["state"] == "failed", name
        assert servers[name]["next_retry_at"] is None
        assert fragment in servers[name]["error"], servers[name]["error"]
        assert f"server {name!r}" in servers[name]["error"]
    table = daemon.mcpctl("status").stdout
    assert "$MCPD_TEST_UNSET is not set" in table


def test_unparseable_config_stops_start_with_file_line_and_reason(mcpd_env):
    mcpd_env.write_config('[servers.a]\nurl = "https://a.example/mcp"\nenabled = tru\n')
    process, log = launch(mcpd_env)
    assert process.wait(timeout=15) == 2
    text = log.read_text()
    assert str(mcpd_env.config_file) in text
    assert "line 3" in text
    assert not mcpd_env.socket.exists()


def test_unknown_top_level_key_names_its_line(mcpd_env):
    mcpd_env.write_config('[daemon]\nlog_level = "info"\n\n[sevrers.a]\nurl = "https://a"\n')
    process, log = launch(mcpd_env)
    assert process.wait(timeout=15) == 2
    text = log.read_text()
    assert f"{mcpd_env.config_file}:4" in text
    assert "sevrers" in text


def test_config_flag_and_env_override(mcpd_env, run_daemon, tmp_path):
    elsewhere = tmp_path / "elsewhere.toml"
    elsewhere.write_text('[servers.flagged]\nurl = "https://flag.example/mcp"\n')
    daemon = run_daemon("--config", str(elsewhere))
    assert list(_servers(daemon)) == ["flagged"]
    daemon.stop()

    by_env = tmp_path / "by-env.toml"
    by_env.write_text('[servers.envd]\nurl = "https://env.example/mcp"\n')
    mcpd_env.vars["MCPD_CONFIG"] = str(by_env)
    assert list(_servers(run_daemon())) == ["envd"]


def test_reload_applies_only_the_difference(mcpd_env, run_daemon, raw_client, silent):
    mcpd_env.write_config(_config(silent, "keep", "change", "drop"))
    daemon = run_daemon()
    before = _servers(daemon)
    watcher = raw_client(mcpd_env.socket)
    watcher.hello()
    watcher.request("subscribe")
    watcher.receive()

    changed = _config(silent, "keep", "change", "new").replace("/change/", "/changed/")
    mcpd_env.write_config(changed)
    result = daemon.mcpctl("reload")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "reloaded; added: new; removed: drop; restarted: change"

    after = _servers(daemon)
    assert list(after) == ["keep", "change", "new"]
    assert after["keep"]["since"] == before["keep"]["since"]  # not disturbed
    assert after["change"]["url"] == silent.url("changed")
    assert after["change"]["since"] > before["change"]["since"]

    seen = []
    while not any(e.name == "state" and e.data["server"]["name"] == "new" for e in seen):
        seen.append(watcher.receive())
    touched = {e.data["server"] if e.name == "removed" else e.data["server"]["name"] for e in seen}
    assert touched == {"drop", "change", "new"}


def test_reload_with_a_broken_file_keeps_the_running_config(mcpd_env, run_daemon, silent):
    mcpd_env.write_config(_config(silent, "keep", "change", "drop"))
    daemon = run_daemon()
    before = _servers(daemon)
    mcpd_env.write_config("[servers.keep\nurl=")
    result = daemon.mcpctl("reload")
    assert result.returncode == 1
    assert str(mcpd_env.config_file) in result.stderr
    assert "line 1" in result.stderr
    assert "previous configuration stays in use" in result.stderr
    assert _servers(daemon) == before


def test_sighup_reloads(mcpd_env, run_daemon):
    mcpd_env.write_config('[servers.a]\nurl = "https://a.example/mcp"\n')
    daemon = run_daemon()
    mcpd_env.write_config('[servers.b]\nurl = "https://b.example/mcp"\n')
    daemon.process.send_signal(signal.SIGHUP)
    daemon.wait_for_log("reloaded on SIGHUP")
    assert list(_servers(daemon)) == ["b"]
    mcpd_env.write_config("not toml at all [")
    daemon.process.send_signal(signal.SIGHUP)
    daemon.wait_for_log("reload failed; keeping the previous configuration")
    assert list(_servers(daemon)) == ["b"]


def test_disabling_and_enabling_a_server(mcpd_env, run_daemon, silent):
    mcpd_env.write_config(_config(silent, "a") + "enabled = false\n")
    daemon = run_daemon()
    assert _servers(daemon)["a"]["state"] == "disabled"
    mcpd_env.write_config(_config(silent, "a"))
    assert daemon.mcpctl("reload").returncode == 0
    assert _servers(daemon)["a"]["state"] == "connecting"
