"""Cluster execution: the leader fires every schedule, any instance with room runs the run.

With execution = "cluster" each fire becomes a row in job_run, and instances claim rows from
the database (no broker). `queue=` routes a job's runs to the instances serving that queue:
here `piko run` (the scheduler, also a worker) serves only "default", and a separate
`piko worker` serves "reports". Start more workers, on this host or others sharing the
store, to spread the load; each runs at most worker_concurrency (100) runs at once.

Run from the repository root, each command in its own terminal (one SQLite file works for
processes on one host; use MySQL for several hosts):

    PIKO_EXECUTION=cluster PIKO_WORKER_QUEUES=default python -m piko run examples/cluster_workers.py
    python -m piko worker examples/cluster_workers.py --queues reports --http :8001
    python -m piko workers                # instances, roles, queues, runs going, queued runs
    python -m piko runs render_report     # then compare instance ids: piko runs --show RUN_ID

`piko worker` always runs in cluster mode, never leads, and without --queues serves the
queues of the jobs in its file.
"""

from __future__ import annotations

import asyncio
import random

from piko import PikoApp

app = PikoApp(name="cluster")


@app.job(job_id="collect_metrics", interval={"seconds": 5})
async def collect_metrics(ctx, scheduled_time):
    await asyncio.sleep(0.1)  # stands in for a few quick API calls
    ctx["logger"].info("metrics collected on %s", ctx["instance_id"])


@app.job(job_id="render_report", interval={"seconds": 10}, queue="reports", timeout=60)
async def render_report(ctx, scheduled_time):
    await asyncio.sleep(random.uniform(0.5, 2))  # stands in for slow work kept off the scheduler
    ctx["logger"].info("report for %s rendered on %s", scheduled_time.isoformat(), ctx["instance_id"])
