"""The CPU worker pool: piko's own worker processes, driven from the event loop.

Each worker is a spawn/forkserver child holding one end of a socketpair; the parent end
is an asyncio transport, so sending a call and reading its reply never block the loop.
A worker runs one task at a time. Death is seen through the process sentinel (add_reader):
it fails only the task that worker held, and the worker is replaced. A task that is
cancelled or passes its deadline while running gets its worker SIGKILLed and replaced.
Processes are started in a thread, so spawning never stalls timers or the leader lease.
When workers cannot start, queued calls fail and the cause is logged once, at ERROR.
Every worker and task state change goes through states.advance (the tables live there).
Imports nothing from piko but errors and compute (worker: the wire; process; states).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import signal
import socket
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from piko.compute import worker as wire
from piko.compute.process import FrameReader, Task, WorkerProcess, describe_exit, kill_without_loop
from piko.compute.states import TaskState, WorkerState, advance
from piko.compute.worker import OffloadTimeout, WorkerDiedError
from piko.errors import OffloadError

log = logging.getLogger("piko.compute")

_MAX_FAILED_STARTS = 3  # workers dying before READY in a row before queued calls fail
_W, _T = WorkerState, TaskState


class WorkerPool:
    """A fixed number of worker processes fed from one queue, bound to one event loop."""

    def __init__(
        self,
        size: int,
        *,
        context: Any,  # a multiprocessing context (spawn or forkserver)
        per_job_cap: int | None = None,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple[Any, ...] = (),
        max_tasks_per_worker: int | None = None,
    ) -> None:
        self.size = size
        self.per_job_cap = per_job_cap
        self._context = context
        self._initializer, self._initargs = initializer, initargs
        self._max_tasks = max_tasks_per_worker
        self._loop = asyncio.get_running_loop()
        self._workers: list[WorkerProcess] = []
        self._idle: deque[WorkerProcess] = deque()
        self._queue: deque[Task] = deque()
        self._running: Counter[str | None] = Counter()
        self._background: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._failed_starts = 0
        self._is_halted = False  # workers could not start; retried on the next submit
        self._halt_message = ""  # why, for warm_up's error
        self._halt_cause: BaseException | None = None
        self._is_closing = False

    # -- public --------------------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def is_closing(self) -> bool:
        return self._is_closing

    def pids(self) -> list[int]:
        return [w.pid for w in self._workers if w.pid is not None]

    def submit(
        self,
        payload: bytes,
        label: str,
        job: str | None,
        *,
        deadline: float | None = None,
        timeout_s: float | None = None,
    ) -> asyncio.Future[Any]:
        """Queue one pickled call; cancelling the returned future cancels the call.

        `deadline` is in loop time; `timeout_s` is the caller's figure, for the message.
        """
        if self._is_closing:
            raise OffloadError("the CPU pool is closed; no new calls are accepted")
        task = Task(payload, label, job, timeout_s, self._loop.create_future())
        task.future.add_done_callback(lambda _: self._on_task_done(task))
        if deadline is not None:
            task.timer = self._loop.call_at(deadline, self._expire, task)
        self._queue.append(task)
        self._is_halted = False
        self._ensure_workers()
        self._dispatch()
        return task.future

    async def warm_up(self) -> None:
        """Start every worker now and wait until all of them have run the initializer."""
        self._is_halted = False
        self._ensure_workers()
        while sum(w.state in (_W.IDLE, _W.BUSY) for w in self._workers) < self.size:
            if self._is_closing:
                raise OffloadError("the CPU pool was closed before its workers had started")
            if self._is_halted:
                error = OffloadError(f"the CPU workers could not start: {self._halt_message}")
                raise error from self._halt_cause
            self._changed.clear()
            await self._changed.wait()

    async def close(self, timeout_s: float) -> None:
        """Let queued and running calls finish within the budget, then stop every worker."""
        self._is_closing = True
        deadline = self._loop.time() + timeout_s
        reserve = min(1.0, timeout_s / 5)  # kept for stopping and joining the processes
        if self._background:
            await asyncio.wait(self._background, timeout=max(0.0, deadline - reserve - self._loop.time()))
        await self._wait_for(
            lambda: not (self._queue or self._running.total()) or not self._workers, deadline - reserve
        )
        closed = OffloadError("the CPU pool was closed before this call finished")
        for task in list(self._queue):
            _fail(task, closed)
        self._queue.clear()
        for w in self._workers:
            if w.task is not None:
                _fail(w.task, closed)
                self._kill(w)
            elif w.state in (_W.IDLE, _W.STARTING):
                w.state = advance(w.state, _W.STOPPING)
                if w.transport is not None:
                    w.transport.close()  # the worker sees EOF and exits by itself
        await self._wait_for(lambda: not self._workers, deadline)
        for w in self._workers:
            self._kill(w)
        await self._wait_for(lambda: not self._workers, self._loop.time() + 2.0)  # SIGKILL is quick
        for w in self._workers:
            log.warning("CPU worker pid %s did not exit after SIGKILL", w.pid)

    def kill_now(self) -> None:
        """Kill every worker at once, without waiting on this pool's loop.

        For a manager moving on from a loop that has ended (nothing can await that loop's
        calls any more), and for a close() that was cancelled (its caller stopped waiting).
        """
        self._is_closing = True
        if not self._loop.is_closed():  # a closed loop's futures can no longer be settled
            killed = OffloadError("the CPU pool was killed before this call finished")
            for task in [*self._queue, *(w.task for w in self._workers if w.task is not None)]:
                _fail(task, killed)
        self._queue.clear()
        kill_without_loop(self._workers, self._loop)
        self._workers.clear()
        self._idle.clear()

    # -- dispatch --------------------------------------------------------------------

    def _ensure_workers(self) -> None:
        while not (self._is_closing or self._is_halted) and len(self._workers) < self.size:
            parent_sock, child_sock = socket.socketpair()
            process = self._context.Process(
                target=wire.worker_main,
                args=(child_sock, self._initializer, self._initargs),
                name="piko-cpu",
                daemon=True,  # multiprocessing's atexit hook then kills it if close() was skipped
            )
            w = WorkerProcess(process, parent_sock)
            self._workers.append(w)
            self._spawn_in_background(self._start(w, child_sock))

    async def _start(self, w: WorkerProcess, child_sock: socket.socket) -> None:
        try:
            with child_sock:
                await asyncio.to_thread(w.process.start)
            if w.state is _W.DEAD:  # kill_now() ran while it was starting
                kill_without_loop([w], self._loop)
                return
        except Exception as exc:  # EAGAIN, ENOMEM, an initializer that cannot be pickled
            w.sock.close()
            if w.state is not _W.DEAD:  # else kill_now() ran while it was starting
                w.state = advance(w.state, _W.DEAD)
            self._workers.remove(w)
            self._changed.set()
            self._halt(f"could not start a CPU worker: {type(exc).__name__}: {exc}", exc)
            return
        w.pid = w.process.pid
        self._loop.add_reader(w.process.sentinel, self._on_sentinel, w)
        reader = FrameReader(lambda frame: self._on_frame(w, frame), lambda: self._on_connection_lost(w))
        w.transport, _ = await self._loop.create_unix_connection(lambda: reader, sock=w.sock)
        if self._is_closing:
            self._kill(w)

    def _dispatch(self) -> None:
        while self._idle and self._queue:
            task = self._next_task()
            if task is None:
                return
            w = self._idle.popleft()
            assert w.transport is not None
            w.state, w.task = advance(w.state, _W.BUSY), task
            task.state, task.worker = advance(task.state, _T.RUNNING), w
            self._running[task.job] += 1
            w.transport.write(wire.HEADER.pack(len(task.payload)))
            w.transport.write(task.payload)
            task.payload = b""

    def _next_task(self) -> Task | None:
        """The oldest queued task whose job is under the per-job cap."""
        cap = self.per_job_cap
        for task in self._queue:
            if task.future.done():
                continue  # removed by _on_task_done shortly
            if cap is None or task.job is None or self._running[task.job] < cap:
                self._queue.remove(task)
                return task
        return None

    # -- events from workers ----------------------------------------------------------

    def _on_frame(self, w: WorkerProcess, frame: bytes | bytearray) -> None:
        try:
            status, value, text, item_index = pickle.loads(frame)
        except Exception as exc:  # e.g. the result's class cannot be imported here
            status, value, text, item_index = "undecodable", None, f"{type(exc).__name__}: {exc}", None
        if status == wire.READY:
            w.is_ready = True
            if w.state is _W.STARTING:
                w.state = advance(w.state, _W.IDLE)
                self._failed_starts = 0
                self._idle.append(w)
                self._changed.set()
        elif status == wire.INIT_FAILED:
            if w.state not in (_W.KILLED, _W.DEAD):  # one already on its way out stays so
                w.state = advance(w.state, _W.KILLED)  # it exits by itself
            init_label = f"the CPU pool's initializer {wire.describe_callable(self._initializer)}"
            error = wire.reply_error(status, value, text, init_label)
            self._halt(str(error), error.__cause__)
        elif w.task is not None:
            task = self._detach(w)
            if task.future.done():  # cancelled or timed out a moment ago: drop the reply
                pass
            elif status == wire.OK:
                task.future.set_result(value)
            else:
                task.future.set_exception(wire.reply_error(status, value, text, task.label, item_index))
            w.tasks_done += 1
            self._release(w)
            self._changed.set()
        self._dispatch()

    def _detach(self, w: WorkerProcess) -> Task:
        task, w.task = w.task, None
        assert task is not None
        task.state = advance(task.state, _T.FINISHED)
        self._running[task.job] -= 1
        return task

    def _release(self, w: WorkerProcess) -> None:
        if w.state is not _W.BUSY:
            return  # killed or exited while its reply was on the way: it is being replaced
        if self._max_tasks is not None and w.tasks_done >= self._max_tasks:
            w.state = advance(w.state, _W.RETIRING)  # replaced when it has exited
            assert w.transport is not None
            w.transport.close()
        else:
            w.state = advance(w.state, _W.IDLE)
            self._idle.append(w)

    def _on_connection_lost(self, w: WorkerProcess) -> None:
        if w.state in (_W.IDLE, _W.BUSY, _W.STARTING):
            self._kill(w)  # the worker closed its socket on its own: make sure it is gone

    def _on_sentinel(self, w: WorkerProcess) -> None:
        self._loop.remove_reader(w.process.sentinel)
        was = w.state
        w.state = advance(w.state, _W.DEAD)
        with contextlib.suppress(ValueError):
            self._idle.remove(w)
        self._spawn_in_background(self._reap(w, was))

    async def _reap(self, w: WorkerProcess, was: WorkerState) -> None:
        # With spawn the sentinel can fire a moment before waitpid() sees the exit.
        for delay in (0.0, 0.001, 0.01, 0.05, 0.2, 1.0):
            await asyncio.sleep(delay)
            if w not in self._workers:
                return  # kill_now() has reaped it
            if w.process.exitcode is not None:
                break
        exitcode = w.process.exitcode
        how = describe_exit(exitcode)
        if w.task is not None:
            task = self._detach(w)
            hint = (
                " (SIGKILL often means the kernel ran out of memory)" if exitcode == -signal.SIGKILL else ""
            )
            message = f"the CPU worker (pid {w.pid}) running {task.label} died: {how}{hint}"
            _fail(task, WorkerDiedError(message, pid=w.pid, exitcode=exitcode))
        elif was in (_W.IDLE, _W.STARTING):
            log.warning("CPU worker pid %s exited unexpectedly (%s); replacing it", w.pid, how)
        if w.transport is not None:
            w.transport.close()
        with contextlib.suppress(ValueError):
            w.process.close()
        self._workers.remove(w)
        self._changed.set()
        if not w.is_ready and was is not _W.STOPPING:  # also when its closed socket was noticed first
            self._failed_starts += 1
            if self._failed_starts >= _MAX_FAILED_STARTS:
                self._halt(f"CPU workers keep dying at start-up (the last one: {how}); see their traceback on "
                           f"stderr (often: a main script without an `if __name__ == \"__main__\":` guard)", None)
        self._ensure_workers()
        self._dispatch()

    # -- cancellation, timeouts, failures ----------------------------------------------

    def _on_task_done(self, task: Task) -> None:
        if task.timer is not None:
            task.timer.cancel()
        if task.state is _T.QUEUED:
            task.state = advance(task.state, _T.FINISHED)
            with contextlib.suppress(ValueError):
                self._queue.remove(task)
        elif task.state is _T.RUNNING and task.worker is not None and task.worker.task is task:
            # Cancelled or timed out while running: the only way to stop it is to stop
            # its worker. _reap sees the task already settled and just replaces the worker.
            self._kill(task.worker)
        self._changed.set()

    def _expire(self, task: Task) -> None:
        where = "its worker was killed and replaced" if task.state is _T.RUNNING else "it never started"
        _fail(task, OffloadTimeout(f"{task.label} did not finish within {task.timeout_s:g}s; {where}"))

    def _kill(self, w: WorkerProcess) -> None:
        if w.state is _W.DEAD:
            return
        if w.state not in (_W.STOPPING, _W.KILLED):  # a stopping worker exits by itself anyway
            w.state = advance(w.state, _W.KILLED)
        with contextlib.suppress(ValueError):
            self._idle.remove(w)
        if w.process.pid is not None:
            w.process.kill()

    def _halt(self, message: str, cause: BaseException | None) -> None:
        """Workers cannot start: fail what is queued instead of retrying forever.

        Logged once per attempt (every worker of a batch reports the same failure); the
        next submit() or warm_up() tries to start workers again.
        """
        if not self._is_halted:
            # The cause (often the worker's RemoteTraceback) prints as the traceback.
            exc_info = (type(cause), cause, cause.__traceback__) if cause is not None else None
            log.error("%s; queued CPU calls fail until the next call retries", message, exc_info=exc_info)
        self._is_halted = True
        self._halt_message, self._halt_cause = message, cause
        self._failed_starts = 0
        self._changed.set()
        for task in list(self._queue):
            error = OffloadError(message)
            error.__cause__ = cause
            _fail(task, error)
        self._queue.clear()

    # -- helpers ----------------------------------------------------------------------

    async def _wait_for(self, condition: Callable[[], bool], until: float) -> None:
        """Wait until condition() holds (re-checked on every change) or the loop time `until`."""
        while not condition():
            left = until - self._loop.time()
            if left <= 0:
                return
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    def _spawn_in_background(self, coro: Any) -> None:
        t = self._loop.create_task(coro)
        self._background.add(t)
        t.add_done_callback(self._background.discard)


def _fail(task: Task, exc: BaseException) -> None:
    if not task.future.done():
        task.future.set_exception(exc)
