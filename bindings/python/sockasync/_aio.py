"""asyncio on completion queues: no callback from a foreign thread ever runs Python here.

Each event loop gets one CompletionQueue, watched with loop.add_reader; an operation that
goes pending parks a future on its args, and the reader resolves it on the loop's thread.
One that completes at once returns without yielding to the loop.

Cancelling an awaited operation cannot stop it (the C API has no per-operation cancel):
the kernel may already have taken a receive's bytes or sent part of a send. So the
socket is closed, which aborts it and every other pending operation on it, rather than
letting a later operation see a stream with a hole in it.
"""

import asyncio
import ctypes
import weakref

from ._core import AsyncArgs, CompletionQueue
from .enums import SocketError
from .errors import completion_exception

_BATCH = 64


class _LoopQueue:
    # Holds no reference to its loop, so the loop (a weak key below) can be collected;
    # the loop holds this through its reader.
    def __init__(self, loop):
        self.queue = CompletionQueue()
        self.fd = self.queue.fileno()
        loop.add_reader(self.fd, self._drain)

    def _drain(self):
        while True:
            done = self.queue.wait(_BATCH, 0)
            for args in done:
                waiter, args._waiter = args._waiter, None
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
            if len(done) < _BATCH:
                return


_queues = weakref.WeakKeyDictionary()


def _queue_for(loop):
    q = _queues.get(loop)
    if q is None:
        q = _queues[loop] = _LoopQueue(loop)
    return q


async def _run(sock, start, prepare, operation, result):
    """Starts `start` with fresh queued args set up by `prepare`, waits for it if it went
    pending, raises SocketException if it completed with an error, and returns what
    `result` reads from the args (before they are freed)."""
    loop = asyncio.get_running_loop()
    args = AsyncArgs(queue=_queue_for(loop).queue)
    freed = True
    try:
        prepare(args)
        if start(sock, args):
            waiter = loop.create_future()
            args._waiter = waiter
            try:
                await waiter
            except asyncio.CancelledError:
                # Maybe still in flight: not freed here, the args stay pinned until the
                # abort (or the completion already queued) is taken from the queue.
                freed = False
                sock.close()
                raise
        if args.socket_error != SocketError.SUCCESS:
            raise completion_exception(args.socket_error, operation)
        return result(args)
    finally:
        if freed:
            args.free()


def _nothing(args):
    return None


def _bytes_transferred(args):
    return args.bytes_transferred


async def connect(sock, endpoint):
    def setup(args):
        args.remote_endpoint = endpoint

    await _run(sock, type(sock).connect_async, setup, "connect", _nothing)


async def accept(sock):
    return await _run(sock, type(sock).accept_async, _nothing, "accept", AsyncArgs.accept_socket)


async def send(sock, data):
    def setup(args):
        args.set_buffer(data)

    return await _run(sock, type(sock).send_async, setup, "send", _bytes_transferred)


async def receive_into(sock, buffer):
    def setup(args):
        args.set_buffer(buffer)

    return await _run(sock, type(sock).receive_async, setup, "receive", _bytes_transferred)


async def receive(sock, max_bytes):
    buffer = ctypes.create_string_buffer(max_bytes)
    n = await receive_into(sock, buffer)
    return ctypes.string_at(buffer, n)


async def send_to(sock, data, endpoint):
    def setup(args):
        args.remote_endpoint = endpoint
        args.set_buffer(data)

    return await _run(sock, type(sock).send_to_async, setup, "send-to", _bytes_transferred)


async def receive_from(sock, max_bytes):
    buffer = ctypes.create_string_buffer(max_bytes)

    def setup(args):
        args.set_buffer(buffer)

    def result(args):
        return ctypes.string_at(buffer, args.bytes_transferred), args.remote_endpoint

    return await _run(sock, type(sock).receive_from_async, setup, "receive-from", result)


async def disconnect(sock):
    await _run(sock, type(sock).disconnect_async, _nothing, "disconnect", _nothing)
