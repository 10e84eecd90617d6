//! `sock_args`: the C functions on the args object (.NET's SocketAsyncEventArgs).

use std::ffi::{CString, c_char, c_void};
use std::mem::ManuallyDrop;
use std::sync::Arc;

use crate::cq::sock_cq;
use crate::engine::cq::CompletionQueue;
use crate::engine::{Args, FileSource, Packet, RawBuf, SendPacketKind, Socket, endpoint};
use crate::error::Reject;
use crate::ffi;
use crate::socket::sock;

/// An operation's arguments and results (.NET's `SocketAsyncEventArgs`): the completion
/// callback and user token, the buffer (or buffer list) and remote endpoint an operation
/// uses, and what it left: bytes transferred, socket error, last operation, accepted socket.
///
/// Made by `sock_args_new`, owned by the caller, released with `sock_args_free`. One
/// operation at a time: while one is in flight, starting another or changing the buffer,
/// range, list or endpoint is rejected (InProgress). It may be reused once its operation has
/// completed, including from inside its own callback.
///
/// Methods: `sock_args_free`, `sock_args_set_buffer`, `sock_args_set_range`,
/// `sock_args_set_buffer_list`, `sock_args_set_remote_endpoint`, `sock_args_set_user_token`,
/// `sock_args_user_token`, `sock_args_bytes_transferred`, `sock_args_socket_error`,
/// `sock_args_last_operation`, `sock_args_offset`, `sock_args_count`,
/// `sock_args_accept_socket`, `sock_args_set_flags`, `sock_args_flags`,
/// `sock_args_remote_endpoint`, `sock_args_set_send_packets`.
pub struct sock_args {
    _private: [u8; 0],
}

/// One buffer of a buffer list: `len` bytes at `data`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct sock_buf {
    pub data: *mut c_void,
    pub len: usize,
}

/// One element of a send-packets list (`sock_args_set_send_packets`), .NET's
/// `SendPacketsElement`. `kind` (a `sock_send_packet_kind` value) says which fields count;
/// the others are ignored.
///
/// - Memory: `count` bytes at `buffer + offset` (the offset is .NET's, for callers that pin
///   an array; C callers can leave it 0). The memory stays the caller's and must stay valid
///   and untouched until the operation has completed. Count 0 is skipped (`buffer` may then
///   be NULL).
/// - Path: `count` bytes of the file at `path` (NUL-terminated, copied when set) from byte
///   `offset`; count 0 = from `offset` to the end of the file. The operation opens the file
///   when it starts and closes it when it completes.
/// - Fd: the same range of the open regular file `fd`, read at `offset` without moving the
///   file's position; it stays the caller's (never closed by the library) and must stay open
///   until the operation has completed.
///
/// Zero-initialise the struct (`{0}`, or designated initialisers) and set what the kind
/// needs.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct sock_send_packet {
    /// `SOCK_SEND_PACKET_KIND_MEMORY`, `_PATH` or `_FD`.
    pub kind: i32,
    /// Memory: the bytes.
    pub buffer: *const c_void,
    /// Path: the file's path.
    pub path: *const c_char,
    /// Fd: the open file (pointer-sized, like `sock_from_fd`'s, for C#'s IntPtr).
    pub fd: isize,
    /// Where the range starts: bytes into the memory or the file (not negative).
    pub offset: i64,
    /// Bytes to send; for files 0 = to the end of the file.
    pub count: usize,
}

/// The engine's element for a C element (copying the path), or why it is refused.
fn packet(element: &sock_send_packet) -> Result<Packet, String> {
    let file = |source| Packet::file(source, element.offset, element.count);
    match SendPacketKind::from_code(element.kind) {
        Some(SendPacketKind::Memory) => {
            Packet::memory(element.buffer as *mut u8, element.offset, element.count)
        }
        Some(SendPacketKind::Path) => match ffi::c_str(element.path, "path") {
            // The bytes of a C string hold no NUL, so the copy cannot fail.
            Ok(path) => file(FileSource::Path(CString::new(path).unwrap_or_default())),
            Err(_) => Err("a path element has a NULL path".into()),
        },
        Some(SendPacketKind::Fd) => match i32::try_from(element.fd) {
            Ok(fd) => file(FileSource::Fd(fd)),
            Err(_) => Err(format!("{} is not a descriptor", element.fd)),
        },
        None => Err(format!(
            "unknown kind {} (Memory=0, Path=1, Fd=2)",
            element.kind
        )),
    }
}

