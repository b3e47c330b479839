"""The benchmark: WorkerRMQ against its competitors, on one machine, in one run.

Run it with ``python -m bench.run`` (``--quick`` for a tiny version, ``--out DIR``
for where the report goes; docs/ by default).
"""
