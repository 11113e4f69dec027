"""Capped exponential backoff: the steps, the cap, and each caller's jitter giving the numbers it always had."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from piko.core.backoff import backoff
from piko.core.policy import retry_delay

draws = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)


def test_steps_double_from_the_base_up_to_the_cap():
    assert [backoff(a, 0.2, 1.0) for a in range(1, 7)] == [0.2, 0.4, 0.8, 1.0, 1.0, 1.0]


def test_an_attempt_below_one_waits_one_base_step():
    assert backoff(0, 0.2, 5.0) == 0.2


@given(attempt=st.integers(1, 60), draw=draws)
def test_jitter_keeps_the_wait_within_its_factor_range_of_the_step(attempt, draw):
    step_s = backoff(attempt, 0.05, 1.0)
    assert 0.5 * step_s <= backoff(attempt, 0.05, 1.0, draw=draw, jitter=(0.5, 1.5)) <= 1.5 * step_s
    assert 0.5 * step_s <= backoff(attempt, 0.05, 1.0, draw=draw, jitter=(1.0, 0.5)) <= step_s


@given(attempt=st.integers(1, 60), draw=draws)
def test_run_retries_wait_the_full_step_shortened_by_up_to_half(attempt, draw):
    step_s = min(300.0, 1.0 * 2 ** (attempt - 1))
    assert retry_delay(attempt, 1.0, 300.0, draw) == step_s * (1.0 - 0.5 * draw)


@pytest.mark.parametrize("seed", range(5))
def test_sink_retries_wait_what_uniform_half_to_full_gave(seed):
    old, new = random.Random(seed), random.Random(seed)
    for attempt in range(1, 10):
        step_s = min(30.0, 0.5 * 2 ** (attempt - 1))
        assert backoff(attempt, 0.5, 30.0, draw=new.random(), jitter=(0.5, 1.0)) == step_s * old.uniform(0.5, 1.0)


@pytest.mark.parametrize("seed", range(5))
def test_mysql_retries_wait_from_50ms_doubling_to_1s_give_or_take_half(seed):
    old, new = random.Random(seed), random.Random(seed)
    delay = 0.05
    for attempt in range(1, 10):
        assert backoff(attempt, 0.05, 1.0, draw=new.random(), jitter=(0.5, 1.5)) == delay * (0.5 + old.random())
        delay = min(delay * 2, 1.0)
