"""The control socket under abuse, against the real daemon on its real socket.

Fuzzed frames (hypothesis: random msgpack and mutated valid frames) over many
connections; a client that stalls half-way through a frame; clients that never
read their responses or their events; a thousand connections at once; more
connections than the daemon allows; the daemon out of file descriptors. After
each, the daemon is up, a witness client connected all along still gets its
`status` answers within a bounded time, its memory and file descriptors come
back, and the log says what was refused and why.

MCPD_FUZZ_FRAMES sets the number of fuzzed frames (default 5000, for CI). A
dedicated run:

    MCPD_FUZZ_FRAMES=100000 pytest tests/test_hardening_socket.py -k fuzz -s
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import random
import resource
import select
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from harness import DaemonProcess, McpdEnv, Notifications, RawClient, cpu_seconds, start_daemon
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from reliability import record

from mcpd.methods import METHODS
from mcpd.protocol import (
    PROTOCOL_VERSION,
    ErrorCode,
    Event,
    FrameDecoder,
    HelloParams,
    Message,
    Request,
    Response,
    Rpc,
    decode_message,
    encode_frame,
)

TEST = "test_hardening_socket"
FUZZ_FRAMES = int(os.environ.get("MCPD_FUZZ_FRAMES", "5000"))
FRAMES_PER_EXAMPLE = 20
EXAMPLES_PER_RUN = 500
# Generous for a loaded two-core machine: a few ms per frame, and a floor.
FUZZ_TIMEOUT = 150 + FUZZ_FRAMES // 50
# How long the witness may wait for a status answer, whatever else happens.
WITNESS_DEADLINE = 5.0
# The fuzzed daemon's frame limit: small, so that "just over the limit" is cheap.
FUZZ_MAX_FRAME = 65536
# A fuzzed connection is read to its end within this time.
IO_TIMEOUT = 30.0
RSS_GROWTH_LIMIT_KIB = 48 * 1024
# The daemon's log messages the tests look for.
PAUSED = "pausing reads from a client until it catches up"
ACCEPT_FAILED = "cannot accept client connections; retrying"
HUGE_CONTAINERS = [
    b"\xdd\xff\xff\xff\xff",  # array32 of 4G elements
    b"\xdf\xff\xff\xff\xff",  # map32 of 4G pairs
    b"\xdb\xff\xff\xff\xff",  # str32 of 4 GiB
    b"\xc6\xff\xff\xff\xff",  # bin32 of 4 GiB
    b"\xc9\xff\xff\xff\xff\x05",  # ext32 of 4 GiB
    b"\xdc\xff\xff",  # array16 of 65535 elements
]


# --- Looking at the daemon from outside -------------------------------------------


def _proc_status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def rss_kib(pid: int) -> int:
    return _proc_status_kib(pid, "VmRSS")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def log_lines(daemon: DaemonProcess, msg: str) -> list[str]:
    """The daemon's log lines with this message (logfmt quotes it if it has a space)."""
    field = f'msg="{msg}"' if " " in msg else f"msg={msg} "
    return [line for line in daemon.log.splitlines() if field in line]


def assert_no_daemon_errors(daemon: DaemonProcess) -> None:
    """Bad input is refused with warnings; an error or a traceback is a defect."""
    bad = [
        line
        for line in daemon.log.splitlines()
        if "level=error" in line or "Traceback" in line or "level=critical" in line
    ]
    assert not bad, "\n".join(bad[:20])


def frame_of(message: dict[str, Any]) -> bytes:
    body = msgspec.msgpack.encode(message)
    return struct.pack(">I", len(body)) + body


HELLO_FRAME = encode_frame(
    Request(0, "hello", msgspec.Raw(msgspec.msgpack.encode(HelloParams(PROTOCOL_VERSION, "fuzz"))))
)


class Witness:
    """A client connected for the whole test whose status requests must be answered."""

    def __init__(self, client: RawClient) -> None:
        self.client = client
        hello = client.hello()
        assert isinstance(hello, Response)
        assert hello.error is None, hello.error
        self.latencies: list[float] = []

    def check(self) -> float:
        started = time.monotonic()
        request_id = self.client.request("status")
        self.client.sock.settimeout(WITNESS_DEADLINE)
        try:
            reply = self.client.receive()
        except TimeoutError:
            raise AssertionError(f"the witness got no status within {WITNESS_DEADLINE}s") from None
        elapsed = time.monotonic() - started
        assert isinstance(reply, Response), reply
        assert reply.id == request_id, reply
        assert reply.error is None, reply.error
        self.latencies.append(elapsed)
        return elapsed

    @property
    def worst_ms(self) -> float:
        return max(self.latencies) * 1000


