"""The status page in a real headless Chromium against a running app on SQLite: it renders the
app's jobs, hostile job ids and errors stay text, and its Pause button stops the next fire.
Skips without Chromium (fails under CI=true): see tests/browser.py."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from piko import PikoApp
from piko.core.types import RunStatus
from piko.settings import Settings
from tests.browser import Browser, dump_dom, require_chromium
from tests.conftest import wait_until

TOKEN = "browser-test-token-0123456789"
EVIL = '<img src=x onerror="window.pwned=1"><script>window.pwned=1</script>'
PAUSE = 'button[data-job="ticker"][data-action$="/pause"]'
RESUME = 'button[data-job="ticker"][data-action$="/resume"]'


def make_app(db_path: str) -> PikoApp:
    app = PikoApp("browser", settings=Settings(db_path=db_path, http_port=0, leader_enabled=False,
                                               http_admin_token=TOKEN, poll_interval_s=60.0, tune_gc=False))

    @app.job("ticker", interval={"seconds": 0.4})
    async def ticker(ctx: Any, scheduled_time: Any) -> None:
        pass

    @app.job(f"evil{EVIL}", cron="0 0 1 1 *")
    async def evil(ctx: Any, scheduled_time: Any) -> None:
        raise RuntimeError(f"broken {EVIL}")

    return app


def test_the_page_renders_the_jobs_and_its_pause_button_stops_the_next_fire(db_path: str) -> None:
    chromium = require_chromium()

    async def scenario() -> None:
        app = make_app(db_path)
        async with app:
            url = f"http://127.0.0.1:{app.live.http_port}/"
            await app.run_job(f"evil{EVIL}")  # a failure whose message holds markup
            await wait_until(lambda: app.store.recent_runs("ticker", 1, status=RunStatus.SUCCESS), timeout=5.0)

            dom = await dump_dom(chromium, url)
            assert 'data-job="ticker"' in dom and "<code>ticker</code>" in dom
            assert "evil&lt;img src=x onerror=" in dom and "broken &lt;img" in dom  # text, not elements

            async with Browser(chromium) as page:
                await page.open(url)
                await page.wait_for(f"!!document.querySelector({json.dumps(PAUSE)})")
                assert await page.evaluate("document.scripts.length") == 1
                assert await page.evaluate("typeof window.pwned") == "undefined"
                assert EVIL in await page.evaluate("document.getElementById('failures').textContent")
                await page.evaluate(f"(() => {{ const t = document.getElementById('token'); t.value = {json.dumps(TOKEN)};"
                                    f" t.dispatchEvent(new Event('input')); }})()")
                await page.click(PAUSE)
                await page.wait_for(f"!!document.querySelector({json.dumps(RESUME)})")  # reloaded, paused
                paused_at = app.clock.now()
                note = await page.evaluate("document.getElementById('note').textContent")
                assert "ticker: paused" in note
            (row,) = [r for r in await app.store.load_schedules() if r.job_id == "ticker"]
            assert not row.enabled
            await asyncio.sleep(1.0)  # two and a half periods of the job
            runs = await app.store.recent_runs("ticker", 50)
            assert not [r for r in runs if r.scheduled_at > paused_at], "the job fired after the page paused it"

    asyncio.run(asyncio.wait_for(scenario(), 60))
