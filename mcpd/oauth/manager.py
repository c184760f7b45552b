"""Authorization flows as the daemon runs them: one per server, shared by everyone.

`start` begins the flow for a server, or joins the one already under way, so
several `mcpctl auth NAME` (or an editor plugin and a terminal) share one
browser tab and all see its outcome. The loopback listener runs only while
some flow waits for its callback. A flow that is not completed within ten
minutes fails. Tokens are written to the encrypted store before the server
uses them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit

import anyio
from anyio.abc import TaskGroup, TaskStatus

from ..store import AuthorizationServer, ClientRegistration, CredentialRecord
from .callback import CallbackListener, redirect_uri
from .discovery import discover
from .flow import (
    STATE_LIFETIME_SECONDS,
    ClientRegistrationRequired,
    PendingAuthorization,
    ServerRefused,
    begin,
    choose_client,
    choose_scope,
    client_authentication,
    exchange,
    register,
    union_scope,
)
from .http import HttpRequest, OAuthError, Step, drive

if TYPE_CHECKING:
    from ..server import ServerRuntime

log = logging.getLogger(__name__)

SaveRecord = Callable[[CredentialRecord], Awaitable[None]]
# Errors that mean the authorization server does not know our registered client.
FORGET_CLIENT_ON = frozenset({"invalid_client", "unauthorized_client"})


@dataclass
class Flow:
    runtime: ServerRuntime
    pending: PendingAuthorization | None = None
    error: str | None = None
    done: anyio.Event = field(default_factory=anyio.Event)

    @property
    def url(self) -> str | None:
        return self.pending.url if self.pending else None

    def finish(self, error: str | None) -> None:
        self.error = error
        self.done.set()


class AuthManager:
    def __init__(self, callback_port: int, save: SaveRecord, tg: TaskGroup) -> None:
        self.callback_port = callback_port
        self._save = save
        self._tg = tg
        self.flows: dict[str, Flow] = {}
        self._listener_scope: anyio.CancelScope | None = None
        self._port: int | None = None

    # --- The loopback listener ------------------------------------------------------

    async def _listen(self, *, task_status: TaskStatus[int]) -> None:
        with anyio.CancelScope() as scope:
            self._listener_scope = scope
            try:
                listener = CallbackListener(
                    self.callback_port, self._callback, self._stop_listener_if_idle
                )
                await listener.serve(task_status=task_status)
            finally:
                self._listener_scope = None
                self._port = None

    async def _ensure_listener(self) -> int:
        if self._port is None:
            try:
                self._port = await self._tg.start(self._listen)
            except OSError as exc:
                raise OAuthError(
                    f"cannot listen for the sign-in callback on 127.0.0.1:{self.callback_port} "
                    f"({exc.strerror}); another program uses that port: set callback_port in "
                    "the [daemon] table of the config to a free port (0 picks any)"
                ) from None
        assert self._port is not None
        return self._port

    def _stop_listener_if_idle(self) -> None:
        waiting = any(f.pending is not None and not f.done.is_set() for f in self.flows.values())
        if not waiting and self._listener_scope is not None:
            self._listener_scope.cancel()

    # --- Flows ----------------------------------------------------------------------------

    async def start(self, runtime: ServerRuntime, *, restart: bool = False) -> Flow:
        """Begin the flow for this server, or join the one under way (or, with
        `restart`, abandon that one and begin afresh with a new registration)."""
        flow = self.flows.get(runtime.name)
        if flow is not None and not flow.done.is_set():
            if not restart:
                return flow
            flow.finish("replaced by a new sign-in (mcpctl auth --restart)")
        if restart and runtime.record is not None and runtime.record.client is not None:
            await self._keep_client(runtime, None)
        flow = Flow(runtime)
        self.flows[runtime.name] = flow
        runtime.begin_authorization()
        try:
            flow.pending = await self._prepare(runtime)
        except ClientRegistrationRequired as exc:
            runtime.client_registration_required(str(exc))
            flow.finish(str(exc))
            return flow
        except OAuthError as exc:
            runtime.authorization_failed(str(exc))
            flow.finish(str(exc))
            return flow
        self._tg.start_soon(self._expire, flow)
        log.info("authorization started", extra={"server": runtime.name})
        return flow

    async def _prepare(self, runtime: ServerRuntime) -> PendingAuthorization:
        config = runtime.entry.config
        assert config is not None
        settings = config.oauth if not isinstance(config.oauth, bool) else None
        if settings is not None and settings.redirect_uri:
            redirect = settings.redirect_uri
            await self._ensure_listener()
        else:
            redirect = redirect_uri(await self._ensure_listener())
        http = runtime.http()
        discovery = await drive(discover(config.url, runtime.challenge), *http)
        scope = union_scope(
            choose_scope(settings, runtime.challenge, discovery), runtime.required_scope
        )
        stored = runtime.record.client if runtime.record else None
        identity = choose_client(settings, discovery, stored, redirect)
        client = identity.client
        if client is None:
            client = await drive(register(discovery, redirect, scope), *http)
            log.info("registered a client", extra={"server": runtime.name})
            # Kept at once: the next sign-in reuses it, even if this one fails.
            await self._keep_client(runtime, client)
        return begin(discovery, client, scope, redirect)

    async def _keep_client(self, runtime: ServerRuntime, client: ClientRegistration | None) -> None:
        config = runtime.entry.config
        assert config is not None
        record = runtime.record or CredentialRecord(server=runtime.name, url=config.url)
        record.client = client
        await self._save(record)
        runtime.record = record

    async def _expire(self, flow: Flow) -> None:
        with anyio.move_on_after(STATE_LIFETIME_SECONDS):
            await flow.done.wait()
        if not flow.done.is_set():
            message = "the sign-in was not completed within 10 minutes; start it again"
            flow.runtime.authorization_failed(message)
            flow.finish(message)
        self._stop_listener_if_idle()

    async def _callback(self, query: str) -> tuple[bool, str]:
        params = dict(parse_qsl(query))
        state = params.get("state", "")
        for flow in self.flows.values():
            if flow.pending is not None and not flow.done.is_set() and flow.pending.matches(state):
                return await self._complete(flow, query)
        return False, (
            "This sign-in is unknown or already finished. Run `mcpctl auth NAME` to start again."
        )

    async def paste(self, runtime: ServerRuntime, text: str) -> tuple[bool, str]:
        """Finish with what the user pasted: the redirected URL, or just the code."""
        flow = self.flows.get(runtime.name)
        if flow is None or flow.done.is_set() or flow.pending is None:
            return (
                False,
                f"no sign-in to {runtime.name!r} is under way; run `mcpctl auth {runtime.name}`",
            )
        text = text.strip()
        query = urlsplit(text).query if "?" in text or "://" in text else ""
        if not query:
            query = urlencode({"code": text, "state": flow.pending.state})
        outcome = await self._complete(flow, query)
        self._stop_listener_if_idle()
        return outcome

    async def _complete(self, flow: Flow, query: str) -> tuple[bool, str]:
        runtime, pending = flow.runtime, flow.pending
        assert pending is not None
        try:
            code = pending.accept(query)
            tokens = await drive(exchange(pending, code), *runtime.http())
        except OAuthError as exc:
            stored = runtime.record.client if runtime.record else None
            if (
                isinstance(exc, ServerRefused)
                and exc.error in FORGET_CLIENT_ON
                and (stored is not None and stored.client_id == pending.client.client_id)
            ):
                # The server no longer knows the registered client: register anew next time.
                await self._keep_client(runtime, None)
            runtime.authorization_failed(str(exc))
            flow.finish(str(exc))
            return False, str(exc)
        config = runtime.entry.config
        assert config is not None
        server = pending.discovery.server
        record = CredentialRecord(
            server=runtime.name,
            url=config.url,
            tokens=tokens,
            client=pending.client,
            authorization=AuthorizationServer(
                issuer=server.issuer,
                token_endpoint=server.token_endpoint,
                revocation_endpoint=server.revocation_endpoint,
                resource=pending.discovery.resource,
            ),
            last_refresh_at=None,
        )
        await self._save(record)  # stored before anything uses the tokens
        runtime.authorized(record)
        flow.finish(None)
        log.info("authorized", extra={"server": runtime.name})
        return True, f"mcpd is signed in to {runtime.name}."

    async def logout(self, runtime: ServerRuntime, forget_client: bool) -> bool:
        """Revoke (RFC 7009) where possible, then forget the tokens; True if revoked."""
        record = runtime.record
        revoked = False
        if record is not None and record.tokens is not None and record.client is not None:
            endpoint = record.authorization.revocation_endpoint if record.authorization else None
            if endpoint is not None:
                try:
                    await drive(_revoke(endpoint, record), *runtime.http())
                    revoked = True
                except OAuthError as exc:
                    log.warning(
                        "revocation failed", extra={"server": runtime.name, "error": str(exc)}
                    )
        if record is not None:
            record.tokens = None
            if forget_client:
                record.client = None
                record.authorization = None
            await self._save(record)
        runtime.logged_out(record)
        return revoked


def _revoke(endpoint: str, record: CredentialRecord) -> Step[None]:
    assert record.tokens is not None
    assert record.client is not None
    tokens = [
        (record.tokens.refresh_token, "refresh_token"),
        (record.tokens.access_token, "access_token"),
    ]
    for token, hint in tokens:
        if token is None:
            continue
        headers, form = client_authentication(
            record.client, {"token": token, "token_type_hint": hint}
        )
        response = yield HttpRequest("POST", endpoint, headers, form=form)
        if response.status != 200:
            raise OAuthError(f"the revocation endpoint answered HTTP {response.status}")
