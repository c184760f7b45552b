"""The MCP conformance suite's client, driving the real product.

    conformance client --command "python tests/conformance/client.py" --scenario NAME

The suite appends its test server's URL. This starts a real `mcpd` in a
private XDG tree with that URL as its one server, waits for it to connect,
lists the tools with `mcpctl tools`, calls the first one with `mcpctl call`
(arguments made from its input schema), shuts the daemon down (which ends the
session with DELETE) and exits 0 only if every step worked. Nothing goes
around the daemon.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
SERVER = "conformance"
DEADLINE_SECONDS = 30.0


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


class Daemon:
    def __init__(self, root: Path, url: str) -> None:
        (root / "run").mkdir(mode=0o700)
        config = root / "config" / "mcpd" / "config.toml"
        config.parent.mkdir(parents=True)
        config.write_text(f'[servers.{SERVER}]\nurl = "{url}"\n')
        self.env = {
            **os.environ,
            "HOME": str(root),
            "XDG_CONFIG_HOME": str(root / "config"),
            "XDG_STATE_HOME": str(root / "state"),
            "XDG_RUNTIME_DIR": str(root / "run"),
        }
        self.env.pop("MCPD_SOCKET", None)
        self.env.pop("MCPD_CONFIG", None)
        notify_path = root / "notify.sock"
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(notify_path))
        notify.settimeout(DEADLINE_SECONDS)
        self.process = subprocess.Popen(
            [str(BIN / "mcpd"), "--log-level", "debug"],
            env={**self.env, "NOTIFY_SOCKET": str(notify_path)},
            stdin=subprocess.DEVNULL,
        )
        with notify:
            while b"READY=1" not in notify.recv(4096).split(b"\n"):
                pass

    def mcpctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(BIN / "mcpctl"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=DEADLINE_SECONDS,
            check=False,
        )
        print(f"$ mcpctl {' '.join(args)}\n{result.stdout}{result.stderr}", end="", flush=True)
        return result

    def wait_connected(self) -> dict[str, Any]:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while True:
            status = json.loads(self.mcpctl("status", SERVER, "--json").stdout)["servers"][0]
            if status["state"] == "connected" or time.monotonic() > deadline:
                return dict(status)
            time.sleep(0.1)

    def stop(self) -> int:
        self.mcpctl("shutdown")
        return self.process.wait(timeout=DEADLINE_SECONDS)


def main(url: str) -> int:
    print(f"scenario {os.environ.get('MCP_CONFORMANCE_SCENARIO', '?')} against {url}", flush=True)
    with tempfile.TemporaryDirectory(prefix="mcpd-conformance-") as root:
        daemon = Daemon(Path(root), url)
        try:
            status = daemon.wait_connected()
            if status["state"] != "connected":
                print(f"mcpd did not connect: {status}", file=sys.stderr)
                return 1
            listed = daemon.mcpctl("tools", SERVER, "--json")
            if listed.returncode != 0:
                return 1
            tools = json.loads(listed.stdout)["tools"]
            if tools:
                tool = tools[0]
                arguments = arguments_for(tool.get("inputSchema") or {})
                called = daemon.mcpctl("call", SERVER, tool["name"], json.dumps(arguments))
                if called.returncode != 0:
                    return 1
        finally:
            code = daemon.stop()
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[-1]))
