"""A machine's credentials: client credentials (`grant = "client_credentials"`).

`MachineCredentials` is the `Credentials` of a server configured with the
client's own credentials (the MCP extension `io.modelcontextprotocol/oauth-
client-credentials`; the sans-IO grant and client assertion are in
mcpd/oauth/machine.py). Everything else is as for a user's tokens (one record
per server, encrypted, saved before use; one request at a time; the refresh
schedule of mcpd/oauth/refresh.py; backoff on passing failures), with three
differences:

- "Refreshing" is requesting a new token with the client credentials, before
  the current one expires (at 70-80% of its life, as a refresh), when a server
  refuses it, and when there is none at all: the first 401 of a server that
  has no token gets one, with no user and no browser.
- A refusal (`invalid_client`, say) puts the server in `needs_auth` with the
  authorization server's error code and description, and no more requests
  are made by the daemon's own doing until `mcpctl auth NAME` (`sign_in`)
  gets a token or the config changes; `mcpctl logout NAME` stops them too.
- The private key file is read at every request, so a replaced key is used at
  once, and one that became readable by others is refused.

Never a loop: after a 401, a token is requested by the server's own doing
(`may_obtain`) at most once per RETRY_GAP_SECONDS; a server that refuses a
fresh token goes to `needs_auth`.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from .config import OAuthSettings
from .credentials import Credentials
from .oauth import machine
from .oauth.discovery import Challenge
from .oauth.driver import drive
from .oauth.flow import ServerRefused
from .oauth.messages import OAuthError
from .oauth.model import CredentialRecord
from .oauth.refresh import catch_up_at, is_transient, refresh_at
from .states import Event

if TYPE_CHECKING:
    from .server import ServerRuntime

log = logging.getLogger(__name__)

RETRY_GAP_SECONDS: Final = 30.0


def credentials_for(
    settings: bool | OAuthSettings | None, challenge: Callable[[], Challenge | None]
) -> Callable[..., Credentials]:
    """What makes a server's credentials: `MachineCredentials` for client
    credentials (`challenge`: the server's last 401 challenge, for discovery),
    else `Credentials`."""
    if not machine.is_machine(settings):
        return Credentials
    return functools.partial(MachineCredentials, challenge)


class MachineCredentials(Credentials):
    def __init__(
        self, challenge: Callable[[], Challenge | None], *args: Any, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        assert self.settings is not None
        assert machine.is_machine(self.settings)
        self.client_settings: OAuthSettings = self.settings
        self._challenge = challenge
        self._obtained_for_401 = -RETRY_GAP_SECONDS
        # Why no token is requested by the daemon's own doing (a refusal, a sign-out)
        # until `mcpctl auth` gets one; None: a new one can always be asked for.
        self._stopped: str | None = None

    def _unrefreshable(self) -> str | None:
        return self._stopped

    def _plan(self, now: float | None = None) -> None:
        """Request a new token when a refresh would be made; nothing lapses."""
        schedule, tokens = self.schedule, self.tokens
        schedule.plan(None)  # forget past failures
        if tokens is None or self._stopped is not None:
            return
        schedule.due = refresh_at(tokens, schedule.rng, renewable=True)
        if schedule.due is not None and now is not None and schedule.due < now:
            schedule.due = catch_up_at(now, tokens, schedule.rng)

    def may_obtain(self) -> bool:
        """After a 401: whether to request a token now, by the server's own doing:
        when none is held (or it expired), and not again within RETRY_GAP_SECONDS."""
        now = time.monotonic()
        if self._stopped is not None or self.bearer() is not None:
            return False
        if now - self._obtained_for_401 < RETRY_GAP_SECONDS:
            return False
        self._obtained_for_401 = now
        return True

    async def _request(self, *, rediscover: bool) -> CredentialRecord:
        settings = self.client_settings
        path = settings.private_key_file
        key = None
        if path is not None:
            from .oauth.assertion import load_private_key  # cryptography: only for a key

            key = load_private_key(path)
        step = machine.obtain(
            settings,
            key,
            server=self.server,
            url=self.url,
            challenge=self._challenge(),
            stored=self.record,
            rediscover=rediscover,
            now=time.time(),
        )
        return await drive(step, self._reach())

    async def _refresh(self) -> None:
        """A new token (the single flight's work, under the lock)."""
        try:
            record = await self._request(rediscover=False)
        except ServerRefused as exc:
            if is_transient(exc.status, exc.error):
                self._refresh_failed(str(exc))
            else:
                self._refused_for_good(str(exc))
            return
        except machine.KeyFileError as exc:
            self._refused_for_good(f"oauth.private_key_file: {exc}")
            return
        except machine.Unacceptable as exc:
            self._refused_for_good(str(exc))
            return
        except OAuthError as exc:
            self._refresh_failed(str(exc))
            return
        self._stopped = None
        await self._persist(record)
        self._plan()
        self._wake.set()
        log.info("requested a new access token (client credentials)", extra={"server": self.server})
        self._listener.refreshed()

    def _refused_for_good(self, error: str) -> None:
        self._stopped = error
        self.schedule.plan(None)
        self._wake.set()
        log.warning("the token request was refused", extra={"server": self.server, "error": error})
        self._listener.refresh_refused(
            f"{error}; check the client credentials in [servers.{self.server}].oauth and run "
            f"`mcpctl reload`, or `mcpctl auth {self.server}` to try again"
        )

    async def obtain(self) -> None:
        """A new token now, the authorization server found afresh (`mcpctl auth`);
        OAuthError says why not."""
        async with self._lock:
            try:
                record = await self._request(rediscover=True)
            except machine.KeyFileError as exc:
                raise OAuthError(f"oauth.private_key_file: {exc}") from None
            self._stopped = None
            await self._persist(record)
            self.quarantined = None
            self._plan()
            self._wake.set()
        log.info("requested a new access token (client credentials)", extra={"server": self.server})

    async def replace(self, record: CredentialRecord) -> None:
        """As for any credentials; a record without tokens (`mcpctl logout`) also
        stops the requests of the daemon's own doing, until `mcpctl auth`."""
        if record.tokens is None:
            self._stopped = f"signed out; `mcpctl auth {self.server}` requests a new token"
        await super().replace(record)


async def sign_in(runtime: ServerRuntime) -> None:
    """`mcpctl auth NAME` for client credentials: no browser, no callback, a new
    token now (OAuthError if refused), then the sessions use it."""
    credentials = runtime.credentials
    assert isinstance(credentials, MachineCredentials)
    runtime.begin_authorization()
    await credentials.obtain()
    runtime.authorized()


async def connect_with_new_token(runtime: ServerRuntime, failure: str) -> None:
    """The server answered 401 and no usable token is held: request one (the
    sessions retry when it is in place). A passing failure is retried by the
    schedule, the server `failed` meanwhile; a refusal leaves it `needs_auth`."""
    credentials = runtime.credentials
    if await credentials.refresh(None):
        return  # the runtime was told (`refreshed`): its sessions connect again
    error = credentials.schedule.last_error
    if error is not None:
        runtime.machine.handle(
            Event.ERROR,
            error=f"requesting an access token failed: {error}",
            retry_at=credentials.schedule.due,
        )
    else:  # refused (which said why: this is ignored then), or not possible now
        runtime.machine.handle(Event.AUTH_REQUIRED, error=failure)
