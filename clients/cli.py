"""`mcpctl`: the command-line client of mcpd."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from mcpd.protocol import (
    AuthParams,
    AuthPasteParams,
    AuthStarted,
    DeviceSignIn,
    LogoutParams,
    LogoutResult,
    ReloadResult,
    RotateKeyResult,
    ServerParams,
    ServerStatus,
    SignInMethod,
    StateChanged,
    StatusParams,
    StatusResult,
    SubscribeParams,
    TokenResult,
    ToolsResult,
)

from .client import DaemonClient, DaemonError, DaemonUnavailable
from .editors import COMMANDS as EDITOR_COMMANDS
from .editors import register as register_editor_commands
from .manage import COMMANDS as MANAGE_COMMANDS
from .manage import add_commands, auth_all, logout_choose
from .remote import COMMANDS as REMOTE_COMMANDS
from .remote import register as register_remote_commands


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
    text = f"expires {_ago_or_in(remaining)}" if remaining > 0 else "expired"
    details = []
    if server.last_refresh_at is not None:
        details.append(f"refreshed {_ago_or_in(server.last_refresh_at - now)}")
    if server.next_refresh_at is not None:
        details.append(f"next refresh {_ago_or_in(server.next_refresh_at - now)}")
    return f"{text} ({', '.join(details)})" if details else text


def _token_cell(server: ServerStatus, now: float) -> str:
    """The TOKEN column, naming a device sign-in where the server offers one."""
    shown = token_column(server, now)
    if not server.device_sign_in:
        return shown
    return "device sign-in offered" if shown == "-" else f"{shown}; device sign-in offered"


def render_table(servers: list[ServerStatus], now: float) -> str:
    if not servers:
        return "no servers configured (add one with: mcpctl add NAME URL)"
    rows = [("NAME", "STATE", "URL", "TOKEN")]
    rows += [(s.name, s.state, s.url or "-", _token_cell(s, now)) for s in servers]
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
        return 0
    if client.elsewhere:
        print(f"mcpd on {client.elsewhere}, reached through {client.path}")
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
            ("updated", result.updated),
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


def cmd_tools(client: DaemonClient, args: argparse.Namespace) -> int:
    result = msgspec.convert(client.request("tools", ServerParams(args.name)), ToolsResult)
    if args.json:
        _print_json(result)
        return 0
    if not result.tools:
        print(f"{args.name} offers no tools")
        return 0
    width = max(len(str(tool.get("name", ""))) for tool in result.tools)
    for tool in result.tools:
        lines = str(tool.get("description") or "").strip().splitlines()
        name = str(tool.get("name", "")).ljust(width)
        print(f"{name}  {lines[0] if lines else ''}".rstrip())
    return 0


def _summarise(item: dict[str, Any]) -> str:
    kind = item.get("type")
    if kind == "text":
        return str(item.get("text", ""))
    if kind in ("image", "audio"):
        size = len(str(item.get("data", ""))) * 3 // 4
        return f"[{kind}: {item.get('mimeType', '?')}, about {size} bytes]"
    if kind == "resource":
        resource = item.get("resource")
        uri = resource.get("uri", "?") if isinstance(resource, dict) else "?"
        text = resource.get("text") if isinstance(resource, dict) else None
        return str(text) if isinstance(text, str) else f"[resource: {uri}]"
    if kind == "resource_link":
        return f"[link: {item.get('uri', '?')}]"
    return f"[{kind} content]"


def _defaults_noted(server: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Answer elicitation with the schema's defaults, saying so on stderr."""
    from .elicit import with_defaults

    def answer(params: dict[str, Any]) -> dict[str, Any]:
        reply = with_defaults(params)
        print(
            f"mcpctl: {server} asked: {params.get('message', '')!r}; no terminal to ask on, "
            + (
                "accepted with the schema's defaults"
                if reply["action"] == "accept"
                else "declined (a URL, or a required field without a default)"
            ),
            file=sys.stderr,
        )
        return reply

    return answer


