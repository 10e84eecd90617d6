//! `sock`: the C functions on sockets. Each checks pointers, converts codes and calls the
//! safe core in `engine::socket`.

use std::ffi::c_char;
use std::sync::Arc;

use crate::args::sock_args;
use crate::engine::{Args, ShutdownHow, Socket, SocketOption, endpoint};
use crate::error::Reject;
use crate::ffi;

/// A socket (.NET's `Socket`): TCP or UDP over IPv4 or IPv6, always non-blocking inside.
///
/// Made by `sock_create`, or handed out by a completed accept (`sock_args_accept_socket`).
/// The caller owns each handle and releases it with `sock_free`; the memory stays valid
/// until every callback for the socket has returned, so a callback may free it.
///
/// Methods: `sock_bind`, `sock_listen`, `sock_local_endpoint`, `sock_remote_endpoint`,
/// `sock_set_option`, `sock_get_option`, `sock_shutdown`, `sock_close`, `sock_free`,
/// `sock_accept_async`, `sock_connect_async`, `sock_send_async`, `sock_receive_async`,
/// `sock_send_to_async`, `sock_receive_from_async`, `sock_disconnect_async`,
/// `sock_send_packets_async`, `sock_fd`.
pub struct sock {
    _private: [u8; 0],
}

fn socket(s: *const sock) -> Result<std::mem::ManuallyDrop<Arc<Socket>>, Reject> {
    ffi::borrow(s as *const Socket, "socket")
}

/// Creates a socket, with .NET's numbers: `address_family` InterNetwork (2), InterNetworkV6
/// (23) or Unix (1); `socket_type` Stream (1) or Dgram (2); `protocol` Tcp (6), Udp (17) or
/// 0 for the type's default (Unix sockets take 0).
///
/// Returns the new socket, owned by the caller (release it with `sock_free`), or NULL:
/// unknown numbers are InvalidArgument, and a refusal by the system is SocketError (e.g.
/// ProtocolNotSupported for Stream with Udp, TooManyOpenSockets).
/// The runtime starts on the first call (see `sock_runtime_configure`); an environment
/// variable that does not parse is InvalidArgument, and a call made while
/// `sock_runtime_shutdown` runs is InvalidOperation.
#[unsafe(no_mangle)]
pub extern "C" fn sock_create(address_family: i32, socket_type: i32, protocol: i32) -> *mut sock {
    ffi::call(std::ptr::null_mut(), || {
        let socket = Socket::create(address_family, socket_type, protocol)?;
        Ok(ffi::into_handle(socket) as *mut sock)
    })
}

/// Adopts a socket the host created (e.g. inherited, or from socketpair): stream or datagram,
/// IPv4, IPv6 or Unix. Its type, family and state (listening, connected, bound) are read from
/// the kernel, and it is made non-blocking, which the host's descriptor sees too (it is one
/// open file). With `take_ownership` the descriptor is the library's from a successful call
/// on (closed by `sock_close`/`sock_free`; the host must not close it); without it the
/// library works on a duplicate and the host keeps and closes its own.
///
/// Returns the new socket, owned by the caller (release with `sock_free`), or NULL with the
/// host's descriptor untouched (not closed): InvalidArgument (not an open descriptor, or not
/// a socket), NotSupported (another socket type or family), SocketError. (`fd` is
/// pointer-sized, like intptr_t, so C# can pass an IntPtr or a SafeHandle's handle.)
#[unsafe(no_mangle)]
pub extern "C" fn sock_from_fd(fd: isize, take_ownership: bool) -> *mut sock {
    ffi::call(std::ptr::null_mut(), || {
        let fd =
            i32::try_from(fd).map_err(|_| Reject::invalid(format!("{fd} is not a descriptor")))?;
        Ok(ffi::into_handle(Socket::adopt(fd, take_ownership)?) as *mut sock)
    })
}

/// The socket's descriptor, for the host's own calls (options this library does not wrap,
/// `poll`). It stays the library's: do not close it, and do not read or write on it while
/// operations are pending. Returns -1 with Disposed once closed, or with NullArgument.
#[unsafe(no_mangle)]
pub extern "C" fn sock_fd(s: *const sock) -> isize {
    ffi::call(-1, || {
        let fd = socket(s)?.raw_fd().ok_or_else(Reject::disposed)?;
        Ok(fd as isize)
    })
}

