"""The batcher alone: concurrent calls become one batch, each gets its own answer; a caller that gives up is
skipped; a failing batch fails only its own callers."""

from __future__ import annotations

import asyncio
import threading

import pytest

from resnetkit.serve import Batcher, QueueFullError


def run(coroutine):
    return asyncio.run(coroutine)


def test_concurrent_calls_form_batches_and_are_answered_separately():
    batches, threads = [], set()

    def double(items):
        batches.append(list(items))
        threads.add(threading.current_thread().name)
        return [2 * x for x in items]

    async def main():
        batcher = Batcher(double, max_batch=4, max_wait_ms=50)
        batcher.start()
        answers = await asyncio.gather(*(batcher.submit([i]) for i in range(10)), batcher.submit([100, 101]))
        await batcher.stop()
        batcher.close()
        return answers

    answers = run(main())
    assert answers == [[2 * i] for i in range(10)] + [[200, 202]]
    assert sorted(x for b in batches for x in b) == [*range(10), 100, 101]
    assert max(map(len, batches)) == 4 and len(batches) == 3  # 12 items, at most 4 a batch
    assert threads == {"resnetkit-batch_0"}  # off the event loop, on the one worker


def test_a_lone_call_waits_at_most_max_wait():
    async def main():
        batcher = Batcher(lambda items: items, max_batch=64, max_wait_ms=20)
        batcher.start()
        loop = asyncio.get_running_loop()
        start = loop.time()
        answer = await batcher.submit(["x"])
        await batcher.stop()
        return answer, loop.time() - start

    answer, seconds = run(main())
    assert answer == ["x"] and 0.015 < seconds < 0.5


def test_cancelled_callers_are_skipped_and_errors_reach_only_their_batch():
    seen = []

    def picky(items):
        seen.extend(items)
        if "bad" in items:
            raise RuntimeError("boom")
        return items

    async def main():
        batcher = Batcher(picky, max_batch=8, max_wait_ms=30)
        batcher.start()
        gone = asyncio.ensure_future(batcher.submit(["gone"]))
        await asyncio.sleep(0)
        gone.cancel()
        ok = await batcher.submit(["ok"])
        with pytest.raises(RuntimeError, match="boom"):
            await batcher.submit(["bad"])
        after = await batcher.submit(["after"])
        await batcher.stop()
        return ok, after

    assert run(main()) == (["ok"], ["after"])
    assert "gone" not in seen


def test_a_full_queue_is_refused():
    async def main():
        batcher = Batcher(lambda items: items, max_batch=1, max_wait_ms=0, max_queue=3)
        batcher.start()
        with pytest.raises(QueueFullError):
            await batcher.submit(list(range(4)))
        await batcher.stop()

    run(main())