def cmd_call(client: DaemonClient, args: argparse.Namespace) -> int:
    try:
        arguments = msgspec.json.decode(args.arguments) if args.arguments else {}
    except msgspec.DecodeError as exc:
        print(f"mcpctl: the arguments are not valid JSON: {exc}", file=sys.stderr)
        return 2
    if not isinstance(arguments, dict):
        print(
            'mcpctl: the arguments must be a JSON object, e.g. \'{"text": "hi"}\'', file=sys.stderr
        )
        return 2
    from mcpd import __version__

    from .call import SERVER_UNAVAILABLE, CallFailed, ToolCall
    from .elicit import Terminal

    # The call goes as an editor's would, so that the server's elicitation
    # reaches this command (clients/call.py): the user answers on a terminal,
    # the schema's defaults elsewhere.
    elicit = Terminal(args.name).answer if sys.stdin.isatty() else _defaults_noted(args.name)
    info = {"name": "mcpctl", "version": __version__}
    try:
        result = ToolCall(client, args.name, elicit, info).call(args.tool, arguments)
    except CallFailed as exc:
        # -32001: the daemon's own word (the server is not connected, and why);
        # so is the refusal of a tool its config filters out (mcpd/upstream/toolfilter.py).
        mcpd_said = exc.code == SERVER_UNAVAILABLE or "by mcpd's config" in str(exc)
        prefix = "" if mcpd_said else "the server answered: "
        print(f"mcpctl: {prefix}{exc}", file=sys.stderr)
        return 1
    failed = bool(result.get("isError"))
    if args.json:
        _print_json(result)
        return 1 if failed else 0
    content = [item for item in result.get("content") or [] if isinstance(item, dict)]
    text = "\n".join(_summarise(item) for item in content)
    if not content and "structuredContent" in result:
        text = msgspec.json.format(
            msgspec.json.encode(result["structuredContent"]), indent=2
        ).decode()
    print(text, file=sys.stderr if failed else sys.stdout)
    return 1 if failed else 0


def sign_in_method(
    args: argparse.Namespace,
    environ: Mapping[str, str],
    platform: str,
    stdin_tty: bool,
    daemon_elsewhere: bool = False,
) -> SignInMethod:
    """How `mcpctl auth` asks to sign in: with a code on another device for
    `--device`, and also wherever the authorization server offers that when no
    browser can open here (`--no-browser`, or no $BROWSER, display or macOS)
    and no address can be pasted (`--paste` not given, stdin no terminal);
    else in a browser, and always so when the daemon runs on another machine
    (an SSH forward): the browser and the callback are there."""
    if args.device:
        return "device"
    if daemon_elsewhere:
        return "browser"
    browser = not args.no_browser and (
        platform == "darwin"
        or any(environ.get(name) for name in ("BROWSER", "DISPLAY", "WAYLAND_DISPLAY"))
    )
    if browser or args.paste or stdin_tty:
        return "browser"
    return "device_if_offered"


def _show_device_sign_in(name: str, device: DeviceSignIn, joined: bool) -> None:
    print(f"To sign in to {name}, on any device with a browser:\n")
    print(f"  Open {device.verification_uri} and enter the code {device.user_code}")
    if device.verification_uri_complete:
        print(f"  or open {device.verification_uri_complete} (the code is in it)")
    print(f"\nThe code expires {_ago_or_in(device.expires_in)}.")
    if joined:
        print("(joined the device sign-in already under way: the same code)")
    print("Waiting for the sign-in to finish (Ctrl-C stops waiting)...", flush=True)


