//! Operations and one attempt at each: the system call, tried on the caller's thread first and
//! by the reactor after a readiness edge. An attempt either finishes the operation (with a
//! result) or says the kernel would block; it never blocks and never reports EAGAIN.

use std::sync::Arc;

use super::args::{Args, Payload};
use super::endpoint::{Endpoint, Family};
use super::socket::Socket;
use super::sys::{self, RawBuf};
use crate::error::{AsyncOperation, SocketError, SocketFlags};

/// How an operation ended.
pub struct Finished {
    pub bytes: usize,
    pub error: SocketError,
    pub accepted: Option<Arc<Socket>>,
    /// SocketFlags the operation reports (a receive's Truncated, say; None for the rest).
    pub flags: i32,
}

impl Finished {
    #[inline]
    pub fn ok(bytes: usize) -> Finished {
        Finished {
            bytes,
            error: SocketError::Success,
            accepted: None,
            flags: 0,
        }
    }

    pub fn failed(bytes: usize, error: SocketError) -> Finished {
        Finished {
            bytes,
            error,
            accepted: None,
            flags: 0,
        }
    }

    fn from_result(result: Result<usize, i32>) -> Attempt {
        match result {
            Ok(n) => Attempt::Done(Finished::ok(n)),
            Err(libc::EAGAIN) => Attempt::WouldBlock,
            Err(e) => Attempt::Done(Finished::failed(0, SocketError::from_errno(e))),
        }
    }
}

pub enum Attempt {
    Done(Finished),
    WouldBlock,
}

/// A stream or datagram send's progress through its payload.
pub struct Transfer {
    payload: Payload,
    /// Buffer-list cursor: entry index and bytes already sent from that entry.
    index: usize,
    skip: usize,
    done: usize,
    total: usize,
    /// MSG_* bits from the args' SocketFlags.
    flags: i32,
}

impl Transfer {
    #[inline]
    pub fn new(payload: Payload, flags: i32) -> Transfer {
        let total = payload.total_len();
        Transfer {
            payload,
            index: 0,
            skip: 0,
            done: 0,
            total,
            flags,
        }
    }

    pub fn total(&self) -> usize {
        self.total
    }

    /// Counts `n` bytes of a single-buffer payload as sent already (a first attempt made
    /// outside the operation).
    pub fn advance_single(&mut self, n: usize) {
        debug_assert!(matches!(self.payload, Payload::Single(_)) && n <= self.total);
        self.done += n;
    }

    /// A datagram goes out whole in one call, or not at all (never split, never cut short),
    /// to `to` or to the connected peer; an empty payload is a zero-length datagram.
    fn send_datagram(&mut self, fd: i32, to: Option<&socket2::SockAddr>) -> Attempt {
        Finished::from_result(sys::send_datagram(
            fd,
            self.payload.buffers(),
            to,
            self.flags,
        ))
    }

    #[inline]
    fn send(&mut self, fd: i32, stream: bool) -> Attempt {
        if !stream {
            return self.send_datagram(fd, None);
        }
        while self.done < self.total {
            let sent = match &self.payload {
                Payload::Empty => break,
                Payload::Single(b) => sys::send(
                    fd,
                    RawBuf {
                        ptr: b.ptr.wrapping_add(self.done),
                        len: b.len - self.done,
                    },
                    self.flags,
                ),
                Payload::List(list) => sys::sendmsg(fd, &list[self.index..], self.skip, self.flags),
            };
            match sent {
                Ok(n) => {
                    self.done += n;
                    if let Payload::List(list) = &self.payload {
                        (self.index, self.skip) = sys::advance(list, self.index, self.skip, n);
                    }
                }
                Err(libc::EAGAIN) => return Attempt::WouldBlock,
                Err(e) => {
                    return Attempt::Done(Finished::failed(self.done, SocketError::from_errno(e)));
                }
            }
        }
        Attempt::Done(Finished::ok(self.done))
    }
}

pub enum ConnectPhase {
    Start,
    Waiting,
    Sending,
}

/// A connect in progress (boxed in `Kind`: rare, and larger than the rest).
pub struct Connect {
    pub addr: Endpoint,
    pub phase: ConnectPhase,
    /// .NET sends the args' buffer once connected; bytes transferred counts it.
    pub then: Transfer,
}

