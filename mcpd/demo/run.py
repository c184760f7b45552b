"""`mcpd demo`: the whole product on one machine, as a tutorial.

It starts the demo MCP server and its authorization server on loopback
(`mcpd.demo.server`), a real `mcpd` with a private XDG tree in a temporary
directory and that server as its only one, and then runs, printing each
command and what it printed: `mcpctl status` (the server wants a sign-in),
`mcpctl auth demo` with BROWSER set to a headless browser that approves
(`mcpd.demo.browser`), `mcpctl status` (connected, with the token's expiry),
`mcpctl tools demo`, `mcpctl call demo ...`, and `mcpctl shutdown`. Then it
stops the server and removes the directory; on failure or Ctrl-C too. Your own
config, tokens and daemon are never touched.

Exit code 0 only if every step worked; otherwise 1 with a message saying
which step failed (130 after Ctrl-C).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

BIN = Path(sys.executable).parent
SERVER = "demo"
START_TIMEOUT = 30.0
STEP_TIMEOUT = 60.0
SETTLE_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
READY = re.compile(r"mcpd-peer: listening on 127\.0\.0\.1:(\d+)")
ECHO_ARGUMENTS = '{"text": "hello from mcpd"}'
LOG_TAIL_LINES = 30


class DemoFailed(Exception):
    """A step did not work; the message says which and why."""


def _say(text: str = "") -> None:
    print(text, flush=True)


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(f"    {line}" for line in lines[-LOG_TAIL_LINES:]) or "    (empty)"


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class Demo:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.server_log = root / "demo-server.log"
        self.daemon_log = root / "mcpd.log"
        self.server: subprocess.Popen[bytes] | None = None
        self.daemon: subprocess.Popen[bytes] | None = None
        self.notify: socket.socket | None = None
        self.url = ""
        self.env: dict[str, str] = {}

    # --- The demo server ---------------------------------------------------------------

    def start_server(self) -> None:
        # --port 0: the server binds any free port and says which, so no other
        # process can take the port between our choice and its bind.
        with self.server_log.open("wb") as log:
            self.server = subprocess.Popen(
                [sys.executable, "-m", "mcpd.demo.server", "--port", "0"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # Ctrl-C reaches us; we stop it in order
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            match = READY.search(self.server_log.read_text(errors="replace"))
            if match:
                port = int(match.group(1))
                break
            if self.server.poll() is not None:
                raise DemoFailed(
                    f"the demo server exited with {self.server.returncode} before listening:\n"
                    + _tail(self.server_log)
                )
            if time.monotonic() > deadline:
                raise DemoFailed(
                    f"the demo server did not listen within {START_TIMEOUT:g}s:\n"
                    + _tail(self.server_log)
                )
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{port}/mcp"

    # --- The daemon ----------------------------------------------------------------------

    def start_daemon(self) -> None:
        root = self.root
        (root / "run").mkdir(mode=0o700)
        os.chmod(root / "run", 0o700)  # whatever the umask
        config = root / "config" / "mcpd" / "config.toml"
        config.parent.mkdir(parents=True)
        config.write_text(
            "[daemon]\n"
            "callback_port = 0  # any free port for the sign-in callback\n\n"
            f"[servers.{SERVER}]\n"
            f'url = "{self.url}"\n'
        )
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("MCPD_", "LISTEN_", "XDG_"))
            and key not in ("NOTIFY_SOCKET", "CREDENTIALS_DIRECTORY", "BROWSER")
        }
        self.env = {
            **env,
            "HOME": str(root),
            "XDG_CONFIG_HOME": str(root / "config"),
            "XDG_STATE_HOME": str(root / "state"),
            "XDG_RUNTIME_DIR": str(root / "run"),
            "PYTHONUNBUFFERED": "1",  # mcpctl's lines and the browser's, in order
        }
        # The daemon reports READY=1 here, as to systemd. The socket stays open
        # until the end, so that its later STOPPING=1 finds a listener too.
        notify_path = root / "notify.sock"
        self.notify = notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(notify_path))
        notify.settimeout(0.2)
        with self.daemon_log.open("wb") as log:
            self.daemon = subprocess.Popen(
                [str(BIN / "mcpd")],
                env={**self.env, "NOTIFY_SOCKET": str(notify_path)},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                if b"READY=1" in notify.recv(4096).split(b"\n"):
                    break
            except TimeoutError:
                pass
            if self.daemon.poll() is not None:
                raise DemoFailed(
                    f"mcpd exited with {self.daemon.returncode} before it was ready:\n"
                    + _tail(self.daemon_log)
                )
            if time.monotonic() > deadline:
                raise DemoFailed(
                    f"mcpd was not ready within {START_TIMEOUT:g}s:\n" + _tail(self.daemon_log)
                )

    # --- mcpctl ------------------------------------------------------------------------------

    def mcpctl(
        self, *args: str, env: dict[str, str] | None = None, shown: str = ""
    ) -> subprocess.CompletedProcess[str]:
        """Run mcpctl as the tutorial shows it: the command, then its output."""
        _say(f"$ {shown}mcpctl {shlex.join(args)}")
        try:
            result = subprocess.run(
                [str(BIN / "mcpctl"), *args],
                env={**self.env, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=STEP_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise DemoFailed(
                f"`mcpctl {shlex.join(args)}` did not finish within {STEP_TIMEOUT:g}s"
            ) from None
        output = result.stdout.rstrip("\n")
        if output:
            _say(output)
        _say()
        if result.returncode != 0:
            raise DemoFailed(f"`mcpctl {shlex.join(args)}` failed (exit code {result.returncode})")
        return result

    def status(self) -> dict[str, Any]:
        """The demo server's status, quietly (for waiting, not for showing)."""
        result = subprocess.run(
            [str(BIN / "mcpctl"), "status", SERVER, "--json"],
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT,
            check=False,
        )
        if result.returncode != 0:
            raise DemoFailed(f"`mcpctl status {SERVER} --json` failed: {result.stderr.strip()}")
        servers = json.loads(result.stdout)["servers"]
        return dict(servers[0])

    def wait_for(self, *states: str) -> dict[str, Any]:
        """Until the server leaves the passing states, then its status, which must be one of
        `states`."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while True:
            status = self.status()
            if status["state"] not in ("connecting", "authorizing"):
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if status["state"] not in states:
            error = f": {status['error']}" if status.get("error") else ""
            raise DemoFailed(
                f"the server {SERVER!r} is {status['state']}{error}, not {' or '.join(states)}"
            )
        return status

    # --- The tutorial -------------------------------------------------------------------------

    def run(self) -> None:
        _say("mcpd demo: the whole path on this machine, with no account anywhere.")
        _say()
        self.start_server()
        _say(f"Started a demo MCP server at {self.url}, protected by OAuth, with its own")
        _say("authorization server (the official MCP Python SDK's). Its demo user approves")
        _say("every sign-in at once.")
        self.start_daemon()
        _say(f"Started mcpd in {self.root}, with its own config, token store and socket,")
        _say(f"and one server in its config: [servers.{SERVER}] url = {json.dumps(self.url)}.")
        _say()

        self.wait_for("needs_auth")
        _say("The server answers 401, so mcpd waits for a sign-in:")
        self.mcpctl("status")

        browser = f"{shlex.quote(sys.executable)} -m mcpd.demo.browser %s"
        _say("Sign in. mcpd discovers the authorization server, registers itself as a client,")
        _say("and opens the browser; BROWSER is set to a headless one here, which follows the")
        _say("redirects back to mcpd's loopback listener as if you had clicked 'allow':")
        self.mcpctl(
            "auth",
            SERVER,
            env={"BROWSER": browser},
            shown="BROWSER='python -m mcpd.demo.browser %s' ",
        )

        status = self.wait_for("connected")
        if status.get("access_expires_at") is None:
            raise DemoFailed("the server is connected but mcpd shows no token expiry")
        _say("mcpd stored the tokens, encrypted, and connected; every editor shares them:")
        self.mcpctl("status")

        tools = self.mcpctl("tools", SERVER)
        if not re.search(r"^echo\b", tools.stdout, re.MULTILINE):
            raise DemoFailed(f"`mcpctl tools {SERVER}` does not list the tool echo")

        called = self.mcpctl("call", SERVER, "echo", ECHO_ARGUMENTS)
        if "hello from mcpd" not in called.stdout:
            raise DemoFailed("the echo tool did not answer 'hello from mcpd'")
        self.mcpctl("call", SERVER, "time")

        self.mcpctl("shutdown")
        assert self.daemon is not None
        try:
            code = self.daemon.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise DemoFailed(f"mcpd did not stop within {STOP_TIMEOUT:g}s") from None
        if code != 0:
            raise DemoFailed(f"mcpd exited with {code}:\n" + _tail(self.daemon_log))

    def stop(self) -> None:
        """Stop whatever still runs: the daemon (asked first), then the server."""
        if self.daemon is not None and self.daemon.poll() is None:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                subprocess.run(
                    [str(BIN / "mcpctl"), "shutdown"],
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=5,
                    check=False,
                )
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.daemon.wait(timeout=5)
        _stop(self.daemon)
        _stop(self.server)
        if self.notify is not None:
            self.notify.close()

    def logs(self) -> str:
        return (
            f"  demo server log ({self.server_log.name}):\n{_tail(self.server_log)}\n"
            f"  mcpd log ({self.daemon_log.name}):\n{_tail(self.daemon_log)}"
        )


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    if importlib.util.find_spec("mcp") is None:
        print("mcpd demo needs the demo extra: pip install 'mcpd[demo]'", file=sys.stderr)
        return 1
    # SIGTERM cleans up as Ctrl-C does.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="mcpd-demo-"))
    demo = Demo(root)
    try:
        try:
            demo.run()
        finally:
            demo.stop()
    except DemoFailed as exc:
        print(f"mcpd demo failed: {exc}\n{demo.logs()}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("\nmcpd demo interrupted; everything it started is stopped and removed.", flush=True)
        return 130
    finally:
        shutil.rmtree(root, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous)
    _say(f"Every step worked ({time.monotonic() - started:.1f}s). The demo server is stopped")
    _say(f"and {root} is removed.")
    return 0
