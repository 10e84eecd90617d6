//! The C boundary's plumbing: the panic-catching call wrapper every export goes through, the
//! per-thread "last call" record behind `sock_last_status()`, and the pointer conversions.
//! Every `unsafe` of the FFI layer that turns a C pointer into Rust is here.

use std::cell::{Cell, RefCell};
use std::ffi::{CStr, c_char};
use std::mem::ManuallyDrop;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::{Reject, Status};

/// The latest call's status on this thread. Plain cells without a destructor, so the success
/// path (every call) pays no TLS lifecycle check; the message lives apart. Invariant: a
/// status of OK comes with socket error 0 and no message.
struct LastCall {
    status: Cell<i32>,
    socket_error: Cell<i32>,
    has_message: Cell<bool>,
}

thread_local! {
    static LAST: LastCall = const {
        LastCall {
            status: Cell::new(0),
            socket_error: Cell::new(0),
            has_message: Cell::new(false),
        }
    };
    /// NUL-terminated; kept (not freed) between errors, so a message costs no allocation
    /// once the buffer has grown.
    static MESSAGE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Gives the thread's share of `NOT_OK_RECORDS` back when the thread ends; touched only
    /// when a rejection is recorded, so only such threads pay for its destructor.
    static NOT_OK_AT_EXIT: NotOkAtExit = const { NotOkAtExit };
}

/// How many threads' records say anything but OK. Every record starts OK, so while this is 0
/// a successful call has nothing to record, and skips the thread-local record altogether:
/// in a shared library every TLS access is a call to `__tls_get_addr`, a good part of a
/// small send's instructions. A thread counts itself in (under its own record) on the change
/// to not-OK and out on the change back; a thread only ever reads its own share, which no
/// other thread changes, so relaxed ordering is enough for it to see it.
static NOT_OK_RECORDS: AtomicUsize = AtomicUsize::new(0);

struct NotOkAtExit;

impl Drop for NotOkAtExit {
    fn drop(&mut self) {
        // LAST has no destructor, so it is still there while this one runs.
        LAST.with(|last| {
            if last.status.get() != Status::Ok as i32 {
                last.status.set(Status::Ok as i32);
                NOT_OK_RECORDS.fetch_sub(1, Ordering::Relaxed);
            }
        });
    }
}

#[inline(always)]
fn record_ok() {
    if NOT_OK_RECORDS.load(Ordering::Relaxed) != 0 {
        record_ok_in_tls();
    }
}

#[inline(never)]
fn record_ok_in_tls() {
    LAST.with(|last| {
        if last.status.get() != Status::Ok as i32 {
            last.status.set(Status::Ok as i32);
            last.socket_error.set(0);
            last.has_message.set(false);
            NOT_OK_RECORDS.fetch_sub(1, Ordering::Relaxed);
        }
    });
}

#[cold]
fn record_reject(reject: &Reject) {
    // Registers the exit hook before the count goes up (try_with: on a thread whose TLS is
    // being torn down there is no hook, and the share stays counted, which only costs speed).
    let _ = NOT_OK_AT_EXIT.try_with(|_| ());
    LAST.with(|last| {
        let was_ok = last.status.get() == Status::Ok as i32;
        let is_ok = reject.status == Status::Ok;
        if was_ok && !is_ok {
            NOT_OK_RECORDS.fetch_add(1, Ordering::Relaxed);
        } else if !was_ok && is_ok {
            NOT_OK_RECORDS.fetch_sub(1, Ordering::Relaxed);
        }
        last.status.set(reject.status as i32);
        last.socket_error
            .set(if reject.status == Status::SocketError {
                reject.socket_error as i32
            } else {
                0
            });
        // try_with: a call on a thread whose TLS is being torn down keeps its status, and
        // only loses the message.
        let stored = MESSAGE.try_with(|message| {
            let Ok(mut message) = message.try_borrow_mut() else {
                return false;
            };
            message.clear();
            message.extend(reject.message.bytes().filter(|b| *b != 0));
            message.push(0);
            true
        });
        last.has_message.set(stored.unwrap_or(false));
    });
}

/// Runs the body of an exported function: a rejection or a caught panic is recorded for
/// `sock_last_status()` and turned into `on_error`; success records OK.
#[inline]
pub(crate) fn call<T>(on_error: T, body: impl FnOnce() -> Result<T, Reject>) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(value)) => {
            record_ok();
            value
        }
        Ok(Err(reject)) => {
            record_reject(&reject);
            on_error
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            record_reject(&Reject::new(
                Status::Internal,
                format!("internal error in sockasync (please report): {what}"),
            ));
            on_error
        }
    }
}

