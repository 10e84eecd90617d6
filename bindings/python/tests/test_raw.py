"""The raw (.NET-shaped) layer: operations return True (pending, the callback comes later on
a library thread) or False (done now, results in the args), and raise when rejected."""

import ctypes
import hashlib
import os
import gc
import logging
import select
import threading
import weakref

import pytest
from conftest import WAIT, Completions, connect_to, pinned

import sockasync
from sockasync._native import lib
from sockasync import AsyncOperation, SocketError


def test_a_send_completes_at_once_and_no_callback_comes(connected, completions):
    sock, peer = connected
    with sockasync.AsyncArgs(completions) as args:
        args.set_buffer(b"hello")
        assert sock.send_async(args) is False
        assert args.socket_error == SocketError.SUCCESS
        assert args.bytes_transferred == 5
        assert args.last_operation == AsyncOperation.SEND
        assert peer.recv(16) == b"hello"
        # A later pending operation's callback is the first one to come.
        buf = bytearray(8)
        args.set_buffer(buf)
        assert sock.receive_async(args) is True
        peer.sendall(b"x")
        (first,) = completions.wait(1)
        assert first["operation"] == AsyncOperation.RECEIVE
        assert len(completions.items) == 1


def test_a_receive_goes_pending_and_calls_back_on_a_library_thread(connected, completions):
    sock, peer = connected
    buf = bytearray(16)
    with sockasync.AsyncArgs(completions) as args:
        args.set_buffer(buf)
        assert sock.receive_async(args) is True
        assert pinned(args)
        peer.sendall(b"ping")
        (done,) = completions.wait()
        assert done["socket"] is sock
        assert done["args"] is args
        assert done["error"] == SocketError.SUCCESS and done["bytes"] == 4
        assert done["thread"] is not threading.main_thread()
        assert bytes(buf[:4]) == b"ping"
        assert args.transferred() == b"ping"
        assert not pinned(args)


def wait_readable(sock):
    readable, _, _ = select.select([sock.fileno()], [], [], WAIT)
    assert readable, "no data arrived"


def test_a_receive_with_data_waiting_completes_at_once(connected, completions):
    sock, peer = connected
    peer.sendall(b"ready")
    wait_readable(sock)
    buf = ctypes.create_string_buffer(16)
    with sockasync.AsyncArgs(completions) as args:
        args.set_buffer(buf)
        assert sock.receive_async(args) is False
        assert args.transferred() == b"ready"
        assert args.last_operation == AsyncOperation.RECEIVE
    assert completions.items == []


def test_an_args_in_use_is_rejected_and_its_operation_still_completes(connected, completions):
    sock, peer = connected
    buf = bytearray(4)
    with sockasync.AsyncArgs(completions) as args:
        args.set_buffer(buf)
        assert sock.receive_async(args)
        with pytest.raises(sockasync.InProgressError) as caught:
            sock.receive_async(args)
        assert caught.value.status == sockasync.Status.IN_PROGRESS
        assert isinstance(caught.value, RuntimeError)
        with pytest.raises(sockasync.InProgressError):
            args.set_buffer(bytearray(4))
        with pytest.raises(sockasync.InProgressError):
            sock.send_async(args)
        peer.sendall(b"abcd")
        (done,) = completions.wait()
        assert done["bytes"] == 4 and bytes(buf) == b"abcd"
        assert not pinned(args)


def test_close_aborts_a_pending_receive(connected, completions):
    sock, _peer = connected
    with sockasync.AsyncArgs(completions) as args:
        args.set_buffer(bytearray(4))
        assert sock.receive_async(args)
        sock.close()
        (done,) = completions.wait()
        assert done["error"] == SocketError.OPERATION_ABORTED
        assert done["operation"] == AsyncOperation.RECEIVE
        with pytest.raises(sockasync.ObjectDisposedError):
            sock.receive_async(args)


def test_args_collected_while_in_flight_stay_alive_until_the_completion(connected):
    sock, peer = connected
    received = []
    done = threading.Event()

    def on_received(_sock, args):
        received.append(args.transferred())
        done.set()

    args = sockasync.AsyncArgs(on_received)
    buf = bytearray(32)
    args.set_buffer(buf)
    assert sock.receive_async(args)
    watch = weakref.ref(args)
    collected = threading.Event()
    weakref.finalize(args, collected.set)
    del args, buf, on_received
    gc.collect()
    assert watch() is not None  # pinned by its pending receive, buffer and all
    peer.sendall(b"still here")
    assert done.wait(WAIT)
    assert received == [b"still here"]
    # Once completed nothing holds it: it goes as soon as its callback has returned.
    assert collected.wait(WAIT)
    assert watch() is None


def test_a_buffer_in_use_cannot_be_resized_away(connected, completions):
    sock, peer = connected
    buf = bytearray(8)
    with sockasync.AsyncArgs(completions) as args:
        args.set_buffer(buf)
        assert sock.receive_async(args)
        with pytest.raises(BufferError):
            buf.extend(b"more")
        peer.sendall(b"z")
        completions.wait()


def test_a_receive_into_bytes_is_refused(connected, completions):
    sock, _peer = connected
    with sockasync.AsyncArgs(completions) as args:
        args.set_buffer(b"immutable")
        with pytest.raises(TypeError):
            sock.receive_async(args)
        assert not pinned(args)


