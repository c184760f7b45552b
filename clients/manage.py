"""Managing servers from `mcpctl`: add, remove, enable, disable and list them;
`auth` and `logout` with no NAME.

Standard library and msgspec only at import, like the rest of clients/: the
commands that edit config.toml import the daemon package's editor
(mcpd/configedit.py, and tomlkit with it) inside their functions, so that
`mcpctl status` and `mcpctl stdio` never load it.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from mcpd import paths
from mcpd.protocol import ReloadResult, ServerStatus, StatusParams, StatusResult

from .client import DaemonClient, DaemonError, DaemonUnavailable

if TYPE_CHECKING:
    from mcpd.configedit import Edit, NewServer

Command = Callable[[DaemonClient, argparse.Namespace], int]

USAGE = 2
SETTLE_SECONDS = 2.0
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Header names whose values are credentials: given literally, they would be
# written into config.toml. `{env:VAR}` is the way to give them.
_CREDENTIAL_HEADER = re.compile(
    r"authorization|cookie|token|secret|key|passw|credential|session|signature", re.IGNORECASE
)


class UsageError(Exception):
    """A command line that cannot be carried out as written (exit 2)."""


# --- The parsers ----------------------------------------------------------------------


COMMANDS = ("add", "remove", "enable", "disable", "list")


def add_commands(commands: Any) -> None:
    """The subcommands of this module, on mcpctl's subparsers."""
    add = commands.add_parser(
        "add",
        help="add a server to the config (and reload mcpd)",
        description="Add a server to config.toml, keeping its comments and layout, and "
        "reload mcpd if it runs. Secrets are never written into the file: give them as "
        "{env:VAR} (mcpd reads the variable from its environment).",
    )
    add.add_argument("name", help="the server's name: letters, digits, '_', '.' and '-'")
    add.add_argument("url", help="the server's MCP endpoint, http:// or https://")
    add.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'K: V'",
        help="an HTTP header for every request (repeatable); a credential as "
        "'Authorization: Bearer {env:VAR}'",
    )
    add.add_argument("--client-id", metavar="ID", help="the OAuth client id to use")
    add.add_argument(
        "--client-secret-env",
        metavar="VAR",
        help="the variable that holds the OAuth client secret (written as {env:VAR})",
    )
    add.add_argument("--scope", metavar="S", help="the OAuth scope to ask for")
    add.add_argument("--no-oauth", action="store_true", help="never sign in with OAuth")
    add.add_argument("--per-client", action="store_true", help="one upstream session per editor")
    add.add_argument("--replace", action="store_true", help="overwrite a server of that name")
    add.set_defaults(run=None, run_alone=cmd_add)

    for name, text in (
        ("remove", "remove a server from the config (and reload mcpd)"),
        ("enable", "enable a server (and reload mcpd)"),
        ("disable", "disable a server, keeping its entry (and reload mcpd)"),
    ):
        parser = commands.add_parser(name, help=text)
        parser.add_argument("name", help="the server")
        parser.set_defaults(run=None, run_alone=_EDITS[name])

    listing = commands.add_parser(
        "list", help="every server: its state, whether it is signed in, its URL"
    )
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(run=cmd_list)


# --- add, remove, enable, disable -----------------------------------------------------


