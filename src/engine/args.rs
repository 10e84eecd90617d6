//! The args object (.NET's SocketAsyncEventArgs): what an operation works on and what it left.
//!
//! One atomic word says who may touch the configuration: the caller's setters (Idle ->
//! Configuring -> Idle) or one operation (Idle -> InFlight -> Idle). Setters are rejected while
//! an operation owns it, and an operation start is rejected while it is owned at all. The
//! single-buffer fields are atomics, so the small-send hot path reads them without a lock; the
//! rarer buffer list and endpoint sit behind a mutex that only setters and operation starts
//! that need them take. Results are atomics so a getter racing a completion reads a value,
//! not torn memory.

use std::sync::atomic::{
    AtomicBool, AtomicI16, AtomicPtr, AtomicU8, AtomicU16, AtomicUsize, Ordering,
};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::cq::CompletionQueue;
use super::endpoint::Endpoint;
use super::op::{ConnectPhase, Finished};
use super::packets::{Packet, SendPackets};
use super::socket::Socket;
use super::sys::RawBuf;
use crate::error::{AsyncOperation, Reject, SocketError, SocketFlags, Status};

/// A closure called once per pending operation, on the reactor thread, after the results
/// are in place.
pub type Completion = Box<dyn Fn(&Arc<Socket>, &Arc<Args>) + Send + Sync>;

/// A plain function called like a `Completion`, with a word the args were made with: no
/// allocation, unlike a boxed closure (the C boundary passes its callback as the word).
pub type PlainCompletion = fn(&Arc<Socket>, &Arc<Args>, usize);

/// How an args object calls back: two words either way. A closure (Rust callers) or a
/// completion queue goes into one more box, made once with the args, so that variant is one
/// thin pointer and the enum's tag fits in the function pointer's niche: a third variant of
/// its own would need a tag word, and the args one allocator size class more.
enum Notify {
    Plain(PlainCompletion, usize),
    Boxed(Box<Boxed>),
}

enum Boxed {
    Closure(Completion),
    /// Posted to a completion queue instead of calling anything.
    Queue(Arc<CompletionQueue>),
}

/// The buffer-list mark in the flags word (above every SocketFlags bit).
const LIST: u16 = 0x8000;

const IDLE: u8 = 0;
const CONFIGURING: u8 = 1;
const IN_FLIGHT: u8 = 2;

/// What an operation needs to know about the args' configuration to validate itself, read
/// without owning the args (racy but memory-safe), then again once it owns them.
#[derive(Clone, Debug, Default)]
pub struct Shape {
    pub has_buffer: bool,
    pub has_list: bool,
    pub endpoint: Option<Endpoint>,
}

/// The data an operation carries: nothing, one range of one buffer, or a list of buffers.
#[derive(Clone, Debug)]
pub enum Payload {
    Empty,
    Single(RawBuf),
    List(Arc<[RawBuf]>),
}

impl Payload {
    /// The buffers, as a list (one entry or none for the simple cases).
    pub fn buffers(&self) -> &[RawBuf] {
        match self {
            Payload::Empty => &[],
            Payload::Single(b) => std::slice::from_ref(b),
            Payload::List(l) => l,
        }
    }

    pub fn total_len(&self) -> usize {
        match self {
            Payload::Empty => 0,
            Payload::Single(b) => b.len,
            Payload::List(l) => l.iter().map(|b| b.len).sum(),
        }
    }
}

struct Extra {
    list: Option<Arc<[RawBuf]>>,
    /// Where a list send that would block left off: (bytes done, entry, bytes into it).
    list_cursor: Option<(usize, usize, usize)>,
    endpoint: Option<Endpoint>,
    connect_phase: ConnectPhase,
    /// The socket the last accept produced, until the caller reads it: then its reference
    /// goes to the caller (`handed_out` remembers the handle for repeated reads). One never
    /// read is closed when the args start another accept or are dropped, so it cannot leak.
    accepted: Option<Arc<Socket>>,
    handed_out: usize,
    /// The send-packets elements; an operation starting takes a reference and opens its
    /// files from them.
    packets: Option<Arc<[Packet]>>,
    /// The send-packets in flight: its open files and where it stands. Set when it starts,
    /// taken out for each attempt and dropped when it ends, so files it opened are closed
    /// before its results are stored. Boxed: rare, and larger than the rest of the extras.
    send_packets: Option<Box<SendPackets>>,
}

