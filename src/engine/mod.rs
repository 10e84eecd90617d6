//! The safe core: sockets, args, operation queues and the reactor. Nothing here knows about
//! C; the FFI modules convert pointers and codes and call in.

pub mod args;
pub mod cq;
pub mod endpoint;
pub mod fd;
pub mod op;
pub mod packets;
pub mod queue;
pub mod reactor;
mod registry;
pub mod runtime;
pub mod socket;
pub mod sys;
pub mod uring;

pub use args::{Args, Completion, PlainCompletion};
pub use endpoint::AddressFamily;
pub use packets::{FileSource, Packet, SendPacketKind};
pub use runtime::{Backend, Dispatch};
pub use socket::{ProtocolType, ShutdownHow, Socket, SocketOption, SocketType};
pub use sys::RawBuf;
