//! A descriptor that is closed exactly once, and never while a system call is using it.
//!
//! Closing a descriptor that another thread is about to `send` on would let that send reach
//! whatever socket reuses the number. Like .NET's SafeHandle, every system call holds a use
//! guard, and the descriptor is closed by whoever drops the last guard after close was asked.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, Ordering};

use super::sys;

const CLOSED: u32 = 1 << (u32::BITS - 1);

pub struct Fd {
    raw: RawFd,
    /// Count of live guards, with CLOSED set once close was asked. Guards are held only for
    /// the length of a system call, one per thread at most, so 31 bits are plenty; 32 in all
    /// keep the descriptor in one word with `raw`.
    state: AtomicU32,
}

/// Proof that the descriptor stays open; drop it when the system call is done.
pub struct FdUse<'a> {
    fd: &'a Fd,
}

impl Fd {
    pub fn new(raw: RawFd) -> Fd {
        Fd {
            raw,
            state: AtomicU32::new(0),
        }
    }

    /// A guard, or None once close has been asked.
    #[inline]
    pub fn acquire(&self) -> Option<FdUse<'_>> {
        let mut current = self.state.load(Ordering::Acquire);
        loop {
            if current & CLOSED != 0 {
                return None;
            }
            match self.state.compare_exchange_weak(
                current,
                current + 1,
                Ordering::Acquire,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(FdUse { fd: self }),
                Err(seen) => current = seen,
            }
        }
    }

    /// Asks for the close. Only the first caller gets a guard (to finish its close work with
    /// the descriptor still open); the descriptor closes when the last guard drops.
    pub fn close(&self) -> Option<FdUse<'_>> {
        let mut current = self.state.load(Ordering::Acquire);
        loop {
            if current & CLOSED != 0 {
                return None;
            }
            match self.state.compare_exchange_weak(
                current,
                (current + 1) | CLOSED,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(FdUse { fd: self }),
                Err(seen) => current = seen,
            }
        }
    }

    /// Gives the descriptor back to its owner unclosed: marks it closed without closing it.
    /// Only for a descriptor nobody has used yet (no guard is live).
    pub fn disown(&self) {
        self.state.store(CLOSED, Ordering::Release);
    }

    pub fn is_closed(&self) -> bool {
        self.state.load(Ordering::Acquire) & CLOSED != 0
    }
}

impl FdUse<'_> {
    #[inline]
    pub fn raw(&self) -> RawFd {
        self.fd.raw
    }

    /// Keeps the descriptor open beyond this guard, until `Fd::release_kept` (for a system
    /// call that is made later on the same thread, e.g. a ring's next submission).
    pub fn keep(self) {
        std::mem::forget(self);
    }
}

impl Fd {
    /// Ends what `FdUse::keep` kept.
    pub fn release_kept(&self) {
        drop(FdUse { fd: self });
    }
}

impl Drop for FdUse<'_> {
    #[inline]
    fn drop(&mut self) {
        if self.fd.state.fetch_sub(1, Ordering::AcqRel) == CLOSED | 1 {
            sys::close(self.fd.raw);
        }
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        // A socket dropped without close (it was never registered) still releases its fd.
        if let Some(guard) = self.close() {
            drop(guard);
        }
    }
}
