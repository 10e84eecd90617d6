"""await on completion queues: TCP echo (both ends the binding, or one end Python's socket),
UDP, Unix sockets, adoption, synchronous completion without a loop turn, close and
cancellation."""

import asyncio
import os
import socket
import threading

import pytest
from conftest import WAIT, Completions, run

import sockasync
from sockasync import AddressFamily, ShutdownHow, SocketError, SocketFlags, SocketType

SIZES = [1, 100, 65536, 1 << 20]


def held_tokens():
    with sockasync._core._pins._lock:
        return set(sockasync._core._pins._held)


async def listening(endpoint="127.0.0.1:0", family=AddressFamily.INTER_NETWORK):
    listener = sockasync.Socket(family)
    listener.bind(endpoint)
    listener.listen()
    return listener


async def connected_pair(endpoint="127.0.0.1:0", family=AddressFamily.INTER_NETWORK):
    with await listening(endpoint, family) as listener:
        client = sockasync.Socket(family)
        accepting = asyncio.ensure_future(listener.accept())
        await client.connect(listener.local_endpoint)
        return client, await accepting


async def receive_exactly(sock, n):
    chunks, got = [], 0
    while got < n:
        chunk = await sock.receive(min(n - got, 1 << 16))
        assert chunk, f"end of stream after {got} of {n} bytes"
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


async def echo_until_end(sock):
    total = 0
    while True:
        chunk = await sock.receive(1 << 16)
        if not chunk:
            return total
        total += await sock.send(chunk)


def test_tcp_echo_with_both_ends_through_the_binding():
    async def go():
        client, server = await connected_pair()
        with client, server:
            echoing = asyncio.ensure_future(echo_until_end(server))
            for size in SIZES:
                message = os.urandom(size)
                sending = asyncio.ensure_future(client.send(message))
                assert await receive_exactly(client, size) == message
                assert await sending == size
            client.shutdown(ShutdownHow.SEND)
            assert await echoing == sum(SIZES)
            server.shutdown(ShutdownHow.SEND)
            assert await client.receive(1) == b""

    run(go())


def plain_echo_server(listener):
    conn, _ = listener.accept()
    with conn:
        while data := conn.recv(1 << 16):
            conn.sendall(data)


def test_tcp_echo_against_a_plain_python_socket_server():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        server = threading.Thread(target=plain_echo_server, args=(listener,))
        server.start()

        async def go():
            with sockasync.Socket() as client:
                await client.connect(listener.getsockname())
                for size in SIZES:
                    message = os.urandom(size)
                    sending = asyncio.ensure_future(client.send(message))
                    assert await receive_exactly(client, size) == message
                    assert await sending == size
                await client.disconnect()  # the server sees end of stream and returns

        run(go())
        server.join(WAIT)
        assert not server.is_alive()


def test_tcp_echo_server_through_the_binding_for_a_plain_python_client():
    async def serve(listener):
        conn = await listener.accept()
        with conn:
            return await echo_until_end(conn)

    async def go():
        with await listening() as listener:
            host, port = listener.local_endpoint.rsplit(":", 1)
            serving = asyncio.ensure_future(serve(listener))
            message = os.urandom(300_000)

            def client():
                with socket.create_connection((host, int(port)), timeout=WAIT) as c:
                    c.sendall(message)
                    c.shutdown(socket.SHUT_WR)
                    back = b""
                    while data := c.recv(1 << 16):
                        back += data
                    return back

            back = await asyncio.get_running_loop().run_in_executor(None, client)
            assert back == message
            assert await serving == len(message)

    run(go())


def test_a_synchronous_completion_returns_without_a_loop_turn_and_a_pending_one_yields():
    async def go():
        client, server = await connected_pair()
        with client, server:
            loop = asyncio.get_running_loop()
            turns = []
            loop.call_soon(turns.append, "first")
            assert await client.send(b"now") == 3  # an empty socket buffer takes it at once
            assert turns == []
            # Nothing for the client to receive: it goes pending, the loop runs, and what
            # the loop ran makes the server send what completes it.
            loop.call_soon(lambda: asyncio.ensure_future(server.send(b"later")))
            assert await client.receive(16) == b"later"
            assert turns == ["first"]

    run(go())


def test_close_aborts_a_pending_receive_with_operation_aborted():
    async def go():
        client, server = await connected_pair()
        with client, server:
            receiving = asyncio.ensure_future(client.receive(16))
            await asyncio.sleep(0)  # let it start (and go pending: nothing was sent)
            assert not receiving.done()
            client.close()
            with pytest.raises(sockasync.SocketException) as caught:
                await receiving
            assert caught.value.socket_error == SocketError.OPERATION_ABORTED
            with pytest.raises(sockasync.ObjectDisposedError):
                await client.send(b"x")

    run(go())


