"""The daemon's security model, on the real process: who may connect, which
files and directories it will use, one instance per user, and what never
reaches its log."""

from __future__ import annotations

import json
import os
import socket
import stat
import time

import msgspec
import pytest
from harness import McpdEnv, launch, wait_state

from mcpd.keys import open_keyring
from mcpd.oauth.model import ClientRegistration, CredentialRecord, TokenSet
from mcpd.protocol import PROTOCOL_VERSION, HelloParams, Request, encode_frame
from mcpd.store import CredentialStore

NOBODY = 65534


def _wait_exit(process, timeout: float = 15) -> int:
    return process.wait(timeout=timeout)


def test_socket_and_its_directory_are_private(mcpd_env, run_daemon):
    run_daemon()
    assert stat.S_IMODE(mcpd_env.socket_dir.stat().st_mode) == 0o700
    socket_stat = mcpd_env.socket.lstat()
    assert stat.S_ISSOCK(socket_stat.st_mode)
    assert stat.S_IMODE(socket_stat.st_mode) == 0o600
    assert stat.S_IMODE(mcpd_env.key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(mcpd_env.credentials_dir.stat().st_mode) == 0o700


def test_group_readable_socket_directory_is_refused_with_the_fix(mcpd_env):
    mcpd_env.socket_dir.mkdir(mode=0o700)
    mcpd_env.socket_dir.chmod(0o750)
    process, log = launch(mcpd_env)
    assert _wait_exit(process) == 1
    text = log.read_text()
    assert "accessible to group or others (mode 0750)" in text
    assert f"chmod 700 {mcpd_env.socket_dir}" in text
    assert not mcpd_env.socket.exists()


def test_socket_directory_owned_by_someone_else_is_refused(mcpd_env):
    mcpd_env.socket_dir.mkdir(mode=0o700)
    os.chown(mcpd_env.socket_dir, NOBODY, NOBODY)
    process, log = launch(mcpd_env)
    assert _wait_exit(process) == 1
    assert f"is owned by uid {NOBODY}, not by you" in log.read_text()


def _connect_as(uid: int, path: str) -> tuple[str, bytes]:
    """Fork a child that drops to `uid`, connects to `path` and says hello.

    Returns what happened: "refused-by-fs", or "connected" with whatever the
    daemon sent back before closing (b"" when it closed without a word).
    """
    hello = encode_frame(
        Request(1, "hello", msgspec.Raw(msgspec.msgpack.encode(HelloParams(PROTOCOL_VERSION))))
    )
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: only async-signal-safe-ish work, then _exit
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(5)
            try:
                sock.connect(path)
            except PermissionError:
                os.write(write_end, b"refused-by-fs\n")
                os._exit(0)
            try:
                sock.sendall(hello)
                reply = sock.recv(4096)
            except (ConnectionResetError, BrokenPipeError):
                reply = b""
            os.write(write_end, b"connected\n" + reply)
            os._exit(0)
        except BaseException:
            os._exit(3)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read_end, "rb") as pipe:
        output = pipe.read()
    assert os.waitstatus_to_exitcode(status) == 0
    kind, _, rest = output.partition(b"\n")
    return kind.decode(), rest


def test_another_user_is_stopped_by_the_file_modes(mcpd_env, run_daemon):
    run_daemon()
    kind, _ = _connect_as(NOBODY, str(mcpd_env.socket))
    assert kind == "refused-by-fs"


def test_another_user_is_refused_by_peer_uid_whatever_the_file_modes(mcpd_env, run_daemon):
    """The socket file is opened up (as a careless chmod would) and reached
    through /proc/self/fd, so that only the SO_PEERCRED check stands between
    another uid and the daemon."""
    daemon = run_daemon()
    mcpd_env.socket.chmod(0o666)
    handle = os.open(mcpd_env.socket, os.O_PATH)
    try:
        kind, reply = _connect_as(NOBODY, f"/proc/self/fd/{handle}")
    finally:
        os.close(handle)
    assert kind == "connected"
    assert reply == b"", "the daemon answered a foreign uid"
    daemon.wait_for_log("refused a connection from another user")
    assert f"peer_uid={NOBODY}" in daemon.log
    assert daemon.mcpctl("status").returncode == 0  # and it serves its own user still


