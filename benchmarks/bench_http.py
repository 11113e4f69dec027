"""Ops HTTP benchmark: piko's built-in server against uvicorn + FastAPI + prometheus_client.

Both servers run in their own subprocess (own interpreter, own loop) and serve the same
content: /healthz as small JSON, /metrics with 10,000 jobs' series (run counter, running
gauge, duration histogram) plus process_* metrics. One load generator (wrk when on PATH,
else the built-in asyncio client: N keep-alive connections, loopback only, bounded in
time) measures requests/s and p99 latency of each, in the same run, as a ratio.

    python benchmarks/bench_http.py [--quick]

piko shares one render among concurrent scrapes; the c=1 /metrics case shows the cost of a
render on its own. uvicorn runs with whatever HTTP parser it finds (h11 or httptools).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEER = "uvicorn+fastapi"
JOBS = 10_000
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
CASES = [("/healthz", 16), ("/metrics", 1), ("/metrics", 4)]


def job_values(i: int) -> tuple[str, int, int, float]:
    """The same data in both servers: job id, runs, running, one duration."""
    return f"job_{i:05d}", i % 7 + 1, i % 2, (i % 100) / 10


# -- the two servers (each runs in a subprocess: python bench_http.py --serve piko|peer) --------


def serve_piko(jobs: int) -> None:
    sys.path.insert(0, str(ROOT))
    from piko.http.routes import OpsRoutes
    from piko.http.server import HttpServer
    from piko.observability.metrics import MetricsRegistry
    from piko.observability.process import LoopLagMonitor, ProcessCollector

    registry = MetricsRegistry()
    runs = registry.counter("piko_job_run_total", "Job runs by final status.", ("job_id", "status"), is_builtin=True)
    running = registry.gauge("piko_jobs_running", "Runs in progress.", ("job_id",), is_builtin=True)
    duration = registry.histogram("piko_job_duration_seconds", "Wall time of finished job runs.",
                                  ("job_id",), buckets=DURATION_BUCKETS, is_builtin=True)
    for i in range(jobs):
        job_id, n, r, d = job_values(i)
        runs.labels(job_id, "SUCCESS").inc(n)
        running.labels(job_id).set(r)
        duration.labels(job_id).observe(d)
    ProcessCollector().register(registry)

    class State:
        def __init__(self, monitor: LoopLagMonitor) -> None:
            self.monitor = monitor

        def is_started(self) -> bool:
            return True

        def role(self) -> str:
            return "leader"

        def loop_lag_s(self) -> float:
            return self.monitor.lag_s

        async def readiness_checks(self) -> dict[str, str | None]:
            return {"store": None}

    async def main() -> None:
        async with LoopLagMonitor() as monitor:
            routes = OpsRoutes(State(monitor), registry)
            async with HttpServer(routes, "127.0.0.1", 0, max_connections=1024) as srv:
                print(f"READY {srv.port}", flush=True)
                await asyncio.Event().wait()

    asyncio.run(main())


def serve_peer(jobs: int) -> None:
    import prometheus_client
    import uvicorn
    from fastapi import FastAPI, Response
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

    prometheus_client.disable_created_metrics()
    registry = CollectorRegistry()
    runs = Counter("piko_job_run", "Job runs by final status.", ("job_id", "status"), registry=registry)
    running = Gauge("piko_jobs_running", "Runs in progress.", ("job_id",), registry=registry)
    duration = Histogram("piko_job_duration_seconds", "Wall time of finished job runs.", ("job_id",),
                         buckets=DURATION_BUCKETS, registry=registry)
    for i in range(jobs):
        job_id, n, r, d = job_values(i)
        runs.labels(job_id, "SUCCESS").inc(n)
        running.labels(job_id).set(r)
        duration.labels(job_id).observe(d)
    ProcessCollector(registry=registry)

    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict[str, object]:
        return {"status": "ok", "loop_lag_s": 0.0}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(prometheus_client.generate_latest(registry),
                        media_type=prometheus_client.CONTENT_TYPE_LATEST)

    # proto=IPPROTO_TCP so asyncio sets TCP_NODELAY on accepted sockets, as when uvicorn binds itself
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    config = uvicorn.Config(app, log_level="warning", access_log=False, loop="asyncio")
    server = uvicorn.Server(config)
    print(f"READY {sock.getsockname()[1]}", flush=True)
    asyncio.run(server.serve(sockets=[sock]))


class Subprocess:
    def __init__(self, which: str, jobs: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", which, "--jobs", str(jobs)],
            stdout=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"{which} server did not start: {line!r}")
        self.port = int(line.split()[1])
        self._wait_listening()

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# -- load generation -------------------------------------------------------------------------------


@dataclass
class Result:
    rps: float
    p99_ms: float
    errors: int


class _LoadConnection(asyncio.Protocol):
    """Sends one request, frames the response by Content-Length, records latency, repeats."""

    def __init__(self, request: bytes, deadline: float, latencies: list[float], done: asyncio.Future) -> None:
        self.request, self.deadline, self.latencies, self.done = request, deadline, latencies, done
        self.buffer = bytearray()
        self.errors = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self._send()

    def _send(self) -> None:
        self.sent_at = time.perf_counter()
        self.expected = -1
        self.transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.expected < 0:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            if not head.startswith(b"http/1.1 200"):
                self.errors += 1
            length = int(re.search(rb"content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
            self.expected = end + 4 + length
        if len(self.buffer) < self.expected:
            return
        del self.buffer[: self.expected]
        now = time.perf_counter()
        self.latencies.append(now - self.sent_at)
        if now < self.deadline:
            self._send()
        else:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def _load(port: int, path: str, connections: int, duration_s: float) -> Result:
    loop = asyncio.get_running_loop()
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    latencies: list[float] = []
    started = time.perf_counter()
    deadline = started + duration_s
    protocols, waits = [], []
    for _ in range(connections):
        done = loop.create_future()
        _, protocol = await loop.create_connection(
            lambda d=done: _LoadConnection(request, deadline, latencies, d), "127.0.0.1", port)
        protocols.append(protocol)
        waits.append(done)
    await asyncio.wait_for(asyncio.gather(*waits), duration_s + 60)
    elapsed = time.perf_counter() - started
    latencies.sort()
    p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)] if latencies else float("nan")
    return Result(len(latencies) / elapsed, p99 * 1000, sum(p.errors for p in protocols))


def _wrk(port: int, path: str, connections: int, duration_s: float) -> Result:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration_s))}s", "--latency",
         f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    p99_ms = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    errors = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    return Result(rps, p99_ms, errors)


def measure(port: int, path: str, connections: int, duration_s: float) -> Result:
    if shutil.which("wrk"):
        return _wrk(port, path, connections, duration_s)
    asyncio.run(_load(port, path, 1, 0.2))  # warm-up (first render, imports)
    return asyncio.run(_load(port, path, connections, duration_s))


# -- the benchmark --------------------------------------------------------------------------------


def render_times(jobs: int) -> dict:
    """In-process render of the same series: piko cold (every line re-formatted, as after all
    jobs changed) and warm (cached lines), against prometheus_client.generate_latest."""
    sys.path.insert(0, str(ROOT))
    from piko.observability.metrics import MetricsRegistry

    registry = MetricsRegistry()
    runs = registry.counter("piko_job_run_total", "r", ("job_id", "status"), is_builtin=True)
    running = registry.gauge("piko_jobs_running", "r", ("job_id",), is_builtin=True)
    duration = registry.histogram("piko_job_duration_seconds", "d", ("job_id",), buckets=DURATION_BUCKETS,
                                  is_builtin=True)
    for i in range(jobs):
        job_id, n, r, d = job_values(i)
        runs.labels(job_id, "SUCCESS").inc(n)
        running.labels(job_id).set(r)
        duration.labels(job_id).observe(d)
    registry.render()
    started = time.perf_counter()
    registry.render()
    warm_ms = (time.perf_counter() - started) * 1000
    for metric in (runs, running, duration):
        for child in metric._children.values():
            child._text = None
    started = time.perf_counter()
    registry.render()
    cold_ms = (time.perf_counter() - started) * 1000
    row = {"bench": "http", "case": f"render {jobs} jobs in-process", "impl": "piko",
           "cold_ms": round(cold_ms, 1), "warm_ms": round(warm_ms, 1), "peer": None, "peer_ms": None}
    if not _absent("prometheus_client"):
        import prometheus_client

        prometheus_client.disable_created_metrics()
        peer_registry = prometheus_client.CollectorRegistry()
        c = prometheus_client.Counter("piko_job_run", "r", ("job_id", "status"), registry=peer_registry)
        g = prometheus_client.Gauge("piko_jobs_running", "r", ("job_id",), registry=peer_registry)
        h = prometheus_client.Histogram("piko_job_duration_seconds", "d", ("job_id",),
                                        buckets=DURATION_BUCKETS, registry=peer_registry)
        for i in range(jobs):
            job_id, n, r, d = job_values(i)
            c.labels(job_id, "SUCCESS").inc(n)
            g.labels(job_id).set(r)
            h.labels(job_id).observe(d)
        started = time.perf_counter()
        prometheus_client.generate_latest(peer_registry)
        row.update(peer="prometheus_client", peer_ms=round((time.perf_counter() - started) * 1000, 1))
    return row


def _peer_missing() -> str | None:
    missing = [m for m in ("uvicorn", "fastapi", "prometheus_client") if _absent(m)]
    return f"peer skipped: {', '.join(missing)} not installed (pip install piko[bench])" if missing else None


def _absent(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None


def run(quick: bool = False) -> list[dict]:
    duration_s = 1.5 if quick else 5.0
    jobs = JOBS
    missing = _peer_missing()
    if missing:
        print(missing)
    results: dict[str, dict[str, Result]] = {}
    for impl in ("piko", PEER):
        if impl == PEER and missing:
            continue
        server = Subprocess("piko" if impl == "piko" else "peer", jobs)
        try:
            for path, connections in CASES:
                case = f"{path} c={connections}"
                results.setdefault(case, {})[impl] = measure(server.port, path, connections, duration_s)
        finally:
            server.stop()
    rows = []
    for case, by_impl in results.items():
        ours, peer = by_impl["piko"], by_impl.get(PEER)
        rows.append({
            "bench": "http", "case": case, "impl": "piko", "jobs": jobs,
            "rps": round(ours.rps, 1), "p99_ms": round(ours.p99_ms, 2), "errors": ours.errors,
            "peer": PEER if peer else None,
            "peer_rps": round(peer.rps, 1) if peer else None,
            "peer_p99_ms": round(peer.p99_ms, 2) if peer else None,
            "ratio": round(ours.rps / peer.rps, 2) if peer and peer.rps else None,
            "load": "wrk" if shutil.which("wrk") else "asyncio client",
        })
    rows.append(render_times(jobs))
    return rows


def _print_table(rows: list[dict]) -> None:
    print(f"{'case':<16}{'piko rps':>10}{'p99 ms':>10}{'peer rps':>10}{'p99 ms':>10}{'ratio':>9}  load")
    for r in rows:
        if "cold_ms" in r:
            peer = f"{r['peer_ms']:.1f} ms ({r['peer']})" if r["peer"] else "peer skipped"
            print(f"{r['case']}: piko {r['cold_ms']:.1f} ms cold, {r['warm_ms']:.1f} ms warm; {peer}")
            continue
        peer_rps = "-" if r["peer_rps"] is None else f"{r['peer_rps']:.1f}"
        peer_p99 = "-" if r["peer_p99_ms"] is None else f"{r['peer_p99_ms']:.2f}"
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        print(f"{r['case']:<16}{r['rps']:>10.1f}{r['p99_ms']:>10.2f}{peer_rps:>10}{peer_p99:>10}{ratio:>9}"
              f"  {r['load']}")
    print(f"({JOBS} jobs' series on /metrics; peer = {PEER} + prometheus_client, in a subprocess; "
          f"{os.cpu_count()} CPUs)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--serve", choices=("piko", "peer"), help=argparse.SUPPRESS)
    parser.add_argument("--jobs", type=int, default=JOBS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve == "piko":
        serve_piko(args.jobs)
    elif args.serve == "peer":
        serve_peer(args.jobs)
    else:
        _print_table(run(quick=args.quick))
