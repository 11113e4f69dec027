"""Coalescing store calls: what one loop iteration submits goes out together, per group."""

from __future__ import annotations

import asyncio

import pytest

from piko.core.batching import Batcher


def test_items_submitted_in_one_iteration_share_one_call_and_get_their_own_results():
    calls: list[list[int]] = []

    async def send(items):
        calls.append(list(items))
        return [i * 10 for i in items]

    async def main():
        batcher = Batcher(send)
        first = await asyncio.gather(*(batcher.submit(i) for i in range(5)))
        second = await batcher.submit(7)
        return first, second

    first, second = asyncio.run(main())
    assert first == [0, 10, 20, 30, 40] and second == 70
    assert calls == [[0, 1, 2, 3, 4], [7]]


def test_groups_never_share_a_call_and_big_batches_are_split():
    calls: list[tuple[str, int]] = []

    async def send(items):
        calls.append((items[0][0], len(items)))
        return [None] * len(items)

    async def main():
        batcher = Batcher(send, max_batch=3)
        await asyncio.gather(*(batcher.submit(("a", i), group="a") for i in range(4)),
                             *(batcher.submit(("b", i), group="b") for i in range(2)))

    asyncio.run(main())
    assert sorted(calls) == [("a", 1), ("a", 3), ("b", 2)]


def test_a_failing_call_fails_every_caller_of_that_batch_only():
    async def send(items):
        if "bad" in items:
            raise RuntimeError("store down")
        return list(items)

    async def main():
        batcher = Batcher(send)
        doomed = [batcher.submit("bad"), batcher.submit("x")]
        results = await asyncio.gather(*doomed, return_exceptions=True)
        return results, await batcher.submit("ok")

    results, later = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) for r in results) and later == "ok"


def test_a_caller_that_gave_up_does_not_break_the_others():
    async def send(items):
        await asyncio.sleep(0.01)
        return list(items)

    async def main():
        batcher = Batcher(send)
        gone, kept = batcher.submit(1), batcher.submit(2)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        return await kept

    assert asyncio.run(main()) == 2