impl Default for Extra {
    fn default() -> Extra {
        Extra {
            list: None,
            list_cursor: None,
            endpoint: None,
            connect_phase: ConnectPhase::Start,
            accepted: None,
            handed_out: 0,
            packets: None,
            send_packets: None,
        }
    }
}

pub struct Args {
    state: AtomicU8,
    freed: AtomicBool,
    notify: Notify,
    user_token: AtomicUsize,

    buffer: AtomicPtr<u8>,
    length: AtomicUsize,
    offset: AtomicUsize,
    count: AtomicUsize,
    has_endpoint: AtomicBool,
    /// Allocated on first use: sends and receives with one buffer never need it.
    extra: Mutex<Option<Box<Extra>>>,

    bytes_transferred: AtomicUsize,
    /// Narrow on purpose (every SocketError fits 16 bits, every operation 8): with the flags
    /// above they share one word, which keeps the args in a smaller allocator size class.
    socket_error: AtomicI16,
    last_operation: AtomicU8,
    /// SocketFlags (they fit 16 bits): the next operation's input; after a completion, what
    /// it reported. The top bit (`LIST`) says a buffer list is set: kept in the same word so
    /// the fast paths learn "one plain buffer, no flags" from a single load of zero.
    flags: AtomicU16,
    #[cfg(debug_assertions)]
    generations: Generations,
}

/// Debug builds number each operation started on an args object and check that a pending
/// one completes as the operation it was (not a stale one from before a reuse) and is
/// delivered once: a second callback, or one for an older operation, is a bug the tests
/// must see (a panic on the reactor thread aborts debug builds).
#[cfg(debug_assertions)]
#[derive(Default)]
struct Generations {
    started: std::sync::atomic::AtomicU64,
    delivered: std::sync::atomic::AtomicU64,
}

// The results' narrow fields hold every value they are given.
const _: () = {
    let mut i = 0;
    while i < SocketError::ALL.len() {
        let code = SocketError::ALL[i] as i32;
        assert!(code >= i16::MIN as i32 && code <= i16::MAX as i32);
        i += 1;
    }
    assert!(AsyncOperation::SendTo as i32 <= u8::MAX as i32);
    assert!(SocketFlags::ALL as u32 <= u16::MAX as u32);
    assert!(SocketFlags::ALL as u16 & LIST == 0);
};

#[cold]
fn freed() -> Reject {
    Reject::new(
        Status::InvalidArgument,
        "the args object was freed (sock_args_free)",
    )
}

/// Exclusive configuration access, released (back to Idle) on drop.
struct Configuring<'a>(&'a Args);

impl Drop for Configuring<'_> {
    fn drop(&mut self) {
        self.0.state.store(IDLE, Ordering::Release);
    }
}

impl Args {
    pub fn new(completion: Completion, user_token: usize) -> Args {
        Args::with_notify(
            Notify::Boxed(Box::new(Boxed::Closure(completion))),
            user_token,
        )
    }

    /// Args that call `completion` with `word` (and no allocation besides the args).
    pub fn with_plain_completion(
        completion: PlainCompletion,
        word: usize,
        user_token: usize,
    ) -> Args {
        Args::with_notify(Notify::Plain(completion, word), user_token)
    }

    /// Args whose completions are posted to `queue` (`sock_args_new_queued`).
    pub fn with_queue(queue: Arc<CompletionQueue>, user_token: usize) -> Args {
        Args::with_notify(Notify::Boxed(Box::new(Boxed::Queue(queue))), user_token)
    }