def _read_notifications(notify: Notifications, stop: threading.Event) -> None:
    notify.sock.settimeout(0.1)
    while not stop.is_set():
        try:
            notify.sock.recv(4096)
        except TimeoutError:
            continue
        except OSError:
            return


@pytest.fixture
def supervised_daemon(mcpd_env: McpdEnv) -> Iterator[Callable[[], DaemonProcess]]:
    """Start mcpd with its NOTIFY_SOCKET read all along, as systemd reads it.

    (run_daemon's reader stops at READY=1: every reload sends two datagrams,
    and a busy manager's queue holds ten; this one reads them all, as systemd does.)"""
    started: list[tuple[DaemonProcess, Notifications, threading.Event, threading.Thread]] = []

    def start() -> DaemonProcess:
        daemon, notify = start_daemon(mcpd_env)
        stop = threading.Event()
        reader = threading.Thread(target=_read_notifications, args=(notify, stop), daemon=True)
        reader.start()
        started.append((daemon, notify, stop, reader))
        return daemon

    yield start
    for daemon, notify, stop, reader in started:
        try:
            daemon.stop()
        finally:
            stop.set()
            reader.join(timeout=5)
            notify.close()


@contextlib.contextmanager
def own_open_file_limit(soft: int) -> Iterator[None]:
    """Run with another soft RLIMIT_NOFILE (inherited by processes started meanwhile)."""
    previous = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, previous[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, previous)


# --- Fuzzing: the strategies ---------------------------------------------------------

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(),
    st.text(max_size=16),
    st.binary(max_size=16),
    st.builds(msgspec.msgpack.Ext, st.integers(-128, 127), st.binary(max_size=12)),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=8), st.integers(-5, 5)), inner, max_size=4),
    ),
    max_leaves=8,
)
# Never "shutdown": that would be a request the fuzzer may not send. Every
# batch is also checked for the bytes of the name (see _guarded).
KNOWN_METHODS = sorted(set(METHODS) - {"shutdown"})
METHOD_NAMES = st.one_of(
    st.sampled_from(KNOWN_METHODS),
    st.sampled_from(["", "Status", "hello\x00", "status ", "\u00e9t\u00e0t", "x" * 300]),
    st.text(max_size=12).filter(lambda name: "shutdown" not in name),
)
SERVER_NAMES = st.one_of(st.sampled_from(["off", "broken", "ghost", ""]), VALUES)
PARAMS = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "protocol": st.one_of(st.just(PROTOCOL_VERSION), VALUES),
            "client": st.one_of(st.text(max_size=12), VALUES),
            "server": SERVER_NAMES,
            "servers": st.one_of(st.none(), st.lists(SERVER_NAMES, max_size=3), VALUES),
            "tool": st.one_of(st.text(max_size=8), VALUES),
            "arguments": st.one_of(st.dictionaries(st.text(max_size=6), VALUES, max_size=3)),
            "replay": st.one_of(st.binary(max_size=32), VALUES),
            "restart": VALUES,
            "response": st.one_of(st.text(max_size=32), VALUES),
            "forget_client": VALUES,
            "extra": VALUES,
        },
    ),
    VALUES,
)
IDS = st.one_of(st.integers(0, 40), st.integers(-(2**63), 2**64 - 1), VALUES)
JSON_RPC = st.builds(
    lambda request_id, method: json.dumps(
        {"jsonrpc": "2.0", "id": request_id, "method": method, "params": {}}
    ).encode(),
    st.one_of(st.integers(0, 9), st.text(max_size=4)),
    st.sampled_from(["initialize", "ping", "tools/list", "tools/call", "nope"]),
)
MESSAGES = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("request"), "id": IDS, "method": METHOD_NAMES},
        optional={"params": PARAMS, "unknown": VALUES},
    ),
    st.fixed_dictionaries({"type": st.just("cancel"), "id": IDS}),
    st.fixed_dictionaries(
        {"type": st.just("rpc"), "data": st.one_of(JSON_RPC, st.binary(max_size=32), VALUES)}
    ),
    st.fixed_dictionaries(
        {"type": st.just("event"), "name": st.one_of(st.text(max_size=8), VALUES)},
        optional={"data": VALUES},
    ),
    st.fixed_dictionaries(
        {"type": st.just("response"), "id": IDS},
        optional={"result": VALUES, "error": VALUES},
    ),
    st.fixed_dictionaries(
        {"type": st.one_of(st.text(max_size=10), VALUES)},
        optional={"id": IDS, "method": METHOD_NAMES, "params": PARAMS},
    ),
    st.dictionaries(st.text(max_size=8), VALUES, max_size=4),
)


