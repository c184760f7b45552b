"""Timestamps where a forwarded call enters and leaves each process, for the
span breakdown of `bench/run.py`.

Loaded (as sitecustomize, through PYTHONPATH) only into the daemon and the
bridge of a traced run, and only when MCPD_SPANS_DIR is set. It wraps the
functions at each hop and, at exit, writes every mark to
MCPD_SPANS_DIR/<process>-<pid>.json: lists of time.perf_counter_ns() values,
which on Linux read CLOCK_MONOTONIC, one clock for every process. The marks
are taken in order, one per message, so the Nth of each list belongs to the
Nth call of an editor calling in sequence.
"""

from __future__ import annotations

import atexit
import inspect
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

OUT = os.environ.get("MCPD_SPANS_DIR")
marks: dict[str, list[int]] = {}


def mark(name: str) -> None:
    marks.setdefault(name, []).append(time.perf_counter_ns())


def around(owner: Any, attribute: str, entry: str | None, leave: str | None, when=None) -> None:
    """Mark `entry` before and `leave` after a method (sync or async) runs,
    when `when(*args)` holds (always without it)."""
    original = getattr(owner, attribute)
    if inspect.iscoroutinefunction(original):

        async def wrapped_async(*args: Any, **kwargs: Any) -> Any:
            wanted = when is None or when(*args)
            if wanted and entry:
                mark(entry)
            try:
                return await original(*args, **kwargs)
            finally:
                if wanted and leave:
                    mark(leave)

        setattr(owner, attribute, wrapped_async)
        return

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        wanted = when is None or when(*args)
        if wanted and entry:
            mark(entry)
        try:
            return original(*args, **kwargs)
        finally:
            if wanted and leave:
                mark(leave)

    setattr(owner, attribute, wrapped)


def daemon() -> None:
    from mcpd.connection import ClientConnection
    from mcpd.protocol import Rpc
    from mcpd.upstream.session import UpstreamSession
    from mcpd.upstream.transport import StreamableHttp, _Forwarded

    # Only the call's own messages: not the notifications, nor the GET stream.
    # A warm editor's messages are taken and forwarded without a task
    # (connection.py, transport.py).
    editors = lambda _self, message: isinstance(message, Rpc)  # noqa: E731
    around(ClientConnection, "_handled_at_once", "daemon.in", None, editors)
    around(StreamableHttp, "forward", "daemon.post", None)
    around(_Forwarded, "on_head", "daemon.head", None)
    around(UpstreamSession, "_deliver", "daemon.event", None, lambda _self, m, _r: "id" in m)
    around(ClientConnection, "_push_rpc", "daemon.push", None)


def bridge() -> None:
    from mcpctl.bridge import Bridge
    from mcpctl.client import DaemonClient

    around(Bridge, "_forward", "bridge.in", None)
    around(DaemonClient, "send_rpc", "bridge.send", None)
    around(Bridge, "_from_daemon", "bridge.back", None)
    around(DaemonClient, "receive_available", None, "bridge.write")


def dump() -> None:
    assert OUT is not None
    name = Path(sys.argv[0]).name
    path = Path(OUT) / f"{name}-{os.getpid()}.json"
    path.write_text(json.dumps(marks))


if OUT:
    program = Path(sys.argv[0]).name
    if program == "mcpd":
        daemon()
        atexit.register(dump)
    elif program == "mcpctl" and sys.argv[1:2] == ["stdio"]:
        bridge()
        atexit.register(dump)
