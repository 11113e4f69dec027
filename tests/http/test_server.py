"""The ops HTTP server over real sockets on 127.0.0.1 (port 0)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time

import pytest

from piko.errors import ConfigError
from piko.http.server import HttpServer
from piko.observability.metrics import MetricsRegistry
from tests.http.support import FakeOpsState, RawClient, async_test, fetch, get, make_routes, serve, wait_until


@async_test
async def test_healthz_answers_200_with_loop_lag() -> None:
    async with serve() as srv:
        reply = await fetch(srv.port, "/healthz")
    assert reply.status == 200
    assert reply.headers["content-type"] == "application/json"
    assert json.loads(reply.body) == {"status": "ok", "loop_lag_s": 0.0012}
    assert "date" in reply.headers


@async_test
async def test_keep_alive_serves_several_requests_on_one_connection() -> None:
    async with serve() as srv:
        client = await RawClient.connect(srv.port)
        for _ in range(3):
            reply = await client.request("/healthz")
            assert reply.status == 200
            assert reply.headers["connection"] == "keep-alive"
        assert srv.connection_count == 1
        await client.close()


@async_test
async def test_pipelined_requests_are_answered_in_order() -> None:
    async with serve() as srv:
        client = await RawClient.connect(srv.port)
        await client.send(get("/healthz") + get("/nope") + get("/leader") + get("/healthz", method="POST"))
        statuses = [(await client.reply()).status for _ in range(4)]
        assert statuses == [200, 404, 200, 405]
        await client.close()


@async_test
async def test_head_sends_get_headers_without_body() -> None:
    async with serve() as srv:
        client = await RawClient.connect(srv.port)
        full = await client.request("/readyz")
        head = await client.request("/readyz", method="HEAD")
        assert head.status == 200
        assert head.headers["content-length"] == str(len(full.body))
        # the connection is still framed correctly: the next request works
        assert (await client.request("/healthz")).status == 200
        await client.close()


@async_test
async def test_http_1_0_closes_unless_keep_alive_is_asked() -> None:
    async with serve() as srv:
        client = await RawClient.connect(srv.port)
        reply = await client.request("/healthz", version="1.0")
        assert reply.status == 200 and reply.headers["connection"] == "close"
        assert await client.is_closed_by_peer()
        client = await RawClient.connect(srv.port)
        reply = await client.request("/healthz", version="1.0", extra="Connection: keep-alive\r\n")
        assert reply.headers["connection"] == "keep-alive"
        assert (await client.request("/healthz", version="1.0")).status == 200
        await client.close()


@async_test
async def test_connection_close_header_is_honoured() -> None:
    async with serve() as srv:
        client = await RawClient.connect(srv.port)
        reply = await client.request("/healthz", extra="Connection: close\r\n")
        assert reply.headers["connection"] == "close"
        assert await client.is_closed_by_peer()


@async_test
async def test_unknown_path_is_404_and_other_methods_are_405() -> None:
    async with serve() as srv:
        assert (await fetch(srv.port, "/")).status == 404
        reply = await fetch(srv.port, "/metrics", method="DELETE")
        assert reply.status == 405
        assert reply.headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /healthz\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\n\r\n", 400),  # no Host
        (b"G\x00T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", 413),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\n\r\n", 400),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 9000 + b"\r\n\r\n", 431),
    ],
    ids=["no-version", "no-host", "nul-in-method", "http2", "space-in-name", "nul-in-value",
         "body", "bad-length", "huge-line", "huge-headers"],
)
@async_test
async def test_malformed_requests_get_their_status_and_a_close(raw: bytes, status: int) -> None:
    async with serve() as srv:
        client = await RawClient.connect(srv.port)
        await client.send(raw)
        reply = await client.reply()
        assert reply.status == status
        assert reply.headers["connection"] == "close"
        assert await client.is_closed_by_peer()
        assert (await fetch(srv.port, "/healthz")).status == 200


@async_test
async def test_post_with_a_body_is_405_and_closes() -> None:
    async with serve() as srv:
        client = await RawClient.connect(srv.port)
        await client.send(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
        assert (await client.reply()).status == 405
        assert await client.is_closed_by_peer()


@pytest.mark.parametrize(
    ("raw", "status"),
    [(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n", 413),
     (b"POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 411)],
    ids=["too-big", "chunked"],
)
@async_test
async def test_a_post_body_too_big_or_without_a_length_is_refused_before_it_is_read(raw: bytes, status: int) -> None:
    async with serve() as srv:
        client = await RawClient.connect(srv.port)
        await client.send(raw)
        assert (await client.reply()).status == status
        assert await client.is_closed_by_peer()


@async_test
async def test_a_post_body_that_never_completes_gets_408() -> None:
    async with serve(header_timeout_s=0.3) as srv:
        client = await RawClient.connect(srv.port)
        await client.send(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        assert (await client.reply(timeout=3.0)).status == 408
        assert await client.is_closed_by_peer()


@async_test
async def test_client_that_never_finishes_its_headers_gets_408() -> None:
    async with serve(header_timeout_s=0.3) as srv:
        client = await RawClient.connect(srv.port)
        started = time.monotonic()
        await client.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        for _ in range(3):  # trickling bytes does not extend the deadline
            await asyncio.sleep(0.1)
            await client.send(b"X")
        reply = await client.reply()
        assert reply.status == 408
        assert 0.25 < time.monotonic() - started < 1.0
        assert await client.is_closed_by_peer()


@async_test
async def test_silent_and_idle_connections_are_closed_without_a_reply() -> None:
    async with serve(header_timeout_s=0.2, idle_timeout_s=0.3) as srv:
        silent = await RawClient.connect(srv.port)
        assert await silent.is_closed_by_peer(timeout=1.0)
        idle = await RawClient.connect(srv.port)
        assert (await idle.request("/healthz")).status == 200
        started = time.monotonic()
        assert await idle.is_closed_by_peer(timeout=1.0)
        assert time.monotonic() - started > 0.2
        await silent.close()
        await idle.close()
        await wait_until(lambda: srv.connection_count == 0)


@async_test
async def test_connections_over_the_cap_get_503_and_are_closed() -> None:
    async with serve(max_connections=2) as srv:
        held = [await RawClient.connect(srv.port) for _ in range(2)]  # connected, no request yet
        extra = await RawClient.connect(srv.port)
        assert (await extra.reply()).status == 503
        assert await extra.is_closed_by_peer()
        assert srv.connection_count == 2
        await held[0].close()
        await wait_until(lambda: srv.connection_count < 2)
        assert (await fetch(srv.port, "/healthz")).status == 200
        await held[1].close()


@async_test
async def test_at_the_cap_a_new_connection_takes_the_place_of_the_longest_idle_one() -> None:
    async with serve(max_connections=2) as srv:
        oldest, newer = [await RawClient.connect(srv.port) for _ in range(2)]
        assert (await oldest.request("/healthz")).status == 200
        assert (await newer.request("/healthz")).status == 200  # both now idle keep-alive
        probe = await RawClient.connect(srv.port)
        assert (await probe.request("/healthz")).status == 200  # a liveness probe is not starved
        assert await oldest.is_closed_by_peer(timeout=2.0)  # closed between requests, no reply
        assert (await newer.request("/healthz")).status == 200
        assert srv.connection_count == 2
        for client in (newer, probe, oldest):
            await client.close()


@async_test
async def test_port_in_use_raises_config_error_naming_the_address() -> None:
    async with serve() as first:
        with pytest.raises(ConfigError, match=rf"cannot serve HTTP on 127\.0\.0\.1:{first.port}: "
                                              r"address already in use \(set http_port"):
            async with serve().__class__(make_routes(), "127.0.0.1", first.port):
                pass


@async_test
async def test_exit_closes_open_connections_promptly() -> None:
    srv = serve()
    async with srv:
        client = await RawClient.connect(srv.port)
        assert (await client.request("/healthz")).status == 200
        started = time.monotonic()
    assert time.monotonic() - started < 0.5
    assert await client.is_closed_by_peer(timeout=1.0)


@async_test
async def test_readyz_reports_role_and_checks() -> None:
    state = FakeOpsState(current_role="standby")
    async with serve(make_routes(state)) as srv:
        reply = await fetch(srv.port, "/readyz")
        assert reply.status == 200
        assert json.loads(reply.body) == {
            "status": "ready", "role": "standby", "checks": {"started": "ok", "store": "ok"}}
        state.checks = {"store": "database is locked"}
        reply = await fetch(srv.port, "/readyz")
        assert reply.status == 503
        assert json.loads(reply.body)["checks"]["store"] == "database is locked"


@async_test
async def test_readyz_is_503_before_start_and_when_the_store_hangs() -> None:
    state = FakeOpsState(started=False)
    async with serve(make_routes(state, readiness_timeout_s=0.2)) as srv:
        reply = await fetch(srv.port, "/readyz")
        assert reply.status == 503
        assert json.loads(reply.body)["checks"] == {"started": "not started yet"}
        state.started, state.check_delay_s = True, 5.0
        started = time.monotonic()
        reply = await fetch(srv.port, "/readyz")
        assert reply.status == 503
        assert time.monotonic() - started < 1.0
        assert json.loads(reply.body)["checks"] == {"started": "ok", "store": "no answer within 0.2 s"}


class _GoneStore(FakeOpsState):
    async def readiness_checks(self) -> dict[str, str | None]:
        raise RuntimeError("db gone")


@async_test
async def test_readyz_names_the_store_check_when_it_raises_unexpectedly() -> None:
    async with serve(make_routes(_GoneStore())) as srv:
        reply = await fetch(srv.port, "/readyz")
    assert reply.status == 503
    assert json.loads(reply.body) == {"status": "not ready", "role": "leader",
                                      "checks": {"started": "ok", "store": "RuntimeError: db gone"}}


@async_test
async def test_leader_answers_200_only_on_the_leader() -> None:
    state = FakeOpsState()
    async with serve(make_routes(state)) as srv:
        assert (await fetch(srv.port, "/leader")).status == 200
        state.current_role = "standby"
        reply = await fetch(srv.port, "/leader")
        assert reply.status == 503
        assert json.loads(reply.body) == {"role": "standby"}


@async_test
async def test_metrics_is_prometheus_text_accepted_by_a_real_parser() -> None:
    parser = pytest.importorskip("prometheus_client.parser")
    registry = MetricsRegistry()
    from piko.observability.piko_metrics import PikoMetrics

    metrics = PikoMetrics(registry)
    metrics.job_run_total.labels(job_id='we"ird\\job\n', status="SUCCESS").inc()
    metrics.job_duration_seconds.labels(job_id="a").observe(0.3)
    async with serve(make_routes(registry=registry)) as srv:
        reply = await fetch(srv.port, "/metrics?x=1")
    assert reply.status == 200
    assert reply.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    families = {f.name: f for f in parser.text_string_to_metric_families(reply.body.decode())}
    run = families["piko_job_run"].samples[0]
    assert run.labels == {"job_id": 'we"ird\\job\n', "status": "SUCCESS"} and run.value == 1
    buckets = [s for s in families["piko_job_duration_seconds"].samples if s.name.endswith("_bucket")]
    assert buckets[-1].labels["le"] == "+Inf" and buckets[-1].value == 1
    assert "process_cpu_seconds" in families


@async_test
async def test_client_that_stops_reading_a_large_response_is_cut_off() -> None:
    registry = MetricsRegistry()
    gauge = registry.gauge("big", "a large body", ("i",))
    for i in range(60_000):
        gauge.labels(i=f"{i:060d}").set(i)
    async with serve(make_routes(registry=registry), idle_timeout_s=0.3) as srv:
        client = await RawClient.connect(srv.port)
        await client.send(get("/metrics"))
        await wait_until(lambda: srv.connection_count == 0, timeout=3.0)
        assert (await fetch(srv.port, "/healthz")).status == 200
        client.writer.transport.abort()


@async_test
async def test_metrics_still_answers_with_a_label_value_holding_lone_surrogates() -> None:
    parser = pytest.importorskip("prometheus_client.parser")
    registry = MetricsRegistry()
    registry.counter("files_total", "x", ("name",)).labels(name=os.fsdecode(b"bad\xff.csv")).inc()
    registry.gauge("ok", "a healthy neighbour").set(1)
    async with serve(make_routes(registry=registry)) as srv:
        reply = await fetch(srv.port, "/metrics")
    assert reply.status == 200
    families = {f.name: f for f in parser.text_string_to_metric_families(reply.body.decode("utf-8"))}
    assert families["files"].samples[0].labels == {"name": "bad\\udcff.csv"}
    assert families["ok"].samples[0].value == 1


@async_test
async def test_a_large_metrics_body_streams_with_the_length_get_and_head_agree_on() -> None:
    registry = MetricsRegistry()
    histogram = registry.histogram("h", "big", ("job_id",))
    for i in range(5000):
        histogram.labels(job_id=f"job-{i}").observe(i / 1000)
    expected = registry.render().encode()
    async with serve(make_routes(registry=registry)) as srv:
        client = await RawClient.connect(srv.port)
        full = await client.request("/metrics")
        head = await client.request("/metrics", method="HEAD")
        after = await client.request("/healthz")  # framing held: no stray body bytes
        await client.close()
    assert len(expected) > 4 * 256 * 1024  # several pieces
    assert full.body == expected and full.headers["content-length"] == str(len(expected))
    assert head.status == 200 and head.headers["content-length"] == str(len(expected))
    assert after.status == 200


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
@async_test
async def test_the_server_binds_an_ipv6_host() -> None:
    try:
        srv = HttpServer(make_routes(), "::1", 0)
        await srv.__aenter__()
    except ConfigError:
        pytest.skip("no IPv6 loopback here")
    try:
        reader, writer = await asyncio.open_connection("::1", srv.port)
        writer.write(get("/healthz", extra="Connection: close\r\n"))
        assert (await reader.read()).startswith(b"HTTP/1.1 200 ")
        writer.close()
    finally:
        await srv.__aexit__(None, None, None)
