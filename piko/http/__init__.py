"""piko.http: the ops endpoints (/healthz, /readyz, /leader, /metrics) and the status page
(/ and /api/) on piko's own server.

Rules: wire.py is sans-IO (bytes in, events out; never imports socket or asyncio); server.py
is the asyncio shell with hard limits on sizes, time and connections; routes.py answers from
an OpsState and a metrics registry; console.py serves the status page and its API from an
OpsConsole (never the app itself), page.py renders it, escaping every value; asgi.py serves
the same routes to any ASGI server.
"""
