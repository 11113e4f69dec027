"""Fire lateness and throughput: piko against APScheduler 3.11 (memory and SQLite job stores).

N jobs (1,000 and 10,000) fire every second, all at the same whole-second instants (an
interval of 1 s anchored on a whole second, or the 6-field cron `* * * * * *`), so each
second is a burst of N fires. Each implementation runs alone in its own subprocess:
- piko, end to end: PikoApp on a fresh SQLite file (http and leader off); the handler
  starts only after the run's RUNNING row is committed, and every run is recorded;
- piko, kernel only: piko's Kernel with an on_fire that starts one task per fire (what
  the runner does, minus the store), the fair match for APScheduler's memory job store;
- APScheduler: AsyncIOScheduler, memory job store, misfire_grace_time 600, coalesce off,
  max_instances 1; the scheduled time reaches the handler through an EVENT_JOB_SUBMITTED
  listener (submission happens before the handler task first runs);
- APScheduler on SQLite: the same, on SQLAlchemyJobStore with a fresh SQLite file, compared
  with piko end to end ("both on SQLite"). It persists each job's state and next_run_time
  (one row per job, updated after every fire) and records no runs. A case whose set-up,
  projected from the cases already run, exceeds SQLITE_BUDGET_S is skipped with a note;
- loop.call_at: N bare callbacks per second at the same instants (the ceiling).
Lateness is time.time() when the handler starts minus its scheduled time. A fire that had
not started when the run stopped counts as late as the stop (a lower bound, and said so).
Lateness: one sample per burst. fires/s and runs recorded/s: the window's fires whose handler
started (SUCCESS row finished; for APScheduler, job executed) by the stop, per second of the
window, so at most N; one sample per process.
With --repeat R each implementation runs in R processes, interleaved.

    python benchmarks/bench_scheduler.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict, deque
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parents[1]
UTC = timezone.utc
PEER = "APScheduler 3.11 AsyncIOScheduler"
PEER_SQLITE = "APScheduler 3.11 AsyncIOScheduler + SQLAlchemyJobStore (SQLite)"
CEILING = "loop.call_at"
IMPLS = ("call_at", "apscheduler", "kernel", "piko", "apscheduler_sqlite")  # the order in each round
Starts = list[tuple[float, float]]  # (scheduled ts, started ts)


# -- the four children (each runs in its own interpreter) ------------------------------------


class Window:
    """Bursts at whole seconds first..first+seconds-1; one warm-up burst before, a drain after."""

    def __init__(self, seconds: int, drain_s: float) -> None:
        self.first = math.ceil(time.time()) + 1
        self.seconds = seconds
        self.stop_at = self.first + seconds + drain_s

    async def wait_end(self) -> None:
        await asyncio.sleep(max(0.0, self.stop_at - time.time()))


def _aligned_start() -> datetime:
    return datetime.fromtimestamp(math.floor(time.time()) - 60, UTC)


async def child_piko(jobs: int, kind: str, seconds: int, drain_s: float, tmp: str) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from piko import PikoApp
    from piko.settings import Settings

    starts: Starts = []
    db = os.path.join(tmp, "bench.db")
    settings = Settings(db_path=db, http_enabled=False, leader_enabled=False, misfire_grace_s=600,
                        coalesce=False, log_level="WARNING", poll_interval_s=60)
    app = PikoApp("bench", settings=settings)
    schedule = _piko_schedule(kind)

    async def handler(ctx: Any, scheduled_time: datetime) -> None:
        starts.append((scheduled_time.timestamp(), time.time()))

    for i in range(jobs):
        app.job(f"job{i}", **schedule)(handler)
    await app.start()  # not stopped: the child exits at once (see _main), so a backlog costs no time
    window = Window(seconds, drain_s)
    await window.wait_end()
    stopped = time.time()
    finished, statuses = await asyncio.to_thread(_finished_times, db)
    return {"window": [window.first, seconds], "stopped": stopped, "starts": starts, "done": finished,
            "statuses": statuses}


def _piko_schedule(kind: str) -> dict[str, Any]:
    if kind == "cron":
        return {"cron": "* * * * * *"}
    return {"interval": {"seconds": 1, "start_date": _aligned_start().isoformat()}}


def _finished_times(db: str) -> tuple[Starts, dict[str, int]]:
    """(scheduled, finished) of SUCCESS runs, and the row count of each status (SKIPPED, MISSED: not run)."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT scheduled_time, finished_at FROM job_run WHERE status = 'SUCCESS'").fetchall()
        statuses = dict(conn.execute("SELECT status, COUNT(*) FROM job_run GROUP BY status").fetchall())

    def ts(text: str) -> float:
        return datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC).timestamp()

    return [(ts(scheduled), ts(finished)) for scheduled, finished in rows], statuses


