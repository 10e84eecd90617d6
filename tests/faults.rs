//! Fault injection over loopback: peers that reset, half-close or vanish in the middle of
//! operations, close and free racing operations from other threads, descriptor exhaustion
//! (in a child process, since RLIMIT_NOFILE is process-wide), and a callback that blocks.
//!
//! What every test holds the library to: each operation that returned Ok(true) (pending)
//! completes exactly once, through its callback; one that returned Ok(false) completed on the
//! spot (no callback); one that returned Err was rejected and changed nothing. Double
//! callbacks are looked for after a reactor fence (a later completion on another socket,
//! which the single reactor thread can only deliver after anything queued before it).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use sockasync::engine::{Args, Socket, SocketOption};
use sockasync::error::{AsyncOperation, Reject, SocketError, Status};

/// Generous: a completion this late is a hang.
const WAIT: Duration = Duration::from_secs(10);

const SUCCESS: i32 = SocketError::Success as i32;
const RESET: i32 = SocketError::ConnectionReset as i32;
const SHUTDOWN: i32 = SocketError::Shutdown as i32;
const ABORTED: i32 = SocketError::OperationAborted as i32;
const TOO_MANY: i32 = SocketError::TooManyOpenSockets as i32;

/// What a callback saw.
#[derive(Debug, Clone, Copy)]
struct Completed {
    bytes: usize,
    error: i32,
    operation: i32,
    on_reactor: bool,
}

fn on_reactor() -> bool {
    std::thread::current().name() == Some("sockasync-reactor")
}

/// An args object whose callback reports to a channel and counts itself, and the number of
/// its starts that went pending: at the end the two must be equal.
struct Probe {
    args: Arc<Args>,
    rx: Receiver<Completed>,
    callbacks: Arc<AtomicU64>,
    pending: u64,
}

impl Probe {
    fn new() -> Probe {
        let (tx, rx) = channel();
        let callbacks = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&callbacks);
        let tx = Mutex::new(tx);
        let args = Arc::new(Args::new(
            Box::new(move |_, a| {
                counted.fetch_add(1, SeqCst);
                let _ = tx.lock().unwrap().send(Completed {
                    bytes: a.bytes_transferred(),
                    error: a.socket_error(),
                    operation: a.last_operation(),
                    on_reactor: on_reactor(),
                });
            }),
            0,
        ));
        Probe {
            args,
            rx,
            callbacks,
            pending: 0,
        }
    }

    fn with_buffer(buffer: &mut [u8]) -> Probe {
        let p = Probe::new();
        p.args
            .set_buffer(buffer.as_mut_ptr(), buffer.len())
            .unwrap();
        p
    }

    /// Starts an operation; true if it went pending.
    fn start(&mut self, op: impl FnOnce(&Arc<Args>) -> Result<bool, Reject>) -> bool {
        let pending = op(&self.args).expect("accepted");
        self.pending += pending as u64;
        pending
    }

    fn wait(&self) -> Completed {
        let c = self
            .rx
            .recv_timeout(WAIT)
            .expect("hang: a pending operation never completed");
        assert!(c.on_reactor, "callbacks run on the reactor thread");
        c
    }

    /// Runs an operation to its end, whichever way it completes: (bytes, error).
    fn run(&mut self, op: impl FnOnce(&Arc<Args>) -> Result<bool, Reject>) -> (usize, i32) {
        if self.start(op) {
            let c = self.wait();
            (c.bytes, c.error)
        } else {
            (self.args.bytes_transferred(), self.args.socket_error())
        }
    }

    /// After a fence: no callback beyond one per pending start, and the args are free.
    fn assert_settled(&self, who: &str) {
        if let Ok(extra) = self.rx.try_recv() {
            panic!("{who}: a callback no pending operation accounts for: {extra:?}");
        }
        assert_eq!(
            self.callbacks.load(SeqCst),
            self.pending,
            "{who}: one callback per pending operation"
        );
        assert!(
            !self.args.is_in_flight(),
            "{who}: args free after completion"
        );
    }
}

fn tcp() -> Arc<Socket> {
    Socket::create(2, 1, 6).expect("create")
}

/// A library socket connected to `listener`, and the std peer.
fn connected_to(listener: &TcpListener) -> (Arc<Socket>, TcpStream) {
    let s = tcp();
    let mut p = Probe::new();
    p.args
        .set_remote_endpoint(Some(listener.local_addr().unwrap()))
        .unwrap();
    assert_eq!(p.run(|a| s.connect_async(a)).1, SUCCESS, "connect");
    let (peer, _) = listener.accept().unwrap();
    (s, peer)
}

fn connected_to_std() -> (Arc<Socket>, TcpStream) {
    connected_to(&TcpListener::bind("127.0.0.1:0").unwrap())
}

/// Resets the connection: SO_LINGER 0, then close.
fn reset(peer: TcpStream) {
    socket2::SockRef::from(&peer)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(peer);
}

/// Returns once the reactor has delivered a completion that happened after this call: every
/// callback queued before it has run by then (one reactor thread, in order). Twice, to be
/// sure the reactor went through a whole further round of events and messages.
fn reactor_fence() {
    for _ in 0..2 {
        let (s, mut peer) = connected_to_std();
        let mut byte = [0u8; 1];
        let mut p = Probe::with_buffer(&mut byte);
        assert!(
            p.start(|a| s.receive_async(a)),
            "nothing written yet: pending"
        );
        peer.write_all(b"f").unwrap();
        assert_eq!((p.wait().bytes, byte[0]), (1, b'f'));
        s.close();
    }
}

