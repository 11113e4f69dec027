"""The MySQL/MariaDB store, on aiomysql (imported lazily: `pip install 'piko[mysql]'`).

store.py is the Store; dialect.py holds what MySQL says differently (placeholders, upserts, the
server clock, error codes) and parses the DSN; pool.py is the one way SQL runs (autocommit,
transactions, retries); schema.py migrates under a named lock. Never imports the SQLite store.
"""

from piko.store.mysql.store import MysqlStore

__all__ = ["MysqlStore"]
