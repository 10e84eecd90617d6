//! Load tests of the safe core over loopback: many connections at once (both ends library
//! sockets, everything driven from completion callbacks), eight application threads on shared
//! sockets, and an optional soak that watches the resident set size.
//!
//! Sizes come from the environment, so CI runs a small tier and a person the full one:
//!
//! | variable                       | default | full target |
//! | ------------------------------ | ------- | ----------- |
//! | `SOCKASYNC_STRESS_CONNECTIONS` | 500     | 10000       |
//! | `SOCKASYNC_STRESS_MESSAGES`    | 20      | 100         |
//! | `SOCKASYNC_SOAK_MINUTES`       | 0 (off) | e.g. 10     |
//! | `SOCKASYNC_STRESS_SEED`        | clock   | (printed by every run, to replay it) |
//!
//! For example:
//! `SOCKASYNC_STRESS_CONNECTIONS=10000 SOCKASYNC_STRESS_MESSAGES=100 cargo test --release
//! --test stress -- --nocapture`.
//!
//! Each connection takes two descriptors (client and server end). The test raises
//! RLIMIT_NOFILE's soft limit to the hard one (and the hard one too where allowed); if the
//! connections asked for still do not fit, it runs as many as fit and says so loudly (with a
//! hard limit of 20000, that is about 9980, not 10000).
//!
//! The invariant checked everywhere: an operation that returned Ok(true) (pending) gets
//! exactly one callback, one that returned Ok(false) (completed now) or Err (rejected) gets
//! none. Every args object counts its starts by outcome and its callbacks; a callback that
//! finds more callbacks than operations that could have gone pending fails at once, and at
//! the end every args object must have exactly as many callbacks as pending starts.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Barrier, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use sockasync::engine::{Args, ShutdownHow, Socket, SocketOption};
use sockasync::error::{AsyncOperation, Reject, SocketError};

/// A completion that has not come after this long is taken as a hang.
const HANG: Duration = Duration::from_secs(60);
/// The wait for one completion in the smaller tests.
const WAIT: Duration = Duration::from_secs(20);

/// The tests of this binary take turns: they share two cores, and the soak measures the
/// whole process's RSS.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a number")),
        Err(_) => default,
    }
}

fn seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| {
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        let seed = env_number("SOCKASYNC_STRESS_SEED", clock);
        eprintln!("stress: SOCKASYNC_STRESS_SEED={seed}");
        seed
    })
}

