"""`mcpctl rotate-key` on the real daemon, including SIGKILL in the middle of it."""

from __future__ import annotations

import os
import random
import signal
import time

from harness import RawClient, start_daemon

from mcpd.keys import open_keyring
from mcpd.oauth.model import CredentialRecord, TokenSet
from mcpd.store import CredentialStore

SERVERS = [f"s{i}" for i in range(12)]


def _populate(env) -> dict[str, str]:
    keyring = open_keyring(env.key_file, {}, existing_records=0)
    store = CredentialStore(env.credentials_dir, keyring, CredentialRecord)
    store.prepare()
    tokens = {}
    for name in SERVERS:
        tokens[name] = f"access-{name}-" + "x" * 20_000
        store.save(
            CredentialRecord(
                server=name,
                url=f"https://{name}.example/mcp",
                tokens=TokenSet(access_token=tokens[name], obtained_at=time.time()),
            )
        )
    # Disabled: the rotation is timed against nothing but itself (no server
    # loading its record or connecting meanwhile).
    env.write_config(
        "".join(
            f'[servers.{name}]\nurl = "https://{name}.example/mcp"\nenabled = false\n'
            for name in SERVERS
        )
    )
    return tokens


def _check_store(env, tokens: dict[str, str]) -> int:
    """Every record decrypts with the key file as it is now; returns the number of keys."""
    keyring = open_keyring(env.key_file, {}, existing_records=len(SERVERS))
    store = CredentialStore(env.credentials_dir, keyring, CredentialRecord)
    for name in SERVERS:
        record = store.load(name, f"https://{name}.example/mcp")
        assert record is not None
        assert record.tokens is not None
        assert record.tokens.access_token == tokens[name]
    return len(keyring.keys)


def test_rotate_key_reencrypts_everything_and_retires_the_old_key(mcpd_env, run_daemon):
    tokens = _populate(mcpd_env)
    old_key = mcpd_env.key_file.read_bytes()
    before = {n: (mcpd_env.credentials_dir / f"{n}.cred").read_bytes() for n in SERVERS}
    daemon = run_daemon()
    result = daemon.mcpctl("rotate-key")
    assert result.returncode == 0, result.stderr
    assert f"{len(SERVERS)} credential record(s) re-encrypted" in result.stdout
    assert mcpd_env.key_file.read_bytes() != old_key
    assert _check_store(mcpd_env, tokens) == 1
    for name in SERVERS:
        assert (mcpd_env.credentials_dir / f"{name}.cred").read_bytes() != before[name]
    # The daemon goes on reading with the new key.
    daemon.stop()
    daemon = run_daemon()
    assert "needs_auth" not in daemon.mcpctl("status").stdout


def test_sigkill_during_rotation_never_loses_a_record(mcpd_env):
    tokens = _populate(mcpd_env)
    rng = random.Random(20261127)
    kills_mid_rotation = 0
    for _ in range(12):
        daemon, notify = start_daemon(mcpd_env)
        try:
            client = RawClient(mcpd_env.socket)
            client.hello()
            client.request("rotate_key")
            time.sleep(rng.uniform(0, 0.04))
            os.kill(daemon.pid, signal.SIGKILL)
            daemon.process.wait()
            client.close()
        finally:
            notify.close()
        # Interrupted rotations leave the new key in front of the old ones.
        kills_mid_rotation += _check_store(mcpd_env, tokens) > 1
    # Some kills must have landed between the first and the last step, or the
    # loop did not test what it claims to.
    assert kills_mid_rotation > 0
    daemon, notify = start_daemon(mcpd_env)
    try:
        assert daemon.mcpctl("rotate-key").returncode == 0
        assert _check_store(mcpd_env, tokens) == 1
    finally:
        daemon.stop()
        notify.close()
