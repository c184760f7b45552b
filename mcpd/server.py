"""One configured server at run time: its state machine and the task driving it.

The daemon starts a `ServerRuntime` per config entry in its own task group and
stops it by cancelling the runtime's scope; whatever the server does (loading
its credentials today; connecting, authorizing and refreshing as the upstream
client arrives) happens inside `run` and ends with it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import anyio
from anyio.abc import TaskStatus

from .config import ServerEntry
from .protocol import ServerStatus
from .states import Event, ServerStateMachine, State
from .store import CredentialRecord, UnreadableRecord

log = logging.getLogger(__name__)

StateListener = Callable[["ServerRuntime", State], None]
RecordLoader = Callable[[str, str], Awaitable[CredentialRecord | None]]


class ServerRuntime:
    def __init__(self, entry: ServerEntry, on_change: StateListener, load_record: RecordLoader):
        self.entry = entry
        self.record: CredentialRecord | None = None
        self._load_record = load_record
        self._on_change = on_change
        self._scope: anyio.CancelScope | None = None
        self.machine = ServerStateMachine(self._changed)

    @property
    def name(self) -> str:
        return self.entry.name

    def _changed(self, machine: ServerStateMachine, previous: State) -> None:
        log.info(
            "state changed",
            extra={
                "server": self.name,
                "from": previous,
                "to": machine.state,
                **({"error": machine.error} if machine.error else {}),
            },
        )
        self._on_change(self, previous)

    def status(self) -> ServerStatus:
        machine, tokens = self.machine, self.record.tokens if self.record else None
        return ServerStatus(
            name=self.name,
            url=self.entry.display_url,
            state=machine.state,
            since=machine.since,
            error=machine.error,
            next_retry_at=machine.next_retry_at,
            access_expires_at=tokens.expires_at if tokens else None,
            last_refresh_at=self.record.last_refresh_at if self.record else None,
        )

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        with anyio.CancelScope() as scope:
            self._scope = scope
            task_status.started()
            config = self.entry.config
            if config is None:
                self.machine.handle(Event.MISCONFIGURED, error=self.entry.error)
            elif config.enabled:
                self.machine.handle(Event.START)
                try:
                    self.record = await self._load_record(self.name, config.url)
                except UnreadableRecord as exc:
                    self.machine.handle(Event.AUTH_REQUIRED, error=str(exc))
            # The upstream connection is not part of this release: the server
            # stays where it is until it is stopped.
            await anyio.sleep_forever()

    def stop(self) -> None:
        if self._scope is not None:
            self._scope.cancel()
        if self.machine.state is not State.DISABLED:
            self.machine.handle(Event.STOP)
