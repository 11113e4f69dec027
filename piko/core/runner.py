"""The seed-era import path `from piko.core.runner import job_runner` (and `Runner`).

A leaf kept for users' code: piko itself never imports it. The runner lives in runs.py;
`job_runner` runs jobs on the default app (piko/compat.py).
"""

from __future__ import annotations

from piko.compat import DefaultJobRunner, job_runner
from piko.core.runs import Runner

__all__ = ["DefaultJobRunner", "Runner", "job_runner"]
