"""The daemon: owns the listener, the servers and the client connections.

Everything runs in the daemon's one task group: the accept loop, the signal
handler, one task per server and one per client connection. Shutdown (a
`shutdown` request, SIGTERM or SIGINT) stops the servers, lets connections
flush their last responses for a moment, then cancels the group.

At start the soft open-file limit is raised to the hard one (a login session
often gives 1024). Connections beyond [daemon] max_connections, or beyond
what that limit leaves room for, are refused with an error frame and a log
line; an accept that fails all the same (out of descriptors) is logged, and
the loop pauses briefly and goes on: clients wait in the listen backlog.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import resource
import signal
import socket
import time

import anyio
from anyio.abc import SocketListener, SocketStream, TaskGroup

from . import config as config_mod
from . import logs
from .config import Config
from .connection import ClientConnection, peer_credentials
from .http import HttpPool
from .oauth.manager import AuthManager
from .oauth.model import CredentialRecord
from .operations import Operations
from .protocol import ErrorCode, Event, ReloadResult, Response, RpcError, StateChanged, encode_frame
from .server import ServerRuntime
from .shown import ShownStore
from .states import State
from .store import CredentialStore
from .systemd import Notifier
from .upstream.toolfilter import only_filter_changed

log = logging.getLogger(__name__)

FLUSH_ON_SHUTDOWN_SECONDS = 2.0
ACCEPT_ERROR_PAUSE_SECONDS = 0.1
# The kernel caps it at net.core.somaxconn (4096 since Linux 5.4).
LISTEN_BACKLOG = 4096
# A failing accept, or refused connections, are logged at most this often.
REPEAT_LOG_SECONDS = 60.0
# Descriptors kept for everything but clients: upstream HTTP connections, the
# OAuth callback listener, the store's files, the event loop's own.
RESERVED_FDS_MIN = 64


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1 << 20
    if hard == resource.RLIM_INFINITY or soft >= hard:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError) as exc:
        log.warning(
            "could not raise the open-file limit",
            extra={"soft": soft, "hard": hard, "error": str(exc)},
        )
        return soft
    log.info("raised the open-file limit", extra={"from": soft, "to": hard})
    return hard


def client_budget(open_file_limit: int) -> int:
    """How many client connections the open-file limit leaves room for."""
    return max(1, open_file_limit - max(RESERVED_FDS_MIN, open_file_limit // 8))


class Daemon:
    def __init__(
        self,
        config: Config,
        store: CredentialStore[CredentialRecord],
        notifier: Notifier,
        shown: ShownStore | None = None,
    ) -> None:
        self.config = config
        self.store = store
        # What each server last showed editors (none kept without it).
        self._shown = shown
        self.notifier = notifier
        self.servers: dict[str, ServerRuntime] = {}
        self.connections: set[ClientConnection] = set()
        self._store_lock = anyio.Lock()
        self._reload_lock = anyio.Lock()
        self._shutdown = anyio.Event()
        self._connections_closed = anyio.Event()
        self._tg: TaskGroup | None = None
        self._editor_ids = itertools.count(1)
        self.auth = AuthManager(config.daemon.callback_port)
        self.service = Operations(self)
        self._http_pool = HttpPool()
        # Connections accepted and not yet ended (counted before their first read).
        self.clients = 0
        self._client_budget = client_budget(1024)
        self._refused = 0
        self._refused_logged_at = -REPEAT_LOG_SECONDS

    @property
    def max_frame_size(self) -> int:
        return self.config.daemon.max_frame_size

    @property
    def max_connections(self) -> int:
        """[daemon] max_connections, or less if the open-file limit leaves less room."""
        return min(self.config.daemon.max_connections, self._client_budget)

    def new_editor_id(self) -> int:
        return next(self._editor_ids)

    # --- Life cycle -------------------------------------------------------------

    async def run(self, listener_socket: socket.socket) -> None:
        self._client_budget = client_budget(raise_open_file_limit())
        # A burst of clients connecting at once waits in the backlog; a full
        # one fails their connect(2) at once with EAGAIN.
        listener_socket.listen(LISTEN_BACKLOG)
        listener = await SocketListener.from_socket(listener_socket)
        async with self._http_pool, anyio.create_task_group() as tg:
            self._tg = tg
            await tg.start(self.auth.run)
            # Handlers in place before READY: a SIGHUP must never meet the default action.
            await tg.start(self._handle_signals)
            for entry in self.config.servers.values():
                self._start_server(entry)
            tg.start_soon(self._accept_loop, listener)
            log.info(
                "ready",
                extra={
                    "servers": len(self.servers),
                    "config": str(self.config.path),
                    "max_connections": self.max_connections,
                },
            )
            self.notifier.notify(ready="1", status=self._summary())
            await self._shutdown.wait()
            log.info("shutting down")
            self.notifier.notify(stopping="1")
            await listener.aclose()
            for runtime in list(self.servers.values()):
                runtime.stop()
            for connection in list(self.connections):
                connection.stop_reading()
            with anyio.move_on_after(FLUSH_ON_SHUTDOWN_SECONDS):
                if self.connections:
                    await self._connections_closed.wait()
            tg.cancel_scope.cancel()

    def request_shutdown(self) -> None:
        self._shutdown.set()

    async def _handle_signals(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        with anyio.open_signal_receiver(signal.SIGHUP, signal.SIGTERM, signal.SIGINT) as signals:
            task_status.started()
            async for signum in signals:
                if signum != signal.SIGHUP:
                    log.info("received signal", extra={"signal": signal.Signals(signum).name})
                    self.request_shutdown()
                    continue
                try:
                    result = await self.reload()
                except Exception as exc:  # a reload's boundary: the daemon goes on
                    config_error = isinstance(exc, config_mod.ConfigError)
                    log.error(
                        "reload failed; keeping the previous configuration",
                        extra={"error": str(exc) if config_error else type(exc).__name__},
                        exc_info=None if config_error else exc,
                    )
                    self.notifier.notify(ready="1", status=self._summary())
                    continue
                log.info("reloaded on SIGHUP", extra={"changes": _describe(result)})

    def _summary(self) -> str:
        counts: dict[str, int] = {}
        for runtime in self.servers.values():
            counts[runtime.machine.state] = counts.get(runtime.machine.state, 0) + 1
        states = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        return f"{len(self.servers)} servers" + (f": {states}" if states else "")

    # --- Clients ----------------------------------------------------------------

    async def _accept_loop(self, listener: SocketListener) -> None:
        assert self._tg is not None
        failures = 0
        logged_at = 0.0
        while True:
            try:
                stream = await listener.accept()
            except anyio.ClosedResourceError:
                return
            except (anyio.BrokenResourceError, OSError) as exc:
                # anyio reports a failed accept(2) (EMFILE, ENFILE, ENOBUFS,
                # ECONNABORTED...) as BrokenResourceError. The listener is still
                # good: pause, so as not to spin on a socket that stays readable,
                # and accept again. Clients wait in the listen backlog meanwhile.
                cause = exc.__cause__ if isinstance(exc, anyio.BrokenResourceError) else exc
                failures += 1
                now = time.monotonic()
                if failures == 1 or now - logged_at >= REPEAT_LOG_SECONDS:
                    logged_at = now
                    log.error(
                        "cannot accept client connections; retrying",
                        extra={
                            "error": _describe_error(cause),
                            "connections": self.clients,
                            "failed_accepts": failures,
                        },
                    )
                await anyio.sleep(ACCEPT_ERROR_PAUSE_SECONDS)
                continue
            if failures:
                log.info("accepting client connections again", extra={"failed_accepts": failures})
                failures = 0
            if self.clients >= self.max_connections:
                await self._refuse(stream)
                continue
            self.clients += 1
            self._tg.start_soon(self._serve_client, stream)

    async def _refuse(self, stream: SocketStream) -> None:
        """Tell a client over the limit why, without waiting for it, and close."""
        raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
        try:
            _pid, uid, _gid = peer_credentials(raw)
        except OSError:
            uid = -1
        if uid != os.getuid():  # another user is told nothing (see _serve_checked_client)
            await stream.aclose()
            return
        limit = self.max_connections
        self._refused += 1
        now = time.monotonic()
        if now - self._refused_logged_at >= REPEAT_LOG_SECONDS:
            self._refused_logged_at = now
            setting = (
                "[daemon] max_connections"
                if limit == self.config.daemon.max_connections
                else "the open-file limit (ulimit -n)"
            )
            log.warning(
                "refused a client connection: too many are open",
                extra={"limit": limit, "set_by": setting, "refused": self._refused},
            )
            self._refused = 0
        error = RpcError(
            ErrorCode.BUSY,
            f"mcpd has {limit} client connections open, the most it serves at once "
            "([daemon] max_connections and the open-file limit); close some, or raise "
            "max_connections",
        )
        with contextlib.suppress(OSError):
            raw.send(encode_frame(Response(None, error=error)))  # non-blocking, fits
        await stream.aclose()

    async def _serve_client(self, stream: SocketStream) -> None:
        """One client connection: its supervision boundary."""
        try:
            await self._serve_checked_client(stream)
        except Exception:  # whatever happens to one connection ends it alone
            log.exception("client connection failed")
            with anyio.CancelScope(shield=True):
                await stream.aclose()
        finally:
            self.clients -= 1

    async def _serve_checked_client(self, stream: SocketStream) -> None:
        raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
        try:
            pid, uid, _gid = peer_credentials(raw)
        except OSError as exc:
            log.warning("dropped a client whose credentials cannot be read", extra={"error": exc})
            await stream.aclose()
            return
        if uid != os.getuid():
            log.warning(
                "refused a connection from another user: mcpd serves only its own user "
                "(a container that mounts the socket must run as that user, mapped to the "
                "same uid, e.g. rootless Podman's --userns=keep-id)",
                extra={"peer_pid": pid, "peer_uid": uid, "own_uid": os.getuid()},
            )
            await stream.aclose()
            return
        connection = ClientConnection(stream, self, pid)
        self.connections.add(connection)
        self._connections_closed = anyio.Event()
        try:
            await connection.serve()
        finally:
            self.connections.discard(connection)
            if not self.connections:
                self._connections_closed.set()

    def _broadcast(self, server: str, event: Event) -> None:
        for connection in list(self.connections):
            if connection.wants(server):
                connection.push_event(event)

    def _publish(self, runtime: ServerRuntime, previous: State | None) -> None:
        self._broadcast(runtime.name, Event("state", StateChanged(runtime.status(), previous)))

    # --- Servers ----------------------------------------------------------------

    async def _load_record(self, name: str, url: str) -> CredentialRecord | None:
        if not self.store.has(name):  # most servers: no worker thread for nothing
            return None
        return await anyio.to_thread.run_sync(self.store.load, name, url)

    def _start_server(self, entry: config_mod.ServerEntry, *, announce: bool = False) -> None:
        """Start a server; `announce` tells subscribers about it before its first change."""
        assert self._tg is not None
        # Room for the rpc envelope around the largest message a server may send.
        max_message_size = self.max_frame_size - 64
        runtime = ServerRuntime(
            entry,
            self._publish,
            self._load_record,
            self.save_record,
            max_message_size,
            pool=self._http_pool,
            shown=self._shown,
            links=self.auth.link,
            open_browser=self.config.daemon.open_browser,
        )
        self.servers[entry.name] = runtime
        if announce:
            self._broadcast(entry.name, Event("added", {"server": runtime.status()}))
        if runtime.start():
            # Not awaited: the daemon is ready while its servers connect.
            self._tg.start_soon(runtime.run)

    def _stop_server(self, name: str) -> None:
        runtime = self.servers.pop(name)
        runtime.stop()
        # Attached editors' bridges reconnect and attach to what replaces it.
        for connection in list(self.connections):
            if connection.attachment is not None and connection.attachment.server == name:
                connection.close()

    async def reload(self) -> ReloadResult:
        """Re-read the config and apply the difference; ConfigError leaves all as it was.

        One reload at a time, and never cancelled half-way: a reload applies
        completely or not at all.
        """
        async with self._reload_lock:
            with anyio.CancelScope(shield=True):
                result = await self._reload()
        return result

    async def _reload(self) -> ReloadResult:
        self.notifier.notify(reloading="1")
        new = await anyio.to_thread.run_sync(config_mod.load, self.config.path)
        old = self.config.servers
        changed = sorted(n for n in new.servers.keys() & old.keys() if new.servers[n] != old[n])
        # A change of the tool filter alone is applied in place, without a restart.
        updated = [n for n in changed if only_filter_changed(old[n], new.servers[n])]
        result = ReloadResult(
            added=sorted(new.servers.keys() - old.keys()),
            removed=sorted(old.keys() - new.servers.keys()),
            restarted=[n for n in changed if n not in updated],
            unchanged=sorted(
                n for n in new.servers.keys() & old.keys() if new.servers[n] == old[n]
            ),
            updated=updated,
        )
        self.config = new
        self.auth.callback_port = new.daemon.callback_port
        logs.set_level(new.daemon.log_level)
        for name in result.removed:
            self._stop_server(name)
            self._broadcast(name, Event("removed", {"server": name}))
        for name in result.restarted:
            self._stop_server(name)
        for name in result.restarted:
            self._start_server(new.servers[name])
        for name in result.updated:
            self.servers[name].update_tools(new.servers[name])
        for name in result.added:
            self._start_server(new.servers[name], announce=True)
        self.notifier.notify(ready="1", status=self._summary())
        return result

    async def save_record(self, record: CredentialRecord) -> None:
        """Write a server's credentials, atomically, before anything uses them. A
        record left holding nothing (`logout --forget-client`) is deleted instead."""
        async with self._store_lock:
            if record.empty:
                await anyio.to_thread.run_sync(self.store.delete, record.server)
            else:
                await anyio.to_thread.run_sync(self.store.save, record)

    async def rotate_key(self) -> int:
        async with self._store_lock:
            count = await anyio.to_thread.run_sync(self.store.rotate_key)
        log.info("rotated the credential key", extra={"records": count})
        return count


def _describe_error(exc: BaseException | None) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return repr(exc)


def _describe(result: ReloadResult) -> str:
    parts = [
        f"{label} {','.join(names)}"
        for label, names in (
            ("added", result.added),
            ("removed", result.removed),
            ("restarted", result.restarted),
            ("updated", result.updated),
        )
        if names
    ]
    return "; ".join(parts) or "no changes"
