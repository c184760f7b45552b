"""No secret of any test may reach mcpd's output: the session-wide check.

During the session, every secret a test comes across is registered here:

- the demo authorization server (mcpd/demo/server.py, `--record-secrets`,
  started so by tests/demo_peer.py) writes every client secret, authorization
  code, PKCE verifier, access and refresh token it issues or is given to a
  JSON-lines file, registered with `register_record_file` and read at the end;
- the harness registers the authorization codes it sees in redirects
  (`browse`), whoever issued them;
- every user's credential store is decrypted when its test ends
  (`register_store`), which yields the tokens and client secrets of the other
  authorization servers (the TypeScript SDK's, for one).

And every output of mcpd is kept: each user's tree (`watch_root`: the daemon's
log, every `mcpctl` command's stdout and stderr, every editor bridge's
stdout and stderr; not the config, the key or the encrypted store, which are
inputs and ciphertext) and every test's captured output and failure report
(`capture`, from conftest.py's hooks). The peers' own logs are not mcpd's
output and are not searched: the TypeScript SDK example logs the tokens it
receives.

At the end of the session (conftest.py), `scan` searches all of it for every
registered secret. A finding names the file or test output and the kind of
secret, never the secret itself.

The search is exact and complete but not naive (thousands of secrets times
megabytes of logs): an occurrence of a secret lies inside a maximal run of
characters that secrets are made of, so only runs at least as long as the
shortest secret are looked at, by set lookups of their windows.
"""

from __future__ import annotations

import base64
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import msgspec
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from mcpd.oauth.model import CredentialRecord
from mcpd.store import SUFFIX

# Shorter values are not meaningful to search for (and would match words).
MIN_LENGTH = 8

# Files in a user's tree that are inputs or ciphertext, not output.
_NOT_OUTPUT_DIRS = ("config", "state/mcpd/credentials")
_NOT_OUTPUT_NAMES = ("mcpd.lock",)


@dataclass
class _Registry:
    secrets: dict[str, str] = field(default_factory=dict)  # value: kind
    record_files: list[Path] = field(default_factory=list)
    roots: list[Path] = field(default_factory=list)
    captured: list[tuple[str, str]] = field(default_factory=list)  # (where, text)
    stores_read: int = 0
    stores_unreadable: int = 0


_registry = _Registry()


def register(kind: str, value: str | None) -> None:
    """A secret that may appear nowhere in mcpd's output."""
    if value is not None and len(value) >= MIN_LENGTH:
        _registry.secrets.setdefault(value, kind)


def register_client(client_id: str | None, client_secret: str | None) -> None:
    register("client secret", client_secret)
    if client_id is not None and client_secret is not None:
        # As client_secret_basic sends it (RFC 6749 2.3.1).
        pair = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}"
        register("client secret (basic)", base64.b64encode(pair.encode()).decode())


def register_record_file(path: Path) -> None:
    """A `--record-secrets` file of the demo server, read at the end."""
    if path not in _registry.record_files:
        _registry.record_files.append(path)


def watch_root(root: Path) -> None:
    """A user's tree: its files are mcpd's output (see the module's docstring)."""
    if root not in _registry.roots:
        _registry.roots.append(root)


def capture(where: str, text: str) -> None:
    if text:
        _registry.captured.append((where, text))


def decrypt_store(
    key_file: Path, credentials: Path, *, temporaries: bool = True
) -> list[CredentialRecord]:
    """Every record of a store that decrypts with the key file as it is now;
    with `temporaries`, also those of writes in progress or cut short (what the
    secrets scan needs), else only records the store has committed."""
    if not key_file.is_file() or not credentials.is_dir():
        return []
    keys = [line.strip() for line in key_file.read_bytes().splitlines() if line.strip()]
    fernet = MultiFernet([Fernet(key) for key in keys])
    decoder = msgspec.msgpack.Decoder(CredentialRecord)
    records = []
    for path in sorted(credentials.glob(f"*{SUFFIX}*" if temporaries else f"*{SUFFIX}")):
        if not path.is_file():
            continue
        try:
            records.append(decoder.decode(fernet.decrypt(path.read_bytes())))
        except (InvalidToken, msgspec.DecodeError, OSError):
            continue
    return records


def register_records(records: list[CredentialRecord]) -> None:
    for record in records:
        if record.tokens is not None:
            register("access token", record.tokens.access_token)
            register("refresh token", record.tokens.refresh_token)
        if record.client is not None:
            register_client(record.client.client_id, record.client.client_secret)


def register_store(key_file: Path, credentials: Path) -> None:
    """Decrypt a user's store (never changing it) and register what it holds."""
    try:
        records = decrypt_store(key_file, credentials)
    except (OSError, ValueError):  # a test's deliberately broken key file
        _registry.stores_unreadable += 1
        return
    if records:
        _registry.stores_read += 1
    register_records(records)


