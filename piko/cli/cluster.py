"""Cluster execution's commands: `piko worker` (run queued runs, never lead), `piko cancel`, `piko workers`.

A cancel is a request written on the run's row: a queued run ends CANCELLED at once, a running
one is stopped by the instance running it within a second (it polls its requests), recorded
CANCELLED with who asked. Plain SQL works too: UPDATE job_run SET cancel_requested = 1.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import socket
import sys
from typing import Any

from piko.cli.args import open_existing, target_app, with_store
from piko.clock import SystemClock
from piko.errors import ConfigError


def cmd_worker(args: argparse.Namespace) -> int:
    app = target_app(args)
    overrides: dict[str, Any] = {"execution": "cluster"}
    if args.queues:
        overrides["worker_queues"] = args.queues
    if args.concurrency is not None:
        overrides["worker_concurrency"] = args.concurrency
    app.configure(**overrides)
    s = app.settings
    queues = s.worker_queues or "the queues of its jobs"
    print(f"piko: worker for {queues} ({s.worker_concurrency} runs at once) from {args.target}; data in "
          f"{app.store.description}", file=sys.stderr)
    print("piko: stop with Ctrl+C or SIGTERM", file=sys.stderr)
    app.run(worker_only=True)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from piko.cli.args import bare_app

    app = bare_app(args)
    open_existing(app, "rw")
    by = args.by or f"{getpass.getuser()}@{socket.gethostname()}"
    target = {"run_id": int(args.what)} if args.what.isdigit() else {"job_id": args.what}

    async def go(store: Any) -> tuple[int, int]:
        if "run_id" in target:
            run = await store.get_run(target["run_id"])
            if run is None:
                raise ConfigError(f"no run {args.what} (piko runs lists them)")
            if run.status.is_final:
                raise ConfigError(f"run {args.what} already ended {run.status.value}: nothing to cancel")
        return await store.request_cancel(by=by, now=SystemClock().now(), **target)  # type: ignore[no-any-return]

    cancelled, asked = asyncio.run(with_store(app, go))
    print(f"{args.what}: {cancelled} queued run(s) cancelled, {asked} running run(s) asked to stop (by {by})")
    if not cancelled and not asked:
        print("(no queued or running run to cancel)")
    return 0


def cmd_workers(args: argparse.Namespace) -> int:
    from piko.cli.args import bare_app

    app = bare_app(args)
    open_existing(app, "ro")
    now = SystemClock().now()

    async def go(store: Any) -> tuple[list[Any], dict[str, int]]:
        return await store.list_instances(), await store.queue_depths()

    instances, depths = asyncio.run(with_store(app, go))
    print(f"{'instance':<40} {'role':<17} {'queues':<24} {'running':>11} {'heartbeat':>10}")
    for i in sorted(instances, key=lambda i: i.instance_id):
        age = f"{(now - i.heartbeat_at).total_seconds():.1f}s ago" if i.heartbeat_at else "-"
        load = f"{i.running}/{i.capacity}" if i.capacity else str(i.running)
        print(f"{i.instance_id[:40]:<40} {i.role or '-':<17} {','.join(i.queues)[:24] or '-':<24} {load:>11} "
              f"{age:>10}")
    if not instances:
        print("(no live instance)")
    if depths:
        print("queued: " + ", ".join(f"{queue} {n}" for queue, n in sorted(depths.items())))
    return 0