pub(crate) fn last_status() -> i32 {
    LAST.with(|last| last.status.get())
}

pub(crate) fn last_socket_error() -> i32 {
    LAST.with(|last| last.socket_error.get())
}

pub(crate) fn last_message() -> *const c_char {
    let has_message = LAST.with(|last| last.has_message.get());
    if !has_message {
        return c"".as_ptr();
    }
    MESSAGE
        .try_with(|message| message.borrow().as_ptr() as *const c_char)
        .unwrap_or(c"".as_ptr())
}

/// A borrowed view of an object handed to C with `into_handle`, without touching its count.
#[inline]
pub(crate) fn borrow<T>(ptr: *const T, what: &str) -> Result<ManuallyDrop<Arc<T>>, Reject> {
    if ptr.is_null() {
        return Err(Reject::null(what));
    }
    // SAFETY: non-null handles of this type come only from `into_handle` (Arc::into_raw) in
    // this crate, and the caller promises by the API contract not to use one after freeing
    // it; ManuallyDrop keeps the reference count as it was.
    Ok(ManuallyDrop::new(unsafe { Arc::from_raw(ptr) }))
}

/// Hands one strong reference to C as an opaque pointer.
pub(crate) fn into_handle<T>(value: Arc<T>) -> *const T {
    Arc::into_raw(value)
}

/// Takes back the strong reference `into_handle` gave to C (the `_free` functions).
pub(crate) fn release<T>(ptr: *const T) {
    if !ptr.is_null() {
        // SAFETY: as in `borrow`; the caller hands the handle back exactly once, by contract.
        drop(unsafe { Arc::from_raw(ptr) });
    }
}

/// The bytes of a NUL-terminated C string.
pub(crate) fn c_str<'a>(ptr: *const c_char, what: &str) -> Result<&'a [u8], Reject> {
    if ptr.is_null() {
        return Err(Reject::null(what));
    }
    // SAFETY: the caller passes a NUL-terminated string that stays valid for this call.
    Ok(unsafe { CStr::from_ptr(ptr) }.to_bytes())
}

/// Writes `text` and a NUL into `out` if both fit in `cap` bytes; returns the text's length.
/// Text is bytes, since Unix socket paths need not be UTF-8.
pub(crate) fn write_c_bytes(text: &[u8], out: *mut c_char, cap: usize) -> Result<usize, Reject> {
    if out.is_null() {
        return Err(Reject::null("out"));
    }
    let needed = text.len() + 1;
    if needed > cap {
        return Err(Reject::invalid(format!(
            "the text needs {needed} bytes with its NUL; cap is {cap}"
        )));
    }
    // SAFETY: `out` is writable for `cap` bytes (caller contract) and needed <= cap; the
    // source is memory of our own, so the ranges do not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), out as *mut u8, text.len());
        *out.add(text.len()) = 0;
    }
    Ok(text.len())
}

/// Stores `value` through a caller's out-pointer.
pub(crate) fn write_out<T>(out: *mut T, value: T) -> Result<(), Reject> {
    if out.is_null() {
        return Err(Reject::null("out"));
    }
    // SAFETY: `out` is non-null and points at a writable T (caller contract).
    unsafe { out.write(value) };
    Ok(())
}

/// Stores `value` in slot `index` of a caller's array; the caller of this function has
/// checked `out` is non-null and `index` is below the array's length the C caller gave.
pub(crate) fn write_slot<T>(out: *mut T, index: usize, value: T) {
    // SAFETY: as above: `out` points at an array of at least index + 1 writable T.
    unsafe { out.add(index).write(value) }
}

/// A copy of a C array of `count` elements; NULL with a non-zero count is rejected.
pub(crate) fn copy_array<T: Copy>(
    ptr: *const T,
    count: usize,
    what: &str,
) -> Result<Vec<T>, Reject> {
    if count == 0 {
        return Ok(Vec::new());
    }
    if ptr.is_null() {
        return Err(Reject::null(what));
    }
    if count
        .checked_mul(std::mem::size_of::<T>())
        .is_none_or(|b| b > isize::MAX as usize)
    {
        return Err(Reject::invalid(format!(
            "{what}: {count} entries is too many"
        )));
    }
    let mut copy = Vec::new();
    copy.try_reserve_exact(count).map_err(|_| {
        Reject::new(
            Status::OutOfMemory,
            format!("cannot allocate a copy of {count} entries of {what}"),
        )
    })?;
    // SAFETY: the caller passes `count` readable elements at `ptr` (contract), and the size
    // was checked above.
    copy.extend_from_slice(unsafe { std::slice::from_raw_parts(ptr, count) });
    Ok(copy)
}
