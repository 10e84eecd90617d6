//! The io_uring backend's ring: sends submitted in batches. Readiness still comes from the
//! reactor's epoll instance (so registration, deregistration and close behave exactly as on
//! the epoll backend: a socket's file is never held open by a poll request); the ring waits
//! for it, with its own epoll wait (IORING_OP_EPOLL_WAIT, kernels 6.15 and later, which
//! brings the events along) or a poll of the epoll instance, and adds what epoll cannot do:
//! sends of many sockets handed to the kernel in the same `io_uring_enter` that waits.
//!
//! Two kinds of send queue come here, both owned by the reactor at that point: a stream
//! socket's whose sends went pending the usual way (tried on the caller's thread, the kernel
//! said "would block") and that became writable, and a socket's with batched sends
//! (SOCK_OPTION_BATCH_SENDS), whose sends are never tried on the caller's thread but always
//! queue. Each reactor turn gathers every such socket's queued sends into one sendmsg
//! (MSG_WAITALL, so the kernel finishes a stream send rather than cutting it short) and
//! submits them all at once. One batch per socket is in the kernel at a time, which keeps a
//! socket's bytes in the order its sends were issued.
//!
//! The kernel reads the batch's buffers until the batch's completion arrives, so every
//! operation in it is completed only then; a close cancels the socket's batch (the
//! cancelled remainder completes with OperationAborted). A batch's descriptor is resolved
//! when it is submitted, so the socket's descriptor is kept open (a use guard) from building
//! the batch until that submission has been made. Submissions happen only inside `wait`.

use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{IoUring, cqueue, opcode, squeue, types};

use super::op::{Finished, Pending};
use super::queue::Direction;
use super::socket::Socket;
use super::sys::{self, RawBuf};
use crate::engine::args::Payload;
use crate::error::SocketError;

/// `user_data` of the epoll instance's wait (or poll); batches use their slot plus
/// FIRST_BATCH.
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
    /// Where the kernel writes the epoll instance's events, on kernels with
    /// IORING_OP_EPOLL_WAIT (6.15): the ring's own completion then carries them, and no
    /// epoll_wait call is needed. None: the ring polls the epoll instance instead, and the
    /// reactor reads it.
    events: Option<Box<[libc::epoll_event]>>,
    /// Events in `events` from the last wait, not yet handed out.
    events_ready: usize,
    /// The epoll wait (or poll) is in the kernel (or queued to go there).
    epoll_armed: bool,
    /// Entries that found the submission queue full, for the next wait to submit.
    overflow: Vec<squeue::Entry>,
    /// Inside `wait`, where submitting is allowed.
    submitting: bool,
}

/// What a ring's wait says about the epoll instance.
#[derive(PartialEq, Eq)]
pub enum Readiness {
    /// Nothing new.
    None,
    /// Events are waiting in the epoll instance: read them (epoll_wait without waiting).
    Read,
    /// Events are in the ring's buffer: `take_events`.
    Taken,
    /// The wait failed (a signal interrupted it): nothing came.
    Failed,
}

/// The most events one epoll wait through the ring hands over.
const EVENTS: usize = 1024;

