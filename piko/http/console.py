"""The status page (GET /) and the JSON API under /api/ that backs it, over an OpsConsole.

Who may do what: while `http_admin_token` is unset the page and the API are read-only and
answer only loopback clients that name a loopback host (403 for others, saying why; the Host
check keeps a site whose name rebinds to 127.0.0.1 from reading them); once it is set they
answer every client, and each action (a POST) needs `Authorization: Bearer <http_admin_token>`
(401 without it or with another one; 403 for every action while no token is set). Every action
asked for is logged on `piko.http` with the client's address and whether a token came, and
the client's address is what the app records as who asked (a cancel's cancelled_by). Each
request's calls into the app share one deadline (`timeout_s`, 2 s like /readyz): a hung store
answers 503, never a hung request. At most MAX_CALLS requests ask the app at once.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import parse_qs

from piko.core.types import ActionOutcome, ActionResult, InstanceInfo, JobStatus, RunRecord, RunStatus
from piko.errors import PikoError
from piko.http.page import PageView, render_page
from piko.http.routes import Call, Response, json_response
from piko.protocols import OpsConsole

log = logging.getLogger("piko.http")
T = TypeVar("T")
MAX_CALLS = 4  # requests asking the app at once; more wait (within their deadline)
MAX_LIMIT = 500
DEFAULT_LIMIT = 50
FAILURE_ROWS = 20
SLICE = 500  # jobs encoded per turn of the loop
JOB_ACTIONS = ("run", "pause", "resume")
RUN_ACTIONS = ("cancel", "rerun")
READS = ("/api/jobs", "/api/runs", "/api/failures", "/api/instances", "/api/queues")
STATUS_OF = {ActionOutcome.DONE: 200, ActionOutcome.STARTED: 202, ActionOutcome.NOT_FOUND: 404,
             ActionOutcome.CONFLICT: 409, ActionOutcome.UNAVAILABLE: 503}
HTML = "text/html; charset=utf-8"
_GET = ("GET", "HEAD")


class BadQuery(ValueError):
    """A query string or body that names no valid filter; answered 400 with this message."""


@dataclass(frozen=True)
class Filters:
    status: RunStatus | None = None
    job_id: str | None = None
    limit: int = DEFAULT_LIMIT


class ConsoleRoutes:
    def __init__(self, console: OpsConsole, *, timeout_s: float = 2.0) -> None:
        self.console = console
        self.timeout_s = timeout_s
        self._slots: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None

    def serves(self, path: str) -> bool:
        return path == "/" or path.startswith("/api/")

    async def handle(self, call: Call) -> Response:
        action = _action_of(call.path)
        if action is None and call.path != "/" and call.path not in READS:
            return _error(404, f"no endpoint at {call.path[:200]}")
        allowed = ("POST",) if action is not None else _GET
        if call.method not in allowed:
            return _error(405, f"{call.path[:200]} answers {' and '.join(allowed)}",
                          (("Allow", ", ".join(allowed)),))
        refused = self._refuse_reader(call) if action is None else None  # an action is refused (and logged) in _act
        if refused is not None:
            return refused
        try:
            if action is not None:
                return await self._act(call, *action)
            return await self._read(call)
        except BadQuery as exc:
            return _error(400, str(exc))
        except asyncio.TimeoutError:
            return _error(503, f"the app did not answer within {self.timeout_s:g} s (is the store slow or away?)"
                          + (": the action may or may not have been applied" if action else ""))
        except (PikoError, OSError) as exc:
            return _error(503, f"{type(exc).__name__}: {exc}")

    # -- who may ---------------------------------------------------------------------------------
    def _refuse_reader(self, call: Call) -> Response | None:
        if self.console.admin_token() is not None:
            return None
        if not is_loopback(call.client):
            return _error(403, f"the status page and /api/ answer loopback clients only while http_admin_token is "
                               f"unset, and this request came from {call.client or 'an unknown address'}: set "
                               f"http_admin_token (PIKO_HTTP_ADMIN_TOKEN) to serve them to other clients")
        host = call.header("host")
        if host is not None and not is_loopback_host(host):  # a name rebound to 127.0.0.1 by another site
            return _error(403, f"while http_admin_token is unset the status page answers only requests for a "
                               f"loopback host (localhost, 127.0.0.1, [::1]), not {host[:100]!r}")
        return None

    def _refuse_action(self, call: Call) -> Response | None:
        token = self.console.admin_token()
        if token is None:
            return _error(403, "actions are disabled: http_admin_token is not set on the server "
                               "(PIKO_HTTP_ADMIN_TOKEN), so the status page is read-only")
        challenge = (("WWW-Authenticate", 'Bearer realm="piko"'),)
        scheme, _, given = (call.header("authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return _error(401, "this action needs the header 'Authorization: Bearer <http_admin_token>'", challenge)
        if not hmac.compare_digest(given.strip().encode(), token.encode()):
            return _error(401, "the bearer token is not the server's http_admin_token",
                          (("WWW-Authenticate", 'Bearer realm="piko", error="invalid_token"'),))
        return None

    # -- actions ---------------------------------------------------------------------------------
    async def _act(self, call: Call, kind: str, target: str, verb: str) -> Response:
        who = f"{call.client or 'unknown client'} ({_token_note(call, self.console.admin_token())})"
        refused = self._refuse_action(call)
        if refused is not None:
            log.warning("ops action %s %s %s refused (%s): %s", verb, kind, target, who,
                        json.loads(refused.body)["error"])
            return refused
        log.info("ops action %s %s %s asked by %s", verb, kind, target, who)
        by = _asked_by(call)
        console = self.console
        ask: Callable[[], Awaitable[ActionResult]]
        if kind == "job":
            ask = {"run": lambda: console.run_now(target, by),
                   "pause": lambda: console.set_paused(target, True, by),
                   "resume": lambda: console.set_paused(target, False, by)}[verb]
        else:
            ask = {"cancel": lambda: console.cancel_run(int(target), by),
                   "rerun": lambda: console.rerun(int(target), by)}[verb]
        try:
            result = await self._ask(ask)
        except Exception as exc:
            log.warning("ops action %s %s %s (asked by %s) failed: %s: %s", verb, kind, target, who,
                        type(exc).__name__, exc)
            raise
        log.info("ops action %s %s %s (asked by %s): %s: %s", verb, kind, target, who, result.outcome.value,
                 result.message)
        payload = {"ok": result.outcome in (ActionOutcome.DONE, ActionOutcome.STARTED),
                   "outcome": result.outcome.value, "message": result.message, "run_id": result.run_id}
        return _json(STATUS_OF[result.outcome], payload)

    # -- reads -----------------------------------------------------------------------------------
    async def _read(self, call: Call) -> Response:
        filters = parse_filters(call.query)
        console = self.console
        if call.path == "/":
            return await self._page(filters)
        if call.path == "/api/jobs":
            return await _jobs_json(await self._ask(console.jobs))
        if call.path == "/api/runs":
            runs = await self._ask(lambda: console.runs(filters.job_id, filters.status, filters.limit))
            return _json(200, {"runs": [run_json(r) for r in runs]})
        if call.path == "/api/failures":
            runs = await self._ask(lambda: console.failures(filters.limit))
            return _json(200, {"runs": [run_json(r) for r in runs]})
        if call.path == "/api/instances":
            now = console.now()
            found = await self._ask(console.instances)
            return _json(200, {"instances": [instance_json(i, now) for i in found]})
        depths = await self._ask(console.queue_depths) if console.is_cluster() else {}
        return _json(200, {"execution": "cluster" if console.is_cluster() else "leader", "queues": depths})

    async def _page(self, filters: Filters) -> Response:
        console = self.console

        async def gather() -> PageView:
            is_cluster = console.is_cluster()
            return PageView(
                jobs=await console.jobs(), runs=await console.runs(filters.job_id, filters.status, filters.limit),
                failures=await console.failures(FAILURE_ROWS), instances=await console.instances(),
                queues=await console.queue_depths() if is_cluster else None, now=console.now(),
                role=console.role(), is_read_only=console.admin_token() is None, status_filter=filters.status,
                job_filter=filters.job_id, limit=filters.limit)

        view = await self._ask(gather)
        nonce = secrets.token_urlsafe(18)
        policy = (f"default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; connect-src 'self'; "
                  "img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
        headers = (("Content-Type", HTML), ("Cache-Control", "no-store"), ("Content-Security-Policy", policy),
                   ("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer"),
                   ("X-Frame-Options", "DENY"))
        return Response(200, headers, (render_page(view, nonce).encode("utf-8", "backslashreplace"),))

    async def _ask(self, ask: Callable[[], Awaitable[T]]) -> T:
        """One request's calls into the app: at most MAX_CALLS at once, all within timeout_s."""
        slots = self._semaphore()

        async def bounded() -> T:
            async with slots:
                return await ask()

        return await asyncio.wait_for(bounded(), self.timeout_s)

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots[0] is not loop:  # an app served again on a new loop
            self._slots = (loop, asyncio.Semaphore(MAX_CALLS))
        return self._slots[1]