/// Binds the socket to a local endpoint given as text: `"127.0.0.1:8080"`, `"[::1]:0"`
/// (port 0 picks a free port; read it back with `sock_local_endpoint`), `"unix:/path"` (the
/// kernel creates the file; an existing one is AddressAlreadyInUse, and it stays after close:
/// remove it yourself) or `"unix:@name"` (Linux's abstract namespace, gone with the socket).
///
/// Returns true if bound. False: NullArgument, Disposed, InvalidArgument (text that does not
/// parse), NotSupported (an endpoint of the other address family), or SocketError (e.g.
/// AddressAlreadyInUse, 10048).
#[unsafe(no_mangle)]
pub extern "C" fn sock_bind(s: *mut sock, endpoint: *const c_char) -> bool {
    ffi::call(false, || {
        let socket = socket(s)?;
        socket.check_open()?;
        let endpoint = endpoint::parse(ffi::c_str(endpoint, "endpoint")?)?;
        socket.bind(endpoint)?;
        Ok(true)
    })
}

/// Starts listening for connections, with at most `backlog` waiting to be accepted.
///
/// Returns true if listening. False: NullArgument, Disposed, or SocketError.
#[unsafe(no_mangle)]
pub extern "C" fn sock_listen(s: *mut sock, backlog: i32) -> bool {
    ffi::call(false, || {
        let socket = socket(s)?;
        socket.check_open()?;
        socket.listen(backlog)?;
        Ok(true)
    })
}

fn write_endpoint(s: *const sock, out: *mut c_char, cap: usize, peer: bool) -> usize {
    ffi::call(0, || {
        let socket = socket(s)?;
        socket.check_open()?;
        ffi::write_c_bytes(&socket.address(peer)?.to_text(), out, cap)
    })
}

/// Writes the socket's local endpoint as NUL-terminated text (`"127.0.0.1:5000"`,
/// `"[::1]:5000"`, `"unix:/run/app.sock"`, `"unix:@name"`) into `out`, which holds `cap`
/// bytes.
///
/// Returns the text's length without the NUL. Returns 0 and writes nothing if it does not
/// fit (InvalidArgument; 48 bytes always suffice for IP endpoints, 114 for Unix ones), or on
/// NullArgument, Disposed or SocketError. An unbound IP socket reports the kernel's wildcard,
/// e.g. `"0.0.0.0:0"`; an unbound Unix socket `"unix:"`.
#[unsafe(no_mangle)]
pub extern "C" fn sock_local_endpoint(s: *const sock, out: *mut c_char, cap: usize) -> usize {
    write_endpoint(s, out, cap, false)
}

/// Writes the connected peer's endpoint like `sock_local_endpoint` does (`"unix:"` for a
/// Unix peer that never bound a name).
///
/// Returns the text's length, or 0: not connected is SocketError with NotConnected (10057).
#[unsafe(no_mangle)]
pub extern "C" fn sock_remote_endpoint(s: *const sock, out: *mut c_char, cap: usize) -> usize {
    write_endpoint(s, out, cap, true)
}

fn option(code: i32) -> Result<SocketOption, Reject> {
    SocketOption::from_code(code).ok_or_else(|| {
        Reject::invalid(format!(
            "unknown option {code} (NoDelay=1, ReuseAddress=2, KeepAlive=3, \
             SendBufferSize=4, ReceiveBufferSize=5, Linger=6, BatchSends=7)"
        ))
    })
}

/// Sets an option (`sock_option`): NoDelay, ReuseAddress and KeepAlive take 0 or 1;
/// SendBufferSize and ReceiveBufferSize a size in bytes (1 to INT32_MAX; the kernel may
/// round it); Linger the seconds a close may wait for unsent data (0 to 65535; 0 = close
/// resets the connection; -1 = off). With a Linger above 0 the kernel's close waits, on
/// the thread that closes (the reactor thread, if it happens in a callback), until unsent
/// data is gone or the time is up; other sockets' callbacks wait with it. BatchSends takes 0
/// or 1 (see `sock_option`; NotSupported on a datagram socket).
///
/// Returns true if set. False: NullArgument, Disposed, InvalidArgument (unknown option or a
/// value out of range), NotSupported, or SocketError.
#[unsafe(no_mangle)]
pub extern "C" fn sock_set_option(s: *mut sock, option_code: i32, value: i64) -> bool {
    ffi::call(false, || {
        let socket = socket(s)?;
        socket.check_open()?;
        socket.set_option(option(option_code)?, value)?;
        Ok(true)
    })
}

/// Reads an option (`sock_option`) into `*value`, in the units `sock_set_option` takes
/// (buffer sizes as the kernel reports them: Linux doubles what was set).
///
/// Returns true if read. False (and `*value` untouched): NullArgument, Disposed,
/// InvalidArgument (unknown option), or SocketError.
#[unsafe(no_mangle)]
pub extern "C" fn sock_get_option(s: *const sock, option_code: i32, value: *mut i64) -> bool {
    ffi::call(false, || {
        let socket = socket(s)?;
        socket.check_open()?;
        if value.is_null() {
            return Err(Reject::null("value"));
        }
        let read = socket.get_option(option(option_code)?)?;
        ffi::write_out(value, read)?;
        Ok(true)
    })
}

