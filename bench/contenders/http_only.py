"""(d) The HTTP-only ceiling: POST --count bodies of --size bytes, no broker.

aiohttp on uvloop, one keep-alive session, --concurrency requests in flight
(64, as the relays' prefetch).
"""

from __future__ import annotations

import argparse
import asyncio

import aiohttp
import uvloop


async def blast(target: str, count: int, size: int, concurrency: int) -> None:
    body = (b'{"pad": "' + b"x" * size)[: size - 2] + b'"}'
    headers = {"Content-Type": "application/json"}
    remaining = count

    async def client(http: aiohttp.ClientSession) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            async with http.post(target, data=body, headers=headers) as response:
                await response.read()

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        await asyncio.gather(*(client(http) for _ in range(concurrency)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    uvloop.run(blast(args.target, args.count, args.size, args.concurrency))


if __name__ == "__main__":
    main()
