//! The per-thread status of the latest call, and names for every code.

use std::ffi::c_char;

use crate::error::{SocketError, Status};
use crate::ffi;

/// The status of the latest sockasync call on this thread, a `sock_status` value: OK (0) if
/// it was accepted, otherwise why it was rejected. Every function sets it except this one,
/// `sock_last_socket_error` and `sock_last_error_message`, which change nothing.
#[unsafe(no_mangle)]
pub extern "C" fn sock_last_status() -> i32 {
    ffi::last_status()
}

/// The `sock_socket_error` code behind the latest call's SocketError status on this thread;
/// 0 for any other status.
#[unsafe(no_mangle)]
pub extern "C" fn sock_last_socket_error() -> i32 {
    ffi::last_socket_error()
}

/// A message for people about the latest call on this thread: why it was rejected, or ""
/// after an accepted call. Never NULL. Owned by the library: valid until the next sockasync
/// call on this thread (other than these three status functions); do not free it.
#[unsafe(no_mangle)]
pub extern "C" fn sock_last_error_message() -> *const c_char {
    ffi::last_message()
}

/// The name of a `sock_socket_error` value, e.g. "ConnectionReset" for 10054; "Unknown"
/// (with status InvalidArgument) for any other number. A static string: never free it.
/// Like every call but the three status functions, it records its own status: read
/// `sock_last_error_message()` before calling it, not in the same argument list.
#[unsafe(no_mangle)]
pub extern "C" fn sock_error_name(code: i32) -> *const c_char {
    ffi::call(c"Unknown".as_ptr(), || {
        SocketError::from_code(code)
            .map(|e| e.name().as_ptr())
            .ok_or_else(|| crate::error::Reject::invalid(format!("{code} is not a SocketError")))
    })
}

/// The name of a `sock_status` value, e.g. "InProgress" for 3; "Unknown" (with status
/// InvalidArgument) for any other number. A static string: never free it.
/// Like every call but the three status functions, it records its own status: read
/// `sock_last_error_message()` before calling it, not in the same argument list.
#[unsafe(no_mangle)]
pub extern "C" fn sock_status_name(code: i32) -> *const c_char {
    ffi::call(c"Unknown".as_ptr(), || {
        Status::from_code(code)
            .map(|s| s.name().as_ptr())
            .ok_or_else(|| crate::error::Reject::invalid(format!("{code} is not a status")))
    })
}

/// The library's version, e.g. "0.1.0" (equal to SOCKASYNC_VERSION_MAJOR.MINOR.PATCH of the
/// header it was built with). A static string: never free it.
#[unsafe(no_mangle)]
pub extern "C" fn sock_version() -> *const c_char {
    ffi::call(std::ptr::null(), || {
        Ok(concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const c_char)
    })
}
