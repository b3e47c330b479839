"""(d) The broker-only ceiling: consume and ack, no HTTP (aio-pika, prefetch 64, one ack each).

Exits after --count acks and prints ``{"count", "first", "last"}`` (time.time()
of the first and the last ack) as one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aio_pika
import uvloop


async def drain(amqp_url: str, queue_name: str, count: int, prefetch: int) -> dict[str, float]:
    done = asyncio.Event()
    stats = {"count": 0, "first": 0.0, "last": 0.0}
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.declare_queue(queue_name, passive=True)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await message.ack()
            now = time.time()
            if not stats["count"]:
                stats["first"] = now
            stats["count"] += 1
            stats["last"] = now
            if stats["count"] >= count:
                done.set()

        await queue.consume(on_message)
        await done.wait()
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--amqp-url", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--prefetch", type=int, default=64)
    args = parser.parse_args()
    stats = uvloop.run(drain(args.amqp_url, args.queue, args.count, args.prefetch))
    print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    main()
