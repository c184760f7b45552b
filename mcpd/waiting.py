"""Waiting for whichever of several things happens first."""

from __future__ import annotations

import anyio


async def first_of(*events: anyio.Event) -> None:
    """Return as soon as any of the events is set."""
    async with anyio.create_task_group() as tg:

        async def wait(event: anyio.Event) -> None:
            await event.wait()
            tg.cancel_scope.cancel()

        for event in events:
            tg.start_soon(wait, event)
