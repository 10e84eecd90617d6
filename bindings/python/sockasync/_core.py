"""Socket, AsyncArgs and CompletionQueue over the C API, and the runtime's lifetime.

Three rules hold the binding together:

- What an operation uses stays alive until it completes. Starting one pins its AsyncArgs
  (which holds the buffer set on it) in `_pins` and queues the Socket on the args; the
  completion, by callback or by queue, unpins both. So dropping every reference to the args,
  its buffer or the socket while an operation is in flight is safe.
- Finalizers never call the library. A call's outcome is read from the library's per-thread
  last status right after it; a `__del__` that freed a handle in between (the cyclic GC can
  run at any allocation) would overwrite that status and turn a rejection into a success.
  Finalizers queue the handle instead, and the next call into the binding frees it.
- Exceptions never escape into C. One ctypes trampoline serves every callback args object;
  whatever the user's callback raises goes to the callback exception hook (logged by
  default), since ctypes would only print and drop it.
"""

import atexit
import collections
import ctypes
import itertools
import logging
import threading
import warnings

from ._native import ARGS_P, COMPLETED_FN, SockBuf, lib
from .enums import (
    AddressFamily,
    AsyncOperation,
    Backend,
    Dispatch,
    ProtocolType,
    ShutdownHow,
    SocketError,
    SocketFlags,
    SocketType,
    Status,
)
from .errors import ArgumentError, InvalidOperationError, ObjectDisposedError, last_exception

_log = logging.getLogger("sockasync")

# 48 bytes hold any IP endpoint, 114 any Unix one (header, sock_local_endpoint).
_ENDPOINT_CAP = 128

# --- finalizers: deferred frees ---------------------------------------------------------

_graveyard = collections.deque()


def _bury(free, handle):
    _graveyard.append((free, handle))


def _reap():
    while True:
        try:
            free, handle = _graveyard.popleft()
        except IndexError:
            return
        free(handle)


# --- keeping in-flight operations alive ----------------------------------------------------


class _Pins:
    """Objects kept alive by the operations in flight on them, counted, because a new
    operation may start on an args object (inside its callback, or from another thread)
    before the completion of the previous one has been handled here."""

    def __init__(self):
        self._lock = threading.Lock()
        self._held = {}

    def hold(self, key, obj):
        with self._lock:
            entry = self._held.get(key)
            if entry is None:
                self._held[key] = [obj, 1]
            else:
                entry[1] += 1

    def release(self, key):
        with self._lock:
            entry = self._held.get(key)
            if entry is None:
                return None
            entry[1] -= 1
            if entry[1] == 0:
                del self._held[key]
            return entry[0]

    def holds(self, key):
        with self._lock:
            return key in self._held

    def __len__(self):
        with self._lock:
            return len(self._held)


_pins = _Pins()
_tokens = itertools.count(1)


def _completed(token):
    """Unpins the args a completion belongs to; returns it and the socket it ran on."""
    args = _pins.release(token)
    if args is None:
        return None, None
    sock = args._sockets.popleft()
    return args, sock


def in_flight():
    """How many AsyncArgs have an operation in flight (for tests and leak checks)."""
    return len(_pins)


# --- callbacks ---------------------------------------------------------------------------


def _log_callback_exception(exc, args):
    _log.error("exception in a sockasync completion callback", exc_info=exc)


_callback_exception_hook = _log_callback_exception


def set_callback_exception_hook(hook):
    """Sets what receives an exception a completion callback raised, as hook(exc, args);
    None restores the default, which logs it to the "sockasync" logger. Returns the
    previous hook. The hook runs on the thread that ran the callback."""
    global _callback_exception_hook
    previous = _callback_exception_hook
    _callback_exception_hook = hook if hook is not None else _log_callback_exception
    return previous


def _on_completed(_sock, _args, token):
    args = None
    try:
        args, sock = _completed(token)
        if args is not None and args._callback is not None:
            args._callback(sock, args)
    except BaseException as exc:  # noqa: BLE001 - nothing may unwind into C
        try:
            _callback_exception_hook(exc, args)
        except BaseException:  # noqa: BLE001
            try:
                _log.exception("the sockasync callback exception hook raised")
            except BaseException:  # noqa: BLE001 - e.g. logging torn down at exit
                pass


