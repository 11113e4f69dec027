"""The ops route table, called directly (no sockets)."""

from __future__ import annotations

import asyncio
import json
import time

from piko.http.routes import PIECE_CHARS
from piko.observability.metrics import MetricsRegistry
from tests.http.support import FakeOpsState, async_test, make_routes


class BrokenState(FakeOpsState):
    async def readiness_checks(self) -> dict[str, str | None]:
        raise OSError("disk I/O error")


@async_test
async def test_readiness_failure_by_exception_is_reported_under_the_check_name() -> None:
    response = await make_routes(BrokenState()).handle("GET", "/readyz")
    assert response.status == 503
    assert json.loads(response.body)["checks"] == {"started": "ok", "store": "OSError: disk I/O error"}


@async_test
async def test_a_hung_check_is_reported_under_every_check_the_state_last_named() -> None:
    state = FakeOpsState(checks={"store": None, "sink": None})
    routes = make_routes(state, readiness_timeout_s=0.05)
    assert (await routes.handle("GET", "/readyz")).status == 200
    state.check_delay_s = 1.0
    response = await routes.handle("GET", "/readyz")
    assert response.status == 503
    assert json.loads(response.body)["checks"] == {
        "started": "ok", "store": "no answer within 0.05 s", "sink": "no answer within 0.05 s"}


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
    assert len(gaps) > 10  # the render gave the loop turns
    gaps.sort()
    print(f"loop gaps: n={len(gaps)} p50={gaps[len(gaps) // 2] * 1000:.2f} ms max={gaps[-1] * 1000:.2f} ms")
    # ~2.5 ms on a quiet core (the 2 ms budget plus one piece); 20 ms leaves room for a busy
    # neighbour but not for the garbage collection a first render used to set off (~30 ms)
    assert gaps[len(gaps) // 2] < 0.005 and gaps[-1] < 0.02


@async_test
async def test_the_metrics_body_stays_in_pieces_that_add_up_to_the_rendered_text() -> None:
    registry = MetricsRegistry()
    gauge = registry.gauge("g", "many series", ("i",))
    for i in range(20_000):
        gauge.labels(i=f"{i:040d}").set(i)
    response = await make_routes(registry=registry).handle("GET", "/metrics")
    assert len(response.chunks) >= 4  # ~1.2 MB: never joined into one bytes object
    assert max(len(c) for c in response.chunks) < 2 * PIECE_CHARS
    assert response.content_length == sum(len(c) for c in response.chunks)
    assert b"".join(response.chunks) == registry.render().encode()


@async_test
async def test_concurrent_scrapes_share_one_render() -> None:
    registry = MetricsRegistry()
    counter = registry.counter("c_total", "c", ("i",))
    for i in range(5000):
        counter.labels(i=str(i)).inc()
    routes = make_routes(registry=registry)
    calls = 0
    original = registry.render_chunks

    def counting_chunks(lines: int = 512):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        return original(lines)

    registry.render_chunks = counting_chunks  # type: ignore[method-assign]
    bodies = await asyncio.gather(*(routes.handle("GET", "/metrics") for _ in range(5)))
    assert len({b.body for b in bodies}) == 1
    assert calls < 5