def test_second_instance_exits_with_the_running_pid(mcpd_env, run_daemon):
    first = run_daemon()
    process, log = launch(mcpd_env, log_name="second.log")
    assert _wait_exit(process) == 1
    assert f"already running (pid {first.pid})" in log.read_text()
    assert first.mcpctl("status").returncode == 0


def test_stale_socket_from_a_crash_is_replaced(mcpd_env, run_daemon):
    mcpd_env.socket_dir.mkdir(mode=0o700)
    left_over = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left_over.bind(str(mcpd_env.socket))
    left_over.close()  # the file stays, nothing listens: what a SIGKILL leaves
    daemon = run_daemon()
    assert "removed a stale socket" in daemon.log
    assert daemon.mcpctl("status").returncode == 0


def test_a_daemon_killed_hard_is_replaced_cleanly(mcpd_env, run_daemon):
    first = run_daemon()
    first.process.kill()
    first.process.wait()
    assert mcpd_env.socket.exists()
    second = run_daemon()
    assert "removed a stale socket" in second.log
    assert second.mcpctl("status").returncode == 0


def test_live_socket_of_another_process_is_never_removed(mcpd_env):
    mcpd_env.socket_dir.mkdir(mode=0o700)
    squatter = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    squatter.bind(str(mcpd_env.socket))
    squatter.listen()
    try:
        process, log = launch(mcpd_env)
        assert _wait_exit(process) == 1
        assert "another process is listening" in log.read_text()
        assert mcpd_env.socket.exists()
    finally:
        squatter.close()


def test_runtime_dir_fallback_is_created_private(mcpd_env, run_daemon):
    from mcpd import paths

    if str(paths.runtime_dir({})) != f"/tmp/mcpd-{os.getuid()}":
        pytest.skip("/run/user/UID is this user's here: it comes before /tmp")
    del mcpd_env.vars["XDG_RUNTIME_DIR"]
    fallback = f"/tmp/mcpd-{os.getuid()}"
    existed = os.path.exists(fallback)
    daemon = run_daemon()
    try:
        assert stat.S_IMODE(os.stat(fallback).st_mode) == 0o700
        assert os.path.exists(f"{fallback}/mcpd.sock")
        assert daemon.mcpctl("status").returncode == 0
    finally:
        daemon.stop()
        if not existed:
            os.rmdir(fallback)


def test_group_readable_key_is_refused(mcpd_env, run_daemon):
    run_daemon().stop()
    mcpd_env.key_file.chmod(0o640)
    process, log = launch(mcpd_env, log_name="second.log")
    assert _wait_exit(process) == 1
    assert f"chmod 600 {mcpd_env.key_file}" in log.read_text()


def _store(env: McpdEnv) -> CredentialStore:
    keyring = open_keyring(env.key_file, {}, existing_records=0)
    store = CredentialStore(env.credentials_dir, keyring, CredentialRecord)
    store.prepare()
    return store


def test_missing_key_with_records_refuses_to_start_and_creates_no_key(mcpd_env):
    _store(mcpd_env).save(CredentialRecord(server="a", url="https://a.example/mcp"))
    mcpd_env.key_file.unlink()
    process, log = launch(mcpd_env)
    assert _wait_exit(process) == 1
    text = log.read_text()
    assert "key file" in text
    assert "is missing" in text
    assert "1 encrypted credential" in text
    assert not mcpd_env.key_file.exists()


