"""mcpd's benchmarks, each a ratio against a floor measured in the same run.

    .venv/bin/python bench/run.py [--quick] [--json FILE]

1. control plane: the `status` round trip over the daemon's real socket,
   against a raw Unix-socket echo of the same frames in this process;
2. CLI start: `mcpctl status` as a whole process, against
   `python -c "import msgspec"`;
3. data plane (one editor): `tools/call` of the TypeScript SDK example's
   `greet` through `mcpctl stdio` and the daemon, against the same driver
   speaking Streamable HTTP to the server directly.

Every figure is a median over repeated runs with the 99th percentile beside
it. The real peers come from tests/peers/install.sh.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from bench_common import BIN, daemon_env, summary, timed  # noqa: E402
from harness import McpdEnv, RawClient  # noqa: E402
from real_peers import simple_streamable_http  # noqa: E402

from mcpd.protocol import FrameDecoder, Request, encode_frame  # noqa: E402

# --- 1. control plane -------------------------------------------------------------


ECHO_SERVER = """
import socket, struct, sys
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(sys.argv[1])
listener.listen(1)
response = bytes.fromhex(sys.argv[2])
print("ready", flush=True)
conn, _ = listener.accept()
buffer = b""
while data := conn.recv(65536):
    buffer += data
    while len(buffer) >= 4 and len(buffer) >= 4 + struct.unpack(">I", buffer[:4])[0]:
        buffer = buffer[4 + struct.unpack(">I", buffer[:4])[0]:]
        conn.sendall(response)
