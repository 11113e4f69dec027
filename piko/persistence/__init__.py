"""piko.persistence: the writer that batches job output to sinks (app.writer).

Rules: every accepted intent reaches its sink, a spill file, or (journal mode) the journal
before enqueue returns; the on-disk record format is one module (records.py) for spill files
and the journal; a sink that raises or hangs is retried with backoff, then spilled, never
dropped silently. Imports no store implementation and not the app.
"""
