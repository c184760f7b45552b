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
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from real_peers import Peer, PeersNotInstalledError, _run


@contextmanager
def demo_server(
    log_dir: Path,
    *,
    port: int | None = None,
    token_lifetime: int | None = None,
    hide_expiry: bool = False,
    outage_file: Path | None = None,
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
        if outage_file is not None:
            argv += ["--outage-file", str(outage_file)]
        return argv, {}

    with _run("mcpd-demo", launch, log_dir, port=port) as peer:
        yield peer
