//! Operations and one attempt at each: the system call, tried on the caller's thread first and
//! by the reactor after a readiness edge. An attempt either finishes the operation (with a
//! result) or says the kernel would block; it never blocks and never reports EAGAIN.

use std::sync::Arc;

use super::args::{Args, Payload};
use super::endpoint::{Endpoint, Family};
use super::packets;
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

    fn from_result(result: Result<usize, sys::Errno>) -> Attempt {
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

/// Where a connect stands. Kept in the args' extras (a connect always has its endpoint
/// there), so a waiting connect needs no more room in its queue than any other operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectPhase {
    Start,
    Waiting,
    Sending,
}

/// One non-blocking try at the operation the args were started for (`Args::operation`), on
/// `socket`, the socket it was issued on. `done` is the bytes a send (a connect's buffer, a
/// send-packets) has moved so far; the attempt adds what it moves. The payload, flags and
/// endpoint come from the args, whose configuration cannot change while the operation owns
/// them.
#[inline]
pub fn attempt(socket: &Socket, args: &Args, done: &mut usize) -> Attempt {
    let Some(fd) = socket.fd().acquire() else {
        return Attempt::Done(Finished::failed(*done, SocketError::OperationAborted));
    };
    let fd = fd.raw();
    match args.operation() {
        AsyncOperation::Send => match send(fd, socket.is_stream(), args, done) {
            Attempt::Done(f) if f.error == SocketError::Shutdown && !socket.stream_connected() => {
                // The kernel says EPIPE; .NET says the socket was never connected.
                Attempt::Done(Finished::failed(f.bytes, SocketError::NotConnected))
            }
            other => other,
        },
        AsyncOperation::SendTo => send_to(fd, socket, args),
        AsyncOperation::Receive if !socket.is_stream() => receive_datagram(fd, args, None),
        AsyncOperation::Receive => receive(fd, &args.claimed_payload(), args.system_flags()),
        AsyncOperation::ReceiveFrom => receive_datagram(fd, args, Some(socket.family())),
        AsyncOperation::Accept => match sys::accept(fd) {
            Ok(new_fd) => match socket.adopt_accepted(new_fd) {
                Ok(accepted) => Attempt::Done(Finished {
                    accepted: Some(accepted),
                    ..Finished::ok(0)
                }),
                Err(error) => Attempt::Done(Finished::failed(0, error)),
            },
            Err(e) => Finished::from_result(Err(e)),
        },
        AsyncOperation::Connect => connect(fd, socket, args, done),
        AsyncOperation::SendPackets => packets::attempt(fd, args, done),
        AsyncOperation::Disconnect => match sys::shutdown(fd, libc::SHUT_RDWR) {
            Ok(()) => {
                socket.mark_send_shutdown();
                Attempt::Done(Finished::ok(0))
            }
            Err(e) => Attempt::Done(Finished::failed(0, SocketError::from_errno(e))),
        },
        other => unreachable!("no operation of kind {other:?} is ever started"),
    }
}

/// A stream send goes on until every byte is out; a datagram goes out whole in one call,
/// or not at all (never split, never cut short), and an empty one is a zero-length datagram.
fn send(fd: i32, stream: bool, args: &Args, done: &mut usize) -> Attempt {
    let flags = args.system_flags();
    if !stream {
        return datagram_sent(sys::send_datagram(
            fd,
            args.claimed_payload().buffers(),
            None,
            flags,
        ));
    }
    let sent = match args.claimed_payload() {
        Payload::Empty => Ok(()),
        Payload::Single(b) => send_single(fd, b, flags, done),
        Payload::List(list) => send_list(fd, args, &list, flags, done),
    };
    match sent {
        Ok(()) => Attempt::Done(Finished::ok(*done)),
        Err(libc::EAGAIN) => Attempt::WouldBlock,
        Err(e) => Attempt::Done(Finished::failed(*done, SocketError::from_errno(e))),
    }
}

fn datagram_sent(result: Result<usize, sys::Errno>) -> Attempt {
    Finished::from_result(result)
}

/// A datagram to the args' endpoint; the first one binds the socket.
fn send_to(fd: i32, socket: &Socket, args: &Args) -> Attempt {
    let Some(to) = args.endpoint() else {
        // Checked when it started; the args cannot change while it is in flight.
        return Attempt::Done(Finished::failed(0, SocketError::DestinationAddressRequired));
    };
    let sent = sys::send_datagram(
        fd,
        args.claimed_payload().buffers(),
        Some(to.sock_addr()),
        args.system_flags(),
    );
    if sent.is_ok() {
        socket.mark_bound();
    }
    datagram_sent(sent)
}

fn send_single(fd: i32, b: RawBuf, flags: i32, done: &mut usize) -> Result<(), sys::Errno> {
    while *done < b.len {
        *done += sys::send(
            fd,
            RawBuf {
                ptr: b.ptr.wrapping_add(*done),
                len: b.len - *done,
            },
            flags,
        )?;
    }
    Ok(())
}

