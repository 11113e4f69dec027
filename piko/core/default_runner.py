"""`job_runner.run_job(...)` from earlier piko releases, bound to a default app.

piko.app installs the factory when it is imported (asking the package for PikoApp does
that); this module never imports the app itself, so the kernel side stays free of it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from piko.core.types import RunOutcome

_default_app_factory: Callable[[], Any] | None = None


def set_default_app_factory(factory: Callable[[], Any]) -> None:
    """Installed by piko.app: builds the app that the module-level job_runner serves."""
    global _default_app_factory
    _default_app_factory = factory


class DefaultJobRunner:
    """`job_runner.run_job(...)` from earlier piko releases, bound to the default app."""

    async def run_job(self, job_id: str, config: Any = None, scheduled_time: datetime | None = None,
                      **options: Any) -> RunOutcome:
        if _default_app_factory is None:  # loading PikoApp loads piko.app, which installs it
            import piko

            piko.PikoApp  # noqa: B018
        app = _default_app_factory()  # type: ignore[misc]
        runner = await app.manual_runner()
        return await runner.run_job(job_id, scheduled_time, config, **options)


job_runner = DefaultJobRunner()