def test_a_raising_callback_is_reported_to_the_hook_and_the_process_goes_on(connected):
    sock, peer = connected
    reported = []
    got_it = threading.Event()

    def hook(exc, args):
        reported.append((exc, args))
        got_it.set()

    def explode(_sock, _args):
        raise ValueError("boom in a callback")

    previous = sockasync.set_callback_exception_hook(hook)
    try:
        with sockasync.AsyncArgs(explode) as args:
            args.set_buffer(bytearray(4))
            assert sock.receive_async(args)
            peer.sendall(b"1")
            assert got_it.wait(WAIT)
            ((exc, which),) = reported
            assert isinstance(exc, ValueError) and str(exc) == "boom in a callback"
            assert which is args
            assert not pinned(args)
            # The reactor survived: the next operation completes as usual.
            fine = Completions()
            with sockasync.AsyncArgs(fine) as next_args:
                next_args.set_buffer(bytearray(4))
                assert sock.receive_async(next_args)
                peer.sendall(b"2")
                (done,) = fine.wait()
                assert done["bytes"] == 1
    finally:
        sockasync.set_callback_exception_hook(previous)


def test_by_default_a_raising_callback_is_logged(connected):
    sock, peer = connected
    records = []
    logged = threading.Event()

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)
            logged.set()

    keep = Keep(logging.ERROR)
    logger = logging.getLogger("sockasync")
    logger.addHandler(keep)
    try:

        def explode(_sock, _args):
            raise KeyError("lost key")

        with sockasync.AsyncArgs(explode) as args:
            assert sock.receive_async(args)  # zero-byte: waits for readability
            peer.sendall(b"!")
            assert logged.wait(WAIT)
        (record,) = records
        assert record.levelno == logging.ERROR
        assert record.exc_info[0] is KeyError
    finally:
        logger.removeHandler(keep)


def test_a_callback_may_start_the_next_operation_on_its_args(connected):
    sock, peer = connected
    chunks = []
    finished = threading.Event()
    buf = bytearray(1)

    def on_byte(s, args):
        while args.bytes_transferred:
            chunks.append(args.transferred())
            if s.receive_async(args):
                return  # pending: its callback carries on
            # completed at once: no callback comes for it, so handle it here
        finished.set()

    with sockasync.AsyncArgs(on_byte) as args:
        args.set_buffer(buf)
        assert sock.receive_async(args)
        peer.sendall(b"abcdef")
        peer.shutdown(2)
        assert finished.wait(WAIT)
        assert b"".join(chunks) == b"abcdef"


def test_an_accepted_socket_is_wrapped_once(completions):
    with sockasync.Socket() as listener:
        listener.bind("127.0.0.1:0")
        listener.listen()
        client = sockasync.Socket()
        connect_done = Completions()
        with sockasync.AsyncArgs(completions) as accept, sockasync.AsyncArgs(connect_done) as c:
            if listener.accept_async(accept):
                c.remote_endpoint = listener.local_endpoint
                if client.connect_async(c):
                    connect_done.wait()
                completions.wait()
            accepted = accept.accept_socket()
            assert accepted is accept.accept_socket()
            assert accepted.remote_endpoint == client.local_endpoint
            accepted.free()
        client.free()


def test_a_buffer_list_gathers_and_scatters(connected, completions):
    sock, peer = connected
    with sockasync.AsyncArgs(completions) as args:
        args.set_buffer_list([b"ab", bytearray(b"cd"), memoryview(b"ef")])
        assert not sock.send_async(args)
        assert args.bytes_transferred == 6
        assert peer.recv(16) == b"abcdef"
        first, second = bytearray(2), bytearray(4)
        args.set_buffer_list([first, second])
        peer.sendall(b"uvwxyz")
        wait_readable(sock)
        assert not sock.receive_async(args)
        assert args.bytes_transferred == 6
        assert (bytes(first), bytes(second)) == (b"uv", b"wxyz")


def test_a_socket_left_to_the_collector_warns_and_is_freed_at_the_next_call(plain_listener):
    sock, peer = connect_to(plain_listener)
    with peer:
        with pytest.warns(ResourceWarning, match="unfreed sockasync.Socket"):
            del sock
            gc.collect()
        # Not inside the finalizer (it would overwrite this thread's last status): the
        # next call into the binding frees it, and the peer sees the close.
        sockasync.AsyncArgs().free()
        assert peer.recv(1) == b""


def test_finalizers_leave_the_threads_last_status_alone():
    # A rejection's status must survive a garbage collection that runs before it is read.
    doomed = [sockasync.Socket(), sockasync.AsyncArgs(), sockasync.CompletionQueue()]
    doomed.append(doomed)  # a cycle: only the cyclic collector frees it
    with sockasync.Socket() as s:
        assert not lib.sock_bind(s._handle(), b"not an endpoint")
        with pytest.warns(ResourceWarning):
            del doomed
            assert gc.collect() > 0
        assert lib.sock_last_status() == sockasync.Status.INVALID_ARGUMENT


def test_a_pending_send_keeps_its_bytes_alive_after_the_caller_drops_them(connected, completions):
    sock, peer = connected
    size = 8 << 20  # far more than loopback buffers hold: the send must go pending
    data = os.urandom(size)
    digest = hashlib.sha256(data).digest()
    args = sockasync.AsyncArgs(completions)
    args.set_buffer(data)
    assert sock.send_async(args) is True
    del data, args  # the pending send alone holds them now
    gc.collect()
    received = hashlib.sha256()
    total = 0
    while total < size:
        chunk = peer.recv(1 << 20)
        assert chunk
        received.update(chunk)
        total += len(chunk)
    (done,) = completions.wait()
    assert done["error"] == SocketError.SUCCESS and done["bytes"] == size
    assert received.digest() == digest
