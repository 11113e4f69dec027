"""A workflow: extract, then transform and audit in parallel, then load, then a clean-up that
always runs. Each step is a recorded run; a failed step fails its dependants (UPSTREAM_FAILED).

    python -m piko run examples/workflow.py
    python -m piko runs daily_etl                         # the workflow runs
    python -m piko workflow show RUN_ID                   # every step, its status and duration
    DEMO_BREAK=transform python -m piko trigger examples/workflow.py daily_etl   # make one fail
    python -m piko workflow rerun RUN_ID examples/workflow.py                    # then re-run it
"""

import os

from piko import PikoApp

app = PikoApp(name="workflow-demo")
wf = app.workflow("daily_etl", interval={"seconds": 30})


def _maybe_break(step):
    if os.environ.get("DEMO_BREAK") == step:
        raise RuntimeError(f"{step} broken on purpose (DEMO_BREAK)")


@wf.step("extract", retries=2)
async def extract(ctx, scheduled_time):
    ctx["workflow"]["source"] = "orders"
    return [{"id": i, "amount": i * 10} for i in range(5)]


@wf.step("transform", after=["extract"])
async def transform(ctx, scheduled_time):
    _maybe_break("transform")
    return sum(row["amount"] for row in ctx["upstream"]["extract"])


@wf.step("audit", after=["extract"])
async def audit(ctx, scheduled_time):
    return len(ctx["upstream"]["extract"])


@wf.step("load", after=["transform", "audit"])
async def load(ctx, scheduled_time):
    total, count = ctx["upstream"]["transform"], ctx["upstream"]["audit"]
    ctx["logger"].info("loaded %d rows from %s, total %d", count, ctx["workflow"]["source"], total)
    return total


@wf.step("cleanup", after=["load"], trigger_rule="all_done")
async def cleanup(ctx, scheduled_time):
    ctx["logger"].info("clean-up runs whatever load did")