# Module-level for the process's lifetime: C keeps this function pointer in every args.
_TRAMPOLINE = COMPLETED_FN(_on_completed)


# --- buffers -----------------------------------------------------------------------------


def _memory(obj):
    """(what to pass as void*, its length in bytes, whether the library may write into it).

    Writable buffers (bytearray, writable memoryview, array, ctypes arrays, mmap) are used in
    place; the ctypes view made over them holds a buffer export, so a bytearray cannot be
    resized away under a pending operation. bytes are used in place too, for sending only.
    Other read-only buffers are copied."""
    if isinstance(obj, bytes):
        return obj, len(obj), False
    view = memoryview(obj)
    nbytes = view.nbytes
    if not view.readonly:
        return (ctypes.c_char * nbytes).from_buffer(view), nbytes, True
    return (ctypes.c_char * nbytes).from_buffer_copy(view), nbytes, False


def _endpoint_text(endpoint):
    if endpoint is None:
        return None
    if isinstance(endpoint, tuple):
        host, port = endpoint[0], endpoint[1]
        endpoint = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if isinstance(endpoint, str):
        return endpoint.encode("utf-8")
    if isinstance(endpoint, bytes):
        return endpoint
    raise TypeError(f"an endpoint is text or a (host, port) tuple, not {type(endpoint).__name__}")


def _read_endpoint(fn, handle):
    out = ctypes.create_string_buffer(_ENDPOINT_CAP)
    n = fn(handle, out, _ENDPOINT_CAP)
    if n == 0:
        if lib.sock_last_status() != Status.OK:
            raise last_exception()
        return None
    return out.value.decode("utf-8", "surrogateescape")


def _check(accepted):
    if not accepted:
        raise last_exception()


def _check_status():
    if lib.sock_last_status() != Status.OK:
        raise last_exception()


# --- handles -----------------------------------------------------------------------------


class _Owned:
    """A library object the caller owns: `free()`, `with`, and a finalizer that defers the
    free to the next call into the binding (see `_bury`)."""

    _h = None  # also what a constructor that raised leaves for __del__
    _free_native = None  # the library's free function for this type

    def _handle(self):
        if self._h is None:
            raise ObjectDisposedError(f"the {type(self).__name__} was freed", Status.DISPOSED)
        return self._h

    def free(self):
        handle, self._h = self._h, None
        if handle is not None:
            self._free_native(handle)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.free()

    def __del__(self):
        handle, self._h = self._h, None
        if handle is not None:
            self._abandoned()
            _bury(self._free_native, handle)

    def _abandoned(self):
        pass


# --- args --------------------------------------------------------------------------------