"""


@contextmanager
def echo_server(path: str, response: bytes) -> Iterator[None]:
    """The floor: another process that reads a frame and answers with a frame of the
    status's size over a Unix socket, doing nothing else (as the daemon is another
    process, so is the floor)."""
    process = subprocess.Popen(
        [sys.executable, "-c", ECHO_SERVER, path, response.hex()], stdout=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        process.stdout.readline()
        yield
    finally:
        process.kill()
        process.wait()


def control_plane(runs: int) -> dict[str, Any]:
    with daemon_env() as (env, _daemon):
        client = RawClient(env.socket)
        client.hello()
        client.request("status")
        response_frame = encode_frame(client.receive())

        def status() -> None:
            client.request("status")
            client.receive()

        timed(status, 200)  # warm up
        measured = timed(status, runs)
        floor_path = str(env.root / "floor.sock")
        with echo_server(floor_path, response_frame):
            raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            raw.connect(floor_path)
            decoder = FrameDecoder()
            probe = encode_frame(Request(2, "status"))

            def echo() -> None:
                raw.sendall(probe)
                while decoder.next_frame() is None:
                    decoder.feed(raw.recv(65536))

            timed(echo, 200)
            floor = timed(echo, runs)
            raw.close()
        client.close()
    result = {"status": summary(measured), "floor": summary(floor)}
    result["ratio"] = result["status"]["median_ms"] / result["floor"]["median_ms"]
    result["goal"] = "at most 3x"
    return result


# --- 2. CLI start ---------------------------------------------------------------------


def cli_start(runs: int) -> dict[str, Any]:
    with daemon_env() as (env, _daemon):

        def mcpctl() -> None:
            subprocess.run(
                [str(BIN / "mcpctl"), "status"], env=env.vars, capture_output=True, check=True
            )

        def floor() -> None:
            subprocess.run(
                [sys.executable, "-c", "import msgspec"], capture_output=True, check=True
            )

        timed(mcpctl, 3)
        timed(floor, 3)
        measured, baseline = [], []
        for _ in range(runs):  # interleaved, so that drift hits both alike
            measured += timed(mcpctl, 1)
            baseline += timed(floor, 1)
    result = {"mcpctl_status": summary(measured), "floor": summary(baseline)}
    result["ratio"] = result["mcpctl_status"]["median_ms"] / result["floor"]["median_ms"]
    result["goal"] = "at most 1.5x"
    return result


# --- 3. data plane, one editor -------------------------------------------------------------

CALL = {"name": "greet", "arguments": {"name": "bench"}}


class DirectClient:
    """The editor-like driver speaking Streamable HTTP itself (one connection)."""

    def __init__(self, url: str) -> None:
        parts = url.split("/", 3)
        self.host, self.path = parts[2], "/" + parts[3]
        self.conn = http.client.HTTPConnection(self.host, timeout=10)
        self.session: str | None = None
        self.next_id = 0
        self.call(
            "initialize",
            {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "bench", "version": "1"},
            },
        )
        self.notify("notifications/initialized")

    def _headers(self) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        }
        if self.session:
            headers["Mcp-Session-Id"] = self.session
            headers["MCP-Protocol-Version"] = "2025-11-25"
        return headers

    def notify(self, method: str) -> None:
        self.conn.request(
            "POST", self.path, json.dumps({"jsonrpc": "2.0", "method": method}), self._headers()
        )
        self.conn.getresponse().read()

    def call(self, method: str, params: dict[str, Any]) -> Any:
        self.next_id += 1
        body = json.dumps(
            {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}
        )
        self.conn.request("POST", self.path, body, self._headers())
        response = self.conn.getresponse()
        self.session = response.getheader("mcp-session-id") or self.session
        data = response.read().decode()
        if response.getheader("content-type", "").startswith("text/event-stream"):
            lines = [line[5:].strip() for line in data.splitlines() if line.startswith("data:")]
            return json.loads(lines[-1])
        return json.loads(data)


class BridgeClient:
    """The same driver, through `mcpctl stdio NAME`."""

    def __init__(self, env: McpdEnv, name: str) -> None:
        self.process = subprocess.Popen(
            [str(BIN / "mcpctl"), "stdio", name],
            env=env.vars,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.next_id = 0
        self.call(
            "initialize",
            {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "bench", "version": "1"},
            },
        )
        self._write({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def _write(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message).encode() + b"\n")
        self.process.stdin.flush()

    def call(self, method: str, params: dict[str, Any]) -> Any:
        self.next_id += 1
        self._write({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        assert self.process.stdout is not None
        while True:
            message = json.loads(self.process.stdout.readline())
            if message.get("id") == self.next_id:
                return message

    def rss_kb(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(
            next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
        )

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=10)


def data_plane(runs: int, log_dir: Path) -> dict[str, Any]:
    with simple_streamable_http(log_dir) as peer:
        url = peer.url.replace("127.0.0.1", "localhost")
        direct = DirectClient(url)
        timed(lambda: direct.call("tools/call", CALL), 100)
        with daemon_env(f'[servers.ts]\nurl = "{url}"\n') as (env, _daemon):
            bridge = BridgeClient(env, "ts")
            timed(lambda: bridge.call("tools/call", CALL), 100)
            via_bridge, baseline = [], []
            for _ in range(runs // 10):  # interleaved batches
                via_bridge += timed(lambda: bridge.call("tools/call", CALL), 10)
                baseline += timed(lambda: direct.call("tools/call", CALL), 10)
            rss = bridge.rss_kb()
            bridge.close()
    result = {"through_mcpd": summary(via_bridge), "direct": summary(baseline)}
    result["added_p50_ms"] = result["through_mcpd"]["median_ms"] - result["direct"]["median_ms"]
    result["bridge_rss_mb"] = rss / 1024
    result["goals"] = "added at most 0.5 ms at p50; bridge at most 20 MB RSS"
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs (a smoke check)")
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "figures.json")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mcpd-bench-peers-") as logs:
        figures["control_plane"] = control_plane(5000 // scale)
        figures["cli_start"] = cli_start(40 // min(scale, 4))
        figures["data_plane_1_editor"] = data_plane(2000 // scale, Path(logs))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=2))
    print(f"{'benchmark':<28}{'measured p50/p99 ms':>24}{'floor p50/p99 ms':>22}{'result':>22}")
    cp, cli, dp = figures["control_plane"], figures["cli_start"], figures["data_plane_1_editor"]
    rows = [
        ("control plane: status", cp["status"], cp["floor"], f"{cp['ratio']:.2f}x (goal <= 3x)"),
        (
            "CLI start: mcpctl status",
            cli["mcpctl_status"],
            cli["floor"],
            f"{cli['ratio']:.2f}x (goal <= 1.5x)",
        ),
        (
            "tools/call, 1 editor",
            dp["through_mcpd"],
            dp["direct"],
            f"+{dp['added_p50_ms']:.2f} ms (goal <= 0.5)",
        ),
    ]
    for name, measured, floor, result in rows:
        print(
            f"{name:<28}{measured['median_ms']:>12.3f}/{measured['p99_ms']:<11.3f}"
            f"{floor['median_ms']:>10.3f}/{floor['p99_ms']:<11.3f}{result:>22}"
        )
    print(f"bridge RSS: {dp['bridge_rss_mb']:.1f} MB (goal <= 20 MB)")
    print(f"figures: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
