"""Moved to :mod:`workerrmq.core.policy`; kept until worker/consumer.py imports it from there."""

from workerrmq.core.policy import *  # noqa: F403
from workerrmq.core.policy import __all__  # noqa: F401
