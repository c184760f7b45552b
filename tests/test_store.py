"""The key file, the encrypted credential store and the atomic file writes under them."""

from __future__ import annotations

import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import msgspec
import pytest
import reliability
from cryptography.fernet import Fernet, InvalidToken

from mcpd import atomicfile
from mcpd.keys import (
    KeyFileError,
    Keyring,
    add_new_key,
    open_keyring,
    retire_old_keys,
    systemd_key,
)
from mcpd.oauth.model import ClientRegistration, CredentialRecord, TokenSet
from mcpd.store import CredentialStore, UnreadableRecord

URL = "https://mcp.example.com/mcp"
ACCESS = "at-ACCESS-0123456789abcdef"
REFRESH = "rt-REFRESH-fedcba9876543210"
CLIENT_SECRET = "cs-CLIENT-SECRET-55aa55aa"

requires_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def key_lines(path: Path) -> list[bytes]:
    return [line for line in path.read_bytes().splitlines() if line.strip()]


def make_record(server: str = "linear", url: str = URL, n: int = 0) -> CredentialRecord:
    return CredentialRecord(
        server=server,
        url=url,
        tokens=TokenSet(
            access_token=f"{ACCESS}-{n}",
            refresh_token=f"{REFRESH}-{n}",
            expires_at=1_900_000_000.0 + n,
            obtained_at=1_800_000_000.0,
            scope="read write",
        ),
        client=ClientRegistration(
            client_id=f"client-{n}",
            client_secret=CLIENT_SECRET,
            redirect_uri="http://127.0.0.1:33418/callback",
            token_endpoint_auth_method="client_secret_post",
            issuer="https://auth.example.com",
        ),
        last_refresh_at=1_850_000_000.0,
    )


