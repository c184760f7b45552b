"""The encryption key of the credential store.

The key file holds one Fernet key per line, newest first; all of them decrypt
and the first encrypts (MultiFernet). It lives in the config directory, is
created with O_EXCL at mode 0600 and is refused on load if anyone but its owner
could read it. systemd's `LoadCredential=mcpd.key:...` takes precedence: the
key then comes read-only from $CREDENTIALS_DIRECTORY and is rotated there.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from cryptography.fernet import Fernet, MultiFernet

from . import atomicfile
from .paths import KEY_FILE_NAME, UnsafePath, check_private


class KeyFileError(Exception):
    """The key cannot be used; the message says why and what to do."""


class Keyring:
    def __init__(self, keys: list[bytes], path: Path, *, managed_by_systemd: bool) -> None:
        if not keys:
            raise KeyFileError(f"key file {path} holds no key")
        self.keys = keys
        self.path = path
        self.managed_by_systemd = managed_by_systemd
        try:
            self.fernet = MultiFernet([Fernet(key) for key in keys])
        except ValueError:
            # Never quote the file's content: it is the secret.
            raise KeyFileError(
                f"key file {path} is not a list of Fernet keys (one per line); "
                "restore it from a backup"
            ) from None

    def __repr__(self) -> str:
        return f"Keyring({self.path}, {len(self.keys)} keys)"


def _encode(keys: list[bytes]) -> bytes:
    return b"".join(key + b"\n" for key in keys)


def _read(path: Path, *, managed_by_systemd: bool) -> Keyring:
    try:
        check_private(path, "key file", f"chmod 600 {path}")
        data = path.read_bytes()
    except UnsafePath as exc:
        raise KeyFileError(str(exc)) from None
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None
    keys = [line.strip() for line in data.splitlines() if line.strip()]
    return Keyring(keys, path, managed_by_systemd=managed_by_systemd)


def systemd_key(env: Mapping[str, str]) -> Path | None:
    directory = env.get("CREDENTIALS_DIRECTORY")
    if directory and (Path(directory) / KEY_FILE_NAME).exists():
        return Path(directory) / KEY_FILE_NAME
    return None


def open_keyring(key_file: Path, env: Mapping[str, str], *, existing_records: int) -> Keyring:
    """Load the key; create one only when there is no data it would have to decrypt."""
    provided = systemd_key(env)
    if provided is not None:
        return _read(provided, managed_by_systemd=True)
    if key_file.parent.is_dir():
        atomicfile.remove_temporaries(key_file.parent, key_file.name)
    if key_file.exists() or key_file.is_symlink():
        return _read(key_file, managed_by_systemd=False)
    if existing_records:
        raise KeyFileError(
            f"the key file {key_file} is missing but {existing_records} encrypted credential "
            "record(s) exist; restore the key file from a backup. mcpd will not create a new "
            "key over data it cannot decrypt (to start over, delete the credential records "
            "and sign in to every server again)"
        )
    key_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = Fernet.generate_key()
    try:
        atomicfile.create_private(key_file, _encode([key]))
    except FileExistsError:
        return _read(key_file, managed_by_systemd=False)
    return Keyring([key], key_file, managed_by_systemd=False)


def add_new_key(keyring: Keyring) -> Keyring:
    """First step of a rotation: a new key in front, the old ones still there."""
    if keyring.managed_by_systemd:
        raise KeyFileError(
            f"the key comes from systemd ({keyring.path}); rotate it where LoadCredential= "
            "points, then restart mcpd"
        )
    keys = [Fernet.generate_key(), *keyring.keys]
    atomicfile.write_private(keyring.path, _encode(keys))
    return Keyring(keys, keyring.path, managed_by_systemd=False)


def retire_old_keys(keyring: Keyring) -> Keyring:
    """Last step of a rotation, once nothing is encrypted with the old keys."""
    keys = keyring.keys[:1]
    atomicfile.write_private(keyring.path, _encode(keys))
    return Keyring(keys, keyring.path, managed_by_systemd=False)