/// xorshift64*: enough randomness for sizes and contents, and replayable from a seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        rng.next();
        rng
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in 0..n (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Random bytes that message contents are cut from: a message is `pool[off..off + len]` at a
/// random offset, so contents differ between connections and messages and a byte that lands
/// in the wrong stream or place is caught, without generating gigabytes byte by byte.
fn random_pool(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut pool = Vec::with_capacity(len + 8);
    while pool.len() < len {
        pool.extend_from_slice(&rng.next().to_le_bytes());
    }
    pool.truncate(len);
    pool
}

/// Heap memory handed to operations by address. Rust never holds a reference into it while
/// an operation may be using it: it is read only after that operation completed.
struct RawMem {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: an address and a length; the bytes are only read after the kernel is done with
// them (the completion), which the operation's callback or synchronous return orders.
unsafe impl Send for RawMem {}
// SAFETY: as above.
unsafe impl Sync for RawMem {}

impl RawMem {
    fn new(len: usize) -> RawMem {
        let boxed = vec![0u8; len].into_boxed_slice();
        RawMem {
            len: boxed.len(),
            ptr: Box::into_raw(boxed) as *mut u8,
        }
    }

    /// The first `n` bytes.
    ///
    /// SAFETY: no operation may be writing into the memory now.
    unsafe fn bytes(&self, n: usize) -> &[u8] {
        assert!(n <= self.len);
        // SAFETY: `ptr` is a live allocation of `len` bytes; the caller rules out writers.
        unsafe { std::slice::from_raw_parts(self.ptr, n) }
    }
}

impl Drop for RawMem {
    fn drop(&mut self) {
        // SAFETY: made by Box::into_raw of a boxed slice of exactly `len` bytes.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.ptr, self.len)) });
    }
}

/// Operations started and callbacks run, process-wide: the hang detector's sign of life.
static ACTIVITY: AtomicU64 = AtomicU64::new(0);

/// One args object's operations, by outcome, and its callbacks.
#[derive(Default)]
struct Ops {
    issued: AtomicU64,
    pending: AtomicU64,
    sync: AtomicU64,
    rejected: AtomicU64,
    callbacks: AtomicU64,
}

impl Ops {
    /// Starts an operation and counts how it went.
    fn issue(&self, op: impl FnOnce() -> Result<bool, Reject>) -> Result<bool, Reject> {
        self.issued.fetch_add(1, SeqCst);
        ACTIVITY.fetch_add(1, SeqCst);
        let result = op();
        match &result {
            Ok(true) => &self.pending,
            Ok(false) => &self.sync,
            Err(_) => &self.rejected,
        }
        .fetch_add(1, SeqCst);
        result
    }

    /// Counts a callback; an error if no pending operation could own it. (The args have one
    /// operation at a time and the next one starts after the previous was handled, so every
    /// start before this callback's operation has been counted by outcome already.)
    fn callback(&self) -> Result<(), String> {
        let seen = self.callbacks.fetch_add(1, SeqCst) + 1;
        ACTIVITY.fetch_add(1, SeqCst);
        let issued = self.issued.load(SeqCst);
        let could = issued - self.sync.load(SeqCst) - self.rejected.load(SeqCst);
        if seen > could {
            Err(format!(
                "callback #{seen} with only {could} starts that could have gone pending \
                 ({issued} issued): a double callback, or a callback for an operation that \
                 completed synchronously"
            ))
        } else {
            Ok(())
        }
    }

    /// Every pending start got exactly one callback.
    fn settled(&self, who: &str) -> Result<(), String> {
        let (issued, pending, sync, rejected, callbacks) = self.snapshot();
        if callbacks != pending || issued != pending + sync + rejected {
            return Err(format!(
                "{who}: {issued} issued = {pending} pending + {sync} synchronous + {rejected} \
                 rejected, but {callbacks} callbacks"
            ));
        }
        Ok(())
    }

    fn snapshot(&self) -> (u64, u64, u64, u64, u64) {
        (
            self.issued.load(SeqCst),
            self.pending.load(SeqCst),
            self.sync.load(SeqCst),
            self.rejected.load(SeqCst),
            self.callbacks.load(SeqCst),
        )
    }
}

#[derive(Default, Debug, Clone, Copy)]
struct Totals {
    issued: u64,
    pending: u64,
    sync: u64,
    callbacks: u64,
}

impl Totals {
    fn add(&mut self, ops: &Ops) {
        let (issued, pending, sync, _, callbacks) = ops.snapshot();
        self.issued += issued;
        self.pending += pending;
        self.sync += sync;
        self.callbacks += callbacks;
    }
}

// ---------------------------------------------------------------------------------------
// Many connections: an echo server and N clients, all library sockets, all driven from
// callbacks on the reactor thread once started.
// ---------------------------------------------------------------------------------------

const POOL: usize = 256 * 1024;
const MAX_MESSAGE: usize = 64 * 1024;
const CLIENT_BUFFER: usize = 16 * 1024;
const ACCEPTORS: usize = 8;
/// Connections handshaken but not yet accepted, at most (well under the listen backlog, so
/// no SYN or final ACK is dropped and nobody waits for a retransmission).
const CONNECT_WINDOW: usize = 256;

enum Event {
    ClientDone { id: usize, bytes: u64 },
    ServerDone { bytes: u64 },
    AcceptStopped,
    Failed(String),
}

#[derive(Default)]
struct Progress {
    connects: usize,
    connected: usize,
    accepted: usize,
}

/// What every connection of one round shares.
struct Round {
    pool: Vec<u8>,
    messages: usize,
    seed: u64,
    events: Sender<Event>,
    progress: Mutex<Progress>,
    changed: Condvar,
    /// Server connections, for the final count check. Cleared at the end of the round (each
    /// holds the round: the cycle is broken there).
    servers: Mutex<Vec<Arc<ServerConn>>>,
    stop: AtomicBool,
}

impl Round {
    fn fail(&self, what: String) {
        self.stop.store(true, SeqCst);
        let _ = self.events.send(Event::Failed(what));
        self.changed.notify_all();
    }

    fn bump(&self, f: impl FnOnce(&mut Progress)) {
        f(&mut self.progress.lock().unwrap_or_else(PoisonError::into_inner));
        self.changed.notify_all();
    }

    /// The pool at `off`, as the mutable pointer set_buffer takes (sends only read it).
    fn pool_at(&self, off: usize) -> *mut u8 {
        self.pool.as_ptr().wrapping_add(off) as *mut u8
    }
}

/// A message size from 1 B to 64 KiB: half uniform, half spread evenly over the powers of
/// two (so small messages are common too), and now and then exactly 64 KiB.
fn message_size(rng: &mut Rng) -> usize {
    match rng.below(16) {
        0 => MAX_MESSAGE,
        1..=7 => 1 + rng.below(MAX_MESSAGE),
        _ => {
            let bits = rng.below(17);
            1 + rng.below(1 << bits)
        }
    }
}

fn reject_text(r: &Reject) -> String {
    format!("{:?} ({:?}): {}", r.status, r.socket_error, r.message)
}

#[derive(Clone, Copy)]
enum ClientStep {
    Start,
    SendDone,
    Receive,
    ReceiveDone,
    Idle,
}

struct ClientState {
    rng: Rng,
    index: usize,
    off: usize,
    len: usize,
    sent: bool,
    echoed: usize,
    finishing: bool,
    bytes: u64,
}

/// A client: sends a message, receives its echo (both at once, on two args), then the next;
/// after the last it shuts down sending and waits for the server's end of stream.
struct Client {
    id: usize,
    round: Arc<Round>,
    socket: Arc<Socket>,
    send: OnceLock<Weak<Args>>,
    recv: OnceLock<Weak<Args>>,
    send_ops: Ops,
    recv_ops: Ops,
    buffer: RawMem,
    state: Mutex<ClientState>,
}

impl Client {
    fn state(&self) -> MutexGuard<'_, ClientState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn args(&self, which: &OnceLock<Weak<Args>>) -> Result<Arc<Args>, String> {
        which
            .get()
            .and_then(Weak::upgrade)
            .ok_or_else(|| "args gone".to_string())
    }

    fn connected(&self, a: &Args) {
        if a.socket_error() != 0 {
            self.round.fail(format!(
                "client {}: connect completed with {}",
                self.id,
                a.socket_error()
            ));
            return;
        }
        self.round.bump(|p| p.connected += 1);
    }

    fn drive(&self, mut step: ClientStep) {
        // Bounded: a message takes a few steps per receive, and each receive moves >= 1 byte.
        for _ in 0..(self.round.messages + 2) * (MAX_MESSAGE + 8) {
            if self.round.stop.load(SeqCst) {
                return;
            }
            match self.step(step) {
                Ok(ClientStep::Idle) => return,
                Ok(next) => step = next,
                Err(e) => return self.round.fail(format!("client {}: {e}", self.id)),
            }
        }
        self.round
            .fail(format!("client {}: step limit reached", self.id));
    }

    /// After a send or an echo finished: the next message once both have.
    fn advance(st: &mut ClientState) -> ClientStep {
        if st.sent && st.echoed == st.len {
            st.sent = false;
            st.index += 1;
            ClientStep::Start
        } else {
            ClientStep::Idle
        }
    }

    fn step(&self, step: ClientStep) -> Result<ClientStep, String> {
        match step {
            ClientStep::Start => {
                let next = {
                    let mut st = self.state();
                    if st.index == self.round.messages {
                        st.finishing = true;
                        None
                    } else {
                        let len = message_size(&mut st.rng);
                        let off = st.rng.below(POOL - len + 1);
                        (st.off, st.len, st.sent, st.echoed) = (off, len, false, 0);
                        Some((off, len))
                    }
                };
                let Some((off, len)) = next else {
                    self.socket
                        .shutdown(ShutdownHow::Send)
                        .map_err(|r| format!("shutdown: {}", reject_text(&r)))?;
                    return Ok(ClientStep::Receive);
                };
                let a = self.args(&self.send)?;
                a.set_buffer(self.round.pool_at(off), len)
                    .map_err(|r| format!("set_buffer (send): {}", reject_text(&r)))?;
                let pending = self
                    .send_ops
                    .issue(|| self.socket.send_async(&a))
                    .map_err(|r| format!("send rejected: {}", reject_text(&r)))?;
                if !pending {
                    match self.step(ClientStep::SendDone)? {
                        ClientStep::Idle => {}
                        _ => return Err("a send finished a message before its echo".into()),
                    }
                }
                Ok(ClientStep::Receive)
            }
            ClientStep::SendDone => {
                let a = self.args(&self.send)?;
                let (n, err) = (a.bytes_transferred(), a.socket_error());
                let mut st = self.state();
                if err != 0 || n != st.len {
                    return Err(format!(
                        "message {}: send completed with error {err}, {n} of {} bytes",
                        st.index, st.len
                    ));
                }
                st.sent = true;
                st.bytes += n as u64;
                Ok(Client::advance(&mut st))
            }
            ClientStep::Receive => {
                let a = self.args(&self.recv)?;
                a.set_buffer(self.buffer.ptr, self.buffer.len)
                    .map_err(|r| format!("set_buffer (receive): {}", reject_text(&r)))?;
                let pending = self
                    .recv_ops
                    .issue(|| self.socket.receive_async(&a))
                    .map_err(|r| format!("receive rejected: {}", reject_text(&r)))?;
                Ok(if pending {
                    ClientStep::Idle
                } else {
                    ClientStep::ReceiveDone
                })
            }
            ClientStep::ReceiveDone => {
                let a = self.args(&self.recv)?;
                let (n, err) = (a.bytes_transferred(), a.socket_error());
                let mut st = self.state();
                if err != 0 {
                    return Err(format!(
                        "message {}: receive completed with error {err}",
                        st.index
                    ));
                }
                if st.finishing {
                    if n != 0 {
                        return Err(format!("{n} bytes arrived after the last echo"));
                    }
                    let bytes = st.bytes;
                    drop(st);
                    self.socket.close();
                    let _ = self
                        .round
                        .events
                        .send(Event::ClientDone { id: self.id, bytes });
                    return Ok(ClientStep::Idle);
                }
                if n == 0 {
                    return Err(format!(
                        "message {}: end of stream after {} of {} echoed bytes",
                        st.index, st.echoed, st.len
                    ));
                }
                if n > self.buffer.len || st.echoed + n > st.len {
                    return Err(format!(
                        "message {}: received {n} bytes with {} of {} echoed: more than was sent",
                        st.index, st.echoed, st.len
                    ));
                }
                // SAFETY: the receive completed; nothing writes into the buffer now.
                let got = unsafe { self.buffer.bytes(n) };
                let start = st.off + st.echoed;
                if got != &self.round.pool[start..start + n] {
                    let at = got
                        .iter()
                        .zip(&self.round.pool[start..])
                        .position(|(a, b)| a != b)
                        .unwrap_or(0);
                    return Err(format!(
                        "message {} ({} bytes): echoed byte {} differs from the byte sent",
                        st.index,
                        st.len,
                        st.echoed + at
                    ));
                }
                st.echoed += n;
                Ok(if st.echoed < st.len {
                    ClientStep::Receive
                } else {
                    Client::advance(&mut st)
                })
            }
            ClientStep::Idle => Ok(ClientStep::Idle),
        }
    }
}

fn client_args(client: &Arc<Client>, send_side: bool) -> Arc<Args> {
    let c = Arc::clone(client);
    Arc::new(Args::new(
        Box::new(move |_, a| {
            let ops = if send_side { &c.send_ops } else { &c.recv_ops };
            if let Err(e) = ops.callback() {
                return c.round.fail(format!("client {}: {e}", c.id));
            }
            let op = a.last_operation();
            if send_side && op == AsyncOperation::Connect as i32 {
                c.connected(a);
            } else if send_side && op == AsyncOperation::Send as i32 {
                c.drive(ClientStep::SendDone);
            } else if !send_side && op == AsyncOperation::Receive as i32 {
                c.drive(ClientStep::ReceiveDone);
            } else {
                c.round
                    .fail(format!("client {}: callback for operation {op}", c.id));
            }
        }),
        client.id,
    ))
}

#[derive(Clone, Copy)]
enum ServerStep {
    Receive,
    ReceiveDone,
    Send,
    SendDone,
    Idle,
}

/// The server end of a connection: receive, send back what came, again, until end of stream;
/// then close. One args object alternates between the two.
struct ServerConn {
    round: Arc<Round>,
    socket: Mutex<Option<Arc<Socket>>>,
    buffer: RawMem,
    ops: Ops,
    echoed: AtomicU64,
}

impl ServerConn {
    fn drive(&self, s: &Arc<Socket>, a: &Arc<Args>, mut step: ServerStep) {
        for _ in 0..(self.round.messages + 2) * (MAX_MESSAGE + 8) * 2 {
            if self.round.stop.load(SeqCst) {
                return;
            }
            match self.step(s, a, step) {
                Ok(ServerStep::Idle) => return,
                Ok(next) => step = next,
                Err(e) => return self.round.fail(format!("server: {e}")),
            }
        }
        self.round.fail("server: step limit reached".into());
    }

    fn step(&self, s: &Arc<Socket>, a: &Arc<Args>, step: ServerStep) -> Result<ServerStep, String> {
        let pending_or = |result: Result<bool, Reject>, done: ServerStep| match result {
            Ok(true) => Ok(ServerStep::Idle),
            Ok(false) => Ok(done),
            Err(r) => Err(format!("operation rejected: {}", reject_text(&r))),
        };
        match step {
            ServerStep::Receive => {
                a.set_buffer(self.buffer.ptr, self.buffer.len)
                    .map_err(|r| reject_text(&r))?;
                pending_or(
                    self.ops.issue(|| s.receive_async(a)),
                    ServerStep::ReceiveDone,
                )
            }
            ServerStep::ReceiveDone => {
                let (n, err) = (a.bytes_transferred(), a.socket_error());
                if err != 0 {
                    return Err(format!("receive completed with error {err}"));
                }
                if n == 0 {
                    s.close();
                    drop(
                        self.socket
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .take(),
                    );
                    let bytes = self.echoed.load(SeqCst);
                    let _ = self.round.events.send(Event::ServerDone { bytes });
                    return Ok(ServerStep::Idle);
                }
                if n > self.buffer.len {
                    return Err(format!("received {n} bytes into {}", self.buffer.len));
                }
                a.set_buffer(self.buffer.ptr, n)
                    .map_err(|r| reject_text(&r))?;
                Ok(ServerStep::Send)
            }
            ServerStep::Send => {
                pending_or(self.ops.issue(|| s.send_async(a)), ServerStep::SendDone)
            }
            ServerStep::SendDone => {
                let (n, err) = (a.bytes_transferred(), a.socket_error());
                if err != 0 || n != a.count() {
                    return Err(format!(
                        "echo send completed with error {err}, {n} of {} bytes",
                        a.count()
                    ));
                }
                self.echoed.fetch_add(n as u64, SeqCst);
                Ok(ServerStep::Receive)
            }
            ServerStep::Idle => Ok(ServerStep::Idle),
        }
    }
}

/// Starts serving a connection just accepted (on the reactor thread or the caller's).
fn serve(round: &Arc<Round>, s: Arc<Socket>, index: usize) {
    let size = 512 + Rng::new(round.seed ^ ((index as u64) << 20)).below(CLIENT_BUFFER - 511);
    let conn = Arc::new(ServerConn {
        round: Arc::clone(round),
        socket: Mutex::new(Some(Arc::clone(&s))),
        buffer: RawMem::new(size),
        ops: Ops::default(),
        echoed: AtomicU64::new(0),
    });
    round
        .servers
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Arc::clone(&conn));
    let c = Arc::clone(&conn);
    let a = Arc::new(Args::new(
        Box::new(move |s, a| {
            if let Err(e) = c.ops.callback() {
                return c.round.fail(format!("server: {e}"));
            }
            let op = a.last_operation();
            let step = if op == AsyncOperation::Receive as i32 {
                ServerStep::ReceiveDone
            } else if op == AsyncOperation::Send as i32 {
                ServerStep::SendDone
            } else {
                return c.round.fail(format!("server: callback for operation {op}"));
            };
            c.drive(s, a, step);
        }),
        0,
    ));
    conn.drive(&s, &a, ServerStep::Receive);
}