/// Sends from the list cursor `done` bytes in; a send that would block leaves the cursor in
/// the args, so the next attempt goes on from there without walking the list again.
fn send_list(
    fd: i32,
    args: &Args,
    list: &[RawBuf],
    flags: i32,
    done: &mut usize,
) -> Result<(), sys::Errno> {
    let (mut index, mut skip) = args
        .list_cursor(*done)
        .unwrap_or_else(|| sys::advance(list, 0, 0, *done));
    while index < list.len() {
        match sys::sendmsg(fd, &list[index..], skip, flags) {
            Ok(n) => {
                *done += n;
                (index, skip) = sys::advance(list, index, skip, n);
            }
            Err(e) => {
                if e == libc::EAGAIN {
                    args.save_list_cursor(*done, index, skip);
                }
                return Err(e);
            }
        }
    }
    Ok(())
}

fn connect(fd: i32, socket: &Socket, args: &Args, done: &mut usize) -> Attempt {
    loop {
        let (phase, addr) = args.connect_state();
        match phase {
            ConnectPhase::Start => match sys::connect(fd, addr.sock_addr()) {
                Ok(()) => {
                    socket.connect_finished(true);
                    args.set_connect_phase(ConnectPhase::Sending);
                }
                Err(libc::EINPROGRESS) => {
                    args.set_connect_phase(ConnectPhase::Waiting);
                    return Attempt::WouldBlock;
                }
                Err(e) => {
                    socket.connect_finished(false);
                    return Attempt::Done(Finished::failed(0, SocketError::from_errno(e)));
                }
            },
            ConnectPhase::Waiting => {
                match sys::connect_finished(fd).and_then(|finished| {
                    if finished {
                        sys::take_error(fd).map(Some)
                    } else {
                        Ok(None)
                    }
                }) {
                    Ok(None) => return Attempt::WouldBlock,
                    Ok(Some(0)) => {
                        socket.connect_finished(true);
                        args.set_connect_phase(ConnectPhase::Sending);
                    }
                    Ok(Some(e)) | Err(e) => {
                        socket.connect_finished(false);
                        return Attempt::Done(Finished::failed(0, SocketError::from_errno(e)));
                    }
                }
            }
            // Only a buffer set on the args is sent (on a datagram socket an empty one would
            // otherwise go out as a zero-length datagram).
            ConnectPhase::Sending if args.claimed_payload().total_len() == 0 => {
                return Attempt::Done(Finished::ok(0));
            }
            // .NET sends the args' buffer once connected; bytes transferred counts it.
            ConnectPhase::Sending => return send(fd, socket.is_stream(), args, done),
        }
    }
}

/// A stream receive (`flags`: MSG_* bits).
fn receive(fd: i32, payload: &Payload, flags: i32) -> Attempt {
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

/// One datagram into the args' payload (an empty payload takes the datagram and keeps
/// nothing); one larger than the payload fills it and reports Truncated. With `sender` (the
/// receiving socket's family), the datagram's source goes into the args.
fn receive_datagram(fd: i32, args: &Args, sender: Option<Family>) -> Attempt {
    let payload = args.claimed_payload();
    match sys::receive_datagram(fd, payload.buffers(), args.system_flags()) {
        Ok((n, msg_flags, from)) => {
            if let Some(family) = sender {
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

/// An operation waiting in a socket's queue: whose it is (the args say what it is), where it
/// stands, and who to tell. Three words (in release builds), so a queue can keep its first
/// one inline.
pub struct Pending {
    pub args: Arc<Args>,
    pub socket: Arc<Socket>,
    /// Bytes a send (a connect's buffer, a send-packets) has moved so far.
    pub done: usize,
    /// Which of the args' operations this is (debug builds check it completes as itself).
    #[cfg(debug_assertions)]
    generation: u64,
}

impl Pending {
    /// The pending form of the operation the args were just started for.
    pub fn new(args: &Arc<Args>, socket: &Arc<Socket>, done: usize) -> Pending {
        Pending {
            args: Arc::clone(args),
            socket: Arc::clone(socket),
            done,
            #[cfg(debug_assertions)]
            generation: args.generation(),
        }
    }

    /// Stores the results and delivers the callback (reactor thread): it runs here or on the
    /// worker pool, as the runtime's dispatch says.
    pub fn complete(self, finished: Finished) {
        #[cfg(debug_assertions)]
        self.args.check_delivery(self.generation);
        let Pending { args, socket, .. } = self;
        args.finish(finished);
        socket.reactor().deliver(&socket, args);
    }

    pub fn abort(self) {
        let bytes = self.done;
        self.complete(Finished::failed(bytes, SocketError::OperationAborted));
    }
}
