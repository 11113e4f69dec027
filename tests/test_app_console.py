"""The status page and /api/ of a running app on SQLite, over real sockets: what they show, and
what their actions do to the store, in leader and cluster execution, and under uvicorn."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from piko import PikoApp
from piko.core.types import RunStatus
from piko.settings import Settings
from tests.conftest import wait_until
from tests.http.support import RawClient, Reply, async_test, fetch

TOKEN = "status-page-token-0123456789"
EVIL = "<script>alert(1)</script>"


def settings(db_path: str, **kw: Any) -> Settings:
    values: dict[str, Any] = {"db_path": db_path, "http_port": 0, "leader_enabled": False, "http_admin_token": TOKEN,
                              "poll_interval_s": 60.0, "heartbeat_interval_s": 0.2, "orphan_after_s": 2.0,
                              "tune_gc": False}
    values.update(kw)
    return Settings(**values)


async def post(port: int, path: str, token: str | None = TOKEN, body: bytes = b"") -> tuple[int, dict[str, Any]]:
    client = await RawClient.connect(port)
    try:
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        await client.send(f"POST {path} HTTP/1.1\r\nHost: t\r\n{auth}Content-Length: {len(body)}\r\n\r\n".encode()
                          + body)
        reply = await client.reply()
        return reply.status, json.loads(reply.body)
    finally:
        await client.close()


async def get_json(port: int, path: str, host: str = "test") -> Any:
    reply = await fetch(port, path, host=host)
    assert reply.status == 200, reply.body
    return json.loads(reply.body)


@asynccontextmanager
async def running(app: PikoApp) -> AsyncIterator[int]:
    async with app:
        assert app.live.http_port
        yield app.live.http_port


def test_pausing_a_job_stops_its_fires_at_once_and_resuming_starts_them_again(db_path: str) -> None:
    async def scenario() -> None:
        app = PikoApp("page", settings=settings(db_path))

        @app.job("ticker", interval={"seconds": 0.2})
        async def ticker(ctx: Any, scheduled_time: Any) -> None:
            pass

        async with running(app) as port:
            await wait_until(lambda: _count(app, "ticker"), timeout=5.0)
            status, answer = await post(port, "/api/jobs/ticker/pause")
            assert (status, answer["outcome"]) == (200, "done"), answer
            paused_at = app.clock.now()
            await asyncio.sleep(1.0)  # five periods
            runs = await app.store.recent_runs("ticker", 100)
            assert not [r for r in runs if r.scheduled_at > paused_at], "a fire ran after the pause"
            (job,) = (await get_json(port, "/api/jobs"))["jobs"]
            assert job["enabled"] is False and job["next_fire_at"] is None
            assert (await post(port, "/api/jobs/ticker/resume"))[0] == 200
            await wait_until(lambda: _count(app, "ticker", after=paused_at), timeout=5.0)

    asyncio.run(scenario())


async def _count(app: PikoApp, job_id: str, after: Any = None) -> int:
    runs = await app.store.recent_runs(job_id, 100)
    return len([r for r in runs if after is None or r.scheduled_at > after])


def test_run_now_records_a_manual_run_and_rerun_makes_the_next_attempt_of_a_failed_time(db_path: str) -> None:
    calls: list[int] = []

    async def scenario() -> None:
        app = PikoApp("page", settings=settings(db_path))

        @app.job("flaky")
        async def flaky(ctx: Any, scheduled_time: Any) -> None:
            calls.append(ctx["attempt"])
            if len(calls) <= 2:
                raise ValueError(f"bad input {EVIL}")

        async with running(app) as port:
            status, answer = await post(port, "/api/jobs/flaky/run")
            assert (status, answer["outcome"]) == (202, "started") and answer["run_id"] is not None
            manual = answer["run_id"]
            await wait_until(lambda: app.store.recent_runs("flaky", 5, status=RunStatus.FAILED), timeout=5.0)
            (failed,) = (await get_json(port, "/api/failures"))["runs"]
            assert failed["run_id"] == manual and failed["kind"] == "manual"
            assert failed["error_type"] == "ValueError" and EVIL in failed["error_message"]
            page = await fetch(port, "/")
            assert EVIL.encode() not in page.body and b"&lt;script&gt;alert(1)&lt;/script&gt;" in page.body
            status, answer = await post(port, f"/api/runs/{manual}/rerun")  # a run "now" holds no time
            assert status == 409 and "holds no run lock (a manual run: use Run now)" in answer["message"]

            at = app.clock.now().replace(microsecond=0)
            locked = await app.run_job("flaky", scheduled_time=at)  # a time of its own, as a fire has
            status, answer = await post(port, f"/api/runs/{locked.run_id}/rerun", body=b'{"by": "ops"}')
            assert (status, answer["outcome"]) == (202, "started"), answer
            await wait_until(lambda: app.store.recent_runs("flaky", 5, status=RunStatus.SUCCESS), timeout=5.0)
            again = await app.store.get_run(answer["run_id"])
            assert again is not None and (again.attempt, again.kind, again.scheduled_at) == (2, "backfill", at)
            status, answer = await post(port, f"/api/runs/{locked.run_id}/rerun")
            assert status == 409 and f"run {again.run_id} (attempt 2, SUCCESS) is newer" in answer["message"]
            assert (await post(port, f"/api/runs/{again.run_id}/rerun"))[0] == 409  # it succeeded
            assert (await post(port, "/api/jobs/nope/run"))[0] == 404
            assert (await post(port, "/api/runs/999999/cancel"))[0] == 404

    asyncio.run(scenario())
    assert calls == [1, 1, 2]


def test_cancelling_a_running_run_ends_it_cancelled_saying_who_asked(db_path: str) -> None:
    async def scenario() -> None:
        app = PikoApp("page", settings=settings(db_path))
        started = asyncio.Event()

        @app.job("slow")
        async def slow(ctx: Any, scheduled_time: Any) -> None:
            started.set()
            await asyncio.sleep(30)

        async with running(app) as port:
            assert (await post(port, "/api/jobs/slow/run"))[0] == 202
            await asyncio.wait_for(started.wait(), 5)
            (run,) = (await get_json(port, "/api/runs?status=running&job=slow"))["runs"]
            status, answer = await post(port, f"/api/runs/{run['run_id']}/cancel")
            assert status == 200 and "asked to stop" in answer["message"]
            await wait_until(lambda: app.store.recent_runs("slow", 1, status=RunStatus.CANCELLED), timeout=5.0)
            ended = await app.store.get_run(run["run_id"])
            assert ended is not None and ended.cancelled_by == "http 127.0.0.1"
            status, answer = await post(port, f"/api/runs/{run['run_id']}/cancel")
            assert status == 409 and "already ended CANCELLED" in answer["message"]

    asyncio.run(scenario())


def test_without_a_token_the_running_page_is_read_only(db_path: str) -> None:
    async def scenario() -> None:
        app = PikoApp("page", settings=settings(db_path, http_admin_token=None))

        @app.job("quiet", cron="0 0 1 1 *")
        async def quiet(ctx: Any, scheduled_time: Any) -> None:
            pass

        async with running(app) as port:
            status, answer = await post(port, "/api/jobs/quiet/pause")
            assert status == 403 and "http_admin_token is not set" in answer["error"]
            assert (await fetch(port, "/")).status == 403  # "Host: test": not a loopback name (DNS rebinding)
            page = await fetch(port, "/", host=f"127.0.0.1:{port}")
            assert page.status == 200 and b"Read-only" in page.body and b'data-action="api/' not in page.body
            assert (await fetch(port, "/api/jobs", host="localhost")).status == 200
            (job,) = (await get_json(port, "/api/jobs", host="[::1]:8000"))["jobs"]
            assert job["enabled"] is True and job["next_fire_at"].startswith(f"{app.clock.now().year + 1}-01-01")
        rows = await _rows(app)
        assert rows["quiet"].enabled  # nothing changed

    asyncio.run(scenario())


async def _rows(app: PikoApp) -> dict[str, Any]:
    await app.store.open()
    try:
        return {r.job_id: r for r in await app.store.load_schedules()}
    finally:
        await app.store.close()


def test_in_cluster_execution_run_now_queues_and_the_queue_depth_shows(db_path: str) -> None:
    async def scenario() -> None:
        # this instance's worker serves another queue, so the run waits in "default"
        app = PikoApp("page", settings=settings(db_path, execution="cluster", worker_queues="elsewhere"))

        @app.job("queued")
        async def queued(ctx: Any, scheduled_time: Any) -> None:
            pass

        async with running(app) as port:
            status, answer = await post(port, "/api/jobs/queued/run")
            assert status == 202 and "queued for a worker of queue 'default'" in answer["message"]
            assert (await get_json(port, "/api/queues")) == {"execution": "cluster", "queues": {"default": 1}}
            page = await fetch(port, "/")
            assert b'id="queues"' in page.body and b'<td class="num">1</td>' in page.body
            status, answer = await post(port, f"/api/runs/{answer['run_id']}/cancel")
            assert status == 200 and "was queued: cancelled" in answer["message"]
            (run,) = (await get_json(port, "/api/runs?job=queued"))["runs"]
            assert (run["status"], run["cancelled_by"]) == ("CANCELLED", "http 127.0.0.1")

    asyncio.run(scenario())


@async_test
async def test_the_asgi_api_app_serves_the_same_page_and_actions_under_uvicorn(tmp_path: Any) -> None:
    uvicorn = pytest.importorskip("uvicorn")
    app = PikoApp("page", settings=settings(str(tmp_path / "piko.db"), http_enabled=False))

    @app.job("nightly", cron="0 3 * * *")
    async def nightly(ctx: Any, scheduled_time: Any) -> None:
        pass

    server = uvicorn.Server(uvicorn.Config(app.api_app, host="127.0.0.1", port=0, log_level="error", lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        await wait_until(lambda: server.started, timeout=10.0)
        port = server.servers[0].sockets[0].getsockname()[1]
        assert (await post(port, "/api/jobs/nightly/pause", token="not-the-token-000000"))[0] == 401
        assert (await post(port, "/api/jobs/nightly/pause"))[0] == 200
        (job,) = (await get_json(port, "/api/jobs"))["jobs"]
        assert job["enabled"] is False
        page: Reply = await fetch(port, "/")
        assert page.status == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
        assert b'data-action="api/jobs/nightly/resume"' in page.body
    finally:
        server.should_exit = True
        await task
