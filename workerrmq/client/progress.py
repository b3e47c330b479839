"""Long operations in chunks: a progress bar, and Ctrl-C that stops between two chunks."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from workerrmq.client.base import Context

__all__ = ["Chunks", "chunks"]


class Chunks:
    """The state of a chunked run: how far it got, and whether Ctrl-C asked it to stop."""

    def __init__(self, progress: Progress, task: Any) -> None:
        self.stop_requested = False
        self._progress = progress
        self._task = task

    def advance(self, n: int) -> None:
        self._progress.advance(self._task, n)

    def grow(self, total: int) -> None:
        """Raise the total (for input whose length is learnt while reading it)."""
        self._progress.update(self._task, total=total)


@contextlib.contextmanager
def chunks(ops: Context, description: str, total: int | None) -> Iterator[Chunks]:
    """Show a progress bar on stderr while the body runs chunk after chunk.

    The first Ctrl-C sets ``stop_requested``: the body finishes the chunk in flight
    and stops. A second one raises KeyboardInterrupt at once.
    """
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=ops.err,
    )
    state = Chunks(progress, progress.add_task(description, total=total))

    def on_sigint(_signum: int, _frame: Any) -> None:
        if state.stop_requested:
            raise KeyboardInterrupt
        state.stop_requested = True
        ops.note("stopping after the chunk in flight (Ctrl-C again to stop at once)")

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        with progress:
            yield state
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
