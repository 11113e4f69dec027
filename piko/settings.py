"""Settings: defaults < settings file < PIKO_* environment < explicit overrides; validated, frozen.

Files: settings.toml, then piko.toml, then .secrets.toml in the working directory (later
wins), or the file named by PIKO_SETTINGS_PATH / --settings. Sections `[piko]` and
`[default]` hold flat keys, as does the environment section named by PIKO_ENV (Dynaconf's
`[development]`, `[production]`, ...); any other section is a prefix (`[mysql] dsn` is
`mysql_dsn`). The store keys (dsn, mysql_dsn, db_path) name one store: the highest layer's. Environment keys are
flat (`PIKO_MYSQL_DSN`) or nested (`PIKO_MYSQL__DSN`). Unknown keys and wrong types are
errors that name the key and where it came from. Durations are `_s` floats at this boundary.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from piko.errors import ConfigError

FILE_NAMES = ("settings.toml", "piko.toml")
_QUEUE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_TOKEN = re.compile(r"[\x21-\x7e]{16,512}")  # visible ASCII: it travels in a header
HIDDEN_KEYS = ("http_admin_token",)  # their values never appear in an error
# scheme://host:port as Dask reads it; a host is a name, an IPv4 address or a bracketed IPv6 one
_DASK_ADDRESS = re.compile(r"^(tcp|tls|ws|wss|ucx)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(:(\d{1,5}))?$")
ALIASES = {"worker_dead_after_s": "orphan_after_s"}  # one setting, the name the cluster docs use
SECRETS_FILE = ".secrets.toml"
ENV_PREFIX = "PIKO_"
ENV_IGNORED = {"PIKO_SETTINGS_PATH", "PIKO_ENV"}
ENV_IGNORED_PREFIXES = ("PIKO_TEST_", "PIKO_BENCH_")
FLAT_SECTIONS = ("piko", "default", "defaults")
# Dynaconf-style environment sections: the one named by PIKO_ENV (or ENV_FOR_DYNACONF, default
# "development") applies over [default], [global] over everything; the others are ignored.
ENV_SECTIONS = ("development", "production", "testing", "staging", "global")


@dataclass(frozen=True)
class Settings:
    # store
    db_path: str = "piko.db"
    dsn: str | None = None
    mysql_dsn: str | None = None
    mysql_pool_size: int = 10
    mysql_pool_recycle: int = 3600
    # logging
    log_level: str = "INFO"
    log_json: bool = False
    debug: bool = False
    # scheduling defaults (a schedule row or @app.job overrides them per job)
    timezone: str = "UTC"
    misfire_grace_s: float = 60.0
    coalesce: bool = True
    max_instances: int = 1
    job_timeout_s: float = 0.0  # 0 = no timeout
    retries: int = 0
    retry_backoff_s: float = 1.0
    retry_backoff_max_s: float = 300.0
    backfill_max_windows: int = 1000
    # control plane
    poll_interval_s: float = 10.0
    heartbeat_interval_s: float = 2.0
    orphan_after_s: float = 10.0  # RUNNING rows of an instance silent this long are ABANDONED
    shutdown_timeout_s: float = 30.0
    # execution: "leader" (the elected leader fires and runs everything) or "cluster" (the leader
    # fires and places runs; every instance's worker claims and runs them)
    execution: str = "leader"
    worker_concurrency: int = 100  # runs one instance executes at once (cluster)
    worker_queues: str = ""  # comma list; empty = the queues of the jobs this instance registers
    worker_poll_max_s: float = 0.5  # an idle worker's slowest poll of the queue (<= 2 queries/s)
    # leader election
    leader_enabled: bool = True
    leader_name: str = "default"
    leader_lease_s: float = 30.0
    leader_renew_interval_s: float = 10.0
    # ops HTTP
    http_enabled: bool = True
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    # the status page's actions need it (Authorization: Bearer ...); unset: the page is read-only
    # and answers loopback clients only. Never shown in a repr or an error.
    http_admin_token: str | None = dataclasses.field(default=None, repr=False)
    # persistence
    persist_queue_max: int = 10000
    persist_batch_size: int = 500
    persist_batch_timeout_s: float = 0.2
    persist_spill_dir: str = "piko_spill"
    persist_durability: str = "memory"
    persist_retry_max: int = 5
    persist_write_timeout_s: float = 30.0  # one sink call; past it the batch is retried or spilled
    persist_startup_replay_s: float = 5.0  # start-up waits this long for spill replay; the rest goes on after
    # CPU offload
    cpu_workers: int = 0  # 0 = cores - 1, at least 1
    cpu_per_job_cap: int = 0  # 0 = no cap
    cpu_backend: str = "local"  # "local": piko's own worker processes; "dask": an existing Dask cluster
    dask_scheduler: str = ""  # the Dask scheduler's address, e.g. tcp://scheduler:8786 (cpu_backend = "dask")
    dask_connect_timeout_s: float = 10.0  # start-up fails when the scheduler has not answered by then
    # process
    tune_gc: bool = True  # freeze long-lived objects and raise the gen-0 GC threshold at start

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def queue_list(self) -> tuple[str, ...]:
        return tuple(q.strip() for q in self.worker_queues.split(",") if q.strip())

    @property
    def store_dsn(self) -> str:
        """The store to open: dsn, else mysql_dsn, else the SQLite file db_path."""
        return self.dsn or self.mysql_dsn or f"sqlite:///{self.db_path}"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


_FIELDS = {f.name: f for f in fields(Settings)}


def _validate(s: Settings) -> None:
    def need(ok: bool, key: str, what: str) -> None:
        if not ok:
            raise _setting_error(key, f"setting {key!r} = {getattr(s, key)!r}: {what}")

    for name in _FIELDS:
        value = getattr(s, name)
        if isinstance(value, float) and not math.isfinite(value):
            raise _setting_error(name, f"setting {name!r} = {value!r}: must be a finite number")
        if name.endswith("_s") and isinstance(value, (int, float)):
            need(value >= 0, name, "must be >= 0 seconds")
    need(s.log_level.upper() in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}, "log_level",
         "must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    need(s.max_instances >= 1, "max_instances", "must be >= 1")
    need(s.retries >= 0, "retries", "must be >= 0")
    need(s.poll_interval_s > 0, "poll_interval_s", "must be > 0")
    need(s.heartbeat_interval_s > 0, "heartbeat_interval_s", "must be > 0")
    need(s.orphan_after_s >= 2 * s.heartbeat_interval_s, "orphan_after_s",
         f"must be at least twice heartbeat_interval_s ({s.heartbeat_interval_s}), or one late beat makes a "
         f"live instance's runs ABANDONED; about five beats is usual")
    need(0 < s.http_port < 65536 or s.http_port == 0, "http_port", "must be a TCP port (0-65535)")
    need(s.persist_durability in {"memory", "journal"}, "persist_durability", "must be 'memory' or 'journal'")
    need(s.persist_queue_max >= 1 and s.persist_batch_size >= 1, "persist_queue_max", "queue and batch must be >= 1")
    need(s.leader_lease_s >= 1, "leader_lease_s", "must be >= 1 second (a shorter lease is a renew storm)")
    need(0.1 <= s.leader_renew_interval_s <= s.leader_lease_s / 2, "leader_renew_interval_s",
         f"must be >= 0.1 s and at most half of leader_lease_s ({s.leader_lease_s}), so one slow renew "
         f"does not lose the lease; about a third of it is usual")
    need(isinstance(s.leader_name, str) and 0 < len(s.leader_name) <= 64 and s.leader_name.strip() == s.leader_name,
         "leader_name", "must be 1-64 characters without surrounding spaces (the lease row's key)")
    need(s.cpu_workers >= 0 and s.cpu_per_job_cap >= 0, "cpu_workers", "must be >= 0 (0 = automatic)")
    _check_cpu_backend(s)
    need(s.execution in {"leader", "cluster"}, "execution", "must be 'leader' or 'cluster'")
    if s.http_admin_token is not None and not _TOKEN.fullmatch(s.http_admin_token):
        raise _setting_error("http_admin_token", "setting 'http_admin_token' (value not shown): must be 16 to 512 "
                             "visible ASCII characters, no spaces; make one with: python -c "
                             "'import secrets; print(secrets.token_urlsafe(32))'")
    need(s.worker_concurrency >= 1, "worker_concurrency", "must be >= 1")
    need(0.01 <= s.worker_poll_max_s <= 60, "worker_poll_max_s", "must be between 0.01 and 60 seconds")
    need(all(_QUEUE.match(q) for q in s.queue_list), "worker_queues",
         "must be a comma list of queue names (letters, digits, '_', '-', '.')")
    _check_timezone(s.timezone)


def _check_cpu_backend(s: Settings) -> None:
    """The backend is a known name; the Dask one needs a scheduler address that Dask can read."""
    if s.cpu_backend not in {"local", "dask"}:
        raise _setting_error("cpu_backend", f"setting 'cpu_backend' = {s.cpu_backend!r}: must be 'local' (piko's "
                                            f"own worker processes) or 'dask' (an existing Dask cluster)")
    example = "such as 'tcp://scheduler:8786'"
    if s.cpu_backend == "dask" and not s.dask_scheduler:
        raise _setting_error("dask_scheduler", f"setting 'dask_scheduler' is empty: cpu_backend = 'dask' needs "
                                               f"the Dask scheduler's address (dask_scheduler, or the environment's "
                                               f"PIKO_DASK_SCHEDULER), {example}")
    match = _DASK_ADDRESS.match(s.dask_scheduler)
    if s.dask_scheduler and (match is None or not 0 < int(match.group(4) or 1) < 65536):
        raise _setting_error("dask_scheduler", f"setting 'dask_scheduler' = {s.dask_scheduler!r}: must be a Dask "
                                               f"scheduler address, scheme://host:port {example} (schemes: tcp, "
                                               f"tls, ws, wss, ucx)")
    if s.dask_connect_timeout_s <= 0:
        raise _setting_error("dask_connect_timeout_s", f"setting 'dask_connect_timeout_s' = "
                                                       f"{s.dask_connect_timeout_s!r}: must be > 0 seconds")


def _check_timezone(name: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise _setting_error("timezone", f"setting 'timezone' = {name!r}: unknown time zone (use an IANA name "
                                         f"such as 'UTC' or 'Europe/Berlin')") from exc


def _setting_error(key: str, message: str) -> ConfigError:
    """A rejected value; load_settings adds where it came from (file, environment, arguments)."""
    error = ConfigError(message)
    error.setting = key  # type: ignore[attr-defined]
    return error


def _coerce(key: str, value: Any, source: str) -> Any:
    field = _FIELDS.get(key)
    if field is None:
        close = _spelled_like(key)
        if source.startswith("environment"):  # name what to set there: PIKO_HTTP_PORT, not http_port
            close = [ENV_PREFIX + name.upper() for name in close]
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise ConfigError(f"unknown setting {key!r} in {source}{hint}")
    kind = str(field.type)
    from_env = isinstance(value, str) and source.startswith("environment")
    try:
        if "bool" in kind:
            return _as_bool(value, from_env)
        if "None" in kind and (value is None or (from_env and value.strip().lower() in {"", "none", "null"})):
            return None
        if kind.startswith("int"):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value) if (from_env or isinstance(value, (int, float))) else _fail()
        if kind.startswith("float"):
            if isinstance(value, bool):
                raise TypeError
            return float(value) if (from_env or isinstance(value, (int, float))) else _fail()
        if isinstance(value, str):
            return value
        raise TypeError
    except (TypeError, ValueError):
        expected = kind.replace(" | None", " or empty")
        shown = "(value not shown)" if key in HIDDEN_KEYS else repr(value)
        raise ConfigError(f"setting {key!r} from {source}: {shown} is not a valid {expected}") from None


def _spelled_like(key: str) -> list[str]:
    """The known keys a typo most likely meant, by edit similarity (difflib's ratio): a doubled
    or swapped letter or a missing `_s` ('poll_intervall_s', 'http_prot', 'orphan_after').
    Only those nearly as close as the best are named, so one clear match is not buried."""
    close = difflib.get_close_matches(key, _FIELDS, n=3, cutoff=0.6)  # best first
    scores = [difflib.SequenceMatcher(None, name, key).ratio() for name in close]
    return [name for name, score in zip(close, scores, strict=True) if score >= scores[0] - 0.1]


def _as_bool(value: Any, from_env: bool) -> bool:
    if isinstance(value, bool):
        return value
    text = value.strip().lower() if from_env else None
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    raise TypeError


def _fail() -> Any:
    raise TypeError


def _flatten_toml(doc: Mapping[str, Any], source: str, env_name: str = "development") -> dict[str, Any]:
    out: dict[str, Any] = {}
    chosen: list[Mapping[str, Any]] = []  # the active environment's section, then [global]
    for key, value in doc.items():
        if isinstance(value, Mapping) and key.lower() in ENV_SECTIONS:
            if key.lower() == env_name:
                chosen.insert(0, value)
            elif key.lower() == "global":
                chosen.append(value)
            continue  # another environment's section: not this one's settings
        if isinstance(value, Mapping):
            prefix = "" if key.lower() in FLAT_SECTIONS else f"{key.lower()}_"
            for sub, subvalue in value.items():
                if isinstance(subvalue, Mapping):
                    raise ConfigError(f"setting '{key}.{sub}' in {source}: nested tables are not supported")
                out[prefix + sub.lower()] = subvalue
        else:
            out[key.lower()] = value
    for section in chosen:
        out.update(_flatten_toml(section, source))
    return out


def _read_toml(path: Path, env_name: str = "development") -> dict[str, Any]:
    try:
        import tomllib  # type: ignore[import-not-found]
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise ConfigError(f"reading {path} needs tomli on Python < 3.11: pip install 'piko[tomli]'") from None
    try:
        with path.open("rb") as fh:
            return _flatten_toml(tomllib.load(fh), str(path), env_name)
    except OSError as exc:
        raise ConfigError(f"cannot read settings file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"settings file {path} is not valid TOML: {exc}") from None


def settings_files(cwd: Path, explicit: str | None, env: Mapping[str, str]) -> list[Path]:
    """Which files are read, in order (later wins)."""
    chosen = explicit or env.get("PIKO_SETTINGS_PATH")
    if chosen:
        path = Path(chosen)
        if not path.is_file():
            raise ConfigError(f"settings file {chosen!r} does not exist")
        return [path]
    found = [cwd / n for n in FILE_NAMES if (cwd / n).is_file()]  # both, as Dynaconf reads them
    if (cwd / SECRETS_FILE).is_file():
        found.append(cwd / SECRETS_FILE)
    return found


def _env_values(env: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    out: dict[str, tuple[str, str]] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name in ENV_IGNORED or name.startswith(ENV_IGNORED_PREFIXES):
            continue
        key = name[len(ENV_PREFIX):].lower().replace("__", "_")
        out[key] = (value, f"environment variable {name}")
    return out


_STORE_KEYS = ("dsn", "mysql_dsn", "db_path")  # within one layer, in this order of precedence


def _one_store(values: dict[str, Any], ranks: dict[str, int]) -> None:
    """The store keys name one store: the one set in the highest layer wins (an environment
    PIKO_MYSQL_DSN beats a settings file's dsn), so the others are dropped."""
    present = [k for k in _STORE_KEYS if values.get(k) is not None]
    if len(present) < 2:
        return
    winner = max(present, key=lambda k: (ranks[k], -_STORE_KEYS.index(k)))
    for key in present:
        if key != winner and key != "db_path":  # db_path alone selects nothing when a DSN wins
            values[key] = None


def load_settings(
    *,
    path: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build Settings from every layer; raise ConfigError naming the key and its source."""
    env = os.environ if env is None else env
    base = Path(cwd) if cwd is not None else Path.cwd()
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}

    ranks: dict[str, int] = {}  # the layer each key came from: files in order, then env, then arguments

    def put(key: str, value: Any, source: str, rank: int) -> None:
        key = ALIASES.get(key, key)
        values[key] = _coerce(key, value, source)
        sources[key] = source
        ranks[key] = rank

    env_name = (env.get("PIKO_ENV") or env.get("ENV_FOR_DYNACONF") or "development").lower()
    for rank, file in enumerate(settings_files(base, path, env)):
        for key, value in _read_toml(file, env_name).items():
            put(key, value, f"settings file {file}", rank)
    for key, (value, source) in _env_values(env).items():
        put(key, value, source, 1000)
    for key, value in (overrides or {}).items():
        if value is not None:
            put(key, value, "arguments", 2000)
    _one_store(values, ranks)
    try:
        return Settings(**values)
    except ConfigError as exc:
        bad = getattr(exc, "setting", None)
        if bad in sources:
            raise ConfigError(f"{exc} (from {sources[bad]})") from None
        raise
