//! The io_uring backend's ring: batched sends. Readiness still comes from the reactor's
//! epoll instance, which the ring polls (so registration, deregistration and close behave
//! exactly as on the epoll backend: a socket's file is never held open by a poll request),
//! and the ring adds what epoll cannot do: sends of many sockets handed to the kernel with
//! one `io_uring_enter`, the same call that waits for the next events.
//!
//! Two kinds of send queue come here, both owned by the reactor at that point: a stream
//! socket's whose sends went pending the usual way (tried on the caller's thread, the kernel
//! said "would block") and that became writable, and a socket's with batched sends
//! (SOCK_OPTION_BATCH_SENDS), whose sends are never tried on the caller's thread but always
//! queue. Each reactor turn gathers every such socket's queued sends into one sendmsg
//! (MSG_WAITALL, so the kernel finishes a stream send rather than cutting it short) and
//! submits them all at once. One batch per socket is in the kernel at a time, which keeps a socket's bytes in the
//! order its sends were issued.
//!
//! The kernel reads the batch's buffers until the batch's completion arrives, so every
//! operation in it is completed only then; a close cancels the socket's batch (the
//! cancelled remainder completes with OperationAborted). A batch's descriptor is resolved
//! when it is submitted, so the socket's descriptor is kept open (a use guard) from building
//! the batch until that submission has returned.

use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;

use io_uring::{IoUring, cqueue, opcode, squeue, types};

use super::op::{Finished, Pending};
use super::queue::Direction;
use super::socket::Socket;
use super::sys::{self, RawBuf};
use crate::engine::args::Payload;
use crate::error::SocketError;

/// `user_data` of the epoll instance's poll; batches use their slot plus FIRST_BATCH.
const EPOLL: u64 = 1;
/// `user_data` of cancellations, whose own completions say nothing we act on.
const CANCEL: u64 = 2;
const FIRST_BATCH: u64 = 16;

/// Submission entries: a turn with more batches than this submits in several steps.
const ENTRIES: u32 = 256;
/// The most buffers one batch gathers (the kernel's IOV_MAX).
const MAX_BUFFERS: usize = 1024;

/// Whether this kernel and process may use io_uring for what the backend needs (seccomp
/// filters, the io_uring_disabled sysctl and old kernels refuse it); the error says why not.
pub fn available() -> io::Result<()> {
    let ring = IoUring::new(2)?;
    let mut probe = io_uring::Probe::new();
    ring.submitter().register_probe(&mut probe)?;
    for code in [
        opcode::PollAdd::CODE,
        opcode::SendMsg::CODE,
        opcode::AsyncCancel::CODE,
    ] {
        if !probe.is_supported(code) {
            return Err(io::Error::from_raw_os_error(libc::ENOSYS));
        }
    }
    Ok(())
}

/// One socket's sends in the kernel as one gathered sendmsg.
struct Batch {
    /// None while the batch is spare, so a finished batch keeps no socket alive.
    socket: Option<Arc<Socket>>,
    ops: Vec<Pending>,
    buffers: Vec<libc::iovec>,
    message: libc::msghdr,
    /// Cancelled by a close: whatever the kernel did not send is aborted.
    cancelled: bool,
}

impl Batch {
    fn socket(&self) -> &Arc<Socket> {
        self.socket.as_ref().expect("a batch in use has its socket")
    }
}

// SAFETY: the raw pointers in `buffers` and `message` point into the caller's buffers (which
// the operations' contract keeps valid until they complete) and into this batch's own
// `buffers`; the batch moves between no threads but the reactor's, and Send is needed only
// because the ring is built on one thread and handed to the reactor thread before use.
unsafe impl Send for Batch {}

pub struct Ring {
    ring: IoUring,
    epoll: RawFd,
    /// Batches in the kernel, by slot; None marks a free slot (listed in `free`).
    slots: Vec<Option<Box<Batch>>>,
    free: Vec<usize>,
    /// Finished batches, kept for their allocations. Boxed because a batch in the kernel
    /// must not move (the kernel holds its message's address), and reusing the box saves
    /// allocating one per batch.
    #[allow(clippy::vec_box)]
    spare: Vec<Box<Batch>>,
    /// The slot of each socket's batch in the kernel, by socket address.
    by_socket: HashMap<usize, usize>,
    /// Sockets whose descriptor is kept open until the pending submission has returned.
    kept: Vec<Arc<Socket>>,
    completions: Vec<(u64, i32)>,
}

