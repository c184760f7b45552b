"""The real daemon under test: a private XDG tree, the `mcpd` process,
readiness over a real NOTIFY_SOCKET, `mcpctl` as a subprocess, raw frames."""

from __future__ import annotations

import json
import os
import queue
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import leakcheck
import msgspec

from mcpd.protocol import (
    PROTOCOL_VERSION,
    FrameDecoder,
    HelloParams,
    Message,
    Request,
    decode_message,
    encode_frame,
)

BIN = Path(sys.executable).parent
MCPD = str(BIN / "mcpd")
MCPCTL = str(BIN / "mcpctl")
READY_TIMEOUT = 15.0


@dataclass
class McpdEnv:
    """A user's XDG directories and environment, private to one test."""

    root: Path
    vars: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Everything mcpd writes under the root is searched for secrets at the
        # end of the session (tests/leakcheck.py).
        leakcheck.watch_root(self.root)

    @classmethod
    def private(cls, root: Path, **extra: str) -> McpdEnv:
        """A user of its own: an XDG tree under `root` (made here, the runtime
        directory 0700) and a bare environment pointing at it, plus `extra`."""
        (root / "run").mkdir(parents=True, mode=0o700)
        variables = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(root),
            "XDG_CONFIG_HOME": str(root / "config"),
            "XDG_STATE_HOME": str(root / "state"),
            "XDG_RUNTIME_DIR": str(root / "run"),
            **extra,
        }
        return cls(root, variables)

    @property
    def mcpctl_log(self) -> Path:
        """Every `mcpctl` command run through the harness, with its stdout and stderr."""
        return self.root / "mcpctl.log"

    def keep_output(self, args: tuple[str, ...] | list[str], stdout: str, stderr: str) -> None:
        """Append a command's output to `mcpctl_log`, for the session's secrets scan.

        The stdout of `mcpctl token` is the access token, handed out on purpose
        (`export_token = true`): it is left out, and its stderr kept.
        """
        if list(args[:1]) == ["token"]:
            stdout = "(the stdout of `mcpctl token` is the token, by design: not kept)\n"
        with _output_lock, self.mcpctl_log.open("a", encoding="utf-8", errors="replace") as out:
            out.write(f"$ mcpctl {' '.join(args)}\n--- stdout\n{stdout}--- stderr\n{stderr}")

    @property
    def config_file(self) -> Path:
        return self.root / "config" / "mcpd" / "config.toml"

    @property
    def key_file(self) -> Path:
        return self.root / "config" / "mcpd" / "mcpd.key"

    @property
    def state_dir(self) -> Path:
        return self.root / "state" / "mcpd"

    @property
    def credentials_dir(self) -> Path:
        return self.state_dir / "credentials"

    @property
    def socket_dir(self) -> Path:
        return self.root / "run" / "mcpd"

    @property
    def socket(self) -> Path:
        return self.socket_dir / "mcpd.sock"

    def write_config(self, text: str) -> None:
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(text)

    def mcpctl(self, *args: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [MCPCTL, *args],
            env=self.vars,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        self.keep_output(args, result.stdout, result.stderr)
        return result


_output_lock = threading.Lock()


class DaemonProcess:
    def __init__(self, env: McpdEnv, process: subprocess.Popen[bytes], log_path: Path) -> None:
        self.env = env
        self.process = process
        self.log_path = log_path
        self.notifications: list[str] = []

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def mcpctl(self, *args: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
        return self.env.mcpctl(*args, timeout=timeout)

    def wait_for_log(self, needle: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.log:
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} never appeared in the log:\n{self.log}")
            time.sleep(0.02)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"mcpd ignored SIGTERM:\n{self.log}") from None
        return self.process.returncode


def launch(
    env: McpdEnv,
    *args: str,
    extra_env: dict[str, str] | None = None,
    pass_fds: tuple[int, ...] = (),
    log_name: str = "mcpd.log",
    program: tuple[str, ...] = (MCPD,),
) -> tuple[subprocess.Popen[bytes], Path]:
    """Start mcpd (or `program`, a stand-in that runs it) with `args`."""
    log_path = env.root / log_name
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [*program, *args],
            env={**env.vars, **(extra_env or {})},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            pass_fds=pass_fds,
        )
    return process, log_path


