"""The command line as a table: every subcommand, its arguments and their help, and the exit codes.

Nothing here opens a store or imports a jobs file; `piko --help` and `piko next` stay fast.
Times given on the command line are ISO 8601; one without an offset is UTC (`next --after`
reads it in `--tz`). Imports nothing from piko but the version.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

EXIT_OK = 0
EXIT_FAILED = 1  # the command ran, and what it ran failed (a run, a backfill window), or the store is down
EXIT_USAGE = 2  # bad arguments, settings or input: nothing was done
EXIT_INTERRUPTED = 130

TIME_HELP = "ISO 8601, e.g. 2026-01-01T00:00:00Z; without an offset it is UTC"
TARGET_HELP = "the jobs: jobs.py, path/jobs.py:app, or package.module[:app]"


def _common(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--dsn", help="store: sqlite:///FILE (default ./piko.db) or mysql://USER:PASS@HOST/DB; "
                                  "a bare path is a SQLite file")
    sp.add_argument("--settings", metavar="FILE", help="settings TOML file (default: settings.toml and piko.toml "
                                                        "in the working directory)")
    sp.add_argument("--log-level", metavar="LEVEL", help="DEBUG, INFO, WARNING or ERROR (default: the settings')")


def _run(sub: Callable[..., argparse.ArgumentParser]) -> None:
    run = sub("run", help="run the jobs in TARGET until SIGINT/SIGTERM")
    run.add_argument("target", help=TARGET_HELP)
    run.add_argument("--http", metavar="HOST:PORT", help="serve /healthz /readyz /metrics here, e.g. "
                                                          "127.0.0.1:8000 or [::1]:8000; 'off' disables it")
    worker = sub("worker", help="only run queued runs of TARGET's jobs, never lead (cluster execution)")
    worker.add_argument("target", help=TARGET_HELP)
    worker.add_argument("--queues", metavar="A,B", help="take runs of these queues only (default: the queues of "
                                                        "TARGET's jobs)")
    worker.add_argument("--concurrency", type=int, metavar="N", help="runs at once (default: worker_concurrency, "
                                                                      "100)")
    worker.add_argument("--http", metavar="HOST:PORT", help="serve /healthz /readyz /metrics here; 'off' "
                                                            "disables it")


def _store_commands(sub: Callable[..., argparse.ArgumentParser]) -> None:
    db = sub("db", help="create/migrate (init) or check (check) the store")
    db.add_argument("action", choices=["init", "check"], help="init: create or migrate the tables; "
                                                              "check: report the schema version, change nothing")
    jobs = sub("jobs", help="list the jobs in TARGET, their schedules and next fire times")
    jobs.add_argument("target", help=TARGET_HELP)
    jobs.add_argument("-n", type=int, default=3, metavar="N", help="next fire times to show per job (default 3)")
    runs = sub("runs", help="recent runs: status, kind, duration, error; or one run in full (--show)")
    runs.add_argument("job_id", nargs="?", help="only this job's runs")
    runs.add_argument("--limit", type=int, default=20, metavar="N", help="how many runs to show, newest "
                                                                          "first (default 20, at least 1)")
    runs.add_argument("--status", metavar="STATUS", help="only runs with this status, in any case: PENDING, "
                                                         "RUNNING, SUCCESS, FAILED, TIMEOUT, CANCELLED, ABANDONED, "
                                                         "MISSED, SKIPPED or UPSTREAM_FAILED")
    runs.add_argument("--kind", metavar="KIND", help="only runs started this way: schedule (or scheduled), "
                                                     "manual, backfill, retry or piece")
    runs.add_argument("--tree", action="store_true", help="with a RUN_ID in place of JOB: the run, its other "
                      "attempts and its pieces (shards, broadcast copies, map items) with their statuses")
    runs.add_argument("--show", type=int, metavar="RUN_ID", help="every field of this one run, its data window "
                                                                 "and its stored traceback")


def _next(sub: Callable[..., argparse.ArgumentParser]) -> None:
    nxt = sub("next", help="print the next fire times of a schedule expression")
    nxt.add_argument("expr", help="crontab text ('*/5 * * * *', '@daily'), or a JSON object of trigger fields "
                                  "('{\"seconds\": 10}', '{\"hour\": \"9-17\"}')")
    nxt.add_argument("-n", type=int, default=10, metavar="N", help="how many fire times (default 10)")
    nxt.add_argument("--tz", default="UTC", metavar="ZONE", help="IANA time zone the schedule runs in "
                                                                  "(default UTC), e.g. Europe/Berlin")
    nxt.add_argument("--type", dest="kind", default=None, choices=["cron", "interval", "date"],
                     help="read EXPR as a scheduled_job row of this schedule_type would be read")
    nxt.add_argument("--after", metavar="TIME", help="start from this time (default now); ISO 8601, and "
                                                      "without an offset a wall time in --tz")


def _ops_commands(sub: Callable[..., argparse.ArgumentParser]) -> None:
    wf = sub("workflow", help="a workflow run: show its steps, or re-run its failed steps (or --from a step)")
    wf.add_argument("action", choices=["show", "rerun"], help="show: every step with its status, duration and "
                                                               "error; rerun: run failed steps and what follows again")
    wf.add_argument("run_id", type=int, metavar="RUN_ID", help="the workflow run (piko runs WORKFLOW lists them)")
    wf.add_argument("target", nargs="?", help=TARGET_HELP + " (rerun: runs it here in leader mode; without it the "
                                                            "re-run is queued for a worker)")
    wf.add_argument("--from", dest="from_steps", metavar="STEP[,STEP]", help="rerun: run these steps again even "
                                                                           "if they succeeded, and all downstream")
    wf.add_argument("--local", action="store_true", help="rerun, cluster execution: run it here, not on a worker")
    wf.add_argument("--no-wait", action="store_true", help="rerun, queued: print the run id, do not wait for it")
    trig = sub("trigger", help="run JOB once now (a manual run, recorded like any other)")
    trig.add_argument("target", help=TARGET_HELP)
    trig.add_argument("job_id", help="the job to run")
    trig.add_argument("--config", metavar="JSON", help="a JSON object used as the job's config for this run "
                                                       "(runs it here, as --local does)")
    trig.add_argument("--local", action="store_true", help="cluster execution: run it in this process instead "
                                                           "of queueing it for a worker")
    trig.add_argument("--no-wait", action="store_true", help="cluster execution: queue it and return at once "
                                                             "with its run id")

    sched = sub("schedule", help="create or change JOB's schedule row")
    sched.add_argument("job_id", help="the job whose scheduled_job row to write")
    kind = sched.add_mutually_exclusive_group()
    kind.add_argument("--cron", metavar="EXPR", help="crontab text, e.g. '*/5 * * * *', or JSON fields")
    kind.add_argument("--interval", metavar="JSON", help='interval fields as JSON, e.g. {"seconds": 10}')
    kind.add_argument("--date", metavar="TIME", help='run once at this time, e.g. "2026-01-08 10:00:00" '
                                                     '(a wall time in the row\'s time zone)')
    sched.add_argument("--timezone", metavar="ZONE", help="IANA time zone of the schedule, e.g. Europe/Berlin")
    on = sched.add_mutually_exclusive_group()
    on.add_argument("--enable", action="store_true", help="let the schedule fire")
    on.add_argument("--disable", action="store_true", help="stop the schedule firing (the row stays)")
    sched.add_argument("--create", action="store_true", help="create the row when JOB has none yet (without it, "
                                                             "a job id with no row is refused as a likely typo)")

    conf = sub("config", help="store a new config version for JOB")
    conf.add_argument("job_id", help="the job whose job_config row to write")
    conf.add_argument("json", help="the config as a JSON object, e.g. '{\"batch\": 500}'")
    conf.add_argument("--effective-from", metavar="TIME", help=f"apply from this time on (default: at once); "
                                                               f"{TIME_HELP}")
    conf.add_argument("--create", action="store_true", help="store it even though JOB has no schedule or config "
                                                            "row yet (without it, such a job id is refused as a "
                                                            "likely typo)")

    cancel = sub("cancel", help="stop a run, or every queued and running run of a job")
    cancel.add_argument("what", metavar="RUN_ID|JOB", help="a run id, or a job id (every queued and running run)")
    cancel.add_argument("--by", metavar="WHO", help="who asks, recorded with the run (default: user@host)")

    workers = sub("workers", help="live instances: role, queues, runs going and capacity, last heartbeat")
    del workers

    bf = sub("backfill", help="run each data window of JOB between --start and --end once")
    bf.add_argument("target", help=TARGET_HELP)
    bf.add_argument("job_id", help="the (stateful) job whose windows to run")
    bf.add_argument("--start", required=True, metavar="TIME", help=f"first window's start; {TIME_HELP}")
    bf.add_argument("--end", required=True, metavar="TIME", help=f"last window's end; {TIME_HELP}")
    bf.add_argument("--local", action="store_true", help="cluster execution: run the windows in this process "
                                                         "instead of queueing them for workers")
    bf.add_argument("--rerun-failed", action="store_true",
                    help="run again, as a new attempt, each window whose newest run did not succeed (FAILED, "
                         "TIMEOUT, CANCELLED, ABANDONED, MISSED, SKIPPED or UPSTREAM_FAILED); without it such "
                         "windows are reported, not run")


def build_parser(version: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="piko", description="piko: an asyncio job orchestrator with database-driven "
                                                         "schedules, run records and backfill")
    p.add_argument("--version", action="version", version=f"piko {version}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    store_commands = {"db", "jobs", "runs", "trigger", "schedule", "config", "backfill", "run", "worker", "cancel",
                      "workers", "workflow"}

    def add(name: str, *, help: str) -> argparse.ArgumentParser:
        sp: argparse.ArgumentParser = sub.add_parser(name, help=help, description=help)
        if name in store_commands:
            _common(sp)
        return sp

    for group in (_run, _store_commands, _next, _ops_commands):
        group(add)
    return p