struct Acceptor {
    round: Arc<Round>,
    ops: Ops,
}

/// Accepts until the listener closes. `completed`: the args hold a completion to handle
/// first (called from the callback).
fn accept_loop(acc: &Acceptor, listener: &Arc<Socket>, a: &Arc<Args>, mut completed: bool) {
    let round = &acc.round;
    for _ in 0..1_000_000 {
        if !completed {
            match acc.ops.issue(|| listener.accept_async(a)) {
                Ok(true) => return,
                Ok(false) => {}
                Err(r) if r.status == sockasync::error::Status::Disposed => {
                    let _ = round.events.send(Event::AcceptStopped);
                    return;
                }
                Err(r) => return round.fail(format!("accept rejected: {}", reject_text(&r))),
            }
        }
        completed = false;
        let err = a.socket_error();
        if err == SocketError::OperationAborted as i32 {
            let _ = round.events.send(Event::AcceptStopped);
            return;
        }
        if err != 0 {
            return round.fail(format!("accept completed with error {err}"));
        }
        let raw = a.accept_socket();
        if raw.is_null() {
            return round.fail("a successful accept handed out no socket".into());
        }
        // SAFETY: a completed accept hands the caller one strong reference, read once here.
        let s = unsafe { Arc::from_raw(raw) };
        let index = {
            let mut p = round
                .progress
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            p.accepted += 1;
            p.accepted
        };
        round.changed.notify_all();
        serve(round, s, index);
    }
    round.fail("accept loop limit reached".into());
}

