//! A reactor: one thread, one epoll instance (through mio, edge-triggered), one registration
//! per socket for both directions; on the io_uring backend also a ring (see `uring.rs`),
//! which it waits on instead and through which it sends batched sends. It resumes queued
//! operations on readiness edges and delivers every completion of its sockets: it runs the
//! callback itself (Inline dispatch) or hands it to the runtime's worker pool (Pool
//! dispatch). Other threads talk to it through a
//! channel plus a waker: aborted operations to deliver, queues handed over, registrations to
//! release, and at the end a stop.
//!
//! With a busy poll (`sock_runtime_set_busy_poll`), a turn that did work is followed by
//! polling without waiting (epoll_wait, or the ring's io_uring_enter, with no wait) until
//! something comes or the busy poll has passed, and only then the blocking wait: what
//! arrives meanwhile is handled without a sleeping thread's wake-up. The spin sees exactly
//! what the wait would (another thread's message wakes the waker, an event), so it changes
//! nothing but when the thread sleeps.
//!
//! A registration's token is the socket's address. The registration holds a strong
//! reference, given back only by a Release message, which is handled after the batch of
//! events it may race with, so an event never names a freed socket.
//!
//! Shutdown (see `runtime.rs`) must deliver every completion exactly once before the thread
//! exits, so every registration is recorded in `registry::SOCKETS` (to close them all), and
//! a gate: a close holds it open (shared) from the moment it claims the descriptor until its
//! Abort and Release messages are posted, and shutdown closes it (exclusive) before posting
//! Stop. Every message of every close is therefore ahead of Stop in the channel.

use std::cell::Cell;
use std::io;
use std::os::fd::AsRawFd;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use super::args::Args;
use super::op::Pending;
use super::queue::Direction;
use super::registry;
use super::runtime::{self, Backend, PoolMessage};
use super::socket::Socket;
use super::uring::{Readiness, Ring};

const WAKER: Token = Token(0);

/// Events taken per epoll_wait.
const EVENTS: usize = 1024;

thread_local! {
    /// The reactor whose thread this is (null elsewhere): its own messages need no wake.
    static CURRENT: Cell<*const Reactor> = const { Cell::new(std::ptr::null()) };
}

enum Message {
    Abort(Vec<Pending>),
    Process(Arc<Socket>, Direction),
    Release(usize, RawFd),
    Stop,
}

/// Whether new registrations are still taken. The sockets themselves are in
/// `registry::SOCKETS`; this lock keeps a registration's check and its entry there together,
/// so that `close_registrations` sees every registration it did not refuse.
struct Registered {
    open: bool,
}

pub struct Reactor {
    registry: mio::Registry,
    waker: Waker,
    tx: Sender<Message>,
    /// Where completions go under Pool dispatch; None runs them on this reactor's thread.
    pool: Option<Sender<PoolMessage>>,
    /// The io_uring backend: sends can be batched.
    batches_sends: bool,
    /// Sockets with batched sends whose send queue the reactor now owns, for its next
    /// batch. A list that keeps its capacity rather than the channel, whose blocks would
    /// make every 31st batched send allocate.
    submissions: Mutex<Vec<Arc<Socket>>>,
    registered: Mutex<Registered>,
    /// True while the reactor runs; see the module comment.
    gate: RwLock<bool>,
}

/// Held by a close while it claims the descriptor and posts its messages.
pub struct CloseGuard<'a>(#[allow(dead_code)] RwLockReadGuard<'a, bool>);