async def child_kernel(jobs: int, kind: str, seconds: int, drain_s: float, tmp: str) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from piko.clock import SystemClock
    from piko.core.kernel import Kernel
    from piko.triggers import make_trigger

    starts: Starts = []
    tasks: set[asyncio.Task[None]] = set()

    async def handler(scheduled_at: datetime) -> None:
        starts.append((scheduled_at.timestamp(), time.time()))

    def on_fire(job_id: str, due: list[datetime], overflow: bool) -> None:
        for at in due:
            task = asyncio.create_task(handler(at))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    spec = _piko_schedule(kind)
    async with Kernel(SystemClock(), on_fire) as kernel:
        for i in range(jobs):
            kernel.schedule(f"job{i}", make_trigger(kind, spec[kind], "UTC"))
        window = Window(seconds, drain_s)
        await window.wait_end()
        stopped = time.time()
    return {"window": [window.first, seconds], "stopped": stopped, "starts": starts}


# APScheduler's children share one probe at module level: a persistent job store pickles the
# handler by reference ("__main__:aps_handler"), which a closure does not have.
APS_STARTS: Starts = []
APS_DONE: Starts = []
APS_PENDING: dict[str, deque[float]] = defaultdict(deque)


async def aps_handler(job_id: str) -> None:
    APS_STARTS.append((APS_PENDING[job_id].popleft(), time.time()))


def _aps_scheduler(**options: Any) -> Any:
    """An AsyncIOScheduler with the bench's job defaults, whose listeners feed the probe."""
    from apscheduler.events import EVENT_JOB_EXECUTED, EVENT_JOB_SUBMITTED
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    def on_submitted(event: Any) -> None:
        APS_PENDING[event.job_id].extend(t.timestamp() for t in event.scheduled_run_times)

    def on_executed(event: Any) -> None:
        APS_DONE.append((event.scheduled_run_time.timestamp(), time.time()))

    scheduler = AsyncIOScheduler(timezone=UTC, job_defaults={"misfire_grace_time": 600, "coalesce": False,
                                                             "max_instances": 1}, **options)
    scheduler.add_listener(on_submitted, EVENT_JOB_SUBMITTED)
    scheduler.add_listener(on_executed, EVENT_JOB_EXECUTED)
    return scheduler


def _aps_trigger(kind: str, start_at: datetime | None) -> Any:
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    if kind == "cron":
        return CronTrigger(second="*", start_date=start_at, timezone=UTC)
    return IntervalTrigger(seconds=1, start_date=start_at, timezone=UTC)


async def child_apscheduler(jobs: int, kind: str, seconds: int, drain_s: float, tmp: str) -> dict[str, Any]:
    scheduler = _aps_scheduler()
    for i in range(jobs):
        trigger = _aps_trigger(kind, _aligned_start() if kind == "interval" else None)
        scheduler.add_job(aps_handler, trigger, args=[f"job{i}"], id=f"job{i}")
    scheduler.start()
    window = Window(seconds, drain_s)
    await window.wait_end()
    stopped = time.time()
    return {"window": [window.first, seconds], "stopped": stopped, "starts": APS_STARTS, "done": APS_DONE}


async def child_apscheduler_sqlite(jobs: int, kind: str, seconds: int, drain_s: float,
                                   tmp: str) -> dict[str, Any]:
    """APScheduler on SQLAlchemyJobStore (a SQLite file, defaults), its jobs all first due at one future second.

    Each add_job commits one INSERT and each fire one UPDATE of the job's row, so adding N jobs
    takes seconds: the first fire is put after the projected set-up (timed on 50 paused jobs,
    then removed) so that set-up leaves no backlog, which the memory job store never has.
    """
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

    scheduler = _aps_scheduler(jobstores={"default": SQLAlchemyJobStore(url=f"sqlite:///{tmp}/jobs.sqlite")})
    scheduler.start(paused=True)
    began = time.perf_counter()
    for i in range(50):
        scheduler.add_job(aps_handler, _aps_trigger(kind, None), args=["probe"], id=f"probe{i}", next_run_time=None)
    per_job_s = (time.perf_counter() - began) / 50
    scheduler.remove_all_jobs()
    first_at = math.ceil(time.time() + 1 + 1.5 * per_job_s * jobs)
    began = time.perf_counter()
    for i in range(jobs):
        scheduler.add_job(aps_handler, _aps_trigger(kind, datetime.fromtimestamp(first_at, UTC)), args=[f"job{i}"],
                          id=f"job{i}")
    setup_s = time.perf_counter() - began
    await asyncio.sleep(max(0.0, first_at - 0.8 - time.time()))  # the warm-up burst is at first_at
    scheduler.resume()
    window = Window(seconds, drain_s)
    await window.wait_end()
    stopped = time.time()
    return {"window": [window.first, seconds], "stopped": stopped, "starts": APS_STARTS, "done": APS_DONE,
            "setup_s": setup_s}


