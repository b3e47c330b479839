"""The consumer engine: it takes messages from queues and delivers them to HTTP endpoints."""
