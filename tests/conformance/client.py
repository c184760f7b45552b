"""The MCP conformance suite's client, driving the real product.

    conformance client --command "python tests/conformance/client.py" --scenario NAME

The suite appends its test server's URL. This starts a real `mcpd` in a
private XDG tree with that URL as its one server, waits for it to connect (or
to ask for authorization), lists the tools with `mcpctl tools`, calls each
with `mcpctl call` (with the arguments the suite names in its context's
`toolCalls`, else arguments made from the tool's input schema), shuts the
daemon down (which ends the session with DELETE) and exits 0 only if every
step worked. Nothing goes around the daemon.

Authorization goes through `mcpctl auth`, with BROWSER set to
tests/conformance/browser.py, a headless browser that follows the
authorization server's redirect to the daemon's real loopback listener.
Whenever a step says the server wants authorization (none yet, or more
scope), the client signs in and tries again: at most three sign-ins in all. A
pre-registered client from MCP_CONFORMANCE_CONTEXT goes into the config; for
the client credentials scenarios (`auth/client-credentials-*`) with
`grant = "client_credentials"` and the secret, or the private key written to
a file of mode 0600 in the user's tree.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
BROWSER = Path(__file__).with_name("browser.py")
SERVER = "conformance"
DEADLINE_SECONDS = 30.0
# A directory to make each user's tree in, kept, instead of a temporary one.
USERS_VARIABLE = "MCPD_CONFORMANCE_USERS"
MAX_SIGN_INS = 3
# The Client ID Metadata Document URL the suite expects a CIMD client to use.
CLIENT_METADATA_URL = "https://conformance-test.local/client-metadata.json"


def _sample(schema: dict[str, Any]) -> Any:
    """A value that satisfies a (simple) JSON schema."""
    kind = schema.get("type")
    if "enum" in schema:
        return schema["enum"][0]
    if kind in ("number", "integer"):
        return 1
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "object":
        return arguments_for(schema)
    return "test"


def arguments_for(schema: dict[str, Any]) -> dict[str, Any]:
    properties = schema.get("properties") or {}
    required = schema.get("required") or list(properties)
    return {name: _sample(properties.get(name, {})) for name in required}


def suite_calls(context: str | None) -> dict[str, dict[str, Any]]:
    """The arguments the suite wants some tools called with (its `toolCalls`)."""
    given = json.loads(context) if context else {}
    calls = given.get("toolCalls") if isinstance(given, dict) else None
    return {
        call["name"]: call.get("arguments") or {}
        for call in calls or []
        if isinstance(call, dict) and isinstance(call.get("name"), str)
    }


def config_for(url: str, context: str | None, key_dir: Path | None = None) -> str:
    """The daemon's config: the server, with a pre-registered client if the suite
    gave one (a private key is written to `key_dir`)."""
    oauth = {"client_metadata_url": CLIENT_METADATA_URL}
    if context:
        given = json.loads(context)
        for key in ("client_id", "client_secret"):
            if isinstance(given.get(key), str):
                oauth[key] = given[key]
        pem = given.get("private_key_pem")
        if str(given.get("name", "")).startswith("auth/client-credentials") or pem:
            oauth["grant"] = "client_credentials"
            del oauth["client_metadata_url"]
        if isinstance(pem, str) and key_dir is not None:
            path = key_dir / "client-key.pem"
            with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
                f.write(pem)
            oauth["private_key_file"] = str(path)
    table = ", ".join(f"{key} = {json.dumps(value)}" for key, value in oauth.items())
    return (
        "[daemon]\ncallback_port = 0\n"
        f'[servers.{SERVER}]\nurl = "{url}"\ntimeout = 10\noauth = {{ {table} }}\n'
    )


class Daemon:
    def __init__(self, root: Path, url: str) -> None:
        # The sockets get a short directory of their own: a user's tree deep in
        # a test's temporary directory may be longer than a socket path can be.
        self.run_dir = Path(tempfile.mkdtemp(prefix="mcpd-run-"))
        config = root / "config" / "mcpd" / "config.toml"
        config.parent.mkdir(parents=True)
        config.write_text(config_for(url, os.environ.get("MCP_CONFORMANCE_CONTEXT"), config.parent))
        self.sign_ins = 0
        self.env = {
            **os.environ,
            "HOME": str(root),
            "XDG_CONFIG_HOME": str(root / "config"),
            "XDG_STATE_HOME": str(root / "state"),
            "XDG_RUNTIME_DIR": str(self.run_dir),
            "BROWSER": f"{sys.executable} {BROWSER} %s",
        }
        self.env.pop("MCPD_SOCKET", None)
        self.env.pop("MCPD_CONFIG", None)
        notify_path = self.run_dir / "notify.sock"
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(notify_path))
        notify.settimeout(0.2)
        self.root = root
        with (root / "mcpd.log").open("ab") as log:
            self.process = subprocess.Popen(
                [str(BIN / "mcpd"), "--log-level", "debug"],
                env={**self.env, "NOTIFY_SOCKET": str(notify_path)},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + DEADLINE_SECONDS
        with notify:
            while True:
                with contextlib.suppress(TimeoutError):
                    if b"READY=1" in notify.recv(4096).split(b"\n"):
                        return
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.process.kill()
                    shutil.rmtree(self.run_dir, ignore_errors=True)
                    log = (root / "mcpd.log").read_text(errors="replace")
                    raise SystemExit(f"mcpd did not become ready:\n{log}")

    def mcpctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(BIN / "mcpctl"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=DEADLINE_SECONDS,
            check=False,
        )
        transcript = f"$ mcpctl {' '.join(args)}\n{result.stdout}{result.stderr}"
        print(transcript, end="", flush=True)
        with (self.root / "mcpctl.log").open("a") as log:
            log.write(transcript)
        return result

    def wait_settled(self) -> dict[str, Any]:
        """The server's status once it connected, wants authorization, or failed."""
        deadline = time.monotonic() + DEADLINE_SECONDS
        while True:
            status = json.loads(self.mcpctl("status", SERVER, "--json").stdout)["servers"][0]
            if status["state"] not in ("connecting", "authorizing"):
                return dict(status)
            if time.monotonic() > deadline:
                return dict(status)
            time.sleep(0.1)

    def sign_in(self) -> bool:
        if self.sign_ins >= MAX_SIGN_INS:
            print(f"giving up after {MAX_SIGN_INS} sign-ins", flush=True)
            return False
        self.sign_ins += 1
        return self.mcpctl("auth", SERVER).returncode == 0

    def with_sign_in(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run mcpctl; when the server wants authorization, sign in and run it again."""
        while True:
            result = self.mcpctl(*args)
            if result.returncode == 0 or "mcpctl auth" not in result.stderr:
                return result
            if not self.sign_in():
                return result

    def stop(self) -> int:
        self.mcpctl("shutdown")
        try:
            return self.process.wait(timeout=DEADLINE_SECONDS)
        finally:
            shutil.rmtree(self.run_dir, ignore_errors=True)


def main(url: str) -> int:
    print(f"scenario {os.environ.get('MCP_CONFORMANCE_SCENARIO', '?')} against {url}", flush=True)
    # The tests keep each user's tree, for the session's secrets scan.
    users = os.environ.get(USERS_VARIABLE)
    with (
        contextlib.nullcontext(tempfile.mkdtemp(prefix="user-", dir=users))
        if users
        else tempfile.TemporaryDirectory(prefix="mcpd-conformance-")
    ) as root:
        daemon = Daemon(Path(root), url)
        try:
            if daemon.wait_settled()["state"] == "needs_auth" and not daemon.sign_in():
                return 1
            status = daemon.wait_settled()
            if status["state"] != "connected":
                print(f"mcpd did not connect: {status}", file=sys.stderr)
                return 1
            listed = daemon.with_sign_in("tools", SERVER, "--json")
            if listed.returncode != 0:
                return 1
            tools = json.loads(listed.stdout)["tools"]
            given = suite_calls(os.environ.get("MCP_CONFORMANCE_CONTEXT"))
            failed = 0
            for tool in tools:
                arguments = given.get(tool["name"]) or arguments_for(tool.get("inputSchema") or {})
                called = daemon.with_sign_in("call", SERVER, tool["name"], json.dumps(arguments))
                failed += called.returncode != 0
            if failed:
                return 1
        finally:
            code = daemon.stop()
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[-1]))