async def child_call_at(jobs: int, kind: str, seconds: int, drain_s: float, tmp: str) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    starts: Starts = []
    window = Window(seconds, drain_s)

    def callback(scheduled_ts: float) -> None:
        starts.append((scheduled_ts, time.time()))

    offset = time.time() - loop.time()
    for second in range(window.first - 1, window.first + seconds):
        for _ in range(jobs):
            loop.call_at(second - offset, callback, float(second))
    await window.wait_end()
    return {"window": [window.first, seconds], "stopped": time.time(), "starts": starts}


async def child_store(jobs: int, kind: str, seconds: int, drain_s: float, tmp: str) -> dict[str, Any]:
    """The SQLite store alone: `jobs` concurrent claim + finish pairs, as the runner issues them."""
    sys.path.insert(0, str(ROOT))
    from piko.core.types import RunClaim, RunStatus
    from piko.store.sqlite import SqliteStore

    store = SqliteStore(os.path.join(tmp, "store.db"))
    await store.open()
    now = datetime.now(UTC)

    async def one(i: int) -> None:
        run_id = await store.claim_run(RunClaim(f"job{i}", now, RunStatus.RUNNING, now, "bench"))
        assert run_id is not None
        await store.finish_run(run_id, RunStatus.SUCCESS, datetime.now(UTC))

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(jobs)))
    return {"rate": jobs / (time.perf_counter() - started)}


CHILDREN: dict[str, Callable[..., Any]] = {
    "piko": child_piko, "kernel": child_kernel, "apscheduler": child_apscheduler,
    "apscheduler_sqlite": child_apscheduler_sqlite, "call_at": child_call_at, "store": child_store,
}


# -- analysis ---------------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return math.nan
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))]


def analyse(result: dict[str, Any], jobs: int) -> dict[str, Any]:
    """Lateness p50/p99/max (ms) per burst; fires/s and runs recorded/s over the whole window."""
    first, seconds = result["window"]
    end = first + seconds
    late: dict[int, list[float]] = defaultdict(list)
    for scheduled, started in result["starts"]:
        late[round(scheduled)].append(started - scheduled)
    out: dict[str, Any] = {"bursts": [], "unstarted": 0, "expected": jobs * seconds}
    for second in range(first, end):
        values = late[second]
        missing = max(0, jobs - len(values))
        out["unstarted"] += missing
        values += [result["stopped"] - second] * missing  # never started: a lower bound
        values.sort()
        out["bursts"].append({"p50": percentile(values, 0.5) * 1000, "p99": percentile(values, 0.99) * 1000,
                              "max": values[-1] * 1000})
    stopped = result["stopped"]
    out["fires"] = _rate(result["starts"], first, end, stopped)
    if "done" in result:
        out["runs"] = _rate(result["done"], first, end, stopped)
    out["not_run"] = {k: v for k, v in result.get("statuses", {}).items() if k in ("SKIPPED", "MISSED")}
    return out


def _rate(events: Starts, first: int, end: int, stopped: float) -> float:
    """Fires (or runs) of the window's bursts that started (or finished) by the stop, per second of window.

    At most the demand (jobs per second): a scheduler that keeps up, however late, scores the
    demand; one that falls behind scores what it got through of the window's own fires.
    """
    return sum(first <= round(scheduled) < end and at <= stopped for scheduled, at in events) / (end - first)


