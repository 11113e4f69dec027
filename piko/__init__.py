"""piko: a pure-asyncio job orchestrator for Python data work.

Re-exports only: PikoApp, autodiscover, PikoError, __version__.
"""

from __future__ import annotations

__version__ = "0.2.0"

from piko.app import PikoApp  # noqa: E402
from piko.discovery import autodiscover  # noqa: E402
from piko.errors import PikoError  # noqa: E402

__all__ = ["PikoApp", "PikoError", "__version__", "autodiscover"]
