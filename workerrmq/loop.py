"""The event loop WorkerRMQ runs asyncio code on (the worker's, the API's publisher thread),
and the garbage collector of its long-running processes."""

from __future__ import annotations

import asyncio
import gc

__all__ = ["new_event_loop", "settle_heap", "GC_THRESHOLDS"]

#: The garbage collector's thresholds in WorkerRMQ's server processes (Python's: 700, 10, 10).
#: Serving allocates many short-lived objects (a batch of 500 messages: tasks, futures and
#: frames that live until the broker confirms; each consumer's start: a few hundred). At the
#: default the collector ran hundreds of times a publish batch and walked the whole heap each
#: time: half of an API process's CPU while publishing batches (py-spy), and 12 of 25 s of
#: the worker's CPU while 10,000 consumers started.
GC_THRESHOLDS = (50_000, 10, 10)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop where it is installed, else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def settle_heap() -> None:
    """Keep the garbage collector off what a server process has loaded: call once the app
    is built. Everything alive then (modules, the app, settings) lives as long as the
    process, so it is frozen out of the collector's walks, and young objects are collected
    in larger steps (:data:`GC_THRESHOLDS`)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
