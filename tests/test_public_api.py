"""Every import path the seed documents and the README give users keeps working.

A restructuring moves modules; these names must stay where users import them from.
Each is imported in a fresh interpreter, as a user's script would.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PUBLIC = [
    # the piko 0.1.8 README (seed 002) and the earlier README (seed 000)
    "from piko import PikoApp",
    "from piko import PikoApp, autodiscover",
    "from piko.core.types import BackfillPolicy, DataInterval",
    "from piko.core.resource import Resource, resource",
    "from piko.core.registry import job",
    "from piko.core.runner import job_runner",
    "from piko.persistence.intent import WriteIntent",
    "from piko.persistence.sink_base import ResultSink, TypedSink, on",
    "from piko.compute.manager import CpuManager",
    # this README and docs/
    "from piko import PikoError, __version__, BackfillPolicy, DataInterval, Resource, resource",
    "from piko.triggers import make_trigger",
    "from piko.persistence.writer import current_run_id",
    "from piko.observability.logging import bind_run_context",
    "from piko.errors import OffloadError, ConfigError, TriggerSpecError, StoreError, LeaseLost, JobTimeout",
    "from piko.compute.worker import OffloadTimeout",
    "from piko.cli import main",
    "from piko.store import make_store",
    "from piko.store.sqlite import SqliteStore",
    "from piko.clock import FakeClock, SystemClock",
]


@pytest.mark.parametrize("statement", PUBLIC)
def test_a_public_import_path_still_works(statement: str) -> None:
    done = subprocess.run([sys.executable, "-c", statement], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]


def test_job_runner_runs_a_seed_style_job_on_the_default_app(tmp_path: Path) -> None:
    script = tmp_path / "seed_jobs.py"
    script.write_text(
        "import asyncio\n"
        "from piko.core.registry import job\n"
        "from piko.core.runner import job_runner\n"
        "@job(job_id='seed_job')\n"
        "async def seed_job(ctx, scheduled_time):\n"
        "    return ctx['config']['x'] * 2\n"
        "out = asyncio.run(job_runner.run_job('seed_job', config={'x': 21}))\n"
        "print(out.status.value, out.result)\n")
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "PIKO_HTTP_ENABLED": "false"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["SUCCESS", "42"]
