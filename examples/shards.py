"""Static sharding: one fire split into N runs that any worker may take.

`scan` runs as 4 shards per fire; each gets `ctx["shard"] == (index, total)` and picks its part
of the work (here: the user ids whose remainder is its index). The fire is SUCCESS when all
shards are; a failed shard alone is run again (the job's `retries`). Change the split while it
runs, no restart: `UPDATE scheduled_job SET shards = 8 WHERE job_id = 'scan'`.

    python -m piko run examples/shards.py                               # leader mode: shards run here
    PIKO_EXECUTION=cluster python -m piko run examples/shards.py        # or spread them over workers,
    PIKO_EXECUTION=cluster python -m piko worker examples/shards.py     # started in other terminals
"""

from piko import PikoApp

app = PikoApp(name="shards-demo")
USERS = range(1, 10_001)


@app.job("scan", interval={"seconds": 10}, shards=4, retries=2)
async def scan(ctx, scheduled_time):
    index, total = ctx["shard"]
    mine = [user for user in USERS if user % total == index]
    ctx["logger"].info("shard %d/%d scanned %d users", index, total, len(mine))