def _nested(depth: int, kind: str) -> bytes:
    opener = b"\x91" if kind == "array" else b"\x81\xa1k"
    return opener * depth + b"\xc0"


def _with_field(head: dict[str, Any], key: str, raw: bytes) -> bytes:
    """`head` as a msgpack map, with one more pair whose value is `raw` as is."""
    encoded = msgspec.msgpack.encode(head)
    assert encoded[0] == 0x80 | len(head), "a fixmap of fewer than 15 pairs"
    return bytes([0x80 | (len(head) + 1)]) + encoded[1:] + msgspec.msgpack.encode(key) + raw


def _wrap(where: str, value: bytes) -> bytes:
    """A valid envelope with `value` (raw msgpack) in one of its free-form places."""
    if where == "params":  # hello decodes its params even before the greeting
        return _with_field({"type": "request", "id": 3, "method": "hello"}, "params", value)
    if where == "arguments":
        params = _with_field({"server": "off", "tool": "t"}, "arguments", b"\x81\xa1a" + value)
        return _with_field({"type": "request", "id": 4, "method": "call"}, "params", params)
    if where == "event":
        return _with_field({"type": "event", "name": "x"}, "data", value)
    if where == "result":
        return _with_field({"type": "response", "id": 1}, "result", value)
    return value


NESTED = st.builds(
    lambda depth, kind, where: _wrap(where, _nested(depth, kind)),
    st.integers(1, 12000),
    st.sampled_from(["array", "map"]),
    st.sampled_from(["bare", "params", "arguments", "event", "result"]),
)
HUGE = st.builds(
    _wrap,
    st.sampled_from(["bare", "params", "arguments", "event", "result"]),
    st.sampled_from(HUGE_CONTAINERS),
)
BODIES = st.one_of(
    MESSAGES.map(msgspec.msgpack.encode),
    MESSAGES.map(msgspec.msgpack.encode),
    VALUES.map(msgspec.msgpack.encode),
    st.binary(max_size=64),
    NESTED,
    HUGE,
)


@st.composite
def mutated(draw: st.DrawFn, body: bytes) -> bytes:
    how = draw(st.sampled_from(["none", "none", "none", "flip", "truncate", "extend", "splice"]))
    if how == "none" or not body:
        return body
    if how == "flip":
        data = bytearray(body)
        for _ in range(draw(st.integers(1, 4))):
            position = draw(st.integers(0, len(data) - 1))
            data[position] ^= 1 << draw(st.integers(0, 7))
        return bytes(data)
    if how == "truncate":
        return body[: draw(st.integers(0, len(body) - 1))]
    if how == "extend":
        return body + draw(st.binary(min_size=1, max_size=16))
    position = draw(st.integers(0, len(body)))
    return body[:position] + draw(st.binary(min_size=1, max_size=8)) + body[position:]


# Well-formed requests and cancels (with fuzzed methods and params) keep a
# connection open, so that what follows them is read too.
WELL_FORMED = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("request"), "id": st.integers(0, 2**63), "method": METHOD_NAMES},
        optional={"params": PARAMS},
    ),
    st.fixed_dictionaries({"type": st.just("cancel"), "id": st.integers(0, 2**63)}),
).map(msgspec.msgpack.encode)


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 9)) < 6:
        body = draw(WELL_FORMED)
        return struct.pack(">I", len(body)) + body
    body = draw(BODIES.flatmap(mutated))
    header = draw(st.sampled_from(["right"] * 6 + ["near", "huge", "any", "cut"]))
    if header == "right":
        length = len(body)
    elif header == "near":
        length = max(0, len(body) + draw(st.integers(-8, 8)))
    elif header == "huge":
        length = draw(st.integers(FUZZ_MAX_FRAME + 1, 2**32 - 1))
    elif header == "any":
        length = draw(st.integers(0, 2**32 - 1))
    else:  # a header cut short: all the connection sends after it is its length
        return struct.pack(">I", len(body))[: draw(st.integers(0, 3))]
    return struct.pack(">I", length) + body


