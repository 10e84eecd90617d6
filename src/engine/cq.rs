//! Completion queues: an alternative to callbacks. Args made for a queue post each completion
//! of a pending operation to it, and the host takes them out with `wait`, from any threads,
//! or watches the queue's descriptor (readable while the queue holds something) in its own
//! event loop.
//!
//! Each queued entry holds the args alive, so an args object freed while its operation was
//! pending is still delivered exactly once. Such args have no owner left: the thread that
//! takes one keeps it alive until its next `wait` (see `Retained`), so the pointer it was
//! handed can still be read (the user token) meanwhile.
//!
//! A freed queue is closed: entries are dropped and later completions discarded, so a queue
//! and args that point at each other never keep each other alive.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::args::Args;
use super::sys;
use crate::error::Reject;

struct Entries {
    ready: VecDeque<Arc<Args>>,
    closed: bool,
}

pub struct CompletionQueue {
    entries: Mutex<Entries>,
    posted: Condvar,
    /// An eventfd whose count is non-zero exactly while `ready` is non-empty; changed only
    /// under the lock, so the two never disagree.
    event: RawFd,
}

thread_local! {
    /// Args handed out by this thread's last `wait` whose owner had freed them: kept alive
    /// until this thread waits again.
    static RETAINED: RefCell<Vec<Arc<Args>>> = const { RefCell::new(Vec::new()) };
}

impl CompletionQueue {
    pub fn new() -> Result<CompletionQueue, Reject> {
        let event = sys::eventfd()
            .map_err(|e| Reject::socket(crate::error::SocketError::from_errno(e), "eventfd"))?;
        Ok(CompletionQueue {
            entries: Mutex::new(Entries {
                ready: VecDeque::new(),
                closed: false,
            }),
            posted: Condvar::new(),
            event,
        })
    }

    fn entries(&self) -> MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Posts a completion (the results are in the args already).
    pub fn post(&self, args: Arc<Args>) {
        let mut entries = self.entries();
        if entries.closed {
            return;
        }
        if entries.ready.is_empty() {
            sys::eventfd_add(self.event, 1);
        }
        entries.ready.push_back(args);
        drop(entries);
        self.posted.notify_one();
    }

    /// Takes up to `cap` completed args into `out` (as raw handles), waiting up to `timeout`
    /// (None: for ever) for the first. Returns how many it took; 0 on time-out or once the
    /// queue is closed.
    pub fn wait(
        &self,
        cap: usize,
        timeout: Option<Duration>,
        mut out: impl FnMut(usize, *const Args),
    ) -> usize {
        RETAINED.with(|retained| retained.borrow_mut().clear());
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut entries = self.entries();
        while entries.ready.is_empty() && !entries.closed {
            entries = match deadline {
                None => self
                    .posted
                    .wait(entries)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    self.posted
                        .wait_timeout(entries, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
        let taken = entries.ready.len().min(cap);
        let batch: Vec<Arc<Args>> = entries.ready.drain(..taken).collect();
        if taken > 0 && entries.ready.is_empty() {
            sys::eventfd_take(self.event);
        }
        let more = !entries.ready.is_empty();
        drop(entries);
        if more {
            // Others may be waiting too; this thread took only `cap`.
            self.posted.notify_one();
        }
        for (i, args) in batch.into_iter().enumerate() {
            out(i, Arc::as_ptr(&args));
            if args.is_freed() {
                RETAINED.with(|retained| retained.borrow_mut().push(args));
            }
        }
        taken
    }

    /// The descriptor that is readable while the queue holds completions.
    pub fn fd(&self) -> RawFd {
        self.event
    }

    /// The owner let go: drop what is queued, discard what comes later, wake every waiter.
    pub fn close(&self) {
        let dropped = {
            let mut entries = self.entries();
            entries.closed = true;
            if !entries.ready.is_empty() {
                sys::eventfd_take(self.event);
            }
            std::mem::take(&mut entries.ready)
        };
        // Dropped outside the lock: an args object may go with it.
        drop(dropped);
        self.posted.notify_all();
    }
}

impl Drop for CompletionQueue {
    fn drop(&mut self) {
        sys::close(self.event);
    }
}