class Notifications:
    """A NOTIFY_SOCKET listener, as systemd's manager would have."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.received: list[str] = []

    def wait_for(self, field: str, process: subprocess.Popen[bytes], log_path: Path) -> str:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            for message in self.received:
                if field in message.split("\n"):
                    self.received.remove(message)
                    return message
            if process.poll() is not None:
                raise AssertionError(
                    f"mcpd exited with {process.returncode} before {field}:\n"
                    + log_path.read_text(errors="replace")
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {field} from mcpd:\n{log_path.read_text()}")
            self.sock.settimeout(min(remaining, 0.2))
            try:
                self.received.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue

    def close(self) -> None:
        self.sock.close()


def start_daemon(
    env: McpdEnv,
    *args: str,
    extra_env: dict[str, str] | None = None,
    pass_fds: tuple[int, ...] = (),
    program: tuple[str, ...] = (MCPD,),
) -> tuple[DaemonProcess, Notifications]:
    notify = Notifications(env.root / f"notify-{time.monotonic_ns()}.sock")
    process, log_path = launch(
        env,
        *args,
        extra_env={"NOTIFY_SOCKET": str(notify.path), **(extra_env or {})},
        pass_fds=pass_fds,
        program=program,
    )
    daemon = DaemonProcess(env, process, log_path)
    daemon.notifications.append(notify.wait_for("READY=1", process, log_path))
    return daemon, notify


class RawClient:
    """Frames straight onto the socket, for what mcpctl would never send."""

    def __init__(self, path: Path, timeout: float = 5) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.decoder = FrameDecoder(1 << 30)
        self.next_id = 0

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, message: Message) -> None:
        self.sock.sendall(encode_frame(message))

    def request(self, method: str, params: Any = None, request_id: int | None = None) -> int:
        self.next_id += 1
        request = Request(request_id if request_id is not None else self.next_id, method)
        if params is not None:
            request.params = msgspec.Raw(msgspec.msgpack.encode(params))
        self.send(request)
        return request.id

    def receive(self) -> Message:
        while (body := self.decoder.next_frame()) is None:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("mcpd closed the connection")
            self.decoder.feed(data)
        return decode_message(body)

    def hello(self) -> Any:
        self.request("hello", HelloParams(PROTOCOL_VERSION, "tests"))
        return self.receive()

    def is_closed_by_peer(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


class SilentServer:
    """A TCP listener that never accepts: connects succeed, answers never come.

    A fake on purpose: it stands for "a server that is still connecting", so
    that tests about status, reload and events see a stable `connecting`
    state without depending on timing or on the network.
    """

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.base = f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def url(self, name: str) -> str:
        return f"{self.base}/{name}/mcp"

    def close(self) -> None:
        self.sock.close()


class Editor:
    """An editor as mcpd sees it: `mcpctl stdio NAME` driven over its stdin/stdout."""

    def __init__(
        self, env: McpdEnv, server: str, log_path: Path, command: list[str] | None = None
    ) -> None:
        """`command` runs the bridge some other way (over ssh, say); by default
        `mcpctl stdio SERVER` here."""
        self.log_path = log_path
        self._stderr = log_path.open("ab")
        self.process = subprocess.Popen(
            command or [MCPCTL, "stdio", server],
            env=env.vars,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        self.received: queue.Queue[dict[str, Any]] = queue.Queue()
        self.notifications: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.next_id = 0

    @property
    def stdout_log(self) -> Path:
        """Every line the bridge wrote to its stdout, for the session's secrets scan."""
        return self.log_path.with_name(self.log_path.stem + ".stdout.log")

    def _read(self) -> None:
        assert self.process.stdout is not None
        with self.stdout_log.open("ab") as kept:
            for line in self.process.stdout:
                kept.write(line)
                kept.flush()
                self.received.put(json.loads(line))

    def send(self, message: dict[str, Any]) -> None:
        self.send_raw(json.dumps(message).encode())

    def send_raw(self, line: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + b"\n")
        self.process.stdin.flush()

    def request_async(
        self, method: str, params: dict[str, Any] | None = None, request_id: Any = None
    ) -> Any:
        if request_id is None:
            self.next_id += 1
            request_id = self.next_id
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)
        return request_id

    def response(self, request_id: Any, timeout: float = 20) -> dict[str, Any]:
        """The response to `request_id`; notifications met on the way are kept."""
        deadline = time.monotonic() + timeout
        pending = []
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no response to {request_id!r}; stderr:\n{self.stderr}")
                try:
                    message = self.received.get(timeout=remaining)
                except queue.Empty:
                    continue
                if "id" in message and "method" not in message and message["id"] == request_id:
                    return message
                if "method" in message and "id" not in message:
                    self.notifications.append(message)
                else:
                    pending.append(message)
        finally:
            for message in pending:
                self.received.put(message)

    def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.response(self.request_async(method, params))

    def initialize(self, capabilities: dict[str, Any] | None = None) -> dict[str, Any]:
        reply = self.request(
            "initialize",
            {
                "protocolVersion": "2025-11-25",
                "capabilities": capabilities or {},
                "clientInfo": {"name": "test-editor", "version": "1"},
            },
        )
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return reply

    def call(self, tool: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.request("tools/call", {"name": tool, "arguments": arguments or {}})

    def wait_for_notification(self, method: str, timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for message in self.notifications:
                if message["method"] == method:
                    self.notifications.remove(message)
                    return message
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {method}; got {self.notifications}")
            try:
                message = self.received.get(timeout=min(remaining, 0.1))
            except queue.Empty:
                continue
            if "method" in message and "id" not in message:
                self.notifications.append(message)
            else:
                self.received.put(message)
                time.sleep(0.01)

    def wait_for_request(self, method: str, timeout: float = 20) -> dict[str, Any]:
        """A request from the server (sampling, elicitation, roots) sent to this editor."""
        deadline = time.monotonic() + timeout
        skipped = []
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no {method} request; stderr:\n{self.stderr}")
                try:
                    message = self.received.get(timeout=remaining)
                except queue.Empty:
                    continue
                if message.get("method") == method and "id" in message:
                    return message
                skipped.append(message)
        finally:
            for message in skipped:
                self.received.put(message)

    def quiet_for(self, seconds: float) -> list[dict[str, Any]]:
        """Everything that arrives within `seconds` (to show that nothing does)."""
        time.sleep(seconds)
        arrived = list(self.notifications)
        self.notifications.clear()
        while not self.received.empty():
            arrived.append(self.received.get_nowait())
        return arrived

    @property
    def stderr(self) -> str:
        self._stderr.flush()
        return self.log_path.read_text(errors="replace")

    def close(self) -> int:
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        try:
            code = self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError("the bridge did not end at stdin's end") from None
        finally:
            self._reader.join(timeout=5)
            if self.process.stdout is not None:
                self.process.stdout.close()
            self._stderr.close()
        return code


# --- Servers' states, through mcpctl ---------------------------------------------


def server_config(name: str, url: str, extra: str = "") -> str:
    return f'[servers.{name}]\nurl = "{url}"\ntimeout = 10\n{extra}'


def status_of(daemon: DaemonProcess, name: str) -> dict[str, Any]:
    result = daemon.mcpctl("status", name, "--json")
    assert result.returncode == 0, result.stderr
    server: dict[str, Any] = json.loads(result.stdout)["servers"][0]
    return server


def wait_state(daemon: DaemonProcess, name: str, state: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        current = status_of(daemon, name)
        if current["state"] == state:
            return current
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} stayed {current}; log:\n{daemon.log}")
        time.sleep(0.05)


# --- Signing in, as a user's browser would ------------------------------------------


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def browse(url: str, follow: bool = True) -> tuple[int, str, str]:
    """GET like a browser: (status, final URL or Location, body).

    An authorization code in the address it ends up at is registered as a
    secret (tests/leakcheck.py), whoever issued it."""
    opener = urllib.request.build_opener() if follow else urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(url, timeout=20) as response:
            result = response.status, response.url, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        location = exc.headers.get("Location", exc.url)
        result = exc.code, location, exc.read().decode(errors="replace")
    register_code(result[1])
    return result


def register_code(url: str) -> None:
    """Register the authorization code of a redirect URL as a secret."""
    for code in parse_qs(urlsplit(url).query).get("code", []):
        leakcheck.register("authorization code", code)


# `mcpctl auth` processes and the user tree whose mcpctl log keeps their output.
_auth_envs: weakref.WeakKeyDictionary[subprocess.Popen[str], McpdEnv] = weakref.WeakKeyDictionary()


def start_auth(
    env, name: str, *flags: str, first: str = "http", via: list[str] | None = None
) -> tuple[subprocess.Popen[str], str]:
    """Run `mcpctl auth NAME --no-browser` and read the URL it prints (the first
    line that starts with `first`: `"Open"` for a device sign-in's). `via`
    runs it some other way (an ssh command line that takes it as its last words)."""
    command = [MCPCTL, "auth", name, "--no-browser", *flags]
    process = subprocess.Popen(
        [*via, shlex.join(command)] if via else command,
        env=env.vars,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    if isinstance(env, McpdEnv):
        _auth_envs[process] = env
    shown = ""
    for line in process.stdout:
        shown += line
        if line.strip().startswith(first):
            if isinstance(env, McpdEnv):
                env.keep_output(["auth", name, *flags], shown, "")
            return process, line.strip()
    raise AssertionError(
        f"no URL from mcpctl auth: {process.stderr.read() if process.stderr else ''}"
    )


def finish(process: subprocess.Popen[str], stdin: str | None = None) -> tuple[int, str, str]:
    """The end of a `start_auth` process: its code and the rest of its output.

    Read through the text streams, not `communicate`, which would skip what
    their buffers already hold of what start_auth did not read."""
    assert process.stdin is not None
    assert process.stdout is not None
    assert process.stderr is not None
    if stdin is not None:
        process.stdin.write(stdin)
    process.stdin.close()
    with process.stdout, process.stderr:
        out = process.stdout.read()  # mcpctl writes little to stderr: it cannot fill
        err = process.stderr.read()
    process.wait(timeout=60)
    env = _auth_envs.get(process)
    if env is not None:
        env.keep_output(["auth", "(continued)"], out, err)
    return process.returncode, out, err


def callback_port(url: str) -> int:
    redirect = parse_qs(urlsplit(url).query)["redirect_uri"][0]
    port = urlsplit(redirect).port
    assert port is not None
    return port


def cpu_seconds(pid: int) -> float:
    """The CPU time a process has used, user and system (every thread)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # utime and stime are fields 14 and 15 of proc_pid_stat(5); fields[0] here is field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def imported_modules(env: McpdEnv, *command: str, check: bool = True) -> tuple[set[str], str]:
    """The modules `mcpctl COMMAND` imports (`python -X importtime`), and its stdout."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", MCPCTL, *command],
        env=env.vars,
        stdin=subprocess.DEVNULL,  # a bridge's editor that has gone: it ends
        capture_output=True,
        text=True,
        timeout=10,
        check=check,
    )
    imported = {
        line.split("|")[-1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    return imported, result.stdout


def stdio_session(
    argv: list[str], env: dict[str, str], requests: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], str, int]:
    """Run a stdio MCP server command as an editor does: send `requests` in turn,
    reading the answer to each one that has an id; then close its input (which
    ends a bridge). The answers, its stderr and its exit code."""
    process = subprocess.Popen(
        argv,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    replies = []
    for request in requests:
        process.stdin.write(json.dumps(request) + "\n")
        process.stdin.flush()
        if "id" in request:
            replies.append(json.loads(process.stdout.readline()))
    _, stderr = process.communicate(timeout=10)
    return replies, stderr, process.returncode