class AsyncArgs(_Owned):
    """.NET's SocketAsyncEventArgs: an operation's buffer, endpoint and flags, and its results.

    With `callback`, a pending operation calls callback(socket, args) once, on a library
    thread (the reactor, or a pool worker). With `queue`, it is posted to that
    CompletionQueue instead. An operation that completes at once (the start returned False)
    calls nothing: its results are in the args when the start returns.

    `free()` is safe while an operation is in flight: that one still completes (its buffer
    stays alive until then), but no new one may start.
    """

    _free_native = lib.sock_args_free

    def __init__(self, callback=None, *, queue=None):
        if callback is not None and queue is not None:
            raise ValueError("AsyncArgs reports to a callback or to a queue, not both")
        _reap()
        self._token = next(_tokens)
        self._callback = callback
        self._queue = queue
        self._buffer = None  # what the library may be pointing into
        self._buffer_object = None  # what the caller gave
        self._writable = True
        self._sockets = collections.deque()
        self._accepted = None
        self.user_token = None
        self._waiter = None  # the asyncio future of the operation in flight, if any
        if queue is not None:
            handle = lib.sock_args_new_queued(queue._handle(), self._token)
        else:
            handle = lib.sock_args_new(_TRAMPOLINE, self._token)
        if not handle:
            raise last_exception()
        self._h = handle

    # buffers -----------------------------------------------------------------------------

    def set_buffer(self, buffer, offset=0, count=None):
        """Uses `buffer` (or clears it, for None) for the next operations: bytes for sends,
        something writable (bytearray, memoryview, ctypes array) for receives."""
        if buffer is None:
            _check(lib.sock_args_set_buffer(self._handle(), None, 0))
            self._buffer = self._buffer_object = None
            self._writable = True
            return
        memory, length, writable = _memory(buffer)
        _check(lib.sock_args_set_buffer(self._handle(), memory, length))
        self._buffer, self._buffer_object, self._writable = memory, buffer, writable
        if offset or (count is not None and count != length):
            self.set_range(offset, length - offset if count is None else count)

    def set_range(self, offset, count):
        _check(lib.sock_args_set_range(self._handle(), offset, count))

    def set_buffer_list(self, buffers):
        """Scatter/gather over several buffers; None clears the list."""
        if buffers is None:
            _check(lib.sock_args_set_buffer_list(self._handle(), None, 0))
            self._buffer = self._buffer_object = None
            self._writable = True
            return
        memories = [_memory(b) for b in buffers]
        entries = (SockBuf * len(memories))()
        for entry, (memory, length, _) in zip(entries, memories):
            entry.data = ctypes.cast(memory, ctypes.c_void_p) if length else None
            entry.len = length
        _check(lib.sock_args_set_buffer_list(self._handle(), entries, len(memories)))
        self._buffer = [m for m, _, _ in memories]
        self._buffer_object = list(buffers)
        self._writable = all(w for _, _, w in memories)

    @property
    def buffer(self):
        return self._buffer_object

    @property
    def offset(self):
        return lib.sock_args_offset(self._handle())

    @property
    def count(self):
        return lib.sock_args_count(self._handle())

    def transferred(self):
        """The bytes the last operation moved, copied out of the (single) buffer."""
        start, n = self.offset, self.bytes_transferred
        return bytes(memoryview(self._buffer).cast("B")[start : start + n])

    # endpoint and flags ------------------------------------------------------------------

    @property
    def remote_endpoint(self):
        """The endpoint set for a connect or send-to, or the sender of the last datagram."""
        return _read_endpoint(lib.sock_args_remote_endpoint, self._handle())

    @remote_endpoint.setter
    def remote_endpoint(self, endpoint):
        _check(lib.sock_args_set_remote_endpoint(self._handle(), _endpoint_text(endpoint)))

    @property
    def flags(self):
        return SocketFlags(lib.sock_args_flags(self._handle()))

    @flags.setter
    def flags(self, flags):
        _check(lib.sock_args_set_flags(self._handle(), int(flags)))

    # results -----------------------------------------------------------------------------

    @property
    def bytes_transferred(self):
        return lib.sock_args_bytes_transferred(self._handle())

    @property
    def socket_error(self):
        code = lib.sock_args_socket_error(self._handle())
        try:
            return SocketError(code)
        except ValueError:
            return code

    @property
    def last_operation(self):
        return AsyncOperation(lib.sock_args_last_operation(self._handle()))

    def accept_socket(self):
        """The socket the last accept produced (the caller owns it), or None."""
        handle = lib.sock_args_accept_socket(self._handle())
        if not handle:
            return None
        address = ctypes.cast(handle, ctypes.c_void_p).value
        # Reading it twice returns the same handle: wrap it once, or it would be freed twice.
        if self._accepted is None or self._accepted._address != address:
            self._accepted = Socket._adopt(handle)
        return self._accepted


# --- completion queue --------------------------------------------------------------------


class CompletionQueue(_Owned):
    """sock_cq: completions of AsyncArgs(queue=...) wait here to be taken, with wait() from
    any thread or by watching fileno() in an event loop (the asyncio layer does that)."""

    _free_native = lib.sock_cq_free

    def __init__(self):
        _reap()
        handle = lib.sock_cq_new()
        if not handle:
            raise last_exception()
        self._h = handle

    def fileno(self):
        return lib.sock_cq_fd(self._handle())

    def wait(self, max_count=64, timeout=None):
        """Takes up to max_count completed AsyncArgs, waiting up to `timeout` seconds for
        the first (None: for ever; 0: not at all). Each has its results in place."""
        _reap()
        ms = -1 if timeout is None else max(0, int(timeout * 1000))
        out = (ARGS_P * max_count)()
        n = lib.sock_cq_wait(self._handle(), out, max_count, ms)
        if n == 0:
            _check_status()
        done = []
        for i in range(n):
            args, _ = _completed(lib.sock_args_user_token(out[i]))
            if args is not None:
                done.append(args)
        return done


