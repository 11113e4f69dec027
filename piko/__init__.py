"""piko: a pure-asyncio job orchestrator for Python data work."""

from __future__ import annotations

__version__ = "0.2.0"