impl Reactor {
    /// Starts a reactor thread on `backend` (io_uring only if `runtime` found it usable) that
    /// polls without sleeping for up to `busy_poll` after each turn; `pool` receives
    /// completions under Pool dispatch.
    pub fn start(
        name: String,
        backend: Backend,
        busy_poll: Duration,
        pool: Option<Sender<PoolMessage>>,
    ) -> io::Result<(Arc<Reactor>, JoinHandle<()>)> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let reactor = Arc::new(Reactor {
            registry,
            waker,
            tx,
            pool,
            batches_sends: backend == Backend::IoUring,
            submissions: Mutex::new(Vec::new()),
            registered: Mutex::new(Registered { open: true }),
            gate: RwLock::new(true),
        });
        // Allocated here rather than on the new thread, so that once `start` returns the
        // reactor allocates nothing until it has work.
        let events = Events::with_capacity(EVENTS);
        let (made_tx, made_rx) = crossbeam_channel::bounded(1);
        let thread = {
            let reactor = Arc::clone(&reactor);
            runtime::spawn(name, move || {
                CURRENT.with(|c| c.set(Arc::as_ptr(&reactor)));
                // The ring is made here: a single-issuer ring belongs to the thread that
                // made it.
                let ring = match backend {
                    Backend::Epoll => None,
                    Backend::IoUring => match Ring::new(poll.as_raw_fd()) {
                        Ok(ring) => Some(ring),
                        Err(err) => return drop(made_tx.send(Err(err))),
                    },
                };
                let _ = made_tx.send(Ok(()));
                run(&reactor, poll, events, ring, rx, busy_poll)
            })?
        };
        if let Ok(Err(err)) = made_rx.recv() {
            let _ = thread.join();
            return Err(err);
        }
        Ok((reactor, thread))
    }

    fn registered(&self) -> MutexGuard<'_, Registered> {
        self.registered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers the socket for read and write edges; the registration keeps it alive until
    /// `deregister`. Refused with ECANCELED once the runtime is shutting down.
    pub fn register(&self, socket: &Arc<Socket>, fd: RawFd) -> io::Result<()> {
        let address = Arc::as_ptr(socket) as usize;
        let registered = self.registered();
        if !registered.open {
            return Err(io::Error::from_raw_os_error(libc::ECANCELED));
        }
        self.registry.register(
            &mut SourceFd(&fd),
            Token(address),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        // The registration's own reference; `Message::Release` gives it back.
        std::mem::forget(Arc::clone(socket));
        registry::SOCKETS.insert(fd, address);
        Ok(())
    }

    /// Holds the gate open for a close (see the module comment): its messages are then
    /// certain to reach the reactor before it stops.
    pub fn hold_for_close(&self) -> CloseGuard<'_> {
        CloseGuard(self.gate.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Stops edges for the socket and gives back the registration's reference once the
    /// reactor is past any event that may still name it. Called once, by the closer (holding
    /// the gate), while the descriptor is still open.
    pub fn deregister(&self, _closing: &CloseGuard<'_>, socket: &Socket, fd: RawFd) {
        // Closing the descriptor would remove it as well; deregistering first keeps the
        // order explicit. A failure leaves nothing to undo.
        let _ = self.registry.deregister(&mut SourceFd(&fd));
        self.send(Message::Release(socket as *const Socket as usize, fd));
    }

    /// Delivers OperationAborted to operations taken out of a closed socket's queues.
    pub fn abort(&self, _closing: &CloseGuard<'_>, ops: Vec<Pending>) {
        if !ops.is_empty() {
            self.send(Message::Abort(ops));
        }
    }

    /// Hands a queue (already marked busy) to the reactor to run. Once the reactor has
    /// stopped the socket is closed, its queue stopped and its operations aborted, so there
    /// is nothing left to run and the message is dropped.
    pub fn process(&self, socket: Arc<Socket>, direction: Direction) {
        let running = self.gate.read().unwrap_or_else(PoisonError::into_inner);
        if *running {
            self.send(Message::Process(socket, direction));
        }
    }

    /// True on the io_uring backend, where a socket's sends can be batched.
    pub fn batches_sends(&self) -> bool {
        self.batches_sends
    }

    /// Hands a send queue (already marked busy) of a socket with batched sends to the
    /// reactor, for its next batch. Dropped once the reactor has stopped, as `process`.
    pub fn submit_sends(&self, socket: Arc<Socket>) {
        let running = self.gate.read().unwrap_or_else(PoisonError::into_inner);
        if *running {
            self.submissions
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(socket);
            self.wake();
        }
    }

    /// Delivers a completion whose results are in the args: the callback runs here (Inline)
    /// or on the worker pool; a queue's args are posted from here either way.
    pub fn deliver(&self, socket: &Arc<Socket>, args: Arc<Args>) {
        let Some(pool) = self.pool.as_ref().filter(|_| !args.is_queued()) else {
            return args.notify(socket);
        };
        // The pool outlives every reactor (shutdown stops it after joining them), so a failed
        // send would be a bug; the callback then runs here rather than never.
        if let Err(unsent) = pool.send(PoolMessage::Run(Arc::clone(socket), args)) {
            if let PoolMessage::Run(socket, args) = unsent.into_inner() {
                args.notify(&socket);
            }
        }
    }

    /// The sockets registered now, each with a strong reference of its own, and no new
    /// registrations from here on (shutdown).
    pub fn close_registrations(&self) -> Vec<Arc<Socket>> {
        let mut registered = self.registered();
        registered.open = false;
        let mut sockets = Vec::new();
        // The table holds every reactor's sockets; this one's are those that name it.
        registry::SOCKETS.for_each(|address| {
            let socket = address as *const Socket;
            // SAFETY: an address in the table is a Socket whose registration reference is
            // live: Release takes it out of the table (under the lock held while we visit)
            // before giving that reference back, and an overwrite only takes addresses out
            // (see registry.rs), so the count is at least one while we read it and add ours.
            unsafe {
                if std::ptr::eq((*socket).reactor(), self) {
                    Arc::increment_strong_count(socket);
                    sockets.push(Arc::from_raw(socket));
                }
            }
        });
        sockets
    }

    /// Waits for closes in progress to post their messages, then tells the thread to stop
    /// after handling everything ahead of this message.
    pub fn stop(&self) {
        *self.gate.write().unwrap_or_else(PoisonError::into_inner) = false;
        self.send(Message::Stop);
    }

    fn send(&self, message: Message) {
        // The receiver lives until the thread handles Stop, which is posted last.
        let _ = self.tx.send(message);
        self.wake();
    }

    fn wake(&self) {
        // The reactor's own thread reads its messages before it waits again.
        if !std::ptr::eq(CURRENT.with(Cell::get), self) {
            let _ = self.waker.wake();
        }
    }
}

/// A bug in one socket's handling must not take every other socket's completions with it:
/// in release builds the reactor thread catches the panic and goes on; debug builds abort,
/// so a test cannot pass over it.
pub(crate) fn survive(work: impl FnOnce()) {
    if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
        let what = panic
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("unknown panic");
        eprintln!("sockasync: internal error on a runtime thread (please report): {what}");
        if cfg!(debug_assertions) {
            // Debug builds are for finding such bugs: fail loudly (the tests run these).
            std::process::abort();
        }
    }
}