/// The completion callback: runs exactly once for each operation that returned true
/// (pending), after `args` holds the results: on the reactor thread that serves the socket
/// (Inline dispatch, the default) or on a worker of the pool (Pool dispatch; see
/// `sock_runtime_configure`). `socket` is
/// the socket the operation was started on and `user_token` the args' token at the time of
/// the call. It may call any sockasync function, including starting another operation with
/// the same args, closing the socket, and freeing the socket or the args (but not
/// `sock_runtime_shutdown`, which is rejected there). It must not throw, longjmp or unwind
/// out, and should not block: under Inline dispatch other sockets' completions wait behind it.
pub type sock_completed_fn =
    Option<unsafe extern "C" fn(socket: *mut sock, args: *mut sock_args, user_token: *mut c_void)>;

fn args(e: *const sock_args) -> Result<ManuallyDrop<Arc<Args>>, Reject> {
    ffi::borrow(e as *const Args, "args")
}

/// Reads one value from the args; NULL gives `fallback` and NullArgument.
fn get<T>(e: *const sock_args, fallback: T, read: impl FnOnce(&Args) -> T) -> T {
    ffi::call(fallback, || Ok(read(&**args(e)?)))
}

/// Runs one setter; NULL args give NullArgument.
fn set(e: *mut sock_args, apply: impl FnOnce(&Args) -> Result<(), Reject>) -> bool {
    ffi::call(false, || {
        apply(&**args(e)?)?;
        Ok(true)
    })
}

/// Creates an args object whose pending operations report to `completed` with
/// `user_token` (never dereferenced by the library).
///
/// Returns the new args, owned by the caller (release with `sock_args_free`), or NULL with
/// NullArgument if `completed` is NULL.
#[unsafe(no_mangle)]
pub extern "C" fn sock_args_new(
    completed: sock_completed_fn,
    user_token: *mut c_void,
) -> *mut sock_args {
    ffi::call(std::ptr::null_mut(), || {
        let completed = completed.ok_or_else(|| Reject::null("completed"))?;
        let args = Arc::new(Args::with_plain_completion(
            call_completed,
            completed as usize,
            user_token as usize,
        ));
        Ok(ffi::into_handle(args) as *mut sock_args)
    })
}

/// Creates an args object whose pending operations post their completion to the queue `q`
/// (see `sock_cq`) instead of calling a function; `user_token` is as for `sock_args_new`.
/// The args keep the queue's memory alive; freeing the queue makes later completions of
/// these args go nowhere.
///
/// Returns the new args, owned by the caller (release with `sock_args_free`), or NULL with
/// NullArgument if `q` is NULL.
#[unsafe(no_mangle)]
pub extern "C" fn sock_args_new_queued(q: *mut sock_cq, user_token: *mut c_void) -> *mut sock_args {
    ffi::call(std::ptr::null_mut(), || {
        let queue = ffi::borrow(q as *const CompletionQueue, "queue")?;
        let args = Arc::new(Args::with_queue(Arc::clone(&queue), user_token as usize));
        Ok(ffi::into_handle(args) as *mut sock_args)
    })
}

/// The args' completion: calls the C callback `sock_args_new` was given, kept as a word.
fn call_completed(socket: &Arc<Socket>, args: &Arc<Args>, completed: usize) {
    type Callback = unsafe extern "C" fn(*mut sock, *mut sock_args, *mut c_void);
    // SAFETY: the word is exactly the non-null `sock_completed_fn` that sock_args_new stored
    // for these args (a function pointer, which round-trips through usize unchanged).
    let completed = unsafe { std::mem::transmute::<usize, Callback>(completed) };
    let token = args.user_token() as *mut c_void;
    // SAFETY: the caller gave this function for exactly this call shape; the two handles are
    // live (the pending operation holds both) until it returns.
    unsafe {
        completed(
            Arc::as_ptr(socket) as *mut sock,
            Arc::as_ptr(args) as *mut sock_args,
            token,
        )
    }
}

/// Releases the caller's args. If an operation is in flight, the memory stays valid until
/// its callback has returned (the callback still receives `e`), but no new operation may
/// start with it. A socket handed out by an accept is not freed with it. NULL does nothing.
#[unsafe(no_mangle)]
pub extern "C" fn sock_args_free(e: *mut sock_args) {
    ffi::call((), || {
        if e.is_null() {
            return Ok(());
        }
        args(e)?.mark_freed();
        ffi::release(e as *const Args);
        Ok(())
    })
}

