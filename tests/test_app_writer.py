"""The writer as jobs use it through the app (seed examples 10 and 11)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from piko import PikoApp
from piko.persistence.intent import WriteIntent
from piko.persistence.sink_base import ResultSink, TypedSink, on
from piko.settings import Settings


class ListSink(ResultSink):
    def __init__(self) -> None:
        super().__init__(name="mem")
        self.items: list[WriteIntent] = []

    async def write_batch(self, batch):
        self.items.extend(batch)


@dataclass
class User:
    id: int


@dataclass
class Order:
    id: int


class Typed(TypedSink):
    def __init__(self) -> None:
        super().__init__(name="typed")
        self.users: list[User] = []
        self.orders: list[Order] = []

    @on(User)
    async def write_users(self, users):
        self.users.extend(users)

    @on(Order)
    async def write_orders(self, orders):
        self.orders.extend(orders)


def _settings(tmp_path) -> Settings:
    return Settings(db_path=str(tmp_path / "p.db"), http_enabled=False, leader_enabled=False,
                    persist_spill_dir=str(tmp_path / "spill"))


def test_job_output_reaches_its_sink_and_flush_waits_for_the_runs_own_intents(tmp_path):
    sink, typed = ListSink(), Typed()

    async def scenario():
        s = _settings(tmp_path)
        app = PikoApp("w", settings=s)
        app.writer.register_sink(sink)  # at import time, before any loop runs, as in the seed
        app.writer.register_sink(typed)

        @app.job("produce")
        async def produce(ctx, scheduled_time):
            for i in range(1000):
                await app.writer.enqueue(WriteIntent(sink="mem", key=str(i), payload={"i": i}, job_id=ctx["job_id"],
                                                     run_id=ctx["run_id"], scheduled_time=scheduled_time))
            await app.writer.enqueue(WriteIntent(sink="typed", key="u1", payload=User(1), job_id=ctx["job_id"],
                                                 run_id=ctx["run_id"], scheduled_time=scheduled_time))
            await app.writer.enqueue(WriteIntent(sink="typed", key="o1", payload=Order(2), job_id=ctx["job_id"],
                                                 run_id=ctx["run_id"], scheduled_time=scheduled_time))
            await app.writer.flush()
            assert len(sink.items) == 1000

        async with app:
            outcome = await app.run_job("produce")
        return outcome

    outcome = asyncio.run(scenario())
    assert outcome.status.value == "SUCCESS", outcome.error_message
    assert sorted(int(i.key) for i in sink.items) == list(range(1000))
    assert typed.users == [User(1)] and typed.orders == [Order(2)]


def test_a_sql_sink_on_the_apps_store_creates_its_table_and_upserts_job_output(tmp_path):
    import sqlite3

    from piko.persistence.sinks import SqlSink

    db = tmp_path / "p.db"

    async def scenario():
        s = Settings(db_path=str(db), http_enabled=False, leader_enabled=False,
                     persist_spill_dir=str(tmp_path / "spill"))
        app = PikoApp("w", settings=s)
        app.writer.register_sink(SqlSink("sql", "results", store=app.store))  # no table exists yet

        @app.job("produce")
        async def produce(ctx, scheduled_time):
            for i in range(5):
                await app.writer.enqueue(WriteIntent(sink="sql", key=str(i % 3), payload={"i": i},
                                                     job_id=ctx["job_id"], run_id=ctx["run_id"],
                                                     scheduled_time=scheduled_time))
            await app.writer.flush(timeout=10)

        async with app:
            outcome = await app.run_job("produce")
        return outcome

    outcome = asyncio.run(scenario())
    assert outcome.status.value == "SUCCESS", outcome.error_message
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT key, payload FROM results ORDER BY key").fetchall()
    assert rows == [("0", '{"i":3}'), ("1", '{"i":4}'), ("2", '{"i":2}')]
    assert list((tmp_path / "spill").glob("*.spill")) == []  # written, not spilled


def _writer_job(app: PikoApp):
    @app.job("emit")
    async def emit(ctx, scheduled_time):
        await app.writer.enqueue(WriteIntent(sink="mem", key=str(ctx["run_id"]), payload={"n": 1},
                                             job_id=ctx["job_id"], run_id=ctx["run_id"],
                                             scheduled_time=scheduled_time))
        await app.writer.flush()


def test_a_sink_registered_after_the_app_started_still_gets_its_intents(tmp_path):
    sink = ListSink()

    async def scenario():
        s = _settings(tmp_path)
        app = PikoApp("late", settings=s)
        _writer_job(app)
        async with app:
            app.writer.register_sink(sink)  # the writer did not exist when the app started
            outcome = await app.run_job("emit")
        assert not app.writer.is_running  # stopped with the app
        return outcome

    outcome = asyncio.run(scenario())
    assert outcome.status.value == "SUCCESS" and [i.key for i in sink.items] == [str(outcome.run_id)]


def test_a_manual_run_of_an_app_that_is_not_started_can_use_the_writer(tmp_path):
    sink = ListSink()

    async def scenario():
        s = _settings(tmp_path)
        app = PikoApp("manual", settings=s)
        app.writer.register_sink(sink)
        _writer_job(app)
        outcome = await app.run_job("emit")  # as `piko trigger` and job_runner do
        await app.stop()
        return outcome

    outcome = asyncio.run(scenario())
    assert outcome.status.value == "SUCCESS" and len(sink.items) == 1


def test_manual_runs_in_one_asyncio_run_after_another_lose_no_intent(tmp_path):
    """The writer a manual run started is stopped when its loop ends (asyncio.run cancels the
    app's keeper task): what it held is written or spilled, and the next loop starts it afresh."""
    sink = ListSink()
    app = PikoApp("manual", settings=_settings(tmp_path))
    app.writer.register_sink(sink)

    @app.job("emit_many")
    async def emit_many(ctx, scheduled_time):
        for n in range(50):  # no flush: the run ends with its intents still queued
            await app.writer.enqueue(WriteIntent(sink="mem", key=f"{ctx['run_id']}-{n}", payload=n,
                                                 job_id=ctx["job_id"], run_id=ctx["run_id"],
                                                 scheduled_time=scheduled_time))

    first = asyncio.run(app.run_job("emit_many"))
    assert not app.writer.is_running  # stopped with its loop, not left "running" on a dead loop

    async def second_and_flush():
        outcome = await app.run_job("emit_many")  # its start replays what the first loop spilled
        await app.writer.flush(timeout=5)
        await app.stop()
        return outcome

    second = asyncio.run(second_and_flush())
    assert (first.status.value, second.status.value) == ("SUCCESS", "SUCCESS")
    keys = sorted(i.key for i in sink.items)
    assert len(set(keys)) == 100 and {k.split("-")[0] for k in keys} == {str(first.run_id), str(second.run_id)}
