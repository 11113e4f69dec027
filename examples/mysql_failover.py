"""Two instances on one MySQL/MariaDB database: one leads, the other takes over when it goes.

Instances sharing a store elect a leader through a lease row (piko_lease) decided by the
database clock; only the leader fires. A standby tries every leader_renew_interval_s (10 s)
and takes over at its next try when the leader stopped cleanly (it releases the lease) or
died on the same host (piko sees its pid is gone); a leader that went silent elsewhere (kill
-9, a lost machine) is replaced within leader_lease_s + leader_renew_interval_s (30 + 10 s).
The fires that fell due in between run once, late, as one coalesced run (the others are
recorded MISSED); no scheduled time runs twice, because its run lock is a row in the same
database.

1. A MySQL or MariaDB database. Without Docker: a throwaway MariaDB from the repository's
   script (needs mariadb-server installed; own data directory, listens on 127.0.0.1 only),
   which prints the DSN to use:

       pip install '.[mysql]'
       MARIADB_SANDBOX_PORT=3307 sh scripts/mariadb-sandbox.sh start /tmp/piko-mariadb
       # -> mysql://piko:piko@127.0.0.1:3307/piko

2. Two instances, each in its own terminal, each with its own ops port:

       export PIKO_MYSQL_DSN=mysql://piko:piko@127.0.0.1:3307/piko    # in both terminals
       python -m piko run examples/mysql_failover.py --http :8001     # terminal 1
       python -m piko run examples/mysql_failover.py --http :8002     # terminal 2
       curl -s localhost:8001/readyz; curl -s localhost:8002/readyz   # "role": "leader" / "standby"

3. Stop the leader (Ctrl+C, or kill -9 its pid); the other logs that it is now the leader and
   the runs go on. Then look, and clean up:

       python -m piko runs sync_inventory     # who ran each time; none ran twice
       sh scripts/mariadb-sandbox.sh purge /tmp/piko-mariadb
"""

from __future__ import annotations

import asyncio

from piko import PikoApp

app = PikoApp(name="inventory")


@app.job(job_id="sync_inventory", interval={"seconds": 2})
async def sync_inventory(ctx, scheduled_time):
    await asyncio.sleep(0.2)  # stands in for copying stock levels from a supplier's API
    ctx["logger"].info("inventory for %s synced by %s", scheduled_time.isoformat(), ctx["instance_id"])