/// Uses `length` bytes at `buffer` for the next operations (offset 0, count = length); the
/// caller keeps the memory valid and untouched until each operation using it has completed.
/// `buffer == NULL` clears it (offset = count = 0).
///
/// Returns true if set. False: NullArgument, InProgress, InvalidArgument (a buffer list is
/// set, or `length` > SSIZE_MAX).
#[unsafe(no_mangle)]
pub extern "C" fn sock_args_set_buffer(
    e: *mut sock_args,
    buffer: *mut c_void,
    length: usize,
) -> bool {
    set(e, |a| a.set_buffer(buffer as *mut u8, length))
}

/// Narrows operations to `count` bytes from `offset` of the buffer.
///
/// Returns true if set. False: NullArgument, InProgress, InvalidArgument (unless
/// `offset + count` <= the buffer's length, computed without overflow).
#[unsafe(no_mangle)]
pub extern "C" fn sock_args_set_range(e: *mut sock_args, offset: usize, count: usize) -> bool {
    set(e, |a| a.set_range(offset, count))
}

/// Uses a list of `count` buffers (scatter/gather). The list array is copied, so it may be
/// reused at once; the memory each entry names must stay valid until each operation using
/// it has completed. `list == NULL` clears; an empty list (count 0) is allowed. Any length
/// works on stream sockets, also past IOV_MAX entries.
///
/// Returns true if set. False: NullArgument, InProgress, InvalidArgument (a buffer is set,
/// an entry has a NULL pointer with a non-zero length, or the total exceeds SSIZE_MAX),
/// OutOfMemory.
#[unsafe(no_mangle)]
pub extern "C" fn sock_args_set_buffer_list(
    e: *mut sock_args,
    list: *const sock_buf,
    count: usize,
) -> bool {
    set(e, |a| {
        if list.is_null() {
            return a.set_buffer_list(None);
        }
        let copied = ffi::copy_array(list, count, "list")?
            .into_iter()
            .map(|b| RawBuf {
                ptr: b.data as *mut u8,
                len: b.len,
            })
            .collect();
        a.set_buffer_list(Some(copied))
    })
}