_RECORD_FIELDS = {
    "client_secret": "client secret",
    "code": "authorization code",
    "code_verifier": "PKCE verifier",
    "device_code": "device code",
    "access_token": "access token",
    "refresh_token": "refresh token",
}


def _read_record_files() -> None:
    for path in _registry.record_files:
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            entry = json.loads(line)
            for name, kind in _RECORD_FIELDS.items():
                value = entry.get(name)
                if isinstance(value, str):
                    register(kind, value)
            if entry.get("event") == "registered":
                register_client(entry.get("client_id"), entry.get("client_secret"))


@dataclass
class Finding:
    where: str
    kinds: Counter[str]
    context: str  # around the first one, the secrets masked


@dataclass
class ScanResult:
    secrets: int
    files: int
    bytes: int
    outputs: int
    stores_read: int
    findings: list[Finding]


class _Matcher:
    def __init__(self, secrets: dict[str, str]) -> None:
        self.secrets = {value.encode(): kind for value, kind in secrets.items()}
        self.lengths = sorted({len(value) for value in self.secrets})
        alphabet = sorted({byte for value in self.secrets for byte in value})
        if self.lengths:
            chars = b"".join(re.escape(bytes([byte])) for byte in alphabet)
            self.runs: re.Pattern[bytes] | None = re.compile(
                b"[" + chars + b"]{" + str(self.lengths[0]).encode() + b",}"
            )
        else:
            self.runs = None

    def occurrences(self, data: bytes) -> Iterator[tuple[int, int, str]]:
        """(start, end, kind) of every registered secret in `data`."""
        if self.runs is None:
            return
        for match in self.runs.finditer(data):
            run = match.group()
            for length in self.lengths:
                if length > len(run):
                    break
                for start in range(len(run) - length + 1):
                    kind = self.secrets.get(run[start : start + length])
                    if kind is not None:
                        yield match.start() + start, match.start() + start + length, kind

    def find(self, data: bytes) -> Counter[str]:
        return Counter(kind for _, _, kind in self.occurrences(data))

    def context(self, data: bytes, around: int = 40) -> str:
        """The text around the first secret, every secret in it replaced by its kind."""
        first = next(self.occurrences(data), None)
        if first is None:
            return ""
        start, end = max(0, first[0] - around), first[1] + around
        window = data[start:end]
        masked, position = [], 0
        for begin, finish, kind in sorted(self.occurrences(window)):
            if begin < position:
                continue
            masked += [window[position:begin], f"<{kind}>".encode()]
            position = finish
        masked.append(window[position:])
        return b"".join(masked).decode(errors="replace").replace("\n", "\\n")


def _output_files(root: Path) -> list[Path]:
    excluded = [root / part for part in _NOT_OUTPUT_DIRS]
    files = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.name in _NOT_OUTPUT_NAMES:
            continue
        if any(path.is_relative_to(directory) for directory in excluded):
            continue
        files.append(path)
    return files


def scan() -> ScanResult:
    _read_record_files()
    matcher = _Matcher(_registry.secrets)
    findings = []
    files = 0
    size = 0
    for root in _registry.roots:
        if not root.is_dir():
            continue
        for path in _output_files(root):
            try:
                data = path.read_bytes()
            except OSError:
                continue
            files += 1
            size += len(data)
            found = matcher.find(data)
            if found:
                findings.append(Finding(str(path), found, matcher.context(data)))
    for where, text in _registry.captured:
        data = text.encode(errors="replace")
        size += len(data)
        found = matcher.find(data)
        if found:
            findings.append(Finding(where, found, matcher.context(data)))
    return ScanResult(
        secrets=len(_registry.secrets),
        files=files,
        bytes=size,
        outputs=len(_registry.captured),
        stores_read=_registry.stores_read,
        findings=findings,
    )


def export() -> dict[str, Any]:
    """What a worker process registered, for the process that scans (conftest.py):
    the captured outputs it has already, from the reports."""
    return {
        "secrets": _registry.secrets,
        "record_files": [str(path) for path in _registry.record_files],
        "roots": [str(root) for root in _registry.roots],
        "stores_read": _registry.stores_read,
        "stores_unreadable": _registry.stores_unreadable,
    }


def merge(exported: dict[str, Any]) -> None:
    for value, kind in exported["secrets"].items():
        _registry.secrets.setdefault(value, kind)
    for path in exported["record_files"]:
        register_record_file(Path(path))
    for root in exported["roots"]:
        watch_root(Path(root))
    _registry.stores_read += exported["stores_read"]
    _registry.stores_unreadable += exported["stores_unreadable"]


def registered_count() -> int:
    return len(_registry.secrets)


def active() -> bool:
    """Whether anything was registered to look at."""
    return bool(_registry.roots or _registry.captured or _registry.record_files)
