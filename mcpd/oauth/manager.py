"""Authorization flows as the daemon runs them: one per server, shared by everyone.

Theory of operation
-------------------
The manager runs in its own task group (`run`), and each flow is one task of
it, from discovery to stored tokens. `start` begins the flow for a server, or
joins the one under way; either way it returns once the flow's authorization
URL exists (or the flow has ended), so several `mcpctl auth NAME` (or an
editor plugin and a terminal) share one browser tab and all see its outcome.

A flow is a browser sign-in (the authorization code flow above) or a device
sign-in (RFC 8628, oauth/device.py), as the first asker wanted; one that
wants either (`device_if_offered`) gets a device sign-in where the
authorization server offers one. A device flow is ready once its user code
exists, and its task polls the token endpoint at the server's interval until
the user has signed in, refused, or let the code expire. Anyone may join a
flow under way, except that a device sign-in cannot join a browser one.

What completes a flow, the browser's redirect to the loopback listener or a
pasted address, is handed to the flow's own task, which checks it, exchanges
the code, stores the tokens and answers. Every flow ends: completed, failed,
expired (ten minutes; a device code when it expires), cancelled, replaced
(`--restart`), or with `needs_client_registration`. Each flow task is a
supervision boundary: an unexpected exception in it ends that flow, with an
error that says so, and nothing else.

Editors that need a sign-in are given a link (`link`): a single-use
`/connect/<nonce>` on the loopback listener, valid an hour, which starts
(or joins) the server's flow when the user opens it and redirects to its
authorization URL. One link per server is outstanding at a time.

The loopback listener runs only while some flow waits for its callback or a
link is outstanding. Tokens are written to the encrypted store before the
server uses them.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit

import anyio
import msgspec
from anyio.abc import TaskGroup, TaskStatus

from .. import logs, machine_credentials
from ..protocol import SignInMethod
from ..waiting import first_of
from .callback import CONNECT_PATH, CallbackListener, redirect_uri
from .discovery import Discovery, discover, offers_device_sign_in
from .driver import drive
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
from .messages import HttpRequest, HttpResponse, OAuthError, Step
from .model import AuthorizationServer, ClientRegistration, CredentialRecord, TokenSet

if TYPE_CHECKING:
    from ..config import OAuthSettings
    from ..server import ServerRuntime
    from . import device

log = logging.getLogger(__name__)

# Errors that mean the authorization server does not know our registered client.
FORGET_CLIENT_ON = frozenset({"invalid_client", "unauthorized_client"})
# Callbacks (and pastes) a flow holds before it has looked at the first.
MAX_QUEUED_CALLBACKS = 16
# A link not used by then is dropped: long enough that a link opened late (after
# a flow it would have joined expired) still starts a fresh one.
LINK_LIFETIME_SECONDS = 3600.0


@dataclass(eq=False)
class _Link:
    """A sign-in link given to editors: opening it starts the server's flow."""

    runtime: ServerRuntime
    nonce: str = field(repr=False)
    expires: float


@dataclass
class _Answer:
    """What a callback (or a paste) is told once the flow has dealt with it."""

    succeeded: bool = False
    message: str = ""
    ready: anyio.Event = field(default_factory=anyio.Event)


