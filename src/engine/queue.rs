//! A socket's queue of operations for one direction (reads: accept and receive; writes:
//! connect, send and disconnect), after .NET's SocketAsyncContext.OperationQueue.
//!
//! Exactly one party owns the head of the queue at a time: a caller trying its operation
//! right now, or the reactor. That keeps concurrent sends from interleaving and serves
//! receives in order. An operation only queues once the kernel said "would block", and a
//! readiness edge that lands between that answer and the queueing is caught by a sequence
//! number the reactor bumps on every edge: if it moved, the caller tries again instead.
//!
//! States: Idle (no one owns, nothing queued) -> Busy (an owner is trying) -> Busy+queued
//! (others queued behind the owner) -> Waiting (the head would block; the next edge resumes)
//! and Stopped (closed). Two changes happen without the lock, both compare-and-swaps by a
//! caller: Idle -> Busy to take the queue and Busy -> Idle to give it back, so a caller whose
//! queue is empty takes no lock at all. Every other change holds the lock, and the one that
//! can race the lock-free give-back (Busy -> Busy+queued) is a compare-and-swap as well.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::args::Args;
use super::op::{self, Attempt, Finished, Pending};
use super::socket::Socket;
use crate::error::{AsyncOperation, Reject, SocketError};

const IDLE: u8 = 0;
const BUSY: u8 = 1;
const BUSY_QUEUED: u8 = 2;
const WAITING: u8 = 3;
const STOPPED: u8 = 4;

/// The operations waiting in a queue, in order. Most queues never hold more than one (an
/// idle connection's pending receive), so the first is kept inline and only a second one
/// allocates the overflow, which is then kept for reuse.
#[derive(Default)]
struct Waiting {
    /// The head; None only if `more` is empty too.
    first: Option<Pending>,
    /// Boxed: one word in every socket's two queues instead of an empty VecDeque's four.
    #[allow(clippy::box_collection)]
    more: Option<Box<VecDeque<Pending>>>,
}

impl Waiting {
    fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    fn push_back(&mut self, op: Pending) {
        if self.first.is_none() {
            self.first = Some(op);
        } else {
            self.more.get_or_insert_with(Box::default).push_back(op);
        }
    }

    fn push_front(&mut self, op: Pending) {
        if let Some(previous) = self.first.replace(op) {
            self.more
                .get_or_insert_with(Box::default)
                .push_front(previous);
        }
    }

    fn pop_front(&mut self) -> Option<Pending> {
        let head = self.first.take()?;
        self.first = self.more.as_mut().and_then(|more| more.pop_front());
        Some(head)
    }

    fn drain(&mut self) -> Vec<Pending> {
        let mut all = Vec::new();
        while let Some(op) = self.pop_front() {
            all.push(op);
        }
        all
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Read = 0,
    Write = 1,
}

/// What a socket's two queues share: one lock over both directions' waiting lists, and the
/// edge counters. One lock rather than one per direction saves the socket two words of
/// lock and padding; it is only ever held for a few instructions, never across a system
/// call or a callback, and never while holding it for the other direction.
#[derive(Default)]
pub struct Queues {
    waiting: Mutex<[Waiting; 2]>,
    /// Readiness edges seen per direction; changed only under the lock. Only compared for
    /// equality across one attempt: a wrap would need 2^32 edges on this socket between an
    /// attempt and its check (over an hour of a stalled thread at a million edges a second).
    seq: [AtomicU32; 2],
}

/// Each queue's state byte, Idle at first. The socket keeps these among its own one-byte
/// fields (outside `Queues`), where they fill what would be padding.
pub fn initial_states() -> [AtomicU8; 2] {
    [AtomicU8::new(IDLE), AtomicU8::new(IDLE)]
}

impl Queues {
    /// The queue of one direction, with its state byte from the socket.
    #[inline]
    pub fn queue<'a>(&'a self, state: &'a AtomicU8, direction: Direction) -> OpQueue<'a> {
        OpQueue {
            direction,
            state,
            seq: &self.seq[direction as usize],
            waiting: &self.waiting,
        }
    }
}

/// One direction's queue.
pub struct OpQueue<'a> {
    direction: Direction,
    state: &'a AtomicU8,
    seq: &'a AtomicU32,
    waiting: &'a Mutex<[Waiting; 2]>,
}

