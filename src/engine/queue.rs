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
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::args::Args;
use super::op::{Attempt, Finished, Kind, Pending};
use super::socket::Socket;
use crate::error::{Reject, SocketError};

const IDLE: u8 = 0;
const BUSY: u8 = 1;
const BUSY_QUEUED: u8 = 2;
const WAITING: u8 = 3;
const STOPPED: u8 = 4;

/// Most queues never hold more than one waiting operation (an idle connection's pending
/// receive), so the first slots are reserved one at a time rather than the default four
/// (which made up most of an idle connection's memory); past two the queue doubles as usual.
fn make_room(ops: &mut VecDeque<Pending>) {
    if ops.len() == ops.capacity() && ops.capacity() < 2 {
        ops.reserve_exact(1);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Read,
    Write,
}

pub struct OpQueue {
    direction: Direction,
    state: AtomicU8,
    /// Readiness edges seen; changed only under the lock.
    seq: AtomicU64,
    ops: Mutex<VecDeque<Pending>>,
}

impl OpQueue {
    pub fn new(direction: Direction) -> OpQueue {
        OpQueue {
            direction,
            state: AtomicU8::new(IDLE),
            seq: AtomicU64::new(0),
            ops: Mutex::new(VecDeque::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Pending>> {
        self.ops.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts an operation whose args the caller has taken (`Args::begin`). Ok(true): pending,
    /// the callback will run on the reactor. Ok(false): finished, results are in the args.
    /// Err: rejected (the socket closed meanwhile) and the args were given back untouched.
    #[inline]
    pub fn start(
        &self,
        socket: &Arc<Socket>,
        args: &Arc<Args>,
        kind: Kind,
    ) -> Result<bool, Reject> {
        loop {
            if self
                .state
                .compare_exchange(IDLE, BUSY, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                args.started(kind.operation());
                return Ok(self.run_owned(socket, args, kind));
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
                    args.started(kind.operation());
                    make_room(&mut ops);
                    ops.push_back(Pending {
                        kind,
                        args: Arc::clone(args),
                        socket: Arc::clone(socket),
                    });
                    return Ok(true);
                }
            }
        }
    }

    /// The caller owns the head: try now, queue only if the kernel would block.
    #[inline]
    fn run_owned(&self, socket: &Arc<Socket>, args: &Arc<Args>, mut kind: Kind) -> bool {
        let observed = self.seq.load(Ordering::Acquire);
        let first = kind.attempt(socket, args);
        self.settle_owned(socket, args, kind, observed, first)
    }

    /// The lock-free claim of an idle queue, for a caller's fast path that makes its first
    /// attempt itself. Some(edges seen so far), read before that attempt as `settle_owned`
    /// needs; None if anyone owns the queue or it is stopped (then `start` sorts it out).
    #[inline]
    pub(crate) fn try_claim(&self) -> Option<u64> {
        self.state
            .compare_exchange(IDLE, BUSY, Ordering::Acquire, Ordering::Relaxed)
            .ok()?;
        Some(self.seq.load(Ordering::Acquire))
    }

    /// Goes on from the caller's attempt `attempt` (made after `observed` edges) while it
    /// owns the head: finishes now, or queues the operation if the kernel would block and no
    /// edge came since. Returns true if the operation went pending.
    pub(crate) fn settle_owned(
        &self,
        socket: &Arc<Socket>,
        args: &Arc<Args>,
        mut kind: Kind,
        mut observed: u64,
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
                        args.finish(Finished::failed(
                            kind.progress(),
                            SocketError::OperationAborted,
                        ));
                        return false;
                    }
                    let now = self.seq.load(Ordering::Relaxed);
                    if now != observed {
                        // An edge came after our attempt: the kernel may be ready again.
                        observed = now;
                        drop(ops);
                        attempt = kind.attempt(socket, args);
                        continue;
                    }
                    make_room(&mut ops);
                    ops.push_front(Pending {
                        kind,
                        args: Arc::clone(args),
                        socket: Arc::clone(socket),
                    });
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
            self.hand_over_queued(socket);
        }
    }

    /// Others queued behind the caller (or the queue stopped) while it owned the head.
    #[cold]
    #[inline(never)]
    fn hand_over_queued(&self, socket: &Arc<Socket>) {
        let ops = self.lock();
        if self.state.load(Ordering::Relaxed) == BUSY_QUEUED {
            self.state.store(BUSY, Ordering::Relaxed);
            drop(ops);
            socket.reactor().process(Arc::clone(socket), self.direction);
        }
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
                match op.kind.attempt(socket, &op.args) {
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
                        make_room(&mut ops);
                        ops.push_front(op);
                        self.state.store(WAITING, Ordering::Release);
                        return;
                    }
                }
            }
        }
    }

    /// Closes the queue and takes what was waiting, to be aborted. An operation an owner is
    /// trying right now is finished or aborted by that owner.
    pub fn stop(&self) -> Vec<Pending> {
        let mut ops = self.lock();
        self.state.store(STOPPED, Ordering::Release);
        ops.drain(..).collect()
    }
}