@dataclass(eq=False)
class Flow:
    runtime: ServerRuntime
    method: SignInMethod = "browser"
    pending: PendingAuthorization | None = None  # a browser sign-in's
    device: device.PendingDevice | None = None  # a device sign-in's
    error: str | None = None
    # Set once the authorization URL (or the user code) exists, or the flow has
    # ended without one.
    ready: anyio.Event = field(default_factory=anyio.Event)
    done: anyio.Event = field(default_factory=anyio.Event)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)

    def __post_init__(self) -> None:
        # Callbacks and pastes, each with the answer the flow's task gives it.
        self.inbox, self.received = anyio.create_memory_object_stream[tuple[str, _Answer]](
            MAX_QUEUED_CALLBACKS
        )

    @property
    def url(self) -> str | None:
        return self.pending.url if self.pending else None

    @property
    def waiting(self) -> bool:
        """Whether the flow waits for its callback."""
        return self.pending is not None and not self.done.is_set()

    def finish(self, error: str | None) -> None:
        if not self.done.is_set():
            self.error = error
            self.done.set()
        self.ready.set()

    async def submit(self, query: str) -> tuple[bool, str]:
        """Hand a callback's query to the flow; its answer once it has dealt with it."""
        answer = _Answer()
        try:
            self.inbox.send_nowait((query, answer))
        except (anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
            return False, "This sign-in is busy or already finished; run `mcpctl auth NAME` again."
        await first_of(answer.ready, self.done)
        if not answer.ready.is_set():
            return False, self.error or "The sign-in ended before this could be used."
        return answer.succeeded, answer.message


class AuthManager:
    def __init__(self, callback_port: int) -> None:
        self.callback_port = callback_port
        self.flows: dict[str, Flow] = {}
        self._tg: TaskGroup | None = None
        self._listener: CallbackListener | None = None
        self._port: int | None = None
        # The outstanding sign-in link of each server, by server name.
        self._links: dict[str, _Link] = {}
        logs.redact_from(self)

    def secrets(self) -> list[str]:
        """The state and verifier of every flow under way, the device codes, and
        the links' nonces (see logs.redact_from; each is said as it is made)."""
        pending = [flow.pending for flow in self.flows.values() if flow.pending is not None]
        codes = [flow.device.code.device_code for flow in self.flows.values() if flow.device]
        nonces = [link.nonce for link in self._links.values()]
        return [value for p in pending for value in (p.state, p.verifier)] + codes + nonces

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """The manager's own task group, for its flows and its listener, until cancelled."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            task_status.started()
            await anyio.sleep_forever()

    # --- The loopback listener ------------------------------------------------------

    async def _listen(self, listener: CallbackListener) -> None:
        """The listener's task, and its boundary: a fault stops the listener and
        ends the flows waiting for it, and nothing else (the next flow starts a
        listener again)."""
        try:
            await listener.serve()
        except Exception:
            log.error("the sign-in callback listener failed", exc_info=True)
            # No callback can reach the flows that wait for one: end them, so that
            # their `mcpctl auth` says so rather than wait for ten minutes.
            for flow in self.flows.values():
                if flow.waiting:
                    message = (
                        "the sign-in callback listener failed in mcpd (the daemon log has the "
                        f"details); run `mcpctl auth {flow.runtime.name}` to try again"
                    )
                    flow.runtime.authorization_failed(message)
                    flow.finish(message)
                    flow.scope.cancel()
        finally:
            if self._listener is listener:
                self._listener, self._port = None, None

    def _ensure_listener(self) -> int:
        assert self._tg is not None
        if self._port is None:
            listener = CallbackListener(
                self.callback_port, self._callback, self._stop_listener_if_idle, self._connect
            )
            try:
                self._port = listener.bind()
            except OSError as exc:
                raise OAuthError(
                    f"cannot listen for the sign-in callback on 127.0.0.1:{self.callback_port} "
                    f"({exc.strerror}); another program uses that port: set callback_port in "
                    "the [daemon] table of the config to a free port (0 picks any)"
                ) from None
            self._listener = listener
            self._tg.start_soon(self._listen, listener)
        return self._port

    def _stop_listener_if_idle(self) -> None:
        waiting = any(flow.waiting for flow in self.flows.values()) or self._links
        if self._listener is not None and not waiting:
            self._listener.stop()
            self._listener, self._port = None, None

    # --- Sign-in links for editors --------------------------------------------------------

    def link(self, runtime: ServerRuntime) -> tuple[str, bool]:
        """The server's sign-in link (a new one unless one is outstanding), and
        whether it is new; OAuthError if the listener cannot run."""
        assert self._tg is not None
        now = time.monotonic()
        port = self._ensure_listener()
        current = self._links.get(runtime.name)
        if current is not None and current.runtime is runtime and current.expires > now:
            return self._url(port, current), False
        link = _Link(runtime, secrets.token_urlsafe(24), now + LINK_LIFETIME_SECONDS)
        self._links[runtime.name] = link
        logs.add_secrets(self.secrets())
        self._tg.start_soon(self._expire, link)
        return self._url(port, link), True

    @staticmethod
    def _url(port: int, link: _Link) -> str:
        return f"http://127.0.0.1:{port}{CONNECT_PATH}{link.nonce}"

    async def _expire(self, link: _Link) -> None:
        await anyio.sleep(max(0.0, link.expires - time.monotonic()))
        if self._links.get(link.runtime.name) is link:
            del self._links[link.runtime.name]
        self._stop_listener_if_idle()

    async def _connect(self, nonce: str) -> tuple[str | None, str]:
        """A link opened: start (or join) its server's flow; where to send the browser."""
        found = next(
            (link for link in self._links.values() if hmac.compare_digest(link.nonce, nonce)),
            None,
        )
        if found is None or found.expires <= time.monotonic():
            return None, (
                "This sign-in link was already used or has expired. Ask again from the "
                "editor, or run `mcpctl auth NAME` in a terminal."
            )
        del self._links[found.runtime.name]  # single use
        try:
            flow, _joined = await self.start(found.runtime)
        except OAuthError as exc:
            return None, str(exc)
        if flow.device is not None:
            return None, (
                f"A device sign-in to {found.runtime.name} is under way: open "
                f"{flow.device.code.verification_uri} and enter the code that `mcpctl auth "
                f"{found.runtime.name}` shows."
            )
        if flow.url is None:
            return None, flow.error or "The sign-in could not start."
        return flow.url, ""

    # --- Flows ----------------------------------------------------------------------------

    async def start(
        self, runtime: ServerRuntime, *, restart: bool = False, method: SignInMethod = "browser"
    ) -> tuple[Flow, bool]:
        """Begin the flow for this server, or join the one under way (or, with
        `restart`, abandon that one and begin afresh with a new registration);
        return it, once its URL (or user code) exists or it has ended, and
        whether it was joined. OAuthError for a device sign-in while a browser
        one is under way."""
        if self._tg is None:
            raise OAuthError("mcpd is not ready for sign-ins yet; try again")
        flow = self.flows.get(runtime.name)
        if flow is not None and not flow.done.is_set():
            if not restart:
                await flow.ready.wait()
                if method == "device" and flow.pending is not None and not flow.done.is_set():
                    raise OAuthError(
                        f"a sign-in to {runtime.name} in the browser is under way; finish it, "
                        f"or run `mcpctl auth {runtime.name} --device --restart` to abandon it "
                        "for a device sign-in"
                    )
                return flow, True
            flow.finish("replaced by a new sign-in (mcpctl auth --restart)")
            flow.scope.cancel()
        flow = Flow(runtime, method)
        self.flows[runtime.name] = flow
        self._tg.start_soon(self._run_flow, flow, restart)
        await flow.ready.wait()
        return flow, False

    async def _run_flow(self, flow: Flow, restart: bool) -> None:
        """One flow, start to end: the flow's supervision boundary."""
        runtime = flow.runtime
        try:
            with flow.scope:
                await self._sign_in(flow, restart)
        except ClientRegistrationRequired as exc:
            runtime.client_registration_required(str(exc))
            flow.finish(str(exc))
        except OAuthError as exc:
            runtime.authorization_failed(str(exc))
            flow.finish(str(exc))
        except Exception as exc:  # the boundary: a fault ends this flow only
            log.error(
                "a sign-in failed unexpectedly",
                extra={
                    "server": runtime.name,
                    "traceback": "".join(traceback.format_exception(exc)),
                },
            )
            message = (
                f"the sign-in failed in mcpd ({type(exc).__name__}); the daemon log has the "
                f"details; run `mcpctl auth {runtime.name}` to try again"
            )
            runtime.authorization_failed(message)
            flow.finish(message)
        finally:
            flow.finish("the sign-in was cancelled")
            flow.inbox.close()
            if flow.error is None:
                self._links.pop(runtime.name, None)  # signed in: its link has no use
            self._stop_listener_if_idle()

    async def _sign_in(self, flow: Flow, restart: bool) -> None:
        runtime = flow.runtime
        if isinstance(runtime.credentials, machine_credentials.MachineCredentials):
            # Client credentials: no browser, no callback; a new token, now.
            await machine_credentials.sign_in(runtime)
            flow.finish(None)
            return
        if restart and runtime.credentials.record is not None:
            await self._keep_client(runtime, None)
        runtime.begin_authorization()
        discovery, scope = await self._prepare(runtime)
        offered = offers_device_sign_in(discovery.server)
        runtime.device_sign_in = offered
        if flow.method == "device" or (flow.method == "device_if_offered" and offered):
            await self._device_sign_in(flow, discovery, scope)
            return
        settings = _settings(runtime)
        if settings is not None and settings.redirect_uri:
            redirect = settings.redirect_uri
            self._ensure_listener()
        else:
            redirect = redirect_uri(self._ensure_listener())
        client, _stored = await self._client(runtime, discovery, redirect, scope)
        flow.pending = begin(discovery, client, scope, redirect, settings)
        logs.add_secrets(self.secrets())
        flow.ready.set()
        log.info("authorization started", extra={"server": runtime.name})
        with anyio.move_on_after(STATE_LIFETIME_SECONDS):
            async for query, answer in flow.received:
                answer.succeeded, answer.message = await self._complete(flow, query)
                answer.ready.set()
                if flow.done.is_set():
                    return
        message = "the sign-in was not completed within 10 minutes; start it again"
        runtime.authorization_failed(message)
        flow.finish(message)

    async def _prepare(self, runtime: ServerRuntime) -> tuple[Discovery, str | None]:
        """Discovery, and the scope to ask for: how every sign-in begins."""
        config = runtime.entry.config
        assert config is not None
        discovery = await drive(discover(config.url, runtime.challenge), runtime.reach())
        scope = union_scope(
            choose_scope(_settings(runtime), runtime.challenge, discovery), runtime.required_scope
        )
        return discovery, scope

    async def _client(
        self,
        runtime: ServerRuntime,
        discovery: Discovery,
        redirect: str | None,
        scope: str | None,
    ) -> tuple[ClientRegistration, bool]:
        """The client to sign in with, registered (and kept) if need be; and
        whether it is the stored registration."""
        record = runtime.credentials.record
        stored = record.client if record is not None else None
        identity = choose_client(_settings(runtime), discovery, stored, redirect)
        if identity.client is not None:
            return identity.client, identity.client is stored
        client = await drive(register(discovery, redirect, scope), runtime.reach())
        log.info("registered a client", extra={"server": runtime.name})
        # Kept at once: the next sign-in reuses it, even if this one fails.
        await self._keep_client(runtime, client)
        return client, False

    async def _device_sign_in(self, flow: Flow, discovery: Discovery, scope: str | None) -> None:
        """A device sign-in (RFC 8628): a user code to show, then polls until the end."""
        from . import device  # here: most daemons never run one (43 KB)

        runtime = flow.runtime
        if not offers_device_sign_in(discovery.server):
            raise OAuthError(
                f"the authorization server {discovery.server.issuer} offers no device sign-in "
                "(its metadata lists no device_authorization_endpoint); sign in with `mcpctl "
                f"auth {runtime.name} --paste` (open the URL in any browser, then paste the "
                f"address it ends at) or `mcpctl auth {runtime.name} --no-browser`"
            )
        settings = _settings(runtime)
        # The redirect a browser sign-in would use, so that one client serves both
        # kinds; none with a callback port chosen per flow (callback_port = 0).
        redirect = (settings.redirect_uri if settings is not None else None) or (
            redirect_uri(self.callback_port) if self.callback_port else None
        )

        async def request_code(client: ClientRegistration) -> device.PendingDevice:
            step = device.start(discovery, client, scope, settings, time.monotonic())
            return await drive(step, runtime.reach())

        client, stored = await self._client(runtime, discovery, redirect, scope)
        try:
            pending = await request_code(client)
        except ServerRefused as exc:
            # A registration from before the server offered the device grant,
            # say: forgotten, and a new one asks again.
            if not (stored and await self._forget_refused_client(runtime, exc, client)):
                raise
            client, _stored = await self._client(runtime, discovery, redirect, scope)
            pending = await request_code(client)
        flow.device = pending
        logs.add_secrets(self.secrets())
        flow.ready.set()
        log.info(
            "device sign-in started",
            extra={"server": runtime.name, "interval": pending.interval},
        )
        tokens = await self._poll(runtime, pending)
        await self._signed_in(flow, discovery, pending.client, tokens)

    async def _poll(self, runtime: ServerRuntime, pending: device.PendingDevice) -> TokenSet:
        """Poll the token endpoint at the server's interval until the user is done."""
        from . import device

        name = runtime.name
        expired = f"the code expired; run `mcpctl auth {name} --device` again"
        while (wait := pending.next_poll(time.monotonic())) is not None:
            await anyio.sleep(wait)
            try:
                answer = await drive(device.poll(pending), runtime.reach())
            except ServerRefused as exc:
                await self._forget_refused_client(runtime, exc, pending.client)
                raise
            except OAuthError as exc:  # the network: the next poll asks again
                log.warning(
                    "a device sign-in poll failed", extra={"server": name, "error": str(exc)}
                )
                continue
            if isinstance(answer, TokenSet):
                return answer
            log.debug("device sign-in poll", extra={"server": name, "answer": answer.value})
            if answer is device.Answer.DENIED:
                raise OAuthError(
                    f"the sign-in was denied at the authorization server; run `mcpctl auth "
                    f"{name} --device` to try again"
                )
            if answer is device.Answer.EXPIRED:
                raise OAuthError(expired)
            if answer is device.Answer.SLOW_DOWN:
                pending.slow_down()
                log.info(
                    "the authorization server asked for slower polling",
                    extra={"server": name, "interval": pending.interval},
                )
        # The code expires before the next poll could be made: the end, when it does.
        await anyio.sleep(max(0.0, pending.expires_at - time.monotonic()))
        raise OAuthError(expired)

    @staticmethod
    async def _keep_client(runtime: ServerRuntime, client: ClientRegistration | None) -> None:
        config = runtime.entry.config
        assert config is not None
        current = runtime.credentials.record
        record = current or CredentialRecord(server=runtime.name, url=config.url)
        await runtime.credentials.replace(msgspec.structs.replace(record, client=client))

    async def _callback(self, query: str) -> tuple[bool, str]:
        state = dict(parse_qsl(query)).get("state", "")
        for flow in self.flows.values():
            if flow.waiting and flow.pending is not None and flow.pending.matches(state):
                return await flow.submit(query)
        return False, (
            "This sign-in is unknown or already finished. Run `mcpctl auth NAME` to start again."
        )

    async def paste(self, runtime: ServerRuntime, text: str) -> tuple[bool, str]:
        """Finish with what the user pasted: the redirected URL, or just the code."""
        flow = self.flows.get(runtime.name)
        if flow is None or not flow.waiting or flow.pending is None:
            return (
                False,
                f"no sign-in to {runtime.name!r} is under way; run `mcpctl auth {runtime.name}`",
            )
        text = text.strip()
        query = urlsplit(text).query if "?" in text or "://" in text else ""
        if not query:
            query = urlencode({"code": text, "state": flow.pending.state})
        return await flow.submit(query)

    async def _complete(self, flow: Flow, query: str) -> tuple[bool, str]:
        runtime, pending = flow.runtime, flow.pending
        assert pending is not None
        try:
            code = pending.accept(query)
            tokens = await drive(exchange(pending, code), runtime.reach())
        except OAuthError as exc:
            await self._forget_refused_client(runtime, exc, pending.client)
            runtime.authorization_failed(str(exc))
            flow.finish(str(exc))
            return False, str(exc)
        await self._signed_in(flow, pending.discovery, pending.client, tokens)
        return True, f"mcpd is signed in to {runtime.name}."

    @staticmethod
    async def _signed_in(
        flow: Flow, discovery: Discovery, client: ClientRegistration, tokens: TokenSet
    ) -> None:
        """The end of every sign-in: the tokens stored, before anything uses them."""
        runtime = flow.runtime
        config = runtime.entry.config
        assert config is not None
        server = discovery.server
        record = CredentialRecord(
            server=runtime.name,
            url=config.url,
            tokens=tokens,
            client=client,
            authorization=AuthorizationServer(
                issuer=server.issuer,
                token_endpoint=server.token_endpoint,
                revocation_endpoint=server.revocation_endpoint,
                resource=discovery.resource,
                device_authorization_endpoint=server.device_authorization_endpoint,
            ),
            last_refresh_at=None,
        )
        await runtime.credentials.replace(record)
        runtime.authorized()
        flow.finish(None)
        log.info("authorized", extra={"server": runtime.name})

    async def _forget_refused_client(
        self, runtime: ServerRuntime, exc: OAuthError, client: ClientRegistration
    ) -> bool:
        """A refusal that says the server no longer knows (or accepts) the stored
        client: forget it, so that a registration is made anew. Whether it did."""
        record = runtime.credentials.record
        stored = record.client if record else None
        if (
            isinstance(exc, ServerRefused)
            and exc.error in FORGET_CLIENT_ON
            and stored is not None
            and (stored.client_id, stored.issuer) == (client.client_id, client.issuer)
        ):
            await self._keep_client(runtime, None)
            return True
        return False

    async def logout(self, runtime: ServerRuntime, forget_client: bool) -> bool:
        """Revoke (RFC 7009) where possible, then forget the tokens; True if revoked."""
        record = runtime.credentials.record
        revoked = False
        # Only with the client of the authorization server that issued the tokens.
        if record is not None and record.tokens is not None and record.bound_client() is not None:
            endpoint = record.authorization.revocation_endpoint if record.authorization else None
            if endpoint is not None:
                try:
                    await drive(_revoke(endpoint, record), runtime.reach())
                    revoked = True
                except OAuthError as exc:
                    log.warning(
                        "revocation failed", extra={"server": runtime.name, "error": str(exc)}
                    )
        if record is not None:
            kept = CredentialRecord(server=record.server, url=record.url)
            if not forget_client:
                kept.client, kept.authorization = record.client, record.authorization
            await runtime.credentials.replace(kept)
        runtime.logged_out()
        return revoked


def _settings(runtime: ServerRuntime) -> OAuthSettings | None:
    config = runtime.entry.config
    assert config is not None
    return config.oauth if not isinstance(config.oauth, bool) else None


def _revoke(endpoint: str, record: CredentialRecord) -> Step[None]:
    assert record.tokens is not None
    client = record.bound_client()
    assert client is not None
    tokens = [
        (record.tokens.refresh_token, "refresh_token"),
        (record.tokens.access_token, "access_token"),
    ]
    for token, hint in tokens:
        if token is None:
            continue
        headers, form = client_authentication(client, {"token": token, "token_type_hint": hint})
        response = yield HttpRequest("POST", endpoint, headers, form=form)
        granted = record.tokens.refresh_token is not None
        if hint == "access_token" and granted and _unsupported_token_type(response):
            # RFC 7009 2.2.1: the server cannot revoke this kind (a JWT, say);
            # revoking the refresh token just before ended the grant.
            continue
        if response.status != 200:
            raise OAuthError(f"the revocation endpoint answered HTTP {response.status}")


def _unsupported_token_type(response: HttpResponse) -> bool:
    data = response.json() if response.status == 400 else None
    return isinstance(data, dict) and data.get("error") == "unsupported_token_type"
