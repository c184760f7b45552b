"""What each server last showed its editors, kept for when it cannot be asked.

A server that needs a sign-in cannot answer an editor's `initialize` or
`tools/list`; editors then show it as broken, with no tools, and users never
see the sign-in link. So the daemon keeps, per server, the last answer it saw
to each (the handshake's result, or the one mcpd made from `server/discover`,
and the first page of the tool list) in its state directory, and answers from
them while the server waits for its user. The revision it spoke is kept too,
so that a server of an older one is not probed for the newest at every start.
Nothing in them is secret (a server's own description of itself), so they
live outside the credential store, in files private to the user all the same.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import msgspec

from .atomicfile import write_private

log = logging.getLogger(__name__)


class Shown(msgspec.Struct, kw_only=True):
    # The server's URL when it showed this: another URL is another server.
    url: str
    initialize: dict[str, Any] | None = None
    tools: dict[str, Any] | None = None
    # The MCP revision it spoke: a server of an older one is not probed again.
    protocol: str | None = None


class ShownStore:
    """One JSON file per server under `directory` (the daemon's state directory)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, name: str) -> Path:
        return self.directory / f"{name}.json"

    def load(self, name: str, url: str) -> Shown:
        """What the server at `url` last showed (nothing, if it was another URL)."""
        try:
            shown = msgspec.json.decode(self._path(name).read_bytes(), type=Shown)
        except FileNotFoundError:
            return Shown(url=url)
        except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.info("a kept server description is unreadable; ignored", extra={"error": str(exc)})
            return Shown(url=url)
        return shown if shown.url == url else Shown(url=url)

    def save(self, name: str, shown: Shown) -> None:
        """Keep it; a failure (a full disk, say) is logged, and nothing else."""
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Atomic, not durable: losing it to a crash costs nothing but a
            # sign-in prompt without the tools listed.
            write_private(self._path(name), msgspec.json.encode(shown), durable=False)
        except OSError as exc:
            log.warning("could not keep a server description", extra={"error": str(exc)})