/// Raises RLIMIT_NOFILE's soft limit to the hard one (and the hard one too if allowed) and
/// returns the soft limit now in force.
fn raise_nofile(need: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid out-pointer.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    if lim.rlim_max < need {
        let higher = libc::rlimit {
            rlim_cur: need,
            rlim_max: need,
        };
        // SAFETY: a valid rlimit; raising the hard limit fails harmlessly without privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &higher) } == 0 {
            return need;
        }
    }
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: a valid rlimit, soft raised to hard: always allowed.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    }
    lim.rlim_cur
}

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as u64)
        .unwrap_or(0)
}

/// How many connections fit in the descriptor limit (two descriptors each), at most `wanted`.
fn connections_that_fit(wanted: usize) -> usize {
    let limit = raise_nofile(2 * wanted as u64 + 64);
    let room = limit.saturating_sub(open_fds() + 32) / 2;
    if (room as usize) < wanted {
        eprintln!(
            "stress: !! RLIMIT_NOFILE is {limit} (the hard limit; raising it was refused): \
             {room} connections fit, not the {wanted} asked for: running {room}"
        );
        room as usize
    } else {
        wanted
    }
}

struct RoundStats {
    connections: usize,
    messages: usize,
    bytes: u64,
    totals: Totals,
    connect_phase: Duration,
    echo_phase: Duration,
}

fn wait_progress(round: &Round, what: &str, mut until: impl FnMut(&Progress) -> bool) {
    let start = Instant::now();
    let mut p = round
        .progress
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    while !until(&p) && !round.stop.load(SeqCst) {
        let (guard, _) = round
            .changed
            .wait_timeout(p, Duration::from_secs(1))
            .unwrap_or_else(PoisonError::into_inner);
        p = guard;
        assert!(
            start.elapsed() < HANG,
            "hang: {what}: {} connects, {} connected, {} accepted after {HANG:?}",
            p.connects,
            p.connected,
            p.accepted
        );
    }
}

fn failure(rx: &Receiver<Event>) -> String {
    for e in rx.try_iter() {
        if let Event::Failed(what) = e {
            return what;
        }
    }
    "stopped without a reason".into()
}