def cmd_auth(client: DaemonClient, args: argparse.Namespace) -> int:
    if args.name is None:
        return auth_all(client, args, cmd_auth)
    method = sign_in_method(
        args, os.environ, sys.platform, sys.stdin.isatty(), client.elsewhere is not None
    )
    started = msgspec.convert(
        client.request("auth", AuthParams(args.name, args.restart, method)), AuthStarted
    )
    if started.client_credentials:
        print(
            f"{args.name} uses client credentials (no browser): a new access token was "
            "requested and stored.",
            flush=True,
        )
        ready = msgspec.convert(client.request("auth_wait", ServerParams(args.name)), ServerStatus)
        print(f"{ready.name} is {ready.state}.")
        return 0
    if started.device is not None:
        if method == "device_if_offered":
            print("No browser here and nothing to paste into: signing in with a code instead.")
        _show_device_sign_in(args.name, started.device, started.joined)
        return _signed_in(client.request("auth_wait", ServerParams(args.name)))
    # Flushed: whoever reads a pipe gets the URL before a browser opens.
    print(
        f"To sign in to {args.name}, open this URL in a browser:\n\n  {started.url}\n", flush=True
    )
    if started.joined:
        print("(joined the sign-in already under way: its browser tab is open)")
    elif client.elsewhere:  # the callback is on the daemon's machine, not here
        print(f"(mcpd runs on {client.elsewhere}: open the URL in a browser there)")
    elif not args.no_browser and not args.paste:
        import webbrowser

        if not webbrowser.open(started.url):
            print("(no browser could be opened here: open the URL yourself)")
    if args.paste:
        print("After signing in, the browser goes to a page that may not load (on another")
        print("machine, say). Paste that page's full address (or just the code) here:")
        try:
            response = input("> ")
        except EOFError:
            print("mcpctl: nothing was pasted", file=sys.stderr)
            return 1
        status = client.request("auth_paste", AuthPasteParams(args.name, response))
    else:
        print("Waiting for the sign-in to finish in the browser (Ctrl-C stops waiting)...")
        print(
            f"If the browser shows an error from the sign-in page, run: mcpctl auth {args.name} "
            "--restart",
            flush=True,
        )
        status = client.request("auth_wait", ServerParams(args.name))
    return _signed_in(status)


def _signed_in(status: Any) -> int:
    server = msgspec.convert(status, ServerStatus)
    print(f"Signed in; {server.name} is {server.state}.")
    return 0


def cmd_logout(client: DaemonClient, args: argparse.Namespace) -> int:
    if args.name is None:
        return logout_choose(client, args, cmd_logout)
    result = msgspec.convert(
        client.request("logout", LogoutParams(args.name, args.forget_client)), LogoutResult
    )
    revoked = "revoked and " if result.revoked else ""
    forgot = "; the client registration is forgotten too" if args.forget_client else ""
    print(f"Signed out of {args.name}: tokens {revoked}deleted{forgot}.")
    return 0


def cmd_token(client: DaemonClient, args: argparse.Namespace) -> int:
    result = msgspec.convert(client.request("token", ServerParams(args.name)), TokenResult)
    print(result.access_token)
    return 0


def cmd_shutdown(client: DaemonClient, args: argparse.Namespace) -> int:
    client.request("shutdown")
    print("mcpd is shutting down")
    return 0


def _add_status(commands: Any) -> None:
    status = commands.add_parser("status", help="show the servers and their state")
    status.add_argument("name", nargs="?", help="only this server")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(run=cmd_status)


def _add_reload(commands: Any) -> None:
    commands.add_parser("reload", help="re-read the config file").set_defaults(run=cmd_reload)


def _add_rotate_key(commands: Any) -> None:
    commands.add_parser(
        "rotate-key", help="encrypt the credential store with a new key"
    ).set_defaults(run=cmd_rotate_key)


def _add_watch(commands: Any) -> None:
    watch = commands.add_parser("watch", help="print state changes as they happen")
    watch.add_argument("names", nargs="*", metavar="NAME", help="only these servers")
    watch.add_argument("--json", action="store_true", help="one JSON event per line")
    watch.set_defaults(run=cmd_watch)


def _add_shutdown(commands: Any) -> None:
    commands.add_parser("shutdown", help="stop the daemon").set_defaults(run=cmd_shutdown)


def _add_tools(commands: Any) -> None:
    tools = commands.add_parser("tools", help="list a server's tools")
    tools.add_argument("name", help="the server")
    tools.add_argument("--json", action="store_true", help="the full tool definitions")
    tools.set_defaults(run=cmd_tools)