# -- requests --------------------------------------------------------------------------------------
def _action_of(path: str) -> tuple[str, str, str] | None:
    """('job', job_id, verb) for /api/jobs/{id}/{verb}; ('run', run_id, verb) for /api/runs/{id}/{verb}."""
    for kind, prefix, verbs in (("job", "/api/jobs/", JOB_ACTIONS), ("run", "/api/runs/", RUN_ACTIONS)):
        if path.startswith(prefix):
            target, _, verb = path[len(prefix):].rpartition("/")  # a job id may hold '/'
            if verb in verbs and target and (kind == "job" or (target.isascii() and target.isdigit())):
                return kind, target, verb
    return None


def parse_filters(query: str) -> Filters:
    """?status=&job=&limit= (any may be empty or left out); BadQuery names what is allowed."""
    try:
        fields = parse_qs(query, max_num_fields=10, strict_parsing=False, errors="strict")
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadQuery(f"the query string is not valid: {exc}") from None
    value = {name: values[-1].strip() for name, values in fields.items()}
    status = None
    if value.get("status"):
        try:
            status = RunStatus(value["status"].upper())
        except ValueError:
            raise BadQuery(f"status {value['status'][:40]!r} is not a run status; use one of "
                           f"{', '.join(s.value for s in RunStatus)}") from None
    limit_text = value.get("limit") or str(DEFAULT_LIMIT)
    if not (limit_text.isascii() and limit_text.isdigit()) or not 1 <= int(limit_text) <= MAX_LIMIT:
        raise BadQuery(f"limit {limit_text[:20]!r} must be a whole number from 1 to {MAX_LIMIT}")
    return Filters(status, value.get("job") or None, int(limit_text))