/// One round: `connections` clients connect to one listener (all open at once), then each
/// echoes `messages` messages of random sizes; every byte is checked, and so is every count.
fn echo_round(connections: usize, messages: usize, seed: u64) -> RoundStats {
    let (tx, rx) = channel();
    let round = Arc::new(Round {
        pool: random_pool(POOL, seed),
        messages,
        seed,
        events: tx,
        progress: Mutex::new(Progress::default()),
        changed: Condvar::new(),
        servers: Mutex::new(Vec::with_capacity(connections)),
        stop: AtomicBool::new(false),
    });
    let listener = Socket::create(2, 1, 6).expect("listener");
    listener
        .bind("127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap())
        .unwrap();
    listener.listen(4096).unwrap();
    let addr: SocketAddr = listener.local_endpoint().unwrap();

    let acceptors: Vec<(Arc<Acceptor>, Arc<Args>)> = (0..ACCEPTORS)
        .map(|_| {
            let acc = Arc::new(Acceptor {
                round: Arc::clone(&round),
                ops: Ops::default(),
            });
            let c = Arc::clone(&acc);
            let a = Arc::new(Args::new(
                Box::new(move |l, a| {
                    if let Err(e) = c.ops.callback() {
                        return c.round.fail(format!("acceptor: {e}"));
                    }
                    accept_loop(&c, l, a, true);
                }),
                0,
            ));
            accept_loop(&acc, &listener, &a, false);
            (acc, a)
        })
        .collect();

    // Connect everyone, a window at a time; nobody sends until all are connected, so all
    // the connections are open at once.
    let started = Instant::now();
    let mut rng = Rng::new(seed);
    let mut clients: Vec<(Arc<Client>, Arc<Args>, Arc<Args>)> = Vec::with_capacity(connections);
    for id in 0..connections {
        wait_progress(&round, "connect window", |p| {
            p.connects - p.accepted.min(p.connects) < CONNECT_WINDOW
        });
        if round.stop.load(SeqCst) {
            panic!("{}", failure(&rx));
        }
        round.bump(|p| p.connects += 1);
        let socket = Socket::create(2, 1, 6)
            .unwrap_or_else(|r| panic!("creating client {id}: {}", reject_text(&r)));
        let client = Arc::new(Client {
            id,
            round: Arc::clone(&round),
            socket,
            send: OnceLock::new(),
            recv: OnceLock::new(),
            send_ops: Ops::default(),
            recv_ops: Ops::default(),
            buffer: RawMem::new(CLIENT_BUFFER),
            state: Mutex::new(ClientState {
                rng: Rng::new(rng.next()),
                index: 0,
                off: 0,
                len: 0,
                sent: false,
                echoed: 0,
                finishing: false,
                bytes: 0,
            }),
        });
        let send = client_args(&client, true);
        let recv = client_args(&client, false);
        let _ = client.send.set(Arc::downgrade(&send));
        let _ = client.recv.set(Arc::downgrade(&recv));
        send.set_remote_endpoint(Some(addr)).unwrap();
        match client.send_ops.issue(|| client.socket.connect_async(&send)) {
            Ok(true) => {}
            Ok(false) => client.connected(&send),
            Err(r) => panic!("connect {id} rejected: {}", reject_text(&r)),
        }
        clients.push((client, send, recv));
    }
    wait_progress(&round, "all connected and accepted", |p| {
        p.connected == connections && p.accepted == connections
    });
    if round.stop.load(SeqCst) {
        panic!("{}", failure(&rx));
    }
    let connect_phase = started.elapsed();

    // Go: each client's first message from here; the rest runs on callbacks.
    let started = Instant::now();
    for (client, _, _) in &clients {
        client.drive(ClientStep::Start);
    }
    let mut client_done = vec![false; connections];
    let (mut clients_left, mut servers_left) = (connections, connections);
    let (mut client_bytes, mut server_bytes) = (0u64, 0u64);
    // A round of many long connections may go minutes without a connection finishing: the
    // hang detector watches for any operation or callback instead.
    let mut last_activity = (ACTIVITY.load(SeqCst), Instant::now());
    while clients_left + servers_left > 0 {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(Event::ClientDone { id, bytes }) => {
                assert!(!client_done[id], "client {id} finished twice");
                client_done[id] = true;
                clients_left -= 1;
                client_bytes += bytes;
            }
            Ok(Event::ServerDone { bytes }) => {
                servers_left -= 1;
                server_bytes += bytes;
            }
            Ok(Event::AcceptStopped) => panic!("an acceptor stopped before the end"),
            Ok(Event::Failed(what)) => panic!("{what}"),
            Err(_) => {
                let now = ACTIVITY.load(SeqCst);
                if now != last_activity.0 {
                    last_activity = (now, Instant::now());
                    continue;
                }
                if last_activity.1.elapsed() < HANG {
                    continue;
                }
                let stuck: Vec<usize> = (0..connections).filter(|i| !client_done[*i]).collect();
                panic!(
                    "hang: no operation started or completed for {HANG:?}; {clients_left} \
                     clients and {servers_left} servers unfinished (clients {:?}...)",
                    &stuck[..stuck.len().min(10)]
                );
            }
        }
    }
    let echo_phase = started.elapsed();
    assert_eq!(client_bytes, server_bytes, "bytes sent = bytes echoed");

    // Closing the listener aborts the accepts still pending: their callbacks come through
    // the reactor after everything before, which also serves as a fence for late callbacks.
    listener.close();
    for _ in 0..ACCEPTORS {
        match rx.recv_timeout(HANG) {
            Ok(Event::AcceptStopped) => {}
            Ok(Event::Failed(what)) => panic!("{what}"),
            Ok(_) => panic!("an event after every connection had finished"),
            Err(_) => panic!("hang: the pending accepts were not aborted by close"),
        }
    }

    let mut totals = Totals::default();
    let mut problems = Vec::new();
    for (acc, a) in &acceptors {
        problems.extend(acc.ops.settled("acceptor").err());
        assert!(!a.is_in_flight());
        totals.add(&acc.ops);
    }
    for (client, send, recv) in &clients {
        problems.extend(
            client
                .send_ops
                .settled(&format!("client {} send", client.id))
                .err(),
        );
        problems.extend(
            client
                .recv_ops
                .settled(&format!("client {} receive", client.id))
                .err(),
        );
        assert!(!send.is_in_flight() && !recv.is_in_flight());
        totals.add(&client.send_ops);
        totals.add(&client.recv_ops);
    }
    let servers = std::mem::take(&mut *round.servers.lock().unwrap());
    assert_eq!(servers.len(), connections);
    for s in &servers {
        problems.extend(s.ops.settled("server").err());
        totals.add(&s.ops);
    }
    assert!(
        problems.is_empty(),
        "{} args with wrong counts, e.g. {:?}",
        problems.len(),
        &problems[..problems.len().min(5)]
    );
    assert_eq!(totals.pending, totals.callbacks);
    assert!(rx.try_recv().is_err(), "no event after the end");
    RoundStats {
        connections,
        messages,
        bytes: client_bytes,
        totals,
        connect_phase,
        echo_phase,
    }
}

fn sizes() -> (usize, usize) {
    let connections = env_number("SOCKASYNC_STRESS_CONNECTIONS", 500) as usize;
    let messages = env_number("SOCKASYNC_STRESS_MESSAGES", 20) as usize;
    assert!(connections > 0);
    (connections_that_fit(connections), messages)
}

fn report(stats: &RoundStats) {
    let t = stats.totals;
    eprintln!(
        "stress: {} connections open at once, {} messages each: {:.1} MB echoed; connect \
         {:.2} s, echo {:.2} s; {} operations: {} completed at once, {} pending = {} callbacks",
        stats.connections,
        stats.messages,
        stats.bytes as f64 / 1e6,
        stats.connect_phase.as_secs_f64(),
        stats.echo_phase.as_secs_f64(),
        t.issued,
        t.sync,
        t.pending,
        t.callbacks
    );
}

#[test]
fn many_connections_echo_at_once_byte_exact_with_one_callback_per_pending_operation() {
    let _serial = serial();
    let (connections, messages) = sizes();
    let stats = echo_round(connections, messages, seed());
    report(&stats);
    assert!(
        stats.totals.pending > 0,
        "some operations went pending: the callback path was exercised"
    );
}

/// Resident set size in bytes, from /proc/self/statm.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf with a valid name.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

#[test]
fn soak_repeats_the_echo_round_and_rss_stays_flat() {
    let minutes = env_number("SOCKASYNC_SOAK_MINUTES", 0);
    if minutes == 0 {
        eprintln!("soak: off (set SOCKASYNC_SOAK_MINUTES=N to run it for N minutes)");
        return;
    }
    let _serial = serial();
    let (connections, messages) = sizes();
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let before = rss();
    // One round first: allocator arenas, the reactor's buffers and the like reach their
    // working size; the soak's growth is measured from there.
    report(&echo_round(connections, messages, seed()));
    let start = rss();
    eprintln!(
        "soak: {minutes} min of rounds of {connections} connections x {messages} messages; \
         RSS before the first round {:.1} MiB, at the start of the soak {:.1} MiB",
        mib(before),
        mib(start)
    );
    let began = Instant::now();
    let until = began + Duration::from_secs(minutes * 60);
    let mut rounds = 0u64;
    let mut last_print = began;
    while Instant::now() < until && rounds < 1_000_000 {
        let stats = echo_round(connections, messages, seed().wrapping_add(rounds + 1));
        rounds += 1;
        if last_print.elapsed() >= Duration::from_secs(60) {
            last_print = Instant::now();
            eprintln!(
                "soak: {:.1} min, {rounds} rounds, RSS {:.1} MiB (last round: echo {:.2} s)",
                began.elapsed().as_secs_f64() / 60.0,
                mib(rss()),
                stats.echo_phase.as_secs_f64()
            );
        }
    }
    let end = rss();
    let bound = start + start / 5 + 8 * 1024 * 1024;
    eprintln!(
        "soak: done: {rounds} rounds in {:.1} min; RSS start {:.1} MiB, end {:.1} MiB \
         (bound: start x 1.2 + 8 MiB = {:.1} MiB)",
        began.elapsed().as_secs_f64() / 60.0,
        mib(start),
        mib(end),
        mib(bound)
    );
    assert!(rounds > 0);
    assert!(
        end <= bound,
        "RSS grew from {start} to {end} bytes over the soak"
    );
}

