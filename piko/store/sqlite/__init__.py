"""The SQLite store, the embedded default: one file, one worker thread, WAL, batched commits.

store.py is the Store; dialect.py holds what SQLite says differently (upserts, the clock in
milliseconds, multi-row updates); worker.py runs every statement on one thread; batch.py writes
bursts of claims and finishes in few statements; access.py opens the file in a mode and says why
it cannot. Never imports the MySQL store.
"""

from piko.store.sqlite.store import SqliteStore

__all__ = ["SqliteStore"]
