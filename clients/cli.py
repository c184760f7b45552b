"""`mcpctl`: the command-line client of mcpd."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

import msgspec

from mcpd.protocol import (
    ReloadResult,
    RotateKeyResult,
    ServerStatus,
    StateChanged,
    StatusParams,
    StatusResult,
    SubscribeParams,
)

from .client import DaemonClient, DaemonError, DaemonUnavailable


def _ago_or_in(seconds: float) -> str:
    span = abs(seconds)
    if span < 90:
        text = f"{span:.0f}s"
    elif span < 90 * 60:
        text = f"{span / 60:.0f}m"
    elif span < 36 * 3600:
        text = f"{span / 3600:.1f}h"
    else:
        text = f"{span / 86400:.1f}d"
    return f"in {text}" if seconds >= 0 else f"{text} ago"


def token_column(server: ServerStatus, now: float) -> str:
    if server.access_expires_at is None:
        return "-"
    remaining = server.access_expires_at - now
    return f"expires {_ago_or_in(remaining)}" if remaining > 0 else "expired"


def render_table(servers: list[ServerStatus], now: float) -> str:
    if not servers:
        return "no servers configured (add [servers.NAME] tables to the config, then mcpctl reload)"
    rows = [("NAME", "STATE", "URL", "TOKEN")]
    rows += [(s.name, s.state, s.url or "-", token_column(s, now)) for s in servers]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = []
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)))
        lines[-1] += "  " + row[3]
        if index == 0:
            continue
        server = servers[index - 1]
        if server.error:
            retry = (
                f" (retry {_ago_or_in(server.next_retry_at - now)})"
                if server.next_retry_at is not None
                else ""
            )
            lines.append(f"  ! {server.error}{retry}")
    return "\n".join(line.rstrip() for line in lines)


def _print_json(value: Any) -> None:
    print(msgspec.json.format(msgspec.json.encode(value), indent=2).decode())


def cmd_status(client: DaemonClient, args: argparse.Namespace) -> int:
    result = msgspec.convert(client.request("status", StatusParams(args.name)), StatusResult)
    if args.json:
        _print_json(result)
    else:
        print(render_table(result.servers, time.time()))
    return 0


def cmd_reload(client: DaemonClient, args: argparse.Namespace) -> int:
    result = msgspec.convert(client.request("reload"), ReloadResult)
    changes = [
        f"{label}: {', '.join(names)}"
        for label, names in (
            ("added", result.added),
            ("removed", result.removed),
            ("restarted", result.restarted),
        )
        if names
    ]
    print("reloaded; " + ("; ".join(changes) if changes else "nothing changed"))
    return 0


def cmd_rotate_key(client: DaemonClient, args: argparse.Namespace) -> int:
    result = msgspec.convert(client.request("rotate_key"), RotateKeyResult)
    print(f"new key in use; {result.records} credential record(s) re-encrypted, old key retired")
    return 0


def cmd_watch(client: DaemonClient, args: argparse.Namespace) -> int:
    initial = msgspec.convert(
        client.request("subscribe", SubscribeParams(args.names or None)), StatusResult
    )
    if args.json:
        # JSON lines: the current status first, then one event per line.
        print(msgspec.json.encode(initial).decode(), flush=True)
    else:
        print(render_table(initial.servers, time.time()), flush=True)
    for event in client.events():
        if args.json:
            print(msgspec.json.encode(event).decode(), flush=True)
        elif event.name == "state":
            change = msgspec.convert(event.data, StateChanged)
            server = change.server
            detail = f": {server.error}" if server.error else ""
            print(f"{server.name}: {change.previous} -> {server.state}{detail}", flush=True)
        else:
            print(f"{event.name}: {event.data}", flush=True)
    return 0


def cmd_shutdown(client: DaemonClient, args: argparse.Namespace) -> int:
    client.request("shutdown")
    print("mcpd is shutting down")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mcpctl", description="Talk to the mcpd daemon.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    status = commands.add_parser("status", help="show the servers and their state")
    status.add_argument("name", nargs="?", help="only this server")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(run=cmd_status)

    commands.add_parser("reload", help="re-read the config file").set_defaults(run=cmd_reload)

    commands.add_parser(
        "rotate-key", help="encrypt the credential store with a new key"
    ).set_defaults(run=cmd_rotate_key)

    watch = commands.add_parser("watch", help="print state changes as they happen")
    watch.add_argument("names", nargs="*", metavar="NAME", help="only these servers")
    watch.add_argument("--json", action="store_true", help="one JSON event per line")
    watch.set_defaults(run=cmd_watch)

    commands.add_parser("shutdown", help="stop the daemon").set_defaults(run=cmd_shutdown)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    run: Callable[[DaemonClient, argparse.Namespace], int] = args.run
    try:
        with DaemonClient.connect() as client:
            return run(client, args)
    except DaemonUnavailable as exc:
        print(f"mcpctl: {exc}", file=sys.stderr)
        return 1
    except DaemonError as exc:
        print(f"mcpctl: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
