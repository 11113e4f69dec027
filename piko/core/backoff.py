"""Capped exponential backoff with jitter: the one formula every retry in piko waits by.

Before retry `attempt` (1-based) the step is base_s * 2**(attempt - 1), never above cap_s,
times a jitter factor. The caller draws the randomness (`draw`, uniform in [0, 1)) from its
own random source, so this stays pure and a test can pin it; the factor moves linearly from
jitter[0] at draw 0 towards jitter[1] as draw nears 1 (the default (1, 1) is no jitter).
Pure: imports nothing but the standard library.
"""

from __future__ import annotations


def backoff(attempt: int, base_s: float, cap_s: float, *, draw: float = 0.0,
            jitter: tuple[float, float] = (1.0, 1.0)) -> float:
    """Seconds to wait before retry `attempt`; an attempt below 1 waits one base step."""
    step_s = min(cap_s, base_s * 2 ** max(0, attempt - 1))
    low, high = jitter
    return step_s * (low + (high - low) * draw)
