"""Distributed map/reduce inside a job: one child run per item, results back in item order.

`@app.task` registers the per-item code; `await ctx.map(task, items)` runs it once per item (on
any worker in cluster mode, here in leader mode), each item a recorded run with its own retries.
If the parent's instance dies, the re-run parent reuses the items already done. Results travel
as JSON (64 KiB each at most): return a summary or a reference, not the data itself.

    python -m piko run examples/map.py
    python -m piko runs monthly_report                 # the parent runs
    python -m piko runs RUN_ID --tree                  # one run and its 12 items
"""

import asyncio

from piko import PikoApp

app = PikoApp(name="map-demo")


@app.task("per_month", retries=2, timeout=60)
async def per_month(ctx, month):
    await asyncio.sleep(0.1)  # stands for reading one month of data
    return {"month": month, "orders": len(month) * 100}


@app.job("monthly_report", interval={"seconds": 30})
async def monthly_report(ctx, scheduled_time):
    months = [f"2026-{m:02}" for m in range(1, 13)]
    rows = await ctx.map("per_month", months, concurrency=4)
    total = ctx.reduce(lambda acc, row: acc + row["orders"], rows, 0)
    ctx["logger"].info("%d orders over %d months", total, len(rows))
    return total