def test_tampered_record_moves_aside_and_only_that_server_needs_auth(mcpd_env, run_daemon, silent):
    mcpd_env.write_config(
        f'[servers.a]\nurl = "{silent.url("a")}"\n[servers.b]\nurl = "{silent.url("b")}"\n'
    )
    store = _store(mcpd_env)
    expires = time.time() + 3600
    for name in ("a", "b"):
        store.save(
            CredentialRecord(
                server=name,
                url=silent.url(name),
                tokens=TokenSet(access_token=f"tok-{name}", expires_at=expires, obtained_at=0),
            )
        )
    record_a = mcpd_env.credentials_dir / "a.cred"
    data = bytearray(record_a.read_bytes())
    data[len(data) // 2] ^= 0x01
    record_a.write_bytes(bytes(data))

    daemon = run_daemon()
    wait_state(daemon, "a", "needs_auth")
    servers = {
        s["name"]: s for s in json.loads(daemon.mcpctl("status", "--json").stdout)["servers"]
    }
    assert "could not be decrypted" in servers["a"]["error"]
    assert "mcpctl auth a" in servers["a"]["error"]
    assert servers["b"]["state"] == "connecting"
    assert servers["b"]["access_expires_at"] == expires
    assert not record_a.exists()
    moved = list(mcpd_env.credentials_dir.glob("a.cred.unreadable-*"))
    assert len(moved) == 1
    assert moved[0].read_bytes() == bytes(data)


def test_no_secret_reaches_the_log_or_the_cli(mcpd_env, run_daemon):
    secrets = {
        "header": "hdr-secret-6f1d2c",
        "client_secret": "client-secret-9a8b7c",
        "access": "access-token-1234abcd",
        "refresh": "refresh-token-5678efgh",
        "registered_secret": "dcr-secret-4242",
        "url_query": "url-query-key-77aa",
        "url_password": "url-password-88bb",
    }
    mcpd_env.vars["URL_KEY"] = secrets["url_query"]
    mcpd_env.vars["URL_PASSWORD"] = secrets["url_password"]
    mcpd_env.vars["MCP_API_KEY"] = secrets["header"]
    mcpd_env.vars["GH_SECRET"] = secrets["client_secret"]
    mcpd_env.write_config(
        """
[servers.internal]
url = "https://internal.example/mcp"
headers = { Authorization = "Bearer {env:MCP_API_KEY}" }
oauth = false

[servers.github]
url = "https://api.githubcopilot.com/mcp/"
oauth = { client_id = "Iv1.abc", client_secret = "{env:GH_SECRET}", scope = "repo" }

[servers.keyed]
url = "https://me:{env:URL_PASSWORD}@keyed.example/mcp?key={env:URL_KEY}"

[servers.keyed_bad]
url = "htps://keyed.example/mcp?key={env:URL_KEY}"

[servers.broken]
url = "https://broken.example/mcp"
headers = { Authorization = "Bearer {env:UNSET_VARIABLE}", X = 1 }
"""
    )
    store = _store(mcpd_env)
    store.save(
        CredentialRecord(
            server="github",
            url="https://api.githubcopilot.com/mcp/",
            tokens=TokenSet(
                access_token=secrets["access"],
                refresh_token=secrets["refresh"],
                expires_at=time.time() + 600,
                obtained_at=time.time(),
            ),
            client=ClientRegistration(client_id="c", client_secret=secrets["registered_secret"]),
        )
    )
    store.save(CredentialRecord(server="internal", url="https://moved.example/mcp"))
    (mcpd_env.credentials_dir / "broken.cred").write_bytes(b"not a fernet token")
    daemon = run_daemon("--log-level", "debug")
    outputs = [
        daemon.mcpctl("status"),
        daemon.mcpctl("status", "--json"),
        daemon.mcpctl("reload"),
        daemon.mcpctl("rotate-key"),
        daemon.mcpctl("status", "github", "--json"),
    ]
    assert all(o.returncode == 0 for o in outputs), [o.stderr for o in outputs]
    assert "https://keyed.example/mcp?…" in outputs[0].stdout
    os.kill(daemon.pid, 1)  # SIGHUP
    daemon.wait_for_log("reloaded on SIGHUP")
    key = mcpd_env.key_file.read_text().strip()
    assert daemon.stop() == 0
    seen = daemon.log + "".join(o.stdout + o.stderr for o in outputs)
    assert "state changed" in seen
    assert "rotated the credential key" in seen
    for name, value in [*secrets.items(), ("key", key)]:
        assert value not in seen, f"the {name} leaked"
