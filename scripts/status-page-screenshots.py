"""Screenshots of the status page for the docs, from a small demo app on a throwaway SQLite file.

    python scripts/status-page-screenshots.py [OUT_DIR]     # default: docs/

Writes status-page.png (with an admin token: the action buttons) and status-page-read-only.png
(no token set: what loopback readers see), 1280 px wide, in a headless Chromium driven by
tests/browser.py. Needs Chromium (apt-get install -y chromium).
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from piko import PikoApp  # noqa: E402
from piko.settings import Settings  # noqa: E402
from tests.browser import Browser, find_chromium  # noqa: E402

TOKEN = "screenshot-token-0123456789"


def demo_app(db_path: str, token: str | None) -> PikoApp:
    app = PikoApp("demo", settings=Settings(db_path=db_path, http_port=0, leader_enabled=False, http_admin_token=token,
                                            tune_gc=False, log_level="WARNING"))
    rng = random.Random(7)

    @app.job("sync_orders", interval={"seconds": 1})
    async def sync_orders(ctx: Any, scheduled_time: Any) -> None:
        await asyncio.sleep(rng.uniform(0.05, 0.3))

    @app.job("load_events", interval={"seconds": 2})
    async def load_events(ctx: Any, scheduled_time: Any) -> None:
        if ctx["attempt"] == 1 and rng.random() < 0.5:
            raise ValueError("row 1042: bad timestamp '2026-13-01T00:00:00' in events_2026_12.csv")

    @app.job("nightly_report", cron="0 3 * * *")
    async def nightly_report(ctx: Any, scheduled_time: Any) -> None:
        pass

    @app.job("archive_logs", cron="30 1 * * sun", timezone="Europe/Berlin")
    async def archive_logs(ctx: Any, scheduled_time: Any) -> None:
        pass

    @app.job("rebuild_index")
    async def rebuild_index(ctx: Any, scheduled_time: Any) -> None:
        await asyncio.sleep(60)

    return app


async def shoot(out: Path, chromium: str, token: str | None, name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        app = demo_app(str(Path(tmp) / "demo.db"), token)
        async with app:
            await app.store.set_schedule_enabled("archive_logs", False)
            await app.live.reconcile_once()
            running = asyncio.create_task(app.run_job("rebuild_index"))
            await asyncio.sleep(6.5)
            async with Browser(chromium, width=1280, height=900) as page:
                await page.open(f"http://127.0.0.1:{app.live.http_port}/?limit=12")
                await page.evaluate("document.getElementById('auto').checked = false")
                await page.screenshot(out / name)
            running.cancel()
    print(f"wrote {out / name}")


async def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs"
    chromium = find_chromium()
    if chromium is None:
        print("no Chromium found: apt-get install -y chromium", file=sys.stderr)
        return 1
    await shoot(out, chromium, TOKEN, "status-page.png")
    await shoot(out, chromium, None, "status-page-read-only.png")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
