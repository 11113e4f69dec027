"""ETL with a typed config that can change while piko runs.

`schema=EtlConfig` makes piko build the job's parameters from its `job_config` row and hand
each run its own `EtlConfig` as ctx["config"]. A new version is picked up at the next
reconcile (every poll_interval_s, 10 s by default) with no restart; a version that does not
validate is refused with the reason, and the job keeps its last good config.

Run it from the repository root, then change the config from a second terminal:

    python -m piko run examples/etl_hot_config.py
    python -m piko config orders_etl '{"currency": "USD", "min_amount": 25}'
    python -m piko config orders_etl '{"currency": "yen"}'    # refused: see the log line

Each run appends one line per region to ./order_totals.jsonl.
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from piko import PikoApp

app = PikoApp(name="etl")

OUTPUT = Path("order_totals.jsonl")
EUR_RATES = {"EUR": 1.0, "USD": 1.08, "GBP": 0.85}  # a real job would load these too


@dataclass
class EtlConfig:
    regions: list = field(default_factory=lambda: ["north", "south"])
    min_amount: float = 0.0  # in EUR: smaller orders are left out
    currency: str = "EUR"  # the currency totals are reported in

    def __post_init__(self) -> None:  # piko checks the plain types; the class checks the rest
        if self.currency not in EUR_RATES:
            raise ValueError(f"currency must be one of {sorted(EUR_RATES)}, not {self.currency!r}")


async def fetch_orders(region: str, at: datetime) -> list[float]:
    """Extract: stands in for an API call or a query returning order amounts in EUR."""
    await asyncio.sleep(0.05)
    rng = random.Random(f"{region}/{at.isoformat()}")
    return [round(rng.uniform(1, 100), 2) for _ in range(rng.randint(5, 20))]


def append_lines(path: Path, rows: list[dict]) -> None:
    with path.open("a", encoding="utf-8") as out:
        out.writelines(json.dumps(row) + "\n" for row in rows)


@app.job(job_id="orders_etl", schema=EtlConfig, interval={"seconds": 15})
async def orders_etl(ctx, scheduled_time):
    config: EtlConfig = ctx["config"]
    fetched = await asyncio.gather(*(fetch_orders(region, scheduled_time) for region in config.regions))
    rate = EUR_RATES[config.currency]
    rows = []
    for region, amounts in zip(config.regions, fetched, strict=True):  # transform
        kept = [amount for amount in amounts if amount >= config.min_amount]
        rows.append({"scheduled_time": scheduled_time.isoformat(), "region": region, "orders": len(kept),
                     "total": round(sum(kept) * rate, 2), "currency": config.currency})
    await asyncio.to_thread(append_lines, OUTPUT, rows)  # load, off the event loop
    ctx["logger"].info("loaded %d region totals with %s", len(rows), asdict(config))
