from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack, asynccontextmanager

import pytest

from piko.core.resource import Resource, ResourcePool, resource

events: list[str] = []


@resource
class Decorated:
    @asynccontextmanager
    async def acquire(self, ctx):
        events.append("enter-decorated")
        try:
            yield "D"
        finally:
            events.append("exit-decorated")


class PlainGen(Resource):
    """The older style: acquire is an undecorated async generator."""

    instances = 0

    def __init__(self):
        PlainGen.instances += 1

    async def acquire(self, ctx):
        events.append("enter-gen")
        try:
            yield "G"
        finally:
            events.append("exit-gen")


def run(decls, body):
    async def go():
        pool = ResourcePool()
        async with AsyncExitStack() as stack:
            values = await pool.enter_all(stack, decls, {"job_id": "j"})
            await body(values)
    asyncio.run(go())


def setup_function():
    events.clear()


def test_resources_enter_in_order_and_exit_in_reverse_on_success():
    async def body(values):
        assert values == {"a": "D", "b": "G"}
    run({"a": Decorated, "b": PlainGen}, body)
    assert events == ["enter-decorated", "enter-gen", "exit-gen", "exit-decorated"]


def test_resources_are_released_when_the_job_fails():
    async def body(values):
        raise ValueError("boom")
    with pytest.raises(ValueError):
        run({"a": Decorated, "b": PlainGen}, body)
    assert events[-2:] == ["exit-gen", "exit-decorated"]


def test_resources_are_released_when_the_job_is_cancelled():
    async def body(values):
        raise asyncio.CancelledError()
    with pytest.raises(asyncio.CancelledError):
        run({"a": Decorated}, body)
    assert events == ["enter-decorated", "exit-decorated"]


def test_a_resource_class_is_instantiated_once_per_app():
    PlainGen.instances = 0

    async def go():
        pool = ResourcePool()
        for _ in range(3):
            async with AsyncExitStack() as stack:
                await pool.enter_all(stack, {"b": PlainGen}, {})
    asyncio.run(go())
    assert PlainGen.instances == 1


def test_factory_function_returning_a_context_manager_works():
    @asynccontextmanager
    async def factory(ctx):
        yield ctx["job_id"]

    async def body(values):
        assert values == {"who": "j"}
    run({"who": factory}, body)


class _CM:
    async def __aenter__(self):
        events.append("enter-cm")
        return "C"

    async def __aexit__(self, *exc):
        events.append("exit-cm")


class AsyncReturnsCM(Resource):
    async def acquire(self, ctx):  # an async def that hands back a context manager to enter
        return _CM()


def test_an_async_acquire_returning_a_context_manager_is_entered_and_exited():
    async def body(values):
        assert values == {"c": "C"}
        events.append("body")
    run({"c": AsyncReturnsCM}, body)
    assert events == ["enter-cm", "body", "exit-cm"]


class HangsOnClose:
    def acquire(self, ctx):
        return _CM()

    async def aclose(self):
        events.append("hang")
        await asyncio.sleep(3600)


class RaisesOnClose:
    def acquire(self, ctx):
        return _CM()

    def close(self):
        events.append("raise")
        raise RuntimeError("close boom")


class ClosesFine:
    def acquire(self, ctx):
        return _CM()

    def close(self):
        events.append("fine")


def test_closing_shared_instances_is_bounded_and_one_failure_does_not_stop_the_others(caplog):
    async def go():
        pool = ResourcePool()
        for decl in (ClosesFine, HangsOnClose, RaisesOnClose):
            async with AsyncExitStack() as stack:
                await pool.enter_all(stack, {"r": decl}, {})
        events.clear()
        started = asyncio.get_running_loop().time()
        await pool.aclose(budget_s=0.2)
        return asyncio.get_running_loop().time() - started

    took = asyncio.run(go())
    assert events == ["raise", "hang", "fine"]  # newest first, each one tried
    assert took < 1.0
    assert "closing it failed" in caplog.text and "longer than the shutdown budget" in caplog.text