fn random_bytes(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    seed |= 1;
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn name(code: i32) -> String {
    SocketError::ALL
        .iter()
        .find(|e| **e as i32 == code)
        .map_or_else(|| code.to_string(), |e| format!("{e:?} ({code})"))
}

// ---------------------------------------------------------------------------------------
// Peers that reset, half-close or vanish.
// ---------------------------------------------------------------------------------------

#[test]
fn peer_reset_mid_send_completes_the_send_once_with_reset_or_shutdown() {
    let (s, mut peer) = connected_to_std();
    s.set_option(SocketOption::SendBufferSize, 4096).unwrap();
    let mut data = random_bytes(16 << 20, 1);
    let total = data.len();
    let mut p = Probe::with_buffer(&mut data);
    assert!(
        p.start(|a| s.send_async(a)),
        "16 MiB cannot fit in the socket buffers: pending"
    );
    // Some of it goes out and is read, then the peer resets with the send still going.
    let mut head = vec![0u8; 256 * 1024];
    peer.read_exact(&mut head).unwrap();
    assert!(head == data[..head.len()]);
    reset(peer);
    let c = p.wait();
    assert_eq!(c.operation, AsyncOperation::Send as i32);
    assert!(
        c.error == RESET || c.error == SHUTDOWN,
        "a send cut by a reset fails with ConnectionReset or Shutdown, not {}",
        name(c.error)
    );
    assert!(
        c.bytes >= head.len() && c.bytes < total,
        "bytes transferred counts what had gone out: {} (the peer read {}, of {total})",
        c.bytes,
        head.len()
    );
    reactor_fence();
    p.assert_settled("the send");
    // The connection stays failed: the next send fails too, once, and does not hang.
    let (_, err) = p.run(|a| s.send_async(a));
    assert_ne!(err, SUCCESS, "a send after the reset");
    reactor_fence();
    p.assert_settled("the second send");
    eprintln!(
        "reset mid-send: {} after {} of {total} bytes",
        name(c.error),
        c.bytes
    );
    s.close();
}

#[test]
fn peer_reset_mid_receive_completes_the_receive_once_with_connection_reset() {
    let (s, peer) = connected_to_std();
    let mut buf = [0u8; 64];
    let mut p = Probe::with_buffer(&mut buf);
    assert!(p.start(|a| s.receive_async(a)), "nothing sent: pending");
    reset(peer);
    let c = p.wait();
    assert_eq!(c.operation, AsyncOperation::Receive as i32);
    assert_eq!(
        (c.bytes, name(c.error)),
        (0, name(RESET)),
        "a pending receive cut by a reset"
    );
    reactor_fence();
    p.assert_settled("the receive");
    s.close();
    // The same with a library socket as the peer.
    library_peer_reset_mid_receive();
}

/// Both ends library sockets; the peer sets Linger 0 and closes.
fn library_peer_reset_mid_receive() {
    let l = tcp();
    l.bind("127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap())
        .unwrap();
    l.listen(4).unwrap();
    let mut acc = Probe::new();
    let accept_pending = acc.start(|a| l.accept_async(a));
    let c = tcp();
    let mut con = Probe::new();
    con.args
        .set_remote_endpoint(Some(l.local_endpoint().unwrap()))
        .unwrap();
    assert_eq!(con.run(|a| c.connect_async(a)).1, SUCCESS);
    if accept_pending {
        assert_eq!(acc.wait().error, SUCCESS);
    }
    // SAFETY: the completed accept hands us one strong reference.
    let server = unsafe { Arc::from_raw(acc.args.accept_socket()) };
    let mut buf = [0u8; 64];
    let mut p = Probe::with_buffer(&mut buf);
    assert!(p.start(|a| c.receive_async(a)));
    server.set_option(SocketOption::Linger, 0).unwrap();
    server.close();
    let done = p.wait();
    assert_eq!(
        (done.bytes, name(done.error)),
        (0, name(RESET)),
        "library peer with Linger 0 closed"
    );
    reactor_fence();
    p.assert_settled("receive (library peer)");
    acc.assert_settled("accept");
    con.assert_settled("connect");
    c.close();
    l.close();
}

#[test]
fn peer_half_close_gives_end_of_stream_and_sends_still_work() {
    let (s, peer) = connected_to_std();
    let mut buf = [0u8; 64];
    let mut p = Probe::with_buffer(&mut buf);
    assert!(p.start(|a| s.receive_async(a)), "nothing sent: pending");
    peer.shutdown(std::net::Shutdown::Write).unwrap();
    let c = p.wait();
    assert_eq!(
        (c.bytes, c.error, c.operation),
        (0, SUCCESS, AsyncOperation::Receive as i32),
        "end of stream: Success with 0 bytes"
    );
    // End of stream stays: the next receive completes with 0 again.
    assert_eq!(p.run(|a| s.receive_async(a)), (0, SUCCESS));

    // The other direction is still open: a large send and a small one go through whole,
    // then our own end of stream.
    let data = Arc::new(random_bytes(4 << 20, 2));
    let reader = {
        let data = Arc::clone(&data);
        let mut peer = peer;
        std::thread::spawn(move || {
            peer.set_read_timeout(Some(WAIT)).unwrap();
            let mut got = vec![0u8; data.len() + 5];
            peer.read_exact(&mut got).unwrap();
            assert!(
                got[..data.len()] == *data && &got[data.len()..] == b"after",
                "bytes sent after the peer's half-close arrive whole"
            );
            assert_eq!(peer.read(&mut [0u8; 1]).unwrap(), 0, "our end of stream");
        })
    };
    let mut sp = Probe::new();
    sp.args
        .set_buffer(data.as_ptr() as *mut u8, data.len())
        .unwrap();
    assert_eq!(sp.run(|a| s.send_async(a)), (data.len(), SUCCESS));
    let mut small = *b"after";
    let mut sp2 = Probe::with_buffer(&mut small);
    assert_eq!(sp2.run(|a| s.send_async(a)), (5, SUCCESS));
    s.shutdown(sockasync::engine::ShutdownHow::Send).unwrap();
    reader.join().expect("reader");
    reactor_fence();
    p.assert_settled("receive");
    sp.assert_settled("send");
    sp2.assert_settled("small send");
    s.close();
}

#[test]
fn peer_vanishing_fails_a_send_and_the_send_queued_behind_it_once_each() {
    // Vanishing two ways: a plain close with our data unread (the kernel resets), and an
    // explicit reset (SO_LINGER 0).
    for explicit_reset in [false, true] {
        let (s, peer) = connected_to_std();
        s.set_option(SocketOption::SendBufferSize, 4096).unwrap();
        let mut first = random_bytes(16 << 20, 3);
        let mut second = random_bytes(16 << 20, 4);
        let mut a = Probe::with_buffer(&mut first);
        let mut b = Probe::with_buffer(&mut second);
        assert!(a.start(|x| s.send_async(x)), "16 MiB: pending");
        assert!(
            b.start(|x| s.send_async(x)),
            "queued behind a pending send: pending"
        );
        if explicit_reset {
            reset(peer);
        } else {
            drop(peer);
        }
        let ca = a.wait();
        let cb = b.wait();
        for (which, c, total) in [("first", ca, first.len()), ("second", cb, second.len())] {
            assert!(
                c.error == RESET || c.error == SHUTDOWN,
                "{which} send, peer {}: ConnectionReset or Shutdown, not {}",
                if explicit_reset { "reset" } else { "closed" },
                name(c.error)
            );
            assert!(c.bytes < total, "{which}: {} of {total} bytes", c.bytes);
        }
        reactor_fence();
        a.assert_settled("first send");
        b.assert_settled("second send");
        eprintln!(
            "peer vanished ({}): first send {} after {} bytes, second {} after {}",
            if explicit_reset { "reset" } else { "closed" },
            name(ca.error),
            ca.bytes,
            name(cb.error),
            cb.bytes
        );
        s.close();
    }
}

// ---------------------------------------------------------------------------------------
// Close and free racing operations.
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Connected: a receive (pends: the peer is quiet) and a small send (completes at once).
    Connected,
    /// Connected with a small send buffer: a 1 MiB send (pends) and a receive.
    BigSend,
    /// Listening: an accept (pends: nobody connects).
    Listening,
    /// A connect in flight.
    Connecting,
}

const KINDS: [Kind; 4] = [
    Kind::Connected,
    Kind::BigSend,
    Kind::Listening,
    Kind::Connecting,
];

/// The probes of the race test, by index.
const RECV: usize = 0;
const SMALL: usize = 1;
const BIG: usize = 2;
const ACCEPT: usize = 3;
const CONNECT: usize = 4;
const PROBE_NAMES: [&str; 5] = ["receive", "small send", "big send", "accept", "connect"];

#[derive(Debug)]
enum Outcome {
    Pending,
    Now(i32),
    Rejected(Status),
}

struct Job {
    kind: Kind,
    socket: Arc<Socket>,
    spin: usize,
}

fn spin(n: usize) {
    for _ in 0..n {
        std::hint::spin_loop();
    }
}

fn operate(job: Job, probes: &[Arc<Args>]) -> Vec<(usize, Outcome)> {
    let s = job.socket;
    let plan: &[usize] = match job.kind {
        Kind::Connected => &[RECV, SMALL],
        Kind::BigSend => &[BIG, RECV],
        Kind::Listening => &[ACCEPT],
        Kind::Connecting => &[CONNECT],
    };
    spin(job.spin);
    plan.iter()
        .map(|&which| {
            let a = &probes[which];
            let result = match which {
                RECV => s.receive_async(a),
                SMALL | BIG => s.send_async(a),
                ACCEPT => s.accept_async(a),
                _ => s.connect_async(a),
            };
            let outcome = match result {
                Ok(true) => Outcome::Pending,
                Ok(false) => Outcome::Now(a.socket_error()),
                Err(r) => Outcome::Rejected(r.status),
            };
            (which, outcome)
        })
        .collect()
}

#[test]
fn close_and_free_racing_operations_never_hang_and_never_complete_twice() {
    const ITERATIONS: usize = 10_000;
    let budget = Duration::from_secs(15);
    let peers = TcpListener::bind("127.0.0.1:0").unwrap();
    let connect_target = TcpListener::bind("127.0.0.1:0").unwrap();
    connect_target.set_nonblocking(true).unwrap();

    let mut small = *b"0123456789abcdef";
    let big = vec![7u8; 1 << 20];
    let mut inbox = [0u8; 64];
    let mut probes: Vec<Probe> = (0..5).map(|_| Probe::new()).collect();
    probes[RECV]
        .args
        .set_buffer(inbox.as_mut_ptr(), inbox.len())
        .unwrap();
    probes[SMALL]
        .args
        .set_buffer(small.as_mut_ptr(), small.len())
        .unwrap();
    probes[BIG]
        .args
        .set_buffer(big.as_ptr() as *mut u8, big.len())
        .unwrap();
    probes[CONNECT]
        .args
        .set_remote_endpoint(Some(connect_target.local_addr().unwrap()))
        .unwrap();
    let shared: Arc<Vec<Arc<Args>>> =
        Arc::new(probes.iter().map(|p| Arc::clone(&p.args)).collect());

    // Two threads that meet at a barrier each round: one starts operations, one closes the
    // socket and drops its handle (the engine's sock_free); random spins shift which wins.
    let barrier = Arc::new(Barrier::new(2));
    let (job_tx, job_rx) = channel::<Job>();
    let (out_tx, out_rx) = channel();
    let operator = {
        let (barrier, shared) = (Arc::clone(&barrier), Arc::clone(&shared));
        std::thread::spawn(move || {
            for job in job_rx {
                barrier.wait();
                let _ = out_tx.send(operate(job, &shared));
            }
        })
    };
    let (close_tx, close_rx) = channel::<(Arc<Socket>, usize)>();
    let (closed_tx, closed_rx) = channel();
    let closer = {
        let barrier = Arc::clone(&barrier);
        std::thread::spawn(move || {
            for (socket, n) in close_rx {
                barrier.wait();
                spin(n);
                socket.close();
                drop(socket);
                let _ = closed_tx.send(());
            }
        })
    };

    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % n) as usize
    };
    // counts[probe] = [pending, at once, rejected]; errors seen.
    let mut counts = [[0u64; 3]; 5];
    let mut pending_errors = std::collections::BTreeMap::new();
    let mut now_errors = std::collections::BTreeMap::new();
    let started = Instant::now();
    let mut done = 0;
    while done < ITERATIONS && started.elapsed() < budget {
        let kind = KINDS[done % KINDS.len()];
        let mut peer = None;
        let socket = match kind {
            Kind::Connected | Kind::BigSend => {
                let (s, p) = connected_to(&peers);
                if kind == Kind::BigSend {
                    s.set_option(SocketOption::SendBufferSize, 4096).unwrap();
                }
                peer = Some(p);
                s
            }
            Kind::Listening => {
                let l = tcp();
                l.bind("127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap())
                    .unwrap();
                l.listen(1).unwrap();
                l
            }
            Kind::Connecting => tcp(),
        };
        job_tx
            .send(Job {
                kind,
                socket: Arc::clone(&socket),
                spin: next(3000),
            })
            .unwrap();
        close_tx.send((socket, next(3000))).unwrap();
        let outcomes = out_rx
            .recv_timeout(WAIT)
            .expect("hang: the operating thread");
        closed_rx
            .recv_timeout(WAIT)
            .expect("hang: the closing thread");
        for (which, outcome) in outcomes {
            let p = &mut probes[which];
            let what = PROBE_NAMES[which];
            match outcome {
                Outcome::Pending => {
                    counts[which][0] += 1;
                    p.pending += 1;
                    let c = p.rx.recv_timeout(WAIT).unwrap_or_else(|_| {
                        panic!("iteration {done} ({kind:?}): a pending {what} never completed")
                    });
                    assert!(c.on_reactor, "callbacks run on the reactor thread");
                    assert!(
                        c.error == SUCCESS || c.error == ABORTED,
                        "iteration {done} ({kind:?}): pending {what} completed with {}",
                        name(c.error)
                    );
                    *pending_errors.entry((what, name(c.error))).or_insert(0u64) += 1;
                }
                Outcome::Now(error) => {
                    counts[which][1] += 1;
                    *now_errors.entry((what, name(error))).or_insert(0u64) += 1;
                    assert!(
                        error == SUCCESS || error == ABORTED,
                        "iteration {done} ({kind:?}): {what} completed at once with {}",
                        name(error)
                    );
                }
                Outcome::Rejected(status) => {
                    counts[which][2] += 1;
                    assert_eq!(
                        status,
                        Status::Disposed,
                        "iteration {done} ({kind:?}): {what} rejected"
                    );
                }
            }
            // Nothing more for it so far: no second callback.
            if let Ok(extra) = p.rx.try_recv() {
                panic!("iteration {done} ({kind:?}): a second callback for the {what}: {extra:?}");
            }
            assert!(
                !p.args.is_in_flight(),
                "iteration {done}: {what} args free again"
            );
        }
        drop(peer);
        // Connections the connect kind made: accept and drop them.
        for _ in 0..4 {
            if connect_target.accept().is_err() {
                break;
            }
        }
        done += 1;
    }
    drop(job_tx);
    drop(close_tx);
    operator.join().unwrap();
    closer.join().unwrap();
    reactor_fence();
    for (i, p) in probes.iter().enumerate() {
        p.assert_settled(PROBE_NAMES[i]);
    }
    eprintln!(
        "close race: {done} iterations in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for (i, c) in counts.iter().enumerate() {
        eprintln!(
            "  {:<10}: {:>5} pending, {:>5} completed at once, {:>5} rejected (Disposed)",
            PROBE_NAMES[i], c[0], c[1], c[2]
        );
    }
    eprintln!("  pending ones completed with: {pending_errors:?}");
    eprintln!("  the ones completed at once with: {now_errors:?}");
    assert!(
        done >= 1000,
        "only {done} iterations fit in {budget:?}: too slow to exercise the race"
    );
    if done < ITERATIONS {
        eprintln!("close race: !! cut short by the time budget at {done} of {ITERATIONS}");
    }
}

