"""piko: a pure-asyncio job orchestrator for Python data work.

Re-exports only: PikoApp, autodiscover, PikoError, __version__, and for convenience
BackfillPolicy, DataInterval (piko.core.types), Resource, resource (piko.core.resource). PikoApp and autodiscover are
loaded on first use, so processes that only need a piece of piko (CPU pool workers, the
`next` command) start fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from piko.errors import PikoError
from piko.version import __version__

if TYPE_CHECKING:
    from piko.app import PikoApp
    from piko.core.resource import Resource, resource
    from piko.core.types import BackfillPolicy, DataInterval
    from piko.discovery import autodiscover


_LAZY = {"BackfillPolicy": "piko.core.types", "DataInterval": "piko.core.types",
         "Resource": "piko.core.resource", "resource": "piko.core.resource"}  # also at their seed paths


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    if name == "PikoApp":
        from piko.app import PikoApp

        return PikoApp
    if name == "autodiscover":
        from piko.discovery import autodiscover

        return autodiscover
    raise AttributeError(f"module 'piko' has no attribute {name!r}")


__all__ = ["BackfillPolicy", "DataInterval", "PikoApp", "PikoError", "Resource", "__version__", "autodiscover",
           "resource"]
