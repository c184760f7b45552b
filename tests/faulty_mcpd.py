"""mcpd with unexpected exceptions injected at chosen places: a fake, since no
real peer can make the daemon's own code raise what it does not expect (a
bug). It is how each supervision boundary is shown to hold.

    MCPD_TEST_FAULTS="session_open:2,reload" python tests/faulty_mcpd.py [mcpd args]

Each named point raises RuntimeError the first COUNT times (default 1) it is
reached, with `MCPD_TEST_FAULT_TEXT` in the message (a secret, to show that
the traceback the boundary logs is redacted); `MCPD_TEST_FAULT_ONLY` limits
the faults to one server (the `name` or `server` of the object at that point).
`POINT:COUNT:ENOSPC` raises the OSError of a full disk instead, and only
while the file `MCPD_TEST_FAULT_WHILE` exists (when that is set), so a test
can fill and free the disk. Then it runs mcpd's own entry point.
"""

from __future__ import annotations

import errno
import functools
import importlib
import inspect
import os
import sys
from typing import Any

# Each point: (module, class, method) and the boundary meant to contain it.
POINTS = {
    "session_open": ("mcpd.upstream.session", "UpstreamSession", "open"),  # the server's
    # Reached from a forwarded call's callbacks too (transport.py): the server's.
    "session_deliver": ("mcpd.upstream.session", "UpstreamSession", "_deliver"),
    "credentials_refresh": ("mcpd.credentials", "Credentials", "_refresh"),  # the server's
    "flow_prepare": ("mcpd.oauth.manager", "AuthManager", "_prepare"),  # the flow's
    "callback_converse": ("mcpd.oauth.callback", "CallbackListener", "_converse"),  # a callback's
    "callback_admit": ("mcpd.oauth.callback", "CallbackListener", "_admit"),  # the listener's
    "operations_tools": ("mcpd.operations", "Operations", "tools"),  # a request's
    # A connection's: in its read loop, and in its socket's readiness callback.
    "connection_handle": ("mcpd.connection", "ClientConnection", "_handle"),
    "connection_take": ("mcpd.connection", "ClientConnection", "_handled_at_once"),
    "reload": ("mcpd.daemon", "Daemon", "reload"),  # a reload's
    "store_save": ("mcpd.store", "CredentialStore", "save"),  # not a fault: a full disk
}


def _inject(point: str, count: int, kind: str, text: str, only: str | None) -> None:
    module_name, class_name, method_name = POINTS[point]
    cls = getattr(importlib.import_module(module_name), class_name)
    original = getattr(cls, method_name)
    left = [count]

    armed = os.environ.get("MCPD_TEST_FAULT_WHILE")

    def fire(target: Any) -> None:
        name = getattr(target, "name", getattr(target, "server", None))
        if left[0] <= 0 or (only is not None and name != only):
            return
        if armed is not None and not os.path.exists(armed):
            return
        left[0] -= 1
        if kind == "ENOSPC":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        raise RuntimeError(f"injected fault at {point} (holding {text})")

    if inspect.iscoroutinefunction(original):

        @functools.wraps(original)
        async def faulty(self: Any, *args: Any, **kwargs: Any) -> Any:
            fire(self)
            return await original(self, *args, **kwargs)

    else:

        @functools.wraps(original)
        def faulty(self: Any, *args: Any, **kwargs: Any) -> Any:
            fire(self)
            return original(self, *args, **kwargs)

    setattr(cls, method_name, faulty)


def main() -> None:
    text = os.environ.get("MCPD_TEST_FAULT_TEXT", "")
    only = os.environ.get("MCPD_TEST_FAULT_ONLY")
    for spec in filter(None, os.environ.get("MCPD_TEST_FAULTS", "").split(",")):
        point, _, rest = spec.partition(":")
        count, _, kind = rest.partition(":")
        _inject(point, int(count or 1), kind, text, only)
    from mcpd.cli import main as mcpd_main

    sys.argv[0] = "mcpd"
    sys.exit(mcpd_main())


if __name__ == "__main__":
    main()