/// An operation that re-issues itself from its own callback until something ends it.
struct Reissuing {
    send: bool,
    buffer: Box<[u8]>,
    issued: AtomicU64,
    pending: AtomicU64,
    sync: AtomicU64,
    rejected: AtomicU64,
    callbacks: AtomicU64,
    /// Completions so far, and the count at which to say "running" (once).
    completions: AtomicU64,
    running_at: u64,
    events: Mutex<Sender<(bool, String)>>,
    endings: AtomicUsize,
}

impl Reissuing {
    fn end(&self, how: String) {
        self.endings.fetch_add(1, SeqCst);
        let _ = self.events.lock().unwrap().send((self.send, how));
    }

    /// Issues until an operation goes pending or something ends the loop; `completed`: the
    /// args hold a completion to handle first.
    fn pump(&self, s: &Arc<Socket>, a: &Arc<Args>, mut completed: bool) {
        for _ in 0..100_000 {
            if !completed {
                self.issued.fetch_add(1, SeqCst);
                let result = if self.send {
                    s.send_async(a)
                } else {
                    s.receive_async(a)
                };
                match result {
                    Ok(true) => {
                        self.pending.fetch_add(1, SeqCst);
                        return;
                    }
                    Ok(false) => {
                        self.sync.fetch_add(1, SeqCst);
                    }
                    Err(r) => {
                        self.rejected.fetch_add(1, SeqCst);
                        return self.end(format!("rejected: {:?}", r.status));
                    }
                }
            }
            completed = false;
            if self.completions.fetch_add(1, SeqCst) + 1 == self.running_at {
                let _ = self
                    .events
                    .lock()
                    .unwrap()
                    .send((self.send, "running".into()));
            }
            match a.socket_error() {
                SUCCESS if !self.send && a.bytes_transferred() == 0 => {
                    return self.end("end of stream".into());
                }
                SUCCESS => {}
                err => return self.end(format!("completed with {}", name(err))),
            }
        }
        self.end("loop limit".into());
    }
}