/// Shuts down receiving (0), sending (1) or both (2) (`sock_shutdown_how`); shutting down
/// sending sends the peer end of stream and makes a later `sock_close` graceful.
///
/// Returns true if done. False: NullArgument, Disposed, InvalidArgument (another `how`), or
/// SocketError (NotConnected, 10057, if the socket is not connected).
#[unsafe(no_mangle)]
pub extern "C" fn sock_shutdown(s: *mut sock, how: i32) -> bool {
    ffi::call(false, || {
        let socket = socket(s)?;
        socket.check_open()?;
        let how = match how {
            0 => ShutdownHow::Receive,
            1 => ShutdownHow::Send,
            2 => ShutdownHow::Both,
            other => {
                return Err(Reject::invalid(format!(
                    "unknown shutdown {other} (Receive=0, Send=1, Both=2)"
                )));
            }
        };
        socket.shutdown(how)?;
        Ok(true)
    })
}

/// Closes the socket. Every operation pending on it completes with OperationAborted (995)
/// through its callback, on the reactor thread, never inside this call. If any was aborted,
/// the close resets the connection (the peer sees ConnectionReset) unless sending was shut
/// down first. Later calls on the socket are rejected as Disposed; closing again does
/// nothing. The handle stays valid until `sock_free`. An operation another thread starts
/// while the close is under way ends one of three ways: rejected as Disposed, completed at
/// once (false, status OK) with OperationAborted and the bytes already sent, or pending and
/// then aborted through its callback.
///
/// Status: NullArgument for NULL, else OK.
#[unsafe(no_mangle)]
pub extern "C" fn sock_close(s: *mut sock) {
    ffi::call((), || {
        socket(s)?.close();
        Ok(())
    })
}

/// Closes the socket if it is open (see `sock_close`) and releases the caller's handle: the
/// caller must not use `s` afterwards. The memory itself is released once the last callback
/// for the socket has returned. `sock_free(NULL)` does nothing.
#[unsafe(no_mangle)]
pub extern "C" fn sock_free(s: *mut sock) {
    ffi::call((), || {
        if s.is_null() {
            return Ok(());
        }
        socket(s)?.close();
        ffi::release(s as *const Socket);
        Ok(())
    })
}

/// Inlined into each export, so the operation is a direct call the compiler can fold into
/// the hot path rather than a call through a pointer.
#[inline(always)]
fn start(
    s: *mut sock,
    e: *mut sock_args,
    operation: impl FnOnce(&Arc<Socket>, &Arc<Args>) -> Result<bool, Reject>,
) -> bool {
    ffi::call(false, || {
        let socket = socket(s)?;
        let args = match ffi::borrow(e as *const Args, "args") {
            Ok(args) => args,
            // .NET reports a disposed socket before null args.
            Err(null) => return Err(socket.check_open().err().unwrap_or(null)),
        };
        operation(&socket, &args)
    })
}

/// Accepts a connection on a bound, listening socket. On success
/// `sock_args_accept_socket(e)` is the new connected socket, which the caller owns.
///
/// Returns true if pending: `e`'s callback runs once, later, on the reactor thread. False if
/// not: when `sock_last_status()` is OK it completed now and `e` holds the result (no
/// callback); otherwise it was rejected and nothing changed: NullArgument, Disposed,
/// InvalidArgument (a buffer list is set), InvalidOperation (not bound, or not listening),
/// NotSupported (a buffer is set), InProgress (`e` is busy).
#[unsafe(no_mangle)]
pub extern "C" fn sock_accept_async(s: *mut sock, e: *mut sock_args) -> bool {
    start(s, e, Socket::accept_async)
}

/// Connects to the endpoint set with `sock_args_set_remote_endpoint`. If `e` has a buffer,
/// its bytes are sent once connected (bytes transferred counts them), as .NET does.
/// A refused connection completes with ConnectionRefused (10061), now or later.
///
/// Returns as `sock_accept_async` does. Rejections: NullArgument, Disposed, InvalidArgument
/// (no endpoint, or a buffer list), InvalidOperation (listening socket, or a connect already
/// in progress), SocketError with IsConnected (10056) (already connected), NotSupported (an
/// endpoint of the other address family), InProgress.
#[unsafe(no_mangle)]
pub extern "C" fn sock_connect_async(s: *mut sock, e: *mut sock_args) -> bool {
    start(s, e, Socket::connect_async)
}

