"""CPU-heavy work off the event loop: app.cpu_manager.map_reduce.

Handlers share one event loop with the timers, the heartbeats and the leader lease, so
computation that holds the CPU for long must run elsewhere. map_reduce sends the items in
chunks to piko's own worker processes (cpu_workers, default: cores - 1), returns the
results in input order, or folds them with reduce_fn. Workers import the functions by
name: define them with `def` at module top level (a lambda is refused before anything is
sent). Cancelling the run (a timeout, shutdown) cancels its pending chunks.

    python -m piko run examples/cpu_map_reduce.py
"""

from __future__ import annotations

from piko import PikoApp

app = PikoApp(name="primes")

LIMIT = 200_000
CHUNK = 10_000


def is_prime(n: int) -> bool:
    if n < 2 or n % 2 == 0:
        return n == 2
    factor = 3
    while factor * factor <= n:
        if n % factor == 0:
            return False
        factor += 2
    return True


def count_primes(bounds: tuple[int, int]) -> int:
    """Map: the primes in [low, high), computed in a worker process."""
    low, high = bounds
    return sum(1 for n in range(low, high) if is_prime(n))


def add(total: int, count: int) -> int:
    """Reduce: runs on the event loop, so it stays cheap."""
    return total + count


@app.job(job_id="prime_census", interval={"seconds": 30}, timeout=120)
async def prime_census(ctx, scheduled_time):
    ranges = [(low, min(low + CHUNK, LIMIT)) for low in range(0, LIMIT, CHUNK)]
    per_range = await app.cpu_manager.map_reduce(count_primes, ranges)  # a list, in input order
    total = await app.cpu_manager.map_reduce(count_primes, ranges, reduce_fn=add)  # one folded value
    ctx["logger"].info("%d primes below %d: %d in the first range of %d, %d in the last", total, LIMIT,
                       per_range[0], CHUNK, per_range[-1])
