"""Exceptions, mirroring what .NET's Socket API throws, each also a familiar Python one.

| status            | .NET                         | here                                         |
| NullArgument      | ArgumentNullException        | ArgumentNullError(ArgumentError, TypeError)  |
| InvalidArgument   | ArgumentException            | ArgumentError(ValueError)                    |
| InProgress        | InvalidOperationException    | InProgressError(InvalidOperationError)       |
| Disposed          | ObjectDisposedException      | ObjectDisposedError(InvalidOperationError)   |
| InvalidOperation  | InvalidOperationException    | InvalidOperationError(RuntimeError)          |
| NotSupported      | NotSupportedException        | NotSupportedError(io.UnsupportedOperation)   |
| SocketError       | SocketException              | SocketException(OSError), errno set          |
| OutOfMemory       | OutOfMemoryException         | OutOfMemory(MemoryError)                     |
| Internal          | -                            | InternalError(RuntimeError)                  |

All derive from SockAsyncError and carry `status`, `socket_error` and the library's message.
An operation that completes with an error (e.g. ConnectionRefused, OperationAborted after a
close) raises SocketException from `await`, as .NET's task-based methods do.
"""

import errno
import io

from ._native import lib
from .enums import SocketError, Status


class SockAsyncError(Exception):
    """Base of every exception the binding raises for a library status."""

    status = Status.INTERNAL
    socket_error = SocketError.SUCCESS

    def __init__(self, message, status=None, socket_error=0):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = Status(status)
        self.socket_error = _socket_error_or_int(socket_error)


class ArgumentError(SockAsyncError, ValueError):
    status = Status.INVALID_ARGUMENT


class ArgumentNullError(ArgumentError, TypeError):
    status = Status.NULL_ARGUMENT


class InvalidOperationError(SockAsyncError, RuntimeError):
    status = Status.INVALID_OPERATION


class InProgressError(InvalidOperationError):
    """The args object is busy with an operation that has not completed."""

    status = Status.IN_PROGRESS


class ObjectDisposedError(InvalidOperationError):
    status = Status.DISPOSED


class NotSupportedError(SockAsyncError, io.UnsupportedOperation):
    status = Status.NOT_SUPPORTED


class OutOfMemory(SockAsyncError, MemoryError):
    status = Status.OUT_OF_MEMORY


class InternalError(SockAsyncError, RuntimeError):
    status = Status.INTERNAL


# SocketError -> the Linux errno it comes from (the inverse of .NET's SocketErrorPal), so
# `except OSError as e: e.errno == errno.ECONNREFUSED` works as with Python's socket module.
_ERRNO = {
    SocketError.ACCESS_DENIED: errno.EACCES,
    SocketError.INTERRUPTED: errno.EINTR,
    SocketError.FAULT: errno.EFAULT,
    SocketError.INVALID_ARGUMENT: errno.EINVAL,
    SocketError.TOO_MANY_OPEN_SOCKETS: errno.EMFILE,
    SocketError.WOULD_BLOCK: errno.EAGAIN,
    SocketError.IN_PROGRESS: errno.EINPROGRESS,
    SocketError.ALREADY_IN_PROGRESS: errno.EALREADY,
    SocketError.NOT_SOCKET: errno.ENOTSOCK,
    SocketError.DESTINATION_ADDRESS_REQUIRED: errno.EDESTADDRREQ,
    SocketError.MESSAGE_SIZE: errno.EMSGSIZE,
    SocketError.PROTOCOL_TYPE: errno.EPROTOTYPE,
    SocketError.PROTOCOL_OPTION: errno.ENOPROTOOPT,
    SocketError.PROTOCOL_NOT_SUPPORTED: errno.EPROTONOSUPPORT,
    SocketError.SOCKET_NOT_SUPPORTED: errno.ESOCKTNOSUPPORT,
    SocketError.OPERATION_NOT_SUPPORTED: errno.EOPNOTSUPP,
    SocketError.PROTOCOL_FAMILY_NOT_SUPPORTED: errno.EPFNOSUPPORT,
    SocketError.ADDRESS_FAMILY_NOT_SUPPORTED: errno.EAFNOSUPPORT,
    SocketError.ADDRESS_ALREADY_IN_USE: errno.EADDRINUSE,
    SocketError.ADDRESS_NOT_AVAILABLE: errno.EADDRNOTAVAIL,
    SocketError.NETWORK_DOWN: errno.ENETDOWN,
    SocketError.NETWORK_UNREACHABLE: errno.ENETUNREACH,
    SocketError.NETWORK_RESET: errno.ENETRESET,
    SocketError.CONNECTION_ABORTED: errno.ECONNABORTED,
    SocketError.CONNECTION_RESET: errno.ECONNRESET,
    SocketError.NO_BUFFER_SPACE_AVAILABLE: errno.ENOBUFS,
    SocketError.IS_CONNECTED: errno.EISCONN,
    SocketError.NOT_CONNECTED: errno.ENOTCONN,
    SocketError.SHUTDOWN: errno.EPIPE,
    SocketError.DISCONNECTING: errno.ESHUTDOWN,
    SocketError.TIMED_OUT: errno.ETIMEDOUT,
    SocketError.CONNECTION_REFUSED: errno.ECONNREFUSED,
    SocketError.HOST_DOWN: errno.EHOSTDOWN,
    SocketError.HOST_UNREACHABLE: errno.EHOSTUNREACH,
    SocketError.NO_DATA: errno.ENODATA,
    SocketError.OPERATION_ABORTED: errno.ECANCELED,
}


class SocketException(SockAsyncError, OSError):
    """The system refused, or an operation completed with an error: `socket_error` says
    which (.NET's SocketError), `errno` the Linux errno it corresponds to (None if none)."""

    status = Status.SOCKET_ERROR

    def __init__(self, message, status=Status.SOCKET_ERROR, socket_error=SocketError.SOCKET_ERROR):
        code = _socket_error_or_int(socket_error)
        OSError.__init__(self, _ERRNO.get(code), message)
        self.message = message
        self.status = Status(status)
        self.socket_error = code

    def __str__(self):
        name = self.socket_error.name if isinstance(self.socket_error, SocketError) else "?"
        return f"[{name} {int(self.socket_error)}] {self.message}"


def _socket_error_or_int(code):
    try:
        return SocketError(code)
    except ValueError:
        return code


_BY_STATUS = {
    cls.status: cls
    for cls in (
        ArgumentNullError,
        ArgumentError,
        InProgressError,
        ObjectDisposedError,
        InvalidOperationError,
        NotSupportedError,
        SocketException,
        OutOfMemory,
        InternalError,
    )
}


def exception_for(status, socket_error=0, message=""):
    """The exception for a rejection with this status (and SocketError code)."""
    cls = _BY_STATUS.get(status, InternalError)
    if not message:
        message = f"rejected: status {status}"
    return cls(message, status=status if status in _BY_STATUS else Status.INTERNAL,
               socket_error=socket_error)


def last_exception():
    """The exception describing the latest call's rejection on this thread. Must be the next
    library call after the rejected one: any call replaces the thread's last status."""
    status = lib.sock_last_status()
    code = lib.sock_last_socket_error()
    message = lib.sock_last_error_message().decode("utf-8", "replace")
    return exception_for(status, code, message)


def completion_exception(socket_error, operation):
    """The SocketException for an operation that completed with an error."""
    code = _socket_error_or_int(socket_error)
    name = code.name if isinstance(code, SocketError) else str(code)
    return SocketException(f"{operation} completed with {name}", Status.SOCKET_ERROR, code)
