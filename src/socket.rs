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
/// `sock_disconnect_async`.
pub struct sock {
    _private: [u8; 0],
}

fn socket(s: *const sock) -> Result<std::mem::ManuallyDrop<Arc<Socket>>, Reject> {
    ffi::borrow(s as *const Socket, "socket")
}

/// Creates a socket, with .NET's numbers: `address_family` InterNetwork (2) or
/// InterNetworkV6 (23); `socket_type` Stream (1) or Dgram (2); `protocol` Tcp (6), Udp (17)
/// or 0 for the type's default.
///
/// Returns the new socket, owned by the caller (release it with `sock_free`), or NULL:
/// unknown numbers are InvalidArgument, Unix (1) is NotSupported, and a refusal by the
/// system is SocketError (e.g. ProtocolNotSupported for Stream with Udp, TooManyOpenSockets).
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

/// Binds the socket to a local endpoint given as text: `"127.0.0.1:8080"`, `"[::1]:0"`
/// (port 0 picks a free port; read it back with `sock_local_endpoint`).
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

fn write_endpoint(
    s: *const sock,
    out: *mut c_char,
    cap: usize,
    read: fn(&Socket) -> Result<std::net::SocketAddr, Reject>,
) -> usize {
    ffi::call(0, || {
        let socket = socket(s)?;
        socket.check_open()?;
        let text = read(&socket)?.to_string();
        ffi::write_c_str(&text, out, cap)
    })
}

/// Writes the socket's local endpoint as NUL-terminated text (`"127.0.0.1:5000"`,
/// `"[::1]:5000"`) into `out`, which holds `cap` bytes.
///
/// Returns the text's length without the NUL. Returns 0 and writes nothing if it does not
/// fit (InvalidArgument; 48 bytes always suffice), or on NullArgument, Disposed or
/// SocketError. An unbound socket reports the kernel's wildcard, e.g. `"0.0.0.0:0"`.
#[unsafe(no_mangle)]
pub extern "C" fn sock_local_endpoint(s: *const sock, out: *mut c_char, cap: usize) -> usize {
    write_endpoint(s, out, cap, Socket::local_endpoint)
}

/// Writes the connected peer's endpoint like `sock_local_endpoint` does.
///
/// Returns the text's length, or 0: not connected is SocketError with NotConnected (10057).
#[unsafe(no_mangle)]
pub extern "C" fn sock_remote_endpoint(s: *const sock, out: *mut c_char, cap: usize) -> usize {
    write_endpoint(s, out, cap, Socket::remote_endpoint)
}

fn option(code: i32) -> Result<SocketOption, Reject> {
    SocketOption::from_code(code).ok_or_else(|| {
        Reject::invalid(format!(
            "unknown option {code} (NoDelay=1, ReuseAddress=2, KeepAlive=3, \
             SendBufferSize=4, ReceiveBufferSize=5, Linger=6)"
        ))
    })
}

/// Sets an option (`sock_option`): NoDelay, ReuseAddress and KeepAlive take 0 or 1;
/// SendBufferSize and ReceiveBufferSize a size in bytes (1 to INT32_MAX; the kernel may
/// round it); Linger the seconds a close may wait for unsent data (0 to 65535; 0 = close
/// resets the connection; -1 = off). With a Linger above 0 the kernel's close waits, on
/// the thread that closes (the reactor thread, if it happens in a callback), until unsent
/// data is gone or the time is up; other sockets' callbacks wait with it.
///
/// Returns true if set. False: NullArgument, Disposed, InvalidArgument (unknown option or a
/// value out of range), or SocketError.
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

/// Shuts the connection down both ways after any sends queued before it: the peer sees end
/// of stream, the operation completes with Success and last operation Disconnect, and the
/// socket can then be closed gracefully.
///
/// Returns as `sock_accept_async` does. Rejections: NullArgument, Disposed, InProgress.
#[unsafe(no_mangle)]
pub extern "C" fn sock_disconnect_async(s: *mut sock, e: *mut sock_args) -> bool {
    start(s, e, Socket::disconnect_async)
}
