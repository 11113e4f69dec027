"""piko: a pure-asyncio job orchestrator for Python data work.

Re-exports only: PikoApp, autodiscover, PikoError, __version__. PikoApp and autodiscover are
loaded on first use, so processes that only need a piece of piko (CPU pool workers, the
`next` command) start fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from piko.errors import PikoError

__version__ = "0.2.0"

if TYPE_CHECKING:
    from piko.app import PikoApp
    from piko.discovery import autodiscover


def __getattr__(name: str) -> Any:
    if name == "PikoApp":
        from piko.app import PikoApp

        return PikoApp
    if name == "autodiscover":
        from piko.discovery import autodiscover

        return autodiscover
    raise AttributeError(f"module 'piko' has no attribute {name!r}")


__all__ = ["PikoApp", "PikoError", "__version__", "autodiscover"]
