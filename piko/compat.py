"""The seed-era module API: jobs registered with `piko.core.registry.job` run on one default app.

`default_app()` builds it on first use over the module-level registry; `job_runner.run_job(...)`
runs a job there as earlier piko releases did. Reached from `piko.core.runner` (the old path)
and the CLI's loader; nothing in the kernel imports it.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from piko.core.types import RunOutcome

if TYPE_CHECKING:
    from piko.app import PikoApp

_default_app: PikoApp | None = None


def default_app() -> PikoApp:
    """The app behind `piko.core.registry.job` and `piko.core.runner.job_runner`."""
    global _default_app
    if _default_app is None:
        from piko.app import PikoApp
        from piko.core.registry import default_registry

        _default_app = PikoApp("default", registry=default_registry)
    return _default_app


class DefaultJobRunner:
    """`job_runner.run_job(...)` from earlier piko releases, bound to the default app."""

    async def run_job(self, job_id: str, config: Any = None, scheduled_time: datetime | None = None,
                      **options: Any) -> RunOutcome:
        runner = await default_app().manual_runner()
        return await runner.run_job(job_id, scheduled_time, config, **options)


job_runner = DefaultJobRunner()