@st.composite
def batches(draw: st.DrawFn) -> list[tuple[bytes, int]]:
    """FRAMES_PER_EXAMPLE frames over one to ten connections, each maybe greeted
    first: (bytes to send, frames in them) per connection."""
    sent = draw(st.lists(frames(), min_size=FRAMES_PER_EXAMPLE, max_size=FRAMES_PER_EXAMPLE))
    cuts = sorted(set(draw(st.lists(st.integers(1, FRAMES_PER_EXAMPLE - 1), max_size=9))))
    bounds = [0, *cuts, FRAMES_PER_EXAMPLE]
    connections = []
    for start, end in itertools.pairwise(bounds):
        greet = draw(st.booleans())
        data = (HELLO_FRAME if greet else b"") + b"".join(sent[start:end])
        connections.append((data, end - start + greet))
    return connections


# --- Fuzzing: running a batch ---------------------------------------------------------


class FuzzRun:
    """Sends batches to the daemon and tallies what came back."""

    def __init__(self, env: McpdEnv) -> None:
        self.path = str(env.socket)
        self.frames = 0
        self.connections = 0
        self.bytes = 0
        self.responses = 0
        self.codes: Counter[int] = Counter()
        self.successes = 0

    def run(self, batch: list[tuple[bytes, int]], rng: random.Random) -> None:
        socks = []
        try:
            for data, count in batch:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                socks.append(sock)
                sock.settimeout(IO_TIMEOUT)
                sock.connect(self.path)
                self._send(sock, data, rng)
                self.frames += count
                self.bytes += len(data)
                self.connections += 1
            for sock in socks:
                self._drain(sock)
        finally:
            for sock in socks:
                sock.close()

    @staticmethod
    def _send(sock: socket.socket, data: bytes, rng: random.Random) -> None:
        """In pieces of random sizes, then half-close: the daemon sees the end."""
        try:
            position = 0
            while position < len(data):
                piece = rng.choice([1, 3, 7, 64, 1000, len(data)])
                sock.sendall(data[position : position + piece])
                position += piece
        except (BrokenPipeError, ConnectionResetError):
            pass  # the daemon closed it after a violation, as it should
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)

    def _drain(self, sock: socket.socket) -> None:
        """Read to the end; everything the daemon sent must be a well-formed frame."""
        decoder = FrameDecoder(1 << 31)
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                data = b""  # closed with our unread bytes still queued: same as end of file
            except TimeoutError:
                raise AssertionError(
                    f"a fuzzed connection was still open after {IO_TIMEOUT}s"
                ) from None
            if not data:
                break
            decoder.feed(data)
            while (body := decoder.next_frame()) is not None:
                self._count(decode_message(body))
        assert decoder.pending == 0, "the daemon sent a partial frame"

    def _count(self, message: Message) -> None:
        assert isinstance(message, Response | Event | Rpc), message
        if isinstance(message, Response):
            self.responses += 1
            if message.error is None:
                self.successes += 1
            else:
                self.codes[message.error.code] += 1


FUZZ_CONFIG = f"""\
[daemon]
max_frame_size = {FUZZ_MAX_FRAME}

[servers.off]
url = "https://off.example/mcp"
enabled = false

[servers.broken]
url = "not a url"
"""

# A few frames of every kind, sent before the first memory measurement so that
# what is allocated once (caches, the first error of each kind) is not counted.
WARM_UP = [
    (HELLO_FRAME + frame_of({"type": "request", "id": 1, "method": "status"}), 2),
    (HELLO_FRAME + b"\x00\x00\x00\x01\xc1", 2),
    (HELLO_FRAME + struct.pack(">I", len(_nested(5000, "array"))) + _nested(5000, "array"), 2),
    (struct.pack(">I", 2**32 - 1), 1),
    (frame_of({"type": "request", "id": 1, "method": "nope"}), 1),
    (HELLO_FRAME + frame_of({"type": "request", "id": 2, "method": "attach", "params": {}}), 2),
]


