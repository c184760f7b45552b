"""The session's secrets scan (tests/leakcheck.py, conftest.py) can fail.

A scan that finds nothing proves something only if it would have found a
leak: here it is run, as the real conftest.py runs it, on a small pytest
session of its own that leaks two secrets, one into a daemon's log and one
into a test's captured output. That session must fail, name both places, and
print neither secret.
"""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from leakcheck import _Matcher

TESTS = Path(__file__).parent

LEAKING = """
import os
import leakcheck

def test_a_daemon_log_leaks(mcpd_env):
    leakcheck.register("access token", os.environ["CANARY_LOG"])
    leakcheck.register("refresh token", os.environ["CANARY_OUTPUT"])
    mcpd_env.root.mkdir(parents=True, exist_ok=True)
    (mcpd_env.root / "mcpd.log").write_text(
        "level=info msg=refreshed token=" + os.environ["CANARY_LOG"] + "\\n"
    )

def test_the_output_leaks():
    print("the refresh token is", os.environ["CANARY_OUTPUT"])
"""

CLEAN = """
import os
import leakcheck

def test_nothing_leaks(mcpd_env):
    leakcheck.register("access token", os.environ["CANARY_LOG"])
    mcpd_env.root.mkdir(parents=True, exist_ok=True)
    (mcpd_env.root / "mcpd.log").write_text("level=info msg=refreshed\\n")
    print("nothing to see")
"""


# The session as one process, and as pytest-xdist workers (how the README's
# test command runs it), whose registrations the controller scans.
SESSIONS = pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one process", "workers"])


def run_session(
    tmp_path: Path, test_module: str, canaries: dict[str, str], workers: list[str]
) -> tuple[int, str]:
    (tmp_path / "conftest.py").write_text((TESTS / "conftest.py").read_text())
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    (tmp_path / "test_inner.py").write_text(test_module)
    result = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-q", *workers),
            *(f"--basetemp={tmp_path / 'base'}", "test_inner.py"),
        ],
        cwd=tmp_path,
        env={**os.environ, **canaries, "PYTHONPATH": str(TESTS)},
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


@pytest.mark.timeout(60)
@SESSIONS
def test_a_leak_fails_the_session_naming_where_never_what(tmp_path, workers):
    canaries = {
        "CANARY_LOG": secrets.token_urlsafe(32),
        "CANARY_OUTPUT": secrets.token_urlsafe(32),
    }
    code, output = run_session(tmp_path, LEAKING, canaries, workers)
    assert code == 1, output
    assert "2 passed" in output  # the tests pass; the scan fails the run
    assert "SECRETS LEAKED" in output
    assert "home/mcpd.log: 1 x access token" in output, output
    assert "test_the_output_leaks: Captured stdout call: 1 x refresh token" in output, output
    # Where in the file, with the secret masked.
    assert "msg=refreshed token=<access token>" in output, output
    assert "the refresh token is <refresh token>" in output, output
    shown = [name for name, canary in canaries.items() if canary in output]
    assert not shown  # (compared outside the assert, which would print them)


@pytest.mark.timeout(60)
@SESSIONS
def test_a_clean_session_passes_and_says_what_it_scanned(tmp_path, workers):
    canaries = {"CANARY_LOG": secrets.token_urlsafe(32)}
    code, output = run_session(tmp_path, CLEAN, canaries, workers)
    assert code == 0, output
    assert "SECRETS LEAKED" not in output
    assert "1  secrets searched for in mcpd's output (none found)" in output, output
    assert "files of mcpd output scanned" in output


def test_the_matcher_finds_secrets_anywhere_and_nothing_else():
    token = secrets.token_urlsafe(32)
    code = secrets.token_hex(18)
    short = "tok-linear"
    matcher = _Matcher({token: "access token", code: "authorization code", short: "x"})
    texts = {
        token.encode(): {"access token": 1},
        b"Bearer " + token.encode() + b"\n": {"access token": 1},
        # Inside a longer run of the characters secrets are made of, at each end.
        b"abc" + token.encode() + b"def": {"access token": 1},
        b"x=" + code.encode() + token.encode() + b"&": {"access token": 1, "authorization code": 1},
        token.encode() + token.encode(): {"access token": 2},
        b'{"t": "' + short.encode() + b'"}': {"x": 1},
        # Near misses are not secrets.
        token[:-1].encode(): {},
        token[1:].encode(): {},
        b"tok-linea r": {},
        base64.b64encode(token.encode()): {},
        b"": {},
    }
    for text, expected in texts.items():
        assert matcher.find(text) == Counter(expected), text


def test_the_context_masks_every_secret_in_it():
    token, other = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
    matcher = _Matcher({token: "access token", other: "refresh token"})
    text = f"a=1 token={token} next={other} tail".encode()
    # 40 bytes either side of the first one; a secret within them is masked too.
    assert matcher.context(text) == "a=1 token=<access token> next=<refresh token> t"


def test_the_matcher_with_nothing_registered_finds_nothing():
    assert _Matcher({}).find(b"anything at all") == Counter()