// ---------------------------------------------------------------------------------------
// Eight application threads on shared sockets.
// ---------------------------------------------------------------------------------------

/// What a callback saw, tagged with the args' index.
#[derive(Debug)]
struct Completed {
    index: usize,
    bytes: usize,
    error: i32,
}

/// Args whose callback reports to `tx`, tagged `index`, and counts itself.
fn args_to(tx: &Sender<Completed>, index: usize, callbacks: &Arc<AtomicU64>) -> Arc<Args> {
    let tx = Mutex::new(tx.clone());
    let callbacks = Arc::clone(callbacks);
    Arc::new(Args::new(
        Box::new(move |_, a| {
            callbacks.fetch_add(1, SeqCst);
            let _ = tx.lock().unwrap().send(Completed {
                index,
                bytes: a.bytes_transferred(),
                error: a.socket_error(),
            });
        }),
        index,
    ))
}

/// A connected pair of library sockets (client, accepted).
fn library_pair() -> (Arc<Socket>, Arc<Socket>) {
    let (tx, rx) = channel();
    let callbacks = Arc::new(AtomicU64::new(0));
    let l = Socket::create(2, 1, 6).unwrap();
    l.bind("127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap())
        .unwrap();
    l.listen(4).unwrap();
    let accept = args_to(&tx, 0, &callbacks);
    let accept_pending = l.accept_async(&accept).unwrap();
    let c = Socket::create(2, 1, 6).unwrap();
    let connect = args_to(&tx, 1, &callbacks);
    connect
        .set_remote_endpoint(Some(l.local_endpoint().unwrap()))
        .unwrap();
    let connect_pending = c.connect_async(&connect).unwrap();
    for _ in 0..(accept_pending as usize + connect_pending as usize) {
        let done = rx.recv_timeout(WAIT).expect("accept/connect callback");
        assert_eq!(done.error, 0, "{done:?}");
    }
    assert_eq!((accept.socket_error(), connect.socket_error()), (0, 0));
    let raw = accept.accept_socket();
    assert!(!raw.is_null());
    // SAFETY: the accept handed us one strong reference.
    let server = unsafe { Arc::from_raw(raw) };
    l.close();
    (c, server)
}

/// Issues on `a` and waits for the result, whichever way it completes.
fn run_op(
    op: impl FnOnce() -> Result<bool, Reject>,
    a: &Args,
    rx: &Receiver<Completed>,
    pending: &mut u64,
) -> (usize, i32) {
    if op().expect("accepted") {
        *pending += 1;
        let c = rx.recv_timeout(WAIT).expect("hang: no callback");
        (c.bytes, c.error)
    } else {
        (a.bytes_transferred(), a.socket_error())
    }
}

const RECORD_MAGIC: u32 = 0x5EC0_4D5A;
const RECORD_HEADER: usize = 16;

/// Where a record's body comes from in the pool: a function of (thread, sequence, length).
fn body_offset(thread: u32, seq: u32, len: usize) -> usize {
    let mut rng = Rng::new((((thread as u64) << 32) | seq as u64) ^ 0xB0D1);
    rng.below(POOL - len + 1)
}

/// Reads `records` records from `s` and checks each is whole, from a known thread, in that
/// thread's order, with the body it was sent with.
fn read_records(s: Arc<Socket>, pool: Arc<Vec<u8>>, threads: &[u32], records: usize) -> u64 {
    let (tx, rx) = channel();
    let callbacks = Arc::new(AtomicU64::new(0));
    let a = args_to(&tx, 0, &callbacks);
    let buffer = RawMem::new(64 * 1024);
    let mut pending = 0;
    let mut stream: Vec<u8> = Vec::new();
    let mut offset = 0usize;
    let mut next = vec![0u32; threads.len()];
    let mut seen = 0;
    let deadline = Instant::now() + HANG;
    while seen < records * threads.len() {
        assert!(
            Instant::now() < deadline,
            "records still missing after {HANG:?}"
        );
        a.set_buffer(buffer.ptr, buffer.len).unwrap();
        let (n, err) = run_op(|| s.receive_async(&a), &a, &rx, &mut pending);
        assert_eq!(err, 0, "receive");
        assert!(n > 0, "end of stream after {seen} records");
        // SAFETY: the receive completed.
        stream.extend_from_slice(unsafe { buffer.bytes(n) });
        while stream.len() >= RECORD_HEADER {
            let word = |i: usize| u32::from_le_bytes(stream[i * 4..i * 4 + 4].try_into().unwrap());
            let (magic, thread, seq, len) = (word(0), word(1), word(2), word(3) as usize);
            assert_eq!(
                magic, RECORD_MAGIC,
                "stream offset {offset}: no record starts here: sends interleaved"
            );
            let t = threads
                .iter()
                .position(|x| *x == thread)
                .unwrap_or_else(|| panic!("stream offset {offset}: unknown thread {thread}"));
            if stream.len() < RECORD_HEADER + len {
                break;
            }
            assert_eq!(
                seq, next[t],
                "thread {thread}'s records arrive in its order"
            );
            let off = body_offset(thread, seq, len);
            assert!(
                stream[RECORD_HEADER..RECORD_HEADER + len] == pool[off..off + len],
                "record {seq} of thread {thread} is not whole and unbroken"
            );
            next[t] += 1;
            seen += 1;
            offset += RECORD_HEADER + len;
            stream.drain(..RECORD_HEADER + len);
        }
    }
    assert!(stream.is_empty(), "bytes after the last record");
    assert_eq!(next, vec![records as u32; threads.len()]);
    drop(a);
    let total_callbacks = callbacks.load(SeqCst);
    assert_eq!(
        total_callbacks, pending,
        "reader: one callback per pending receive"
    );
    pending
}

/// Sends `records` records tagged `thread` on `s`, keeping up to `depth` sends in flight,
/// each on its own args and buffer. Returns (pending sends, callbacks).
fn send_records(
    s: Arc<Socket>,
    pool: Arc<Vec<u8>>,
    thread: u32,
    records: usize,
    depth: usize,
    go: Arc<Barrier>,
) -> (u64, u64) {
    let (tx, rx) = channel();
    let callbacks = Arc::new(AtomicU64::new(0));
    let slots: Vec<Arc<Args>> = (0..depth).map(|i| args_to(&tx, i, &callbacks)).collect();
    let mut buffers: Vec<Option<Vec<u8>>> = (0..depth).map(|_| None).collect();
    let mut busy = vec![None::<usize>; depth];
    let mut pending = 0u64;
    let mut rng = Rng::new(seed() ^ ((thread as u64 + 1) * 0x1234_5678));
    let check = |slot: usize, expect: usize, bytes: usize, error: i32| {
        assert_eq!(
            (bytes, error),
            (expect, 0),
            "thread {thread}: a send completes whole (slot {slot})"
        );
    };
    // Waits for a pending send's callback, which may be another slot's: callbacks of one
    // socket's sends come in order, but we only need the slot to be free.
    let wait_one = |busy: &mut Vec<Option<usize>>| {
        let c = rx
            .recv_timeout(WAIT)
            .expect("hang: a pending send never completed");
        let expect = busy[c.index]
            .take()
            .expect("a callback for an idle args: ran twice?");
        check(c.index, expect, c.bytes, c.error);
    };
    go.wait();
    for seq in 0..records {
        let slot = seq % depth;
        while busy[slot].is_some() {
            wait_one(&mut busy);
        }
        let len = match rng.below(4) {
            0 => 1 + rng.below(64),
            1 => 1 + rng.below(4096),
            _ => 1 + rng.below(48 * 1024),
        };
        let off = body_offset(thread, seq as u32, len);
        let mut record = Vec::with_capacity(RECORD_HEADER + len);
        for word in [RECORD_MAGIC, thread, seq as u32, len as u32] {
            record.extend_from_slice(&word.to_le_bytes());
        }
        record.extend_from_slice(&pool[off..off + len]);
        let total = record.len();
        let a = &slots[slot];
        a.set_buffer(record.as_mut_ptr(), total).unwrap();
        buffers[slot] = Some(record); // the heap block does not move
        if s.send_async(a).expect("send accepted") {
            pending += 1;
            busy[slot] = Some(total);
        } else {
            check(slot, total, a.bytes_transferred(), a.socket_error());
        }
    }
    while busy.iter().any(Option::is_some) {
        wait_one(&mut busy);
    }
    drop(buffers);
    (pending, callbacks.load(SeqCst))
}

#[test]
fn eight_threads_sending_on_shared_sockets_never_interleave() {
    let _serial = serial();
    let started = Instant::now();
    let (a, b) = library_pair();
    // Small send buffers: sends go pending and partly out, the case where interleaving would
    // show. (Not small receive buffers: on loopback, whose MSS is 64 KiB, a receive buffer
    // under the MSS can leave the window shut for good, a kernel stall, not the library's.)
    for s in [&a, &b] {
        s.set_option(SocketOption::SendBufferSize, 8192).unwrap();
    }
    let pool = Arc::new(random_pool(POOL, seed() ^ 0x5E4D));
    const RECORDS: usize = 600;
    const DEPTH: usize = 3;
    // Threads 0..4 send on a (read from b), threads 4..8 on b (read from a), all at once.
    let go = Arc::new(Barrier::new(8));
    let readers: Vec<_> = [(&b, [0u32, 1, 2, 3]), (&a, [4u32, 5, 6, 7])]
        .into_iter()
        .map(|(s, threads)| {
            let (s, pool) = (Arc::clone(s), Arc::clone(&pool));
            std::thread::spawn(move || read_records(s, pool, &threads, RECORDS))
        })
        .collect();
    let senders: Vec<_> = (0..8u32)
        .map(|t| {
            let s = Arc::clone(if t < 4 { &a } else { &b });
            let (pool, go) = (Arc::clone(&pool), Arc::clone(&go));
            std::thread::spawn(move || send_records(s, pool, t, RECORDS, DEPTH, go))
        })
        .collect();
    let mut pending_sends = 0;
    for t in senders {
        let (pending, callbacks) = t.join().expect("sender thread");
        assert_eq!(pending, callbacks, "one callback per pending send");
        pending_sends += pending;
    }
    let mut pending_receives = 0;
    for r in readers {
        pending_receives += r.join().expect("reader thread");
    }
    eprintln!(
        "threads: 8 threads x {RECORDS} records on 2 shared sockets (both directions) in \
         {:.2} s: {pending_sends} sends and {pending_receives} receives went pending",
        started.elapsed().as_secs_f64()
    );
    assert!(pending_sends > 0, "the queued-send path was exercised");
    a.close();
    b.close();
}

/// A receive's slot: its args and buffer.
struct Slot {
    args: Arc<Args>,
    buffer: RawMem,
}

fn receive_slots(count: usize, tx: &Sender<Completed>, rng: &mut Rng) -> Arc<Vec<Slot>> {
    let callbacks = Arc::new(AtomicU64::new(0));
    Arc::new(
        (0..count)
            .map(|i| {
                let buffer = RawMem::new(1 + rng.below(2048));
                let args = args_to(tx, i, &callbacks);
                args.set_buffer(buffer.ptr, buffer.len).unwrap();
                Slot { args, buffer }
            })
            .collect(),
    )
}

/// Takes the next receive completion, checks it succeeded and is its receive's first, and
/// records its bytes; returns which receive it was.
fn record_receive(rx: &Receiver<Completed>, results: &mut [Option<usize>]) -> usize {
    let c = rx
        .recv_timeout(WAIT)
        .expect("hang: a pending receive never completed");
    assert_eq!(c.error, 0, "receive {}", c.index);
    assert!(
        results[c.index].is_none(),
        "receive {} completed twice",
        c.index
    );
    results[c.index] = Some(c.bytes);
    c.index
}

/// Checks that receives, taken in issue order, got consecutive bytes of `stream`, at least
/// one each, then reads what is left and checks that too. `results[i]`: receive i's bytes.
fn check_fifo(s: &Arc<Socket>, slots: &[Slot], results: &[Option<usize>], stream: &[u8]) {
    let mut pos = 0;
    for (i, (slot, got)) in slots.iter().zip(results).enumerate() {
        let n = got.unwrap_or_else(|| panic!("receive {i} never completed"));
        assert!(n >= 1, "receive {i} got no bytes");
        // SAFETY: the receive completed.
        let bytes = unsafe { slot.buffer.bytes(n) };
        assert!(
            bytes == &stream[pos..pos + n],
            "receive {i} (issued {i}th) did not get the next {n} bytes at stream offset {pos}: \
             receives were not served in issue order"
        );
        pos += n;
    }
    // The rest of the stream is still there, in order.
    let (tx, rx) = channel();
    let callbacks = Arc::new(AtomicU64::new(0));
    let a = args_to(&tx, 0, &callbacks);
    let rest = RawMem::new(64 * 1024);
    let mut pending = 0;
    while pos < stream.len() {
        a.set_buffer(rest.ptr, rest.len).unwrap();
        let (n, err) = run_op(|| s.receive_async(&a), &a, &rx, &mut pending);
        assert_eq!(err, 0);
        assert!(n > 0 && pos + n <= stream.len(), "the rest of the stream");
        // SAFETY: the receive completed.
        assert!(unsafe { rest.bytes(n) } == &stream[pos..pos + n]);
        pos += n;
    }
}

#[test]
fn concurrent_receives_on_one_socket_are_served_in_issue_order() {
    let _serial = serial();
    let started = Instant::now();
    let (a, b) = library_pair();
    let mut rng = Rng::new(seed() ^ 0xF1F0);

    // Round 1: eight threads take turns issuing 384 receives (so the issue order is known)
    // before any byte is written; then the peer writes, and each receive must get the next
    // bytes in issue order.
    const THREADS: usize = 8;
    const PER_THREAD: usize = 48;
    let count = THREADS * PER_THREAD;
    let (tx, rx) = channel();
    let slots = receive_slots(count, &tx, &mut rng);
    let turn = Arc::new((Mutex::new(0usize), Condvar::new()));
    let issuers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (a, slots, turn) = (Arc::clone(&a), Arc::clone(&slots), Arc::clone(&turn));
            std::thread::spawn(move || {
                for _ in 0..PER_THREAD {
                    let (lock, cond) = &*turn;
                    let next = lock.lock().unwrap();
                    let (mut next, timeout) = cond
                        .wait_timeout_while(next, WAIT, |n| *n % THREADS != t)
                        .unwrap();
                    assert!(!timeout.timed_out(), "thread {t} never got its turn");
                    let slot = &slots[*next];
                    assert!(
                        a.receive_async(&slot.args).expect("receive accepted"),
                        "no byte was written yet: receive {} goes pending",
                        *next
                    );
                    *next += 1;
                    cond.notify_all();
                }
            })
        })
        .collect();
    for t in issuers {
        t.join().expect("issuing thread");
    }
    let total: usize = slots.iter().map(|s| s.buffer.len).sum();
    let stream = random_pool(total, seed() ^ 0x57AE);
    let (wtx, wrx) = channel();
    let wcallbacks = Arc::new(AtomicU64::new(0));
    let writer = args_to(&wtx, 0, &wcallbacks);
    writer
        .set_buffer(stream.as_ptr() as *mut u8, stream.len())
        .unwrap();
    let mut writer_pending = 0;
    let mut results = vec![None; count];
    let mut order = Vec::with_capacity(count);
    let write_pending = b.send_async(&writer).expect("write accepted");
    for _ in 0..count {
        order.push(record_receive(&rx, &mut results));
    }
    check_fifo(&a, &slots, &results, &stream);
    let (n, err) = if write_pending {
        writer_pending += 1;
        let c = wrx.recv_timeout(WAIT).expect("hang: the write");
        (c.bytes, c.error)
    } else {
        (writer.bytes_transferred(), writer.socket_error())
    };
    assert_eq!((n, err), (total, 0));
    let out_of_order = order.windows(2).filter(|w| w[0] > w[1]).count();
    eprintln!(
        "fifo: {count} receives from {THREADS} threads in turn, {total} bytes: served in \
         issue order; callbacks ran in issue order: {}",
        out_of_order == 0
    );

    // Round 2, ten times: one thread issues 512 receives while another writes the stream in
    // pieces at the same time; some complete at once, some go pending, all must be served
    // in order.
    let (mut pending, mut at_once) = (0, 0);
    for rep in 0..10 {
        let (p, s) = receives_while_writing(&a, &b, seed() ^ (0x57AF + rep));
        pending += p;
        at_once += s;
    }
    assert!(rx.try_recv().is_err(), "no extra callback");
    eprintln!(
        "fifo: 10 x 512 receives issued while the peer wrote: {pending} went pending, \
         {at_once} completed at once, all in order ({:.2} s for both rounds)",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(wcallbacks.load(SeqCst), writer_pending);
    a.close();
    b.close();
}

