"""The SQLite batch writes also work on SQLite builds without RETURNING or UPDATE ... FROM."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from piko.core.types import RunClaim, RunFinish, RunStatus
from piko.store.sqlite import SqliteStore
from piko.store.sqlite import runs as sqlite_batch

UTC = timezone.utc
T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def claim(job_id: str, **kw) -> RunClaim:
    return RunClaim(job_id, T0, kw.pop("status", RunStatus.RUNNING), T0, "inst", **kw)


@pytest.mark.parametrize("has_returning", [True, False])
async def test_claims_and_finishes_in_batches_on_old_and_new_sqlite(tmp_path, monkeypatch, has_returning) -> None:
    monkeypatch.setattr(sqlite_batch, "_HAS_RETURNING", has_returning)
    store = SqliteStore(str(tmp_path / "b.db"))
    await store.open()
    try:
        assert await store.claim_run(claim("taken")) is not None
        ids = await store.claim_runs([claim("a"), claim("taken"), claim("a"), claim("b", take_lock=False)])
        assert ids[1] is None and ids[2] is None and ids[0] is not None and ids[3] is not None
        refused = await store.finish_runs([RunFinish(ids[0], RunStatus.SUCCESS, T0 + timedelta(seconds=2)),
                                           RunFinish(ids[3], RunStatus.FAILED, T0 + timedelta(seconds=1), "E", "m",
                                                     0.5, "Traceback ...\nE: m\n"),
                                           RunFinish(ids[0], RunStatus.FAILED, T0)])  # a second end: refused
        assert refused == [ids[0]]
        runs = {r.run_id: r for r in await store.recent_runs()}
        assert (runs[ids[0]].status, runs[ids[0]].duration_s) == (RunStatus.SUCCESS, pytest.approx(2.0, abs=1e-3))
        assert (runs[ids[3]].status, runs[ids[3]].duration_s, runs[ids[3]].error_type) == (RunStatus.FAILED, 0.5, "E")
        assert (runs[ids[3]].error_traceback, runs[ids[0]].error_traceback) == ("Traceback ...\nE: m\n", None)
    finally:
        await store.close()
