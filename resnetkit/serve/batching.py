"""Dynamic batching: calls that arrive close together are run as one batch and answered separately.

A call waits for at most ``max_wait_ms`` after the first call of a batch, and a batch holds at most ``max_batch``
items; the batch runs on one worker thread, so the event loop keeps accepting requests (and gathering the next
batch) while the network runs. A caller that gives up (its request timed out, its client went away) is skipped.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class QueueFullError(RuntimeError):
    """More items are waiting than the batcher holds: the service is overloaded (HTTP 503)."""


class Batcher(Generic[Item, Result]):
    """Gathers concurrent :meth:`submit` calls into batches for ``run``.

    Args:
        run: a batch of items -> one result per item, in order; runs on the worker thread.
        max_batch: the most items in one batch.
        max_wait_ms: how long the first item of a batch waits for others.
        max_queue: the most items waiting; past it :meth:`submit` raises :class:`QueueFullError`.
        on_batch: called on the event loop after each batch with its size and seconds (metrics).
    """

    def __init__(self, run: Callable[[list[Item]], Sequence[Result]], max_batch: int = 32, max_wait_ms: float = 5.0,
                 max_queue: int = 1024, on_batch: Callable[[int, float], None] | None = None):  # fmt: skip
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError(f"need max_batch >= 1 and max_wait_ms >= 0, got {max_batch} and {max_wait_ms}")
        self.run, self.max_batch, self.max_wait = run, max_batch, max_wait_ms / 1000
        self.max_queue, self.on_batch = max_queue, on_batch
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="resnetkit-batch")  # also serialises other work
        self._pending: collections.deque[tuple[Item, asyncio.Future]] = collections.deque()
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Start gathering on the running event loop (the app's lifespan calls this)."""
        self._arrived = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._gather_forever(), name="resnetkit-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for _, future in self._pending:
            future.cancel()
        self._pending.clear()

    def close(self) -> None:
        self.executor.shutdown(wait=True)

    async def submit(self, items: Sequence[Item]) -> list[Result]:
        """The results of ``items``, run in whatever batches they land in."""
        if self._task is None or self._arrived is None:
            raise RuntimeError("the batcher is not started (Batcher.start, in the app's lifespan)")
        if len(self._pending) + len(items) > self.max_queue:
            raise QueueFullError(f"{len(self._pending)} images are waiting already: the server is overloaded")
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in items]
        self._pending.extend(zip(items, futures))
        self._arrived.set()
        try:
            return list(await asyncio.gather(*futures))
        finally:
            for future in futures:  # a caller that gave up: its items are skipped by the gatherer
                future.cancel()

    async def run_exclusive(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the worker thread between batches (e.g. a class activation map, which needs the
        network to itself)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def _gather_forever(self) -> None:
        loop, arrived = asyncio.get_running_loop(), self._arrived
        assert arrived is not None
        while True:
            while not self._pending:
                arrived.clear()
                await arrived.wait()
            deadline = loop.time() + self.max_wait
            while len(self._pending) < self.max_batch and (left := deadline - loop.time()) > 0:
                arrived.clear()
                try:  # waiting on an Event, not a Queue.get: cancelling it can never lose an item
                    await asyncio.wait_for(arrived.wait(), left)
                except asyncio.TimeoutError:
                    break
            taken = [self._pending.popleft() for _ in range(min(self.max_batch, len(self._pending)))]
            live = [(item, future) for item, future in taken if not future.done()]
            if live:
                await self._run_batch(loop, live)

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, live: list[tuple[Item, asyncio.Future]]) -> None:
        start = time.perf_counter()
        try:
            results = await loop.run_in_executor(self.executor, self.run, [item for item, _ in live])
        except Exception as err:  # noqa: BLE001  # the batch failed: every caller in it gets the error, not the loop
            for _, future in live:
                if not future.done():
                    future.set_exception(err)
            return
        if self.on_batch is not None:
            self.on_batch(len(live), time.perf_counter() - start)
        for (_, future), result in zip(live, results):
            if not future.done():
                future.set_result(result)
