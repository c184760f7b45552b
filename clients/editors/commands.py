"""The `editors`, `import`, `install` and `uninstall` commands of mcpctl.

They work on files (the editors' and mcpd's config), so they run without the
daemon; `import` asks a running daemon to reload afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mcpd import paths

from . import importing, install, mcpdconfig
from .entries import url_key
from .files import EditorFileError
from .formats import EDITORS, Editor, display, find, installed_here, user_file


def _editors(names: list[str]) -> list[Editor]:
    chosen = []
    for name in names:
        editor = find(name)
        if editor is None:
            known = ", ".join(e.id for e in EDITORS)
            raise SystemExit(f"mcpctl: no editor called {name!r} (known: {known})")
        chosen.append(editor)
    return chosen


def _mcpd_servers(env: Mapping[str, str]) -> dict[str, str | None]:
    try:
        tables = mcpdconfig.servers(paths.config_file(env))
    except mcpdconfig.ConfigProblem as exc:
        print(f"mcpctl: {exc}", file=sys.stderr)
        return {}
    return {
        name: table["url"] if isinstance(table.get("url"), str) else None
        for name, table in tables.items()
    }


# --- mcpctl editors -----------------------------------------------------------------------


def cmd_editors(args: argparse.Namespace) -> int:
    env, cwd = os.environ, Path.cwd()
    servers = _mcpd_servers(env)
    by_url = {url_key(url): name for name, url in servers.items() if url}
    report: list[dict[str, Any]] = []
    failed = False
    for editor in EDITORS:
        files, errors = importing.scan(editor, env, cwd)
        failed = failed or bool(errors)
        item: dict[str, Any] = {
            "editor": editor.id,
            "name": editor.name,
            "found": bool(files or errors) or installed_here(editor, env),
            "config": str(user_file(editor, env)),
            "files": [],
            "errors": errors,
        }
        report.append(item)
        for file in files:
            for container in file.containers:
                shown: dict[str, Any] = {
                    "path": str(file.location.path),
                    "scope": container.scope,
                    "servers": [],
                    "local": 0,
                }
                for entry in container.entries:
                    if entry.kind == "mcpd":
                        shown["servers"].append(
                            {
                                "key": entry.key,
                                "url": servers.get(entry.mcpd_server or ""),
                                "through_mcpd": True,
                                "mcpd_server": entry.mcpd_server,
                                "in_mcpd": entry.mcpd_server in servers,
                            }
                        )
                    elif entry.kind == "remote" and entry.remote is not None:
                        shown["servers"].append(
                            {
                                "key": entry.key,
                                "url": entry.remote.url,
                                "through_mcpd": False,
                                "via": entry.remote.via,
                                "mcpd_server": by_url.get(url_key(entry.remote.url)),
                                "in_mcpd": url_key(entry.remote.url) in by_url,
                            }
                        )
                    else:
                        shown["local"] += 1
                if container.scope == "user" or shown["servers"] or shown["local"]:
                    item["files"].append(shown)
    if args.json:
        print(json.dumps({"editors": report}, indent=2))
    else:
        print("\n".join(_render_editors(report, env)))
    return 1 if failed else 0


def _render_editors(report: list[dict[str, Any]], env: Mapping[str, str]) -> list[str]:
    lines: list[str] = []
    missing = []
    for item in report:
        if not item["found"]:
            missing.append(item["name"])
            continue
        if not item["files"] and not item["errors"]:
            shown = display(Path(item["config"]), env)
            lines.append(f"{item['name']}: no MCP servers yet ({shown})")
            continue
        for error in item["errors"]:
            lines.append(f"{item['name']}: cannot read: {error}")
        for shown in item["files"]:
            scope = "" if shown["scope"] == "user" else f" [{shown['scope']}]"
            lines.append(f"{item['name']}: {display(Path(shown['path']), env)}{scope}")
            width = max((len(s["key"]) for s in shown["servers"]), default=0)
            for server in shown["servers"]:
                url = server["url"] or "(no such server in mcpd)"
                if server["through_mcpd"]:
                    state = f"through mcpd (mcpctl stdio {server['mcpd_server']})"
                    if not server["in_mcpd"]:
                        state += f"; mcpd has no server {server['mcpd_server']}"
                else:
                    via = "mcp-remote" if server["via"] == "mcp-remote" else "direct"
                    if server["in_mcpd"]:
                        hint = (
                            f"in mcpd as {server['mcpd_server']}: mcpctl install {item['editor']}"
                        )
                    else:
                        hint = f"not in mcpd: mcpctl import {item['editor']}"
                    state = f"not through mcpd ({via}); {hint}"
                lines.append(f"  {server['key'].ljust(width)}  {url}  {state}")
            if not shown["servers"]:
                lines.append("  no remote servers")
            if shown["local"]:
                lines.append(f"  and {shown['local']} local (stdio) server(s)")
    if missing:
        lines.append(f"not found here: {', '.join(missing)}")
    return lines


# --- mcpctl import ------------------------------------------------------------------------


def cmd_import(args: argparse.Namespace) -> int:
    env, cwd = os.environ, Path.cwd()
    chosen = _editors(args.editors) if args.editors else list(EDITORS)
    found: list[importing.Found] = []
    failed = False
    for editor in chosen:
        files, errors = importing.scan(editor, env, cwd)
        for error in errors:
            print(f"mcpctl: {error}", file=sys.stderr)
            failed = True
        found += importing.remotes(files)
    if not found:
        where = ", ".join(e.name for e in chosen) if args.editors else "any editor"
        print(f"no remote MCP servers found in {where}")
        return 1 if failed else 0
    config_path = paths.config_file(env)
    try:
        outcomes = importing.run(found, config_path, env, dry_run=args.dry_run)
    except mcpdconfig.ConfigProblem as exc:
        print(f"mcpctl: {exc}", file=sys.stderr)
        return 1
    for outcome in outcomes:
        print("\n".join(importing.describe(outcome, env)))
    added = [o.name for o in outcomes if o.status == "added"]
    if args.dry_run:
        count = sum(o.status == "would add" for o in outcomes)
        print(f"dry run: {count} server(s) would be added to {display(config_path, env)}")
    elif added:
        print(f"added to {display(config_path, env)}: {', '.join(added)}")
        _reload()
    else:
        print(f"nothing to add to {display(config_path, env)}")
    return 1 if failed or any(o.failed for o in outcomes) else 0


def _reload() -> None:
    from ..client import DaemonClient, DaemonError, DaemonUnavailable

    try:
        with DaemonClient.connect() as client:
            client.request("reload")
    except DaemonUnavailable:
        print("mcpd is not running; it reads them when it starts")
        return
    except DaemonError as exc:
        print(f"mcpctl: mcpd did not reload: {exc}", file=sys.stderr)
        return
    print("mcpd reloaded its config")


# --- mcpctl install / uninstall -----------------------------------------------------------


def cmd_install(args: argparse.Namespace) -> int:
    env = os.environ
    (editor,) = _editors([args.editor])
    try:
        result = install.install(editor, env, args.names, dry_run=args.dry_run)
    except (install.InstallError, EditorFileError) as exc:
        print(f"mcpctl: {exc}", file=sys.stderr)
        return 1
    print("\n".join(install.describe_install(editor, result, env)))
    if args.dry_run:
        print("dry run: nothing was written")
    elif result.written:
        if result.backup is not None:
            print(f"the file as it was is saved in {display(result.backup, env)}")
        print(
            f"restart {editor.name} (or reload its MCP servers) to use them; "
            f"`mcpctl uninstall {editor.id}` puts back what was replaced"
        )
    else:
        print("nothing to change")
    return 1 if any(c.action == "skipped" for c in result.changes) else 0


def cmd_uninstall(args: argparse.Namespace) -> int:
    env = os.environ
    (editor,) = _editors([args.editor])
    try:
        undone = install.uninstall(editor, env)
    except (install.InstallError, EditorFileError) as exc:
        print(f"mcpctl: {exc}", file=sys.stderr)
        return 1
    shown = display(undone.path, env)
    match undone.how:
        case "restored":
            print(f"{editor.name}: {shown} is back exactly as it was before mcpctl install")
        case "created-removed":
            print(f"{editor.name}: removed {shown}, which mcpctl install had created")
        case "entries":
            print(f"{editor.name}: {shown} changed since mcpctl install; entry by entry:")
        case _:
            print(f"{editor.name}: nothing installed by mcpctl to take out of {shown}")
    for note in undone.notes:
        print(f"  {note}")
    return 0
