"""The CPU pool as jobs use it through the app (seed example 5): no worker outlives the app."""

from __future__ import annotations

import asyncio
import os

from piko import PikoApp
from piko.settings import Settings
from tests.compute.workfns import square


def test_pool_first_used_inside_a_run_is_shut_down_with_the_app(db_path):
    async def scenario():
        app = PikoApp("cpu", settings=Settings(db_path=db_path, http_enabled=False, leader_enabled=False,
                                               cpu_workers=2))

        @app.job("io_plus_cpu")
        async def io_plus_cpu(ctx, scheduled_time):
            results = await app.cpu_manager.map_reduce(map_fn=square, items=list(range(100)), concurrency=2)
            assert results == [x * x for x in range(100)]
            assert await app.cpu_manager.submit(square, 21) == 441
            return app.cpu_manager.pids()

        async with app:
            outcome = await app.run_job("io_plus_cpu")
        return outcome

    outcome = asyncio.run(scenario())
    assert outcome.status.value == "SUCCESS", outcome.error_message
    pids = outcome.result
    assert len(pids) >= 1
    assert [pid for pid in pids if os.path.exists(f"/proc/{pid}")] == []
