"""Editors' MCP configuration files: find them, read their remote servers, and move
those servers onto mcpd (`mcpctl editors`, `import`, `install`, `uninstall`).

Standard library only (tomlkit, for Codex's TOML, and mcpd's config editor are
imported where they write). `register` adds the commands to mcpctl's parser
without importing the rest of the package, so that `mcpctl stdio` and `mcpctl
status` start as fast as before.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

# The editors' ids, as formats.EDITORS lists them (a test checks they agree).
EDITOR_IDS = (
    "claude-code",
    "claude-desktop",
    "cursor",
    "vscode",
    "windsurf",
    "zed",
    "codex",
    "opencode",
    "gemini",
    "qwen",
    "copilot",
)


def _lazy(name: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from . import commands

        command: Callable[[argparse.Namespace], int] = getattr(commands, name)
        return command(args)

    return run


COMMANDS = ("editors", "import", "install", "uninstall")


def register(commands: Any) -> None:
    """Add the commands to mcpctl's subparsers; each sets `run_alone` (no daemon needed)."""
    ids = ", ".join(EDITOR_IDS)
    editors = commands.add_parser(
        "editors", help="the editors here, their MCP files, and which servers go through mcpd"
    )
    editors.add_argument("--json", action="store_true", help="machine-readable output")
    editors.set_defaults(run=None, run_alone=_lazy("cmd_editors"))

    imported = commands.add_parser(
        "import", help="add the editors' remote MCP servers to mcpd's config"
    )
    imported.add_argument("editors", nargs="*", metavar="EDITOR", help=f"only these ({ids})")
    imported.add_argument("--dry-run", action="store_true", help="say what would be added")
    imported.set_defaults(run=None, run_alone=_lazy("cmd_import"))

    installed = commands.add_parser(
        "install", help="make an editor reach mcpd's servers through `mcpctl stdio`"
    )
    installed.add_argument("editor", metavar="EDITOR", help=ids)
    installed.add_argument("names", nargs="*", metavar="NAME", help="only these servers")
    installed.add_argument("--dry-run", action="store_true", help="say what would change")
    installed.set_defaults(run=None, run_alone=_lazy("cmd_install"))

    uninstalled = commands.add_parser(
        "uninstall", help="put back what `mcpctl install EDITOR` replaced"
    )
    uninstalled.add_argument("editor", metavar="EDITOR", help=ids)
    uninstalled.set_defaults(run=None, run_alone=_lazy("cmd_uninstall"))
