"""piko.core: the job model and the kernel.

Rules: never imports a store implementation, a component (leader, persistence, compute,
http) or the app; talks to them through piko.protocols. Decisions (misfire, coalescing,
backoff, windows, the run status table) are pure modules; the shell modules (kernel, runs,
recorder, control, stateful, instances) carry them out on the event loop, with time from a
Clock. `runner.py` is only the seed-era import path for `job_runner`.
"""