fn run(
    reactor: &Reactor,
    mut poll: Poll,
    mut events: Events,
    mut ring: Option<Ring>,
    rx: Receiver<Message>,
    busy_poll: Duration,
) {
    let mut stopping = false;
    let mut submitted = Vec::new();
    // A wait that failed (a signal interrupted it) brought no work, so no spin follows it:
    // a busy poll costs CPU only after turns that did something.
    let mut spin = Duration::ZERO;
    // Batches in the kernel at Stop (their sockets were closed, so they are cancelled) must
    // still complete before the thread ends.
    while !stopping || ring.as_ref().is_some_and(|r| !r.is_idle()) {
        let ready = match ring.as_mut() {
            None => {
                let ready = wait_spinning(&mut poll, &mut events, spin);
                spin = if ready { busy_poll } else { Duration::ZERO };
                ready
            }
            // The ring waits (and submits the turn's batches in the same call). Its epoll
            // wait brings the events itself; on kernels without it epoll is then read,
            // without waiting.
            Some(ring) => {
                let readiness = ring.wait(spin);
                spin = if readiness == Readiness::Failed {
                    Duration::ZERO
                } else {
                    busy_poll
                };
                match readiness {
                    Readiness::None | Readiness::Failed => false,
                    Readiness::Taken => {
                        ring.take_events(|token, readable, writable| {
                            on_event(reactor, token, readable, writable)
                        });
                        false
                    }
                    Readiness::Read => wait(&mut poll, &mut events, Some(Duration::ZERO)),
                }
            }
        };
        if ready {
            loop {
                handle(reactor, &events);
                // Edge-triggered epoll reports the rest only when asked again, and with a
                // ring it would not wake us for them.
                if ring.is_none() || events.iter().count() < EVENTS {
                    break;
                }
                if !wait(&mut poll, &mut events, Some(Duration::ZERO)) {
                    break;
                }
            }
        }
        // What this thread gives itself is not announced by its waker (callbacks run here
        // post messages and submissions without one), so all of it is done before the next
        // wait: a pass over the submissions runs callbacks that can start more.
        loop {
            for message in rx.try_iter() {
                survive(|| match message {
                    Message::Abort(ops) => ops.into_iter().for_each(Pending::abort),
                    Message::Process(socket, direction) => socket.queue(direction).process(&socket),
                    Message::Release(address, fd) => {
                        if let Some(ring) = ring.as_mut() {
                            ring.cancel(address);
                        }
                        registry::SOCKETS.remove(fd, address);
                        // SAFETY: the address came from `register`, whose leaked strong reference
                        // is given back here exactly once (the closer sends Release once), after
                        // it left the table that `close_registrations` reads (taken out just now,
                        // or already overwritten by a newer socket with the same number).
                        unsafe { Arc::decrement_strong_count(address as *const Socket) }
                    }
                    Message::Stop => stopping = true,
                });
            }
            // Swapped out, so the lock is not held while batches are built (callbacks that
            // finish a batch may submit again), and both lists keep their capacity.
            std::mem::swap(
                &mut submitted,
                &mut *reactor
                    .submissions
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner),
            );
            if submitted.is_empty() {
                break;
            }
            for socket in submitted.drain(..) {
                survive(|| match ring.as_mut() {
                    Some(ring) => ring.submit_sends(socket),
                    None => socket.queue(Direction::Write).process(&socket),
                });
            }
        }
    }
}