impl Ring {
    /// A ring that reports when `epoll` (the reactor's epoll instance) has events. Made on the
    /// thread that uses it: single-issuer rings belong to their creator.
    pub fn new(epoll: RawFd) -> io::Result<Ring> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_cqsize(ENTRIES * 8)
            .build(ENTRIES)
            .or_else(|_| IoUring::builder().setup_cqsize(ENTRIES * 8).build(ENTRIES))?;
        let mut ring = Ring {
            ring,
            epoll,
            slots: Vec::new(),
            free: Vec::new(),
            spare: Vec::new(),
            by_socket: HashMap::new(),
            kept: Vec::new(),
            completions: Vec::with_capacity(ENTRIES as usize),
        };
        ring.arm_epoll();
        Ok(ring)
    }

    fn push(&mut self, entry: &squeue::Entry) {
        loop {
            // SAFETY: every entry pushed here is the epoll poll (no memory of ours), a
            // cancellation (none), or a batch's sendmsg, whose message, buffer array and
            // buffers stay valid until its completion: the batch is boxed, kept in `slots`
            // until then, and its operations (whose buffers they are) complete only then.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return;
            }
            // Full: hand the kernel what is queued to make room (the kept descriptors stay
            // kept until the turn's submission, which covers these too).
            let _ = self.ring.submit();
        }
    }

    fn arm_epoll(&mut self) {
        let poll = opcode::PollAdd::new(types::Fd(self.epoll), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(EPOLL);
        self.push(&poll);
    }

    /// True once no batch is in the kernel (shutdown waits for that).
    pub fn is_idle(&self) -> bool {
        self.by_socket.is_empty()
    }

    /// The reactor owns the socket's send queue: gathers its batchable sends into a batch for
    /// the next submission, or runs the queue as usual if its head is anything else.
    pub fn submit_sends(&mut self, socket: Arc<Socket>) {
        let address = Arc::as_ptr(&socket) as usize;
        if self.by_socket.contains_key(&address) {
            // Its batch is in the kernel; what queued meanwhile goes when that one is done.
            return;
        }
        let mut batch = self.spare.pop().unwrap_or_else(|| {
            Box::new(Batch {
                socket: None,
                ops: Vec::new(),
                buffers: Vec::new(),
                // SAFETY: msghdr is plain data, valid when zeroed (no name, no control).
                message: unsafe { std::mem::zeroed() },
                cancelled: false,
            })
        });
        let queue = socket.queue(Direction::Write);
        // Gathering is for streams: datagrams must go out one each.
        if !socket.is_stream() || !queue.take_batch(&mut batch.ops, MAX_BUFFERS) {
            self.spare.push(batch);
            // A connect, a disconnect, a send with flags: the ordinary path takes it.
            return queue.process(&socket);
        }
        batch.socket = Some(socket);
        batch.cancelled = false;
        self.send_batch(address, batch);
    }

    /// Submits (at the next submission) what the batch's operations have left to send.
    fn send_batch(&mut self, address: usize, mut batch: Box<Batch>) {
        let socket = Arc::clone(batch.socket());
        let Some(fd) = socket.fd().acquire() else {
            return self.finish(batch, Err(SocketError::OperationAborted));
        };
        batch.buffers.clear();
        for op in &batch.ops {
            gather(op, &mut batch.buffers);
        }
        batch.buffers.truncate(MAX_BUFFERS);
        batch.message.msg_iov = batch.buffers.as_mut_ptr();
        batch.message.msg_iovlen = batch.buffers.len();
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        let entry = opcode::SendMsg::new(types::Fd(fd.raw()), &batch.message)
            .flags((libc::MSG_NOSIGNAL | libc::MSG_WAITALL) as u32)
            .build()
            .user_data(slot as u64 + FIRST_BATCH);
        // Kept open until the submission has resolved the number to this socket's file.
        fd.keep();
        self.kept.push(socket);
        self.slots[slot] = Some(batch);
        self.by_socket.insert(address, slot);
        self.push(&entry);
    }

    /// A close: the socket's batch in the kernel, if any, is cancelled.
    pub fn cancel(&mut self, address: usize) {
        let Some(&slot) = self.by_socket.get(&address) else {
            return;
        };
        if let Some(batch) = self.slots[slot].as_mut() {
            batch.cancelled = true;
        }
        let cancel = opcode::AsyncCancel::new(slot as u64 + FIRST_BATCH)
            .build()
            .user_data(CANCEL);
        self.push(&cancel);
    }

    /// Submits what is queued, waits for a completion, and finishes the batches that
    /// completed. True if the epoll instance has events to read.
    pub fn wait(&mut self) -> bool {
        let waited = self.ring.submit_and_wait(1);
        // A failed or interrupted call may have left entries unsubmitted: their descriptors
        // stay kept until a later call has taken every entry.
        if self.ring.submission().is_empty() {
            for socket in self.kept.drain(..) {
                socket.fd().release_kept();
            }
        }
        match waited {
            Ok(_) => {}
            // EBUSY: completions must be reaped before more can be submitted; reaping is next.
            Err(err) if err.raw_os_error() == Some(libc::EBUSY) => {}
            Err(err) => {
                if err.kind() != io::ErrorKind::Interrupted {
                    // Not expected with valid arguments; back off rather than spin.
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                return false;
            }
        }
        self.completions.clear();
        let mut epoll_ready = false;
        for c in self.ring.completion() {
            match c.user_data() {
                EPOLL => {
                    epoll_ready = true;
                    if !cqueue::more(c.flags()) {
                        // Ended by the kernel (it may end a multishot request): poll again.
                        self.completions.push((EPOLL, 0));
                    }
                }
                CANCEL => {}
                user_data => self.completions.push((user_data, c.result())),
            }
        }
        for i in 0..self.completions.len() {
            let (user_data, result) = self.completions[i];
            if user_data == EPOLL {
                self.arm_epoll();
                continue;
            }
            let slot = (user_data - FIRST_BATCH) as usize;
            let Some(batch) = self.slots[slot].take() else {
                continue;
            };
            self.free.push(slot);
            let address = Arc::as_ptr(batch.socket()) as usize;
            self.by_socket.remove(&address);
            self.batch_done(address, batch, result);
        }
        epoll_ready
    }

    fn batch_done(&mut self, address: usize, mut batch: Box<Batch>, result: i32) {
        if result < 0 {
            let error = match -result {
                libc::ECANCELED => SocketError::OperationAborted,
                libc::EAGAIN | libc::EINTR if !batch.cancelled => {
                    return self.send_batch(address, batch);
                }
                errno => SocketError::from_errno(errno),
            };
            return self.finish(batch, Err(error));
        }
        let mut sent = result as usize;
        for op in &mut batch.ops {
            let step = sent.min(total_len(op) - op.done);
            op.done += step;
            sent -= step;
        }
        let all_sent = batch.ops.iter().all(|op| op.done == total_len(op));
        if all_sent {
            self.finish(batch, Ok(()));
        } else if batch.cancelled || batch.socket().is_closed() {
            self.finish(batch, Err(SocketError::OperationAborted));
        } else {
            // Cut short (a signal, or an error the next try reports): send the rest.
            self.send_batch(address, batch);
        }
    }

    /// Completes the batch's operations: those fully sent succeed, the rest get `failed`.
    /// Then the socket's queue goes on: given back if empty, else its next batch.
    fn finish(&mut self, mut batch: Box<Batch>, failed: Result<(), SocketError>) {
        let socket = batch.socket.take().expect("a batch in use has its socket");
        let more = socket.queue(Direction::Write).batch_finished();
        for op in batch.ops.drain(..) {
            let total = total_len(&op);
            let finished = match failed {
                Ok(()) => Finished::ok(total),
                Err(_) if op.done == total => Finished::ok(total),
                Err(error) => Finished::failed(op.done, error),
            };
            op.complete(finished);
        }
        self.spare.push(batch);
        if more {
            self.submit_sends(socket);
        }
    }
}

fn total_len(op: &Pending) -> usize {
    op.args.claimed_payload().total_len()
}

/// Appends what `op` has left to send to `into`.
fn gather(op: &Pending, into: &mut Vec<libc::iovec>) {
    let mut push = |b: RawBuf| {
        into.push(libc::iovec {
            iov_base: b.ptr as *mut libc::c_void,
            iov_len: b.len,
        })
    };
    match op.args.claimed_payload() {
        Payload::Empty => {}
        Payload::Single(b) => push(RawBuf {
            ptr: b.ptr.wrapping_add(op.done),
            len: b.len - op.done,
        }),
        Payload::List(list) => {
            let (index, skip) = sys::advance(&list, 0, 0, op.done);
            for (i, b) in list[index..].iter().enumerate() {
                let skip = if i == 0 { skip } else { 0 };
                if b.len > skip {
                    push(RawBuf {
                        ptr: b.ptr.wrapping_add(skip),
                        len: b.len - skip,
                    });
                }
            }
        }
    }
}
