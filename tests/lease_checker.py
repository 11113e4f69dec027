"""A lease stress checker: five contender processes hammer one lease, then the logs are judged.

Each contender (`python -m tests.lease_checker CONFIG_JSON`) has its own store connection and
uses piko's real `lease_acquire` / `lease_release` and a fenced `claim_run`. It retries every
0-4 ms while not leader; as leader it makes a fenced write, then renews after ttl/3, or steps
down, or stalls past its lease and tries a "zombie" write with its old token. It logs every
grant with CLOCK_MONOTONIC times (shared by all processes on the host) and the DB's expires_at
to a JSON-lines file. In the database, a trigger copies every accepted write into
`lease_audit` together with the lease row (holder, token) it was accepted under.

`check()` then requires: a contender's tokens never go back; one holder per token; a term
starts (by DB time: its first expires_at - ttl) no earlier than the previous term's last
expires_at, unless that term was released; every accepted write carries the lease's current
holder and token; no zombie write is accepted; and client belief intervals
[t_recv, t_send + ttl - margin] (cut at a step-down) of different terms never overlap. The broken variant (`broken=True`) decides the lease with client-sent timestamps and
skews contender 0's clock, which must make the same checks fail.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from piko.core.types import Fence, LeaseGrant, RunClaim, RunStatus  # noqa: E402
from piko.errors import LeaseLost, StoreError  # noqa: E402
from piko.leader import safety_margin_s  # noqa: E402

LEASE = "stress"
UTC = timezone.utc
EPOCH = datetime(1970, 1, 1)

# Every accepted write is copied, in its own transaction, with the lease row it saw. (No trigger
# on piko_lease: on MariaDB any INSERT inside an UPDATE trigger zeroes the insert id that the
# lease statement returns its token through, LAST_INSERT_ID(token).)
AUDIT_DDL = {
    "mysql": [
        "CREATE TABLE IF NOT EXISTS lease_audit (holder VARCHAR(128) NOT NULL, token BIGINT NULL, "
        "at DATETIME(6) NOT NULL, lease_holder VARCHAR(128) NULL, lease_token BIGINT NULL) ENGINE=InnoDB",
        "CREATE TRIGGER lease_audit_write AFTER INSERT ON job_run FOR EACH ROW "
        "INSERT INTO lease_audit (holder, token, at, lease_holder, lease_token) "
        "SELECT NEW.instance_id, NEW.fence_token, UTC_TIMESTAMP(6), holder, token FROM piko_lease "
        "WHERE name = 'stress'",
        "INSERT INTO piko_lease (name) VALUES ('stress') ON DUPLICATE KEY UPDATE name = name",
    ],
    "sqlite": [
        "CREATE TABLE IF NOT EXISTS lease_audit (holder TEXT NOT NULL, token INTEGER NULL, at INTEGER NOT NULL, "
        "lease_holder TEXT NULL, lease_token INTEGER NULL)",
        "CREATE TRIGGER lease_audit_write AFTER INSERT ON job_run FOR EACH ROW BEGIN "
        "INSERT INTO lease_audit (holder, token, at, lease_holder, lease_token) "
        "SELECT NEW.instance_id, NEW.fence_token, {now}, holder, token FROM piko_lease WHERE name = 'stress'; END",
        "INSERT OR IGNORE INTO piko_lease (name) VALUES ('stress')",
    ],
}
SQLITE_NOW_MS = ("(CAST(strftime('%s','now') AS INTEGER)*1000 + "
                 "CAST(substr(strftime('%f','now'),4) AS INTEGER))")


@dataclass
class Config:
    dsn: str  # a SQLite file path or a mysql:// DSN
    index: int
    seconds: float
    ttl_s: float
    log_path: str
    start_at: float  # CLOCK_MONOTONIC time at which every contender begins
    seed: int = 0
    broken: bool = False
    skew_s: float = 0.0  # the broken variant's client clock offset
    p_stepdown: float = 0.1
    p_stall: float = 0.1


@dataclass
class Report:
    contenders: int = 0
    seconds: float = 0.0
    terms: int = 0
    holder_changes: int = 0
    tries: int = 0
    grants: int = 0
    stepdowns: int = 0
    stalls: int = 0
    zombie_rejected: int = 0
    writes_accepted: int = 0
    errors: int = 0
    belief_overlaps: int = 0
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def summary(self) -> str:
        data = {k: v for k, v in asdict(self).items() if k != "violations"}
        shown = "; ".join(self.violations[:5])
        return f"{data} violations={len(self.violations)}{': ' + shown if shown else ''}"


def dialect(dsn: str) -> str:
    return "mysql" if dsn.startswith("mysql") else "sqlite"


def _open_store(dsn: str) -> Any:
    if dialect(dsn) == "mysql":
        from piko.store.mysql import MysqlStore

        return MysqlStore(dsn, pool_size=1)
    from piko.store.sqlite import SqliteStore

    return SqliteStore(dsn)


def _mysql_connect(dsn: str) -> Any:
    import pymysql

    from piko.store.mysql.dialect import parse_dsn

    args = parse_dsn(dsn)
    return pymysql.connect(host=args["host"], port=args["port"], user=args["user"], password=args["password"],
                           database=args["db"], autocommit=True, init_command="SET time_zone = '+00:00'")


# -- the broken lease: decided with client-sent timestamps (the negative control) --------------
class ClientClockLease:
    """Same statements as piko's lease, but "now" is this process's wall clock plus `skew_s`."""

    def __init__(self, dsn: str, skew_s: float) -> None:
        self.is_mysql = dialect(dsn) == "mysql"
        self.skew = timedelta(seconds=skew_s)
        if self.is_mysql:
            self.conn = _mysql_connect(dsn)
        else:
            self.conn = sqlite3.connect(dsn, isolation_level=None, timeout=10)

    def _now(self) -> Any:
        now = datetime.now(UTC).replace(tzinfo=None) + self.skew
        return now if self.is_mysql else int((now - EPOCH).total_seconds() * 1000)

    async def lease_acquire(self, name: str, holder: str, ttl: timedelta) -> LeaseGrant | None:
        now = self._now()
        args = {"name": name, "me": holder, "now": now,
                "exp": now + ttl if self.is_mysql else now + int(ttl.total_seconds() * 1000)}
        mine = "holder = %(me)s AND expires_at > %(now)s"
        statement = (f"UPDATE piko_lease SET token = CASE WHEN {mine} THEN token ELSE token + 1 END, "
                     f"holder = %(me)s, renewed_at = %(now)s, expires_at = %(exp)s, renewals = renewals + 1 "
                     "WHERE name = %(name)s AND (holder = %(me)s OR holder = '' OR expires_at <= %(now)s)")
        if self.is_mysql:
            with self.conn.cursor() as cur:
                cur.execute("BEGIN")
                cur.execute(statement, args)
                if cur.rowcount != 1:
                    cur.execute("COMMIT")
                    return None
                cur.execute("SELECT token, expires_at FROM piko_lease WHERE name = %s", (name,))
                token, expires_at = cur.fetchone()
                cur.execute("COMMIT")
            return LeaseGrant(int(token), False, expires_at.replace(tzinfo=UTC))
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            changed = self.conn.execute(statement.replace("%(", ":").replace(")s", ""), args).rowcount
            token, expires_ms = self.conn.execute("SELECT token, expires_at FROM piko_lease WHERE name = ?",
                                                  (name,)).fetchone()
        finally:
            self.conn.execute("COMMIT")
        if changed != 1:
            return None
        return LeaseGrant(int(token), False, datetime.fromtimestamp(expires_ms / 1000.0, UTC))

    async def lease_release(self, name: str, holder: str, token: int) -> None:
        args = {"name": name, "me": holder, "token": token, "now": self._now()}
        least = "LEAST" if self.is_mysql else "MIN"
        statement = (f"UPDATE piko_lease SET holder = '', expires_at = {least}(expires_at, %(now)s), "
                     "renewals = renewals + 1 WHERE name = %(name)s AND holder = %(me)s AND token = %(token)s")
        if self.is_mysql:
            with self.conn.cursor() as cur:
                cur.execute(statement, args)
        else:
            self.conn.execute(statement.replace("%(", ":").replace(")s", ""), args)


# -- one contender (runs in its own process) -------------------------------------------------
async def contend(cfg: Config) -> list[dict[str, Any]]:
    rng = random.Random(cfg.seed * 1000 + cfg.index)
    me = f"contender{cfg.index}"
    ttl = timedelta(seconds=cfg.ttl_s)
    store = _open_store(cfg.dsn)
    await store.open()
    lease: Any = ClientClockLease(cfg.dsn, cfg.skew_s) if cfg.broken else store
    events: list[dict[str, Any]] = []
    writes = 0

    async def fenced_write(token: int) -> bool | None:
        nonlocal writes
        writes += 1
        claim = RunClaim(f"stress{cfg.index}", datetime(2001, 1, 1, tzinfo=UTC) + timedelta(seconds=writes),
                         RunStatus.RUNNING, datetime.now(UTC), me, fence=Fence(LEASE, me, token))
        try:
            return await store.claim_run(claim) is not None
        except LeaseLost:
            return False
        except StoreError:
            return None

    await asyncio.sleep(max(0.0, cfg.start_at - time.monotonic()))
    end = cfg.start_at + cfg.seconds
    try:
        while time.monotonic() < end:
            t_send = time.monotonic()
            try:
                grant = await lease.lease_acquire(LEASE, me, ttl)
            except StoreError as exc:
                events.append({"ev": "error", "what": str(exc)[:200]})
                grant = None
            t_recv = time.monotonic()
            events.append({"ev": "try"})
            if grant is None:
                await asyncio.sleep(rng.uniform(0.0, 0.004))
                continue
            events.append({"ev": "grant", "token": grant.token, "t_send": t_send, "t_recv": t_recv,
                           "expires": grant.expires_at.timestamp()})
            events.append({"ev": "write", "token": grant.token, "ok": await fenced_write(grant.token)})
            dice = rng.random()
            if dice < cfg.p_stepdown:
                events.append({"ev": "release", "token": grant.token, "t": time.monotonic()})
                await lease.lease_release(LEASE, me, grant.token)
                await asyncio.sleep(rng.uniform(0.0, cfg.ttl_s))
            elif dice < cfg.p_stepdown + cfg.p_stall:  # a GC pause or SIGSTOP past the lease
                await asyncio.sleep(cfg.ttl_s * rng.uniform(1.2, 2.0))
                events.append({"ev": "zombie", "token": grant.token, "ok": await fenced_write(grant.token)})
            else:
                await asyncio.sleep(cfg.ttl_s / 3)
    finally:
        await store.close()
    return events


# -- running five of them -------------------------------------------------------------------
def prepare(dsn: str) -> None:
    """Migrate the store once, then add the audit table, its trigger and the lease row."""
    store = _open_store(dsn)

    async def migrate() -> None:
        await store.open()
        await store.close()
    asyncio.run(migrate())
    if dialect(dsn) == "mysql":
        conn = _mysql_connect(dsn)
        try:
            with conn.cursor() as cur:
                for statement in AUDIT_DDL["mysql"]:
                    cur.execute(statement)
        finally:
            conn.close()
        return
    conn = sqlite3.connect(dsn, isolation_level=None)
    try:
        for statement in AUDIT_DDL["sqlite"]:
            conn.execute(statement.format(now=SQLITE_NOW_MS))
    finally:
        conn.close()


def run_stress(dsn: str, workdir: Path, *, seconds: float, ttl_s: float = 0.25, contenders: int = 5,
               broken: bool = False, skew_s: float = 0.3, seed: int = 0) -> Report:
    """Prepare the store, run the contenders (killed if they overrun), return the checked report."""
    prepare(dsn)
    start_at = time.monotonic() + 1.5  # every contender has imported and connected by then
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs: list[subprocess.Popen[bytes]] = []
    # The skewed contender starts 0.3 s late, so there is always an honest holder for it to meet.
    configs = [Config(dsn, i, seconds, ttl_s, str(workdir / f"contender{i}.jsonl"),
                      start_at + (0.3 if broken and i == 0 else 0.0), seed=seed, broken=broken,
                      skew_s=skew_s if (broken and i == 0) else 0.0) for i in range(contenders)]
    try:
        for cfg in configs:
            with open(workdir / f"contender{cfg.index}.err", "wb") as err:
                procs.append(subprocess.Popen([sys.executable, "-m", "tests.lease_checker", json.dumps(asdict(cfg))],
                                              cwd=ROOT, env=env, stderr=err))
        for proc in procs:
            proc.wait(timeout=seconds + 30)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
    failed = [i for i, p in enumerate(procs) if p.returncode != 0]
    if failed:
        raise RuntimeError(f"contender(s) {failed} failed: "
                           f"{(workdir / f'contender{failed[0]}.err').read_text()[-2000:]}")
    logs = [[json.loads(line) for line in Path(cfg.log_path).read_text().splitlines()] for cfg in configs]
    report = check(logs, read_audit(dsn), ttl_s)
    report.seconds = seconds
    return report


def read_audit(dsn: str) -> list[tuple[str, int | None, float, str | None, int | None]]:
    """(holder, token, at, lease holder, lease token) of every accepted write; `at` in Unix seconds."""
    statement = "SELECT holder, token, at, lease_holder, lease_token FROM lease_audit"
    if dialect(dsn) == "mysql":
        conn = _mysql_connect(dsn)
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
                return [(h, t, (a - EPOCH).total_seconds(), lh, lt) for h, t, a, lh, lt in cur.fetchall()]
        finally:
            conn.close()
    conn = sqlite3.connect(dsn)
    try:
        return [(h, t, a / 1000.0, lh, lt) for h, t, a, lh, lt in conn.execute(statement).fetchall()]
    finally:
        conn.close()


# -- judging ----------------------------------------------------------------------------------
def check(logs: list[list[dict[str, Any]]], audit: list[tuple[str, int | None, float, str | None, int | None]],
          ttl_s: float) -> Report:
    report = Report(contenders=len(logs))
    _check_terms(logs, ttl_s, report)
    _check_beliefs(logs, ttl_s, report)
    for holder, token, _, lease_holder, lease_token in audit:
        if (holder, token) != (lease_holder, lease_token):
            report.violations.append(f"write by {holder} with token {token} accepted while the lease was "
                                     f"{lease_holder or 'released'} (token {lease_token})")
    for events in logs:
        for e in events:
            kind = e["ev"]
            report.tries += kind == "try"
            report.grants += kind == "grant"
            report.stepdowns += kind == "release"
            report.errors += kind == "error"
            report.writes_accepted += kind == "write" and e["ok"] is True
            if kind == "zombie":
                report.stalls += 1
                report.zombie_rejected += e["ok"] is False
                if e["ok"] is True:
                    report.violations.append(f"a zombie write with token {e['token']} was accepted after a stall")
    return report


@dataclass
class _Term:
    token: int
    holders: set[int]
    starts_at: float  # DB time: acquired_at = expires_at of the first grant - ttl
    ends_at: float  # DB time: the last grant's expires_at
    is_released: bool


def _check_terms(logs: list[list[dict[str, Any]]], ttl_s: float, report: Report) -> None:
    """By DB time: one holder per token, and each term starts after the previous one expired
    (a released term ends at its release, which the database serialised before the takeover)."""
    terms: dict[int, _Term] = {}
    for index, events in enumerate(logs):
        tokens = [e["token"] for e in events if e["ev"] == "grant"]
        if tokens != sorted(tokens):
            report.violations.append(f"contender {index} saw its token go back: {tokens}")
        for e in events:
            if e["ev"] == "grant":
                term = terms.setdefault(e["token"], _Term(e["token"], set(), e["expires"] - ttl_s,
                                                          e["expires"], False))
                term.holders.add(index)
                term.starts_at = min(term.starts_at, e["expires"] - ttl_s)
                term.ends_at = max(term.ends_at, e["expires"])
            elif e["ev"] == "release":
                terms[e["token"]].is_released = True
    ordered = [terms[t] for t in sorted(terms)]
    report.terms = len(ordered)
    for before, after in itertools.pairwise(ordered):
        if len(after.holders) > 1:
            report.violations.append(f"term {after.token} had {len(after.holders)} holders: {after.holders}")
        report.holder_changes += before.holders != after.holders
        if not before.is_released and after.starts_at < before.ends_at - 1e-6:
            report.violations.append(f"term {after.token} began {1000 * (before.ends_at - after.starts_at):.3f} ms "
                                     f"(DB time) before term {before.token} expired")


def _check_beliefs(logs: list[list[dict[str, Any]]], ttl_s: float, report: Report) -> None:
    """No two terms may both be believed current at one CLOCK_MONOTONIC instant."""
    margin = safety_margin_s(ttl_s)
    intervals: list[tuple[float, float, int, int]] = []  # start, end, token, contender
    for index, events in enumerate(logs):
        for i, e in enumerate(events):
            if e["ev"] != "grant":
                continue
            end = e["t_send"] + ttl_s - margin
            release = next((x for x in events[i + 1:] if x["ev"] == "release"), None)
            if release is not None:  # a step-down ends every earlier belief of this contender
                end = min(end, release["t"])
            if end > e["t_recv"]:
                intervals.append((e["t_recv"], end, e["token"], index))
    intervals.sort()
    reach_end, reach_token, reach_who = float("-inf"), None, -1
    for start, end, token, who in intervals:
        if start < reach_end and token != reach_token:
            report.belief_overlaps += 1
            report.violations.append(f"contender {who} believed term {token} from {start:.6f}, while contender "
                                     f"{reach_who} believed term {reach_token} until {reach_end:.6f} "
                                     f"({1000 * (reach_end - start):.3f} ms overlap)")
        if end > reach_end:
            reach_end, reach_token, reach_who = end, token, who


def main(argv: list[str]) -> int:
    cfg = Config(**json.loads(argv[1]))
    events = asyncio.run(contend(cfg))
    Path(cfg.log_path).write_text("".join(json.dumps(e) + "\n" for e in events))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