@pytest.mark.timeout(FUZZ_TIMEOUT)
def test_fuzzed_frames_never_harm_the_daemon_or_its_other_clients(
    supervised_daemon, mcpd_env, raw_client
):
    mcpd_env.write_config(FUZZ_CONFIG)
    daemon = supervised_daemon()
    witness = Witness(raw_client(mcpd_env.socket))
    fuzz = FuzzRun(mcpd_env)
    for _ in range(3):
        fuzz.run(WARM_UP, random.Random(0))
    fds_before = open_fds(daemon.pid)
    rss_before = rss_kib(daemon.pid)
    started = time.monotonic()

    def send_batch(batch: list[tuple[bytes, int]], rng: random.Random) -> None:
        # A "shutdown" request can only be built from these bytes.
        if any(b"shutdown" in data for data, _ in batch):
            return
        fuzz.run(batch, rng)
        assert daemon.process.poll() is None, f"mcpd died:\n{daemon.log[-5000:]}"
        witness.check()

    # In runs of at most EXAMPLES_PER_RUN: hypothesis keeps a record of every
    # example of a run, which for a 100,000-frame run would take a gigabyte.
    examples = math.ceil(FUZZ_FRAMES / FRAMES_PER_EXAMPLE)
    while examples > 0:
        run = min(examples, EXAMPLES_PER_RUN)
        settings(
            max_examples=run,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
            print_blob=True,
        )(given(batch=batches(), rng=st.randoms(use_true_random=False))(send_batch))()
        examples -= run
    elapsed = time.monotonic() - started
    wait_until(lambda: open_fds(daemon.pid) <= fds_before, 10, "the daemon to close every socket")
    rss_after = rss_kib(daemon.pid)
    witness.check()
    assert daemon.process.poll() is None

    assert fuzz.frames >= FUZZ_FRAMES * 0.95, fuzz.frames  # a few batches may name shutdown
    assert rss_after - rss_before < RSS_GROWTH_LIMIT_KIB, (rss_before, rss_after)
    # Not one client's garbage was the daemon's own failure.
    assert fuzz.codes[ErrorCode.INTERNAL_ERROR] == 0, fuzz.codes
    assert_no_daemon_errors(daemon)
    # The fuzzing reached the refusals it is meant to reach, and valid requests got through.
    for code in (
        ErrorCode.MALFORMED_MESSAGE,
        ErrorCode.INVALID_REQUEST,
        ErrorCode.FRAME_TOO_LARGE,
        ErrorCode.METHOD_NOT_FOUND,
        ErrorCode.HELLO_REQUIRED,
        ErrorCode.INVALID_PARAMS,
    ):
        assert fuzz.codes[code] > 0, (code, fuzz.codes)
    assert fuzz.successes > 0
    assert log_lines(daemon, "closing a client that broke the protocol")
    print(
        f"\nfuzz: {fuzz.frames} frames ({fuzz.bytes} bytes) over {fuzz.connections} connections "
        f"in {elapsed:.1f}s; {fuzz.responses} responses ({fuzz.successes} results, errors "
        f"{dict(sorted(fuzz.codes.items()))}); daemon RSS {rss_before} -> {rss_after} KiB; "
        f"fds {fds_before} -> {open_fds(daemon.pid)}; witness worst {witness.worst_ms:.1f} ms "
        f"over {len(witness.latencies)} checks; this process's peak RSS "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss} KiB"
    )
    record("fuzzed frames sent to the daemon", fuzz.frames, TEST)
    record("fuzzed connections", fuzz.connections, TEST)


# --- Slow clients ---------------------------------------------------------------------


@pytest.mark.timeout(90)
def test_a_client_stalled_in_the_middle_of_a_frame_is_dropped_after_frame_timeout(
    supervised_daemon, mcpd_env, raw_client
):
    mcpd_env.write_config("[daemon]\nframe_timeout = 2\n")
    daemon = supervised_daemon()
    witness = Witness(raw_client(mcpd_env.socket))
    idle = raw_client(mcpd_env.socket)
    assert idle.hello().error is None
    staller = raw_client(mcpd_env.socket)
    assert staller.hello().error is None

    body = msgspec.msgpack.encode({"type": "request", "id": 9, "method": "status"})
    started = time.monotonic()
    staller.send_bytes(struct.pack(">I", len(body)) + body[:5])
    witness.check()  # served while the other client stalls
    staller.sock.settimeout(30)
    reply = staller.receive()
    waited = time.monotonic() - started
    assert isinstance(reply, Response), reply
    assert reply.id is None
    assert reply.error is not None
    assert reply.error.code == ErrorCode.MALFORMED_MESSAGE
    assert "frame_timeout" in reply.error.message
    assert waited >= 1.9, waited  # not before its time
    assert staller.is_closed_by_peer()
    [line] = log_lines(daemon, "closing a client that broke the protocol")
    assert "frame_timeout" in line
    assert "2 seconds" in line
    witness.check()

    # A connection idle between frames is never timed out: it has been idle all along.
    idle.request("status")
    assert idle.receive().error is None

    # A frame that arrives slowly but steadily is not cut off: the timeout is
    # for silence in the middle of a frame, not for the whole frame.
    slow = raw_client(mcpd_env.socket)
    assert slow.hello().error is None
    frame = frame_of({"type": "request", "id": 5, "method": "status", "params": {}})
    pieces = [frame[i : i + 4] for i in range(0, len(frame), 4)][:6]
    pieces[-1] += frame[4 * 6 :]
    for piece in pieces:  # 6 pieces, 0.5 s apart: 3 s > frame_timeout in all
        slow.send_bytes(piece)
        time.sleep(0.5)
    reply = slow.receive()
    assert isinstance(reply, Response)
    assert (reply.id, reply.error) == (5, None)
    assert daemon.process.poll() is None
    assert_no_daemon_errors(daemon)
    record("clients dropped for stalling mid-frame", 1, TEST)


