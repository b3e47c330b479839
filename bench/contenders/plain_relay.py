"""(b) The baseline: a plain aio-pika + aiohttp relay, as a good engineer writes it in an afternoon.

Prefetch 64, one POST per message on a shared keep-alive session, one ack per
message after a 2xx (anything else goes back to the queue). Exits after --count acks.
"""

from __future__ import annotations

import argparse
import asyncio

import aio_pika
import aiohttp
import uvloop


async def relay(amqp_url: str, queue_name: str, target: str, count: int, prefetch: int) -> None:
    done = asyncio.Event()
    acked = 0
    connection = await aio_pika.connect(amqp_url)
    async with connection, aiohttp.ClientSession() as http:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.declare_queue(queue_name, passive=True)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal acked
            headers = {"Content-Type": message.content_type or "application/octet-stream"}
            try:
                async with http.post(target, data=message.body, headers=headers) as response:
                    await response.read()
                    delivered = 200 <= response.status < 300
            except aiohttp.ClientError:
                delivered = False
            if not delivered:
                await message.nack(requeue=True)
                return
            await message.ack()
            acked += 1
            if acked >= count:
                done.set()

        await queue.consume(on_message)
        await done.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--amqp-url", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--prefetch", type=int, default=64)
    args = parser.parse_args()
    uvloop.run(relay(args.amqp_url, args.queue, args.target, args.count, args.prefetch))


if __name__ == "__main__":
    main()