def run_child(impl: str, jobs: int, kind: str, seconds: int, drain_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out, err = Path(tmp) / "result.json", Path(tmp) / "stderr.txt"
        cmd = [sys.executable, __file__, "--child", impl, "--jobs", str(jobs), "--kind", kind,
               "--seconds", str(seconds), "--drain", str(drain_s), "--tmp", tmp]
        with err.open("w") as stderr:
            proc = subprocess.run(cmd, cwd=ROOT, stdout=stderr, stderr=stderr, timeout=120 + seconds + drain_s)
        if proc.returncode != 0 or not out.exists():
            tail = err.read_text(errors="replace").splitlines()[-5:]
            raise RuntimeError(f"{impl} child with {jobs} {kind} jobs failed: " + " | ".join(tail))
        return json.loads(out.read_text())


METRICS = [("lateness p50", "p50", "ms", "lower"), ("lateness p99", "p99", "ms", "lower"),
           ("lateness max", "max", "ms", "lower"), ("fires/s", "fires", "fires/s", "higher")]


class Collected:
    """What the processes of one implementation measured, across repeats."""

    def __init__(self) -> None:
        self.bursts: list[dict[str, float]] = []
        self.rates: dict[str, list[float]] = defaultdict(list)
        self.unstarted = self.expected = 0
        self.not_run: dict[str, int] = defaultdict(int)

    def add(self, measured: dict[str, Any]) -> None:
        for status, count in measured.get("not_run", {}).items():
            self.not_run[status] += count
        self.bursts += measured["bursts"]
        for key in ("fires", "runs"):
            if key in measured:
                self.rates[key].append(measured[key])
        self.unstarted += measured["unstarted"]
        self.expected += measured["expected"]

    def samples(self, key: str) -> list[float]:
        return self.rates[key] if key in ("fires", "runs") else [b[key] for b in self.bursts]

    def lag_note(self, who: str) -> str | None:
        notes = []
        if self.unstarted:
            notes.append(f"{who} fell behind: {self.unstarted:,} of {self.expected:,} fires in the window had not "
                         "started by the end and count as late as the end (a lower bound)")
        if self.not_run:
            counts = ", ".join(f"{n:,} {status}" for status, n in sorted(self.not_run.items()))
            notes.append(f"{who} recorded {counts} (from start to end, all runs of the process; SKIPPED: "
                         "max_instances=1 while the previous fire of the job still waited for its run record)")
        return "; ".join(notes) or None


class Peer(NamedTuple):
    """One APScheduler set-up: its column label, its name in notes, and what its lines' footnotes say."""

    label: str
    who: str
    runs_note: str  # on the runs line: what it keeps instead of run records
    note: str | None = None  # on every line


MEMORY = Peer(PEER, "APScheduler", "APScheduler: jobs executed (memory job store, nothing recorded)")
ON_SQLITE = Peer(PEER_SQLITE, "APScheduler on SQLAlchemyJobStore", "APScheduler: jobs executed",
                 "APScheduler SQLAlchemyJobStore on SQLite: job state persisted (one row per job, updated after "
                 "every fire), runs not recorded")
SQLITE_BUDGET_S = 10.0  # the most the SQLAlchemyJobStore peer may spend adding one case's jobs (projected)


def _rows(case: str, ours: Collected, peer: Collected | None, ceiling: Collected | None,
          with_runs: bool, who: Peer = MEMORY) -> list[dict[str, Any]]:
    rows = []
    metrics = METRICS + ([("runs recorded/s", "runs", "runs/s", "higher")] if with_runs else [])
    for metric, key, unit, better in metrics:
        row: dict[str, Any] = {"bench": "scheduler", "case": case, "metric": metric, "unit": unit,
                               "better": better, "impl": "piko", "samples": ours.samples(key),
                               "peer": None, "peer_samples": []}
        notes = [who.note if peer is not None else None, ours.lag_note("piko")]
        if peer is not None:
            row.update(peer=who.label, peer_samples=peer.samples(key))
            notes += [peer.lag_note(who.who), who.runs_note if key == "runs" else None]
        if key != "runs" and ceiling is not None:
            row.update(ceiling=CEILING, ceiling_samples=ceiling.samples(key))
        row["note"] = "; ".join(n for n in notes if n) or None
        rows.append(row)
    return rows


def _sqlite_peer_skip(jobs: int, kind: str, per_job_s: list[float]) -> str | None:
    """Why the SQLAlchemyJobStore peer sits out this case, or None.

    Adding a job commits one INSERT and each fire one UPDATE, so set-up and every burst cost
    about jobs x (time per commit): projected from the cases already run (smaller ones first),
    a case over SQLITE_BUDGET_S would spend most of the suite's budget showing it fall behind.
    """
    if not per_job_s:
        return None
    each_s = sum(per_job_s) / len(per_job_s)
    if each_s * jobs <= SQLITE_BUDGET_S:
        return None
    return (f"{PEER_SQLITE}, {jobs:,} {kind} jobs: not run: adding a job took {each_s * 1000:.1f} ms in the smaller "
            f"cases (one committed INSERT; each fire then commits one UPDATE), so {jobs:,} jobs would take about "
            f"{each_s * jobs:.0f} s to add and about as long per 1 s burst, over this peer's "
            f"{SQLITE_BUDGET_S:.0f} s budget")


def run(quick: bool = False, repeat: int | None = None) -> list[dict[str, Any]]:
    seconds, drain_s = (2, 1.0) if quick else (4, 2.0)
    processes = repeat or 1
    cases = [(1000, "interval"), (10_000, "interval")] if quick else \
        [(1000, "interval"), (1000, "cron"), (10_000, "interval"), (10_000, "cron")]
    peers = _installed_peers()
    rows: list[dict[str, Any]] = []
    per_job_s: list[float] = []  # the SQLAlchemyJobStore peer's set-up time per job, case by case
    for jobs, kind in cases:
        skip = _sqlite_peer_skip(jobs, kind, per_job_s) if "apscheduler_sqlite" in peers else None
        wanted = {"call_at", "kernel", "piko", *peers} - ({"apscheduler_sqlite"} if skip else set())
        impls = [i for i in IMPLS if i in wanted]
        got: dict[str, Collected] = defaultdict(Collected)
        for _ in range(processes):
            for impl in impls:
                result = run_child(impl, jobs, kind, seconds, drain_s)
                if "setup_s" in result:
                    per_job_s.append(result["setup_s"] / jobs)
                got[impl].add(analyse(result, jobs))
        peer = got["apscheduler"] if "apscheduler" in impls else None
        rows += _rows(f"{jobs:,} {kind} jobs, end to end (SQLite)", got["piko"], peer, got["call_at"], True)
        if "apscheduler_sqlite" in impls:
            rows += _rows(f"{jobs:,} {kind} jobs, end to end, both on SQLite", got["piko"],
                          got["apscheduler_sqlite"], None, True, ON_SQLITE)
        elif skip:
            rows.append({"bench": "scheduler", "case": f"{jobs:,} {kind} jobs, end to end, both on SQLite",
                         "skipped": skip})
        rows += _rows(f"{jobs:,} {kind} jobs, kernel only", got["kernel"], peer, got["call_at"], False)
    return rows + [_store_row(2000 if quick else 10_000, processes)]


def _installed_peers() -> list[str]:
    """The APScheduler children that can run here; says which cannot, and how to install them."""
    import importlib.util

    if importlib.util.find_spec("apscheduler") is None:
        print("peer skipped: apscheduler not installed (pip install '.[bench]')")
        return []
    if importlib.util.find_spec("sqlalchemy") is None:
        print("peer skipped: APScheduler on SQLAlchemyJobStore: sqlalchemy not installed (pip install '.[bench]')")
        return ["apscheduler"]
    return ["apscheduler", "apscheduler_sqlite"]


def _store_row(runs: int, processes: int) -> dict[str, Any]:
    """A diagnostic without a peer: what the store could record if the runner cost nothing."""
    rates = [run_child("store", runs, "interval", 0, 0.0)["rate"] for _ in range(max(2, processes))]
    return {"bench": "scheduler", "case": f"SQLite store alone, {runs:,} concurrent runs", "metric": "runs recorded/s",
            "unit": "runs/s", "better": "higher", "impl": "piko", "samples": rates, "peer": None, "peer_samples": [],
            "note": "claim_run + finish_run on SqliteStore with no runner, kernel or handler: the store's ceiling"}


async def _child(args: argparse.Namespace) -> None:
    result = await CHILDREN[args.child](args.jobs, args.kind, args.seconds, args.drain, args.tmp)
    with open(os.path.join(args.tmp, "result.json"), "w") as out:  # noqa: ASYNC230 - the measuring is over
        json.dump(result, out)
    sys.stdout.flush()
    os._exit(0)  # no tear-down: a scheduler draining its backlog (or cancelling it) would only cost time


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=None, help="processes per implementation")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--jobs", type=int, default=1000, help=argparse.SUPPRESS)
    parser.add_argument("--kind", choices=("interval", "cron"), default="interval", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=int, default=3, help=argparse.SUPPRESS)
    parser.add_argument("--drain", type=float, default=2.0, help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        logging.disable(logging.WARNING)  # a backlog at the end must not flood the terminal
        asyncio.run(_child(args))
    sys.path.insert(0, str(ROOT))
    from benchmarks.report import render_table, summarise

    print(render_table(summarise(run(quick=args.quick, repeat=args.repeat))))


if __name__ == "__main__":
    _main()
