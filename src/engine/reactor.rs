//! The reactor: one thread, one epoll instance (through mio, edge-triggered), one registration
//! per socket for both directions. It resumes queued operations on readiness edges and runs
//! every completion callback. Other threads talk to it through a channel plus a waker:
//! aborted operations to deliver, queues handed over, registrations to release.
//!
//! A registration's token is the socket's address. The registration holds a strong
//! reference, given back only by a Release message, which is handled after the batch of
//! events it may race with, so an event never names a freed socket.

use std::io;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use super::op::Pending;
use super::queue::Direction;
use super::socket::Socket;

const WAKER: Token = Token(0);

enum Message {
    Abort(Vec<Pending>),
    Process(Arc<Socket>, Direction),
    Release(usize),
}

pub struct Reactor {
    registry: mio::Registry,
    waker: Waker,
    tx: Sender<Message>,
}

static CURRENT: Mutex<Option<Arc<Reactor>>> = Mutex::new(None);

/// The running reactor, started on first use.
pub fn current() -> io::Result<Arc<Reactor>> {
    let mut current = CURRENT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(reactor) = &*current {
        return Ok(Arc::clone(reactor));
    }
    let reactor = Reactor::start()?;
    *current = Some(Arc::clone(&reactor));
    Ok(reactor)
}

impl Reactor {
    fn start() -> io::Result<Arc<Reactor>> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let (tx, rx) = crossbeam_channel::unbounded();
        std::thread::Builder::new()
            .name("sockasync-reactor".into())
            .spawn(move || run(poll, rx))?;
        Ok(Arc::new(Reactor {
            registry,
            waker,
            tx,
        }))
    }

    /// Registers the socket for read and write edges; the registration keeps it alive until
    /// `release`.
    pub fn register(&self, socket: &Arc<Socket>, fd: RawFd) -> io::Result<()> {
        let token = Token(Arc::as_ptr(socket) as usize);
        self.registry.register(
            &mut SourceFd(&fd),
            token,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        // The registration's own reference; `Message::Release` gives it back.
        std::mem::forget(Arc::clone(socket));
        Ok(())
    }

    /// Stops edges for the socket and gives back the registration's reference once the
    /// reactor is past any event that may still name it. Called once, by the closer, while
    /// the descriptor is still open.
    pub fn deregister(&self, socket: &Socket, fd: RawFd) {
        // Closing the descriptor would remove it as well; deregistering first keeps the
        // order explicit. A failure leaves nothing to undo.
        let _ = self.registry.deregister(&mut SourceFd(&fd));
        self.post(Message::Release(socket as *const Socket as usize));
    }

    /// Delivers OperationAborted to operations taken out of a closed socket's queues.
    pub fn abort(&self, ops: Vec<Pending>) {
        if !ops.is_empty() {
            self.post(Message::Abort(ops));
        }
    }

    /// Hands a queue (already marked busy) to the reactor to run.
    pub fn process(&self, socket: Arc<Socket>, direction: Direction) {
        self.post(Message::Process(socket, direction));
    }

    fn post(&self, message: Message) {
        // The receiver lives as long as the reactor thread, which never exits on its own.
        let _ = self.tx.send(message);
        let _ = self.waker.wake();
    }
}

/// A bug in one socket's handling must not take every other socket's completions with it:
/// in release builds the reactor thread catches the panic and goes on; debug builds abort,
/// so a test cannot pass over it.
fn survive(work: impl FnOnce()) {
    if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
        let what = panic
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("unknown panic");
        eprintln!("sockasync: internal error on the reactor thread (please report): {what}");
        if cfg!(debug_assertions) {
            // Debug builds are for finding such bugs: fail loudly (the tests run these).
            std::process::abort();
        }
    }
}

fn run(mut poll: Poll, rx: Receiver<Message>) {
    let mut events = Events::with_capacity(1024);
    loop {
        if let Err(err) = poll.poll(&mut events, None) {
            if err.kind() != io::ErrorKind::Interrupted {
                // Not expected from epoll_wait with valid arguments; back off rather than spin.
                std::thread::sleep(Duration::from_millis(1));
            }
            continue;
        }
        for event in events.iter() {
            if event.token() == WAKER {
                continue;
            }
            // SAFETY: the token is the address of a Socket whose registration still holds a
            // strong reference: that reference is dropped only by Message::Release, handled
            // below after this whole batch, and epoll reports no event for a descriptor after
            // its deregistration (which precedes the Release message).
            let socket = unsafe { &*(event.token().0 as *const Socket) };
            let failed = event.is_error();
            let readable = event.is_readable() || event.is_read_closed() || failed;
            let writable = event.is_writable() || event.is_write_closed() || failed;
            survive(|| {
                if readable {
                    socket.queue(Direction::Read).on_ready(socket);
                }
                if writable {
                    socket.queue(Direction::Write).on_ready(socket);
                }
            });
        }
        for message in rx.try_iter() {
            survive(|| match message {
                Message::Abort(ops) => ops.into_iter().for_each(Pending::abort),
                Message::Process(socket, direction) => socket.queue(direction).process(&socket),
                // SAFETY: the address came from `register`, whose leaked strong reference is
                // given back here exactly once (the closer sends Release once).
                Message::Release(address) => unsafe {
                    Arc::decrement_strong_count(address as *const Socket)
                },
            });
        }
    }
}
