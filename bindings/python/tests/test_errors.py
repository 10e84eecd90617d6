"""Each rejection status raises its exception (mirroring .NET's), with the status, the
SocketError code and the library's message attached; completion errors raise from await."""

import asyncio
import errno
import io

import pytest
from conftest import Completions, refused_endpoint, run

import sockasync
from sockasync import SocketError, Status
from sockasync._native import lib
from sockasync.errors import exception_for, last_exception


def test_null_argument_is_argument_null_error():
    assert not lib.sock_listen(None, 1)
    exc = last_exception()
    assert type(exc) is sockasync.ArgumentNullError
    assert isinstance(exc, sockasync.ArgumentError) and isinstance(exc, TypeError)
    assert isinstance(exc, ValueError)  # ArgumentNullException is an ArgumentException
    assert exc.status == Status.NULL_ARGUMENT and exc.message


def test_invalid_argument_is_argument_error():
    with sockasync.Socket() as s:
        with pytest.raises(sockasync.ArgumentError) as caught:
            s.bind("not an endpoint")
    assert type(caught.value) is sockasync.ArgumentError
    assert isinstance(caught.value, ValueError)
    assert caught.value.status == Status.INVALID_ARGUMENT
    assert caught.value.message  # the library said why


def test_in_progress_is_in_progress_error(connected):
    sock, _peer = connected
    with sockasync.AsyncArgs(Completions()) as args:
        assert sock.receive_async(args)
        with pytest.raises(sockasync.InProgressError) as caught:
            sock.receive_async(args)
        sock.close()
    assert isinstance(caught.value, sockasync.InvalidOperationError)
    assert caught.value.status == Status.IN_PROGRESS


def test_disposed_is_object_disposed_error():
    with sockasync.Socket() as s:
        s.close()
        with pytest.raises(sockasync.ObjectDisposedError) as caught:
            s.bind("127.0.0.1:0")
    assert isinstance(caught.value, sockasync.InvalidOperationError)
    assert isinstance(caught.value, RuntimeError)
    assert caught.value.status == Status.DISPOSED


def test_a_freed_handle_is_object_disposed_without_calling_the_library():
    s = sockasync.Socket()
    s.free()
    with pytest.raises(sockasync.ObjectDisposedError):
        s.listen()


def test_invalid_operation_is_invalid_operation_error():
    with sockasync.Socket() as s, sockasync.AsyncArgs(Completions()) as args:
        with pytest.raises(sockasync.InvalidOperationError) as caught:
            s.accept_async(args)  # not listening
    assert type(caught.value) is sockasync.InvalidOperationError
    assert caught.value.status == Status.INVALID_OPERATION


def test_not_supported_is_not_supported_error():
    with sockasync.Socket(sockasync.AddressFamily.INTER_NETWORK) as s:
        with pytest.raises(sockasync.NotSupportedError) as caught:
            s.bind("[::1]:0")
    assert isinstance(caught.value, io.UnsupportedOperation)
    assert caught.value.status == Status.NOT_SUPPORTED


def test_socket_error_is_socket_exception_with_code_and_errno():
    with sockasync.Socket() as first, sockasync.Socket() as second:
        first.bind("127.0.0.1:0")
        first.listen()
        with pytest.raises(sockasync.SocketException) as caught:
            second.bind(first.local_endpoint)
    exc = caught.value
    assert isinstance(exc, OSError)
    assert exc.status == Status.SOCKET_ERROR
    assert exc.socket_error == SocketError.ADDRESS_ALREADY_IN_USE
    assert exc.errno == errno.EADDRINUSE
    assert "AddressAlreadyInUse" in str(exc) or "ADDRESS_ALREADY_IN_USE" in str(exc)


def test_an_endpoint_of_the_wrong_type_is_a_type_error():
    with sockasync.Socket() as s:
        with pytest.raises(TypeError):
            s.bind(8080)


def test_an_unknown_option_is_argument_error():
    with sockasync.Socket() as s:
        with pytest.raises(sockasync.ArgumentError):
            s.set_option(99, 1)


@pytest.mark.parametrize(
    "status, cls, builtin",
    [
        (Status.OUT_OF_MEMORY, sockasync.OutOfMemory, MemoryError),
        (Status.INTERNAL, sockasync.InternalError, RuntimeError),
        (1234, sockasync.InternalError, RuntimeError),
    ],
)
def test_statuses_loopback_cannot_provoke_still_map(status, cls, builtin):
    exc = exception_for(status, 0, "message")
    assert type(exc) is cls and isinstance(exc, builtin)
    assert isinstance(exc, sockasync.SockAsyncError)


def test_every_status_but_ok_has_its_own_exception():
    classes = {type(exception_for(s)) for s in Status if s != Status.OK}
    assert len(classes) == len(Status) - 1


def test_a_refused_connect_raises_from_await():
    holder, endpoint = refused_endpoint()
    with holder, sockasync.Socket() as s:

        async def go():
            await s.connect(endpoint)

        with pytest.raises(sockasync.SocketException) as caught:
            run(go())
    assert caught.value.socket_error == SocketError.CONNECTION_REFUSED
    assert caught.value.errno == errno.ECONNREFUSED
    assert isinstance(caught.value, OSError)


def test_a_rejection_raises_at_the_call_without_a_loop_turn():
    async def go():
        loop_turned = []
        asyncio.get_running_loop().call_soon(loop_turned.append, True)
        with sockasync.Socket() as s:
            s.close()
            with pytest.raises(sockasync.ObjectDisposedError):
                await s.send(b"x")
        return list(loop_turned)  # as it was when the call raised

    assert run(go()) == []
