"""The official MCP conformance suite against the product's real path.

The suite (npm @modelcontextprotocol/conformance, on Node 22) starts its test
server per scenario and runs tests/conformance/client.py, which drives a real
mcpd through mcpctl. A scenario passes only with no failure and no warning.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import leakcheck
import pytest
from real_peers import conformance_argv, conformance_client_command, conformance_next_argv

CLIENT = Path(__file__).parent / "conformance" / "client.py"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# The suite's results directory is the scenario's name and a timestamp.
RESULTS_STAMP = re.compile(r"-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-\d+Z$")


def run_suite(
    tmp_path: Path, *args: str, timeout: float, suite: list[str] | None = None
) -> tuple[int, str]:
    """Run the conformance suite (0.1.16 unless `suite` names another) with our
    client; its users' trees join the secrets scan."""
    users = tmp_path / "users"
    users.mkdir()
    command = conformance_client_command([sys.executable, str(CLIENT)])
    result = subprocess.run(
        [
            *(suite or conformance_argv()),
            "client",
            "--command",
            command,
            *args,
            "-o",
            str(tmp_path),
        ],
        env={**os.environ, "MCPD_CONFORMANCE_USERS": str(users)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    for root in users.iterdir():
        leakcheck.watch_root(root)
        leakcheck.register_store(
            root / "config" / "mcpd" / "mcpd.key", root / "state" / "mcpd" / "credentials"
        )
    return result.returncode, ANSI.sub("", result.stdout + result.stderr)


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "scenario", ["initialize", "tools_call", "sse-retry", "elicitation-sep1034-client-defaults"]
)
def test_conformance_scenario(scenario, tmp_path):
    returncode, output = run_suite(tmp_path, "--scenario", scenario, timeout=110)
    summary = re.search(r"Passed: (\d+)/(\d+), (\d+) failed, (\d+) warnings", output)
    assert summary is not None, output
    passed, total, failed, warnings = map(int, summary.groups())
    assert (failed, warnings) == (0, 0), output
    assert passed == total > 0, output
    assert returncode == 0, output
    assert "OVERALL: PASSED" in output


@pytest.mark.timeout(400)
@pytest.mark.parametrize(("suite", "scenarios"), [("auth", 14), ("backcompat", 2), ("draft", 3)])
def test_conformance_suite(suite, scenarios, tmp_path):
    """Every scenario of the suite, run by the suite itself (in parallel)."""
    returncode, output = run_suite(tmp_path, "--suite", suite, timeout=380)
    total = re.search(r"Total: (\d+) passed, (\d+) failed, (\d+) warnings", output)
    assert total is not None, output
    passed, failed, warnings = map(int, total.groups())
    assert (failed, warnings) == (0, 0), output
    assert passed > 0, output
    assert returncode == 0, output
    outcomes = re.findall(r"^([✓✗]) (\S+):", output, re.MULTILINE)
    assert len(outcomes) == scenarios, output
    assert all(mark == "✓" for mark, _ in outcomes), output


# The 0.2 suite's frozen requirement sets: each revision's client scenarios
# (scored), plus extensions and later additions that are run but not scored.
# Of the unscored ones, the client credentials extension is one mcpd offers.
REQUIREMENTS = {"2025-11-25": 18, "2026-07-28": 32}
EXTENSIONS_OFFERED = ("auth/client-credentials-basic", "auth/client-credentials-jwt")


@pytest.mark.timeout(600)
@pytest.mark.parametrize("revision", sorted(REQUIREMENTS))
def test_conformance_requirements(revision, tmp_path):
    """`--requirements REVISION` of 0.2.0-alpha.12: every scored scenario passes
    with no failure and no warning, at that revision's wire."""
    _returncode, output = run_suite(
        tmp_path, "--requirements", revision, timeout=580, suite=conformance_next_argv()
    )
    summary = output.split("=== SUITE SUMMARY ===", 1)
    assert len(summary) == 2, output
    outcomes = dict(
        (name, (mark, int(failed)))
        for mark, name, failed in re.findall(
            r"^([✓✗]) (\S+): \d+ passed, (\d+) failed", summary[1], re.MULTILINE
        )
    )
    unscored = re.findall(r"^  [✓✗] (\S+) \(", summary[1], re.MULTILINE)
    scored = {name: outcome for name, outcome in outcomes.items() if name not in unscored}
    assert len(scored) == REQUIREMENTS[revision], output
    assert all(outcome == ("✓", 0) for outcome in scored.values()), output
    for name in EXTENSIONS_OFFERED:
        assert outcomes[name] == ("✓", 0), output
    assert f"Not scored for {revision}" in output
    # Each scored scenario's own record of its checks: none failed or warned.
    statuses = {
        RESULTS_STAMP.sub("", str(path.parent.relative_to(tmp_path))): {
            check["status"] for check in json.loads(path.read_text())
        }
        for path in tmp_path.glob("**/checks.json")
    }
    assert set(scored) <= set(statuses), sorted(statuses)
    for name in scored:
        assert not statuses[name] & {"FAILURE", "WARNING"}, (name, statuses[name])