class Env:
    """A config directory with the key file, and a credentials directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.key_file = root / "config" / "mcpd" / "mcpd.key"
        self.credentials = root / "state" / "mcpd" / "credentials"

    def keyring(self, env: dict[str, str] | None = None) -> Keyring:
        return open_keyring(
            self.key_file,
            env or {},
            existing_records=CredentialStore.count_records(self.credentials),
        )

    def store(self, keyring: Keyring | None = None) -> CredentialStore:
        store = CredentialStore(self.credentials, keyring or self.keyring(), CredentialRecord)
        store.prepare()
        return store


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


# --- The key file --------------------------------------------------------------------


def test_key_file_is_created_private(env):
    keyring = env.keyring()
    assert env.key_file.is_file()
    assert mode_of(env.key_file) == 0o600
    assert env.key_file.stat().st_uid == os.getuid()
    assert mode_of(env.key_file.parent) == 0o700
    assert keyring.path == env.key_file
    assert keyring.managed_by_systemd is False
    lines = key_lines(env.key_file)
    assert lines == keyring.keys
    assert len(lines) == 1
    # A usable Fernet key.
    assert Fernet(lines[0]).decrypt(Fernet(lines[0]).encrypt(b"x")) == b"x"


def test_existing_key_file_is_reused_not_replaced(env):
    first = env.keyring()
    content = env.key_file.read_bytes()
    second = env.keyring()
    assert second.keys == first.keys
    assert env.key_file.read_bytes() == content


def test_each_new_key_file_gets_a_new_key(tmp_path):
    a = Env(tmp_path / "a").keyring()
    b = Env(tmp_path / "b").keyring()
    assert a.keys != b.keys


def test_create_private_is_exclusive(tmp_path):
    path = tmp_path / "mcpd.key"
    atomicfile.create_private(path, b"first\n")
    with pytest.raises(FileExistsError):
        atomicfile.create_private(path, b"second\n")
    assert path.read_bytes() == b"first\n"
    assert mode_of(path) == 0o600
    # Neither attempt left a temporary behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mcpd.key"]


def test_create_private_does_not_follow_a_symlink(tmp_path):
    target = tmp_path / "elsewhere"
    link = tmp_path / "mcpd.key"
    link.symlink_to(target)
    with pytest.raises(FileExistsError):
        atomicfile.create_private(link, b"key\n")
    assert not target.exists()


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o620, 0o602, 0o440, 0o606])
def test_key_file_open_to_others_is_refused(env, mode):
    env.keyring()
    content = env.key_file.read_bytes()
    env.key_file.chmod(mode)
    with pytest.raises(KeyFileError) as info:
        env.keyring()
    message = str(info.value)
    assert f"chmod 600 {env.key_file}" in message
    assert f"{mode:04o}" in message
    # Refused, not repaired or replaced, and the key is not quoted.
    assert env.key_file.read_bytes() == content
    assert mode_of(env.key_file) == mode
    for key in key_lines(env.key_file):
        assert key.decode() not in message


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700])
def test_owner_only_modes_are_accepted(env, mode):
    keys = env.keyring().keys
    env.key_file.chmod(mode)
    assert env.keyring().keys == keys


@requires_root
def test_key_file_owned_by_another_uid_is_refused(env):
    env.keyring()
    os.chown(env.key_file, 65534, -1)
    with pytest.raises(KeyFileError) as info:
        env.keyring()
    message = str(info.value)
    assert "65534" in message
    assert str(env.key_file) in message
    assert env.key_file.stat().st_uid == 65534


def test_key_file_symlink_is_refused(env, tmp_path):
    real = tmp_path / "real.key"
    real.write_bytes(Fernet.generate_key() + b"\n")
    real.chmod(0o600)
    env.key_file.parent.mkdir(parents=True)
    env.key_file.symlink_to(real)
    with pytest.raises(KeyFileError, match="symbolic link"):
        env.keyring()


def test_dangling_key_file_symlink_is_refused_not_followed(env, tmp_path):
    target = tmp_path / "planted"
    env.key_file.parent.mkdir(parents=True)
    env.key_file.symlink_to(target)
    with pytest.raises(KeyFileError, match="symbolic link"):
        env.keyring()
    assert not target.exists()


def test_missing_key_with_records_is_an_error_and_creates_nothing(env):
    store = env.store()
    store.save(make_record("a"))
    store.save(make_record("b"))
    env.key_file.unlink()
    assert CredentialStore.count_records(env.credentials) == 2
    with pytest.raises(KeyFileError) as info:
        env.keyring()
    message = str(info.value)
    assert str(env.key_file) in message
    assert "2 encrypted credential record(s)" in message
    assert not env.key_file.exists()
    assert not list(env.key_file.parent.iterdir())


def test_missing_key_with_records_does_not_create_the_config_dir(tmp_path):
    key_file = tmp_path / "config" / "mcpd" / "mcpd.key"
    with pytest.raises(KeyFileError):
        open_keyring(key_file, {}, existing_records=1)
    assert not (tmp_path / "config").exists()


def test_key_file_that_is_not_fernet_keys_is_refused_without_quoting_it(env):
    env.key_file.parent.mkdir(parents=True)
    env.key_file.write_bytes(b"not-a-key-TOPSECRETMATERIAL\n")
    env.key_file.chmod(0o600)
    with pytest.raises(KeyFileError) as info:
        env.keyring()
    assert "TOPSECRETMATERIAL" not in str(info.value)
    assert "backup" in str(info.value)


def test_empty_key_file_is_refused(env):
    env.key_file.parent.mkdir(parents=True)
    env.key_file.write_bytes(b"\n\n")
    env.key_file.chmod(0o600)
    with pytest.raises(KeyFileError, match="holds no key"):
        env.keyring()
    # Not silently replaced by a fresh key.
    assert env.key_file.read_bytes() == b"\n\n"


def test_key_file_tolerates_blank_lines_and_crlf(env):
    key = Fernet.generate_key()
    env.key_file.parent.mkdir(parents=True)
    env.key_file.write_bytes(b"\n" + key + b"\r\n\n")
    env.key_file.chmod(0o600)
    assert env.keyring().keys == [key]


def test_key_file_temporaries_are_cleared_on_open(env):
    env.keyring()
    debris = env.key_file.parent / f".mcpd.key{atomicfile.TEMP_MARKER}0123456789abcdef"
    debris.write_bytes(b"half a key")
    unrelated = env.key_file.parent / "config.toml"
    unrelated.write_text("")
    env.keyring()
    assert not debris.exists()
    assert unrelated.exists()


def test_all_keys_decrypt_and_the_first_encrypts(env):
    old, new = Fernet.generate_key(), Fernet.generate_key()
    env.key_file.parent.mkdir(parents=True)
    atomicfile.create_private(env.key_file, old + b"\n")
    store = env.store()
    store.save(make_record("a"))
    # A second key in front, as a rotation interrupted after its first step leaves it.
    atomicfile.write_private(env.key_file, new + b"\n" + old + b"\n")
    store = env.store()
    assert store.keyring.keys == [new, old]
    assert store.load("a", URL) == make_record("a")
    store.save(make_record("b"))
    Fernet(new).decrypt((env.credentials / "b.cred").read_bytes())
    with pytest.raises(InvalidToken):
        Fernet(old).decrypt((env.credentials / "b.cred").read_bytes())


# --- $CREDENTIALS_DIRECTORY (systemd LoadCredential=) ---------------------------------


@pytest.fixture
def systemd_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "credentials.d"
    directory.mkdir(mode=0o700)
    key = directory / "mcpd.key"
    key.write_bytes(Fernet.generate_key() + b"\n")
    key.chmod(0o400)
    return directory


def test_systemd_key_takes_precedence(env, systemd_dir):
    local = env.keyring()
    provided = env.keyring({"CREDENTIALS_DIRECTORY": str(systemd_dir)})
    assert provided.managed_by_systemd is True
    assert provided.path == systemd_dir / "mcpd.key"
    assert provided.keys == key_lines(systemd_dir / "mcpd.key")
    assert provided.keys != local.keys
    assert env.key_file.read_bytes() == local.keys[0] + b"\n"


def test_systemd_key_means_no_local_key_file_is_created(env, systemd_dir):
    keyring = env.keyring({"CREDENTIALS_DIRECTORY": str(systemd_dir)})
    assert keyring.managed_by_systemd
    assert not env.key_file.exists()


def test_credentials_directory_without_our_key_falls_back(env, tmp_path):
    other = tmp_path / "other-creds"
    other.mkdir()
    (other / "something-else").write_text("x")
    assert systemd_key({"CREDENTIALS_DIRECTORY": str(other)}) is None
    assert systemd_key({"CREDENTIALS_DIRECTORY": ""}) is None
    assert systemd_key({}) is None
    keyring = env.keyring({"CREDENTIALS_DIRECTORY": str(other)})
    assert keyring.managed_by_systemd is False
    assert keyring.path == env.key_file


def test_systemd_key_is_still_checked_for_privacy(env, systemd_dir):
    (systemd_dir / "mcpd.key").chmod(0o444)
    with pytest.raises(KeyFileError, match="chmod 600"):
        env.keyring({"CREDENTIALS_DIRECTORY": str(systemd_dir)})


def test_rotation_with_a_systemd_key_is_refused_and_changes_nothing(env, systemd_dir):
    keyring = env.keyring({"CREDENTIALS_DIRECTORY": str(systemd_dir)})
    store = env.store(keyring)
    store.save(make_record("a"))
    store.save(make_record("b"))
    before = {p.name: p.read_bytes() for p in env.credentials.iterdir()}
    key_before = (systemd_dir / "mcpd.key").read_bytes()
    with pytest.raises(KeyFileError) as info:
        store.rotate_key()
    assert "LoadCredential=" in str(info.value)
    assert {p.name: p.read_bytes() for p in env.credentials.iterdir()} == before
    assert (systemd_dir / "mcpd.key").read_bytes() == key_before
    assert sorted(p.name for p in systemd_dir.iterdir()) == ["mcpd.key"]
    assert store.keyring is keyring
    assert store.load("a", URL) == make_record("a")
    with pytest.raises(KeyFileError):
        add_new_key(keyring)


# --- Save and load -------------------------------------------------------------------


def test_save_load_round_trip(env):
    store = env.store()
    record = make_record()
    store.save(record)
    assert store.load("linear", URL) == record
    # A fresh store with the key from disk reads it too.
    assert env.store().load("linear", URL) == record


def test_minimal_record_round_trip(env):
    store = env.store()
    record = CredentialRecord(server="a", url=URL)
    store.save(record)
    assert store.load("a", URL) == record


def test_record_file_is_private_and_encrypted(env):
    store = env.store()
    store.save(make_record())
    path = env.credentials / "linear.cred"
    assert mode_of(path) == 0o600
    assert mode_of(env.credentials) == 0o700
    data = path.read_bytes()
    for secret in (ACCESS, REFRESH, CLIENT_SECRET, "linear", URL):
        assert secret.encode() not in data
    plaintext = Fernet(store.keyring.keys[0]).decrypt(data)
    assert ACCESS.encode() in plaintext


def test_save_replaces_the_previous_record(env):
    store = env.store()
    store.save(make_record(n=1))
    store.save(make_record(n=2))
    assert store.load("linear", URL) == make_record(n=2)
    assert sorted(p.name for p in env.credentials.iterdir()) == ["linear.cred"]


def test_load_of_unknown_server_is_none(env):
    assert env.store().load("nothing", URL) is None


def test_record_is_bound_to_its_url(env):
    store = env.store()
    store.save(make_record())
    assert store.load("linear", "https://other.example.com/mcp") is None
    # Not used, but kept: the old URL still finds it.
    assert (env.credentials / "linear.cred").exists()
    assert store.load("linear", URL) == make_record()


def test_record_copied_to_another_server_is_refused_and_moved_aside(env):
    store = env.store()
    store.save(make_record("alpha"))
    original = (env.credentials / "alpha.cred").read_bytes()
    shutil.copyfile(env.credentials / "alpha.cred", env.credentials / "beta.cred")
    with pytest.raises(UnreadableRecord) as info:
        store.load("beta", URL)
    moved = info.value.moved_to
    assert moved.parent == env.credentials
    assert moved.name.startswith("beta.cred.unreadable-")
    assert moved.read_bytes() == original
    assert not (env.credentials / "beta.cred").exists()
    assert str(moved) in str(info.value)
    assert "'beta'" in str(info.value)
    assert store.load("beta", URL) is None
    assert store.load("alpha", URL) == make_record("alpha")


def test_renamed_record_is_refused(env):
    store = env.store()
    store.save(make_record("alpha"))
    (env.credentials / "alpha.cred").rename(env.credentials / "gamma.cred")
    with pytest.raises(UnreadableRecord):
        store.load("gamma", URL)
    assert store.names() == []


@pytest.mark.parametrize("where", ["first", "middle", "last", "each-half"])
def test_tampered_record_is_moved_aside_not_deleted(env, where):
    store = env.store()
    store.save(make_record("victim"))
    store.save(make_record("bystander"))
    path = env.credentials / "victim.cred"
    data = bytearray(path.read_bytes())
    positions = {
        "first": [0],
        "middle": [len(data) // 2],
        "last": [len(data) - 1],
        "each-half": [len(data) // 4, 3 * len(data) // 4],
    }[where]
    for i in positions:
        data[i] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(UnreadableRecord) as info:
        store.load("victim", URL)
    assert info.value.moved_to.read_bytes() == bytes(data)
    assert not path.exists()
    assert store.names() == ["bystander"]
    assert CredentialStore.count_records(env.credentials) == 1
    assert store.load("bystander", URL) == make_record("bystander")
    assert store.load("victim", URL) is None


@pytest.mark.parametrize(
    "content",
    [b"", b"garbage", b"gAAAAA", None],
    ids=["empty", "garbage", "truncated-prefix", "half"],
)
def test_damaged_record_is_unreadable(env, content):
    store = env.store()
    store.save(make_record())
    path = env.credentials / "linear.cred"
    if content is None:
        content = path.read_bytes()[: len(path.read_bytes()) // 2]
    path.write_bytes(content)
    with pytest.raises(UnreadableRecord) as info:
        store.load("linear", URL)
    assert info.value.moved_to.read_bytes() == content


def test_record_under_another_key_is_unreadable(env, tmp_path):
    other = Env(tmp_path / "other").store()
    other.save(make_record())
    store = env.store()
    shutil.copyfile(other.directory / "linear.cred", env.credentials / "linear.cred")
    with pytest.raises(UnreadableRecord):
        store.load("linear", URL)
    assert len(list(env.credentials.glob("linear.cred.unreadable-*"))) == 1


@pytest.mark.parametrize(
    "plaintext",
    [b"not msgpack \xc1", msgspec.msgpack.encode({"server": 1}), msgspec.msgpack.encode([1])],
    ids=["not-msgpack", "wrong-schema", "not-a-map"],
)
def test_decrypting_record_with_bad_content_is_unreadable(env, plaintext):
    store = env.store()
    path = env.credentials / "linear.cred"
    path.write_bytes(store.keyring.fernet.encrypt(plaintext))
    with pytest.raises(UnreadableRecord):
        store.load("linear", URL)
    assert not path.exists()


def test_moved_aside_files_are_kept_for_each_failure(env):
    store = env.store()
    for _ in range(3):
        (env.credentials / "x.cred").write_bytes(b"junk")
        with pytest.raises(UnreadableRecord):
            store.load("x", URL)
    assert len(list(env.credentials.glob("x.cred.unreadable-*"))) == 3


def test_delete(env):
    store = env.store()
    store.save(make_record())
    assert store.delete("linear") is True
    assert not (env.credentials / "linear.cred").exists()
    assert store.delete("linear") is False
    assert store.load("linear", URL) is None


def test_names_and_count_ignore_debris(env):
    store = env.store()
    for name in ("zeta", "alpha", "mid.dle"):
        store.save(make_record(name))
    (env.credentials / "old.cred.unreadable-123").write_bytes(b"x")
    (env.credentials / f".alpha.cred{atomicfile.TEMP_MARKER}00ff").write_bytes(b"x")
    (env.credentials / "notes.txt").write_bytes(b"x")
    assert store.names() == ["alpha", "mid.dle", "zeta"]
    assert CredentialStore.count_records(env.credentials) == 3


def test_count_records_of_missing_directory(tmp_path):
    assert CredentialStore.count_records(tmp_path / "nope") == 0


def test_prepare_creates_the_directory_and_clears_temporaries(env):
    store = env.store()
    store.save(make_record())
    debris = [
        env.credentials / f".linear.cred{atomicfile.TEMP_MARKER}0011223344556677",
        env.credentials / f".other.cred{atomicfile.TEMP_MARKER}8899aabbccddeeff",
    ]
    for path in debris:
        path.write_bytes(b"partial")
    kept = [
        env.credentials / "linear.cred",
        env.credentials / "x.cred.unreadable-1",
        env.credentials / ".hidden",
        env.credentials / f".mcpd.key{atomicfile.TEMP_MARKER}00",
    ]
    for path in kept[1:]:
        path.write_bytes(b"keep")
    store.prepare()
    for path in debris:
        assert not path.exists()
    for path in kept:
        assert path.exists()
    assert store.load("linear", URL) == make_record()


# --- atomicfile ------------------------------------------------------------------------


def test_remove_temporaries_returns_what_it_removed(tmp_path):
    marker = atomicfile.TEMP_MARKER
    mine = [tmp_path / f".a.cred{marker}1", tmp_path / f".b.cred{marker}2"]
    others = [
        tmp_path / f".mcpd.key{marker}3",
        tmp_path / "a.cred",
        tmp_path / f"a.cred{marker}4",  # not hidden: not one of ours
        tmp_path / ".a.cred",
    ]
    for path in mine + others:
        path.write_bytes(b"x")
    removed = atomicfile.remove_temporaries(tmp_path, "*.cred")
    assert sorted(removed) == sorted(mine)
    assert all(not path.exists() for path in mine)
    assert all(path.exists() for path in others)
    assert atomicfile.remove_temporaries(tmp_path, "*.cred") == []
    assert atomicfile.remove_temporaries(tmp_path, "mcpd.key") == [others[0]]


def test_write_private_replaces_content_and_makes_it_private(tmp_path):
    path = tmp_path / "file"
    path.write_bytes(b"old")
    path.chmod(0o644)
    atomicfile.write_private(path, b"new" * 100_000)
    assert path.read_bytes() == b"new" * 100_000
    assert mode_of(path) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_write_private_replaces_a_symlink_rather_than_writing_through_it(tmp_path):
    target = tmp_path / "target"
    target.write_bytes(b"untouched")
    link = tmp_path / "file"
    link.symlink_to(target)
    atomicfile.write_private(link, b"data")
    assert not link.is_symlink()
    assert link.read_bytes() == b"data"
    assert target.read_bytes() == b"untouched"


def test_write_private_into_missing_directory_fails_cleanly(tmp_path):
    with pytest.raises(FileNotFoundError):
        atomicfile.write_private(tmp_path / "nope" / "file", b"x")
    assert list(tmp_path.iterdir()) == []


# --- Key rotation --------------------------------------------------------------------


def test_rotate_key_re_encrypts_every_record(env):
    store = env.store()
    records = {name: make_record(name, n=i) for i, name in enumerate(["a", "b", "c"])}
    for record in records.values():
        store.save(record)
    old_keys = list(store.keyring.keys)
    before = {name: (env.credentials / f"{name}.cred").read_bytes() for name in records}

    assert store.rotate_key() == 3

    new_keys = key_lines(env.key_file)
    assert len(new_keys) == 1
    assert new_keys[0] not in old_keys
    assert store.keyring.keys == new_keys
    assert mode_of(env.key_file) == 0o600
    for name, record in records.items():
        data = (env.credentials / f"{name}.cred").read_bytes()
        assert data != before[name]
        assert mode_of(env.credentials / f"{name}.cred") == 0o600
        Fernet(new_keys[0]).decrypt(data)
        with pytest.raises(InvalidToken):
            Fernet(old_keys[0]).decrypt(data)
        assert store.load(name, URL) == record
    # A store started afresh from the files agrees.
    fresh = env.store()
    assert all(fresh.load(name, URL) == record for name, record in records.items())
    # No temporaries of the key file or the records are left.
    assert [p.name for p in env.key_file.parent.iterdir()] == ["mcpd.key"]
    assert sorted(p.name for p in env.credentials.iterdir()) == ["a.cred", "b.cred", "c.cred"]


def test_old_key_alone_no_longer_reads_the_store(env, tmp_path):
    store = env.store()
    store.save(make_record())
    old = Keyring(list(store.keyring.keys), tmp_path / "old.key", managed_by_systemd=False)
    store.rotate_key()
    stale = CredentialStore(env.credentials, old, CredentialRecord)
    with pytest.raises(UnreadableRecord):
        stale.load("linear", URL)


def test_rotate_key_twice(env):
    store = env.store()
    store.save(make_record())
    first = list(store.keyring.keys)
    store.rotate_key()
    second = list(store.keyring.keys)
    store.rotate_key()
    third = key_lines(env.key_file)
    assert len({first[0], second[0], third[0]}) == 3
    assert env.store().load("linear", URL) == make_record()


def test_rotate_key_with_no_records_still_changes_the_key(env):
    store = env.store()
    old = list(store.keyring.keys)
    assert store.rotate_key() == 0
    assert key_lines(env.key_file) != old
    assert len(key_lines(env.key_file)) == 1


def test_rotate_key_moves_aside_a_record_that_does_not_decrypt(env):
    store = env.store()
    store.save(make_record("good"))
    (env.credentials / "bad.cred").write_bytes(b"not a token")
    assert store.rotate_key() == 1
    assert store.names() == ["good"]
    aside = list(env.credentials.glob("bad.cred.unreadable-*"))
    assert len(aside) == 1
    assert aside[0].read_bytes() == b"not a token"
    assert store.load("good", URL) == make_record("good")


def test_add_new_key_then_retire(env):
    keyring = env.keyring()
    old = keyring.keys[0]
    both = add_new_key(keyring)
    assert len(both.keys) == 2
    assert both.keys[1] == old
    assert key_lines(env.key_file) == both.keys
    token = Fernet(old).encrypt(b"x")
    assert both.fernet.decrypt(token) == b"x"
    single = retire_old_keys(both)
    assert single.keys == [both.keys[0]]
    assert key_lines(env.key_file) == single.keys
    with pytest.raises(InvalidToken):
        single.fernet.decrypt(token)


def test_keyring_without_keys_is_an_error(tmp_path):
    with pytest.raises(KeyFileError, match="holds no key"):
        Keyring([], tmp_path / "k", managed_by_systemd=False)


# --- Nothing secret in repr ----------------------------------------------------------


def test_reprs_never_show_secrets(env):
    keyring = env.keyring()
    record = make_record()
    assert record.tokens is not None
    assert record.client is not None
    texts = []
    for obj in (record, record.tokens, record.client, keyring):
        texts.extend([repr(obj), str(obj), f"{obj}", f"{[obj]}", f"{ {'k': obj} }"])
    secrets = [f"{ACCESS}-0", f"{REFRESH}-0", CLIENT_SECRET, ACCESS, REFRESH]
    secrets += [key.decode() for key in keyring.keys]
    for text in texts:
        for secret in secrets:
            assert secret not in text, f"{secret!r} leaked in {text!r}"


def test_reprs_still_identify_the_object(env):
    keyring = env.keyring()
    record = make_record()
    assert "TokenSet" in repr(record.tokens)
    assert "Bearer" in repr(record.tokens)
    assert "client-0" in repr(record.client)
    assert "linear" in repr(record)
    assert str(env.key_file) in repr(keyring)
    assert "1 keys" in repr(keyring)


def test_unreadable_record_message_has_no_secrets(env):
    store = env.store()
    store.save(make_record("alpha"))
    shutil.copyfile(env.credentials / "alpha.cred", env.credentials / "beta.cred")
    with pytest.raises(UnreadableRecord) as info:
        store.load("beta", URL)
    message = str(info.value)
    for secret in (ACCESS, REFRESH, CLIENT_SECRET, *[k.decode() for k in store.keyring.keys]):
        assert secret not in message


# --- Crash safety ----------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from mcpd.keys import open_keyring
    from mcpd.store import CredentialStore
    from mcpd.oauth.model import CredentialRecord, TokenSet

    key_file, directory = Path(sys.argv[1]), Path(sys.argv[2])
    keyring = open_keyring(key_file, {}, existing_records=1)
    store = CredentialStore(directory, keyring, CredentialRecord)
    big = "s" * 50_000
    records = [
        CredentialRecord(
            server="srv",
            url="https://srv.example/mcp",
            tokens=TokenSet(access_token=f"token-{i}", obtained_at=float(i), scope=f"{i}" + big),
        )
        for i in (0, 1)
    ]
    sys.stdout.write("ready\\n")
    sys.stdout.flush()
    i = 0
    while True:
        i ^= 1
        store.save(records[i])
    """
)