def _asked_by(call: Call) -> str:
    """Who asked, as the app records it: the client's address, after a name the body gives ({"by": ...})."""
    where = f"http {call.client or 'unknown client'}"
    if not call.body.strip():
        return where
    try:
        body = json.loads(call.body)
    except (ValueError, UnicodeDecodeError):
        raise BadQuery("the request body must be empty or a JSON object such as {\"by\": \"alice\"}") from None
    if not isinstance(body, dict) or set(body) - {"by"}:
        raise BadQuery("the request body may hold only {\"by\": \"<who asks>\"}")
    name = body.get("by")
    if name is None:
        return where
    if not isinstance(name, str) or not name.strip() or len(name) > 100 or not name.isprintable():
        raise BadQuery("\"by\" must be a name of 1 to 100 printable characters")
    return f"{name.strip()} via {where}"


def _token_note(call: Call, token: str | None) -> str:
    given = call.header("authorization")
    if not given:
        return "no token"
    if token is None:
        return "a token, but none is set here"
    scheme, _, value = given.partition(" ")
    ok = scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())
    return "admin token" if ok else "a wrong token"


def is_loopback(client: str | None) -> bool:
    if not client:
        return False
    try:
        address = ipaddress.ip_address(client.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


async def _jobs_json(jobs: list[JobStatus]) -> Response:
    """{"jobs": [...]} encoded SLICE jobs at a time, the loop getting a turn between slices, and
    kept in those pieces (10,000 jobs are about 2 MB)."""
    pieces = [b'{"jobs":[']
    for start in range(0, len(jobs), SLICE):
        text = ",".join(json.dumps(job_json(j), separators=(",", ":")) for j in jobs[start:start + SLICE])
        pieces.append(("," if start else "").encode() + text.encode())
        await asyncio.sleep(0)
    pieces.append(b"]}\n")
    return Response(200, (("Content-Type", "application/json"), ("Cache-Control", "no-store"),
                          ("X-Content-Type-Options", "nosniff")), tuple(pieces))


def _json(status: int, payload: Mapping[str, object], headers: tuple[tuple[str, str], ...] = ()) -> Response:
    """json_response, never sniffed as HTML by a browser (it carries job ids and error messages)."""
    response = json_response(status, payload)
    return Response(status, (*response.headers, ("X-Content-Type-Options", "nosniff"), *headers), response.chunks)


def is_loopback_host(host: str) -> bool:
    """A Host header naming this machine: localhost (or *.localhost) or a loopback address, any port."""
    name = host.strip().lower()
    if name.startswith("["):
        name = name[1:].partition("]")[0]
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    return name == "localhost" or name.endswith(".localhost") or is_loopback(name)


def _error(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return _json(status, {"error": message}, headers)


# -- JSON --------------------------------------------------------------------------------------------
def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def run_json(r: RunRecord) -> dict[str, Any]:
    return {"run_id": r.run_id, "job_id": r.job_id, "scheduled_at": _iso(r.scheduled_at), "status": r.status.value,
            "kind": r.kind, "attempt": r.attempt, "instance_id": r.instance_id, "queue": r.queue,
            "started_at": _iso(r.started_at), "finished_at": _iso(r.finished_at), "duration_s": r.duration_s,
            "error_type": r.error_type, "error_message": r.error_message, "data_start": _iso(r.data_start),
            "data_end": _iso(r.data_end), "cancel_requested": r.cancel_requested, "cancelled_by": r.cancelled_by}


def job_json(j: JobStatus) -> dict[str, Any]:
    return {"job_id": j.job_id, "schedule_type": j.schedule_type, "schedule_expr": j.schedule_expr,
            "timezone": j.timezone, "enabled": j.is_enabled, "next_fire_at": _iso(j.next_fire_at),
            "last_run": run_json(j.last_run) if j.last_run else None, "problem": j.problem,
            "registered": j.is_registered, "queue": j.queue}


def instance_json(i: InstanceInfo, now: datetime) -> Mapping[str, Any]:
    age = round((now - i.heartbeat_at).total_seconds(), 3) if i.heartbeat_at else None
    return {"instance_id": i.instance_id, "host": i.host, "pid": i.pid, "role": i.role, "queues": list(i.queues),
            "running": i.running, "capacity": i.capacity, "started_at": _iso(i.started_at),
            "heartbeat_at": _iso(i.heartbeat_at), "heartbeat_age_s": age}
