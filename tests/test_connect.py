"""Connecting to a broker that hangs up: every attempt fails at once, with a reason to log.

A broker that is stopping (``rabbitmqctl stop_app``), or a TCP proxy whose broker is gone,
accepts the connection and closes it before the AMQP handshake. aiormq then raises errors
whose chain can loop back on itself. The worker and the API's publisher log each failure's
reason and try again, so working that reason out has to end: while it did not, one such
attempt blocked the worker's event loop for good and its consumers never came back.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

from workerrmq.broker.connect import connect_first, failure_reason
from workerrmq.broker.publisher import new_event_loop

ATTEMPTS = 200  # under uvloop, several of 200 hang-ups give a looping chain (6-30 measured)


@contextlib.contextmanager
def hanging_up_listener() -> Iterator[int]:
    """A local port that accepts every connection and closes it at once; yields the port."""
    listener = socket.create_server(("127.0.0.1", 0))

    def hang_up() -> None:
        with contextlib.suppress(OSError):  # the listener closed: the test is over
            while True:
                connection, _ = listener.accept()
                connection.close()

    thread = threading.Thread(target=hang_up, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join(5)


@pytest.mark.timeout(10)
def test_failure_reason_ends_on_a_chain_that_loops():
    # The shape aiormq raises: a StopAsyncIteration caused by a CancelledError holding it.
    stop = StopAsyncIteration()
    stop.__cause__ = asyncio.CancelledError(stop)
    assert failure_reason(stop) == "StopAsyncIteration"


@pytest.mark.timeout(30)
def test_connect_first_fails_at_once_when_the_broker_hangs_up():
    async def attempts(url: str) -> collections.Counter[str]:
        reasons: collections.Counter[str] = collections.Counter()
        for _ in range(ATTEMPTS):
            with pytest.raises(Exception) as failed:  # noqa: PT011 - whatever aiormq raises
                await connect_first([url], timeout=5, name="workerrmq hang-up test")
            reasons[failure_reason(failed.value)] += 1
        return reasons

    loop = new_event_loop()  # the worker's loop (uvloop), where the looping chains come up
    try:
        with hanging_up_listener() as port:
            reasons = loop.run_until_complete(attempts(f"amqp://guest:guest@127.0.0.1:{port}/%2F"))
    finally:
        loop.close()
    print("failure reasons of", ATTEMPTS, "hang-ups:", dict(reasons))
    assert sum(reasons.values()) == ATTEMPTS