ROTATOR = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from mcpd.keys import open_keyring
    from mcpd.oauth.model import CredentialRecord
    from mcpd.store import CredentialStore

    key_file, directory = Path(sys.argv[1]), Path(sys.argv[2])
    keyring = open_keyring(key_file, {}, existing_records=1)
    store = CredentialStore(directory, keyring, CredentialRecord)
    store.prepare()
    sys.stdout.write("ready\\n")
    sys.stdout.flush()
    while True:
        store.rotate_key()
    """
)


def crash_record(i: int) -> CredentialRecord:
    return CredentialRecord(
        server="srv",
        url="https://srv.example/mcp",
        tokens=TokenSet(
            access_token=f"token-{i}", obtained_at=float(i), scope=f"{i}" + "s" * 50_000
        ),
    )


def run_and_kill(script: str, env: Env, delay: float) -> None:
    """Start `script`, wait until it is in its loop, SIGKILL it `delay` seconds later."""
    process = subprocess.Popen(
        [sys.executable, "-c", script, str(env.key_file), str(env.credentials)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if line != b"ready\n":
            process.kill()
            _, err = process.communicate()
            pytest.fail(f"helper did not start: {line!r} {err.decode(errors='replace')}")
        time.sleep(delay)
        # Only SIGKILL if it is still running (it never exits by itself).
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        process.send_signal(signal.SIGKILL)
        process.communicate()
        assert process.returncode == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_killed_writer_never_leaves_a_torn_record(env):
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    store = env.store()
    store.save(crash_record(0))
    expected = {0: crash_record(0), 1: crash_record(1)}
    seen = []
    interrupted_writes = 0
    for attempt in range(40):
        run_and_kill(WRITER, env, rng.uniform(0, 0.03))
        if list(env.credentials.glob(f".srv.cred{atomicfile.TEMP_MARKER}*")):
            interrupted_writes += 1
        # A fresh start: key from disk, temporaries cleared, record read.
        fresh = env.store()
        try:
            loaded = fresh.load("srv", "https://srv.example/mcp")
        except UnreadableRecord as exc:
            pytest.fail(f"torn record after kill {attempt} (seed {seed}): {exc}")
        assert loaded is not None, f"record vanished after kill {attempt} (seed {seed})"
        matches = [i for i, record in expected.items() if record == loaded]
        assert matches, f"record is neither value after kill {attempt} (seed {seed})"
        seen.append(matches[0])
        names = sorted(p.name for p in env.credentials.iterdir())
        assert names == ["srv.cred"], f"debris after kill {attempt}: {names}"
    # The kills really did land while the loop was writing both values.
    assert set(seen) == {0, 1}, f"seed {seed}: only saw {seen}"
    # And some of them inside a write, with its temporary on disk.
    assert interrupted_writes >= 1, f"seed {seed}: no kill landed inside a write"
    reliability.record("store writer processes SIGKILLed, record old or new", len(seen), __name__)


def test_killed_rotation_leaves_every_record_readable(env):
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    store = env.store()
    records = {f"srv{i}": make_record(f"srv{i}", n=i) for i in range(6)}
    for record in records.values():
        store.save(record)
    # A large one, so a rotation takes long enough to be interrupted inside.
    big = CredentialRecord(
        server="big",
        url=URL,
        tokens=TokenSet(access_token="big-token", obtained_at=1.0, scope="x" * 50_000),
    )
    records["big"] = big
    store.save(big)
    key_counts = set()
    for attempt in range(20):
        run_and_kill(ROTATOR, env, rng.uniform(0, 0.03))
        keyring = env.keyring()
        key_counts.add(len(keyring.keys))
        assert mode_of(env.key_file) == 0o600
        fresh = env.store(keyring)
        assert fresh.names() == sorted(records)
        for name, record in records.items():
            try:
                loaded = fresh.load(name, URL)
            except UnreadableRecord as exc:
                pytest.fail(f"{name} unreadable after kill {attempt} (seed {seed}): {exc}")
            assert loaded == record, f"{name} changed after kill {attempt} (seed {seed})"
        assert [p.name for p in env.key_file.parent.iterdir()] == ["mcpd.key"]
    # Some kills landed between the first and the last step of a rotation.
    assert max(key_counts) >= 2, f"seed {seed}: no kill landed inside a rotation"
    # Completing a rotation afterwards still works and leaves one key.
    final = env.store()
    assert final.rotate_key() == len(records)
    assert len(key_lines(env.key_file)) == 1
    assert all(env.store().load(name, URL) == kept for name, kept in records.items())
    reliability.record("key rotations SIGKILLed, every record readable", attempt + 1, __name__)