/// One thread issues 512 receives on `a` while another writes a stream into `b`; checks the
/// receives got it in issue order. Returns (pending, completed at once).
fn receives_while_writing(a: &Arc<Socket>, b: &Arc<Socket>, seed: u64) -> (u64, u64) {
    let count = 512;
    let (tx2, rx2) = channel();
    let mut rng = Rng::new(seed);
    let slots = receive_slots(count, &tx2, &mut rng);
    let total: usize = slots.iter().map(|s| s.buffer.len).sum();
    let stream = Arc::new(random_pool(total, seed));
    // The writer reports each piece written; the issuer lets a piece go by every 8 receives,
    // so bytes arrive while receives are being issued. (It consumes about twice what is
    // written per piece on average, so the writer never waits for the issuer for long.)
    let (ticks_tx, ticks) = channel::<()>();
    let writer = {
        let (b, stream) = (Arc::clone(b), Arc::clone(&stream));
        let mut rng = Rng::new(seed ^ 0x3173);
        std::thread::spawn(move || {
            let (tx, rx) = channel();
            let callbacks = Arc::new(AtomicU64::new(0));
            let a = args_to(&tx, 0, &callbacks);
            let mut pending = 0;
            let mut pos = 0;
            while pos < stream.len() {
                let n = (1 + rng.below(4096)).min(stream.len() - pos);
                a.set_buffer(stream.as_ptr().wrapping_add(pos) as *mut u8, n)
                    .unwrap();
                assert_eq!(run_op(|| b.send_async(&a), &a, &rx, &mut pending), (n, 0));
                pos += n;
                let _ = ticks_tx.send(());
            }
            assert_eq!(callbacks.load(SeqCst), pending);
        })
    };
    let mut results = vec![None; count];
    let mut pending = 0;
    for (i, slot) in slots.iter().enumerate() {
        if i % 8 == 0 {
            match ticks.recv_timeout(WAIT) {
                Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {}
                Err(_) => panic!("hang: the writer wrote nothing for {WAIT:?}"),
            }
        }
        if a.receive_async(&slot.args).expect("receive accepted") {
            pending += 1;
        } else {
            assert_eq!(slot.args.socket_error(), 0);
            results[i] = Some(slot.args.bytes_transferred());
        }
    }
    for _ in 0..pending {
        record_receive(&rx2, &mut results);
    }
    // Reads the rest as the writer goes on (joining first could wait for a writer waiting
    // for room in the socket buffers).
    check_fifo(a, &slots, &results, &stream);
    writer.join().expect("writer thread");
    assert!(rx2.try_recv().is_err(), "no extra callback");
    (pending, count as u64 - pending)
}
