"""`piko run --http ...`: the address the ops server binds (parsing only, no server)."""

from __future__ import annotations

import argparse

import pytest

from piko.cli.args import settings_overrides as _settings_overrides
from piko.errors import PikoError


def overrides(http: str) -> dict[str, object]:
    out = _settings_overrides(argparse.Namespace(http=http))
    return {k: v for k, v in out.items() if k.startswith("http")}


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ("[::1]:9100", {"http_enabled": True, "http_host": "::1", "http_port": 9100}),
        ("[fe80::1%eth0]:80", {"http_enabled": True, "http_host": "fe80::1%eth0", "http_port": 80}),
        ("[::]:0", {"http_enabled": True, "http_host": "::", "http_port": 0}),
        ("0.0.0.0:9100", {"http_enabled": True, "http_host": "0.0.0.0", "http_port": 9100}),
        ("localhost:8000", {"http_enabled": True, "http_host": "localhost", "http_port": 8000}),
        (":9100", {"http_enabled": True, "http_host": "127.0.0.1", "http_port": 9100}),
        ("off", {"http_enabled": False}),
        ("OFF", {"http_enabled": False}),
    ],
)
def test_http_option_parses_hosts_ipv6_in_brackets_and_off(option: str, expected: dict[str, object]) -> None:
    assert overrides(option) == expected


@pytest.mark.parametrize("option", ["[::1]", "[::1]9100", "[]:80", "[::1]:x", "host", "host:", "h:８０"])
def test_bad_http_options_say_what_is_expected(option: str) -> None:
    with pytest.raises(PikoError, match=r"expected HOST:PORT"):
        overrides(option)


def test_an_ipv6_address_without_brackets_is_refused_with_a_hint() -> None:
    with pytest.raises(PikoError, match=r"brackets, e\.g\. \[::1\]:8000"):
        overrides("::1:9100")
