"""Signing in to a server and authorization server of the official Python SDK.

The peer is mcpd's demo server (mcpd/demo/server.py): the SDK's MCP server,
its authorization server routes and bearer middleware, with an in-memory
provider whose user approves at once. It revokes (RFC 7009) and forgets its
registered clients when restarted, which the tests use.
"""

from __future__ import annotations

from demo_peer import demo_server
from harness import browse, finish, server_config, start_auth, status_of, wait_state
from real_peers import free_port


def test_sign_in_call_and_revoke(mcpd_env, run_daemon, tmp_path):
    with demo_server(tmp_path) as peer:
        mcpd_env.write_config("[daemon]\ncallback_port = 0\n" + server_config("demo", peer.url))
        daemon = run_daemon()
        wait_state(daemon, "demo", "needs_auth")
        process, url = start_auth(mcpd_env, "demo")
        assert "offline_access" in url  # the SDK's AS lists it: ask for a refresh token
        assert browse(url)[0] == 200
        assert finish(process)[0] == 0
        assert daemon.mcpctl("call", "demo", "echo", '{"text": "sdk"}').stdout == "sdk\n"
        out = daemon.mcpctl("logout", "demo")
        assert out.returncode == 0, out.stderr
        assert "tokens revoked and deleted" in out.stdout
        peer.wait_for_log("revoked")
        wait_state(daemon, "demo", "needs_auth")


def test_restart_gets_out_of_a_sign_in_the_server_cannot_finish(mcpd_env, run_daemon, tmp_path):
    """The server forgot the registered client, so its sign-in page shows an
    error instead of redirecting: `--restart` registers anew and finishes."""
    port = free_port()  # fixed, so the stored registration is reused
    with demo_server(tmp_path) as first:
        mcpd_env.write_config(
            f"[daemon]\ncallback_port = {port}\n" + server_config("demo", first.url)
        )
        daemon = run_daemon()
        wait_state(daemon, "demo", "needs_auth")
        process, url = start_auth(mcpd_env, "demo")
        browse(url)
        assert finish(process)[0] == 0
        assert daemon.mcpctl("logout", "demo").returncode == 0
        server_port = first.port
    with demo_server(tmp_path, port=server_port):
        wait_state(daemon, "demo", "needs_auth")
        stuck, stuck_url = start_auth(mcpd_env, "demo")
        status, _, _page = browse(stuck_url)
        assert status == 400  # the authorization server does not know the client
        assert status_of(daemon, "demo")["state"] == "authorizing"
        fresh, fresh_url = start_auth(mcpd_env, "demo", "--restart")
        assert fresh_url != stuck_url
        assert browse(fresh_url)[0] == 200
        assert finish(fresh)[0] == 0
        code, _, err = finish(stuck)
        assert code == 1
        assert "replaced by a new sign-in" in err
        assert status_of(daemon, "demo")["state"] == "connected"
