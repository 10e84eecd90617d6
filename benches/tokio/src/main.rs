//! bench_tokio: the tokio contender of the sockasync benchmark suite (benches/run.sh runs it
//! in the same rounds as raw system calls, libuv and sockasync). The same scenarios, checks
//! and output as the C programs:
//!
//!   bench_tokio small N                          (as bench_small)
//!   bench_tokio pingpong ROUND_TRIPS [WARMUP]    (as bench_pingpong; WARMUP defaults to 1000)
//!
//! small: N x 64-byte sends over loopback TCP (no TCP_NODELAY) with `TcpStream::try_write`,
//! waiting with `writable().await` when it would block, to a plain blocking reader thread
//! that checks every byte and the total. Prints the nanoseconds per send (the send loop's
//! wall time / N, after an untimed 1% warm-up) and a "stats:" line with calls and EAGAINs.
//!
//! pingpong: 64-byte request/response, TCP_NODELAY on both ends, both ends on tokio in this
//! process, each end with its own current-thread runtime on its own thread (as the libuv
//! contender has one loop per end): the server reads and `write_all`s back what it read, the
//! client `write_all`s the request and `read_exact`s the response, which must equal it.
//! Prints "P50 P99" in microseconds over ROUND_TRIPS after WARMUP untimed round trips.
//!
//! Every address is 127.0.0.1. Any error or mismatch exits with status 1.

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::process::exit;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::{Builder, Runtime};

const USAGE: &str = "bench_tokio small N | bench_tokio pingpong ROUND_TRIPS [WARMUP]";
const SMALL_MSG: usize = 64;
const PING_MSG: usize = 64;
const BUFFER: usize = 64 * 1024;

fn die(what: impl std::fmt::Display) -> ! {
    eprintln!("bench_tokio: FAILED: {what}");
    exit(1);
}

fn usage() -> ! {
    eprintln!("usage: {USAGE}");
    exit(2);
}

fn count(arg: Option<&String>) -> u64 {
    match arg.map(|s| s.parse::<u64>()) {
        Some(Ok(v)) if v > 0 => v,
        _ => usage(),
    }
}

fn runtime() -> Runtime {
    Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap_or_else(|e| die(format_args!("tokio runtime: {e}")))
}

fn loopback_listener() -> (StdListener, SocketAddr) {
    let listener = StdListener::bind("127.0.0.1:0")
        .unwrap_or_else(|e| die(format_args!("bind/listen on 127.0.0.1: {e}")));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| die(format_args!("local_addr: {e}")));
    (listener, addr)
}

/// The C programs' pattern (bench_common.h): byte i of the repeated buffer.
fn pattern_byte(i: usize) -> u8 {
    (i as u32).wrapping_mul(131).wrapping_add(7) as u8
}

// ---- small sends --------------------------------------------------------------------------

/// Drains the one connection it accepts, checking every byte against the pattern repeated
/// with period `SMALL_MSG`; returns the total.
fn drain_and_check(listener: StdListener) -> u64 {
    let (mut conn, _) = listener
        .accept()
        .unwrap_or_else(|e| die(format_args!("reader accept: {e}")));
    drop(listener);
    let mut buf = vec![0u8; BUFFER];
    let mut received: u64 = 0;
    loop {
        let n = match conn.read(&mut buf) {
            Ok(0) => return received,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => die(format_args!("reader recv: {e}")),
        };
        for (i, &b) in buf[..n].iter().enumerate() {
            let pos = (received + i as u64) as usize % SMALL_MSG;
            if b != pattern_byte(pos) {
                die("reader: received bytes differ from what was sent");
            }
        }
        received += n as u64;
    }
}