def _headers(values: Sequence[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for value in values:
        name, colon, content = value.partition(":")
        name, content = name.strip(), content.strip()
        if not colon or not name:
            raise UsageError(f"--header takes 'Name: value', e.g. 'X-Team: docs'; got {name!r}")
        if name.lower() in (known.lower() for known in headers):
            raise UsageError(f"--header {name} is given twice")
        if _CREDENTIAL_HEADER.search(name) and content and "{env:" not in content:
            raise UsageError(
                f"--header {name}: a credential is never written into the config; put it in "
                f"a variable and write --header '{name}: {{env:VAR}}' (or 'Bearer {{env:VAR}}'); "
                "mcpd needs VAR in its environment"
            )
        headers[name] = content
    return headers


def _secret_variable(value: str | None) -> str | None:
    if value is None:
        return None
    if value.startswith("$"):
        value = value[1:]
    if value and value in os.environ.values() and value not in os.environ:
        # `--client-secret-env $VAR` unquoted: the shell gave the secret itself.
        raise UsageError(
            "--client-secret-env takes the variable's name (GH_SECRET, not $GH_SECRET): what "
            "was given is the value of a variable; nothing was written"
        )
    if not _ENV_NAME.fullmatch(value):
        raise UsageError(
            "--client-secret-env takes an environment variable's name: letters, digits and _"
        )
    return value


def _new_server(args: argparse.Namespace) -> NewServer:
    from mcpd.configedit import NewServer

    secret = _secret_variable(args.client_secret_env)
    if args.no_oauth and (args.client_id or secret or args.scope):
        raise UsageError("--no-oauth cannot go with --client-id, --client-secret-env or --scope")
    if secret and not args.client_id:
        raise UsageError("--client-secret-env needs --client-id (the client it is the secret of)")
    return NewServer(
        url=args.url,
        headers=_headers(args.header),
        client_id=args.client_id,
        client_secret_env=secret,
        scope=args.scope,
        oauth=not args.no_oauth,
        per_client=args.per_client,
    )


def cmd_add(args: argparse.Namespace) -> int:
    from mcpd import configedit

    return _edit(
        args.name,
        lambda: configedit.add(
            paths.config_file(), args.name, _new_server(args), replace=args.replace
        ),
        present=True,
    )


def cmd_remove(args: argparse.Namespace) -> int:
    from mcpd import configedit

    return _edit(
        args.name, lambda: configedit.remove(paths.config_file(), args.name), present=False
    )


def cmd_enable(args: argparse.Namespace) -> int:
    from mcpd import configedit

    return _edit(
        args.name,
        lambda: configedit.set_enabled(paths.config_file(), args.name, True),
        present=True,
    )


def cmd_disable(args: argparse.Namespace) -> int:
    from mcpd import configedit

    return _edit(
        args.name,
        lambda: configedit.set_enabled(paths.config_file(), args.name, False),
        present=True,
    )


_EDITS: dict[str, Callable[[argparse.Namespace], int]] = {
    "remove": cmd_remove,
    "enable": cmd_enable,
    "disable": cmd_disable,
}


def _edit(name: str, make: Callable[[], Edit], *, present: bool) -> int:
    """Make the edit, then have a running mcpd reload; `present`: whether the
    server is in the config afterwards."""
    from mcpd.configedit import EditRefused

    try:
        edit = make()
    except UsageError as exc:
        print(f"mcpctl: {exc}", file=sys.stderr)
        return USAGE
    except EditRefused as exc:
        print(f"mcpctl: {exc}", file=sys.stderr)
        return 1
    print(edit.summary)
    for warning in edit.warnings:
        print(f"mcpctl: warning: {warning}", file=sys.stderr)
    if not edit.changed:
        return 0
    return _reload(name, present)


def _reload(name: str, present: bool) -> int:
    try:
        with DaemonClient.connect() as client:
            result = msgspec.convert(client.request("reload"), ReloadResult)
            print(f"mcpd reloaded: {describe(result)}", flush=True)
            found = _settled(client, name)
    except DaemonUnavailable as exc:
        if "is not running" in str(exc):
            print("mcpd is not running; the change applies when it starts")
        else:
            print(f"mcpctl: {exc}; the change applies when mcpd (re)starts", file=sys.stderr)
        return 0
    except DaemonError as exc:
        print(f"mcpctl: the file is written, but mcpd did not reload: {exc}", file=sys.stderr)
        return 1
    if (found is not None) != present:
        print(
            f"mcpctl: warning: the running mcpd {'still has' if found else 'has no'} {name}: "
            f"it reads another config file than {paths.config_file()} (mcpd --config?)",
            file=sys.stderr,
        )
    elif found is not None:
        print(_state_line(found))
    return 0


def _settled(client: DaemonClient, name: str) -> ServerStatus | None:
    """The server's status once it is past `connecting` (a server that needs a
    sign-in says so within a moment), or after SETTLE_SECONDS."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        found = next((s for s in _status(client) if s.name == name), None)
        if found is None or found.state != "connecting" or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def describe(result: ReloadResult) -> str:
    """What a reload changed, every list but the unchanged servers."""
    changes = [
        f"{label}: {', '.join(names)}"
        for label, names in msgspec.structs.asdict(result).items()
        if label != "unchanged" and isinstance(names, list) and names
    ]
    return "; ".join(changes) if changes else "nothing changed"


def _state_line(server: ServerStatus) -> str:
    line = f"{server.name} is {server.state}"
    if server.state == "needs_auth":
        return f"{line}: sign in with `mcpctl auth {server.name}`"
    if server.state == "connecting":
        return f"{line} (`mcpctl list` shows how it goes on)"
    return f"{line}: {server.error}" if server.error else line


# --- list -------------------------------------------------------------------------------


def _signed_in(server: ServerStatus) -> str:
    return "-" if server.signed_in is None else "yes" if server.signed_in else "no"


def render_list(servers: list[ServerStatus]) -> str:
    if not servers:
        return "no servers configured (add one with: mcpctl add NAME URL)"
    rows = [("NAME", "STATE", "SIGNED IN", "URL")]
    rows += [(s.name, s.state, _signed_in(s), s.url or "-") for s in servers]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        + "  "
        + row[3]
        for row in rows
    )


class ListedServer(msgspec.Struct):
    name: str
    state: str
    signed_in: bool | None
    url: str
    error: str | None


class ListResult(msgspec.Struct):
    servers: list[ListedServer]


def cmd_list(client: DaemonClient, args: argparse.Namespace) -> int:
    servers = _status(client)
    if args.json:
        listed = ListResult(
            [ListedServer(s.name, s.state, s.signed_in, s.url, s.error) for s in servers]
        )
        print(msgspec.json.format(msgspec.json.encode(listed), indent=2).decode())
    else:
        print(render_list(servers))
    return 0


def _status(client: DaemonClient) -> list[ServerStatus]:
    return msgspec.convert(client.request("status", StatusParams()), StatusResult).servers


# --- auth and logout with no NAME -------------------------------------------------------


def on_terminal() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def choose(names: list[str], question: str, *, default_all: bool) -> list[str] | None:
    """Ask which of `names` (numbers or names, `all`); None: no answer (end of input)."""
    for number, name in enumerate(names, 1):
        print(f"  {number}. {name}")
    while True:
        try:
            answer = input(question).strip()
        except EOFError:
            print()
            return None
        if not answer:
            return list(names) if default_all else []
        if answer.lower() == "all":
            return list(names)
        picked: list[str] = []
        unknown: list[str] = []
        for token in re.split(r"[\s,]+", answer):
            numbered = token.isdigit() and 1 <= int(token) <= len(names)
            name = names[int(token) - 1] if numbered else token
            if name in names:
                if name not in picked:
                    picked.append(name)
            else:
                unknown.append(token)
        if not unknown:
            return picked
        print(f"not in the list: {', '.join(unknown)}; answer with numbers or names from it")


def auth_all(client: DaemonClient, args: argparse.Namespace, sign_in: Command) -> int:
    """`mcpctl auth` with no NAME: every server that needs a sign-in, one after another."""
    needing = [s.name for s in _status(client) if s.state == "needs_auth"]
    if not needing:
        print("No server needs a sign-in.")
        return 0
    if on_terminal():
        print("These servers need a sign-in:")
        chosen = choose(needing, "Sign in to which? [all] ", default_all=True)
        if not chosen:
            print("Nothing to do.")
            return 0 if chosen is not None else 1
    else:
        chosen = needing
        print(f"Signing in to {', '.join(chosen)}, one after another.", flush=True)
    failed = []
    for number, name in enumerate(chosen, 1):
        print(f"\n[{number}/{len(chosen)}] {name}", flush=True)
        try:
            code = sign_in(client, argparse.Namespace(**{**vars(args), "name": name}))
        except DaemonError as exc:
            print(f"mcpctl: {name}: {exc}", file=sys.stderr)
            code = 1
        if code != 0:
            failed.append(name)
    if failed:
        print(f"\nNot signed in: {', '.join(failed)}.", file=sys.stderr)
        return 1
    return 0


def logout_choose(client: DaemonClient, args: argparse.Namespace, sign_out: Command) -> int:
    """`mcpctl logout` with no NAME: on a terminal, choose among the signed-in
    servers; elsewhere an error that lists them."""
    signed_in = [s.name for s in _status(client) if s.signed_in]
    if not on_terminal():
        listed = f"signed in: {', '.join(signed_in)}" if signed_in else "none is signed in now"
        print(
            f"mcpctl logout: name the server to sign out of: mcpctl logout NAME ({listed})",
            file=sys.stderr,
        )
        return USAGE
    if not signed_in:
        print("No server is signed in.")
        return 0
    print("Signed in to:")
    chosen = choose(
        signed_in, "Sign out of which? (numbers or names; Enter: none) ", default_all=False
    )
    if not chosen:
        print("Signed out of nothing.")
        return 0 if chosen is not None else 1
    code = 0
    for name in chosen:
        try:
            code = max(code, sign_out(client, argparse.Namespace(**{**vars(args), "name": name})))
        except DaemonError as exc:
            print(f"mcpctl: {name}: {exc}", file=sys.stderr)
            code = 1
    return code
