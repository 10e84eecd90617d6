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
