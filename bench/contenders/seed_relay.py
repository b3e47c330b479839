"""(c) The seed's design: pika BlockingConnection, prefetch 1, ``requests.post`` per message,
ack after a 2xx (anything else goes back to the queue). Exits after --count acks.
"""

from __future__ import annotations

import argparse

import pika
import requests


def relay(amqp_url: str, queue: str, target: str, count: int) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=1)
    acked = 0

    def callback(ch, method, properties, body):  # type: ignore[no-untyped-def]
        nonlocal acked
        headers = {"Content-Type": properties.content_type or "application/octet-stream"}
        try:
            response = requests.post(target, data=body, headers=headers, timeout=10)
            delivered = 200 <= response.status_code < 300
        except requests.RequestException:
            delivered = False
        if not delivered:
            ch.basic_nack(method.delivery_tag, requeue=True)
            return
        ch.basic_ack(method.delivery_tag)
        acked += 1
        if acked >= count:
            ch.stop_consuming()

    channel.basic_consume(queue, callback)
    try:
        channel.start_consuming()
    finally:
        if connection.is_open:
            connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--amqp-url", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--count", type=int, required=True)
    args = parser.parse_args()
    relay(args.amqp_url, args.queue, args.target, args.count)


if __name__ == "__main__":
    main()
