"""A stateful job: each data window processed once, in order, with catch-up after downtime.

With `stateful=True` every run gets ctx["data_interval"], the window [previous fire, this
fire). piko moves the job's watermark (scheduled_job.last_data_time) past a window only when
its run succeeded. With BackfillPolicy.CATCH_UP the windows that fell due while piko was
down, or a window that failed, run first, oldest first, before any newer one.

Run it from the repository root, stop it, and start it again a few minutes later:

    python -m piko run examples/stateful_catch_up.py      # Ctrl+C after a window or two
    python -m piko run examples/stateful_catch_up.py      # the missed windows run at once
    python -m piko runs page_view_rollup --kind backfill  # ...recorded with kind 'backfill'

Each window's counts go to ./rollups/<window start>.json. A window that runs again rewrites
its own file, so retries and re-runs (`piko backfill ... --rerun-failed`) are harmless.
"""

from __future__ import annotations

import asyncio
import json
import random
from datetime import datetime
from pathlib import Path

from piko import BackfillPolicy, DataInterval, PikoApp

app = PikoApp(name="rollups")

OUTPUT = Path("rollups")


async def count_page_views(start: datetime, end: datetime) -> dict[str, int]:
    """Stands in for `SELECT page, COUNT(*) FROM page_view WHERE at >= start AND at < end GROUP BY page`."""
    await asyncio.sleep(0.05)
    rng = random.Random(start.isoformat())
    seconds = (end - start).total_seconds()
    return {page: int(rng.uniform(0.5, 3) * seconds) for page in ("/", "/pricing", "/docs")}


def write_rollup(window: DataInterval, counts: dict[str, int]) -> None:
    OUTPUT.mkdir(exist_ok=True)
    body = {"start": window.start.isoformat(), "end": window.end.isoformat(), "views": counts}
    target = OUTPUT / f"{window.start:%Y-%m-%dT%H%M%S%z}.json"
    part = target.with_suffix(".part")
    part.write_text(json.dumps(body), encoding="utf-8")
    part.replace(target)  # readers never see half a file


@app.job(job_id="page_view_rollup", cron="* * * * *", stateful=True, backfill_policy=BackfillPolicy.CATCH_UP)
async def page_view_rollup(ctx, scheduled_time):
    window: DataInterval = ctx["data_interval"]
    counts = await count_page_views(window.start, window.end)
    await asyncio.to_thread(write_rollup, window, counts)
    ctx["logger"].info("window [%s, %s): %d views", window.start.isoformat(), window.end.isoformat(),
                       sum(counts.values()))
