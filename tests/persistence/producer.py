"""A producing process for the crash tests: enqueue intents to a JSONL sink, print each ack.

    python producer.py SPILL_DIR OUT.jsonl --durability journal --count N [--delay S]
    python producer.py SPILL_DIR OUT.jsonl --recover

Producing, it prints `ACK <key>` once enqueue returned for that key, and on SIGTERM stops
the writer (spilling what the slow sink did not take) and prints `STOPPED`. Recovering,
it starts a writer (which replays journal and spill files), stops it, and prints
`RECOVERED <n>`.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from piko.observability.metrics import MetricsRegistry  # noqa: E402
from piko.observability.piko_metrics import PikoMetrics  # noqa: E402
from piko.persistence.intent import WriteIntent  # noqa: E402
from piko.persistence.sinks import JsonlFileSink  # noqa: E402
from piko.persistence.writer import PersistenceWriter  # noqa: E402


class SlowJsonlSink(JsonlFileSink):
    def __init__(self, path: str, delay_s: float) -> None:
        super().__init__("out", path)
        self.delay_s = delay_s

    async def write_batch(self, batch: list[WriteIntent]) -> None:
        await asyncio.sleep(self.delay_s)
        await super().write_batch(batch)


async def produce(writer: PersistenceWriter, count: int, stop: asyncio.Event, tasks: int = 8) -> None:
    async def one(start: int) -> None:
        for i in range(start, count, tasks):
            if stop.is_set():
                return
            await writer.enqueue(WriteIntent("out", str(i), {"i": i}, "producer", 1, None))
            sys.stdout.write(f"ACK {i}\n")
            sys.stdout.flush()

    await asyncio.gather(*(one(t) for t in range(tasks)))


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("spill_dir")
    parser.add_argument("out")
    parser.add_argument("--durability", default="memory")
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--recover", action="store_true")
    args = parser.parse_args()
    metrics = PikoMetrics(MetricsRegistry(), include_process=False)
    writer = PersistenceWriter(spill_dir=args.spill_dir, durability=args.durability, batch_size=50,
                               batch_timeout_s=0.01, queue_max=400, metrics=metrics)
    writer.register_sink(SlowJsonlSink(args.out, args.delay))
    await writer.start()
    if args.recover:
        await writer.stop(deadline_s=10)
        print(f"RECOVERED {int(metrics.persistence_recovery_total.value)}", flush=True)
        return
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await produce(writer, args.count, stop)
    await writer.stop(deadline_s=0.3)  # short, so the slow sink leaves a backlog to spill
    print("STOPPED", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
