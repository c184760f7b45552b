"""A counting OAuth token endpoint for the refresh-storm benchmark (bench/scale.py).

    python bench/token_server.py [--service-ms MS]

Listens on 127.0.0.1 at a free port and prints `listening PORT` once bound.
`POST /token` takes the refresh token grant for credentials the benchmark
seeded: the refresh token `rt-NAME-GEN` of client `NAME` is good once; the
answer is a new access token and the rotated refresh token `rt-NAME-GEN+1`,
valid an hour. A rotated token presented again is refused (`invalid_grant`)
and counted as a duplicate, as a real server that rotates would.

Each request waits `--service-ms` before its answer, the work of a real
authorization server, so that requests made at once are seen at once: the
server counts the requests in flight (body read, answer not yet sent) and the
connections open, and keeps each refresh's start and end times (Unix
seconds). `GET /stats` returns all that as JSON.

HTTP/1.1 with keep-alive and Content-Length bodies only: all the daemon sends.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any
from urllib.parse import parse_qsl

LIFETIME_SECONDS = 3600


class Counts:
    def __init__(self, service_seconds: float) -> None:
        self.service_seconds = service_seconds
        self.generation: dict[str, int] = {}  # client -> refresh tokens issued so far
        self.refreshes: list[dict[str, Any]] = []
        self.refused: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.connections = 0
        self.max_connections = 0

    def stats(self) -> dict[str, Any]:
        return {
            "refreshes": self.refreshes,
            "refused": self.refused,
            "max_in_flight": self.max_in_flight,
            "max_connections": self.max_connections,
            "service_ms": self.service_seconds * 1000,
        }

    def grant(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        client = form.get("client_id", "")
        presented = form.get("refresh_token", "")
        if form.get("grant_type") != "refresh_token":
            return 400, {"error": "unsupported_grant_type"}
        name, _, generation = presented.removeprefix("rt-").rpartition("-")
        current = self.generation.get(client, 0)
        if name != client or not generation.isdigit() or int(generation) != current:
            return 400, {"error": "invalid_grant", "error_description": "not the current token"}
        self.generation[client] = current + 1
        return 200, {
            "access_token": f"at-{client}-{current + 1}",
            "token_type": "Bearer",
            "expires_in": LIFETIME_SECONDS,
            "refresh_token": f"rt-{client}-{current + 1}",
        }


async def read_request(reader: asyncio.StreamReader) -> tuple[str, str, bytes] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    body = await reader.readexactly(length) if length else b""
    return method, target, body


async def serve(counts: Counts, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    counts.connections += 1
    counts.max_connections = max(counts.max_connections, counts.connections)
    try:
        while (request := await read_request(reader)) is not None:
            method, target, body = request
            if method == "GET" and target == "/stats":
                status, answer = 200, counts.stats()
            elif method == "POST" and target == "/token":
                started = time.time()
                counts.in_flight += 1
                counts.max_in_flight = max(counts.max_in_flight, counts.in_flight)
                try:
                    await asyncio.sleep(counts.service_seconds)
                    form = dict(parse_qsl(body.decode()))
                    status, answer = counts.grant(form)
                finally:
                    counts.in_flight -= 1
                event = {
                    "client": form.get("client_id", ""),
                    "start": started,
                    "end": time.time(),
                    "token": form.get("refresh_token", ""),
                }
                (counts.refreshes if status == 200 else counts.refused).append(event)
            else:
                status, answer = 404, {"error": "not_found"}
            payload = json.dumps(answer).encode()
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                f"Cache-Control: no-store\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        counts.connections -= 1
        writer.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--service-ms", type=float, default=50.0)
    options = parser.parse_args()
    counts = Counts(options.service_ms / 1000)
    server = await asyncio.start_server(
        lambda r, w: serve(counts, r, w), "127.0.0.1", 0, backlog=2048
    )
    print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
