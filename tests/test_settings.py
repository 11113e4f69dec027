from __future__ import annotations

import pytest

from piko.errors import ConfigError
from piko.settings import load_settings


def test_defaults_need_no_configuration(tmp_path):
    s = load_settings(env={}, cwd=tmp_path)
    assert s.store_dsn == "sqlite:///piko.db" and s.http_port == 8000 and s.leader_enabled


def test_file_beats_defaults_and_env_beats_file(tmp_path):
    (tmp_path / "settings.toml").write_text(
        '[piko]\nlog_level = "DEBUG"\nhttp_port = 9001\n[mysql]\ndsn = "mysql://u:p@h/db"\npool_size = 3\n')
    s = load_settings(env={"PIKO_HTTP_PORT": "9002"}, cwd=tmp_path)
    assert (s.log_level, s.http_port, s.mysql_dsn, s.mysql_pool_size) == ("DEBUG", 9002, "mysql://u:p@h/db", 3)


def test_nested_and_flat_environment_keys_both_work(tmp_path):
    assert load_settings(env={"PIKO_MYSQL__DSN": "mysql://a@h/d"}, cwd=tmp_path).mysql_dsn == "mysql://a@h/d"
    assert load_settings(env={"PIKO_MYSQL_DSN": "mysql://b@h/d"}, cwd=tmp_path).mysql_dsn == "mysql://b@h/d"


def test_piko_toml_and_settings_path_are_read(tmp_path):
    (tmp_path / "piko.toml").write_text('timezone = "Asia/Shanghai"\n')
    assert load_settings(env={}, cwd=tmp_path).timezone == "Asia/Shanghai"
    other = tmp_path / "other.toml"
    other.write_text('[default]\nleader_lease_s = 12\nleader_renew_interval_s = 4\n')
    s = load_settings(env={"PIKO_SETTINGS_PATH": str(other)}, cwd=tmp_path)
    assert s.leader_lease_s == 12 and s.timezone == "UTC"


def test_unknown_key_is_an_error_naming_key_and_source(tmp_path):
    (tmp_path / "settings.toml").write_text("[piko]\nhttp_prot = 1\n")
    with pytest.raises(ConfigError, match=r"unknown setting 'http_prot' in settings file .*settings.toml"):
        load_settings(env={}, cwd=tmp_path)
    with pytest.raises(ConfigError, match="environment variable PIKO_NOPE"):
        load_settings(env={"PIKO_NOPE": "1"}, cwd=tmp_path / "elsewhere")


@pytest.mark.parametrize(("typo", "meant"), [
    ("poll_intervall_s", "poll_interval_s"), ("http_prot", "http_port"), ("orphan_after", "orphan_after_s"),
    ("shutdown_timeout", "shutdown_timeout_s"), ("loglevel", "log_level"),
])
def test_a_misspelled_key_in_a_file_names_the_key_it_is_closest_to(tmp_path, typo, meant):
    (tmp_path / "settings.toml").write_text(f"[piko]\n{typo} = 1\n")
    with pytest.raises(ConfigError) as info:
        load_settings(env={}, cwd=tmp_path)
    assert str(info.value).endswith(f"settings.toml (did you mean {meant}?)")
    assert str(info.value).startswith(f"unknown setting {typo!r} in settings file ")


