"""The README's example: both ends of a loopback connection through sockasync, awaited."""

import asyncio

import sockasync


async def main():
    with sockasync.Socket() as listener:
        listener.bind("127.0.0.1:0")  # port 0: any free one
        listener.listen()
        with sockasync.Socket() as client:
            accepting = asyncio.ensure_future(listener.accept())
            await client.connect(listener.local_endpoint)
            with await accepting as server:
                await client.send(b"hello")
                print(await server.receive(16))  # b'hello'


asyncio.run(main())
