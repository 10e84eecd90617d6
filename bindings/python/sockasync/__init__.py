"""sockasync from Python: .NET's SocketAsyncEventArgs model over ctypes, with asyncio.

    import asyncio, sockasync

    async def main():
        with sockasync.Socket() as s:
            await s.connect("127.0.0.1:8000")
            await s.send(b"GET / HTTP/1.0\\r\\n\\r\\n")
            print(await s.receive(4096))

    asyncio.run(main())

The library is found through $SOCKASYNC_LIB, then the sonames libsockasync.so.0 and
libsockasync.so, then the build tree's target/release/libsockasync.so.
"""

from ._core import (
    AsyncArgs,
    CompletionQueue,
    Socket,
    backend,
    busy_poll,
    configure,
    error_name,
    in_flight,
    set_backend,
    set_busy_poll,
    set_callback_exception_hook,
    shutdown,
    status_name,
    version,
)
from ._native import path as library_path
from .enums import (
    AddressFamily,
    AsyncOperation,
    Backend,
    Dispatch,
    Option,
    ProtocolType,
    ShutdownHow,
    SocketError,
    SocketFlags,
    SocketType,
    Status,
)
from .errors import (
    ArgumentError,
    ArgumentNullError,
    InProgressError,
    InternalError,
    InvalidOperationError,
    NotSupportedError,
    ObjectDisposedError,
    OutOfMemory,
    SockAsyncError,
    SocketException,
)

__version__ = "0.1.0"

__all__ = [
    "AddressFamily",
    "ArgumentError",
    "ArgumentNullError",
    "AsyncArgs",
    "AsyncOperation",
    "Backend",
    "CompletionQueue",
    "Dispatch",
    "InProgressError",
    "InternalError",
    "InvalidOperationError",
    "NotSupportedError",
    "ObjectDisposedError",
    "Option",
    "OutOfMemory",
    "ProtocolType",
    "ShutdownHow",
    "SockAsyncError",
    "Socket",
    "SocketError",
    "SocketException",
    "SocketFlags",
    "SocketType",
    "Status",
    "backend",
    "busy_poll",
    "configure",
    "error_name",
    "in_flight",
    "library_path",
    "set_backend",
    "set_busy_poll",
    "set_callback_exception_hook",
    "shutdown",
    "status_name",
    "version",
]
