"""Operator commands that talk to the REST API (``workerrmq queues``, ``publish``, ...)."""

from __future__ import annotations

import click

__all__ = ["register"]


def register(main: click.Group) -> None:
    """Add the operator commands to the ``workerrmq`` command group."""
