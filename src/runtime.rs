//! The C functions on the runtime: its configuration and its shutdown.

use crate::engine::runtime;
use crate::ffi;

/// Configures the runtime before its first use (the first `sock_create`): `reactor_threads`
/// reactor threads (1 to 256; sockets, also accepted ones, are spread over them round-robin)
/// and where callbacks run (`sock_dispatch`). Without this call the defaults are 1 thread and
/// Inline, or what the environment variables SOCKASYNC_REACTOR_THREADS (a number) and
/// SOCKASYNC_DISPATCH (`inline` or `pool`) say; this call overrides them. It may be called
/// again after `sock_runtime_shutdown`, for the next start.
///
/// Returns true if taken. False: InvalidArgument (0 or more than 256 threads, an unknown
/// dispatch), InvalidOperation (the runtime is already running).
#[unsafe(no_mangle)]
pub extern "C" fn sock_runtime_configure(reactor_threads: u32, dispatch: i32) -> bool {
    ffi::call(false, || {
        runtime::configure(reactor_threads, dispatch)?;
        Ok(true)
    })
}

/// Chooses how the reactors wait for readiness (`sock_backend`), before the runtime's first
/// use or after `sock_runtime_shutdown`, like `sock_runtime_configure`. Without this call the
/// backend is epoll, or what SOCKASYNC_BACKEND (`epoll` or `io_uring`) says. Every operation
/// behaves the same on both; io_uring asked for where the kernel or a seccomp filter refuses
/// it runs on epoll instead (`sock_runtime_backend` tells which one runs).
///
/// Returns true if taken. False: InvalidArgument (an unknown backend), InvalidOperation (the
/// runtime is already running).
#[unsafe(no_mangle)]
pub extern "C" fn sock_runtime_set_backend(backend: i32) -> bool {
    ffi::call(false, || {
        runtime::set_backend(backend)?;
        Ok(true)
    })
}

/// The backend the runtime runs on (`sock_backend`), starting the runtime if it is not
/// running yet (so an io_uring that was asked for but refused reads as epoll). -1 if the
/// runtime cannot start; sock_last_status() then says why (as `sock_create` would).
#[unsafe(no_mangle)]
pub extern "C" fn sock_runtime_backend() -> i32 {
    ffi::call(-1, || Ok(runtime::current()?.backend() as i32))
}

/// Makes each reactor poll without sleeping for up to `microseconds` after each turn with
/// work, before it blocks, so that a completion arriving meanwhile is handled without waking
/// a sleeping thread (tens of microseconds where the wake-up crosses cores). It costs CPU: a
/// reactor spins for up to that long after its last work, then sleeps (an idle runtime spins
/// not at all after that window); for latency-sensitive callers with spare cores, like
/// Linux's SO_BUSY_POLL.
///
/// 0 turns it off: the default, or what SOCKASYNC_BUSY_POLL_US (a number of microseconds)
/// says; this call overrides it. Set before the runtime's first use or after
/// `sock_runtime_shutdown`, like `sock_runtime_configure`; a restart keeps it. At most
/// 1,000,000 (one second): a spin saves a wake-up of tens of microseconds, one longer than a
/// second gives a core away rather than buying latency, and a larger number is more likely a
/// unit slip (milliseconds or nanoseconds) than a wish. Both backends spin: epoll with
/// epoll_wait that does not wait, io_uring with io_uring_enter that does not wait.
///
/// Returns true if taken. False: InvalidArgument (more than 1,000,000), InvalidOperation
/// (the runtime is already running).
#[unsafe(no_mangle)]
pub extern "C" fn sock_runtime_set_busy_poll(microseconds: u32) -> bool {
    ffi::call(false, || {
        runtime::set_busy_poll(microseconds)?;
        Ok(true)
    })
}

/// The busy poll, in microseconds, of the running runtime, or else the one the next start
/// will use (`sock_runtime_set_busy_poll`'s, else SOCKASYNC_BUSY_POLL_US's); 0 is off. It
/// starts nothing. 0 with sock_last_status() InvalidArgument if SOCKASYNC_BUSY_POLL_US does
/// not parse (the start would fail so).
#[unsafe(no_mangle)]
pub extern "C" fn sock_runtime_busy_poll() -> u32 {
    ffi::call(0, runtime::busy_poll_us)
}

/// Stops the runtime: every open socket is closed, every pending operation completes with
/// OperationAborted (995) through its callback, the library's threads are joined, and the call
/// returns only when no callback can run any more. Socket and args handles stay valid (closed
/// sockets reject operations as Disposed) until freed. The next `sock_create` starts the
/// runtime again; `sock_create` calls made while the shutdown runs are rejected with
/// InvalidOperation. Managed hosts need this before exit (Mono does not exit while a native
/// thread it has seen is running); it is safe to register with `atexit`. Without a running
/// runtime it does nothing.
///
/// Status: OK, or InvalidOperation when called from inside a callback (where waiting for
/// every callback to return would never end): nothing is stopped then.
#[unsafe(no_mangle)]
pub extern "C" fn sock_runtime_shutdown() {
    ffi::call((), runtime::shutdown)
}
