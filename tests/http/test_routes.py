"""The ops route table, called directly (no sockets)."""

from __future__ import annotations

import asyncio
import json
import time

from piko.observability.metrics import MetricsRegistry
from tests.http.support import FakeOpsState, async_test, make_routes


class BrokenState(FakeOpsState):
    async def readiness_checks(self) -> dict[str, str | None]:
        raise OSError("disk I/O error")


@async_test
async def test_readiness_failure_by_exception_is_reported_not_raised() -> None:
    response = await make_routes(BrokenState()).handle("GET", "/readyz")
    assert response.status == 503
    assert json.loads(response.body)["checks"]["checks"] == "OSError: disk I/O error"


@async_test
async def test_concurrent_probes_share_one_store_check() -> None:
    state = FakeOpsState(check_delay_s=0.05)
    routes = make_routes(state)
    responses = await asyncio.gather(*(routes.handle("GET", "/readyz") for _ in range(20)))
    assert {r.status for r in responses} == {200}
    assert state.check_calls == 1


@async_test
async def test_a_standby_is_ready_by_default() -> None:
    response = await make_routes(FakeOpsState(current_role="standby")).handle("GET", "/readyz")
    assert response.status == 200
    assert json.loads(response.body)["role"] == "standby"


@async_test
async def test_unknown_paths_are_404_even_for_other_methods() -> None:
    routes = make_routes()
    assert (await routes.handle("POST", "/nowhere")).status == 404
    assert (await routes.handle("PUT", "/healthz")).status == 405


@async_test
async def test_large_metrics_render_yields_to_the_loop() -> None:
    registry = MetricsRegistry()
    histogram = registry.histogram("h", "big", ("job_id",))
    for i in range(10_000):
        histogram.labels(job_id=f"job-{i}").observe(i / 1000)
    routes = make_routes(registry=registry)
    gaps: list[float] = []
    last = time.perf_counter()
    running = True

    async def ticker() -> None:
        nonlocal last
        while running:
            await asyncio.sleep(0)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    response = await routes.handle("GET", "/metrics")
    running = False
    await task
    assert response.body.count(b"\n") == 2 + 10_000 * (15 + 2)  # 14 default bounds + Inf, _sum, _count
    assert len(gaps) > 5  # the render gave the loop turns
    assert max(gaps) < 0.1


@async_test
async def test_concurrent_scrapes_share_one_render() -> None:
    registry = MetricsRegistry()
    counter = registry.counter("c_total", "c", ("i",))
    for i in range(5000):
        counter.labels(i=str(i)).inc()
    routes = make_routes(registry=registry)
    calls = 0
    original = registry.render_chunks

    def counting_chunks(batch: int = 1000):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        return original(batch)

    registry.render_chunks = counting_chunks  # type: ignore[method-assign]
    bodies = await asyncio.gather(*(routes.handle("GET", "/metrics") for _ in range(5)))
    assert len({b.body for b in bodies}) == 1
    assert calls < 5
