"""WorkerRMQ: manage RabbitMQ queues and relay their messages to HTTP endpoints."""

__version__ = "0.1.0"
