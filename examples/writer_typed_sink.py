"""Batched output: jobs hand results to app.writer, a TypedSink writes them in batches.

`await app.writer.enqueue(WriteIntent(...))` returns as soon as the writer holds the result
(it waits only while the sink's queue is full), not after each write. The writer collects
each sink's intents into batches (up to persist_batch_size, 500, or whatever arrived within
persist_batch_timeout_s, 0.2 s), retries a failing sink, and spills what it cannot deliver
to ./piko_spill, replayed later: nothing it accepted is dropped. A TypedSink hands each
payload type to its `@on(...)` method, which receives a batch's payloads of that type as
one list.

    python -m piko run examples/writer_typed_sink.py
    tail -f sensor_data/readings.csv sensor_data/alerts.csv    # in a second terminal
"""

from __future__ import annotations

import asyncio
import csv
import logging
import random
from dataclasses import astuple, dataclass
from pathlib import Path

from piko import PikoApp
from piko.persistence.intent import WriteIntent
from piko.persistence.sink_base import TypedSink, on

app = PikoApp(name="sensors")
log = logging.getLogger("sensors.sink")


@dataclass
class Reading:
    sensor: str
    at: str
    celsius: float


@dataclass
class Alert:
    sensor: str
    at: str
    message: str


class CsvFiles(TypedSink):
    """One CSV file per payload type; each batch is one append."""

    def __init__(self, folder: str) -> None:
        super().__init__(name="csv")
        self.folder = Path(folder)

    async def open(self) -> None:  # called by the writer before the first batch
        self.folder.mkdir(exist_ok=True)

    @on(Reading)
    async def readings(self, items: list[Reading]) -> None:
        await asyncio.to_thread(self._append, "readings.csv", items)

    @on(Alert)
    async def alerts(self, items: list[Alert]) -> None:
        await asyncio.to_thread(self._append, "alerts.csv", items)

    def _append(self, file_name: str, items: list) -> None:
        with (self.folder / file_name).open("a", newline="") as out:
            csv.writer(out).writerows(astuple(item) for item in items)
        log.info("%s: %d rows in one write", file_name, len(items))


app.writer.register_sink(CsvFiles("sensor_data"))


@app.job(job_id="poll_sensors", interval={"seconds": 5})
async def poll_sensors(ctx, scheduled_time):
    at = scheduled_time.isoformat()

    async def emit(payload: Reading | Alert) -> None:
        key = f"{type(payload).__name__}/{payload.sensor}/{at}"
        await app.writer.enqueue(WriteIntent(sink="csv", key=key, payload=payload, job_id=ctx["job_id"],
                                             run_id=ctx["run_id"], scheduled_time=scheduled_time))

    for n in range(50):  # stands in for polling 50 devices
        reading = Reading(sensor=f"s{n:02d}", at=at, celsius=round(random.gauss(21, 4), 1))
        await emit(reading)
        if reading.celsius > 28:
            await emit(Alert(sensor=reading.sensor, at=at, message=f"too warm: {reading.celsius} C"))
    await app.writer.flush(timeout=30)  # optional: the run ends when its output is written (or spilled)
    ctx["logger"].info("50 readings handed to the writer")
