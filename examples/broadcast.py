"""Broadcast: each fire runs once on every live instance (clear a per-host cache, rotate local logs).

Every instance serving the job's queue gets its own copy of the fire, recorded as its own run
(`refresh_cache[@<instance id>]`); an instance that starts later only gets later fires. In
leader mode the one copy runs on the leader. Run two or more instances in cluster mode:

    PIKO_EXECUTION=cluster python -m piko run examples/broadcast.py      # terminal 1
    PIKO_EXECUTION=cluster python -m piko worker examples/broadcast.py   # terminal 2
    python -m piko runs refresh_cache                                    # the fires
    python -m piko runs RUN_ID --tree                                    # one fire, copy by copy
"""

import asyncio
import os
import tempfile
from pathlib import Path

from piko import PikoApp

app = PikoApp(name="broadcast-demo")
CACHE_DIR = os.environ.get("DEMO_CACHE_DIR", tempfile.gettempdir())


@app.job("refresh_cache", interval={"seconds": 10}, broadcast=True)
async def refresh_cache(ctx, scheduled_time):
    # each instance clears what only it holds: a file named after the instance here
    marker = Path(CACHE_DIR) / f"piko-cache-{os.getpid()}.txt"
    await asyncio.to_thread(marker.write_text, scheduled_time.isoformat(), encoding="utf-8")
    ctx["logger"].info("cache refreshed on %s", ctx["instance_id"])