/// Sends `e`'s buffer range or buffer list. On a stream socket it completes only when every
/// byte is sent (Success, bytes transferred = the total) or with an error, whose bytes
/// transferred counts what had already gone out. Concurrent sends on one socket never
/// interleave: each goes out whole, in the order they were accepted. Nothing set (or an empty
/// list) is a zero-length send that completes at once with 0. On a stream socket that was
/// never connected it completes now with NotConnected (10057). Never raises SIGPIPE.
///
/// Returns as `sock_accept_async` does. Rejections: NullArgument, Disposed, InProgress.
#[unsafe(no_mangle)]
pub extern "C" fn sock_send_async(s: *mut sock, e: *mut sock_args) -> bool {
    start(s, e, Socket::send_async)
}

/// Receives into `e`'s buffer range or buffer list whatever is available (at least one byte),
/// waiting if there is none. Bytes transferred 0 with Success means end of stream. Nothing
/// set (or an empty list) is a zero-byte receive: it waits until data is readable, consumes
/// nothing, and completes with 0. Concurrent receives are served in the order they were
/// accepted.
///
/// Returns as `sock_accept_async` does. Rejections: NullArgument, Disposed, InProgress.
#[unsafe(no_mangle)]
pub extern "C" fn sock_receive_async(s: *mut sock, e: *mut sock_args) -> bool {
    start(s, e, Socket::receive_async)
}

/// Sends `e`'s buffer, range or buffer list as one datagram to the endpoint set with
/// `sock_args_set_remote_endpoint` (which may be changed between sends). A datagram is never
/// split or cut short: one too large for the socket completes with MessageSize (10040) and 0
/// bytes, a buffer list of any length included; nothing set is a zero-length datagram.
/// Bytes transferred is the datagram's size. The first send-to binds an unbound socket.
///
/// Returns as `sock_accept_async` does. Rejections: NullArgument, Disposed, InvalidArgument
/// (no endpoint), NotSupported (a stream socket, or an endpoint of the other family),
/// InProgress.
#[unsafe(no_mangle)]
pub extern "C" fn sock_send_to_async(s: *mut sock, e: *mut sock_args) -> bool {
    start(s, e, Socket::send_to_async)
}

/// Receives one datagram into `e`'s buffer, range or buffer list, and writes its sender into
/// `e` (read it with `sock_args_remote_endpoint`; an IPv4 sender on a dual-mode IPv6 socket
/// reads as `"[::ffff:127.0.0.1]:port"`, as on .NET). A datagram larger than the buffer fills
/// it, completes with Success and sets the Truncated flag (the rest is lost); Peek leaves the
/// datagram queued. Nothing set takes a datagram and keeps none of it (Truncated unless it
/// was empty). A zero-length datagram completes with 0 bytes.
///
/// Returns as `sock_accept_async` does. Rejections: NullArgument, Disposed, NotSupported (a
/// stream socket), InvalidOperation (the socket is not bound: bind it, or send from it
/// first), InProgress.
#[unsafe(no_mangle)]
pub extern "C" fn sock_receive_from_async(s: *mut sock, e: *mut sock_args) -> bool {
    start(s, e, Socket::receive_from_async)
}

/// Sends the elements set with `sock_args_set_send_packets` (.NET's `SendPacketsAsync`), in
/// order and as one send: memory elements with send, file ranges with sendfile(2) (zero
/// copy). Concurrent sends on the socket never interleave with it. It completes with Success
/// and bytes transferred = every element's bytes once all are sent; an empty list (or only
/// empty memory elements) completes at once with 0. A file range that does not fit its file
/// when the operation reaches it (`offset + count` past the end, or `offset` past the end with
/// count 0) completes with InvalidArgument (10022), as does a file that gets shorter while it
/// is sent; any error's bytes transferred counts what went out before it. The args' flags are
/// not used (and read None after). Last operation is SendPackets (8). Never raises SIGPIPE.
///
/// Files named by path are opened when it starts (and closed when it completes, before the
/// results are stored): one that cannot be opened, or is not a regular file, is rejected,
/// with a message naming the path and the element, and nothing is sent.
///
/// Returns as `sock_accept_async` does. Rejections: NullArgument, Disposed, InvalidArgument
/// (no elements set; a file that cannot be opened; a descriptor element that is not open, not
/// open for reading or not a regular file), NotSupported (the socket is not connected, or is not a stream
/// socket: send-packets on datagram sockets is not supported), InProgress.
#[unsafe(no_mangle)]
pub extern "C" fn sock_send_packets_async(s: *mut sock, e: *mut sock_args) -> bool {
    start(s, e, Socket::send_packets_async)
}

/// Shuts the connection down both ways after any sends queued before it: the peer sees end
/// of stream, the operation completes with Success and last operation Disconnect, and the
/// socket can then be closed gracefully.
///
/// Returns as `sock_accept_async` does. Rejections: NullArgument, Disposed, InProgress.
#[unsafe(no_mangle)]
pub extern "C" fn sock_disconnect_async(s: *mut sock, e: *mut sock_args) -> bool {
    start(s, e, Socket::disconnect_async)
}
