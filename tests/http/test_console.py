"""The status page's routes over a fake console: who may read and act, what is logged, the
query and body rules, and the store's deadline."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pytest

from piko.core.types import ActionOutcome, ActionResult, InstanceInfo, JobStatus, RunRecord, RunStatus
from piko.http.console import ConsoleRoutes, is_loopback, parse_filters
from piko.http.routes import Call, OpsRoutes
from piko.observability.metrics import MetricsRegistry
from tests.http.support import FakeOpsState, RawClient, async_test, fetch, serve

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
TOKEN = "t0ken-for-the-tests-0123"
AUTH = (("authorization", f"Bearer {TOKEN}"),)


@dataclass
class FakeConsole(FakeOpsState):
    token: str | None = TOKEN
    cluster: bool = False
    delay_s: float = 0.0
    calls: list[tuple] = field(default_factory=list)

    def now(self) -> datetime:
        return NOW

    def is_cluster(self) -> bool:
        return self.cluster

    def admin_token(self) -> str | None:
        return self.token

    async def jobs(self) -> list[JobStatus]:
        await asyncio.sleep(self.delay_s)
        return [JobStatus("etl", "cron", "* * * * *", True, NOW, None)]

    async def runs(self, job_id: str | None, status: RunStatus | None, limit: int) -> list[RunRecord]:
        self.calls.append(("runs", job_id, status, limit))
        return []

    async def failures(self, limit: int) -> list[RunRecord]:
        return []

    async def instances(self) -> list[InstanceInfo]:
        return [InstanceInfo("i1", "h", 1, NOW, heartbeat_at=NOW, role="scheduler")]

    async def queue_depths(self) -> dict[str, int]:
        return {"default": 2}

    async def run_now(self, job_id: str, by: str) -> ActionResult:
        self.calls.append(("run", job_id, by))
        return ActionResult(ActionOutcome.STARTED, f"{job_id}: started")

    async def set_paused(self, job_id: str, is_paused: bool, by: str) -> ActionResult:
        self.calls.append(("pause" if is_paused else "resume", job_id, by))
        await asyncio.sleep(self.delay_s)
        return ActionResult(ActionOutcome.DONE, f"{job_id}: done")

    async def cancel_run(self, run_id: int, by: str) -> ActionResult:
        self.calls.append(("cancel", run_id, by))
        return ActionResult(ActionOutcome.CONFLICT, f"run {run_id} already ended SUCCESS: nothing to cancel")

    async def rerun(self, run_id: int, by: str) -> ActionResult:
        self.calls.append(("rerun", run_id, by))
        return ActionResult(ActionOutcome.NOT_FOUND, f"no run {run_id}")


def routes(console: FakeConsole | None = None, **kw: object) -> OpsRoutes:
    return OpsRoutes(FakeOpsState(), MetricsRegistry(), console=ConsoleRoutes(console or FakeConsole(), **kw))


async def ask(r: OpsRoutes, method: str, path: str, *, query: str = "", headers: tuple = (), body: bytes = b"",
              client: str | None = "127.0.0.1") -> tuple[int, dict]:
    response = await r.handle(method, path, Call(method, path, query, headers, body, client))
    content_type = dict(response.headers)["Content-Type"]
    return response.status, json.loads(response.body) if "json" in content_type else {"html": response.body}


@async_test
async def test_reads_answer_json_and_the_page_html() -> None:
    r = routes(FakeConsole(cluster=True))
    assert await ask(r, "GET", "/api/jobs") == (200, {"jobs": [{
        "job_id": "etl", "schedule_type": "cron", "schedule_expr": "* * * * *", "timezone": None, "enabled": True,
        "next_fire_at": NOW.isoformat(), "last_run": None, "problem": None, "registered": True, "queue": "default"}]})
    assert (await ask(r, "GET", "/api/queues"))[1] == {"execution": "cluster", "queues": {"default": 2}}
    assert (await ask(r, "GET", "/api/instances"))[1]["instances"][0]["heartbeat_age_s"] == 0.0
    status, page = await ask(r, "GET", "/")
    assert status == 200 and b"<h1>piko</h1>" in page["html"]
    response = await r.handle("GET", "/", Call("GET", "/", client="::1"))
    headers = dict(response.headers)
    assert "script-src 'nonce-" in headers["Content-Security-Policy"] and headers["X-Frame-Options"] == "DENY"
    assert (await ask(routes(FakeConsole()), "GET", "/api/queues"))[1] == {"execution": "leader", "queues": {}}


@async_test
async def test_run_filters_come_from_the_query_string_and_bad_ones_are_400() -> None:
    console = FakeConsole()
    r = routes(console)
    assert (await ask(r, "GET", "/api/runs", query="status=failed&job=a%2Fb&limit=5"))[0] == 200
    assert console.calls[-1] == ("runs", "a/b", RunStatus.FAILED, 5)
    status, body = await ask(r, "GET", "/api/runs", query="status=broken")
    assert status == 400 and "is not a run status; use one of PENDING, RUNNING" in body["error"]
    assert (await ask(r, "GET", "/api/runs", query="limit=0"))[0] == 400
    assert (await ask(r, "GET", "/api/runs", query="limit=9999"))[0] == 400
    assert (await ask(r, "GET", "/", query="status=nope"))[0] == 400
    assert parse_filters("") == parse_filters("status=&job=&limit=")


@async_test
async def test_unknown_paths_are_404_and_wrong_methods_405_with_allow() -> None:
    r = routes()
    assert (await ask(r, "GET", "/api/nothing"))[0] == 404
    assert (await ask(r, "POST", "/api/jobs/etl/explode", headers=AUTH))[0] == 404
    assert (await ask(r, "POST", "/api/runs/abc/cancel", headers=AUTH))[0] == 404
    response = await r.handle("GET", "/api/jobs/etl/pause")
    assert response.status == 405 and ("Allow", "POST") in response.headers
    response = await r.handle("POST", "/api/jobs")
    assert response.status == 405 and ("Allow", "GET, HEAD") in response.headers
    assert (await OpsRoutes(FakeOpsState(), MetricsRegistry()).handle("GET", "/")).status == 404  # no console


@async_test
async def test_actions_need_the_bearer_token_and_reach_the_console_with_who_asked() -> None:
    console = FakeConsole()
    r = routes(console)
    status, body = await ask(r, "POST", "/api/jobs/etl/pause")
    assert status == 401 and "Authorization: Bearer <http_admin_token>" in body["error"]
    status, body = await ask(r, "POST", "/api/jobs/etl/pause", headers=(("authorization", "Bearer nope"),))
    assert status == 401 and "not the server's http_admin_token" in body["error"]
    assert console.calls == []
    assert await ask(r, "POST", "/api/jobs/a/b/pause", headers=AUTH, client="10.0.0.9") == (
        200, {"ok": True, "outcome": "done", "message": "a/b: done", "run_id": None})
    assert console.calls == [("pause", "a/b", "http 10.0.0.9")]  # a job id may hold '/'
    assert (await ask(r, "POST", "/api/jobs/etl/run", headers=AUTH, body=b'{"by": "alice"}'))[0] == 202
    assert console.calls[-1] == ("run", "etl", "alice via http 127.0.0.1")
    assert (await ask(r, "POST", "/api/runs/7/cancel", headers=AUTH))[0] == 409
    assert (await ask(r, "POST", "/api/runs/7/rerun", headers=AUTH))[0] == 404
    assert console.calls[-2:] == [("cancel", 7, "http 127.0.0.1"), ("rerun", 7, "http 127.0.0.1")]


@pytest.mark.parametrize("body", [b"not json", b"[1]", b'{"by": 3}', b'{"who": "x"}', b'{"by": "\\u0000"}'])
@async_test
async def test_an_action_body_must_be_empty_or_name_who_asks(body: bytes) -> None:
    console = FakeConsole()
    status, answer = await ask(routes(console), "POST", "/api/jobs/etl/run", headers=AUTH, body=body)
    assert status == 400 and ("body" in answer["error"] or '"by"' in answer["error"])
    assert console.calls == []


@async_test
async def test_without_a_token_actions_are_403_and_only_loopback_clients_may_read() -> None:
    console = FakeConsole(token=None)
    r = routes(console)
    status, body = await ask(r, "POST", "/api/jobs/etl/pause", headers=AUTH)
    assert status == 403 and "http_admin_token is not set" in body["error"] and "read-only" in body["error"]
    assert console.calls == []
    for client in ("127.0.0.1", "127.8.0.1", "::1", "::ffff:127.0.0.1"):
        assert (await ask(r, "GET", "/api/jobs", client=client))[0] == 200, client
    for client in ("10.1.2.3", "::ffff:10.0.0.1", "fe80::1%eth0", None):
        status, body = await ask(r, "GET", "/", client=client)
        assert status == 403 and "loopback clients only while http_admin_token is unset" in body["error"]
    assert (await ask(routes(FakeConsole()), "GET", "/", client="10.1.2.3"))[0] == 200  # with a token: anyone reads


@async_test
async def test_without_a_token_a_loopback_client_must_also_name_a_loopback_host() -> None:
    r = routes(FakeConsole(token=None))
    for host in ("127.0.0.1:8000", "localhost", "LOCALHOST:80", "app.localhost", "[::1]:8000", "[::1]"):
        assert (await ask(r, "GET", "/", headers=(("host", host),)))[0] == 200, host
    for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example", "10.0.0.1:8000"):
        status, body = await ask(r, "GET", "/api/jobs", headers=(("host", host),))
        assert status == 403 and "only requests for a loopback host" in body["error"], host
    assert (await ask(routes(FakeConsole()), "GET", "/", headers=(("host", "evil.example"),)))[0] == 200


def test_loopback_means_127_0_0_0_8_and_1_also_mapped() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("::ffff:127.0.0.2")
    assert not is_loopback("0.0.0.0") and not is_loopback("localhost") and not is_loopback("") and not is_loopback(None)


@async_test
async def test_every_action_is_logged_with_the_client_and_whether_a_token_came(caplog: pytest.LogCaptureFixture) -> None:
    r = routes()
    with caplog.at_level(logging.INFO, logger="piko.http"):
        await ask(r, "POST", "/api/jobs/etl/pause", client="10.0.0.5")
        await ask(r, "POST", "/api/jobs/etl/pause", headers=(("authorization", "Bearer wrong"),), client="10.0.0.6")
        await ask(r, "POST", "/api/jobs/etl/resume", headers=AUTH, client="10.0.0.7")
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "piko.http"]
    assert any("pause job etl refused (10.0.0.5 (no token))" in line for line in lines)
    assert any("pause job etl refused (10.0.0.6 (a wrong token))" in line for line in lines)
    assert any("resume job etl (asked by 10.0.0.7 (admin token)): done: etl: done" in line for line in lines)
    assert TOKEN not in caplog.text and "wrong" not in caplog.text.replace("a wrong token", "")


@async_test
async def test_a_slow_store_answers_503_within_the_deadline_instead_of_hanging() -> None:
    r = routes(FakeConsole(delay_s=5.0), timeout_s=0.1)
    status, body = await ask(r, "GET", "/api/jobs")
    assert status == 503 and "did not answer within 0.1 s" in body["error"]
    status, body = await ask(r, "POST", "/api/jobs/etl/pause", headers=AUTH)
    assert status == 503 and "may or may not have been applied" in body["error"]


@async_test
async def test_the_built_in_server_passes_the_peer_address_and_the_body() -> None:
    console = FakeConsole()
    body = b'{"by": "bo"}'
    async with serve(routes(console)) as srv:
        client = await RawClient.connect(srv.port)
        await client.send(b"POST /api/jobs/etl/run HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
                          + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        reply = await client.reply()
        assert reply.status == 202 and json.loads(reply.body)["outcome"] == "started"
        await client.close()
        assert (await fetch(srv.port, "/api/jobs")).status == 200
    assert console.calls == [("run", "etl", "bo via http 127.0.0.1")]