def _send_until_blocked(
    sock: socket.socket, data: bytes, daemon: DaemonProcess, paused: str
) -> int:
    """Send without blocking until the daemon says it paused and stops reading.

    Returns the number of bytes sent. Fails if the daemon read everything."""
    sock.setblocking(False)
    view = memoryview(data)
    sent = 0
    deadline = time.monotonic() + 60
    try:
        while sent < len(data):
            assert time.monotonic() < deadline, "the flood neither finished nor was paused"
            _, writable, _ = select.select([], [sock], [], 1.0)
            if writable:
                with contextlib.suppress(BlockingIOError):
                    sent += sock.send(view[sent : sent + 65536])
            elif log_lines(daemon, paused):
                return sent  # not writable for a second, and the daemon says why
    finally:
        sock.setblocking(True)
    return sent


@pytest.mark.timeout(120)
def test_a_client_that_floods_requests_and_never_reads_is_paused_not_served_without_bound(
    supervised_daemon, mcpd_env, raw_client
):
    daemon = supervised_daemon()
    witness = Witness(raw_client(mcpd_env.socket))
    flooder = raw_client(mcpd_env.socket)
    assert flooder.hello().error is None
    total = 40_000
    data = b"".join(encode_frame(Request(i, "status")) for i in range(1, total + 1))
    rss_before = rss_kib(daemon.pid)

    sent = _send_until_blocked(flooder.sock, data, daemon, PAUSED)
    assert sent < len(data), "the daemon read every request of a client that reads nothing"
    rss_paused = rss_kib(daemon.pid)
    [line] = log_lines(daemon, PAUSED)
    assert "does not read its responses" in line or "requests in flight" in line, line
    for _ in range(20):
        witness.check()
    assert rss_paused - rss_before < 64 * 1024, (rss_before, rss_paused)

    # Nothing is lost: once the client reads, every request gets its one answer.
    rest = threading.Thread(target=flooder.sock.sendall, args=(data[sent:],), daemon=True)
    rest.start()
    flooder.sock.settimeout(60)
    answered: Counter[int] = Counter()
    for _ in range(total):
        reply = flooder.receive()
        assert isinstance(reply, Response), reply
        assert reply.error is None, reply.error
        assert reply.id is not None
        answered[reply.id] += 1
    rest.join(timeout=30)
    assert set(answered) == set(range(1, total + 1))
    assert max(answered.values()) == 1
    witness.check()
    assert_no_daemon_errors(daemon)
    print(
        f"\nflood: paused after {sent} of {len(data)} bytes; RSS {rss_before} -> {rss_paused} KiB; "
        f"witness worst {witness.worst_ms:.1f} ms"
    )
    record("requests pipelined by a client that stopped reading (none lost)", total, TEST)


def _servers(count: int) -> str:
    return "".join(
        f'[servers.s{i}]\nurl = "https://s{i}.example/mcp"\nenabled = false\n' for i in range(count)
    )


@pytest.mark.timeout(120)
def test_a_subscriber_that_never_reads_is_disconnected_and_nobody_else_is(
    supervised_daemon, mcpd_env, raw_client
):
    daemon = supervised_daemon()
    witness = Witness(raw_client(mcpd_env.socket))
    reader = raw_client(mcpd_env.socket)
    deaf = raw_client(mcpd_env.socket)
    for client in (reader, deaf):
        assert client.hello().error is None
        client.request("subscribe")
        assert client.receive().error is None

    # Each reload adds or removes 200 disabled servers: 200 events to every subscriber.
    per_reload = 200
    reloads = 0
    while not log_lines(daemon, "disconnecting a client that does not read its events"):
        assert reloads < 50, "50 reloads and the subscriber that reads nothing is still there"
        mcpd_env.write_config(_servers(per_reload) if reloads % 2 == 0 else "")
        request_id = witness.client.request("reload")
        reply = witness.client.receive()
        assert (reply.id, reply.error) == (request_id, None)
        reloads += 1
        reader.sock.settimeout(WITNESS_DEADLINE)
        events = [reader.receive() for _ in range(per_reload)]
        assert all(isinstance(event, Event) for event in events)
        witness.check()

    # The deaf one is closed: what the kernel still holds, then end of file.
    deaf.sock.settimeout(10)
    received = 0
    with contextlib.suppress(EOFError, ConnectionResetError):
        while True:
            assert isinstance(deaf.receive(), Event)
            received += 1
    assert received < reloads * per_reload
    # The reading subscriber was never held back and is still subscribed.
    mcpd_env.write_config(_servers(1) if reloads % 2 == 0 else "")
    witness.client.request("reload")
    assert witness.client.receive().error is None
    reader.sock.settimeout(WITNESS_DEADLINE)
    assert isinstance(reader.receive(), Event)
    witness.check()
    assert daemon.process.poll() is None
    assert_no_daemon_errors(daemon)
    record(
        "events pushed before a subscriber that never read was dropped", reloads * per_reload, TEST
    )