/// Sets the elements `sock_send_packets_async` sends, in order: `count` entries of
/// `elements` (see `sock_send_packet`). The array and the paths in it are copied, so both may
/// be reused at once; memory and descriptors the elements name must stay valid until each
/// operation using them has completed. `elements == NULL` clears them; an empty list (count
/// 0) is allowed and sends nothing. The elements stay set across operations, and are
/// independent of the buffer and buffer list, which send-packets does not use.
///
/// Returns true if set. False: NullArgument, InProgress, InvalidArgument (with a message
/// naming the element: an unknown kind, a negative offset, a memory element with a NULL
/// buffer and a non-zero count or whose offset + count or the memory total exceeds
/// SSIZE_MAX, a path element with a NULL or empty path, a negative descriptor),
/// OutOfMemory. Files are not opened here: a missing file is reported when the operation
/// starts.
#[unsafe(no_mangle)]
pub extern "C" fn sock_args_set_send_packets(
    e: *mut sock_args,
    elements: *const sock_send_packet,
    count: usize,
) -> bool {
    set(e, |a| {
        if elements.is_null() {
            return a.set_send_packets(None);
        }
        let copied = ffi::copy_array(elements, count, "elements")?
            .iter()
            .enumerate()
            .map(|(i, element)| {
                packet(element)
                    .map_err(|why| Reject::invalid(format!("send-packets element {i}: {why}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        a.set_send_packets(Some(copied))
    })
}

/// Sets the endpoint a connect goes to, as text (`"127.0.0.1:8080"`, `"[::1]:8080"`);
/// NULL clears it.
///
/// Returns true if set. False: NullArgument, InProgress, InvalidArgument (text that does not
/// parse; no host names).
#[unsafe(no_mangle)]
pub extern "C" fn sock_args_set_remote_endpoint(
    e: *mut sock_args,
    endpoint: *const c_char,
) -> bool {
    set(e, |a| {
        let parsed = if endpoint.is_null() {
            None
        } else {
            Some(endpoint::parse(ffi::c_str(endpoint, "endpoint")?)?)
        };
        a.set_remote_endpoint(parsed)
    })
}

/// Sets the SocketFlags (`sock_socket_flags`, combined with `|`) the next operations pass:
/// OutOfBand, Peek, DontRoute. Each completion overwrites them with what it reports
/// (Truncated for a datagram cut short; None for sends), so set them again before each
/// operation that needs them; Truncated and ControlDataTruncated are ignored as input.
///
/// Returns true if set. False: NullArgument, InProgress, InvalidArgument (other bits).
#[unsafe(no_mangle)]
pub extern "C" fn sock_args_set_flags(e: *mut sock_args, flags: i32) -> bool {
    set(e, |a| a.set_flags(flags))
}

/// The flags (`sock_socket_flags`): as set, or what the last completed operation reported
/// (0 for NULL args).
#[unsafe(no_mangle)]
pub extern "C" fn sock_args_flags(e: *const sock_args) -> i32 {
    get(e, 0, Args::flags)
}

/// Writes the args' remote endpoint as NUL-terminated text into `out` (`cap` bytes): the one
/// set with `sock_args_set_remote_endpoint`, or the sender of the datagram the last
/// receive-from took, in the forms `sock_local_endpoint` uses.
///
/// Returns the text's length without the NUL; 0 with status OK if the args have no endpoint
/// (nothing written); 0 with InvalidArgument if it does not fit (nothing written), or
/// NullArgument.
#[unsafe(no_mangle)]
pub extern "C" fn sock_args_remote_endpoint(
    e: *const sock_args,
    out: *mut c_char,
    cap: usize,
) -> usize {
    ffi::call(0, || match args(e)?.endpoint() {
        Some(endpoint) => ffi::write_c_bytes(&endpoint.to_text(), out, cap),
        None if out.is_null() => Err(Reject::null("out")),
        None => Ok(0),
    })
}

/// Replaces the user token; allowed at any time. A callback receives the token current when
/// it runs.
#[unsafe(no_mangle)]
pub extern "C" fn sock_args_set_user_token(e: *mut sock_args, user_token: *mut c_void) {
    ffi::call((), || {
        args(e)?.set_user_token(user_token as usize);
        Ok(())
    })
}

/// The user token (NULL and NullArgument for NULL args).
#[unsafe(no_mangle)]
pub extern "C" fn sock_args_user_token(e: *const sock_args) -> *mut c_void {
    get(e, std::ptr::null_mut(), |a| a.user_token() as *mut c_void)
}

/// Bytes the last completed operation sent or received (0 for NULL args). Starting an
/// operation leaves it as it was until that operation completes.
#[unsafe(no_mangle)]
pub extern "C" fn sock_args_bytes_transferred(e: *const sock_args) -> usize {
    get(e, 0, Args::bytes_transferred)
}

/// The last completed operation's result, a `sock_socket_error` value: Success (0), or e.g.
/// ConnectionReset (10054), OperationAborted (995). Returns -1 for NULL args.
#[unsafe(no_mangle)]
pub extern "C" fn sock_args_socket_error(e: *const sock_args) -> i32 {
    get(e, -1, Args::socket_error)
}

/// The operation last started with these args, a `sock_async_operation` value (None = 0 for
/// a new args object, and for NULL args).
#[unsafe(no_mangle)]
pub extern "C" fn sock_args_last_operation(e: *const sock_args) -> i32 {
    get(e, 0, Args::last_operation)
}

/// The buffer offset operations start at (0 for NULL args).
#[unsafe(no_mangle)]
pub extern "C" fn sock_args_offset(e: *const sock_args) -> usize {
    get(e, 0, Args::offset)
}

/// The number of buffer bytes operations use (0 for NULL args).
#[unsafe(no_mangle)]
pub extern "C" fn sock_args_count(e: *const sock_args) -> usize {
    get(e, 0, Args::count)
}

/// The connected socket the last accept produced, or NULL (before any accept, while one is
/// in flight, after a failed or aborted one, and for NULL args). Each accept hands out a new
/// socket; reading it makes the caller its owner, who releases it with `sock_free`. Reading
/// it twice returns the same handle, not a second one. A socket never read is closed and
/// released by the library when the args start another accept or are freed.
#[unsafe(no_mangle)]
pub extern "C" fn sock_args_accept_socket(e: *const sock_args) -> *mut sock {
    get(e, std::ptr::null_mut(), |a| a.accept_socket() as *mut sock)
}
