"""The :class:`AsyncOutbox`: the :class:`~outbox.Outbox` API for asyncio apps.

It is the sync :class:`~outbox.Outbox` underneath, not a second copy of its logic: every method
runs the sync method off the event loop and awaits its result, so the loop never waits for
SQLite, an fsync or the network.

- Journal calls (``enqueue``, ``get``, ``list``...) run on one worker thread owned by the
  AsyncOutbox, in the order they were made, as aiosqlite does for sqlite3. They are short, and
  the journal serialises them on one connection anyway, so more threads would add nothing; the
  order is what lets :meth:`AsyncOutbox.changes` start exactly where its caller stood.
- Calls that talk to Craftkit for long (``flush``, ``sync_templates``) get a thread of their own,
  so that a 30-second flush never holds up a ``get``. Inside, the engine works as it always
  does: its own worker threads, each with a request on the wire.

Cancelling a call (``task.cancel()``, ``asyncio.timeout``) takes effect at once if the call had
not started; otherwise it returns once the started work has stopped — a flush stops claiming
entries, lets the requests already on the wire finish and records their outcomes — so that
after the ``CancelledError`` nothing is leased and nothing is still running.
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import concurrent.futures
import contextlib
import itertools
import logging
import os
import threading
from collections.abc import AsyncGenerator, Callable, Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

import httpx

from .clock import Clock
from .config import DEFAULT_BASE_URL, Settings
from .engine import FlushReport
from .errors import JournalError
from .models import Entry, Event, State
from .outbox import Outbox
from .store import MAX_PAGE, Durability
from .validation import ValidationMode
from .worker import ErrorCallback

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

#: How many changes :meth:`AsyncOutbox.on_change` delivers per turn of the event loop, so that
#: a burst (``enqueue_many`` of thousands) never holds the loop for long.
RELAY_BATCH = 200


def _twin(
    method: Callable[Concatenate[Outbox, P], R], *, own_thread: bool = False
) -> Callable[Concatenate[AsyncOutbox, P], Coroutine[Any, Any, R]]:
    """The async twin of an :class:`Outbox` method: same parameters, same result, awaited.

    ``own_thread`` runs it on a thread of its own instead of the journal thread (for calls that
    wait on the network and must not hold up journal calls).
    """

    async def twin(self: AsyncOutbox, /, *args: P.args, **kwargs: P.kwargs) -> R:
        if own_thread:
            outbox = await self._ready()
            return await self._in_own_thread(lambda: method(outbox, *args, **kwargs), None)
        return await self._call(lambda outbox: method(outbox, *args, **kwargs))

    twin.__name__ = method.__name__
    twin.__qualname__ = f"AsyncOutbox.{method.__name__}"
    twin.__doc__ = method.__doc__
    twin.__wrapped__ = method  # type: ignore[attr-defined]  # inspect.signature shows the sync one
    return twin


class AsyncOutbox:
    """An :class:`~outbox.Outbox` whose methods are coroutines; takes the same arguments.

    ::

        async with AsyncOutbox("field.db", api_key=..., base_url=...) as ob:
            entry = await ob.enqueue("inspection-report", {...}, key="inspection-42")
            await ob.start()                      # background submit, poll, download
            async for event in ob.changes():      # this and other processes' changes
                ...

    The journal is opened on the worker thread by ``async with``, :meth:`open` or the first call.
    """

    def __init__(
        self,
        db: str | os.PathLike[str],
        *,
        api_key: str | None = None,
        base_url: str = DEFAULT_BASE_URL,
        downloads: str | os.PathLike[str] | None = None,
        durability: Durability = "full",
        busy_timeout: float = 30.0,
        settings: Settings | None = None,
        clock: Clock | None = None,
        validation: ValidationMode = "reject",
        transport: httpx.BaseTransport | None = None,
        create: bool = True,
    ) -> None:
        def open_outbox() -> Outbox:
            return Outbox(
                db,
                api_key=api_key,
                base_url=base_url,
                downloads=downloads,
                durability=durability,
                busy_timeout=busy_timeout,
                settings=settings,
                clock=clock,
                validation=validation,
                transport=transport,
                create=create,
            )

        self._open_outbox = open_outbox  # a closure: the API key never shows in a repr
        self._path = Path(db)
        self._schema_version: int | None = None
        self._outbox: Outbox | None = None
        self._closed = False
        self._journal_thread = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="outbox-async"
        )
        #: Calls running on threads of their own, and the events that stop them early.
        self._own_threads: set[concurrent.futures.Future[Any]] = set()
        self._stops: set[threading.Event] = set()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._outbox else "not opened yet"
        return f"<AsyncOutbox {str(self._path)!r} {state}>"

    @property
    def path(self) -> Path:
        """The journal file."""
        return self._path

    @property
    def schema_version(self) -> int:
        """The journal's schema version, as opened (upgraded to the newest this outbox knows)."""
        self.sync  # noqa: B018 - raises a clear error if not open yet
        assert self._schema_version is not None
        return self._schema_version

    @property
    def sync(self) -> Outbox:
        """The :class:`Outbox` underneath (for code that runs on threads of its own)."""
        if self._outbox is None:
            raise JournalError(
                f"the outbox on {self._path} is not open yet: use 'async with' or 'await open()'"
            )
        return self._outbox

    # -- lifecycle -----------------------------------------------------------------------

    async def open(self) -> AsyncOutbox:
        """Open (create or upgrade) the journal, off the event loop; returns ``self``."""
        await self._ready()
        return self

    async def close(self) -> None:
        """Stop background work and flushes, give back leases and close the journal.

        Waits until running flushes have recorded the requests they had on the wire; even if
        the closing task is cancelled, the closing itself is finished first.
        """
        if self._closed:
            return
        self._closed = True
        for stop in builtins.list(self._stops):
            stop.set()
        if self._own_threads:
            await _finish(asyncio.wait([asyncio.wrap_future(f) for f in self._own_threads]))
        if self._outbox is not None:
            await _settle(self._journal_thread.submit(self._outbox.close), cancellable=False)
        self._journal_thread.shutdown(wait=False)  # its last job is done

    async def __aenter__(self) -> AsyncOutbox:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- the sync API, awaited -------------------------------------------------------------

    enqueue = _twin(Outbox.enqueue)
    enqueue_many = _twin(Outbox.enqueue_many)
    prepare = _twin(Outbox.prepare)
    check_request = _twin(Outbox.check_request)
    amend = _twin(Outbox.amend)
    cancel = _twin(Outbox.cancel)
    retry = _twin(Outbox.retry)
    purge = _twin(Outbox.purge)
    vacuum = _twin(Outbox.vacuum)
    get = _twin(Outbox.get)
    find_by_key = _twin(Outbox.find_by_key)
    list = _twin(Outbox.list)
    page = _twin(Outbox.page)
    counts = _twin(Outbox.counts)
    history = _twin(Outbox.history)
    pdf = _twin(Outbox.pdf)
    next_due = _twin(Outbox.next_due)
    events_after = _twin(Outbox.events_after)
    status = _twin(Outbox.status)
    set_status = _twin(Outbox.set_status)
    check = _twin(Outbox.check)
    templates = _twin(Outbox.templates)
    sync_templates = _twin(Outbox.sync_templates, own_thread=True)
    share = _twin(Outbox.share, own_thread=True)
    shares = _twin(Outbox.shares, own_thread=True)
    revoke = _twin(Outbox.revoke, own_thread=True)
    dashboard = _twin(Outbox.dashboard)
    stop = _twin(Outbox.stop)

    @property
    def worker_error(self) -> Exception | None:
        """The last exception that escaped the background work (see :meth:`start`), or None."""
        return self._outbox.worker_error if self._outbox is not None else None

    async def start(self, *, on_error: ErrorCallback | None = None) -> None:
        """Start the supervised background worker, as :meth:`Outbox.start <outbox.Outbox.start>`
        does; ``on_error(exc)`` is called on the event loop."""
        relay = None if on_error is None else _LoopRelay(asyncio.get_running_loop(), on_error)
        await self._call(lambda outbox: outbox.start(on_error=relay))

    async def flush(
        self,
        timeout: float = 30.0,
        *,
        progress: Callable[[dict[State, int]], None] | None = None,
    ) -> FlushReport:
        """Submit everything pending, follow the renders and download the PDFs.

        As :meth:`Outbox.flush <outbox.Outbox.flush>`, on a thread of its own; ``progress`` is
        called on the event loop. Cancelling it stops it early: no new requests start, the ones
        on the wire finish and are recorded, and the ``CancelledError`` comes once nothing is
        leased any more. The entries it did not finish stay for the next flush.
        """
        outbox = await self._ready()
        relay: Callable[[dict[State, int]], None] | None = None
        if progress is not None:
            relay = _LoopRelay(asyncio.get_running_loop(), progress)
        stop = threading.Event()
        return await self._in_own_thread(
            lambda: outbox.flush(timeout, progress=relay, stop=stop), stop
        )

    async def run(self, *, on_error: ErrorCallback | None = None) -> None:
        """Work in the background until this coroutine is cancelled, then stop cleanly.

        For task groups: ``tg.create_task(ob.run())``. The same as :meth:`start`, then
        :meth:`stop` when cancelled.
        """
        await self.start(on_error=on_error)
        try:
            await asyncio.get_running_loop().create_future()  # until cancelled
        finally:
            if not self._closed:  # close() stops the worker itself
                await self._call(Outbox.stop, cancellable=False)

    async def on_change(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Call ``callback(event)`` on the event loop after every change this process makes.

        Changes are handed over from whichever thread made them (the background worker, a
        flush) in order, a few hundred per turn of the loop. Returns a remover.
        """
        outbox = await self._ready()
        return outbox.on_change(_LoopRelay(asyncio.get_running_loop(), callback))

    async def stream(
        self, state: State | str | None = None, limit: int | None = None
    ) -> AsyncGenerator[Entry, None]:
        """``async for entry in ob.stream()``: what :meth:`list` returns, a batch at a time
        (each batch read on the journal thread), so memory stays flat at any journal size."""
        entries = await self._call(lambda outbox: outbox.stream(state=state, limit=limit))
        while batch := await self._call(
            lambda _: builtins.list(itertools.islice(entries, MAX_PAGE))
        ):
            for entry in batch:
                yield entry

    def changes(
        self,
        since: int | None = None,
        *,
        timeout: float | None = None,
        poll_interval: float = 0.25,
        stop: threading.Event | None = None,
    ) -> AsyncGenerator[Event, None]:
        """Iterate over changes as they happen, including those of other processes.

        ``async for event in ob.changes(since=last_seen)``. Without ``since``, starts after
        the last change made before this call (every later call of this AsyncOutbox, such as an
        ``enqueue``, is seen). Changes made in this process arrive at once; other processes'
        within ``poll_interval``. Stops once ``timeout`` seconds pass without a change, or
        within ``poll_interval`` of ``stop`` being set; otherwise runs until the loop ends or
        the iteration is left.
        """
        start: concurrent.futures.Future[int] = concurrent.futures.Future()
        if since is None:
            # Queued now on the journal thread, so it runs before any later call of ours.
            start = self._journal_thread.submit(lambda: self._opened().journal.last_event_id())
        else:
            start.set_result(since)
        return self._follow(start, timeout, poll_interval, stop)

    async def _follow(
        self,
        start: concurrent.futures.Future[int],
        timeout: float | None,
        poll_interval: float,
        stop: threading.Event | None,
    ) -> AsyncGenerator[Event, None]:
        last = await _settle(start)
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        remove = (await self._ready()).on_change(_Doorbell(loop, wake))
        try:
            idle_since = loop.time()
            while stop is None or not stop.is_set():
                wake.clear()
                batch = await self.events_after(last)
                if batch:
                    for event in batch:
                        last = event.id
                        yield event
                    idle_since = loop.time()
                    continue
                wait = poll_interval
                if timeout is not None:
                    remaining = timeout - (loop.time() - idle_since)
                    if remaining <= 0:
                        return
                    wait = min(wait, remaining)
                try:
                    async with asyncio.timeout(wait):
                        await wake.wait()
                except TimeoutError:
                    pass
        finally:
            remove()

    # -- running sync code off the loop --------------------------------------------------

    def _opened(self) -> Outbox:
        """The Outbox, opened on first use. Runs on the journal thread only."""
        if self._closed:
            raise JournalError(f"the outbox on {self._path} is closed")
        if self._outbox is None:
            outbox = self._open_outbox()
            self._schema_version = outbox.schema_version
            self._outbox = outbox
        return self._outbox

    async def _ready(self) -> Outbox:
        if self._outbox is not None and not self._closed:
            return self._outbox
        return await self._call(lambda outbox: outbox)

    async def _call(self, work: Callable[[Outbox], R], *, cancellable: bool = True) -> R:
        """Run ``work(outbox)`` on the journal thread, after every call made before it."""
        if self._closed:
            raise JournalError(f"the outbox on {self._path} is closed")
        return await _settle(
            self._journal_thread.submit(lambda: work(self._opened())), cancellable=cancellable
        )

    async def _in_own_thread(self, work: Callable[[], R], stop: threading.Event | None) -> R:
        """Run ``work()`` on a new thread; cancelling sets ``stop`` and waits for the end."""
        if self._closed:
            raise JournalError(f"the outbox on {self._path} is closed")
        future: concurrent.futures.Future[R] = concurrent.futures.Future()

        def main() -> None:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(work())
                except BaseException as exc:
                    future.set_exception(exc)

        if stop is not None:
            self._stops.add(stop)
        self._own_threads.add(future)
        try:
            threading.Thread(target=main, name="outbox-async-call", daemon=True).start()
            return await _settle(future, on_cancel=stop.set if stop else None, cancellable=False)
        finally:
            self._own_threads.discard(future)
            if stop is not None:
                self._stops.discard(stop)


async def _settle(
    future: concurrent.futures.Future[R],
    *,
    on_cancel: Callable[[], None] | None = None,
    cancellable: bool = True,
) -> R:
    """Await a thread's result. If cancelled: drop the work if it has not started (and
    ``cancellable``), else call ``on_cancel`` and wait for the work to end, then re-raise."""
    waiter = asyncio.wrap_future(future)
    try:
        return await asyncio.shield(waiter)
    except asyncio.CancelledError:
        if cancellable and future.cancel():
            raise
        if on_cancel is not None:
            on_cancel()
        await _finish(asyncio.wait([waiter]))
        if not waiter.cancelled() and waiter.exception() is not None:
            log.debug("cancelled call ended with %r", waiter.exception())
        raise


async def _finish(wait: Coroutine[Any, Any, Any]) -> None:
    """Await ``wait`` to the end, even through further cancellations (re-raised after)."""
    task = asyncio.ensure_future(wait)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError


class _LoopRelay:
    """Hands calls made on any thread to ``callback`` on the event loop, in order, in batches.

    One wake-up of the loop per burst, however many calls it holds, and at most
    :data:`RELAY_BATCH` callbacks per turn of the loop.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[Any], None]) -> None:
        self._loop = loop
        self._callback = callback
        self._lock = threading.Lock()
        self._pending: collections.deque[Any] = collections.deque()
        self._scheduled = False

    def __call__(self, item: Any) -> None:
        with self._lock:
            self._pending.append(item)
            if self._scheduled:
                return
            self._scheduled = True
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is listening any more
            self._loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        for _ in range(RELAY_BATCH):
            with self._lock:
                if not self._pending:
                    self._scheduled = False
                    return
                item = self._pending.popleft()
            try:
                self._callback(item)
            except Exception:
                log.exception("a change callback failed")
        self._loop.call_soon(self._deliver)


class _Doorbell:
    """Sets an :class:`asyncio.Event` from any thread, waking the loop once per burst."""

    def __init__(self, loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
        self._loop = loop
        self._event = event
        self._rung = False

    def __call__(self, _change: Event) -> None:
        if self._rung:
            return
        self._rung = True
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is listening any more
            self._loop.call_soon_threadsafe(self._ring)

    def _ring(self) -> None:
        self._rung = False
        self._event.set()
