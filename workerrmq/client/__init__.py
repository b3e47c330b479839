"""The HTTP client commands: the operator commands that talk to the REST API,
``workerrmq queues``, ``publish``, ``consumers``, ``dlq``, ``messages``, ``keys``, ``apply``
and ``export``. They import nothing of the server but :mod:`workerrmq.core`.

The URL and key come from ``--url``/``--key``, else ``WORKERRMQ_URL``/``WORKERRMQ_KEY``,
else the config file (see :mod:`workerrmq.client.config`). Exit codes are in
:data:`workerrmq.client.http.EXIT`.
"""

from __future__ import annotations

import click

from workerrmq.client.apikeys import keys
from workerrmq.client.apply import apply, export
from workerrmq.client.base import ClientGroup
from workerrmq.client.consumers import consumers
from workerrmq.client.dlq import dlq
from workerrmq.client.messages import messages
from workerrmq.client.publish import publish
from workerrmq.client.queues import queues

__all__ = ["ClientGroup", "keys", "register"]


def register(main: click.Group) -> None:
    """Add the operator commands to the ``workerrmq`` command group."""
    for command in (queues, publish, consumers, dlq, messages, keys, apply, export):
        main.add_command(command)
