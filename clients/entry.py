"""mcpctl's entry point.

`mcpctl stdio [--socket PATH] NAME`, which every editor launches at each of its
starts, goes straight to the bridge: argparse, its imports (gettext, shutil)
and mcpctl's command modules cost that start 8 ms of 130 here. Any other
command line, including another spelling of this one (`--socket=PATH`, an
option after NAME, `--help`), goes to the whole CLI (clients/cli.py), which
reads a plain one the same way (tests/test_cli.py checks it).
"""

from __future__ import annotations

import sys


def plain_stdio(args: list[str]) -> tuple[str, str | None] | None:
    """NAME and the socket (or None) of a plain `stdio` command line; None for
    anything else, which is then argparse's to read."""
    match args:
        case ["stdio", name] if not name.startswith("-"):
            return name, None
        case ["stdio", "--socket", socket, name] if not (
            socket.startswith("-") or name.startswith("-")
        ):
            return name, socket
    return None


def main(argv: list[str] | None = None) -> int:
    # mcpctl is the standard library and msgspec (and tomlkit, to edit
    # config.toml). msgspec imports typing_extensions when it is installed (it
    # is: anyio needs it) for types mcpctl never uses, and without it takes the
    # same names from typing: 20 ms of every start here. None in sys.modules
    # makes an import fail as if the module were absent (tests/test_cli.py
    # imports every module of mcpctl so).
    sys.modules.setdefault("typing_extensions", None)  # type: ignore[arg-type]
    args = sys.argv[1:] if argv is None else argv
    stdio = plain_stdio(args)
    if stdio is not None:
        from .bridge import run

        return run(*stdio)
    from .cli import main as run_command_line

    return run_command_line(args)