pub enum Kind {
    Accept,
    Connect(Box<Connect>),
    Send(Transfer),
    /// A datagram to the args' endpoint (read at each attempt: the args are the operation's
    /// while it is in flight).
    SendTo(Transfer),
    /// With the MSG_* bits of the args' SocketFlags.
    Receive(Payload, i32),
    /// A datagram, whose sender goes into the args.
    ReceiveFrom(Payload, i32),
    Disconnect,
}

impl Kind {
    #[inline]
    pub fn operation(&self) -> AsyncOperation {
        match self {
            Kind::Accept => AsyncOperation::Accept,
            Kind::Connect(_) => AsyncOperation::Connect,
            Kind::Send(_) => AsyncOperation::Send,
            Kind::SendTo(_) => AsyncOperation::SendTo,
            Kind::Receive(..) => AsyncOperation::Receive,
            Kind::ReceiveFrom(..) => AsyncOperation::ReceiveFrom,
            Kind::Disconnect => AsyncOperation::Disconnect,
        }
    }

    /// Bytes already moved, reported if the operation is aborted now.
    pub fn progress(&self) -> usize {
        match self {
            Kind::Send(t) | Kind::SendTo(t) => t.done,
            Kind::Connect(c) => c.then.done,
            _ => 0,
        }
    }

    /// One non-blocking try. `socket` is the socket the operation was issued on, `args` the
    /// args it owns.
    #[inline]
    pub fn attempt(&mut self, socket: &Socket, args: &Args) -> Attempt {
        let Some(fd) = socket.fd().acquire() else {
            return Attempt::Done(Finished::failed(
                self.progress(),
                SocketError::OperationAborted,
            ));
        };
        let fd = fd.raw();
        match self {
            Kind::Send(t) => match t.send(fd, socket.is_stream()) {
                Attempt::Done(f) if f.error == SocketError::Shutdown && !socket.was_connected() => {
                    // The kernel says EPIPE; .NET says the socket was never connected.
                    Attempt::Done(Finished::failed(f.bytes, SocketError::NotConnected))
                }
                other => other,
            },
            Kind::SendTo(t) => match args.endpoint() {
                Some(to) => {
                    let sent = t.send_datagram(fd, Some(to.sock_addr()));
                    if matches!(&sent, Attempt::Done(f) if f.error == SocketError::Success) {
                        // The kernel bound the socket for its first send-to.
                        socket.mark_bound();
                    }
                    sent
                }
                // Checked when it started; the args cannot change while it is in flight.
                None => Attempt::Done(Finished::failed(0, SocketError::DestinationAddressRequired)),
            },
            Kind::Receive(payload, flags) if !socket.is_stream() => {
                receive_datagram(fd, payload, *flags, None)
            }
            Kind::Receive(payload, flags) => receive(fd, payload, *flags),
            Kind::ReceiveFrom(payload, flags) => {
                receive_datagram(fd, payload, *flags, Some((args, socket.family())))
            }
            Kind::Accept => match sys::accept(fd) {
                Ok(new_fd) => match socket.adopt_accepted(new_fd) {
                    Ok(accepted) => Attempt::Done(Finished {
                        bytes: 0,
                        error: SocketError::Success,
                        accepted: Some(accepted),
                        flags: 0,
                    }),
                    Err(error) => Attempt::Done(Finished::failed(0, error)),
                },
                Err(libc::EAGAIN) => Attempt::WouldBlock,
                Err(e) => Attempt::Done(Finished::failed(0, SocketError::from_errno(e))),
            },
            Kind::Connect(connect) => loop {
                let Connect { addr, phase, then } = &mut **connect;
                match phase {
                    ConnectPhase::Start => match sys::connect(fd, addr.sock_addr()) {
                        Ok(()) => {
                            socket.connect_finished(true);
                            *phase = ConnectPhase::Sending;
                        }
                        Err(libc::EINPROGRESS) => {
                            *phase = ConnectPhase::Waiting;
                            return Attempt::WouldBlock;
                        }
                        Err(e) => {
                            socket.connect_finished(false);
                            return Attempt::Done(Finished::failed(0, SocketError::from_errno(e)));
                        }
                    },
                    ConnectPhase::Waiting => {
                        match sys::connect_finished(fd).and_then(|done| {
                            if done {
                                sys::take_error(fd).map(Some)
                            } else {
                                Ok(None)
                            }
                        }) {
                            Ok(None) => return Attempt::WouldBlock,
                            Ok(Some(0)) => {
                                socket.connect_finished(true);
                                *phase = ConnectPhase::Sending;
                            }
                            Ok(Some(e)) | Err(e) => {
                                socket.connect_finished(false);
                                return Attempt::Done(Finished::failed(
                                    0,
                                    SocketError::from_errno(e),
                                ));
                            }
                        }
                    }
                    // Only a buffer set on the args is sent (on a datagram socket an empty
                    // one would otherwise go out as a zero-length datagram).
                    ConnectPhase::Sending if then.total() == 0 => {
                        return Attempt::Done(Finished::ok(0));
                    }
                    ConnectPhase::Sending => return then.send(fd, socket.is_stream()),
                }
            },
            Kind::Disconnect => match sys::shutdown(fd, libc::SHUT_RDWR) {
                Ok(()) => {
                    socket.mark_send_shutdown();
                    Attempt::Done(Finished::ok(0))
                }
                Err(e) => Attempt::Done(Finished::failed(0, SocketError::from_errno(e))),
            },
        }
    }
}