# --- Many connections ------------------------------------------------------------------


def _connect_many(path: Path, count: int, witness: Witness) -> list[RawClient]:
    clients = []
    try:
        for i in range(count):
            clients.append(RawClient(path, timeout=30))
            if i % 100 == 99:
                witness.check()
    except BaseException:
        for client in clients:
            client.close()
        raise
    return clients


def _all_answer(clients: list[RawClient], method: str, params: Any = None) -> None:
    """Pipelined: every client sends, then every client reads its answer."""
    for client in clients:
        client.request(method, params)
    for client in clients:
        reply = client.receive()
        assert isinstance(reply, Response), reply
        assert reply.error is None, reply.error


@pytest.mark.timeout(180)
def test_a_thousand_connections_at_once_with_a_low_inherited_open_file_limit(
    supervised_daemon, mcpd_env, raw_client
):
    count = 1000
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < count + 200:
        pytest.skip(f"the hard open-file limit ({hard}) is below {count + 200}")
    # Started with a soft limit of 256, as a login session may give it.
    with own_open_file_limit(256):
        daemon = supervised_daemon()
    [raised] = log_lines(daemon, "raised the open-file limit")
    assert "from=256" in raised
    assert f"to={hard}" in raised
    witness = Witness(raw_client(mcpd_env.socket))
    fds_before = open_fds(daemon.pid)
    rss_before = rss_kib(daemon.pid)

    def hold_them_all() -> tuple[float, float, int]:
        started = time.monotonic()
        clients = _connect_many(mcpd_env.socket, count, witness)
        try:
            _all_answer(clients, "hello", HelloParams(PROTOCOL_VERSION, "many"))
            connected = time.monotonic() - started
            assert open_fds(daemon.pid) >= fds_before + count
            witness.check()
            started = time.monotonic()
            _all_answer(clients, "status")
            round_trip = time.monotonic() - started
            witness.check()
            rss_held = rss_kib(daemon.pid)
        finally:
            for client in clients:
                client.close()
        wait_until(lambda: open_fds(daemon.pid) <= fds_before, 20, "every connection to close")
        witness.check()
        return connected, round_trip, rss_held

    # Twice: the second thousand must reuse what the first one left, not add to it.
    rounds = [hold_them_all() for _ in range(2)]
    (connected, round_trip, first_held), (_, _, second_held) = rounds
    rss_after = rss_kib(daemon.pid)
    assert second_held - first_held < 8 * 1024, (first_held, second_held)
    assert daemon.process.poll() is None
    assert_no_daemon_errors(daemon)
    print(
        f"\n{count} connections: connected and greeted in {connected:.2f}s, a status on every "
        f"one in {round_trip:.2f}s; RSS {rss_before} -> {first_held} (held) -> "
        f"{second_held} (held again) -> {rss_after} KiB; witness worst {witness.worst_ms:.1f} ms"
    )
    record("client connections held open at once", count, TEST)


