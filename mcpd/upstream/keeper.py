"""Keeping one upstream session connected: connect, serve, back off, repeat.

A keeper owns the reconnect loop of one `UpstreamSession`. It reports to its
owner through three callbacks: connected; lost (with the failure and, when it
will retry by itself, the time of the retry); and retrying. After a session
that was up drops, it reconnects at once, once; after a failed attempt it
backs off (exponential, capped, jittered); when the server wants
authorization it waits until someone says the credentials changed
(`retry_now`), since retrying earlier changes nothing. Whoever waits for the
server can cut a backoff short with `retry_now`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import anyio

from ..http import HttpError
from .session import UpstreamSession
from .transport import AuthorizationRequired, UpstreamError, describe

BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 60.0


def backoff_delay(attempt: int, rng: Callable[[], float] = random.random) -> float:
    """Exponential, capped, with full jitter over the upper half of the interval."""
    exponent = min(max(0, attempt - 1), 32)  # past the cap long before; no overflow
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**exponent)
    return float(ceiling * (0.5 + rng() / 2))


class SessionKeeper:
    """Keeps one upstream session connected: connect, serve, back off, repeat."""

    def __init__(
        self,
        session: UpstreamSession,
        on_connected: Callable[[], None],
        on_lost: Callable[[BaseException, float | None], None],
        on_retry: Callable[[], None] = lambda: None,
    ) -> None:
        self.session = session
        self._on_connected = on_connected
        self._on_lost = on_lost
        self._on_retry = on_retry
        self.connected = anyio.Event()
        # Set when the attempt under way (or the next one, during a backoff) fails.
        self.attempt_failed = anyio.Event()
        self._wake = anyio.Event()

    def retry_now(self) -> None:
        """Cut the backoff short: someone is waiting for the server."""
        self._wake.set()

    async def run(self) -> None:
        attempt = 0
        while True:
            failure: BaseException
            try:
                async with anyio.create_task_group() as tg:
                    try:
                        await self.session.open(tg)
                    except (UpstreamError, HttpError) as exc:
                        failure = exc
                    else:
                        attempt = 0
                        self.connected.set()
                        self._on_connected()
                        failure = await self.session.serve()
                    tg.cancel_scope.cancel()
            except BaseException as exc:
                # Cancelled (`close` may follow) or a fault (the server restarts):
                # the requests forwarded without a task end with the attempt's tasks.
                self.session.abandon_forwarded()
                if isinstance(exc, Exception):  # whatever editors wait for is answered now
                    self.session.lost("an internal error; it restarts")
                raise
            was_connected = self.connected.is_set()
            self.connected = anyio.Event()
            self.session.lost(describe(failure))
            failed, self.attempt_failed = self.attempt_failed, anyio.Event()
            failed.set()
            if isinstance(failure, AuthorizationRequired):
                # Retrying changes nothing until the credentials do: wait for that.
                self._wake = anyio.Event()
                self._on_lost(failure, None)
                await self._wake.wait()
                self._on_retry()
                continue
            if was_connected:
                self._on_lost(failure, None)  # reconnect at once, once
                continue
            attempt += 1
            delay = backoff_delay(attempt)
            self._wake = anyio.Event()
            self._on_lost(failure, time.time() + delay)
            with anyio.move_on_after(delay):
                await self._wake.wait()
            self._on_retry()

    async def close(self) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            await self.session.close()
