//! sockasync: .NET's `SocketAsyncEventArgs` model (`Socket.SendAsync(e)` and its siblings)
//! as a C-ABI library.
//!
//! An operation (`sock_send_async(s, e)`) tries its system call on the caller's thread. If
//! it finishes there, the call returns false and the args hold the result. If the kernel
//! would block, the operation waits in the socket's queue, the call returns true, and the
//! library's reactor thread (edge-triggered epoll) finishes it and runs the args' callback.
//!
//! Layout (after rustls-ffi): `ffi` is the boundary plumbing (panic catching, last-status
//! record, pointer conversions); `socket`, `args`, `runtime` and `status` hold the exported functions,
//! one module per C type; `engine` is the safe core, which knows nothing of C; `error` has
//! the codes (.NET's numbers). The header `include/sockasync.h` is generated from these
//! sources by cbindgen.

#![allow(non_camel_case_types)]

pub mod args;
pub mod cq;
pub mod engine;
pub mod error;
mod ffi;
pub mod runtime;
pub mod socket;
pub mod status;