@pytest.mark.timeout(60)
def test_connections_over_max_connections_are_refused_with_a_reason(
    supervised_daemon, mcpd_env, raw_client
):
    limit = 20
    mcpd_env.write_config(f"[daemon]\nmax_connections = {limit}\n")
    daemon = supervised_daemon()
    assert f"max_connections={limit}" in log_lines(daemon, "ready")[0]
    witness = Witness(raw_client(mcpd_env.socket))
    held = [raw_client(mcpd_env.socket) for _ in range(limit - 1)]
    for client in held:
        assert client.hello().error is None
    refused = 0
    for _ in range(5):
        extra = raw_client(mcpd_env.socket)
        reply = extra.receive()  # refused before it says anything
        assert isinstance(reply, Response), reply
        assert reply.id is None
        assert reply.error is not None
        assert reply.error.code == ErrorCode.BUSY
        assert f"{limit} client connections" in reply.error.message
        assert "max_connections" in reply.error.message
        assert extra.is_closed_by_peer()
        refused += 1
        witness.check()
    # One line for the five: a client retrying in a loop does not flood the log.
    [line] = log_lines(daemon, "refused a client connection: too many are open")
    assert f"limit={limit}" in line
    assert "max_connections" in line

    # One goes away, and there is room for one more.
    held.pop().close()

    def one_more_is_served() -> bool:
        client = raw_client(mcpd_env.socket)
        try:
            reply = client.hello()
        except (EOFError, ConnectionResetError):
            return False
        return isinstance(reply, Response) and reply.error is None

    wait_until(one_more_is_served, 10, "a connection to be accepted after one closed")
    witness.check()
    assert_no_daemon_errors(daemon)
    record("connections refused over max_connections", refused, TEST)


@pytest.mark.timeout(90)
def test_the_daemon_out_of_file_descriptors_keeps_serving_and_accepts_again(
    supervised_daemon, mcpd_env, raw_client
):
    daemon = supervised_daemon()
    witness = Witness(raw_client(mcpd_env.socket))
    soft, hard = resource.prlimit(daemon.pid, resource.RLIMIT_NOFILE)
    base = open_fds(daemon.pid)
    # Room for three more descriptors, while ten clients come.
    resource.prlimit(daemon.pid, resource.RLIMIT_NOFILE, (base + 3, hard))
    waiting = []
    try:
        for _ in range(10):
            client = raw_client(mcpd_env.socket)  # connects: the kernel's backlog holds it
            client.request("hello", HelloParams(PROTOCOL_VERSION, "waiting"))
            waiting.append(client)
        wait_until(
            lambda: log_lines(daemon, ACCEPT_FAILED),
            10,
            "the daemon to log its failing accept",
        )
        [line] = log_lines(daemon, ACCEPT_FAILED)
        assert "Too many open files" in line
        # While out of descriptors: the daemon serves its connections and does not spin.
        cpu_before = cpu_seconds(daemon.pid)
        window_start = time.monotonic()
        while time.monotonic() - window_start < 1.5:
            witness.check()
            time.sleep(0.05)
        window = time.monotonic() - window_start
        cpu_used = cpu_seconds(daemon.pid) - cpu_before
        assert cpu_used < 0.5 * window, f"{cpu_used:.2f}s of CPU in {window:.2f}s"
        assert len(log_lines(daemon, ACCEPT_FAILED)) == 1, "logged at every retry"
        assert daemon.process.poll() is None
    finally:
        resource.prlimit(daemon.pid, resource.RLIMIT_NOFILE, (soft, hard))
    # Descriptors back: every client that waited in the backlog is served.
    for client in waiting:
        client.sock.settimeout(10)
        reply = client.receive()
        assert isinstance(reply, Response), reply
        assert reply.error is None, reply.error
    wait_until(
        lambda: log_lines(daemon, "accepting client connections again"),
        10,
        "the daemon to log that it accepts again",
    )
    witness.check()
    print(
        f"\nEMFILE: {cpu_used:.2f}s of CPU in {window:.2f}s out of descriptors; "
        f"{len(log_lines(daemon, ACCEPT_FAILED))} log line(s) of it; witness worst "
        f"{witness.worst_ms:.1f} ms"
    )
    record("connections that waited out the daemon's EMFILE and were served", 10, TEST)


@pytest.mark.timeout(60)
def test_reloads_faster_than_the_service_manager_reads_never_hang_the_daemon(
    run_daemon, mcpd_env, raw_client
):
    """The harness reads NOTIFY_SOCKET only until READY=1: a manager that is slow to read."""
    daemon = run_daemon()
    client = raw_client(mcpd_env.socket)
    assert client.hello().error is None
    client.sock.settimeout(WITNESS_DEADLINE)
    for count in range(20):  # each reload notifies RELOADING=1, then READY=1
        request_id = client.request("reload")
        try:
            reply = client.receive()
        except TimeoutError:
            daemon.process.kill()  # hung in sendto(2): SIGTERM would not be handled
            daemon.process.wait()
            raise AssertionError(f"reload {count + 1} got no answer: the daemon hung") from None
        assert (reply.id, reply.error) == (request_id, None)
