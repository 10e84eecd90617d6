"""An interpreter that exits with operations pending neither hangs nor crashes: the atexit
runtime shutdown aborts them (callbacks run while the interpreter is whole) and joins the
library's threads before finalization."""

import os
import subprocess
import sys
import textwrap

import pytest
from conftest import PACKAGE_ROOT, WAIT

PRELUDE = """
import socket, sys
sys.path.insert(0, {root!r})
import sockasync
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(1)
sock = sockasync.Socket()

def connect():
    import threading
    connected = threading.Event()
    args = sockasync.AsyncArgs(lambda s, a: connected.set())
    args.remote_endpoint = listener.getsockname()
    if sock.connect_async(args):
        connected.wait()
    assert args.socket_error == sockasync.SocketError.SUCCESS
    return listener.accept()[0]
""".format(root=str(PACKAGE_ROOT))

RAW_PENDING = """
def on_done(_sock, args):
    print("completed:", args.socket_error.name, flush=True)

peer = connect()
receive = sockasync.AsyncArgs(on_done)
receive.set_buffer(bytearray(16))
assert sock.receive_async(receive)
print("exiting with a receive pending", flush=True)
"""

ASYNCIO_PENDING = """
import asyncio

async def start():
    await sock.connect(listener.getsockname())
    global receiving
    receiving = asyncio.ensure_future(sock.receive(16))
    await asyncio.sleep(0)
    assert not receiving.done()

loop = asyncio.new_event_loop()
loop.run_until_complete(start())
peer, _ = listener.accept()
print("exiting with a receive pending", flush=True)
"""

CALLBACK_RUNNING = """
import threading
started = threading.Event()

def slow(_sock, args):
    started.set()
    threading.Event().wait(0.3)  # the work of a slow callback, still running at exit
    print("callback finished:", args.socket_error.name, flush=True)

peer = connect()
receive = sockasync.AsyncArgs(slow)
assert sock.receive_async(receive)
peer.sendall(b"go")
started.wait()
print("exiting while a callback runs", flush=True)
"""

RAISING_CALLBACK = """
import threading
raised = threading.Event()

def explode(_sock, _args):
    raised.set()
    raise ValueError("nobody configured logging")

peer = connect()
receive = sockasync.AsyncArgs(explode)
assert sock.receive_async(receive)
peer.sendall(b"!")
raised.wait()
"""

WAITER_BLOCKED = """
import threading
queue = sockasync.CompletionQueue()
waiting = threading.Event()

def wait_forever():
    waiting.set()
    queue.wait(timeout=None)

threading.Thread(target=wait_forever, daemon=True).start()
waiting.wait()
print("exiting with a thread in CompletionQueue.wait", flush=True)
"""


def run_script(body, **env):
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(PRELUDE + body)],
        capture_output=True,
        text=True,
        timeout=WAIT * 3,  # a hang fails here
        env={**os.environ, **env},
    )


@pytest.mark.parametrize("dispatch", ["inline", "pool"])
def test_exit_with_a_pending_raw_receive(dispatch):
    result = run_script(RAW_PENDING, SOCKASYNC_DISPATCH=dispatch, SOCKASYNC_REACTOR_THREADS="2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "exiting with a receive pending",
        "completed: OPERATION_ABORTED",  # by the atexit shutdown
    ]
    assert result.stderr == ""


def test_exit_with_a_pending_asyncio_receive():
    result = run_script(ASYNCIO_PENDING)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["exiting with a receive pending"]
    assert "Traceback" not in result.stderr and "Fatal" not in result.stderr


def test_exit_while_a_callback_runs_waits_for_it():
    result = run_script(CALLBACK_RUNNING)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "exiting while a callback runs",
        "callback finished: SUCCESS",  # the shutdown at exit waited for it
    ]
    assert result.stderr == ""


def test_without_logging_configured_a_callback_exception_still_reaches_stderr():
    result = run_script(RAISING_CALLBACK)
    assert result.returncode == 0, result.stderr
    assert "exception in a sockasync completion callback" in result.stderr
    assert "Traceback" in result.stderr
    assert "ValueError: nobody configured logging" in result.stderr


def test_exit_with_a_thread_blocked_in_a_queue_wait():
    result = run_script(WAITER_BLOCKED)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["exiting with a thread in CompletionQueue.wait"]
    assert result.stderr == ""


def test_no_socket_after_the_atexit_shutdown():
    # atexit runs the last registered first: order them after, shutdown, before.
    result = run_script(
        """
import atexit

def before_shutdown():
    sockasync.Socket().free()
    print("before: fine", flush=True)

def after_shutdown():
    try:
        sockasync.Socket()
    except sockasync.InvalidOperationError:
        print("after: refused", flush=True)

atexit.unregister(sockasync._core._shutdown_at_exit)
atexit.register(after_shutdown)
atexit.register(sockasync._core._shutdown_at_exit)
atexit.register(before_shutdown)
"""
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["before: fine", "after: refused"]