fn run_small(n: u64) {
    let warmup = n / 100;
    let (listener, addr) = loopback_listener();
    let reader = std::thread::spawn(move || drain_and_check(listener));
    let message: Vec<u8> = (0..SMALL_MSG).map(pattern_byte).collect();
    let mut calls: u64 = 0;
    let mut eagain: u64 = 0;

    let elapsed = runtime().block_on(async {
        let stream = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| die(format_args!("connect to 127.0.0.1: {e}")));
        let mut send_one = async |stream: &TcpStream| {
            let mut off = 0;
            while off < SMALL_MSG {
                calls += 1;
                match stream.try_write(&message[off..]) {
                    Ok(k) => off += k,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        eagain += 1;
                        stream
                            .writable()
                            .await
                            .unwrap_or_else(|e| die(format_args!("writable: {e}")));
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => die(format_args!("try_write: {e}")),
                }
            }
        };
        for _ in 0..warmup {
            send_one(&stream).await;
        }
        let start = Instant::now();
        for _ in 0..n {
            send_one(&stream).await;
        }
        let elapsed = start.elapsed();
        drop(stream); // the reader sees end of stream
        elapsed
    });

    let received = reader
        .join()
        .unwrap_or_else(|_| die("reader thread panicked"));
    let expected = (warmup + n) * SMALL_MSG as u64;
    if received != expected {
        die(format_args!(
            "reader: received {received} of {expected} bytes"
        ));
    }
    println!("{:.1}", elapsed.as_nanos() as f64 / n as f64);
    eprintln!(
        "stats: mech=tokio sends={n} warmup={warmup} calls={calls} eagain={eagain} \
         received={received}"
    );
}

// ---- ping-pong ----------------------------------------------------------------------------

fn fill_request(req: &mut [u8; PING_MSG], seq: u64) {
    req[..8].copy_from_slice(&seq.to_ne_bytes());
    for (i, b) in req.iter_mut().enumerate().skip(8) {
        *b = (seq.wrapping_mul(31).wrapping_add(i as u64)) as u8;
    }
}

async fn echo_server(listener: StdListener) {
    listener
        .set_nonblocking(true)
        .unwrap_or_else(|e| die(format_args!("set_nonblocking: {e}")));
    let listener = TcpListener::from_std(listener)
        .unwrap_or_else(|e| die(format_args!("server TcpListener::from_std: {e}")));
    let (mut conn, _) = listener
        .accept()
        .await
        .unwrap_or_else(|e| die(format_args!("server accept: {e}")));
    drop(listener);
    conn.set_nodelay(true)
        .unwrap_or_else(|e| die(format_args!("server set_nodelay: {e}")));
    let mut buf = vec![0u8; BUFFER];
    loop {
        let n = conn
            .read(&mut buf)
            .await
            .unwrap_or_else(|e| die(format_args!("server read: {e}")));
        if n == 0 {
            return;
        }
        conn.write_all(&buf[..n])
            .await
            .unwrap_or_else(|e| die(format_args!("server write: {e}")));
    }
}

fn run_pingpong(rounds: u64, warmup: u64) {
    let (listener, addr) = loopback_listener();
    let server = std::thread::spawn(move || runtime().block_on(echo_server(listener)));
    let total = warmup + rounds;
    let mut latency_ns: Vec<u64> = Vec::with_capacity(rounds as usize);

    runtime().block_on(async {
        let mut conn = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| die(format_args!("client connect to 127.0.0.1: {e}")));
        conn.set_nodelay(true)
            .unwrap_or_else(|e| die(format_args!("client set_nodelay: {e}")));
        let mut req = [0u8; PING_MSG];
        let mut resp = [0u8; PING_MSG];
        for seq in 0..total {
            fill_request(&mut req, seq);
            let t0 = Instant::now();
            conn.write_all(&req)
                .await
                .unwrap_or_else(|e| die(format_args!("client write: {e}")));
            conn.read_exact(&mut resp)
                .await
                .unwrap_or_else(|e| die(format_args!("client read: {e}")));
            let t = t0.elapsed().as_nanos() as u64;
            if req != resp {
                die(format_args!(
                    "the response to request {seq} differs from the request"
                ));
            }
            if seq >= warmup {
                latency_ns.push(t);
            }
        }
        // Dropped here: the server reads end of stream and returns.
    });
    server
        .join()
        .unwrap_or_else(|_| die("server thread panicked"));

    latency_ns.sort_unstable();
    let n = latency_ns.len();
    let us = |i: usize| latency_ns[i] as f64 / 1e3;
    println!("{:.2} {:.2}", us(n / 2), us(n * 99 / 100));
    eprintln!(
        "stats: mech=tokio round_trips={rounds} warmup={warmup} min_us={:.2} max_us={:.2}",
        us(0),
        us(n - 1)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("small") if args.len() == 3 => run_small(count(args.get(2))),
        Some("pingpong") if args.len() == 3 || args.len() == 4 => {
            let warmup = match args.get(3) {
                Some(w) => w.parse().unwrap_or_else(|_| usage()),
                None => 1000,
            };
            run_pingpong(count(args.get(2)), warmup)
        }
        _ => usage(),
    }
}
