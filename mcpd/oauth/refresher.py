"""Keeping one server's access token fresh, for everyone who uses it.

Single flight: whoever needs a refresh (the schedule, a request the server
refused, `mcpctl token`) asks with the token it saw; refreshes are serialised,
and a caller whose token was already replaced while it waited gets that new
token without another request, so one rotation never races another. Persist
first: new tokens are in the encrypted store before anything uses them.

The loop sleeps until the next refresh is due (looking at the wall clock at
least every MAX_SLEEP_SECONDS meanwhile) or, with nothing scheduled, until
the plan changes; every change of the schedule wakes it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio

from ..store import CredentialRecord
from .flow import ServerRefused, refresh
from .http import OAuthError, drive
from .refresh import RefreshSchedule, is_transient, next_wake

if TYPE_CHECKING:
    from ..server import ServerRuntime

log = logging.getLogger(__name__)

SaveRecord = Callable[[CredentialRecord], Awaitable[None]]
LoadRecord = Callable[[str, str], Awaitable[CredentialRecord | None]]


class Refresher:
    def __init__(self, runtime: ServerRuntime, save: SaveRecord, load: LoadRecord) -> None:
        self.runtime = runtime
        self._save = save
        self._load = load
        self._lock = anyio.Lock()
        self.schedule = RefreshSchedule()
        self._replanned = anyio.Event()
        record = runtime.record
        # Stored tokens whose refresh fell due while the daemon was not running
        # are refreshed soon, spread, not all at once.
        self.schedule.plan(record.tokens if record else None, time.time())

    async def run(self) -> None:
        """Refresh whenever it is due, by the wall clock, until cancelled."""
        while True:
            if self.schedule.is_due(time.time()):
                tokens = self.runtime.record.tokens if self.runtime.record else None
                if tokens is not None:
                    await self.refresh(tokens.access_token)
                else:
                    self.schedule.plan(None)
            self._replanned = anyio.Event()
            with anyio.move_on_after(next_wake(time.time(), self.schedule.due)):
                await self._replanned.wait()

    def _changed(self) -> None:
        """The schedule changed: the loop looks again (it may sleep with no deadline)."""
        self._replanned.set()

    def planned(self, record: CredentialRecord | None) -> None:
        """New credentials from elsewhere (a sign-in, a sign-out)."""
        self.schedule.plan(record.tokens if record else None)
        self._changed()

    async def refresh(self, seen: str | None) -> bool:
        """Replace the access token `seen`; True once a newer one is in place."""
        async with self._lock:
            record = self.runtime.record
            tokens = record.tokens if record else None
            if tokens is None:
                return False
            if seen is not None and tokens.access_token != seen:
                return True  # refreshed while we waited
            if record is None or tokens.refresh_token is None or record.client is None:
                return False
            if record.authorization is None:
                return False
            authorization = record.authorization
            try:
                step = refresh(
                    tokens, record.client, authorization.token_endpoint, authorization.resource
                )
                fresh = await drive(step, *self.runtime.http())
            except ServerRefused as exc:
                if is_transient(exc.status, exc.error):
                    return self._failed(str(exc))
                return await self._refused(record, str(exc))
            except OAuthError as exc:
                return self._failed(str(exc))
            updated = CredentialRecord(
                server=record.server,
                url=record.url,
                tokens=fresh,
                client=record.client,
                authorization=authorization,
                last_refresh_at=time.time(),
            )
            await self._save(updated)  # persist first
            self.runtime.record = updated
            self.schedule.plan(fresh)
            self._changed()
            self.runtime.refresh_succeeded()
            log.info("refreshed the access token", extra={"server": self.runtime.name})
            return True

    def _failed(self, error: str) -> bool:
        retry_at = self.schedule.failed(time.time(), error)
        self._changed()
        log.warning(
            "token refresh failed; will retry",
            extra={"server": self.runtime.name, "error": error, "retry_at": round(retry_at)},
        )
        self.runtime.refresh_failing()
        return False

    async def _refused(self, record: CredentialRecord, error: str) -> bool:
        # A newer token may be in the store (written before a crash, say).
        stored = await self._load(record.server, record.url)
        if (
            stored is not None
            and stored.tokens is not None
            and record.tokens is not None
            and stored.tokens.refresh_token != record.tokens.refresh_token
        ):
            self.runtime.record = stored
            self.schedule.plan(stored.tokens, time.time())
            self._changed()
            return True
        self.schedule.plan(None)
        self._changed()
        self.runtime.refresh_refused(f"the authorization server refused the refresh: {error}")
        return False