    fn with_notify(notify: Notify, user_token: usize) -> Args {
        Args {
            state: AtomicU8::new(IDLE),
            freed: AtomicBool::new(false),
            notify,
            user_token: AtomicUsize::new(user_token),
            buffer: AtomicPtr::new(std::ptr::null_mut()),
            length: AtomicUsize::new(0),
            offset: AtomicUsize::new(0),
            count: AtomicUsize::new(0),
            has_endpoint: AtomicBool::new(false),
            extra: Mutex::new(None),
            bytes_transferred: AtomicUsize::new(0),
            socket_error: AtomicI16::new(0),
            last_operation: AtomicU8::new(AsyncOperation::None as u8),
            flags: AtomicU16::new(0),
            #[cfg(debug_assertions)]
            generations: Generations::default(),
        }
    }

    fn extra(&self) -> MutexGuard<'_, Option<Box<Extra>>> {
        self.extra.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the extras, allocating them on first use.
    fn with_extra<R>(&self, change: impl FnOnce(&mut Extra) -> R) -> R {
        change(self.extra().get_or_insert_with(Box::default))
    }

    /// Changes the extras if there are any (clearing needs no allocation).
    fn with_existing_extra<R>(&self, change: impl FnOnce(&mut Extra) -> R) -> Option<R> {
        self.extra().as_deref_mut().map(change)
    }

