//! The sockets registered with any reactor, by descriptor number: what a runtime shutdown
//! reads to close every live socket.
//!
//! Descriptor numbers are small and dense (the kernel hands out the lowest free one), so a
//! table indexed by them costs one word per descriptor, about half of what a hash set of
//! addresses costs at 10,000 connections. It grows in fixed chunks, so a growing server
//! never holds an old and a new copy of a big array at once, and a chunk is allocated only
//! for a range of numbers that was used.
//!
//! There is one table for the process rather than one per reactor: sockets are spread over
//! the reactors round-robin, so every reactor's table would span every chunk and the cost
//! would be one word per descriptor per reactor. A reactor picks out its own sockets when it
//! reads the table (see `Reactor::close_registrations`).
//!
//! A descriptor number outlives its socket's entry in a way that needs care: a socket's
//! close deregisters it, posts its Release (carrying the number and the address) and then
//! closes the descriptor, but the reactor handles that Release later. In between, the kernel
//! may give the same number to a newer socket on any reactor, whose registration overwrites
//! the slot. The old socket then is no longer in the table, which is right: it is closing
//! already, so a shutdown has nothing to close there (its close holds the reactor's gate, so
//! its messages are handled before that reactor stops). When the old Release arrives, the
//! slot holds the newer address and must be left alone, so a removal clears a slot only if
//! it still holds the address being released. That comparison cannot be fooled by a newer
//! socket at the same address: the old socket's memory is held by its registration's
//! reference until the reactor has handled the Release, so no other socket can be there.
//!
//! What `close_registrations` relies on: an address is in the table only while its
//! registration's strong reference is alive. It is inserted after that reference is taken,
//! the Release handler removes it (under the table's lock) before giving the reference back,
//! and an overwrite only ever takes an address out. (A host that closes a descriptor it gave
//! the library lets a live socket's slot be overwritten; shutdown then misses that socket,
//! but the table still names no freed socket.)
//!
//! Empty chunks are kept: the numbers were in use once and are likely to be again, and a
//! hash set does not shrink either.

use std::num::NonZeroUsize;
use std::os::fd::RawFd;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Descriptors per chunk: 8 KiB of slots, two pages.
const CHUNK: usize = 1024;

type Chunk = [Option<NonZeroUsize>; CHUNK];

/// Addresses by descriptor number; see the module comment.
#[derive(Default)]
pub struct Registry {
    chunks: Mutex<Vec<Option<Box<Chunk>>>>,
}

/// The table every reactor registers its sockets in.
pub static SOCKETS: Registry = Registry::new();

/// A registered descriptor's chunk and slot in it. The descriptor was registered with epoll
/// first, which refuses a negative one.
fn position(fd: RawFd) -> (usize, usize) {
    let fd = usize::try_from(fd).expect("a registered descriptor is not negative");
    (fd / CHUNK, fd % CHUNK)
}

impl Registry {
    pub const fn new() -> Registry {
        Registry {
            chunks: Mutex::new(Vec::new()),
        }
    }

    fn chunks(&self) -> MutexGuard<'_, Vec<Option<Box<Chunk>>>> {
        self.chunks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records `address` (a socket's, never null) as registered under `fd`, replacing
    /// whatever a socket that had the number before left there.
    pub fn insert(&self, fd: RawFd, address: usize) {
        let (chunk, slot) = position(fd);
        let address = NonZeroUsize::new(address).expect("a socket's address is not null");
        let mut chunks = self.chunks();
        if chunks.len() <= chunk {
            chunks.resize_with(chunk + 1, || None);
        }
        chunks[chunk].get_or_insert_with(|| Box::new([None; CHUNK]))[slot] = Some(address);
    }

    /// Forgets `address` under `fd`, unless a newer socket took the number since; returns
    /// whether the slot still held it.
    pub fn remove(&self, fd: RawFd, address: usize) -> bool {
        let (chunk, slot) = position(fd);
        let mut chunks = self.chunks();
        let Some(entry) = chunks
            .get_mut(chunk)
            .and_then(Option::as_mut)
            .map(|chunk| &mut chunk[slot])
        else {
            return false;
        };
        if entry.map(NonZeroUsize::get) != Some(address) {
            return false;
        }
        *entry = None;
        true
    }

    /// Calls `visit` with every address in the table, holding the lock throughout, so no
    /// Release can give back a visited socket's registration reference meanwhile.
    pub fn for_each(&self, mut visit: impl FnMut(usize)) {
        let chunks = self.chunks();
        chunks
            .iter()
            .flatten()
            .flat_map(|chunk| chunk.iter().flatten())
            .for_each(|address| visit(address.get()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addresses(registry: &Registry) -> Vec<usize> {
        let mut seen = Vec::new();
        registry.for_each(|address| seen.push(address));
        seen
    }

    #[test]
    fn a_stale_release_leaves_the_newer_socket_with_the_same_number() {
        let registry = Registry::new();
        let (old, newer) = (0x1000, 0x2000);
        registry.insert(7, old);
        // The old socket closed; its number went to a newer one before the old Release.
        registry.insert(7, newer);
        assert_eq!(addresses(&registry), [newer]);
        assert!(
            !registry.remove(7, old),
            "the stale release cleared the slot"
        );
        assert_eq!(addresses(&registry), [newer]);
        assert!(registry.remove(7, newer));
        assert!(addresses(&registry).is_empty());
        // Released twice, or never registered: nothing to clear.
        assert!(!registry.remove(7, newer));
        assert!(!registry.remove(CHUNK as RawFd * 9, newer));
    }

    #[test]
    fn chunks_are_allocated_only_for_numbers_in_use() {
        let registry = Registry::new();
        let fds = [0, CHUNK - 1, CHUNK, 4 * CHUNK + 5];
        for (i, &fd) in fds.iter().enumerate() {
            registry.insert(fd as RawFd, 0x100 * (i + 1));
        }
        {
            let chunks = registry.chunks();
            assert_eq!(chunks.len(), 5);
            let allocated: Vec<bool> = chunks.iter().map(Option::is_some).collect();
            assert_eq!(allocated, [true, true, false, false, true]);
        }
        // In descriptor order, each address once, across the chunk boundaries.
        assert_eq!(addresses(&registry), [0x100, 0x200, 0x300, 0x400]);
        for (i, &fd) in fds.iter().enumerate() {
            assert!(registry.remove(fd as RawFd, 0x100 * (i + 1)));
        }
        assert!(addresses(&registry).is_empty());
        // Emptied chunks stay: the numbers are likely to be used again.
        registry.insert(3, 0x500);
        assert_eq!(registry.chunks().len(), 5);
        assert_eq!(addresses(&registry), [0x500]);
    }
}
