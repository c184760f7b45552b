"""Log redaction (mcpd/logs.py): every secret the daemon holds is kept as it
comes, from where it comes, and a log line is searched for all of them
without asking every source again.

The daemon's own tracebacks are shown redacted on the real daemon in
tests/test_fault_injection.py; here each place that gains a secret is shown
to hand it over, and a line's cost is shown not to grow with the sources.
"""

from __future__ import annotations

import gc
import secrets
import time

import anyio
import pytest

from mcpd import logs
from mcpd.config import OAuthSettings, ServerConfig, ServerEntry
from mcpd.credentials import Credentials
from mcpd.oauth.manager import AuthManager
from mcpd.oauth.model import CredentialRecord, TokenSet
from mcpd.server import ServerRuntime

pytestmark = pytest.mark.timeout(60)


def _secret(what: str) -> str:
    return f"{what}-{secrets.token_hex(12)}"


class Source:
    """A secret source as logs.redact_from takes it, counting how often it is asked."""

    def __init__(self, *values: str) -> None:
        self.values = list(values)
        self.asked = 0

    def secrets(self) -> list[str]:
        self.asked += 1
        return self.values


def test_secrets_of_a_source_and_those_handed_over_later_are_redacted():
    early, late, short = _secret("early"), _secret("late"), "1234567"
    source = Source(early, short)
    logs.redact_from(source)
    source.values.append(late)  # gained later, and not handed over yet
    logs.add_secrets([late])
    line = logs.redacted(f"header {early} token {late} debug {short}")
    assert line == f"header {logs.REDACTED} token {logs.REDACTED} debug {short}"


def test_a_secret_inside_another_is_redacted_with_it():
    outer = _secret("outer")
    inner = outer[6:20]
    logs.add_secrets([inner])
    logs.add_secrets([outer])
    assert logs.redacted(f"a {outer} b {inner} c") == f"a {logs.REDACTED} b {logs.REDACTED} c"


def test_a_line_does_not_ask_the_sources_and_gathering_stays_linear():
    """500 sources, one secret each, then 1,000 lines: the sources are asked a
    bounded number of times in all (asking each for every line made a start
    with 500 servers quadratic), and every secret is redacted."""
    sources = [Source(_secret(f"s{i}")) for i in range(500)]
    for source in sources:
        logs.redact_from(source)
    asked = sum(source.asked for source in sources)
    assert asked <= 4 * len(sources), asked
    for i in range(1000):
        value = sources[i % len(sources)].values[0]
        assert logs.redacted(f"line {i}: {value}") == f"line {i}: {logs.REDACTED}"
    assert sum(source.asked for source in sources) == asked


def test_the_secrets_of_sources_gone_are_forgotten_in_time():
    """Kept secrets are bounded: once the set has doubled, it is gathered afresh
    from the sources alive (so replaced tokens and removed servers drop out)."""
    gone = Source(_secret("gone"))
    kept = Source(_secret("kept"))
    logs.redact_from(gone)
    logs.redact_from(kept)
    forgotten = gone.values[0]
    del gone
    gc.collect()
    handed = [_secret("handed") for _ in range(2 * len(logs._secrets.longest_first) + 70)]
    for value in handed:
        logs.add_secrets([value])
    known = set(logs._secrets.longest_first)
    assert forgotten not in known
    assert kept.values[0] in known
    assert handed[-1] in known


def _credentials() -> Credentials:
    async def nothing(*args: object) -> None:
        return None

    return Credentials(
        "s",
        "http://127.0.0.1:9/mcp",
        applies=True,
        save=nothing,
        load=nothing,  # type: ignore[arg-type]
        reach=lambda: None,  # type: ignore[arg-type,return-value]
        listener=None,  # type: ignore[arg-type]
    )


def test_a_credential_record_hands_its_tokens_over_as_it_is_set():
    credentials = _credentials()
    access, refresh = _secret("access"), _secret("refresh")
    tokens = TokenSet(access_token=access, refresh_token=refresh, obtained_at=time.time())
    # Not registered as a source: the record's setter is what hands them over.
    credentials.record = CredentialRecord(server="s", url="http://127.0.0.1:9/mcp", tokens=tokens)
    assert logs.redacted(f"{access} {refresh}") == f"{logs.REDACTED} {logs.REDACTED}"


def _entry(header: str, client_secret: str) -> ServerEntry:
    config = ServerConfig(
        url="http://127.0.0.1:9/mcp",
        headers={"X-Api-Key": header},
        oauth=OAuthSettings(client_id="c", client_secret=client_secret),
    )
    return ServerEntry("s", config)


def test_a_server_hands_its_configured_secrets_over_as_its_entry_is_set():
    header, client_secret = _secret("header"), _secret("client")
    new_header, new_secret = _secret("header"), _secret("client")

    async def main() -> None:  # a server's runtime belongs to an event loop
        runtime = ServerRuntime(
            _entry(header, client_secret),
            lambda *args: None,
            None,  # type: ignore[arg-type]
            None,  # type: ignore[arg-type]
            1 << 20,
        )
        assert logs.redacted(f"{header} {client_secret}") == f"{logs.REDACTED} {logs.REDACTED}"
        # A reload's new entry (the one place it is set) is handed over too.
        runtime.entry = _entry(new_header, new_secret)
        assert logs.redacted(f"{new_header} {new_secret}") == f"{logs.REDACTED} {logs.REDACTED}"

    anyio.run(main)


def test_a_sign_in_link_hands_its_nonce_over_as_it_is_made():
    class Runtime:
        name = "s"

    async def main() -> str:
        manager = AuthManager(0)  # the callback listener on any free port
        async with anyio.create_task_group() as tg:
            await tg.start(manager.run)
            url, new = manager.link(Runtime())  # type: ignore[arg-type]
            assert new
            tg.cancel_scope.cancel()
        return url

    url = anyio.run(main)
    nonce = url.rsplit("/", 1)[1]
    assert len(nonce) >= logs.MIN_SECRET_CHARS
    assert nonce not in logs.redacted(f"opened {url}")