def test_a_misspelled_environment_variable_names_the_variable_to_set(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_settings(env={"PIKO_HTTP_PROT": "9000"}, cwd=tmp_path)
    assert str(info.value) == ("unknown setting 'http_prot' in environment variable PIKO_HTTP_PROT "
                               "(did you mean PIKO_HTTP_PORT?)")


def test_an_unknown_key_like_no_known_one_gets_no_guess(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_settings(env={"PIKO_NOPE": "1"}, cwd=tmp_path)
    assert "did you mean" not in str(info.value)


def test_wrong_type_is_an_error_naming_key_and_source(tmp_path):
    with pytest.raises(ConfigError, match=r"'http_port' from environment variable PIKO_HTTP_PORT: 'x'"):
        load_settings(env={"PIKO_HTTP_PORT": "x"}, cwd=tmp_path)
    (tmp_path / "settings.toml").write_text('[piko]\nlog_json = "yes"\n')
    with pytest.raises(ConfigError, match="log_json"):
        load_settings(env={}, cwd=tmp_path)


def test_out_of_range_values_name_where_they_came_from(tmp_path):
    with pytest.raises(ConfigError, match=r"'poll_interval_s' = 0.0: must be > 0 \(from environment variable "
                                          r"PIKO_POLL_INTERVAL_S\)"):
        load_settings(env={"PIKO_POLL_INTERVAL_S": "0"}, cwd=tmp_path)
    (tmp_path / "piko.toml").write_text('[piko]\ntimezone = "Mars/Olympus"\n')
    with pytest.raises(ConfigError, match=r"unknown time zone.*\(from settings file .*piko.toml\)"):
        load_settings(env={}, cwd=tmp_path)


def test_inconsistent_leader_timings_are_rejected(tmp_path):
    with pytest.raises(ConfigError, match="leader_renew_interval_s"):
        load_settings(env={"PIKO_LEADER_LEASE_S": "5", "PIKO_LEADER_RENEW_INTERVAL_S": "6"}, cwd=tmp_path)


@pytest.mark.parametrize("env, key", [
    ({"PIKO_LEADER_LEASE_S": "0.002", "PIKO_LEADER_RENEW_INTERVAL_S": "0.001"}, "leader_lease_s"),
    ({"PIKO_LEADER_LEASE_S": "10", "PIKO_LEADER_RENEW_INTERVAL_S": "9"}, "leader_renew_interval_s"),
    ({"PIKO_LEADER_NAME": "x" * 65}, "leader_name"),
    ({"PIKO_LEADER_NAME": ""}, "leader_name"),
])
def test_lease_settings_that_could_never_work_are_rejected(tmp_path, env, key):
    with pytest.raises(ConfigError, match=key):
        load_settings(env=env, cwd=tmp_path)


def test_unknown_timezone_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="unknown time zone"):
        load_settings(env={"PIKO_TIMEZONE": "Mars/Olympus"}, cwd=tmp_path)


def test_broken_toml_is_a_clear_error(tmp_path):
    (tmp_path / "settings.toml").write_text("[piko\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(env={}, cwd=tmp_path)


def test_secrets_are_masked_in_log_text():
    from piko.observability.logging import mask_secrets

    assert mask_secrets("mysql://user:hunter2@db:3306/piko") == "mysql://user:***@db:3306/piko"
    assert "hunter2" not in mask_secrets("connect failed password=hunter2 host=x")


def test_an_environment_dsn_beats_a_settings_file_dsn_whatever_its_key(tmp_path):
    (tmp_path / "settings.toml").write_text('[piko]\ndsn = "mysql://file@h/db"\n')
    s = load_settings(env={"PIKO_MYSQL_DSN": "mysql://env@h/db"}, cwd=tmp_path)
    assert s.store_dsn == "mysql://env@h/db"
    s = load_settings(env={"PIKO_DB_PATH": "env.db"}, cwd=tmp_path)  # a higher layer names a SQLite file
    assert s.store_dsn == "sqlite:///env.db"
    s = load_settings(env={}, cwd=tmp_path, overrides={"db_path": "arg.db"})
    assert s.store_dsn == "sqlite:///arg.db"
    (tmp_path / "settings.toml").write_text('[piko]\ndsn = "mysql://a@h/db"\ndb_path = "x.db"\n[mysql]\ndsn = "mysql://b@h/db"\n')
    assert load_settings(env={}, cwd=tmp_path).store_dsn == "mysql://a@h/db"  # one layer: dsn first


def test_settings_toml_and_piko_toml_are_both_read_piko_toml_last(tmp_path):
    (tmp_path / "settings.toml").write_text('timezone = "Asia/Shanghai"\nhttp_port = 9001\n')
    (tmp_path / "piko.toml").write_text('http_port = 9002\n')
    s = load_settings(env={}, cwd=tmp_path)
    assert (s.timezone, s.http_port) == ("Asia/Shanghai", 9002)


def test_dynaconf_environment_sections_apply_by_piko_env(tmp_path):
    (tmp_path / "settings.toml").write_text(
        '[default]\nlog_level = "INFO"\nhttp_port = 9001\n'
        '[development]\nlog_level = "DEBUG"\n'
        '[production]\nlog_level = "WARNING"\n[production.mysql]\ndsn = "mysql://p@h/db"\n'
        '[global]\nhttp_port = 9009\n')
    dev = load_settings(env={}, cwd=tmp_path)
    assert (dev.log_level, dev.http_port, dev.mysql_dsn) == ("DEBUG", 9009, None)
    prod = load_settings(env={"PIKO_ENV": "production"}, cwd=tmp_path)
    assert (prod.log_level, prod.mysql_dsn) == ("WARNING", "mysql://p@h/db")
    assert load_settings(env={"ENV_FOR_DYNACONF": "PRODUCTION"}, cwd=tmp_path).log_level == "WARNING"


def test_the_admin_token_comes_from_the_environment_and_never_shows_in_a_repr(tmp_path):
    assert load_settings(env={}, cwd=tmp_path).http_admin_token is None
    assert load_settings(env={"PIKO_HTTP_ADMIN_TOKEN": ""}, cwd=tmp_path).http_admin_token is None
    s = load_settings(env={"PIKO_HTTP_ADMIN_TOKEN": "s3cret-token-0123456789"}, cwd=tmp_path)
    assert s.http_admin_token == "s3cret-token-0123456789" and "s3cret" not in repr(s)


@pytest.mark.parametrize("token", ["short", "has a space in it here", "x" * 513])
def test_a_weak_admin_token_is_refused_without_showing_it(tmp_path, token):
    with pytest.raises(ConfigError, match=r"http_admin_token.*value not shown.*16 to 512.*PIKO_HTTP_ADMIN_TOKEN") as caught:
        load_settings(env={"PIKO_HTTP_ADMIN_TOKEN": token}, cwd=tmp_path)
    assert token not in str(caught.value)
    (tmp_path / "settings.toml").write_text("[piko]\nhttp_admin_token = 1234567\n")
    with pytest.raises(ConfigError, match="value not shown") as caught:
        load_settings(env={}, cwd=tmp_path)
    assert "1234567" not in str(caught.value)


def test_the_cpu_backend_is_local_by_default_and_dask_is_chosen_by_file_or_environment(tmp_path):
    assert load_settings(env={}, cwd=tmp_path).cpu_backend == "local"
    (tmp_path / "piko.toml").write_text('[piko]\ncpu_backend = "dask"\ndask_scheduler = "tcp://sched:8786"\n')
    s = load_settings(env={"PIKO_DASK_SCHEDULER": "tls://[::1]:8786", "PIKO_DASK_CONNECT_TIMEOUT_S": "2.5"},
                      cwd=tmp_path)
    assert (s.cpu_backend, s.dask_scheduler, s.dask_connect_timeout_s) == ("dask", "tls://[::1]:8786", 2.5)


@pytest.mark.parametrize("env, message", [
    ({"PIKO_CPU_BACKEND": "ray"}, r"'cpu_backend' = 'ray': must be 'local' .* or 'dask' .*PIKO_CPU_BACKEND"),
    ({"PIKO_CPU_BACKEND": "dask"}, r"'dask_scheduler' is empty: cpu_backend = 'dask' needs .*'tcp://scheduler:8786'"),
    ({"PIKO_CPU_BACKEND": "dask", "PIKO_DASK_SCHEDULER": "sched:8786"},
     r"'dask_scheduler' = 'sched:8786': must be a Dask scheduler address, scheme://host:port"),
    ({"PIKO_DASK_SCHEDULER": "tcp://sched:70000"}, r"'dask_scheduler' = 'tcp://sched:70000'"),
    ({"PIKO_DASK_SCHEDULER": "http://sched:8786"}, r"schemes: tcp, tls"),
    ({"PIKO_DASK_CONNECT_TIMEOUT_S": "0"}, r"'dask_connect_timeout_s' = 0.0: must be > 0"),
])
def test_a_bad_cpu_backend_or_dask_address_is_an_error_saying_what_would_be_right(tmp_path, env, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(env=env, cwd=tmp_path)
