"""The broker gateway: management HTTP API client and AMQP publisher."""
