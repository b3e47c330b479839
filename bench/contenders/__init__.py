"""Competitors of the WorkerRMQ worker, each run as its own process by bench.run.

Every contender takes ``--count N`` and exits by itself once it has handled N
messages; bench.run also stops it (SIGTERM) when a case ends or times out.
"""
