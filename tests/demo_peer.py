"""The demo OAuth-protected MCP server (`mcpd.demo.server`) as a test peer.

    with demo_server(tmp_path, token_lifetime=5) as peer:
        ...  # peer.url is http://127.0.0.1:PORT/mcp; peer.origin is its issuer

It is the official Python SDK's MCP server and authorization server routes
with an in-memory provider whose user approves every authorization at once
(see mcpd/demo/server.py): dynamic registration, PKCE S256, scopes `mcp` and
`offline_access` (refresh tokens only with the latter), refresh token rotation,
revocation of a whole grant, and access tokens that live `token_lifetime`
seconds (default 3600). It logs each registration, authorization, token issue,
refresh, revocation and reuse of a retired refresh token as a `demo-as: ...`
line: `peer.wait_for_log("refreshed")`.

Started like the other real peers (tests/real_peers.py): bound to 127.0.0.1,
ready once it has printed its listening line and the port accepts connections,
stopped afterwards; `peer.stop()` and `demo_server(..., port=peer.port)` take
it down and bring it back at the same URL (with no clients or tokens: they
live in memory).

Every demo server started here records the secrets it issues or is given
(`--record-secrets`, next to its log: `secrets_path(peer)`): the session's
secrets scan (tests/leakcheck.py) searches mcpd's output for all of them, and
`recorded(peer)` lets a test compare what a store holds with what was issued.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import leakcheck
from real_peers import Peer, PeersNotInstalledError, _run

NAME = "mcpd-demo"


def secrets_path(peer: Peer) -> Path:
    """The demo server's `--record-secrets` file (shared by restarts at the same port)."""
    return _secrets_path(peer.log_path.parent, peer.port)


def _secrets_path(log_dir: Path, port: int) -> Path:
    return log_dir / f"{NAME}-{port}.secrets.jsonl"


def recorded(peer: Peer) -> list[dict[str, Any]]:
    """Every event the demo server recorded so far (see SecretsRecord in mcpd/demo/server.py)."""
    path = secrets_path(peer)
    if not path.exists():
        return []
    # A line being appended right now is left for the next read.
    return [
        json.loads(line) for line in path.read_text().splitlines(keepends=True) if line[-1:] == "\n"
    ]


@contextmanager
def demo_server(
    log_dir: Path,
    *,
    port: int | None = None,
    token_lifetime: int | None = None,
    hide_expiry: bool = False,
    outage_file: Path | None = None,
    no_refresh_tokens: bool = False,
) -> Iterator[Peer]:
    """`python -m mcpd.demo.server` on `port`, or a free one (retried if taken first)."""
    if importlib.util.find_spec("mcp") is None:
        raise PeersNotInstalledError(
            "the demo server needs the official Python SDK: pip install -e '.[test]'"
        )

    def launch(chosen: int) -> tuple[list[str], dict[str, str]]:
        argv = [sys.executable, "-m", "mcpd.demo.server", "--port", str(chosen)]
        if token_lifetime is not None:
            argv += ["--token-lifetime", str(token_lifetime)]
        if hide_expiry:
            argv.append("--hide-expiry")
        if no_refresh_tokens:
            argv.append("--no-refresh-tokens")
        if outage_file is not None:
            argv += ["--outage-file", str(outage_file)]
        record = _secrets_path(log_dir, chosen)
        leakcheck.register_record_file(record)
        argv += ["--record-secrets", str(record)]
        return argv, {}

    with _run(NAME, launch, log_dir, port=port) as peer:
        yield peer