/// The lock, narrowed to one direction's waiting list.
struct Locked<'a> {
    guard: MutexGuard<'a, [Waiting; 2]>,
    direction: Direction,
}

impl std::ops::Deref for Locked<'_> {
    type Target = Waiting;
    fn deref(&self) -> &Waiting {
        &self.guard[self.direction as usize]
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Waiting {
        &mut self.guard[self.direction as usize]
    }
}

impl OpQueue<'_> {
    fn lock(&self) -> Locked<'_> {
        Locked {
            guard: self.waiting.lock().unwrap_or_else(PoisonError::into_inner),
            direction: self.direction,
        }
    }

    /// Starts an operation whose args the caller has taken (`Args::begin`). Ok(true): pending,
    /// the callback will run on the reactor. Ok(false): finished, results are in the args.
    /// Err: rejected (the socket closed meanwhile) and the args were given back untouched.
    #[inline]
    pub fn start(
        &self,
        socket: &Arc<Socket>,
        args: &Arc<Args>,
        operation: AsyncOperation,
    ) -> Result<bool, Reject> {
        self.start_with(socket, args, operation, |queue| {
            queue.run_owned(socket, args)
        })
    }

    /// Starts a send of a socket with batched sends (see `uring.rs`): never tried here; it
    /// queues, and a queue taken idle goes to the reactor, which sends it in its next batch.
    pub fn start_batched(&self, socket: &Arc<Socket>, args: &Arc<Args>) -> Result<bool, Reject> {
        self.start_with(socket, args, AsyncOperation::Send, |queue| {
            let mut ops = queue.lock();
            // A close may have stopped the queue since this caller claimed it: it took what
            // was queued then, so the send ends here, as a tried one does (`settle_owned`).
            if queue.state.load(Ordering::Relaxed) == STOPPED {
                drop(ops);
                args.finish(Finished::failed(0, SocketError::OperationAborted));
                return false;
            }
            ops.push_back(Pending::new(args, socket, 0));
            drop(ops);
            socket.reactor().submit_sends(Arc::clone(socket));
            true
        })
    }

    /// `start`, with what to do once the caller owns an idle queue (`owned` says whether the
    /// operation went pending).
    #[inline]
    fn start_with(
        &self,
        socket: &Arc<Socket>,
        args: &Arc<Args>,
        operation: AsyncOperation,
        owned: impl FnOnce(&Self) -> bool,
    ) -> Result<bool, Reject> {
        loop {
            if self
                .state
                .compare_exchange(IDLE, BUSY, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                args.started(operation);
                return Ok(owned(self));
            }
            let mut ops = self.lock();
            match self.state.load(Ordering::Relaxed) {
                IDLE => continue,
                STOPPED => {
                    drop(ops);
                    args.abandon();
                    return Err(Reject::disposed());
                }
                state => {
                    // The owner gives the queue back (Busy -> Idle) without the lock, so
                    // marking "queued" must be a compare-and-swap: a plain store could
                    // overwrite that Idle and strand this operation with no owner.
                    if state == BUSY
                        && self
                            .state
                            .compare_exchange(
                                BUSY,
                                BUSY_QUEUED,
                                Ordering::AcqRel,
                                Ordering::Relaxed,
                            )
                            .is_err()
                    {
                        continue;
                    }
                    args.started(operation);
                    ops.push_back(Pending::new(args, socket, 0));
                    return Ok(true);
                }
            }
        }
    }

    /// The caller owns the head: try now, queue only if the kernel would block.
    #[inline]
    fn run_owned(&self, socket: &Arc<Socket>, args: &Arc<Args>) -> bool {
        let observed = self.seq.load(Ordering::Acquire);
        let mut done = 0;
        let first = op::attempt(socket, args, &mut done);
        self.settle_owned(socket, args, done, observed, first)
    }

    /// The lock-free claim of an idle queue, for a caller's fast path that makes its first
    /// attempt itself. Some(edges seen so far), read before that attempt as `settle_owned`
    /// needs; None if anyone owns the queue or it is stopped (then `start` sorts it out).
    #[inline]
    pub(crate) fn try_claim(&self) -> Option<u32> {
        self.state
            .compare_exchange(IDLE, BUSY, Ordering::Acquire, Ordering::Relaxed)
            .ok()?;
        Some(self.seq.load(Ordering::Acquire))
    }

    /// Goes on from the caller's attempt `attempt` (made after `observed` edges, leaving
    /// `done` bytes moved) while it owns the head: finishes now, or queues the operation if
    /// the kernel would block and no edge came since. Returns true if it went pending.
    pub(crate) fn settle_owned(
        &self,
        socket: &Arc<Socket>,
        args: &Arc<Args>,
        mut done: usize,
        mut observed: u32,
        mut attempt: Attempt,
    ) -> bool {
        loop {
            match attempt {
                Attempt::Done(finished) => {
                    self.release_after_caller(socket);
                    args.finish(finished);
                    return false;
                }
                Attempt::WouldBlock => {
                    let mut ops = self.lock();
                    if self.state.load(Ordering::Relaxed) == STOPPED {
                        drop(ops);
                        args.finish(Finished::failed(done, SocketError::OperationAborted));
                        return false;
                    }
                    let now = self.seq.load(Ordering::Relaxed);
                    if now != observed {
                        // An edge came after our attempt: the kernel may be ready again.
                        observed = now;
                        drop(ops);
                        attempt = op::attempt(socket, args, &mut done);
                        continue;
                    }
                    ops.push_front(Pending::new(args, socket, done));
                    self.state.store(WAITING, Ordering::Release);
                    return true;
                }
            }
        }
    }

    /// The caller's operation finished: give the queue back, or hand what queued up behind
    /// it to the reactor (their callbacks must run there, and no edge may come to wake them).
    #[inline]
    pub(crate) fn release_after_caller(&self, socket: &Arc<Socket>) {
        if self
            .state
            .compare_exchange(BUSY, IDLE, Ordering::Release, Ordering::Relaxed)
            .is_err()
        {
            // Only the direction goes along: the queue is found again from the socket, so
            // the fast path need not keep this view anywhere for the call.
            Self::hand_over_queued(socket, self.direction);
        }
    }

    /// Others queued behind the caller (or the queue stopped) while it owned the head.
    #[cold]
    #[inline(never)]
    fn hand_over_queued(socket: &Arc<Socket>, direction: Direction) {
        let queue = socket.queue(direction);
        let ops = queue.lock();
        if queue.state.load(Ordering::Relaxed) == BUSY_QUEUED {
            queue.state.store(BUSY, Ordering::Relaxed);
            drop(ops);
            socket.reactor().process(Arc::clone(socket), direction);
        }
    }

    /// A readiness edge for a send queue whose waiting sends go out through the reactor's
    /// ring (io_uring backend): true if the reactor now owns a waiting queue, to hand it to
    /// the ring (which runs it as `process` would if its head is no plain send).
    pub fn on_ready_for_ring(&self) -> bool {
        let _ops = self.lock();
        self.seq.fetch_add(1, Ordering::Relaxed);
        if self.state.load(Ordering::Relaxed) != WAITING {
            return false;
        }
        self.state.store(BUSY, Ordering::Relaxed);
        true
    }

    /// A readiness edge for this direction (reactor thread).
    pub fn on_ready(&self, socket: &Socket) {
        let ops = self.lock();
        self.seq.fetch_add(1, Ordering::Relaxed);
        if self.state.load(Ordering::Relaxed) != WAITING {
            return;
        }
        self.state.store(BUSY, Ordering::Relaxed);
        drop(ops);
        self.process(socket);
    }

    /// Runs queued operations until one would block or none are left (reactor thread, which
    /// owns the head). Callbacks run without the lock, so they may issue, close or free.
    pub fn process(&self, socket: &Socket) {
        loop {
            let mut ops = self.lock();
            if self.state.load(Ordering::Relaxed) == STOPPED {
                return;
            }
            let Some(mut op) = ops.pop_front() else {
                self.state.store(IDLE, Ordering::Release);
                return;
            };
            let mut observed = self.seq.load(Ordering::Relaxed);
            drop(ops);
            loop {
                match op::attempt(socket, &op.args, &mut op.done) {
                    Attempt::Done(finished) => {
                        let ops = self.lock();
                        let more = match self.state.load(Ordering::Relaxed) {
                            STOPPED => false,
                            _ if ops.is_empty() => {
                                // Given back before the callback, so an operation issued
                                // from it tries the system call at once.
                                self.state.store(IDLE, Ordering::Release);
                                false
                            }
                            _ => true,
                        };
                        drop(ops);
                        op.complete(finished);
                        if !more {
                            return;
                        }
                        break;
                    }
                    Attempt::WouldBlock => {
                        let mut ops = self.lock();
                        if self.state.load(Ordering::Relaxed) == STOPPED {
                            drop(ops);
                            op.abort();
                            return;
                        }
                        let now = self.seq.load(Ordering::Relaxed);
                        if now != observed {
                            observed = now;
                            continue;
                        }
                        ops.push_front(op);
                        self.state.store(WAITING, Ordering::Release);
                        return;
                    }
                }
            }
        }
    }

    /// The reactor owns the head of this send queue: moves the sends at the head that can
    /// go out together as one gathered sendmsg (plain stream sends: no flags; at most
    /// `max_buffers` buffers, though a first send with more still goes) into `batch`. False if
    /// there are none: the head is something else for `process`, or the queue stopped.
    pub fn take_batch(&self, batch: &mut Vec<Pending>, max_buffers: usize) -> bool {
        let mut ops = self.lock();
        if self.state.load(Ordering::Relaxed) == STOPPED {
            return false;
        }
        let mut buffers = 0;
        while let Some(op) = ops.pop_front() {
            let batchable = op.args.operation() == AsyncOperation::Send
                && op.args.system_flags() == 0
                && (batch.is_empty() || buffers < max_buffers);
            if !batchable {
                ops.push_front(op);
                break;
            }
            buffers += op.args.claimed_payload().buffers().len().max(1);
            batch.push(op);
        }
        if !batch.is_empty() {
            self.state.store(BUSY, Ordering::Relaxed);
        }
        !batch.is_empty()
    }

    /// The reactor's batch of this send queue is done (before its callbacks run): true if
    /// more waits, which the reactor then takes; otherwise the queue is given back, so a send
    /// issued from a callback starts the next batch.
    pub fn batch_finished(&self) -> bool {
        let ops = self.lock();
        match self.state.load(Ordering::Relaxed) {
            STOPPED => false,
            _ if ops.is_empty() => {
                self.state.store(IDLE, Ordering::Release);
                false
            }
            _ => {
                self.state.store(BUSY, Ordering::Relaxed);
                true
            }
        }
    }

    /// Closes the queue and takes what was waiting, to be aborted. An operation an owner is
    /// trying right now is finished or aborted by that owner.
    pub fn stop(&self) -> Vec<Pending> {
        let mut ops = self.lock();
        self.state.store(STOPPED, Ordering::Release);
        ops.drain()
    }
}