def _add_call(commands: Any) -> None:
    call = commands.add_parser("call", help="call a tool and print its result")
    call.add_argument("name", help="the server")
    call.add_argument("tool", help="the tool")
    call.add_argument("arguments", nargs="?", help="the arguments, a JSON object")
    call.add_argument("--json", action="store_true", help="the full result as JSON")
    call.set_defaults(run=cmd_call)


def _add_auth(commands: Any) -> None:
    auth = commands.add_parser("auth", help="sign in to a server (OAuth), for every editor")
    auth.add_argument(
        "name", nargs="?", help="the server (none: every server that needs a sign-in)"
    )
    auth.add_argument("--no-browser", action="store_true", help="print the URL, open nothing")
    auth.add_argument(
        "--restart",
        action="store_true",
        help="abandon a sign-in under way and start afresh, registering a new client",
    )
    headless = auth.add_mutually_exclusive_group()
    headless.add_argument(
        "--paste",
        action="store_true",
        help="for SSH and headless machines: paste the address the browser ends up at",
    )
    headless.add_argument(
        "--device",
        action="store_true",
        help="sign in on any device with a code (RFC 8628), where the server offers that",
    )
    auth.set_defaults(run=cmd_auth)


def _add_logout(commands: Any) -> None:
    logout = commands.add_parser("logout", help="revoke and delete a server's tokens")
    logout.add_argument(
        "name", nargs="?", help="the server (none: choose among the signed-in ones)"
    )
    logout.add_argument(
        "--forget-client", action="store_true", help="also forget the client registration"
    )
    logout.set_defaults(run=cmd_logout)


def _add_token(commands: Any) -> None:
    token = commands.add_parser(
        "token", help="print a valid access token (servers with export_token = true)"
    )
    token.add_argument("name", help="the server")
    token.set_defaults(run=cmd_token)


def _add_stdio(commands: Any) -> None:
    stdio = commands.add_parser(
        "stdio", help="be the stdio MCP server an editor launches, served by the daemon"
    )
    stdio.add_argument("name", help="the server")
    stdio.add_argument(
        "--socket", help="the daemon's socket (default: found as every mcpctl finds it)"
    )
    stdio.set_defaults(run=None)


# The commands, in the order help lists them: the names each entry adds, and
# what adds them to the subparsers. A run builds only the entry of the command
# it names: a parser costs about a millisecond here, most of it gettext
# looking for translations on disk, and every mcpctl run is a process of its
# own (a plain `mcpctl stdio NAME` needs no parser: clients/entry.py). Help,
# and a command line that names no command, build them all.
COMMANDS: tuple[tuple[tuple[str, ...], Callable[[Any], None]], ...] = (
    (("status",), _add_status),
    (MANAGE_COMMANDS, add_commands),  # clients/manage.py
    (("reload",), _add_reload),
    (("rotate-key",), _add_rotate_key),
    (("watch",), _add_watch),
    (("shutdown",), _add_shutdown),
    (("tools",), _add_tools),
    (("call",), _add_call),
    (("auth",), _add_auth),
    (("logout",), _add_logout),
    (("token",), _add_token),
    (("stdio",), _add_stdio),
    (EDITOR_COMMANDS, register_editor_commands),  # clients/editors/, imported when run
    (REMOTE_COMMANDS, register_remote_commands),  # clients/remote.py
)


def _parser(argv: list[str]) -> argparse.ArgumentParser:
    """mcpctl's parser for this command line: of the command it names alone,
    or of every command when it names none."""
    parser = argparse.ArgumentParser(prog="mcpctl", description="Talk to the mcpd daemon.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    named = [entry for entry in COMMANDS if argv and argv[0] in entry[0]]
    for _, add in named or COMMANDS:
        add(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    args = _parser(argv).parse_args(argv)
    if args.command == "stdio":
        from .bridge import run as run_bridge

        return run_bridge(args.name, args.socket)
    if getattr(args, "run_alone", None) is not None:  # commands that need no daemon
        try:
            return int(args.run_alone(args))
        except KeyboardInterrupt:
            return 130
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
