"""The runtime from Python: shutdown aborts through the callbacks before it returns and the
next Socket starts it again; configure's rejections; completion queues on plain threads;
options."""

import os
import socket
import threading

import pytest
from conftest import WAIT, Completions, connect_to

import sockasync
from sockasync import Option, SocketError


def test_shutdown_aborts_pending_operations_before_it_returns_and_the_runtime_restarts(
    plain_listener,
):
    sock, peer = connect_to(plain_listener)
    done = Completions()
    with peer, sock, sockasync.AsyncArgs(done) as args:
        args.set_buffer(bytearray(8))
        assert sock.receive_async(args)
        sockasync.shutdown()
        # No waiting: the callback has run by the time shutdown returns.
        assert [c["error"] for c in done.items] == [SocketError.OPERATION_ABORTED]
        with pytest.raises(sockasync.ObjectDisposedError):
            sock.receive_async(args)
    sock2, peer2 = connect_to(plain_listener)  # a fresh start
    with sock2, peer2:
        peer2.sendall(b"again")
        buf = bytearray(8)
        with sockasync.AsyncArgs(done) as args:
            args.set_buffer(buf)
            if sock2.receive_async(args):
                done.wait(2)
            assert args.transferred() == b"again"


def test_shutdown_inside_a_callback_is_refused():
    refused = []
    called = threading.Event()

    def try_shutdown(_sock, _args):
        try:
            sockasync.shutdown()
        except sockasync.InvalidOperationError as exc:
            refused.append(exc.status)
        called.set()

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        sock, peer = connect_to(listener)
        with sock, peer, sockasync.AsyncArgs(try_shutdown) as args:
            assert sock.receive_async(args)
            peer.sendall(b"x")
            assert called.wait(WAIT)
    assert refused == [sockasync.Status.INVALID_OPERATION]


def test_configure_is_refused_while_running_and_checks_its_arguments():
    with sockasync.Socket():  # running
        with pytest.raises(sockasync.InvalidOperationError):
            sockasync.configure(2, sockasync.Dispatch.POOL)
    sockasync.shutdown()
    with pytest.raises(sockasync.ArgumentError):
        sockasync.configure(0)
    with pytest.raises(sockasync.ArgumentError):
        sockasync.configure(1, 7)


def test_the_backend_is_chosen_before_start_and_batched_sends_arrive_in_order():
    sockasync.shutdown()
    with pytest.raises(sockasync.ArgumentError):
        sockasync.set_backend(9)
    sockasync.set_backend(sockasync.Backend.IO_URING)
    try:
        running = sockasync.backend()
        with pytest.raises(sockasync.InvalidOperationError):
            sockasync.set_backend(sockasync.Backend.EPOLL)
        assert running in (sockasync.Backend.IO_URING, sockasync.Backend.EPOLL)
        listener = socket.create_server(("127.0.0.1", 0))
        sock, peer = connect_to(listener)
        with sock:
            sock.set_option(Option.BATCH_SENDS, 1)
            # In effect only on io_uring (on epoll it reads back 0 and sends go at once).
            assert sock.get_option(Option.BATCH_SENDS) == int(running == sockasync.Backend.IO_URING)
            sent = Completions()
            all_args = [sockasync.AsyncArgs(sent) for _ in range(50)]
            pending = 0
            for i, a in enumerate(all_args):
                a.set_buffer(bytearray(b"%03d;" % i))
                pending += bool(sock.send_async(a))
            if running == sockasync.Backend.IO_URING:
                assert pending == 50  # batched sends go pending (no close races them here)
            sent.wait(pending)
            expected = b"".join(b"%03d;" % i for i in range(50))
            got = b""
            peer.settimeout(WAIT)
            while len(got) < len(expected):
                got += peer.recv(4096)
            assert got == expected
            for a in all_args:
                a.free()
        peer.close()
        listener.close()
    finally:
        sockasync.shutdown()
        # Back to what the environment chose for the rest of the suite.
        default = os.environ.get("SOCKASYNC_BACKEND", "epoll").upper()
        sockasync.set_backend(sockasync.Backend[default])


def test_a_completion_queue_serves_a_plain_thread(connected):
    sock, peer = connected
    with sockasync.CompletionQueue() as queue, sockasync.AsyncArgs(queue=queue) as args:
        assert queue.wait(timeout=0) == []
        args.set_buffer(bytearray(8))
        assert sock.receive_async(args)
        taken = []
        waiter = threading.Thread(target=lambda: taken.extend(queue.wait(timeout=WAIT)))
        waiter.start()
        peer.sendall(b"queued")
        waiter.join(WAIT)
        assert taken == [args]
        assert args.transferred() == b"queued"
        assert queue.wait(timeout=0.01) == []  # each completion is taken once


def test_a_callback_and_a_queue_at_once_are_refused():
    with sockasync.CompletionQueue() as queue:
        with pytest.raises(ValueError):
            sockasync.AsyncArgs(lambda s, a: None, queue=queue)


def test_options_round_trip(connected):
    sock, _peer = connected
    sock.set_option(Option.NO_DELAY, 1)
    assert sock.get_option(Option.NO_DELAY) == 1
    sock.set_option(Option.NO_DELAY, 0)
    assert sock.get_option(Option.NO_DELAY) == 0
    sock.set_option(Option.LINGER, 5)
    assert sock.get_option(Option.LINGER) == 5
    with pytest.raises(sockasync.ArgumentError):
        sock.set_option(Option.LINGER, 70000)


def test_the_descriptor_is_the_kernels(connected):
    sock, peer = connected
    fd = sock.fileno()
    view = socket.socket(fileno=fd)  # a view on the same socket, never closed by Python
    try:
        assert view.getpeername() == peer.getsockname()
    finally:
        view.detach()
    sock.close()
    with pytest.raises(sockasync.ObjectDisposedError):
        sock.fileno()


def test_adopting_without_ownership_works_on_a_duplicate():
    ours, theirs = socket.socketpair()
    with ours, theirs:
        adopted = sockasync.Socket.from_fd(ours.fileno())
        adopted.free()  # closes the library's duplicate only
        ours.sendall(b"still open")
        assert theirs.recv(16) == b"still open"


def test_busy_poll_is_set_before_start_checked_and_traffic_flows_with_it():
    sockasync.shutdown()
    before = sockasync.busy_poll()
    with pytest.raises(sockasync.ArgumentError):
        sockasync.set_busy_poll(1_000_001)
    with pytest.raises(sockasync.ArgumentError):
        sockasync.set_busy_poll(-1)
    with pytest.raises(sockasync.ArgumentError):
        sockasync.set_busy_poll(2**32 + 5)  # not wrapped into 5
    sockasync.set_busy_poll(200)
    try:
        assert sockasync.busy_poll() == 200
        listener = socket.create_server(("127.0.0.1", 0))
        sock, peer = connect_to(listener)
        with sock, peer:
            with pytest.raises(sockasync.InvalidOperationError):
                sockasync.set_busy_poll(0)
            assert sockasync.busy_poll() == 200
            done = Completions()
            with sockasync.AsyncArgs(done) as args:
                for i in range(100):
                    message = b"ping %d" % i
                    buf = bytearray(16)
                    args.set_buffer(buf)
                    if sock.receive_async(args):
                        peer.sendall(message)
                        done.wait(i + 1)
                    else:
                        pytest.fail("a receive with nothing sent completed at once")
                    assert args.transferred() == message
        listener.close()
        sockasync.shutdown()
        assert sockasync.busy_poll() == 200  # kept for the next start
    finally:
        sockasync.shutdown()
        sockasync.set_busy_poll(before)