# --- socket ------------------------------------------------------------------------------


class Socket(_Owned):
    """.NET's Socket. Raw operations follow the C contract: `sock.receive_async(args)`
    returns True (pending: the args' callback or queue gets the completion) or False
    (completed now, results in args), and raises on rejection. The coroutines
    (`await sock.receive(n)`, ...) use the running asyncio loop's completion queue.
    `free()` closes it first."""

    _free_native = lib.sock_free

    def __init__(
        self,
        family=AddressFamily.INTER_NETWORK,
        type=SocketType.STREAM,  # noqa: A002 - the name .NET and Python's socket use
        protocol=ProtocolType.UNSPECIFIED,
    ):
        _refuse_after_exit()
        _reap()
        handle = lib.sock_create(int(family), int(type), int(protocol))
        if not handle:
            raise last_exception()
        self._set_handle(handle)

    def _set_handle(self, handle):
        self._h = handle
        self._address = ctypes.cast(handle, ctypes.c_void_p).value

    @classmethod
    def _adopt(cls, handle):
        sock = cls.__new__(cls)
        sock._set_handle(handle)
        return sock

    @classmethod
    def from_fd(cls, fd, take_ownership=False):
        """Adopts a descriptor, or a Python socket.socket (with take_ownership it is
        detached, so that Python does not close it too)."""
        _refuse_after_exit()
        _reap()
        number = fd.fileno() if hasattr(fd, "fileno") else fd
        handle = lib.sock_from_fd(number, take_ownership)
        if not handle:
            raise last_exception()
        if take_ownership and hasattr(fd, "detach"):
            fd.detach()
        return cls._adopt(handle)

    def fileno(self):
        fd = lib.sock_fd(self._handle())
        if fd < 0:
            raise last_exception()
        return fd

    def bind(self, endpoint):
        _check(lib.sock_bind(self._handle(), _endpoint_text(endpoint)))

    def listen(self, backlog=128):
        _check(lib.sock_listen(self._handle(), backlog))

    @property
    def local_endpoint(self):
        return _read_endpoint(lib.sock_local_endpoint, self._handle())

    @property
    def remote_endpoint(self):
        return _read_endpoint(lib.sock_remote_endpoint, self._handle())

    def set_option(self, option, value):
        _check(lib.sock_set_option(self._handle(), int(option), int(value)))

    def get_option(self, option):
        value = ctypes.c_int64()
        _check(lib.sock_get_option(self._handle(), int(option), ctypes.byref(value)))
        return value.value

    def shutdown(self, how=ShutdownHow.BOTH):
        _check(lib.sock_shutdown(self._handle(), int(how)))

    def close(self):
        """Closes the socket: pending operations complete with OperationAborted."""
        if self._h is not None:
            lib.sock_close(self._h)

    def _abandoned(self):
        # As Python's own socket does; the repr must not call the library here.
        warnings.warn(f"unfreed sockasync.Socket at {self._address:#x}", ResourceWarning, source=self)

    def __repr__(self):
        if self._h is None:
            return "<sockasync.Socket freed>"
        return f"<sockasync.Socket fd={lib.sock_fd(self._h)}>"

    # raw operations ----------------------------------------------------------------------

    def _start(self, start, args, writes_buffer=False):
        _reap()
        if writes_buffer and not args._writable:
            raise TypeError("a receive needs a writable buffer (bytearray, memoryview), not bytes")
        sock_handle, args_handle = self._handle(), args._handle()
        args._sockets.append(self)
        _pins.hold(args._token, args)
        pending = False
        try:
            pending = start(sock_handle, args_handle)
            if pending:
                return True
            rejection = None if lib.sock_last_status() == Status.OK else last_exception()
        finally:
            if not pending:
                args._sockets.pop()
                _pins.release(args._token)
        if rejection is not None:
            raise rejection
        return False

    def accept_async(self, args):
        return self._start(lib.sock_accept_async, args)

    def connect_async(self, args):
        return self._start(lib.sock_connect_async, args)

    def send_async(self, args):
        return self._start(lib.sock_send_async, args)

    def receive_async(self, args):
        return self._start(lib.sock_receive_async, args, writes_buffer=True)

    def send_to_async(self, args):
        return self._start(lib.sock_send_to_async, args)

    def receive_from_async(self, args):
        return self._start(lib.sock_receive_from_async, args, writes_buffer=True)

    def disconnect_async(self, args):
        return self._start(lib.sock_disconnect_async, args)

    # asyncio -----------------------------------------------------------------------------

    async def connect(self, endpoint):
        await _aio.connect(self, endpoint)

    async def accept(self):
        """The next connection, as a Socket the caller owns."""
        return await _aio.accept(self)

    async def send(self, data):
        """Sends all of `data` (stream) or one datagram; returns the bytes sent."""
        return await _aio.send(self, data)

    async def receive(self, max_bytes):
        """Up to max_bytes of whatever is available; b"" at end of stream."""
        return await _aio.receive(self, max_bytes)

    async def receive_into(self, buffer):
        """Receives into a writable buffer; returns the bytes received (0: end of stream)."""
        return await _aio.receive_into(self, buffer)

    async def send_to(self, data, endpoint):
        return await _aio.send_to(self, data, endpoint)

    async def receive_from(self, max_bytes):
        """One datagram: (data, sender endpoint)."""
        return await _aio.receive_from(self, max_bytes)

    async def disconnect(self):
        await _aio.disconnect(self)


