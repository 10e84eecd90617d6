"""Helpers for the binding's tests: everything runs over loopback against the real library."""

import asyncio
import socket
import sys
import threading
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
REPO_ROOT = PACKAGE_ROOT.parents[1]
sys.path.insert(0, str(PACKAGE_ROOT))

import sockasync  # noqa: E402

# Each test that waits for a completion waits at most this long; a hang fails, never stalls.
WAIT = 10


class Completions:
    """A raw callback that records each completion (with the thread it ran on) and lets a
    test wait for them."""

    def __init__(self):
        self._cv = threading.Condition()
        self.items = []

    def __call__(self, sock, args):
        record = {
            "socket": sock,
            "args": args,
            "error": args.socket_error,
            "bytes": args.bytes_transferred,
            "operation": args.last_operation,
            "thread": threading.current_thread(),
        }
        with self._cv:
            self.items.append(record)
            self._cv.notify_all()

    def wait(self, count=1):
        with self._cv:
            assert self._cv.wait_for(lambda: len(self.items) >= count, WAIT), (
                f"{len(self.items)} of {count} completions within {WAIT} s"
            )
            return self.items[:count]


@pytest.fixture
def completions():
    return Completions()


def run(coro):
    """Runs a coroutine on a fresh loop, failing instead of hanging. In asyncio's debug mode,
    which raises if a future is resolved from a thread other than the loop's: the binding's
    awaits must never be completed from a library thread."""

    async def bounded():
        return await asyncio.wait_for(coro, WAIT)

    return asyncio.run(bounded(), debug=True)


@pytest.fixture
def plain_listener():
    """A Python socket listening on 127.0.0.1 (the far end the binding did not make)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener


def connect_to(plain_listener):
    """(binding socket, Python socket) connected to each other over loopback."""
    sock = sockasync.Socket()
    done = Completions()
    with sockasync.AsyncArgs(done) as args:
        args.remote_endpoint = plain_listener.getsockname()
        if sock.connect_async(args):
            done.wait()
        assert args.socket_error == sockasync.SocketError.SUCCESS
    plain_listener.settimeout(WAIT)
    peer, _ = plain_listener.accept()
    peer.settimeout(WAIT)
    return sock, peer


@pytest.fixture
def connected(plain_listener):
    sock, peer = connect_to(plain_listener)
    yield sock, peer
    sock.free()
    peer.close()


def pinned(args):
    """Whether an operation in flight keeps `args` (and its buffer) alive."""
    return sockasync._core._pins.holds(args._token)


def refused_endpoint():
    """An endpoint on 127.0.0.1 with nothing listening: bound, so no one else takes it."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    return holder, "%s:%d" % holder.getsockname()