def test_cancelling_a_pending_operation_closes_the_socket():
    async def go():
        client, server = await connected_pair()
        with client, server:
            before = held_tokens()
            receiving = asyncio.ensure_future(client.receive(16))
            await asyncio.sleep(0)
            (token,) = held_tokens() - before
            receiving.cancel()
            with pytest.raises(asyncio.CancelledError):
                await receiving
            with pytest.raises(sockasync.ObjectDisposedError):
                await client.receive(16)
            # Closing with an operation aborted resets the connection: the peer knows.
            with pytest.raises(sockasync.SocketException) as caught:
                await server.receive(16)
            assert caught.value.socket_error == SocketError.CONNECTION_RESET
        # The aborted receive's completion still arrives (no one awaits it) and unpins its
        # args: polled, as nothing is left to await.
        while token in held_tokens():
            await asyncio.sleep(0.001)

    run(go())


def test_receive_into_fills_a_slice_of_a_bytearray():
    async def go():
        client, server = await connected_pair()
        with client, server:
            buf = bytearray(b"." * 10)
            await server.send(b"abc")
            n = await client.receive_into(memoryview(buf)[4:8])
            assert (n, bytes(buf)) == (3, b"....abc...")
            with pytest.raises(TypeError):
                await client.receive_into(b"read-only")

    run(go())


def test_disconnect_sends_end_of_stream_after_queued_sends():
    async def go():
        client, server = await connected_pair()
        with client, server:
            await client.send(b"last words")
            await client.disconnect()
            assert await receive_exactly(server, 10) == b"last words"
            assert await server.receive(16) == b""

    run(go())


def test_many_completions_at_once_are_all_delivered():
    count = 150  # more than one batch of the queue's reader

    async def go():
        client, server = await connected_pair()
        with client, server:
            bufs = [bytearray(1) for _ in range(count)]
            receiving = [asyncio.ensure_future(client.receive_into(b)) for b in bufs]
            await asyncio.sleep(0)
            payload = bytes(range(count))
            await server.send(payload)
            assert await asyncio.gather(*receiving) == [1] * count
            assert b"".join(bufs) == payload  # served in the order they were started

    run(go())


def test_udp_send_to_and_receive_from():
    async def go():
        with sockasync.Socket(type=SocketType.DGRAM) as a, sockasync.Socket(type=SocketType.DGRAM) as b:
            a.bind("127.0.0.1:0")
            b.bind("127.0.0.1:0")
            receiving = asyncio.ensure_future(b.receive_from(2048))
            datagram = os.urandom(1200)
            assert await a.send_to(datagram, b.local_endpoint) == len(datagram)
            data, sender = await receiving
            assert data == datagram
            assert sender == a.local_endpoint
            assert await b.send_to(b"", ("127.0.0.1", int(sender.rsplit(":", 1)[1]))) == 0
            assert await a.receive_from(16) == (b"", b.local_endpoint)

    run(go())


def test_a_datagram_larger_than_the_buffer_is_truncated():
    done = Completions()
    with sockasync.Socket(type=SocketType.DGRAM) as a, sockasync.Socket(type=SocketType.DGRAM) as b:
        a.bind("127.0.0.1:0")
        b.bind("127.0.0.1:0")
        with sockasync.AsyncArgs(done) as receive, sockasync.AsyncArgs(done) as send:
            buf = bytearray(4)
            receive.set_buffer(buf)
            assert b.receive_from_async(receive)
            send.remote_endpoint = b.local_endpoint
            send.set_buffer(b"0123456789")
            assert not a.send_to_async(send)
            done.wait()
            assert receive.bytes_transferred == 4 and bytes(buf) == b"0123"
            assert SocketFlags.TRUNCATED in receive.flags
            assert receive.remote_endpoint == a.local_endpoint


def test_unix_stream_sockets_in_the_abstract_namespace():
    async def go():
        name = f"unix:@sockasync-python-{os.getpid()}"
        client, server = await connected_pair(name, AddressFamily.UNIX)
        with client, server:
            assert server.local_endpoint == name
            await client.send(b"over unix")
            assert await receive_exactly(server, 9) == b"over unix"

    run(go())


def test_an_adopted_socketpair_end_works_and_python_keeps_the_other():
    ours, theirs = socket.socketpair()
    with theirs:
        theirs.settimeout(WAIT)
        adopted = sockasync.Socket.from_fd(ours, take_ownership=True)
        assert ours.fileno() == -1  # detached: Python will not close it too

        async def go():
            with adopted:
                await adopted.send(b"from sockasync")
                assert theirs.recv(64) == b"from sockasync"
                theirs.sendall(b"from python")
                assert await receive_exactly(adopted, 11) == b"from python"

        run(go())
        assert theirs.recv(1) == b""  # freeing the adopted end closed its descriptor


def test_ipv6_loopback():
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no ::1 on this machine")

    async def go():
        client, server = await connected_pair("[::1]:0", AddressFamily.INTER_NETWORK_V6)
        with client, server:
            assert client.remote_endpoint == server.local_endpoint
            assert client.remote_endpoint.startswith("[::1]:")
            await client.send(b"six")
            assert await receive_exactly(server, 3) == b"six"

    run(go())
