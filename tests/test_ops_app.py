"""The app's own ops endpoints and logs, over a real socket."""

from __future__ import annotations

import asyncio
import io
import json
import logging

from piko import PikoApp
from piko.observability.logging import configure_logging
from piko.settings import Settings


async def get(port: int, path: str) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    head, _, body = data.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


def test_app_serves_health_readiness_and_metrics_with_run_counts(db_path):
    async def scenario():
        s = Settings(db_path=db_path, http_port=0, leader_enabled=False)
        app = PikoApp("ops", settings=s)

        @app.job("counted")
        async def counted(ctx, scheduled_time):
            pass

        async with app:
            await app.run_job("counted")
            server_port = _bound_port(app)
            health = await get(server_port, "/healthz")
            ready = await get(server_port, "/readyz")
            metrics = await get(server_port, "/metrics")
            leader = await get(server_port, "/leader")
        return health, ready, metrics, leader

    health, ready, metrics, leader = asyncio.run(scenario())
    assert health[0] == 200 and "loop_lag_s" in health[1]
    assert ready[0] == 200 and json.loads(ready[1])["role"] == "leader"
    assert metrics[0] == 200
    assert 'piko_job_run_total{job_id="counted",status="SUCCESS"} 1' in metrics[1]
    assert "piko_build_info" in metrics[1] and "process_resident_memory_bytes" in metrics[1]
    assert leader[0] == 200


def _bound_port(app: PikoApp) -> int:
    assert app.live.http_port
    return app.live.http_port


def test_json_logs_carry_job_and_run_ids_and_mask_secrets(db_path):
    stream = io.StringIO()
    configure_logging("INFO", as_json=True, stream=stream)
    try:
        async def scenario():
            app = PikoApp("logs", settings=Settings(db_path=db_path, http_enabled=False, leader_enabled=False))

            @app.job("talker")
            async def talker(ctx, scheduled_time):
                ctx["logger"].info("connecting to mysql://app:s3cret@db/x")

            async with app:
                return await app.run_job("talker")

        outcome = asyncio.run(scenario())
    finally:
        logging.getLogger("piko").handlers.clear()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    mine = [line for line in lines if line.get("job_id") == "talker"]
    assert mine and mine[0]["run_id"] == outcome.run_id
    assert "s3cret" not in stream.getvalue() and "app:***@db" in mine[0]["msg"]


def test_lines_from_a_jobs_own_logger_carry_the_run_and_are_masked(db_path):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    from piko.observability.logging import JsonFormatter, MaskingFilter, RunContextFilter

    handler.setFormatter(JsonFormatter())
    handler.addFilter(RunContextFilter())
    handler.addFilter(MaskingFilter())
    userlib = logging.getLogger("userlib")
    userlib.addHandler(handler)
    userlib.setLevel(logging.INFO)
    try:
        async def scenario():
            app = PikoApp("logs", settings=Settings(db_path=db_path, http_enabled=False, leader_enabled=False))

            @app.job("own_logger")
            async def own_logger(ctx, scheduled_time):
                userlib.info("token=abc123 fetched")

            async with app:
                return await app.run_job("own_logger")

        outcome = asyncio.run(scenario())
    finally:
        userlib.removeHandler(handler)
    (line,) = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert (line["job_id"], line["run_id"]) == ("own_logger", outcome.run_id)
    assert "abc123" not in line["msg"]


def test_the_asgi_app_starts_piko_without_a_second_server_on_http_port(db_path):
    """`uvicorn app:api_app --port 8000` with default settings: piko must not bind 8000 itself."""
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]

    async def scenario():
        app = PikoApp("asgi", settings=Settings(db_path=db_path, http_port=port, leader_enabled=False))
        messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
        sent: list[dict] = []

        async def receive():
            await asyncio.sleep(0)
            return messages.pop(0)

        async def send(message):
            sent.append(message)

        await app.api_app({"type": "lifespan"}, receive, send)
        return [m["type"] for m in sent]

    try:
        events = asyncio.run(scenario())
    finally:
        taken.close()
    assert events == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


def test_a_jobs_series_removed_by_hand_come_back_when_it_runs_again(db_path):
    async def scenario():
        app = PikoApp("series", settings=Settings(db_path=db_path, http_enabled=False, leader_enabled=False))

        @app.job("retired")
        async def retired(ctx, scheduled_time):
            pass

        async with app:
            await app.run_job("retired")
            assert app.metrics.remove_series(job_id="retired") > 0
            assert 'job_id="retired"' not in app.metrics.render()
            await app.run_job("retired")
            return app.metrics.render()

    text = asyncio.run(scenario())
    assert 'piko_job_run_total{job_id="retired",status="SUCCESS"} 1' in text