# --- runtime -----------------------------------------------------------------------------

_exited = False


def _refuse_after_exit():
    # A runtime started again after the atexit shutdown would have threads calling into an
    # interpreter that is being torn down.
    if _exited:
        raise InvalidOperationError("sockasync: the interpreter is exiting", Status.INVALID_OPERATION)


@atexit.register
def _shutdown_at_exit():
    global _exited
    _exited = True
    # Pending operations complete with OperationAborted (their callbacks run now, while
    # the interpreter is whole), and the library's threads are joined, so none calls into
    # Python during finalization.
    lib.sock_runtime_shutdown()


def configure(reactor_threads=1, dispatch=Dispatch.INLINE):
    """Reactor threads and callback dispatch, before the runtime starts (or after shutdown)."""
    _check(lib.sock_runtime_configure(reactor_threads, int(dispatch)))


def set_backend(backend):
    """epoll or io_uring, before the runtime starts (or after shutdown)."""
    _check(lib.sock_runtime_set_backend(int(backend)))


def backend():
    """The backend the runtime runs on (starting it): io_uring asked for but refused is epoll."""
    value = lib.sock_runtime_backend()
    _check_status()
    return Backend(value)


def set_busy_poll(microseconds):
    """How long each reactor polls without sleeping after a turn with work (0: off, the
    default; at most 1,000,000), before the runtime starts (or after shutdown). Lower latency
    for a core's worth of CPU during the window: for latency-sensitive programs with spare
    cores."""
    # ctypes would wrap what does not fit a uint32 into one that may.
    if not 0 <= microseconds <= 0xFFFFFFFF:
        raise ArgumentError(f"sockasync: busy poll of {microseconds} us is out of range")
    _check(lib.sock_runtime_set_busy_poll(int(microseconds)))


def busy_poll():
    """The busy poll (microseconds) of the running runtime, or of the next start."""
    value = lib.sock_runtime_busy_poll()
    _check_status()
    return value


def shutdown():
    """Closes every socket, aborts every pending operation through its completion, joins the
    library's threads. The next Socket starts the runtime again. Called at exit too."""
    lib.sock_runtime_shutdown()
    _check_status()


def version():
    return lib.sock_version().decode()


def error_name(code):
    return lib.sock_error_name(int(code)).decode()


def status_name(code):
    return lib.sock_status_name(int(code)).decode()


from . import _aio  # noqa: E402 - the coroutines need the classes above
