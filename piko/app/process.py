"""The app as the process's main loop: signals, uvloop, GC tuning, and the CPU-worker guard.

`run_blocking(serve, settings)` runs until SIGINT/SIGTERM; a second signal exits at once.
Nothing here knows the app: `serve(stop)` is handed in.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable

from piko.settings import Settings

log = logging.getLogger("piko.app")
SIGNAL_DEBOUNCE_S = 0.25  # a second signal sooner than this is the first one delivered twice


def run_blocking(serve: Callable[[asyncio.Event], Awaitable[None]], s: Settings) -> None:
    """asyncio.run(serve(stop)) with signal handling; uvloop when installed."""
    from piko.observability.logging import configure_logging

    configure_logging(s.log_level, s.log_json)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        first_at: list[float] = []

        def on_signal(signum: int) -> None:
            now = time.monotonic()
            if first_at and now - first_at[0] < SIGNAL_DEBOUNCE_S:
                return  # the same stop, delivered twice (`timeout` signals the child and its group)
            if first_at:
                log.warning("second signal: exiting at once")
                os._exit(128 + signum)
            first_at.append(now)
            log.info("signal %s: stopping (running jobs get up to %.0fs; signal again to exit at once)",
                     signal.Signals(signum).name, s.shutdown_timeout_s)
            stop.set()

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)
        await serve(stop)

    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        uvloop = None  # run outside the except block, so job tracebacks do not chain this ImportError
    if uvloop is None:
        asyncio.run(main())
    else:
        uvloop.run(main())


def refuse_in_worker_bootstrap() -> None:
    """A CPU worker (spawn/forkserver) imports the main script again: an unguarded app.run()
    there would start a second piko in every worker. Say so instead of hanging."""
    import multiprocessing

    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise RuntimeError(
            "app.run() / app.start() was called while a CPU worker process imported your script: "
            "put it under `if __name__ == \"__main__\":` (or run the jobs file with `python -m piko run`)")


def tune_gc() -> None:
    """Keep the cyclic GC off the run path (tune_gc = false leaves the process's GC alone).

    At 10,000 fires a second the loop holds ~10,000 pending tasks; with the default gen-0
    threshold (700) the collector re-scans them constantly, about half the loop's time
    (measured). The job table, triggers and stores live as long as the app: frozen, never scanned.
    """
    gc.freeze()
    gen0, gen1, gen2 = gc.get_threshold()
    if 0 < gen0 < 10_000:
        gc.set_threshold(10_000, gen1, gen2)
