"""Log masking and run context: no secret reaches the stream, run lines carry their ids."""

from __future__ import annotations

import functools
import io
import json
import logging
from collections.abc import Callable

import pytest

from piko.observability.logging import (
    MaskingFilter,
    RunContextFilter,
    bind_run_context,
    configure_logging,
    mask_secrets,
    reset_run_context,
    run_logger,
)


def fresh_loggers(test: Callable[[], None]) -> Callable[[], None]:
    """Run `test` with the root and piko loggers as a fresh process has them, then restore them.

    A decorator, not a fixture: pytest adds its capture handlers to the root logger after
    fixtures are set up, so they have to be taken off inside the test call.
    """

    @functools.wraps(test)
    def wrapper() -> None:
        root, piko = logging.getLogger(), logging.getLogger("piko")
        saved = (root.handlers[:], root.level, piko.handlers[:], piko.level, piko.propagate)
        root.handlers.clear()
        piko.handlers.clear()
        try:
            test()
        finally:
            root.handlers[:], root.level = saved[0], saved[1]
            piko.handlers[:], piko.level, piko.propagate = saved[2], saved[3], saved[4]

    return wrapper


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("mysql+aiomysql://root:p@ss@db/x", "mysql+aiomysql://root:***@db/x"),
        ("mysql://u:a@b@c@h:3306/d?x=1", "mysql://u:***@h:3306/d?x=1"),
        ("dsn mysql://u:pw@h/d, see user@example.com", "dsn mysql://u:***@h/d, see user@example.com"),
        ("db_password=hunter2 next", "db_password=*** next"),
        ("MYSQL_PWD=hunter2", "MYSQL_PWD=***"),
        ("api_key=hunter2&page=2", "api_key=***&page=2"),
        ("APIKEY=hunter2", "APIKEY=***"),
        ("token=abc.def", "token=***"),
        ("secret=s3", "secret=***"),
        ("aws_secret_access_key=AKIA", "aws_secret_access_key=***"),
        ("private_key=-----BEGIN", "private_key=***"),
        ('{"password": "hunter2", "user": "bob"}', '{"password": "***", "user": "bob"}'),
        ("{'password': 'x', 'n': 1}", "{'password': '***', 'n': 1}"),
        ('{"passwd":"a \\" b"}', '{"passwd":"***"}'),
        ("Password = hunter2", "Password = ***"),
    ],
)
def test_secrets_are_masked(text: str, masked: str) -> None:
    assert mask_secrets(text) == masked


@pytest.mark.parametrize("text", ["tokenizer=bert", "passwords=3", "user=bob host=db", "mysql://db/x"])
def test_things_that_are_not_secrets_are_kept(text: str) -> None:
    assert mask_secrets(text) == text


@fresh_loggers
def test_json_output_masks_extra_fields() -> None:
    stream = io.StringIO()
    configure_logging("INFO", as_json=True, stream=stream)
    logging.getLogger("piko.store").info("opening", extra={"dsn": "mysql://u:hunter2@h/d",
                                                            "db_password": "hunter2", "attempt": 2,
                                                            "opts": {"token": "hunter2"}})
    assert "hunter2" not in stream.getvalue()
    line = json.loads(stream.getvalue())
    assert line["dsn"] == "mysql://u:***@h/d" and line["db_password"] == "***" and line["attempt"] == 2


@fresh_loggers
def test_a_library_logger_inside_a_run_is_masked_and_carries_the_run_ids() -> None:
    stream = io.StringIO()
    configure_logging("INFO", as_json=True, stream=stream)
    token = bind_run_context("sync_users", 42)  # what the runner does for each run
    try:
        logging.getLogger("userlib").info("connect %s", "mysql://app:hunter2@db/x")
    finally:
        reset_run_context(token)
    logging.getLogger("userlib").info("outside any run")
    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert (inside["job_id"], inside["run_id"]) == ("sync_users", 42)
    assert inside["msg"] == "connect mysql://app:***@db/x"
    assert "job_id" not in outside


@fresh_loggers
def test_text_output_tags_library_lines_with_the_run() -> None:
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    token = bind_run_context("nightly", 7)
    try:
        logging.getLogger("userlib").warning("token=abc")
    finally:
        reset_run_context(token)
    assert stream.getvalue().rstrip().endswith("userlib [nightly run=7] token=***")


@fresh_loggers
def test_run_logger_ids_win_over_the_context() -> None:
    stream = io.StringIO()
    configure_logging("INFO", as_json=True, stream=stream)
    token = bind_run_context("other", 1)
    try:
        run_logger("mine", 5).info("hi")
    finally:
        reset_run_context(token)
    line = json.loads(stream.getvalue())
    assert (line["job_id"], line["run_id"]) == ("mine", 5)


@fresh_loggers
def test_a_root_logger_you_configured_is_left_alone() -> None:
    mine = logging.StreamHandler(io.StringIO())
    logging.getLogger().addHandler(mine)
    configure_logging("INFO", stream=io.StringIO())
    assert logging.getLogger().handlers == [mine]
    assert [getattr(h, "_piko", False) for h in logging.getLogger("piko").handlers] == [True]


@fresh_loggers
def test_reconfiguring_replaces_the_handler_everywhere() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("INFO", stream=first)
    configure_logging("INFO", stream=second)
    assert len(logging.getLogger().handlers) == 1 and len(logging.getLogger("piko").handlers) == 1
    logging.getLogger("userlib").warning("x")
    logging.getLogger("piko.app").warning("y")
    assert first.getvalue() == "" and second.getvalue().count("\n") == 2


def test_the_filters_can_go_on_your_own_handler() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RunContextFilter())
    handler.addFilter(MaskingFilter())
    handler.setFormatter(logging.Formatter("%(job_id)s %(message)s"))
    logger = logging.getLogger("test.own_handler")
    logger.addHandler(handler)
    logger.propagate = False
    token = bind_run_context("j", 1)
    try:
        logger.warning("secret=%s", "hunter2")
    finally:
        reset_run_context(token)
        logger.removeHandler(handler)
    assert stream.getvalue() == "j secret=***\n"


@fresh_loggers
def test_a_record_with_bad_format_args_does_not_raise_into_the_caller() -> None:
    configure_logging("INFO", stream=io.StringIO())
    logging.raiseExceptions, saved = False, logging.raiseExceptions
    try:
        logging.getLogger("piko.x").warning("%d", "not a number")
        logging.getLogger("userlib").warning("%d", "not a number")
    finally:
        logging.raiseExceptions = saved


def test_mysqls_using_password_yes_is_not_taken_for_a_secret():
    from piko.observability.logging import mask_secrets

    text = "Access denied for user 'piko'@'localhost' (using password: YES)"
    assert mask_secrets(text) == text
    assert mask_secrets("password: hunter2") == "password: ***"


def test_masking_a_long_token_takes_linear_time() -> None:
    """An exception message holding a 200 KB blob is masked (in logs and stored tracebacks) in
    milliseconds; the patterns once retried at every position of it and took hours."""
    import time

    from piko.observability.logging import mask_secrets

    blob = "A" * 200_000
    started = time.monotonic()
    masked = mask_secrets(f"{blob} {blob}.password=hunter2 {blob}://u:pw@h/db " + "passwd" * 30_000)
    assert time.monotonic() - started < 2.0
    assert "hunter2" not in masked and f"{blob}.password=***" in masked and "://u:***@h/db" in masked
