"""Where mcpd keeps things: XDG directories, with MCPD_* overrides.

Standard library only: the thin clients resolve the socket path with it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

APP = "mcpd"
KEY_FILE_NAME = "mcpd.key"


class UnsafePath(Exception):
    """A directory or file that others could read or replace; the message says the fix."""


def _xdg(env: Mapping[str, str], var: str, default: str) -> Path:
    value = env.get(var, "")
    # The XDG spec says relative values are invalid and must be ignored.
    if value and os.path.isabs(value):
        return Path(value)
    return Path(env.get("HOME") or os.path.expanduser("~")) / default


def config_dir(env: Mapping[str, str] = os.environ) -> Path:
    return _xdg(env, "XDG_CONFIG_HOME", ".config") / APP


def state_dir(env: Mapping[str, str] = os.environ) -> Path:
    return _xdg(env, "XDG_STATE_HOME", ".local/state") / APP


def config_file(env: Mapping[str, str] = os.environ) -> Path:
    override = env.get("MCPD_CONFIG")
    return Path(override) if override else config_dir(env) / "config.toml"


RUN_USER = Path("/run/user")


def _user_runtime_dir() -> Path | None:
    """/run/user/UID when it is this user's directory (what systemd-logind makes
    and sets XDG_RUNTIME_DIR to), else None."""
    uid = os.getuid()
    path = RUN_USER / str(uid)
    try:
        st = path.lstat()
    except OSError:
        return None
    if stat.S_ISDIR(st.st_mode) and st.st_uid == uid and not stat.S_IMODE(st.st_mode) & 0o022:
        return path
    return None


def runtime_dir(env: Mapping[str, str] = os.environ) -> Path:
    """$XDG_RUNTIME_DIR/mcpd; without it, /run/user/UID/mcpd when that directory is
    the user's; else a per-user directory under /tmp.

    Editors launch `mcpctl stdio` with environments of their own (Codex passes
    a fixed list of variables, XDG_RUNTIME_DIR not among them): /run/user/UID
    is where systemd's XDG_RUNTIME_DIR points, so such a bridge still finds a
    daemon started under systemd. /tmp is fixed rather than $TMPDIR so that a
    daemon and a client started with different environments still meet.
    """
    xdg = env.get("XDG_RUNTIME_DIR", "")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / APP
    user_runtime = _user_runtime_dir()
    if user_runtime is not None:
        return user_runtime / APP
    return Path("/tmp") / f"{APP}-{os.getuid()}"  # noqa: S108 - created 0700 and checked


def socket_path(env: Mapping[str, str] = os.environ) -> Path:
    override = env.get("MCPD_SOCKET")
    return Path(override) if override else runtime_dir(env) / f"{APP}.sock"


FORWARD_DIR = Path("/tmp")  # noqa: S108 - sshd creates the socket 0600; clients check its owner


def forward_socket_path() -> Path:
    """Where an SSH forward of the daemon of the user's own machine lands on a
    remote host: /tmp/mcpd-USER.sock, the path `RemoteForward /tmp/mcpd-%r.sock
    ...` names (`mcpctl remote setup`). Clients use it when no daemon runs here.

    /tmp because sshd binds the forward as the connection opens, before the
    session could make a directory for it (a runtime directory may not exist
    yet), and because it is local to each host (a home directory may be shared
    between hosts, and a socket of one host does not answer on another).
    """
    try:
        user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # no passwd entry: no SSH login either, but stay defined
        user = str(os.getuid())
    return FORWARD_DIR / f"{APP}-{user}.sock"


class Paths(NamedTuple):  # not a dataclass: the module costs mcpctl's start 4 ms
    config_file: Path
    config_dir: Path
    state_dir: Path
    socket: Path

    @property
    def key_file(self) -> Path:
        return self.config_dir / KEY_FILE_NAME

    @property
    def credentials_dir(self) -> Path:
        return self.state_dir / "credentials"

    @property
    def shown_dir(self) -> Path:
        """What each server last showed editors (mcpd/shown.py): not secret."""
        return self.state_dir / "shown"

    @property
    def lock_file(self) -> Path:
        return self.state_dir / f"{APP}.lock"

    @classmethod
    def resolve(cls, env: Mapping[str, str] = os.environ, config: Path | None = None) -> Paths:
        return cls(
            config_file=config or config_file(env),
            config_dir=config_dir(env),
            state_dir=state_dir(env),
            socket=socket_path(env),
        )


def check_private(path: Path, what: str, fix: str) -> None:
    """Refuse a path that is not owned by us or is open to group or others."""
    st = path.lstat()
    uid = os.getuid()
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePath(f"{what} {path} is a symbolic link; remove it so mcpd can create it")
    if st.st_uid != uid:
        raise UnsafePath(
            f"{what} {path} is owned by uid {st.st_uid}, not by you (uid {uid}); "
            f"remove it, or choose another location"
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise UnsafePath(
            f"{what} {path} is accessible to group or others (mode {mode:04o}); fix it with: {fix}"
        )


def ensure_private_dir(path: Path, what: str) -> None:
    """Create `path` (and parents) 0700 if missing, then check it is private."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700, parents=True)
    if not path.is_dir():
        raise UnsafePath(f"{what} {path} is not a directory; remove it")
    check_private(path, what, f"chmod 700 {path}")
