"""The encrypted credential store: one Fernet-encrypted record per server.

A record is a msgpack-encoded struct of the type the store is handed
(`mcpd.oauth.model.CredentialRecord` in the daemon), encrypted whole. Its
plaintext names the server and the URL it was issued for, so a record copied
to another server's file, or kept across a change of URL, is never used.
Writes go through `atomicfile`: a crash leaves the old record or the new one.
A record that does not decrypt is moved aside, never deleted, so a user who
restores the right key can still recover it.

All methods block on the file system; the daemon calls them from a worker
thread and serialises writes.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Generic, Protocol, TypeVar

import msgspec
from cryptography.fernet import InvalidToken

from . import atomicfile
from .keys import Keyring, add_new_key, retire_old_keys

log = logging.getLogger(__name__)

SUFFIX = ".cred"


class StoredRecord(Protocol):
    """What the store needs of a record: whose it is, and for which URL."""

    @property
    def server(self) -> str: ...

    @property
    def url(self) -> str: ...


R = TypeVar("R", bound=StoredRecord)


class UnreadableRecord(Exception):
    """A record did not decrypt or decode; it was moved to `moved_to`."""

    def __init__(self, server: str, moved_to: Path) -> None:
        super().__init__(
            f"stored credentials of {server!r} could not be decrypted (wrong key or a damaged "
            f"file); they were moved to {moved_to} and the server must sign in again"
        )
        self.moved_to = moved_to


_encoder = msgspec.msgpack.Encoder()


class CredentialStore(Generic[R]):
    def __init__(self, directory: Path, keyring: Keyring, record_type: type[R]) -> None:
        self.directory = directory
        self.keyring = keyring
        self._decoder = msgspec.msgpack.Decoder(record_type)

    @staticmethod
    def count_records(directory: Path) -> int:
        return sum(1 for _ in directory.glob(f"*{SUFFIX}")) if directory.is_dir() else 0

    def prepare(self) -> None:
        """Create the directory and clear what interrupted writes left."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for path in atomicfile.remove_temporaries(self.directory, f"*{SUFFIX}"):
            log.info("removed an interrupted write", extra={"path": str(path)})

    def _path(self, server: str) -> Path:
        return self.directory / f"{server}{SUFFIX}"

    def names(self) -> list[str]:
        return sorted(path.name.removesuffix(SUFFIX) for path in self.directory.glob(f"*{SUFFIX}"))

    def load(self, server: str, url: str) -> R | None:
        """The record for this server and URL; None if there is none that applies."""
        path = self._path(server)
        try:
            token = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            record = self._decoder.decode(self.keyring.fernet.decrypt(token))
        except (InvalidToken, msgspec.DecodeError):
            raise UnreadableRecord(server, self._move_aside(path)) from None
        if record.server != server:
            # Encrypted by us, but for another server: a copied or renamed file.
            raise UnreadableRecord(server, self._move_aside(path))
        if record.url != url:
            log.warning(
                "stored credentials were issued for another URL; not using them",
                extra={"server": server},
            )
            return None
        return record

    def has(self, server: str) -> bool:
        """Whether a record file exists for this server (readable or not)."""
        return self._path(server).exists()

    def save(self, record: R) -> None:
        data = self.keyring.fernet.encrypt(_encoder.encode(record))
        atomicfile.write_private(self._path(record.server), data)

    def delete(self, server: str) -> bool:
        try:
            self._path(server).unlink()
        except FileNotFoundError:
            return False
        return True

    def _move_aside(self, path: Path) -> Path:
        target = path.with_name(f"{path.name}.unreadable-{time.time_ns()}")
        path.rename(target)
        return target

    def rotate_key(self) -> int:
        """New key first, every record re-encrypted, then the old keys retired.

        Each step is atomic, and every state in between decrypts: until the
        last step the key file holds the new key and the old ones.
        """
        self.keyring = add_new_key(self.keyring)
        rotated = 0
        for server in self.names():
            path = self._path(server)
            try:
                token = path.read_bytes()
                fresh = self.keyring.fernet.rotate(token)
            except FileNotFoundError:
                continue
            except InvalidToken:
                self._move_aside(path)
                log.warning("moved aside a record that does not decrypt", extra={"server": server})
                continue
            atomicfile.write_private(path, fresh)
            rotated += 1
        self.keyring = retire_old_keys(self.keyring)
        return rotated