impl Ring {
    /// A ring that reports when `epoll` (the reactor's epoll instance) has events. Made on the
    /// thread that uses it: single-issuer rings belong to their creator.
    pub fn new(epoll: RawFd) -> io::Result<Ring> {
        // The task-run flag tells a busy poll's enter without waiting when deferred task work
        // is there to run (only an enter asking for completions runs it, and the crate's
        // `submit` asks exactly when the flag is up).
        let (ring, deferred) = match IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_taskrun_flag()
            .setup_cqsize(ENTRIES * 8)
            .build(ENTRIES)
        {
            Ok(ring) => (ring, true),
            Err(_) => (
                IoUring::builder()
                    .setup_cqsize(ENTRIES * 8)
                    .build(ENTRIES)?,
                false,
            ),
        };
        // The epoll wait in the ring copies events when it completes; only a ring whose
        // completions all happen inside the reactor's own wait (deferred task work, and every
        // submission made by `wait`) hands them over before any Release a close posts after
        // them can be handled (see `on_event` in reactor.rs).
        let mut probe = io_uring::Probe::new();
        let epoll_wait = deferred
            && ring.submitter().register_probe(&mut probe).is_ok()
            && probe.is_supported(opcode::EpollWait::CODE);
        let ring = Ring {
            events: epoll_wait
                .then(|| vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS].into_boxed_slice()),
            events_ready: 0,
            epoll_armed: false,
            overflow: Vec::new(),
            submitting: false,
            ring,
            epoll,
            slots: Vec::new(),
            free: Vec::new(),
            spare: Vec::new(),
            by_socket: HashMap::new(),
            kept: Vec::new(),
            completions: Vec::with_capacity(ENTRIES as usize),
        };
        Ok(ring)
    }

    fn push(&mut self, entry: &squeue::Entry) {
        loop {
            // SAFETY: every entry pushed here is the epoll poll (no memory of ours), the epoll
            // wait (into `events`, boxed, not touched until its completion, and kept until
            // then: Drop waits for it), a cancellation (none), or a batch's sendmsg, whose
            // message, buffer array and buffers stay valid until its completion: the batch is
            // boxed, kept in `slots` until then, and its operations (whose buffers they are)
            // complete only then.
            // Behind anything already overflowed, so entries go in the order they came (a
            // cancellation must not pass the batch it cancels).
            if self.overflow.is_empty() && unsafe { self.ring.submission().push(entry) }.is_ok() {
                return;
            }
            // Full: only `wait` submits, so outside it the entry waits for it.
            if !self.overflow.is_empty() || !self.submit_now() {
                self.overflow.push(entry.clone());
                return;
            }
        }
    }

    /// Submits what is queued, if called from `wait` (the one place submissions happen);
    /// false elsewhere.
    fn submit_now(&mut self) -> bool {
        self.submitting && self.ring.submit().is_ok()
    }

    fn arm_epoll(&mut self) {
        let entry = match self.events.as_mut() {
            Some(events) => opcode::EpollWait::new(
                types::Fd(self.epoll),
                events.as_mut_ptr().cast(),
                events.len() as u32,
            )
            .build(),
            None => opcode::PollAdd::new(types::Fd(self.epoll), libc::POLLIN as u32)
                .multi(true)
                .build(),
        };
        self.epoll_armed = true;
        self.push(&entry.user_data(EPOLL));
    }

    /// Moves the overflow into the submission queue and arms the epoll wait, last, so it
    /// is submitted by the call that waits (submitting early to make room as needed).
    fn prepare_submission(&mut self) {
        self.submitting = true;
        for entry in std::mem::take(&mut self.overflow) {
            self.push(&entry);
        }
        if !self.epoll_armed {
            self.arm_epoll();
        }
    }

    /// Hands out the events the last wait brought (`Readiness::Taken`) as (token, readable,
    /// writable), then waits for more.
    pub fn take_events(&mut self, mut event: impl FnMut(usize, bool, bool)) {
        const READ: u32 =
            (libc::EPOLLIN | libc::EPOLLPRI | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR)
                as u32;
        const WRITE: u32 = (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) as u32;
        if let Some(events) = self.events.as_ref() {
            for e in &events[..self.events_ready] {
                let (mask, token) = (e.events, e.u64);
                event(token as usize, mask & READ != 0, mask & WRITE != 0);
            }
        }
        self.events_ready = 0;
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
            // Cannot happen: a queue is handed over only when the reactor does not own it,
            // and it owns it while its batch is in the kernel (what queues meanwhile goes
            // when that batch is done). Debug builds say so.
            debug_assert!(
                false,
                "a send queue handed over with its batch in the kernel"
            );
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

    /// Submits what is queued, waits for a completion (entering the ring without waiting for
    /// up to `spin` first), and finishes the batches that completed; says what the epoll
    /// instance has.
    pub fn wait(&mut self, spin: Duration) -> Readiness {
        self.prepare_submission();
        let waited = match self.spin(spin) {
            Some(entered) => entered,
            None => self.ring.submit_and_wait(1),
        };
        self.submitting = false;
        // A failed or interrupted call may have left entries unsubmitted: their descriptors
        // stay kept until a later call has taken every entry.
        if self.ring.submission().is_empty() && self.overflow.is_empty() {
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
                return Readiness::Failed;
            }
        }
        self.completions.clear();
        let mut readiness = Readiness::None;
        for c in self.ring.completion() {
            match c.user_data() {
                // (An epoll wait that came back without events, interrupted say, is simply
                // made again by the next wait, as one the kernel ended is.)
                EPOLL if self.events.is_some() => {
                    self.epoll_armed = false;
                    if c.result() > 0 {
                        self.events_ready = c.result() as usize;
                        readiness = Readiness::Taken;
                    }
                }
                EPOLL => {
                    readiness = Readiness::Read;
                    if !cqueue::more(c.flags()) {
                        self.epoll_armed = false;
                    }
                }
                CANCEL => {}
                user_data => self.completions.push((user_data, c.result())),
            }
        }
        for i in 0..self.completions.len() {
            let (user_data, result) = self.completions[i];
            let slot = (user_data - FIRST_BATCH) as usize;
            let Some(batch) = self.slots[slot].take() else {
                continue;
            };
            self.free.push(slot);
            let address = Arc::as_ptr(batch.socket()) as usize;
            self.by_socket.remove(&address);
            // Its callbacks run here (Inline dispatch): a bug in one socket's completion
            // must not take the reactor's other sockets with it, as on the epoll path.
            super::reactor::survive(|| self.batch_done(address, batch, result));
        }
        readiness
    }

    /// Enters the ring without waiting (submitting, and running the deferred task work that
    /// posts completions, the epoll wait's among them) until a completion is there or `spin`
    /// has passed. Some(the last enter's result) when a completion came or the enter failed;
    /// None when the time ran out, and the caller waits.
    fn spin(&mut self, spin: Duration) -> Option<io::Result<usize>> {
        if spin.is_zero() {
            return None;
        }
        let start = Instant::now();
        loop {
            let entered = self.ring.submit();
            if entered.is_err() || !self.ring.completion().is_empty() {
                return Some(entered);
            }
            if start.elapsed() >= spin {
                return None;
            }
        }
    }

    fn batch_done(&mut self, address: usize, mut batch: Box<Batch>, result: i32) {
        if result < 0 {
            let error = match -result {
                // Whatever a cancelled batch's send says, a close ended it.
                _ if batch.cancelled => SocketError::OperationAborted,
                libc::ECANCELED => SocketError::OperationAborted,
                libc::EAGAIN | libc::EINTR => return self.send_batch(address, batch),
                errno => SocketError::from_errno(errno),
            };
            return self.finish(batch, Err(error));
        }
        let mut sent = result as usize;
        let mut all_sent = true;
        for op in &mut batch.ops {
            let total = total_len(op);
            let step = sent.min(total - op.done);
            op.done += step;
            sent -= step;
            all_sent &= op.done == total;
        }
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

impl Drop for Ring {
    /// The kernel may write into `events` until the epoll wait completes: cancel it and wait
    /// for that before the buffer goes (batches are all done by now: the reactor waits for
    /// `is_idle` before it stops).
    fn drop(&mut self) {
        if self.events.is_none() || !self.epoll_armed {
            return;
        }
        // Whatever still waits to be submitted goes first, then the cancellation.
        self.prepare_submission();
        self.push(&opcode::AsyncCancel::new(EPOLL).build().user_data(CANCEL));
        while self.epoll_armed {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(err) if matches!(err.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {}
                Err(_) => {
                    // The ring is unusable: leak the buffer rather than free what the kernel
                    // might still write.
                    std::mem::forget(self.events.take());
                    return;
                }
            }
            for c in self.ring.completion() {
                if c.user_data() == EPOLL {
                    self.epoll_armed = false;
                }
            }
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
