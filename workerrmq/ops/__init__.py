"""Operator commands that talk to the REST API: ``workerrmq queues``, ``publish``,
``consumers``, ``dlq``, ``api-keys``, ``apply`` and ``export``.

The URL and key come from ``--url``/``--key``, else ``WORKERRMQ_URL``/``WORKERRMQ_KEY``,
else the config file (see :mod:`workerrmq.ops.config`). Exit codes are in
:data:`workerrmq.ops.client.EXIT`.
"""

from __future__ import annotations

import click

from workerrmq.ops.apikeys import api_keys
from workerrmq.ops.apply import apply, export
from workerrmq.ops.consumers import consumers
from workerrmq.ops.dlq import dlq
from workerrmq.ops.publish import publish
from workerrmq.ops.queues import queues

__all__ = ["register"]


def register(main: click.Group) -> None:
    """Add the operator commands to the ``workerrmq`` command group."""
    for command in (queues, publish, consumers, dlq, api_keys, apply, export):
        main.add_command(command)