    fn configure(&self) -> Result<Configuring<'_>, Reject> {
        match self
            .state
            .compare_exchange(IDLE, CONFIGURING, Ordering::Acquire, Ordering::Relaxed)
        {
            Ok(_) => Ok(Configuring(self)),
            Err(_) => Err(Reject::in_progress()),
        }
    }

    /// `sock_args_set_buffer`: a null pointer clears; otherwise offset 0, count = length.
    pub fn set_buffer(&self, buffer: *mut u8, length: usize) -> Result<(), Reject> {
        let _owned = self.configure()?;
        if buffer.is_null() {
            self.buffer.store(std::ptr::null_mut(), Ordering::Relaxed);
            self.length.store(0, Ordering::Relaxed);
            self.offset.store(0, Ordering::Relaxed);
            self.count.store(0, Ordering::Relaxed);
            return Ok(());
        }
        if self.has_list() {
            return Err(Reject::invalid(
                "a buffer list is set: clear it before setting a buffer",
            ));
        }
        if length > isize::MAX as usize {
            return Err(Reject::invalid("buffer length exceeds SSIZE_MAX"));
        }
        self.buffer.store(buffer, Ordering::Relaxed);
        self.length.store(length, Ordering::Relaxed);
        self.offset.store(0, Ordering::Relaxed);
        self.count.store(length, Ordering::Relaxed);
        Ok(())
    }

    /// `sock_args_set_range`: re-slices the buffer set with `set_buffer`.
    pub fn set_range(&self, offset: usize, count: usize) -> Result<(), Reject> {
        let _owned = self.configure()?;
        let length = self.length.load(Ordering::Relaxed);
        match offset.checked_add(count) {
            Some(end) if end <= length => {
                self.offset.store(offset, Ordering::Relaxed);
                self.count.store(count, Ordering::Relaxed);
                Ok(())
            }
            _ => Err(Reject::invalid(format!(
                "offset {offset} + count {count} runs past the buffer's {length} bytes"
            ))),
        }
    }

    /// `sock_args_set_buffer_list`: None clears; the entries are copied.
    pub fn set_buffer_list(&self, list: Option<Vec<RawBuf>>) -> Result<(), Reject> {
        let _owned = self.configure()?;
        let Some(list) = list else {
            self.with_existing_extra(|e| {
                e.list = None;
                e.list_cursor = None;
            });
            self.set_list_mark(false);
            return Ok(());
        };
        if !self.buffer.load(Ordering::Relaxed).is_null() {
            return Err(Reject::invalid(
                "a buffer is set: clear it before setting a buffer list",
            ));
        }
        if list.iter().any(|b| b.len > isize::MAX as usize) {
            return Err(Reject::invalid("a buffer list entry exceeds SSIZE_MAX"));
        }
        let mut total: usize = 0;
        for b in &list {
            total = total
                .checked_add(b.len)
                .filter(|t| *t <= isize::MAX as usize)
                .ok_or_else(|| {
                    Reject::invalid("the buffer list's total length exceeds SSIZE_MAX")
                })?;
            if b.ptr.is_null() && b.len > 0 {
                return Err(Reject::invalid(
                    "a buffer list entry has a NULL pointer and a non-zero length",
                ));
            }
        }
        self.with_extra(|e| {
            e.list = Some(list.into());
            e.list_cursor = None;
        });
        self.set_list_mark(true);
        Ok(())
    }

    /// `sock_args_set_send_packets`: None clears; the elements (checked one by one when
    /// made) are kept as given. Independent of the buffer and buffer list, as in .NET.
    pub fn set_send_packets(&self, packets: Option<Vec<Packet>>) -> Result<(), Reject> {
        let _owned = self.configure()?;
        let Some(packets) = packets else {
            self.with_existing_extra(|e| e.packets = None);
            return Ok(());
        };
        packets
            .iter()
            .try_fold(0usize, |total, p| {
                total
                    .checked_add(p.memory_len())
                    .filter(|t| *t <= isize::MAX as usize)
            })
            .ok_or_else(|| {
                Reject::invalid("the send-packets memory elements' total exceeds SSIZE_MAX")
            })?;
        self.with_extra(|e| e.packets = Some(packets.into()));
        Ok(())
    }

    /// The send-packets elements as set, read without owning the args (to pick the right
    /// rejection first, as `peek_shape` does).
    pub fn peek_send_packets(&self) -> Option<Arc<[Packet]>> {
        self.extra().as_ref().and_then(|e| e.packets.clone())
    }

    /// Takes the args for a send-packets and gives its elements (None: none are set).
    pub fn begin_send_packets(&self) -> Result<Option<Arc<[Packet]>>, Reject> {
        self.claim()?;
        Ok(self.peek_send_packets())
    }

    /// `sock_args_set_remote_endpoint`: None clears.
    pub fn set_remote_endpoint(&self, endpoint: Option<impl Into<Endpoint>>) -> Result<(), Reject> {
        let _owned = self.configure()?;
        let endpoint = endpoint.map(Into::into);
        let has_endpoint = endpoint.is_some();
        match endpoint {
            Some(_) => self.with_extra(|e| e.endpoint = endpoint),
            None => self
                .with_existing_extra(|e| e.endpoint = None)
                .unwrap_or(()),
        }
        self.has_endpoint.store(has_endpoint, Ordering::Relaxed);
        Ok(())
    }

    pub fn set_user_token(&self, token: usize) {
        self.user_token.store(token, Ordering::Release);
    }

    pub fn user_token(&self) -> usize {
        self.user_token.load(Ordering::Acquire)
    }

    pub fn offset(&self) -> usize {
        self.offset.load(Ordering::Relaxed)
    }

    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn bytes_transferred(&self) -> usize {
        self.bytes_transferred.load(Ordering::Acquire)
    }

    pub fn socket_error(&self) -> i32 {
        self.socket_error.load(Ordering::Acquire).into()
    }

    pub fn last_operation(&self) -> i32 {
        self.last_operation.load(Ordering::Acquire).into()
    }

    /// The operation that owns the args (the one last started), for its attempts.
    #[inline]
    pub fn operation(&self) -> AsyncOperation {
        use AsyncOperation::*;
        match self.last_operation.load(Ordering::Relaxed) {
            x if x == Accept as u8 => Accept,
            x if x == Connect as u8 => Connect,
            x if x == Disconnect as u8 => Disconnect,
            x if x == Receive as u8 => Receive,
            x if x == Send as u8 => Send,
            x if x == SendTo as u8 => SendTo,
            x if x == SendPackets as u8 => SendPackets,
            x if x == ReceiveFrom as u8 => ReceiveFrom,
            _ => None,
        }
    }

    /// `sock_args_set_flags`: SocketFlags for the next operations.
    pub fn set_flags(&self, flags: i32) -> Result<(), Reject> {
        let _owned = self.configure()?;
        if flags & !SocketFlags::ALL != 0 {
            return Err(Reject::invalid(format!(
                "flags {flags:#x}: only None, OutOfBand (1), Peek (2), DontRoute (4), \
                 Truncated (0x100) and ControlDataTruncated (0x200)"
            )));
        }
        let list = self.flags.load(Ordering::Relaxed) & LIST;
        self.flags.store(flags as u16 | list, Ordering::Relaxed);
        Ok(())
    }

    pub fn flags(&self) -> i32 {
        (self.flags.load(Ordering::Acquire) & !LIST).into()
    }

    fn has_list(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & LIST != 0
    }

    /// Under `configure`, the only writer of the mark.
    fn set_list_mark(&self, list: bool) {
        let flags = self.flags.load(Ordering::Relaxed) & !LIST;
        self.flags
            .store(if list { flags | LIST } else { flags }, Ordering::Relaxed);
    }

    /// The MSG_* bits for an operation starting on the claimed args.
    #[inline]
    pub fn system_flags(&self) -> i32 {
        SocketFlags::to_system((self.flags.load(Ordering::Relaxed) & !LIST).into())
    }

    /// The endpoint set, or the sender the last receive-from recorded: where a send-to goes,
    /// and what `sock_args_remote_endpoint` reads.
    pub fn endpoint(&self) -> Option<Endpoint> {
        if !self.has_endpoint.load(Ordering::Relaxed) {
            return None;
        }
        self.extra().as_ref().and_then(|e| e.endpoint.clone())
    }

    /// A receive-from on the claimed args records where its datagram came from.
    pub fn set_sender(&self, sender: Endpoint) {
        self.with_extra(|e| e.endpoint = Some(sender));
        self.has_endpoint.store(true, Ordering::Relaxed);
    }

    /// The socket the last accept produced, or null. The first read hands the caller its
    /// reference (the caller now owns the handle); later reads return the same handle.
    pub fn accept_socket(&self) -> *const Socket {
        self.with_existing_extra(|extra| {
            if let Some(socket) = extra.accepted.take() {
                extra.handed_out = Arc::into_raw(socket) as usize;
            }
            extra.handed_out
        })
        .unwrap_or(0) as *const Socket
    }

    /// Forgets the last accepted socket; one the caller never read is closed.
    fn drop_accepted(&self) {
        let unread = self
            .with_existing_extra(|extra| {
                extra.handed_out = 0;
                extra.accepted.take()
            })
            .flatten();
        if let Some(socket) = unread {
            socket.close();
        }
    }

    pub fn is_in_flight(&self) -> bool {
        self.state.load(Ordering::Acquire) == IN_FLIGHT
    }

    /// The configuration as an operation would see it, without owning the args. Used only to
    /// pick the right rejection before the args are taken. The endpoint (behind the mutex) is
    /// read only if asked for.
    pub fn peek_shape(&self, with_endpoint: bool) -> Shape {
        let endpoint = if with_endpoint && self.has_endpoint.load(Ordering::Relaxed) {
            self.extra().as_ref().and_then(|e| e.endpoint.clone())
        } else {
            None
        };
        Shape {
            has_buffer: !self.buffer.load(Ordering::Relaxed).is_null(),
            has_list: self.has_list(),
            endpoint,
        }
    }

    /// Takes the args for an operation and reads the shape it is checked against (the
    /// endpoint only if asked for). The payload is read from the args at each attempt.
    pub fn begin(&self, with_endpoint: bool) -> Result<Shape, Reject> {
        self.claim()?;
        Ok(self.peek_shape(with_endpoint))
    }

    /// `begin` for sends, receives and disconnects, which need only the payload: no shape, no
    /// endpoint, and no lock unless a buffer list is set.
    #[inline]
    pub fn begin_io(&self) -> Result<Payload, Reject> {
        self.claim()?;
        Ok(self.payload())
    }

    /// `begin_io` for the fast paths: claims the args, then gives the buffer's range if a
    /// single buffer is what they name. None (the args stay claimed): a list or nothing, which
    /// `claimed_payload` gives.
    #[inline]
    pub fn begin_io_single(&self) -> Result<Option<RawBuf>, Reject> {
        self.claim()?;
        // Zero: no list, no flags in or out, so the fast path has nothing to pass the kernel
        // and nothing to report (and `finish_plain` leaves the word as it is).
        if self.flags.load(Ordering::Relaxed) != 0 {
            return Ok(None);
        }
        let buffer = self.buffer.load(Ordering::Relaxed);
        if buffer.is_null() {
            return Ok(None);
        }
        Ok(Some(RawBuf {
            ptr: buffer.wrapping_add(self.offset.load(Ordering::Relaxed)),
            len: self.count.load(Ordering::Relaxed),
        }))
    }

    /// The payload of args this caller has claimed (`begin_io_single`).
    pub fn claimed_payload(&self) -> Payload {
        self.payload()
    }

    /// Claims the args for one operation: refused once freed, or while anything owns them.
    #[inline]
    fn claim(&self) -> Result<(), Reject> {
        if self.freed.load(Ordering::Relaxed) {
            return Err(freed());
        }
        match self
            .state
            .compare_exchange(IDLE, IN_FLIGHT, Ordering::Acquire, Ordering::Relaxed)
        {
            Ok(_) => Ok(()),
            Err(_) => Err(Reject::in_progress()),
        }
    }

    /// The data the claimed args name: the list, else the buffer's range, else nothing.
    #[inline]
    fn payload(&self) -> Payload {
        if self.has_list() {
            return self.list_payload();
        }
        let buffer = self.buffer.load(Ordering::Relaxed);
        if buffer.is_null() {
            Payload::Empty
        } else {
            Payload::Single(RawBuf {
                ptr: buffer.wrapping_add(self.offset.load(Ordering::Relaxed)),
                len: self.count.load(Ordering::Relaxed),
            })
        }
    }

    /// Kept out of line: the list sits behind the mutex, and the single-buffer case should
    /// not carry its code.
    #[cold]
    #[inline(never)]
    fn list_payload(&self) -> Payload {
        match self.extra().as_ref().and_then(|e| e.list.clone()) {
            Some(list) if !list.is_empty() => Payload::List(list),
            _ => Payload::Empty,
        }
    }

    /// The cursor a list send left at `done` bytes, if it left one there.
    pub fn list_cursor(&self, done: usize) -> Option<(usize, usize)> {
        let extra = self.extra();
        match extra.as_ref()?.list_cursor {
            Some((at, index, skip)) if at == done => Some((index, skip)),
            _ => None,
        }
    }

    pub fn save_list_cursor(&self, done: usize, index: usize, skip: usize) {
        self.with_existing_extra(|e| e.list_cursor = Some((done, index, skip)));
    }

    /// A connect starts from the beginning (its args have an endpoint, so extras).
    pub fn start_connect(&self) {
        self.set_connect_phase(ConnectPhase::Start);
    }

    pub fn set_connect_phase(&self, phase: ConnectPhase) {
        self.with_extra(|e| e.connect_phase = phase);
    }

    /// The connect's phase and endpoint.
    pub fn connect_state(&self) -> (ConnectPhase, Endpoint) {
        self.with_extra(|e| {
            let endpoint = e
                .endpoint
                .clone()
                .expect("a connect's args have an endpoint (checked)");
            (e.connect_phase, endpoint)
        })
    }

    /// Gives the args back untouched after `begin` (a check failed after all): a
    /// send-packets' files opened meanwhile are closed first, while the args are still
    /// claimed, so they cannot be taken for one started after the give-back.
    pub fn abandon(&self) {
        let opened = self.take_send_packets();
        self.state.store(IDLE, Ordering::Release);
        drop(opened);
    }

    /// A send-packets starting on the claimed args keeps its open files and cursor here.
    pub fn hold_send_packets(&self, in_flight: Box<SendPackets>) {
        self.with_extra(|e| e.send_packets = Some(in_flight));
    }

    /// The send-packets in flight, taken out (for an attempt, which puts it back if it
    /// would block, or to drop it when it ends). Its files close when it is dropped, which
    /// the caller does after the lock is released.
    pub fn take_send_packets(&self) -> Option<Box<SendPackets>> {
        self.with_existing_extra(|e| e.send_packets.take())
            .flatten()
    }

    /// Records the start of an accepted operation. As in .NET, LastOperation changes now,
    /// while bytes transferred and the socket error keep the last completed operation's
    /// values until this one completes.
    #[inline]
    pub fn started(&self, operation: AsyncOperation) {
        #[cfg(debug_assertions)]
        self.generations.started.fetch_add(1, Ordering::Relaxed);
        self.last_operation
            .store(operation as u8, Ordering::Relaxed);
        if operation == AsyncOperation::Accept {
            self.drop_accepted();
        }
    }

    /// The number of the operation last started (debug builds).
    #[cfg(debug_assertions)]
    pub fn generation(&self) -> u64 {
        self.generations.started.load(Ordering::Relaxed)
    }

    /// A pending operation numbered `generation` is about to complete: it must be the args'
    /// current operation, and delivered for the first time.
    #[cfg(debug_assertions)]
    pub fn check_delivery(&self, generation: u64) {
        let current = self.generation();
        assert_eq!(
            generation, current,
            "a completion for operation {generation} of args now on operation {current}"
        );
        let previous = self
            .generations
            .delivered
            .swap(generation, Ordering::Relaxed);
        assert!(
            previous < generation,
            "operation {generation} delivered twice (last delivered: {previous})"
        );
    }

    /// Stores the results and makes the args reusable. A send-packets lets go of its files
    /// first if its last attempt did not (it was aborted, or its socket closed under it), so
    /// they are closed before anyone can see it done.
    #[inline]
    pub fn finish(&self, finished: Finished) {
        if self.operation() == AsyncOperation::SendPackets {
            drop(self.take_send_packets());
        }
        self.bytes_transferred
            .store(finished.bytes, Ordering::Relaxed);
        self.socket_error
            .store(finished.error as i16, Ordering::Relaxed);
        let list = self.flags.load(Ordering::Relaxed) & LIST;
        self.flags
            .store(finished.flags as u16 | list, Ordering::Relaxed);
        if finished.accepted.is_some() {
            self.with_extra(|e| e.accepted = finished.accepted);
        }
        self.release_claim();
    }

    /// `finish` for a fast-path send or receive of `bytes`: its args had a flags word of zero
    /// (`begin_io_single`), which is already what it reports.
    #[inline]
    pub fn finish_plain(&self, bytes: usize) {
        self.bytes_transferred.store(bytes, Ordering::Relaxed);
        self.socket_error
            .store(SocketError::Success as i16, Ordering::Relaxed);
        self.release_claim();
    }

    #[inline(always)]
    fn release_claim(&self) {
        if cfg!(debug_assertions) {
            // Every test build checks that an operation completes exactly once: completing
            // args that no operation owns means a second completion.
            let previous = self.state.swap(IDLE, Ordering::Release);
            assert_eq!(previous, IN_FLIGHT, "an operation completed twice");
        } else {
            self.state.store(IDLE, Ordering::Release);
        }
    }

    /// Runs the completion callback (reactor thread only).
    pub fn notify(self: &Arc<Self>, socket: &Arc<Socket>) {
        match &self.notify {
            Notify::Plain(completion, word) => completion(socket, self, *word),
            Notify::Boxed(boxed) => match &**boxed {
                Boxed::Closure(completion) => completion(socket, self),
                Boxed::Queue(queue) => queue.post(Arc::clone(self)),
            },
        }
    }

    /// Whether completions go to a queue (which any thread may post to, so they skip the
    /// worker pool and keep their order).
    pub fn is_queued(&self) -> bool {
        matches!(&self.notify, Notify::Boxed(boxed) if matches!(**boxed, Boxed::Queue(_)))
    }

    pub fn is_freed(&self) -> bool {
        self.freed.load(Ordering::Relaxed)
    }

    /// The caller gave up its handle; operations on it are refused from now on (a callback
    /// still holds it valid until it returns).
    pub fn mark_freed(&self) {
        self.freed.store(true, Ordering::Relaxed);
    }
}

impl Drop for Args {
    fn drop(&mut self) {
        self.drop_accepted();
    }
}