/// A stream receive (`flags`: MSG_* bits).
pub(crate) fn receive(fd: i32, payload: &Payload, flags: i32) -> Attempt {
    let result = match payload {
        _ if payload.total_len() == 0 => {
            // A zero-byte receive waits for data without consuming it. A 0-byte recv would
            // return at once, so peek one byte instead (as .NET does).
            let mut byte = 0u8;
            let probe = RawBuf {
                ptr: &mut byte,
                len: 1,
            };
            sys::recv(fd, probe, flags | libc::MSG_PEEK).map(|_| 0)
        }
        Payload::Single(b) => sys::recv(fd, *b, flags),
        Payload::List(list) => return receive_list(fd, list, flags),
        Payload::Empty => unreachable!("an empty payload has total length 0"),
    };
    Finished::from_result(result)
}

/// One datagram into the payload (an empty payload takes the datagram and keeps nothing);
/// one larger than the payload fills it and reports Truncated. With `sender`, the datagram's
/// source goes into those args (a socket of that family received it).
fn receive_datagram(
    fd: i32,
    payload: &Payload,
    flags: i32,
    sender: Option<(&Args, Family)>,
) -> Attempt {
    match sys::receive_datagram(fd, payload.buffers(), flags) {
        Ok((n, msg_flags, from)) => {
            if let Some((args, family)) = sender {
                // A Unix sender that never bound a name comes with no address at all.
                let from = Endpoint::from_sock_addr(from)
                    .or_else(|| (family == Family::Unix).then(Endpoint::unnamed_unix));
                if let Some(from) = from {
                    args.set_sender(from);
                }
            }
            Attempt::Done(Finished {
                flags: SocketFlags::from_received(msg_flags),
                ..Finished::ok(n)
            })
        }
        Err(e) => Finished::from_result(Err(e)),
    }
}

/// Fills the list batch by batch while the kernel has data, so lists longer than one
/// recvmsg can take still fill in one receive.
fn receive_list(fd: i32, list: &[RawBuf], flags: i32) -> Attempt {
    let mut got = 0;
    let mut index = 0;
    while index < list.len() {
        let batch = &list[index..];
        match sys::recvmsg(fd, batch, flags) {
            Ok((n, room, used)) => {
                got += n;
                if n == 0 || n < room {
                    break;
                }
                index += used;
            }
            Err(libc::EAGAIN) if got == 0 => return Attempt::WouldBlock,
            Err(e) if got == 0 => {
                return Attempt::Done(Finished::failed(0, SocketError::from_errno(e)));
            }
            // Data already received is delivered; the error shows on the next receive.
            Err(_) => break,
        }
    }
    Attempt::Done(Finished::ok(got))
}

/// An operation waiting in a socket's queue: what to do, and who to tell.
pub struct Pending {
    pub kind: Kind,
    pub args: Arc<Args>,
    pub socket: Arc<Socket>,
}

impl Pending {
    /// Stores the results and delivers the callback (reactor thread): it runs here or on the
    /// worker pool, as the runtime's dispatch says.
    pub fn complete(self, finished: Finished) {
        let Pending { args, socket, .. } = self;
        args.finish(finished);
        socket.reactor().deliver(&socket, args);
    }

    pub fn abort(self) {
        let bytes = self.kind.progress();
        self.complete(Finished::failed(bytes, SocketError::OperationAborted));
    }
}
