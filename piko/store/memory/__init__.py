"""The memory store: every Store role in plain dicts, for tests and for trying piko out.

store.py holds the tables and every role but the queue; queue.py adds cluster execution's
queue role over the same tables. Same contract as the SQL stores (tests/store runs one suite
over all three). Nothing survives the process.
"""

from piko.store.memory.store import MemoryStore

__all__ = ["MemoryStore"]
