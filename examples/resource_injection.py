"""Resources: what a job needs, opened before each run and closed after it, whatever happens.

`resources={"name": ...}` injects one keyword argument per entry. Two kinds are shown:

- `Warehouse`, a Resource class: piko creates one instance per app (a pool made in its
  __init__ would be shared by every run) and calls `acquire(ctx)` for each run, here an
  @asynccontextmanager that opens a connection, commits if the run succeeded and closes it.
- `scratch_dir`, a plain factory f(ctx) returning an async context manager: each run gets
  its own temporary directory, deleted when the run ends, also when it fails or is cancelled.

Resources are entered in the order they are declared and left in reverse.

    python -m piko run examples/resource_injection.py
    sqlite3 warehouse.db 'SELECT * FROM price ORDER BY fetched_at DESC LIMIT 5'
"""

from __future__ import annotations

import asyncio
import csv
import random
import sqlite3
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path

from piko import PikoApp, Resource

app = PikoApp(name="resources")


class Warehouse(Resource):
    """A SQLite connection per run to ./warehouse.db, committed only when the run succeeds."""

    def __init__(self) -> None:  # once per app
        self.path = "warehouse.db"
        self.ddl = "CREATE TABLE IF NOT EXISTS price (symbol TEXT, price REAL, fetched_at TEXT, run_id INT)"

    @asynccontextmanager
    async def acquire(self, ctx):
        conn = await asyncio.to_thread(sqlite3.connect, self.path, check_same_thread=False)
        try:
            await asyncio.to_thread(conn.execute, self.ddl)
            yield conn
            await asyncio.to_thread(conn.commit)  # not reached when the run raised
        finally:
            await asyncio.to_thread(conn.close)  # closing without commit rolls back


@asynccontextmanager
async def scratch_dir(ctx):
    with tempfile.TemporaryDirectory(prefix=f"{ctx['job_id']}-") as path:
        yield Path(path)


async def download_prices(target: Path) -> None:
    """Stands in for downloading a CSV export from a partner's API."""
    await asyncio.sleep(0.05)
    body = "".join(f"{symbol},{random.uniform(10, 500):.2f}\n" for symbol in ("ACME", "GLOBEX", "INITECH"))
    await asyncio.to_thread(target.write_text, body)


def load_prices(conn: sqlite3.Connection, source: Path, fetched_at: str, run_id: int) -> int:
    with source.open(newline="") as rows:
        records = [(symbol, float(price), fetched_at, run_id) for symbol, price in csv.reader(rows)]
    conn.executemany("INSERT INTO price VALUES (?, ?, ?, ?)", records)
    return len(records)


@app.job(job_id="load_prices", interval={"seconds": 10}, resources={"db": Warehouse, "scratch": scratch_dir})
async def load_prices_job(ctx, scheduled_time, db, scratch):
    export = scratch / "prices.csv"
    await download_prices(export)
    loaded = await asyncio.to_thread(load_prices, db, export, scheduled_time.isoformat(), ctx["run_id"])
    ctx["logger"].info("loaded %d prices from %s", loaded, export)
