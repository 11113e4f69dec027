"""Builders of the app's parts from settings: store, ops HTTP (and status page), leader lease, writer, CPU offload.

Each builder takes the parts it needs, never the app, and imports its component lazily, so
an app that never uses the writer or the CPU pool never imports them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

from piko.app.live import LiveState
from piko.core.registry import Registry
from piko.core.types import InstanceInfo
from piko.observability.metrics import MetricsRegistry
from piko.observability.piko_metrics import PikoMetrics
from piko.protocols import Clock, Store
from piko.settings import Settings

log = logging.getLogger("piko.app")


def build_store(s: Settings) -> Store:
    from piko.store import make_store

    options = {"pool_size": s.mysql_pool_size, "pool_recycle": s.mysql_pool_recycle} \
        if s.store_dsn.startswith("mysql") else {}
    return make_store(s.store_dsn, **options)


def build_routes(live: LiveState, metrics: MetricsRegistry) -> Any:
    """The ops endpoints and the status page with its /api/, over the live state."""
    from piko.app.console import LiveConsole
    from piko.http.console import ConsoleRoutes
    from piko.http.routes import OpsRoutes

    return OpsRoutes(live, metrics, console=ConsoleRoutes(LiveConsole(live)))


def build_http(live: LiveState, metrics: MetricsRegistry, s: Settings) -> contextlib.AbstractAsyncContextManager[None]:
    """The ops server on http_host:http_port, with the loop-lag monitor /healthz reports."""
    from piko.http.server import HttpServer
    from piko.observability.process import LoopLagMonitor

    @contextlib.asynccontextmanager
    async def serve() -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            monitor = await stack.enter_async_context(LoopLagMonitor())
            server = await stack.enter_async_context(HttpServer(build_routes(live, metrics), s.http_host, s.http_port))
            live.set_lag_monitor(monitor, server.port)
            host = f"[{s.http_host}]" if ":" in s.http_host else s.http_host
            log.info("ops endpoints on http://%s:%s (/healthz /readyz /metrics; status page at /, %s)", host,
                     server.port, "actions need the admin token" if s.http_admin_token else
                     "read-only and loopback-only: http_admin_token is not set")
            yield

    return serve()


def build_leader(store: Store, s: Settings, holder: str, clock: Clock, metrics: PikoMetrics,
                 on_change: Callable[[bool], None]) -> Any:
    """The lease campaign, or None when leader election is off."""
    if not s.leader_enabled:
        return None
    from piko.core.instances import is_dead_local_instance
    from piko.leader import LeaderElector

    return LeaderElector(store, name=s.leader_name, holder=holder, lease_s=s.leader_lease_s,
                         renew_interval_s=s.leader_renew_interval_s, clock=clock, on_change=on_change,
                         metrics=metrics, is_holder_dead=is_dead_local_instance)


def describe_instance(clock: Clock, s: Settings, registry: Registry, *, is_worker_only: bool) -> InstanceInfo:
    """This process as its heartbeat row says: what it does, which queues its worker takes."""
    from piko.core.instances import new_instance

    is_cluster = s.execution == "cluster" or is_worker_only
    queues = (s.queue_list or tuple(sorted({spec.queue for spec in registry})) or ("default",)) if is_cluster else ()
    role = "worker" if is_worker_only else ("scheduler+worker" if is_cluster else "scheduler")
    return replace(new_instance(clock), role=role, queues=queues, capacity=s.worker_concurrency if is_cluster else 0)


def build_share(s: Settings, instance: InstanceInfo, keeper: Any, running: Callable[[], int]) -> Any:
    """Cluster execution: which fires this instance starts itself (the rest are queued); else None."""
    if not instance.queues:
        return None
    from piko.core.worker import LocalShare

    return LocalShare(instance.queues, instance.capacity, running, keeper.consumers)


def build_worker(store: Store, clock: Clock, runner: Any, s: Settings, instance: InstanceInfo, live: LiveState,
                 registry: Registry, metrics: PikoMetrics, keeper: Any) -> Any:
    """Cluster execution: the queue worker; else None."""
    if not instance.queues:
        return None
    from piko.core.pieces import private_queue
    from piko.core.worker import QueueWorker

    # its own queue too: the copies of broadcast fires meant for this instance
    queues = (*instance.queues, private_queue(instance.instance_id))
    return QueueWorker(store, clock, runner, instance_id=instance.instance_id, queues=queues,
                       capacity=instance.capacity, options_for=live.options_for,
                       knows=lambda job_id: registry.resolve(job_id) is not None, metrics=metrics, poll_max_s=s.worker_poll_max_s,
                       consumers=lambda: max(keeper.consumers(q) for q in instance.queues))


def build_cancel_watch(store: Store, clock: Clock, runner: Any, instance_id: str) -> Any:
    from piko.core.worker import CancelWatch

    return CancelWatch(store, clock, runner, instance_id)


def build_writer(s: Settings, metrics: PikoMetrics, clock: Clock) -> Any:
    from piko.persistence.writer import PersistenceWriter

    return PersistenceWriter(queue_max=s.persist_queue_max, batch_size=s.persist_batch_size,
                             batch_timeout_s=s.persist_batch_timeout_s, spill_dir=s.persist_spill_dir,
                             durability=s.persist_durability, retry_max=s.persist_retry_max,
                             write_timeout_s=s.persist_write_timeout_s, startup_replay_s=s.persist_startup_replay_s,
                             metrics=metrics, clock=clock)


def build_cpu(s: Settings) -> Any:
    """The CPU offload backend the settings chose: piko's own worker processes, or a Dask cluster."""
    if s.cpu_backend == "dask":
        from piko.compute.dask_backend import DaskExecutor

        return DaskExecutor(s.dask_scheduler, per_job_cap=s.cpu_per_job_cap or None,
                            connect_timeout_s=s.dask_connect_timeout_s)
    from piko.compute.manager import CpuManager

    return CpuManager(s.cpu_workers or None, per_job_cap=s.cpu_per_job_cap or None)
