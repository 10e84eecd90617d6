//! Runtime shutdown racing live traffic, again and again: threads keep sending and receiving
//! on their own connections while the runtime is shut down under them, then it starts again.
//!
//! What each round holds the library to: every operation that went pending got exactly one
//! callback, all of them before `shutdown` returned (none after); every thread ended its loop
//! with a rejection (Disposed) or an aborted completion, never a hang; and the next round
//! starts a fresh runtime with another configuration (1 or 2 reactor threads, Inline or Pool).
//! The runtime is process-wide, so this file holds one test (its own process).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use sockasync::engine::{Args, Socket, runtime};
use sockasync::error::{Reject, SocketError, Status};

const WORKERS: usize = 4;
const ROUNDS: u32 = 12;
const WAIT: Duration = Duration::from_secs(10);

/// Completions of one args object, counted, with a wait for the next.
#[derive(Default)]
struct Counter {
    count: Mutex<u64>,
    changed: Condvar,
}

impl Counter {
    fn bump(&self) {
        *self.count.lock().unwrap() += 1;
        self.changed.notify_all();
    }

    fn get(&self) -> u64 {
        *self.count.lock().unwrap()
    }

    fn wait_for(&self, n: u64) {
        let count = self.count.lock().unwrap();
        let (count, timeout) = self
            .changed
            .wait_timeout_while(count, WAIT, |c| *c < n)
            .unwrap();
        assert!(
            !timeout.timed_out(),
            "a callback never came ({} of {n})",
            *count
        );
    }
}

fn counted_args(counter: &Arc<Counter>) -> Arc<Args> {
    let counter = Arc::clone(counter);
    Arc::new(Args::new(Box::new(move |_, _| counter.bump()), 0))
}

/// A std peer that echoes everything until the connection ends.
fn echo_peer(mut peer: TcpStream) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = peer.read(&mut buf) {
            if n == 0 || peer.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    })
}

type Start = fn(&Arc<Socket>, &Arc<Args>) -> Result<bool, Reject>;

struct Outcome {
    pending: u64,
    callbacks: u64,
    operations: u64,
    ended_by: String,
}

/// Sends and receives on one connection until the library refuses or aborts.
fn traffic(socket: Arc<Socket>, started: Arc<AtomicU64>) -> Outcome {
    let counter = Arc::new(Counter::default());
    let args = counted_args(&counter);
    let mut out = vec![7u8; 1024];
    let mut back = vec![0u8; 1024];
    let mut pending = 0;
    let mut operations = 0;
    loop {
        for send in [true, false] {
            let (buffer, op): (&mut [u8], Start) = if send {
                (&mut out, |s, a| s.send_async(a))
            } else {
                (&mut back, |s, a| s.receive_async(a))
            };
            args.set_buffer(buffer.as_mut_ptr(), buffer.len()).unwrap();
            match op(&socket, &args) {
                Ok(true) => {
                    pending += 1;
                    counter.wait_for(pending);
                }
                Ok(false) => {}
                Err(reject) => {
                    assert_eq!(reject.status, Status::Disposed, "{}", reject.message);
                    return Outcome {
                        pending,
                        callbacks: counter.get(),
                        operations,
                        ended_by: "Disposed".into(),
                    };
                }
            }
            operations += 1;
            started.fetch_add(1, SeqCst);
            let error = args.socket_error();
            if error != SocketError::Success as i32 {
                // Only the shutdown ends a connection here (the peer echoes until we close).
                assert_eq!(error, SocketError::OperationAborted as i32);
                return Outcome {
                    pending,
                    callbacks: counter.get(),
                    operations,
                    ended_by: "OperationAborted".into(),
                };
            }
        }
    }
}

fn connected_socket(listener: &TcpListener) -> (Arc<Socket>, TcpStream) {
    let socket = Socket::create(2, 1, 6).expect("create");
    let counter = Arc::new(Counter::default());
    let args = counted_args(&counter);
    args.set_remote_endpoint(Some(listener.local_addr().unwrap()))
        .unwrap();
    if socket.connect_async(&args).unwrap() {
        counter.wait_for(1);
    }
    assert_eq!(args.socket_error(), SocketError::Success as i32, "connect");
    let (peer, _) = listener.accept().unwrap();
    (socket, peer)
}

#[test]
fn shutdown_under_live_traffic_delivers_every_completion_once_then_restarts() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    for round in 0..ROUNDS {
        let threads = 1 + round % 2;
        let dispatch = (round / 2 % 2) as i32;
        runtime::configure(threads, dispatch).expect("configure before the round's first use");
        let started = Arc::new(AtomicU64::new(0));
        let mut peers = Vec::new();
        let mut workers = Vec::new();
        for _ in 0..WORKERS {
            let (socket, peer) = connected_socket(&listener);
            peers.push(echo_peer(peer));
            let started = Arc::clone(&started);
            workers.push(std::thread::spawn(move || traffic(socket, started)));
        }
        // Let traffic run a while (by count, not by time) before pulling the runtime away.
        let deadline = std::time::Instant::now() + WAIT;
        while started.load(SeqCst) < 200 * WORKERS as u64 {
            assert!(
                std::time::Instant::now() < deadline,
                "traffic never got going"
            );
            std::thread::yield_now();
        }
        runtime::shutdown().expect("shutdown from a plain thread");
        let outcomes: Vec<Outcome> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        for (i, o) in outcomes.iter().enumerate() {
            assert_eq!(
                o.callbacks, o.pending,
                "round {round}, worker {i}: one callback per pending start ({} ops, ended by {})",
                o.operations, o.ended_by
            );
        }
        for peer in peers {
            peer.join().unwrap();
        }
    }
}
