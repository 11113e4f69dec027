"""piko.compute: CPU offload to piko's own worker processes (app.cpu_manager).

Rules: the event loop never blocks on a worker (sockets as asyncio transports, processes
started in a thread); a worker that dies fails only what it held and is replaced; worker and
task states move only as compute/states.py's tables allow; no worker outlives the app.
dask_backend.py is the alternative for an existing Dask cluster (cpu_backend = "dask"): the
only module that imports distributed, lazily. Imports nothing from piko but errors and its
own modules.
"""
