"""Microseconds per next-fire-time call: piko vs croniter, cronsim and APScheduler 3.

Two ways of calling, both with every object constructed once outside the timed loop
where the library allows it:
  successive     each call continues from the previous fire time (a running scheduler):
                 piko t.next_fire_time(prev); croniter it.get_next(datetime);
                 cronsim next(it); APScheduler t.get_next_fire_time(None, prev + 1us)
  from_datetime  each call starts from an unrelated instant (a restart, a preview):
                 piko t.next_fire_time(at); croniter it.set_current(at) + get_next;
                 APScheduler t.get_next_fire_time(None, at); cronsim CronSim(expr, at)
                 + next(), because cronsim cannot be re-pointed (so it includes parsing)
Each figure is the median of several repeats (min and max kept). Run:
  python benchmarks/bench_triggers.py [--quick]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # also run as a script
    sys.path.insert(0, str(ROOT))

from piko.triggers import make_trigger  # noqa: E402

EXPRESSIONS = ["* * * * *", "*/5 * * * *", "0 2 * * *", "0 0 29 2 *", "30 9 * * mon-fri"]
ZONES = ["UTC", "Europe/Berlin"]
START = datetime(2026, 1, 1, tzinfo=timezone.utc)
_US = timedelta(microseconds=1)
Runner = Callable[[int], None]  # performs n calls


def _piko(expr: str, tz: str, mode: str, instants: list[datetime]) -> Runner:
    trigger = make_trigger("cron", expr, tz)
    if mode == "from_datetime":
        return lambda n: [trigger.next_fire_time(at) for at in instants[:n]] and None
    def successive(n: int) -> None:
        fire_at = START
        for _ in range(n):
            fire_at = trigger.next_fire_time(fire_at)
    return successive


def _croniter(expr: str, tz: str, mode: str, instants: list[datetime]) -> Runner:
    from croniter import croniter

    if mode == "from_datetime":
        it = croniter(expr, START)
        def pointed(n: int) -> None:
            for at in instants[:n]:
                it.set_current(at, force=True)
                it.get_next(datetime)
        return pointed
    def successive(n: int) -> None:
        it = croniter(expr, START.astimezone(ZoneInfo(tz)))
        for _ in range(n):
            it.get_next(datetime)
    return successive


def _cronsim(expr: str, tz: str, mode: str, instants: list[datetime]) -> Runner:
    from cronsim import CronSim

    if mode == "from_datetime":
        return lambda n: [next(CronSim(expr, at)) for at in instants[:n]] and None
    def successive(n: int) -> None:
        it = CronSim(expr, START.astimezone(ZoneInfo(tz)))
        for _ in range(n):
            next(it)
    return successive


def _apscheduler(expr: str, tz: str, mode: str, instants: list[datetime]) -> Runner:
    from apscheduler.triggers.cron import CronTrigger

    trigger = CronTrigger.from_crontab(expr, timezone=tz)
    if mode == "from_datetime":
        return lambda n: [trigger.get_next_fire_time(None, at) for at in instants[:n]] and None
    def successive(n: int) -> None:
        fire_at = START
        for _ in range(n):
            fire_at = trigger.get_next_fire_time(None, fire_at + _US)
    return successive


PEERS = {"croniter": _croniter, "cronsim": _cronsim, "apscheduler": _apscheduler}
CALLS = {
    "piko": {"successive": "t.next_fire_time(prev)", "from_datetime": "t.next_fire_time(at)"},
    "croniter": {"successive": "it.get_next(datetime)", "from_datetime": "it.set_current(at); it.get_next()"},
    "cronsim": {"successive": "next(it)", "from_datetime": "next(CronSim(expr, at)) [includes parsing]"},
    "apscheduler": {"successive": "t.get_next_fire_time(None, prev+1us)",
                    "from_datetime": "t.get_next_fire_time(None, at)"},
}


def _measure(runner: Runner, calls: int, repeats: int) -> tuple[float, float, float]:
    runner(min(calls, 20))  # warm caches (zone data, month shapes) as a running scheduler has
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        runner(calls)
        samples.append((time.perf_counter() - started) / calls * 1e6)
    return statistics.median(samples), min(samples), max(samples)


def run(quick: bool = False) -> list[dict]:
    """One row per (zone, mode, expression, peer), with piko's figure and the ratio."""
    calls, repeats = (100, 3) if quick else (400, 7)
    rnd = random.Random(7)
    instants = [START + timedelta(seconds=rnd.randint(0, 366 * 86400)) for _ in range(calls)]
    rows = []
    for tz in ZONES:
        for mode in ("successive", "from_datetime"):
            if tz != "UTC" and mode == "from_datetime":
                continue
            for expr in EXPRESSIONS:
                ours = _measure(_piko(expr, tz, mode, instants), calls, repeats)
                own = {"bench": "trigger.next_fire_time", "case": expr, "tz": tz, "mode": mode, "impl": "piko",
                       "us_per_call": round(ours[0], 2), "min_us": round(ours[1], 2), "max_us": round(ours[2], 2)}
                compared = False
                for peer, build in PEERS.items():
                    try:
                        theirs = _measure(build(expr, tz, mode, instants), calls, repeats)
                    except ImportError:
                        continue
                    compared = True
                    rows.append({
                        "bench": "trigger.next_fire_time", "case": expr, "tz": tz, "mode": mode,
                        "impl": "piko", "us_per_call": round(ours[0], 2),
                        "min_us": round(ours[1], 2), "max_us": round(ours[2], 2),
                        "peer": peer, "peer_us": round(theirs[0], 2),
                        "peer_min_us": round(theirs[1], 2), "peer_max_us": round(theirs[2], 2),
                        "peer_call": CALLS[peer][mode], "ratio": round(theirs[0] / ours[0], 1),
                    })
                if not compared:  # no peer installed: piko's own figure still shows
                    rows.append(own)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls and repeats")
    rows = run(quick=parser.parse_args().quick)
    print(f"{'tz':<14}{'mode':<14}{'expression':<18}{'piko us':>9}{'peer':>13}{'peer us':>9}"
          f"{'ratio':>8}   peer call")
    for row in rows:
        if "peer" not in row:
            print(f"{row['tz']:<14}{row['mode']:<14}{row['case']:<18}{row['us_per_call']:>9.2f}   (no peer installed)")
            continue
        print(f"{row['tz']:<14}{row['mode']:<14}{row['case']:<18}{row['us_per_call']:>9.2f}"
              f"{row['peer']:>13}{row['peer_us']:>9.2f}{row['ratio']:>7.1f}x   {row['peer_call']}")


if __name__ == "__main__":
    main()