/// Polls epoll without waiting until events come (another thread's message among them: the
/// waker is an event) or `spin` has passed, then waits; false if a wait failed.
fn wait_spinning(poll: &mut Poll, events: &mut Events, spin: Duration) -> bool {
    if !spin.is_zero() {
        let start = Instant::now();
        loop {
            if !wait(poll, events, Some(Duration::ZERO)) {
                return false;
            }
            if !events.is_empty() {
                return true;
            }
            if start.elapsed() >= spin {
                break;
            }
        }
    }
    wait(poll, events, None)
}

/// One epoll_wait; false if it failed (and nothing is to be read from `events`).
fn wait(poll: &mut Poll, events: &mut Events, timeout: Option<Duration>) -> bool {
    match poll.poll(events, timeout) {
        Ok(()) => true,
        Err(err) => {
            if err.kind() != io::ErrorKind::Interrupted {
                // Not expected from epoll_wait with valid arguments; back off rather than spin.
                std::thread::sleep(Duration::from_millis(1));
            }
            false
        }
    }
}

fn handle(reactor: &Reactor, events: &Events) {
    for event in events.iter() {
        let failed = event.is_error();
        on_event(
            reactor,
            event.token().0,
            event.is_readable() || event.is_read_closed() || failed,
            event.is_writable() || event.is_write_closed() || failed,
        );
    }
}

/// One socket's readiness edge (or the waker's, which needs nothing).
fn on_event(reactor: &Reactor, token: usize, readable: bool, writable: bool) {
    if token == WAKER.0 {
        return;
    }
    let address = token as *const Socket;
    // SAFETY: the token is the address of a Socket whose registration still holds a strong
    // reference: that reference is dropped only by Message::Release, handled after this
    // whole batch of events, and epoll reports no event for a descriptor after its
    // deregistration (which precedes the Release message). Events are taken and handled in
    // one turn, before its messages: by the reactor's epoll_wait, or by the ring's epoll
    // wait, which completes only inside the ring's wait at the start of the turn (uring.rs).
    let socket = unsafe { &*address };
    survive(|| {
        if readable {
            socket.queue(Direction::Read).on_ready(socket);
        }
        if !writable {
            return;
        }
        let queue = socket.queue(Direction::Write);
        // (A datagram socket's sends must stay one datagram each: never gathered.)
        if !reactor.batches_sends || !socket.is_stream() {
            return queue.on_ready(socket);
        }
        // io_uring: waiting sends of every stream socket that became writable go to the
        // kernel together, in the ring's next submission.
        if queue.on_ready_for_ring() {
            // SAFETY: as above, the registration's reference keeps the count at least one
            // while this one is added.
            let socket = unsafe {
                Arc::increment_strong_count(address);
                Arc::from_raw(address)
            };
            reactor
                .submissions
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(socket);
        }
    });
}