fn reissuing(
    send: bool,
    running_at: u64,
    events: &Sender<(bool, String)>,
) -> (Arc<Reissuing>, Arc<Args>) {
    let r = Arc::new(Reissuing {
        send,
        // Sends larger than the socket buffers, so that the send loop mostly goes pending
        // instead of completing at once over and over on the thread that started it.
        buffer: vec![0x5A; if send { 256 << 10 } else { 4096 }].into_boxed_slice(),
        issued: AtomicU64::new(0),
        pending: AtomicU64::new(0),
        sync: AtomicU64::new(0),
        rejected: AtomicU64::new(0),
        callbacks: AtomicU64::new(0),
        completions: AtomicU64::new(0),
        running_at,
        events: Mutex::new(events.clone()),
        endings: AtomicUsize::new(0),
    });
    let c = Arc::clone(&r);
    let a = Arc::new(Args::new(
        Box::new(move |s, a| {
            c.callbacks.fetch_add(1, SeqCst);
            c.pump(s, a, true);
        }),
        0,
    ));
    a.set_buffer(r.buffer.as_ptr() as *mut u8, r.buffer.len())
        .unwrap();
    (r, a)
}

#[test]
fn closing_a_socket_while_callbacks_keep_reissuing_ends_each_loop_exactly_once() {
    // A receive loop and a send loop run from their own callbacks on a connection with
    // traffic both ways; another thread closes the socket at a random point. Each loop must
    // end exactly once (OperationAborted, at once or through its callback, or Disposed), and
    // every pending operation must have had exactly one callback.
    let budget = Duration::from_secs(8);
    let peers = TcpListener::bind("127.0.0.1:0").unwrap();
    let started = Instant::now();
    let mut endings = std::collections::BTreeMap::new();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut iterations = 0;
    while iterations < 1000 && started.elapsed() < budget {
        let (s, peer) = connected_to(&peers);
        s.set_option(SocketOption::SendBufferSize, 4096).unwrap();
        peer.set_write_timeout(Some(WAIT)).unwrap();
        peer.set_read_timeout(Some(WAIT)).unwrap();
        let mut peer_in = peer.try_clone().unwrap();
        let mut peer_out = peer;
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            for _ in 0..1_000_000 {
                match peer_in.read(&mut buf) {
                    Ok(n) if n > 0 => {}
                    _ => return,
                }
            }
        });
        let writer = std::thread::spawn(move || {
            let chunk = [0xA5u8; 1024];
            for _ in 0..1_000_000 {
                if peer_out.write_all(&chunk).is_err() {
                    return;
                }
            }
        });
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let (tx, rx) = channel();
        let (recv, recv_args) = reissuing(false, 1 + seed % 16, &tx);
        let (send, send_args) = reissuing(true, 1 + (seed >> 8) % 16, &tx);
        recv.pump(&s, &recv_args, false);
        send.pump(&s, &send_args, false);
        // Both loops running (or already ended, which the checks below catch), then close.
        let mut ended = Vec::new();
        let mut running = 0;
        while running < 2 {
            let (is_send, what) = rx.recv_timeout(WAIT).expect("hang: the loops never ran");
            if what == "running" {
                running += 1;
            } else {
                panic!(
                    "iteration {iterations}: the {} loop ended before the close: {what}",
                    if is_send { "send" } else { "receive" }
                );
            }
        }
        s.close();
        drop(s);
        while ended.len() < 2 {
            let (is_send, what) = rx
                .recv_timeout(WAIT)
                .expect("hang: a loop did not end after the close");
            if what != "running" {
                ended.push((is_send, what));
            }
        }
        for (is_send, what) in &ended {
            let loop_name = if *is_send { "send" } else { "receive" };
            assert!(
                what == "rejected: Disposed"
                    || what == &format!("completed with {}", name(ABORTED)),
                "iteration {iterations}: the {loop_name} loop ended with {what}"
            );
            *endings.entry((loop_name, what.clone())).or_insert(0u32) += 1;
        }
        reader.join().unwrap();
        writer.join().unwrap();
        drop(tx);
        assert!(rx.try_recv().is_err(), "nothing after both ends");
        for (r, a) in [(&recv, &recv_args), (&send, &send_args)] {
            let (issued, pending, sync, rejected, callbacks) = (
                r.issued.load(SeqCst),
                r.pending.load(SeqCst),
                r.sync.load(SeqCst),
                r.rejected.load(SeqCst),
                r.callbacks.load(SeqCst),
            );
            assert_eq!(issued, pending + sync + rejected);
            assert_eq!(
                callbacks, pending,
                "iteration {iterations}: one callback per pending operation"
            );
            assert_eq!(r.endings.load(SeqCst), 1, "each loop ends once");
            assert!(!a.is_in_flight());
        }
        iterations += 1;
    }
    reactor_fence();
    eprintln!(
        "close while reissuing: {iterations} iterations in {:.1} s; endings: {endings:?}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        iterations >= 50,
        "only {iterations} iterations in {budget:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Descriptor exhaustion, in a child process.
// ---------------------------------------------------------------------------------------

const CHILD_ENV: &str = "SOCKASYNC_FAULTS_CHILD";

/// Re-runs this test binary for one ignored test, `name`, with CHILD_ENV set to it, and
/// checks that it ran and passed.
fn run_child(name: &str) {
    let exe = std::env::current_exe().unwrap();
    let child = Command::new(exe)
        .args([
            "--exact",
            name,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("re-running the test binary");
    let pid = child.id() as libc::pid_t;
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(output) => output.expect("child output"),
        Err(_) => {
            // SAFETY: the pid of the child this test started, not reaped yet
            // (wait_with_output has not returned).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("hang: the child {name} did not finish in 60 s (killed)");
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("--- child {name}: stdout:\n{stdout}--- stderr:\n{stderr}---");
    assert!(
        output.status.success(),
        "the child failed: {}",
        output.status
    );
    assert!(stdout.contains("1 passed"), "the child ran {name}");
}

/// Whether this process is the child running `name`.
fn is_child(name: &str) -> bool {
    if std::env::var(CHILD_ENV).as_deref() == Ok(name) {
        return true;
    }
    eprintln!("{name} only runs as a child process ({CHILD_ENV}={name})");
    false
}

fn set_nofile(soft: u64) -> libc::rlimit {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid out-pointer.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    let old = lim;
    lim.rlim_cur = soft;
    // SAFETY: a valid rlimit, soft at most the hard limit (lowering, or restoring).
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    old
}

#[test]
fn descriptor_exhaustion_fails_create_and_accept_then_the_listener_recovers() {
    run_child("fd_exhaustion_child");
}

#[test]
fn descriptor_exhaustion_at_first_use_fails_create_cleanly_then_recovers() {
    run_child("fd_exhaustion_first_use_child");
}

fn is_open(fd: i32) -> bool {
    // SAFETY: F_GETFD on any number only reads the descriptor table.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// Descriptors open now (counted without opening one).
fn open_fds() -> u64 {
    (0..65536).filter(|fd| is_open(*fd)).count() as u64
}

/// The RLIMIT_NOFILE soft limit that leaves exactly `spare` descriptors to open: the limit
/// bounds descriptor numbers, not their count, and inherited descriptors may sit high up.
fn limit_for_spare(spare: u64) -> u64 {
    let mut free = 0;
    for fd in 0..65536 {
        if !is_open(fd) {
            free += 1;
            if free == spare {
                return fd as u64 + 1;
            }
        }
    }
    panic!("no {spare} free descriptor numbers under 65536");
}

#[test]
#[ignore = "a child process of descriptor_exhaustion_...: it lowers RLIMIT_NOFILE, which is \
            process-wide"]
fn fd_exhaustion_child() {
    if !is_child("fd_exhaustion_child") {
        return;
    }
    let l = tcp();
    l.bind("127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap())
        .unwrap();
    l.listen(8).unwrap();
    let addr: SocketAddr = l.local_endpoint().unwrap();
    // Clients made now, connected later: connecting takes no new descriptor.
    let clients: Vec<socket2::Socket> = (0..2)
        .map(|_| socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap())
        .collect();
    let mut acc = Probe::new();
    // An accept pending from before the descriptors run out. (One started after completes at
    // once: accept4 takes the new descriptor before it looks for a connection.)
    assert!(
        acc.start(|a| l.accept_async(a)),
        "nobody connected yet: pending"
    );

    // Lower the soft limit to what is open plus a few, then take those few.
    let original = set_nofile(limit_for_spare(4));
    let mut filler = Vec::new();
    let mut refusal = None;
    for _ in 0..64 {
        match Socket::create(2, 1, 6) {
            Ok(s) => filler.push(s),
            Err(r) => {
                refusal = Some(r);
                break;
            }
        }
    }
    let refusal = refusal.expect("sock_create refused once the descriptors ran out");
    eprintln!(
        "child: created {} sockets, then: {:?} / {:?}: {}",
        filler.len(),
        refusal.status,
        refusal.socket_error,
        refusal.message
    );
    assert_eq!(refusal.status, Status::SocketError);
    assert_eq!(refusal.socket_error, SocketError::TooManyOpenSockets);

    // The pending accept meets a connection with no descriptor to take it.
    clients[0]
        .connect(&addr.into())
        .expect("client 1 connects (backlog)");
    let c = acc.wait();
    assert_eq!(
        (name(c.error), c.operation),
        (name(TOO_MANY), AsyncOperation::Accept as i32),
        "a pending accept with no descriptor left"
    );
    assert!(acc.args.accept_socket().is_null());
    // Again, now with the connection already waiting: completes at once the same way.
    let (_, err) = acc.run(|a| l.accept_async(a));
    assert_eq!(
        name(err),
        name(TOO_MANY),
        "an accept with no descriptor left"
    );
    assert!(acc.args.accept_socket().is_null());

    // Free descriptors: the listener accepts the waiting connection, then a new one.
    for s in filler.drain(..) {
        s.close();
    }
    set_nofile(original.rlim_cur);
    let (_, err) = acc.run(|a| l.accept_async(a));
    assert_eq!(
        name(err),
        name(SUCCESS),
        "accept after descriptors were freed"
    );
    // SAFETY: the completed accept hands us one strong reference.
    let first = unsafe { Arc::from_raw(acc.args.accept_socket()) };
    assert_eq!(
        first.remote_endpoint().unwrap(),
        clients[0].local_addr().unwrap().as_socket().unwrap(),
        "the connection that waited in the backlog"
    );
    let second_pending = acc.start(|a| l.accept_async(a));
    clients[1].connect(&addr.into()).expect("client 2 connects");
    let err = if second_pending {
        acc.wait().error
    } else {
        acc.args.socket_error()
    };
    assert_eq!(name(err), name(SUCCESS), "a new connection is accepted");
    // SAFETY: as above.
    let second = unsafe { Arc::from_raw(acc.args.accept_socket()) };
    assert_eq!(
        second.remote_endpoint().unwrap(),
        clients[1].local_addr().unwrap().as_socket().unwrap()
    );
    // And the first connection carries data.
    let mut client: TcpStream = clients.into_iter().next().unwrap().into();
    client.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    let mut r = Probe::with_buffer(&mut buf);
    let mut got = 0;
    for _ in 0..4 {
        if got == 4 {
            break;
        }
        r.args.set_buffer(buf[got..].as_mut_ptr(), 4 - got).unwrap();
        let (n, err) = r.run(|a| first.receive_async(a));
        assert_eq!(err, SUCCESS);
        got += n;
    }
    assert_eq!(&buf, b"ping");
    reactor_fence();
    acc.assert_settled("accept");
    r.assert_settled("receive");
    eprintln!("child: create and accept failed with TooManyOpenSockets, then recovered");
}

// ---------------------------------------------------------------------------------------
// A callback that blocks.
// ---------------------------------------------------------------------------------------

#[test]
fn a_callback_blocking_for_a_second_delays_other_completions_but_loses_none() {
    const OTHERS: usize = 40;
    let peers = TcpListener::bind("127.0.0.1:0").unwrap();

    // The blocker: a receive whose callback blocks the reactor thread for one second.
    let (blocked_s, mut blocked_peer) = connected_to(&peers);
    let released = Arc::new(AtomicBool::new(false));
    let blocker_runs = Arc::new(AtomicUsize::new(0));
    let (started_tx, started_rx) = channel::<()>();
    let blocker = {
        let (released, runs) = (Arc::clone(&released), Arc::clone(&blocker_runs));
        let started_tx = Mutex::new(started_tx);
        Arc::new(Args::new(
            Box::new(move |_, _| {
                runs.fetch_add(1, SeqCst);
                let _ = started_tx.lock().unwrap().send(());
                // The fault under test: a callback that blocks (it should not, says the
                // contract; the library must cope).
                std::thread::sleep(Duration::from_secs(1));
                released.store(true, SeqCst);
            }),
            0,
        ))
    };
    let mut byte = [0u8; 1];
    blocker.set_buffer(byte.as_mut_ptr(), 1).unwrap();
    assert!(blocked_s.receive_async(&blocker).unwrap(), "pending");

    // Others, each pending, of four kinds: a receive its peer will write to, a receive whose
    // socket will be closed (aborted), a large send its peer will drain, an accept a client
    // will connect to.
    let (tx, rx) = channel::<(usize, Completed, bool)>();
    let listener = tcp();
    listener
        .bind("127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap())
        .unwrap();
    listener.listen(OTHERS as i32).unwrap();
    let listen_addr = listener.local_endpoint().unwrap();
    let big = Arc::new(random_bytes(4 << 20, 5));
    let mut buffers: Vec<Vec<u8>> = Vec::new();
    let mut others = Vec::new();
    for i in 0..OTHERS {
        let tx = Mutex::new(tx.clone() as Sender<_>);
        let released = Arc::clone(&released);
        let a = Arc::new(Args::new(
            Box::new(move |_, a| {
                let seen = Completed {
                    bytes: a.bytes_transferred(),
                    error: a.socket_error(),
                    operation: a.last_operation(),
                    on_reactor: on_reactor(),
                };
                let _ = tx.lock().unwrap().send((i, seen, released.load(SeqCst)));
            }),
            i,
        ));
        let (socket, peer) = match i % 4 {
            3 => (Arc::clone(&listener), None),
            _ => {
                let (s, p) = connected_to(&peers);
                (s, Some(p))
            }
        };
        let pending = match i % 4 {
            0 | 1 => {
                let mut b = vec![0u8; 16];
                a.set_buffer(b.as_mut_ptr(), b.len()).unwrap();
                buffers.push(b);
                socket.receive_async(&a)
            }
            2 => {
                socket
                    .set_option(SocketOption::SendBufferSize, 4096)
                    .unwrap();
                a.set_buffer(big.as_ptr() as *mut u8, big.len()).unwrap();
                socket.send_async(&a)
            }
            _ => socket.accept_async(&a),
        };
        assert!(pending.unwrap(), "other {i}: pending");
        others.push((socket, peer, a));
    }

    // Block the reactor, then make every other operation complete while it is blocked.
    blocked_peer.write_all(b"b").unwrap();
    started_rx
        .recv_timeout(WAIT)
        .expect("the blocking callback started");
    let mut drains = Vec::new();
    let mut clients = Vec::new();
    let mut msg = *b"while blocked";
    let mut extra = Probe::with_buffer(&mut msg);
    let mut extra_pending = None;
    for (i, (socket, peer, _)) in others.iter_mut().enumerate() {
        match i % 4 {
            0 => peer.as_mut().unwrap().write_all(&[i as u8; 16]).unwrap(),
            1 => socket.close(),
            2 => {
                let mut peer = peer.take().unwrap();
                let len = big.len();
                drains.push(std::thread::spawn(move || {
                    peer.set_read_timeout(Some(WAIT)).unwrap();
                    let mut got = vec![0u8; len];
                    peer.read_exact(&mut got).map(|_| got)
                }));
            }
            _ => clients.push(TcpStream::connect(listen_addr).unwrap()),
        }
        if i == 0 {
            // A send issued from this thread while the reactor is blocked: it needs no
            // reactor to complete at once.
            extra_pending = Some(extra.start(|a| socket.send_async(a)));
        }
    }
    let triggered_while_blocked = !released.load(SeqCst);
    assert!(
        triggered_while_blocked,
        "every other completion was triggered while the callback blocked (this thread took \
         more than a second: inconclusive)"
    );

    // All of them complete, after the blocking callback returned.
    let mut seen = vec![None; OTHERS];
    for _ in 0..OTHERS {
        let (i, c, after) = rx
            .recv_timeout(WAIT)
            .expect("a completion was lost behind the blocking callback");
        assert!(seen[i].is_none(), "other {i} completed twice");
        assert!(after, "other {i} completed while the reactor was blocked?");
        assert!(
            c.on_reactor,
            "other {i}: callbacks run on the reactor thread"
        );
        seen[i] = Some(c);
    }
    for (i, c) in seen.iter().enumerate() {
        let c = c.unwrap();
        let expected = match i % 4 {
            0 => (16, SUCCESS),
            1 => (0, ABORTED),
            2 => (big.len(), SUCCESS),
            _ => (0, SUCCESS),
        };
        assert_eq!(
            (c.bytes, name(c.error)),
            (expected.0, name(expected.1)),
            "other {i} (kind {})",
            i % 4
        );
    }
    for (i, (_, _, a)) in others.iter().enumerate() {
        if i % 4 == 3 {
            let raw = a.accept_socket();
            assert!(!raw.is_null(), "accept {i} handed out a socket");
            // SAFETY: the completed accept hands us one strong reference.
            unsafe { Arc::from_raw(raw) }.close();
        }
    }
    for (k, b) in buffers.iter().enumerate() {
        // Buffers of kinds 0 and 1 in order: 0, 1, 0, 1, ...; kind 0 got its index's bytes.
        if k % 2 == 0 {
            let i = (k / 2) * 4;
            assert_eq!(b, &vec![i as u8; 16], "other {i}'s data");
        }
    }
    for d in drains {
        let got = d.join().unwrap().expect("drain");
        assert!(got == *big, "the large send arrived whole");
    }
    reactor_fence();
    assert!(rx.try_recv().is_err(), "no completion twice");
    assert_eq!(
        blocker_runs.load(SeqCst),
        1,
        "the blocking callback ran once"
    );
    let extra_pending = extra_pending.unwrap();
    let (n, err) = if extra_pending {
        let c = extra.wait();
        (c.bytes, c.error)
    } else {
        (extra.args.bytes_transferred(), extra.args.socket_error())
    };
    assert_eq!((n, err), (13, SUCCESS));
    reactor_fence();
    extra.assert_settled("send during the block");
    eprintln!(
        "blocking callback: {OTHERS} other completions delayed, none lost; a send from \
         another thread during the block {}",
        if extra_pending {
            "went pending"
        } else {
            "completed at once, without the reactor"
        }
    );
    drop(clients);
    drop(blocked_peer);
    for (socket, _, _) in &others {
        socket.close();
    }
    blocked_s.close();
}

#[test]
#[ignore = "a child process of descriptor_exhaustion_at_first_use_...: it lowers \
            RLIMIT_NOFILE, which is process-wide, before the library's first use"]
fn fd_exhaustion_first_use_child() {
    if !is_child("fd_exhaustion_first_use_child") {
        return;
    }
    // Before any library call: no reactor yet. With one descriptor to spare, the socket
    // opens but the reactor (an epoll instance, its clone and an eventfd) cannot start; with
    // more, further along. Each refusal must be a clean SocketError, leaking nothing.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = open_fds();
    let mut refusals = Vec::new();
    let mut created = None;
    for spare in 1..=8 {
        let original = set_nofile(limit_for_spare(spare));
        let result = Socket::create(2, 1, 6);
        set_nofile(original.rlim_cur);
        match result {
            Ok(s) => {
                created = Some((spare, s));
                break;
            }
            Err(r) => {
                assert_eq!(
                    (r.status, r.socket_error),
                    (Status::SocketError, SocketError::TooManyOpenSockets),
                    "with {spare} spare descriptors: {}",
                    r.message
                );
                refusals.push(format!("{spare} spare: {}", r.message));
            }
        }
    }
    let (spare, s) = created.expect("a socket once enough descriptors were free");
    eprintln!("child: refused: {refusals:?}; created with {spare} spare descriptors");
    assert!(
        !refusals.is_empty(),
        "the first refusal came at one spare descriptor"
    );
    // The reactor works: a receive goes pending and completes.
    let mut p = Probe::new();
    p.args
        .set_remote_endpoint(Some(listener.local_addr().unwrap()))
        .unwrap();
    assert_eq!(p.run(|a| s.connect_async(a)).1, SUCCESS);
    let (mut peer, _) = listener.accept().unwrap();
    let mut buf = [0u8; 2];
    let mut r = Probe::with_buffer(&mut buf);
    assert!(r.start(|a| s.receive_async(a)));
    peer.write_all(b"ok").unwrap();
    assert_eq!(r.wait().bytes, 2);
    assert_eq!(&buf, b"ok");
    s.close();
    drop(peer);
    // Nothing leaked by the refused attempts: what is open beyond the start is the reactor's
    // own descriptors (the successful start's), at most 3 (epoll, its clone, the eventfd),
    // and on the io_uring backend its ring.
    let now = open_fds();
    eprintln!("child: descriptors open: {base} before, {now} after (the reactor's included)");
    let ring = u64::from(std::env::var("SOCKASYNC_BACKEND").is_ok_and(|b| b == "io_uring"));
    assert!(
        now <= base + 3 + ring,
        "{} descriptors more than before: the refused creates leaked some",
        now - base
    );
}
