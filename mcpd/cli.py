"""`mcpd`: start the daemon in the foreground."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import anyio

from . import __version__, logs
from . import config as config_mod
from .daemon import Daemon
from .instance import AlreadyRunning, InstanceLock, bind_listener
from .keys import KeyFileError, open_keyring
from .oauth.model import CredentialRecord
from .paths import Paths, UnsafePath
from .shown import ShownStore
from .store import CredentialStore
from .systemd import ActivationError, Notifier, inherited_listener

log = logging.getLogger("mcpd")


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mcpd",
        description="Per-user daemon for remote MCP servers. Runs in the foreground; "
        "systemd (see systemd/mcpd.socket) or a terminal keeps it.",
        epilog="`mcpd demo` tries the whole product without an account: a local "
        "OAuth-protected MCP server, a daemon in a temporary directory, the sign-in, and a "
        "tool called through mcpctl (needs the demo extra: pip install 'mcpd[demo]'). "
        "`mcpd service install` runs mcpd as a systemd user service (`mcpd service --help`).",
    )
    parser.add_argument(
        "--config",
        type=Path,
        help="config file (default: $MCPD_CONFIG, else $XDG_CONFIG_HOME/mcpd/config.toml)",
    )
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="overrides daemon.log_level from the config",
    )
    parser.add_argument("--version", action="version", version=f"mcpd {__version__}")
    return parser.parse_args(argv)


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    if words[:1] == ["demo"]:
        if len(words) > 1:
            print("usage: mcpd demo (it takes no options)", file=sys.stderr)
            return 2
        from .demo.run import main as demo

        return demo()
    if words[:1] == ["service"]:
        from .units import main as service

        return service(words[1:])
    args = _arguments(argv)
    # Every file and socket the daemon creates is private from its first moment.
    os.umask(0o077)
    logs.configure(args.log_level or "info")
    paths = Paths.resolve(config=args.config)
    notifier = Notifier()
    try:
        config = config_mod.load(paths.config_file)
    except config_mod.ConfigError as exc:
        log.error(str(exc))
        return 2
    logs.set_level(args.log_level or config.daemon.log_level)
    if not paths.config_file.exists():
        log.info(
            "no config file yet; starting with no servers",
            extra={"config": str(paths.config_file)},
        )
    lock = InstanceLock(paths.lock_file)
    try:
        lock.acquire()
        store_dir = paths.credentials_dir
        keyring = open_keyring(
            paths.key_file, os.environ, existing_records=CredentialStore.count_records(store_dir)
        )
        store = CredentialStore(store_dir, keyring, CredentialRecord)
        store.prepare()
        listener = inherited_listener()
        owned_socket = None
        if listener is None:
            listener = bind_listener(paths.socket)
            owned_socket = paths.socket.stat().st_ino
    except AlreadyRunning as exc:
        log.error(str(exc))
        return 1
    except (KeyFileError, UnsafePath, ActivationError, OSError) as exc:
        log.error(str(exc))
        return 1
    log.info("listening", extra={"socket": listener.getsockname(), "pid": os.getpid()})
    try:
        anyio.run(
            Daemon(config, store, notifier, ShownStore(paths.shown_dir)).run,
            listener,
            backend_options={"use_uvloop": True},
        )
    finally:
        # Remove the socket we bound (not one systemd passed us, which outlives
        # us), so clients see at once that the daemon is gone.
        if owned_socket is not None and _inode(paths.socket) == owned_socket:
            paths.socket.unlink()
        lock.release()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
