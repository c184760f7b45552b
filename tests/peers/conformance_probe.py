"""The least MCP client the conformance suite's client mode accepts, to prove
that the suite runs here — not a test of mcpd.

    conformance client --command "python tests/peers/conformance_probe.py" --scenario initialize

The suite appends its test server's URL to the command and names the scenario
in MCP_CONFORMANCE_SCENARIO. The probe does the handshake, lists the tools and
calls each `add_numbers` (the `tools_call` scenario's tool) with a=2, b=3.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from real_peers import RawMcp


def main() -> None:
    url = sys.argv[-1]
    print(f"scenario {os.environ.get('MCP_CONFORMANCE_SCENARIO')!r} at {url}")
    session = RawMcp(url)
    result = session.initialize()
    print(f"initialized: {result}")
    tools = session.result("tools/list", {}).get("tools", [])
    for tool in tools:
        if tool["name"] == "add_numbers":
            print(
                session.result("tools/call", {"name": "add_numbers", "arguments": {"a": 2, "b": 3}})
            )


if __name__ == "__main__":
    main()
