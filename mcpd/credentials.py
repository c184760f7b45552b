"""One server's credentials, and the one object that changes them.

Theory of operation
-------------------
`Credentials` owns a server's `CredentialRecord`. Every change to it (a
sign-in, a sign-out, a forgotten client registration, a refresh) goes through
here, one at a time under one lock, and is written to the encrypted store
before anything uses it. Readers take `bearer()`: the access token to send,
never one known to have expired.

Refreshes are single flight. Whoever needs a new access token (the schedule,
a session whose request the server refused, `mcpctl token`) calls
`refresh(seen)` with the token it saw; if that token was replaced meanwhile
the answer is True at once. Otherwise one refresh runs, as a task of the
credentials' own, shielded: a caller that is cancelled (an editor that left,
a session torn down) only stops waiting, and a refresh token the
authorization server has rotated is never dropped half-way.

`run` makes the refreshes the schedule asks for (`oauth.refresh`), and
retries failed saves. A refresh that cannot be made at all (no refresh token,
no client, or a client of another authorization server than the tokens')
clears the schedule instead of retrying, and no two attempts come less than
MIN_ATTEMPT_GAP apart: never a loop. Such tokens lapse instead when their
access token expires: `run` tells the server then (`access_expired`, with why
and what to do), so that it shows `needs_auth` at once rather than at the
first refused request.

A save that fails (a full disk) keeps the new record in memory and in use (the
authorization server may have rotated the refresh token: the old one is
dead), and `run` writes it again with backoff; status says so meanwhile.

At start, a stored access token that has expired is refreshed (`ready`) before
any request uses it; one that cannot be read is moved aside by the store and
noted (`quarantined`), and the server signs in again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import anyio
import msgspec
from anyio.abc import TaskGroup, TaskStatus

from . import logs
from .config import OAuthSettings
from .oauth.driver import Reach, drive
from .oauth.flow import ServerRefused, effective_resource, refresh
from .oauth.messages import OAuthError
from .oauth.model import CredentialRecord, TokenSet
from .oauth.refresh import RefreshSchedule, is_transient, next_wake, retry_delay
from .store import UnreadableRecord

log = logging.getLogger(__name__)

SaveRecord = Callable[[CredentialRecord], Awaitable[None]]
LoadRecord = Callable[[str, str], Awaitable[CredentialRecord | None]]
# The shortest time between two refresh attempts of the schedule's, whatever
# the tokens say (a token that lives zero seconds must not make a loop).
MIN_ATTEMPT_GAP = 1.0


class CredentialsListener(Protocol):
    """What the server is told of its credentials."""

    def refreshed(self) -> None: ...
    def refresh_failing(self, error: str, retry_at: float) -> None: ...
    def refresh_refused(self, reason: str) -> None: ...
    def credentials_changed(self) -> None: ...
    def access_expired(self, reason: str) -> None: ...


def unrefreshable(record: CredentialRecord | None) -> str | None:
    """Why these credentials cannot be refreshed; None if they can."""
    if record is None or record.tokens is None:
        return "no tokens"
    if record.tokens.refresh_token is None:
        return "the authorization server issued no refresh token"
    if record.client is None or record.authorization is None:
        return "no client registration is stored"
    if record.bound_client() is None:
        # Client credentials are never used at another authorization server.
        return "the stored client registration is for another authorization server"
    return None


def expiry_notice(server: str, why: str) -> str:
    """What the server says once its access token expired and `why` it cannot be
    refreshed: the reason, and the command that helps."""
    return (
        f"the access token expired and cannot be renewed ({why}); "
        f"sign in again: mcpctl auth {server}"
    )


@dataclass
class _Flight:
    """The refresh under way: of which access token, and when it is over."""

    replaces: str
    done: anyio.Event = field(default_factory=anyio.Event)


class Credentials:
    def __init__(
        self,
        server: str,
        url: str,
        *,
        applies: bool,
        save: SaveRecord,
        load: LoadRecord,
        reach: Callable[[], Reach],
        listener: CredentialsListener,
        settings: OAuthSettings | None = None,
    ) -> None:
        self.server = server
        # The server's OAuth settings; a refresh sends the resource they say.
        self.settings = settings
        self.url = url
        # False: the server takes no OAuth (oauth = false, or a configured Authorization).
        self.applies = applies
        self._save = save
        self._load = load
        self._reach = reach
        self._listener = listener
        self._record: CredentialRecord | None = None
        self.loaded = False
        self.quarantined: str | None = None  # why the stored record was moved aside
        self.schedule = RefreshSchedule()
        self.save_error: str | None = None  # the record in use is not in the store yet
        self.save_due: float | None = None
        self._save_failures = 0
        self._lock = anyio.Lock()
        self._flight: _Flight | None = None
        self._tg: TaskGroup | None = None
        self._wake = anyio.Event()
        self._lapsed_tokens: TokenSet | None = None  # whose lapse the server was told

    # --- Reading --------------------------------------------------------------------

    @property
    def record(self) -> CredentialRecord | None:
        return self._record

    @record.setter
    def record(self, record: CredentialRecord | None) -> None:
        # The one place a record in use changes (none is changed in place): its
        # tokens are redacted from log lines from here on.
        self._record = record
        if record is not None:
            logs.add_secrets(record.secrets())

    @property
    def tokens(self) -> TokenSet | None:
        return self.record.tokens if self.record is not None else None

    def bearer(self) -> str | None:
        """The access token to send, if OAuth applies and one is held that has not expired."""
        tokens = self.tokens
        if not self.applies or tokens is None or tokens.expired(time.time()):
            return None
        return tokens.access_token

    def secrets(self) -> list[str]:
        return self.record.secrets() if self.record is not None else []

    async def load(self) -> None:
        """Read the stored record (once, as the server starts)."""
        try:
            self.record = await self._load(self.server, self.url)
        except UnreadableRecord as exc:
            self.record, self.quarantined = None, str(exc)
            log.warning("stored credentials were unreadable", extra={"server": self.server})
        self.loaded = True
        # Refreshes that fell due while the daemon was not running are spread.
        self._plan(time.time())

    async def ready(self) -> str | None:
        """Before a session connects: an access token that has expired is refreshed
        first. The reason not to connect yet, if refreshing it failed for a
        passing reason (a refused one leaves the server to sign in again)."""
        tokens = self.tokens
        if not self.applies or tokens is None or not tokens.expired(time.time()):
            return None
        if self._unrefreshable() is not None:
            return None
        if await self.refresh(tokens.access_token):
            return None
        error = self.schedule.last_error
        return f"the access token expired; refreshing it failed: {error}" if error else None

    async def fresh_tokens(self) -> TokenSet | None:
        """The tokens, refreshed first if the refresh is due or the token expired;
        None if no unexpired token can be had."""
        tokens = self.tokens
        now = time.time()
        if tokens is not None and (self.schedule.is_due(now) or tokens.expired(now)):
            await self.refresh(tokens.access_token)
            tokens = self.tokens
        return tokens if tokens is not None and not tokens.expired(time.time()) else None

    # --- Changing -----------------------------------------------------------------------

    async def replace(self, record: CredentialRecord) -> None:
        """New credentials from a sign-in, a sign-out or a client change: stored
        (or, if the store fails, held and written again later), then used."""
        async with self._lock:
            await self._persist(record)
            self.quarantined = None
            self._plan()
            self._wake.set()

    def _unrefreshable(self) -> str | None:
        """Why the tokens cannot be renewed; None if they can. (Client credentials
        renew without a refresh token, and without tokens: machine_credentials.py.)"""
        return unrefreshable(self.record)

    async def refresh(self, seen: str | None) -> bool:
        """Replace the access token `seen` (None: the current one); True once a
        newer one is in place."""
        if not self.applies:
            return False
        flight = self._flight
        if flight is None:
            tokens = self.tokens
            if tokens is None and self._unrefreshable() is not None:
                return False
            if seen is not None and tokens is not None and tokens.access_token != seen:
                return True  # replaced while the caller waited
            if self._unrefreshable() is not None:
                self._plan()
                return False
            if self._tg is None:
                return False  # the server's tasks are restarting
            flight = self._flight = _Flight(tokens.access_token if tokens is not None else "")
            self._tg.start_soon(self._fly, flight)
        await flight.done.wait()
        tokens = self.tokens
        return tokens is not None and tokens.access_token != flight.replaces

    async def _fly(self, flight: _Flight) -> None:
        try:
            with anyio.CancelScope(shield=True):
                async with self._lock:
                    await self._refresh()
        finally:
            self._flight = None
            flight.done.set()

    async def _refresh(self) -> None:
        record = self.record
        if unrefreshable(record) is not None:
            self._plan()
            return
        assert record is not None
        assert record.tokens is not None
        client = record.bound_client()
        assert client is not None
        assert record.authorization is not None
        authorization = record.authorization
        try:
            step = refresh(
                record.tokens,
                client,
                authorization.token_endpoint,
                effective_resource(self.settings, authorization.resource),
            )
            fresh = await drive(step, self._reach())
        except ServerRefused as exc:
            if is_transient(exc.status, exc.error):
                self._refresh_failed(str(exc))
            else:
                await self._refused(record, str(exc))
            return
        except OAuthError as exc:
            self._refresh_failed(str(exc))
            return
        await self._persist(
            msgspec.structs.replace(record, tokens=fresh, last_refresh_at=time.time())
        )
        self._plan()
        self._wake.set()
        log.info("refreshed the access token", extra={"server": self.server})
        self._listener.refreshed()

    def _refresh_failed(self, error: str) -> None:
        retry_at = self.schedule.failed(time.time(), error)
        self._wake.set()
        log.warning(
            "token refresh failed; will retry",
            extra={"server": self.server, "error": error, "retry_at": round(retry_at)},
        )
        self._listener.refresh_failing(error, retry_at)

    async def _refused(self, record: CredentialRecord, error: str) -> None:
        # A newer record may be in the store (written just before a crash, say);
        # not if ours is newer than the store's (a save still pending).
        stored = None
        if self.save_error is None:
            try:
                stored = await self._load(record.server, record.url)
            except UnreadableRecord:
                stored = None
        if (
            stored is not None
            and stored.tokens is not None
            and record.tokens is not None
            and stored.tokens.refresh_token != record.tokens.refresh_token
        ):
            self.record = stored
            self._plan(time.time())
            self._wake.set()
            self._listener.refreshed()
            return
        self.schedule.plan(None)
        self._wake.set()
        self._listener.refresh_refused(f"the authorization server refused the refresh: {error}")

    def _plan(self, now: float | None = None) -> None:
        """Schedule the refresh of the current tokens, if they can be refreshed, and
        their lapse if not."""
        refreshable = self._unrefreshable() is None
        self.schedule.plan(self.tokens, now, refreshable=refreshable)

    def _lapsed(self) -> None:
        """The access token expired, and nothing can renew it: the server is told."""
        why = self._unrefreshable()
        if why is None or self.tokens is None or self.tokens is self._lapsed_tokens:
            return  # renewable after all, or said already
        self._lapsed_tokens = self.tokens
        log.info(
            "the access token expired and cannot be refreshed",
            extra={"server": self.server, "reason": why},
        )
        self._listener.access_expired(expiry_notice(self.server, why))

    # --- Saving -------------------------------------------------------------------------

    async def _persist(self, record: CredentialRecord) -> None:
        try:
            await self._save(record)
        except OSError as exc:
            self._save_failed(exc)
        else:
            if self.save_error is not None:
                log.info("saved the credentials after all", extra={"server": self.server})
            self.save_error, self.save_due, self._save_failures = None, None, 0
        self.record = record
        self._listener.credentials_changed()

    def _save_failed(self, exc: OSError) -> None:
        self._save_failures += 1
        self.save_error = f"saving the credentials failed ({exc.strerror or type(exc).__name__})"
        self.save_due = time.time() + retry_delay(self._save_failures)
        log.error(
            "could not save the credentials; keeping them in memory and retrying",
            extra={"server": self.server, "error": self.save_error, "retry_at": self.save_due},
        )
        self._wake.set()

    async def _retry_save(self) -> None:
        async with self._lock:
            if self.save_error is not None and self.record is not None:
                await self._persist(self.record)

    # --- The loop -----------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Refresh when due and retry failed saves, until cancelled; started once
        refreshes can be made."""
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                task_status.started()
                while True:
                    now = time.time()
                    if self.save_due is not None and now >= self.save_due:
                        await self._retry_save()
                    if self.schedule.is_due(now):
                        await self.refresh(None)
                        if self.schedule.is_due(time.time()):
                            self.schedule.due = time.time() + MIN_ATTEMPT_GAP
                    if self.schedule.lapsed(time.time()):
                        self._lapsed()
                    self._wake = anyio.Event()
                    schedule = self.schedule
                    due = min(
                        (
                            d
                            for d in (schedule.due, schedule.lapses, self.save_due)
                            if d is not None
                        ),
                        default=None,
                    )
                    with anyio.move_on_after(next_wake(time.time(), due)):
                        await self._wake.wait()
        finally:
            self._tg = None
