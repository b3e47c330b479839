"""The consumer and its message protocol, with no I/O: what every other part builds on.

Nothing here imports the rest of WorkerRMQ, so the store, the broker gateway, the
services, the API and the worker can all import it (``tests/test_layers.py`` holds
the layers to that):

- :mod:`~workerrmq.core.consumer`: the consumer definition, each field's default,
  bounds and meaning;
- :mod:`~workerrmq.core.policy`: what an outcome means, how long to wait, which delay tier;
- :mod:`~workerrmq.core.protocol`: the AMQP and HTTP headers WorkerRMQ reads and writes;
- :mod:`~workerrmq.core.status`: the states of consumers, runners and circuits;
- :mod:`~workerrmq.core.credentials`, :mod:`~workerrmq.core.headers`,
  :mod:`~workerrmq.core.signing`, :mod:`~workerrmq.core.scopes`: the rules for
  secrets, configurable endpoint headers, request signatures and API key scopes.
"""
