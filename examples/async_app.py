"""An asyncio app that embeds outbox: a small gateway that takes render jobs over a local socket.

Each connection sends jobs as JSON lines (``{"template": ..., "data": {...}, "key": ...}``) and
gets one JSON line back per job (its entry, or an error), then a line whenever one of its
entries changes state, until all of them are finished; it may close its sending side at any
time. The jobs are saved at once, online or not; outbox's worker sends them when it can::

    python examples/async_app.py --sandbox                  # against the bundled sandbox
    CRAFTKIT_API_KEY=... python examples/async_app.py --db gateway.db --port 8765

    printf '%s\\n' '{"template": "inspection-report", "key": "north-42",
      "data": {"inspector": "Ada", "site": "North"}}' | nc -q 30 127.0.0.1 8765

Nothing here blocks the event loop: every outbox call is awaited (``AsyncOutbox``), and one
``changes()`` feed tells every connection about its entries. SIGINT or SIGTERM stops it
cleanly: no new jobs, the worker stops after the requests on the wire, nothing stays leased.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

from outbox import AsyncOutbox, Entry, Event, OutboxError
from outbox.sandbox import Sandbox


def entry_line(entry: Entry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "key": entry.key,
        "state": entry.state.value,
        "pdf_path": entry.pdf_path,
        "error": entry.error,
    }


class Gateway:
    """Accepts jobs from connections and streams each connection its entries' states."""

    def __init__(self, outbox: AsyncOutbox) -> None:
        self.outbox = outbox
        self.watchers: dict[str, set[asyncio.Queue[str]]] = {}
        self.connections: set[asyncio.Task[Any]] = set()

    async def follow(self, feed: AsyncIterator[Event]) -> None:
        """Hand every change to the connections watching its entry (one feed for all)."""
        async for event in feed:
            for watcher in self.watchers.get(event.entry_id, ()):
                watcher.put_nowait(event.entry_id)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections.add(task)
        task.add_done_callback(self.connections.discard)
        changed: asyncio.Queue[str] = asyncio.Queue()
        reported: dict[str, str] = {}  # entry id -> last state sent
        send_lock = asyncio.Lock()

        async def send(line: dict[str, Any]) -> None:
            async with send_lock:
                writer.write(json.dumps(line).encode() + b"\n")
                await writer.drain()

        async def report(entry: Entry) -> None:
            if reported.get(entry.id) != entry.state.value:
                reported[entry.id] = entry.state.value
                await send(entry_line(entry))

        async def take_jobs() -> None:
            while line := await reader.readline():
                if not line.strip():
                    continue
                try:
                    job = json.loads(line)
                    if not isinstance(job, dict):
                        raise ValueError("a job is a JSON object")
                    entry = await self.outbox.enqueue(
                        job.get("template"),
                        job.get("data"),
                        key=job.get("key"),
                        filename=job.get("filename"),
                    )
                except (ValueError, OutboxError) as exc:  # bad job: say why, keep the line open
                    await send({"error": str(exc)})
                    continue
                self.watchers.setdefault(entry.id, set()).add(changed)
                await report(entry)
                await report(await self.outbox.get(entry.id))  # a change that came first

        jobs = asyncio.create_task(take_jobs())
        try:
            while not jobs.done() or any(state not in FINISHED for state in reported.values()):
                waiter = asyncio.create_task(changed.get())
                await asyncio.wait({waiter, jobs}, return_when=asyncio.FIRST_COMPLETED)
                if waiter.done():
                    await report(await self.outbox.get(waiter.result()))
                else:
                    waiter.cancel()
            await jobs  # its errors, if any
        finally:
            jobs.cancel()
            for entry_id in reported:
                self.watchers.get(entry_id, set()).discard(changed)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


FINISHED = {"done", "failed", "rejected", "cancelled"}


async def run(db: str, api_key: str, base_url: str, host: str, port: int) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    async with AsyncOutbox(db, api_key=api_key, base_url=base_url) as outbox:
        gateway = Gateway(outbox)
        following = asyncio.create_task(gateway.follow(outbox.changes()))
        await outbox.start()  # the supervised background worker
        server = await asyncio.start_server(gateway.serve, host, port)
        address = server.sockets[0].getsockname()
        print(f"listening on {address[0]}:{address[1]}", flush=True)
        async with server:
            await stopping.wait()
            server.close()  # no new connections
            print("stopping: letting requests on the wire finish", flush=True)
            for task in (following, *gateway.connections):
                task.cancel()
            await asyncio.gather(following, *gateway.connections, return_exceptions=True)
    print("stopped", flush=True)  # the worker stopped and the journal is closed


def main() -> None:
    parser = argparse.ArgumentParser(description="Take render jobs over a local socket.")
    parser.add_argument("--db", default="gateway.db", help="the journal file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--sandbox", action="store_true", help="use the bundled sandbox")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        if args.sandbox:
            sandbox = stack.enter_context(Sandbox(render_seconds=0.5))
            api_key, base_url = sandbox.api_key, sandbox.base_url
        else:
            api_key = os.environ["CRAFTKIT_API_KEY"]
            base_url = os.environ.get("CRAFTKIT_BASE_URL", "https://api.craftkit.dev")
        asyncio.run(run(args.db, api_key, base_url, args.host, args.port))


if __name__ == "__main__":
    main()
