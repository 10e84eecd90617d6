//! `sock_cq`: the C functions on completion queues.

use std::sync::Arc;
use std::time::Duration;

use crate::args::sock_args;
use crate::engine::cq::CompletionQueue;
use crate::error::Reject;
use crate::ffi;

/// A completion queue: an alternative to callbacks. Args made with `sock_args_new_queued`
/// post each completion of a pending operation (true) here instead of calling a function; the
/// host takes them out with `sock_cq_wait`, from any number of threads, or watches
/// `sock_cq_fd` in its own event loop (Python's asyncio `add_reader`, GLib, libuv's
/// `uv_poll`). Operations that complete at once (false) are not posted, as no callback runs
/// for them. Completions of one socket and direction are posted in order; close and
/// `sock_runtime_shutdown` post OperationAborted as they would call back.
///
/// Made by `sock_cq_new`, owned by the caller, released with `sock_cq_free`.
///
/// Methods: `sock_cq_free`, `sock_cq_wait`, `sock_cq_fd`, `sock_args_new_queued`.
pub struct sock_cq {
    _private: [u8; 0],
}

fn queue(q: *const sock_cq) -> Result<std::mem::ManuallyDrop<Arc<CompletionQueue>>, Reject> {
    ffi::borrow(q as *const CompletionQueue, "queue")
}

/// Creates a completion queue, owned by the caller (release with `sock_cq_free`).
///
/// Returns NULL with SocketError if the system refuses its descriptor (TooManyOpenSockets).
#[unsafe(no_mangle)]
pub extern "C" fn sock_cq_new() -> *mut sock_cq {
    ffi::call(std::ptr::null_mut(), || {
        Ok(ffi::into_handle(Arc::new(CompletionQueue::new()?)) as *mut sock_cq)
    })
}

/// Releases the caller's queue: completions still in it are dropped (args freed while pending
/// go with them), later ones are discarded, and threads waiting in `sock_cq_wait` return 0.
/// Args made for it stay valid (their operations still complete) until freed. NULL does
/// nothing.
#[unsafe(no_mangle)]
pub extern "C" fn sock_cq_free(q: *mut sock_cq) {
    ffi::call((), || {
        if q.is_null() {
            return Ok(());
        }
        queue(q)?.close();
        ffi::release(q as *const CompletionQueue);
        Ok(())
    })
}

/// Takes up to `cap` completed args into `out`, waiting up to `timeout_ms` milliseconds for
/// the first (0: do not wait; -1: wait for ever). Each taken args object has its results in
/// place and may be reused or freed at once. An args object that was freed while its
/// operation was pending is still delivered once (its user token tells which); that pointer
/// stays valid until this thread's next `sock_cq_wait`, and must not be used for anything
/// but reading it. Several threads may wait on one queue; each completion goes to one.
///
/// Returns how many it took (0 after a time-out, or if the queue was freed meanwhile). 0 also
/// on NullArgument, or InvalidArgument (cap 0, or a timeout below -1).
#[unsafe(no_mangle)]
pub extern "C" fn sock_cq_wait(
    q: *mut sock_cq,
    out: *mut *mut sock_args,
    cap: usize,
    timeout_ms: i32,
) -> usize {
    ffi::call(0, || {
        // A strong reference of our own, so a sock_cq_free from another thread cannot take
        // the queue away while this thread waits on it.
        let queue = Arc::clone(&*queue(q)?);
        if out.is_null() {
            return Err(Reject::null("out"));
        }
        if cap == 0 {
            return Err(Reject::invalid("cap must be at least 1"));
        }
        let timeout = match timeout_ms {
            -1 => None,
            ms if ms >= 0 => Some(Duration::from_millis(ms as u64)),
            ms => {
                return Err(Reject::invalid(format!(
                    "timeout {ms} ms: 0 polls, -1 waits for ever, other negatives are invalid"
                )));
            }
        };
        // `out` holds `cap` slots (caller contract), and `wait` hands at most `cap` entries,
        // numbered from 0.
        Ok(queue.wait(cap, timeout, |i, args| {
            ffi::write_slot(out, i, args as *mut sock_args)
        }))
    })
}

/// A descriptor that is readable while the queue holds completions, for an event loop to
/// watch (readable means: call `sock_cq_wait` with timeout 0). It is the queue's: do not
/// read, write or close it. Returns -1 with NullArgument for NULL.
#[unsafe(no_mangle)]
pub extern "C" fn sock_cq_fd(q: *const sock_cq) -> isize {
    ffi::call(-1, || Ok(queue(q)?.fd() as isize))
}
