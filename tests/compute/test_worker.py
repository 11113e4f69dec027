"""The child side, tested in-process: the wire format and run_call never raise."""

from __future__ import annotations

import pickle
import socket
import threading

from piko.compute import worker as wire
from tests.compute import workfns


def _reply(fn, *args, **kwargs):
    return pickle.loads(wire.run_call(pickle.dumps((fn, args, kwargs))))


def test_run_call_returns_the_result():
    assert _reply(workfns.add, 2, 3, scale=2) == (wire.OK, 10, "", None)


def test_run_call_sends_the_exception_and_its_traceback_text():
    status, exc, text, item_index = _reply(workfns.raise_value_error, "boom")
    assert (status, item_index) == (wire.RAISED, None)
    assert isinstance(exc, ValueError) and str(exc) == "boom"
    assert "raise_value_error" in text and "ValueError: boom" in text


def test_an_exception_that_cannot_be_rebuilt_travels_as_text_only():
    status, exc, text, _ = _reply(workfns.raise_needs_two_args)
    assert (status, exc) == (wire.RAISED, None)
    assert "NeedsTwoArgs: x/y" in text


def test_system_exit_travels_as_text_only():
    status, exc, text, _ = _reply(workfns.system_exit)
    assert (status, exc) == (wire.RAISED, None)
    assert "SystemExit: 2" in text


def test_an_unpicklable_result_is_reported_not_raised():
    status, _, text, _ = _reply(workfns.return_lambda)
    assert status == wire.RESULT_UNPICKLABLE
    assert "lambda" in text


def test_a_call_that_cannot_be_loaded_is_reported_not_raised():
    status, _, text, _ = pickle.loads(wire.run_call(b"not a pickle"))
    assert status == wire.LOAD_FAILED
    assert "UnpicklingError" in text


def test_map_chunk_keeps_order():
    assert wire.map_chunk(workfns.square, [3, 1, 2]) == [9, 1, 4]


def test_a_failing_chunk_reports_its_failing_item_s_index_and_own_exception():
    status, exc, text, item_index = _reply(wire.map_chunk, workfns.fail_on, [0, 1, 2, 3, 4])
    assert (status, item_index) == (wire.RAISED, 3)  # fail_on raises on 3, the fourth item
    assert isinstance(exc, ValueError) and str(exc) == "bad item 3"
    assert "in fail_on" in text and "_ItemFailed" not in text


def test_a_chunk_item_whose_exception_cannot_travel_still_reports_its_index():
    status, exc, text, item_index = _reply(wire.map_chunk, workfns.system_exit_on, [0, 1])
    assert (status, exc, item_index) == (wire.RAISED, None, 1)
    assert "SystemExit: 2" in text


def test_frames_round_trip_over_a_socket_including_empty_and_large_ones():
    a, b = socket.socketpair()
    payloads = [b"", b"x", bytes(range(256)) * 4096]  # the last one exceeds the socket buffer

    def send_all() -> None:
        for payload in payloads:
            wire.send_frame(a, payload)
        a.close()

    sender = threading.Thread(target=send_all)
    with a, b:
        sender.start()
        assert [wire.recv_frame(b) for _ in payloads] == payloads
        sender.join()
        assert wire.recv_frame(b) is None  # the other end closed
