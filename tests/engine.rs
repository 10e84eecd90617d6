//! Tests of the safe core over real loopback sockets: the same semantics the C tests check
//! through the header, here without the FFI layer in between.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use sockasync::engine::{Args, Socket, SocketOption};
use sockasync::error::{AsyncOperation, SocketError, Status};

const WAIT: Duration = Duration::from_secs(10);

/// What a callback saw.
#[derive(Debug)]
struct Completed {
    bytes: usize,
    error: i32,
    operation: i32,
    on_reactor: bool,
}

fn args() -> (Arc<Args>, Receiver<Completed>) {
    let (tx, rx) = channel();
    let tx = std::sync::Mutex::new(tx);
    let completion = Box::new(move |_: &Arc<Socket>, a: &Arc<Args>| {
        let seen = Completed {
            bytes: a.bytes_transferred(),
            error: a.socket_error(),
            operation: a.last_operation(),
            on_reactor: std::thread::current().name() == Some("sockasync-reactor"),
        };
        let _ = tx.lock().unwrap().send(seen);
    });
    (Arc::new(Args::new(completion, 0)), rx)
}

fn tcp(v6: bool) -> Arc<Socket> {
    Socket::create(if v6 { 23 } else { 2 }, 1, 6).expect("create")
}

fn listener() -> (Arc<Socket>, SocketAddr) {
    let l = tcp(false);
    l.bind("127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap())
        .unwrap();
    l.listen(16).unwrap();
    let addr = l.local_endpoint().unwrap();
    (l, addr)
}

/// Runs an operation and waits for its result, whichever way it completes.
fn run(
    op: impl FnOnce() -> Result<bool, sockasync::error::Reject>,
    a: &Args,
    rx: &Receiver<Completed>,
) -> (usize, i32) {
    if op().expect("accepted") {
        let c = rx.recv_timeout(WAIT).expect("callback");
        assert!(c.on_reactor, "callbacks run on the reactor thread");
        (c.bytes, c.error)
    } else {
        (a.bytes_transferred(), a.socket_error())
    }
}

/// A connected pair: (library socket, std peer).
fn connected_to_std() -> (Arc<Socket>, TcpStream) {
    let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let s = tcp(false);
    let (a, rx) = args();
    a.set_remote_endpoint(Some(std_listener.local_addr().unwrap()))
        .unwrap();
    let (_, err) = run(|| s.connect_async(&a), &a, &rx);
    assert_eq!(err, 0, "connect");
    let (peer, _) = std_listener.accept().unwrap();
    (s, peer)
}

#[test]
fn accept_connect_send_receive_echo() {
    let (l, addr) = listener();
    let (accept_args, accept_rx) = args();
    let pending_accept = l.accept_async(&accept_args).unwrap();

    let c = tcp(false);
    let (ca, crx) = args();
    ca.set_remote_endpoint(Some(addr)).unwrap();
    let (_, err) = run(|| c.connect_async(&ca), &ca, &crx);
    assert_eq!(err, 0);
    assert_eq!(ca.last_operation(), AsyncOperation::Connect as i32);

    if pending_accept {
        let done = accept_rx.recv_timeout(WAIT).unwrap();
        assert_eq!(done.error, 0);
        assert_eq!(done.operation, AsyncOperation::Accept as i32);
    }
    let accepted = accept_args.accept_socket();
    assert!(!accepted.is_null());
    // SAFETY (test): the accept handed us one strong reference.
    let server = unsafe { Arc::from_raw(accepted) };
    assert_eq!(
        server.remote_endpoint().unwrap(),
        c.local_endpoint().unwrap()
    );

    // Receive first (goes pending), then send: the receive completes on the reactor.
    let mut inbox = [0u8; 64];
    let (ra, rrx) = args();
    ra.set_buffer(inbox.as_mut_ptr(), inbox.len()).unwrap();
    assert!(
        server.receive_async(&ra).unwrap(),
        "nothing sent yet: pending"
    );
    assert!(
        ra.is_in_flight(),
        "args are busy while the operation is pending"
    );
    assert_eq!(
        ra.set_buffer(std::ptr::null_mut(), 0).unwrap_err().status,
        Status::InProgress
    );

    let mut msg = *b"hello, reactor";
    ca.set_buffer(msg.as_mut_ptr(), msg.len()).unwrap();
    let (n, err) = run(|| c.send_async(&ca), &ca, &crx);
    assert_eq!((n, err), (msg.len(), 0));
    let got = rrx.recv_timeout(WAIT).unwrap();
    assert_eq!((got.bytes, got.error), (msg.len(), 0));
    assert!(got.on_reactor);
    assert_eq!(&inbox[..msg.len()], &msg);

    // End of stream: Success with 0 bytes.
    c.shutdown(sockasync::engine::ShutdownHow::Send).unwrap();
    let (n, err) = run(|| server.receive_async(&ra), &ra, &rrx);
    assert_eq!((n, err), (0, 0));
    server.close();
    c.close();
    l.close();
}

#[test]
fn ipv6_loopback_works_and_families_do_not_mix() {
    let l = tcp(true);
    let err = l
        .bind("127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap())
        .unwrap_err();
    assert_eq!(err.status, Status::NotSupported);
    l.bind("[::1]:0".parse::<std::net::SocketAddr>().unwrap())
        .unwrap();
    l.listen(4).unwrap();
    let addr = l.local_endpoint().unwrap();
    assert!(addr.is_ipv6());
    let c = tcp(true);
    let (a, rx) = args();
    a.set_remote_endpoint(Some(addr)).unwrap();
    assert_eq!(run(|| c.connect_async(&a), &a, &rx).1, 0);
    assert_eq!(
        c.remote_endpoint().unwrap().to_string(),
        format!("[::1]:{}", addr.port())
    );
}

#[test]
fn refused_connect_reports_connection_refused() {
    // A port that was just free: bind, read it, close.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = tcp(false);
    let (a, rx) = args();
    a.set_remote_endpoint(Some(SocketAddr::from(([127, 0, 0, 1], port))))
        .unwrap();
    let (_, err) = run(|| c.connect_async(&a), &a, &rx);
    assert_eq!(err, SocketError::ConnectionRefused as i32);

    // The same args connect again, from the start (the refused connect's phase is not
    // carried over), and send their buffer once connected.
    let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    a.set_remote_endpoint(Some(std_listener.local_addr().unwrap()))
        .unwrap();
    let mut hello = *b"hello after a refusal";
    a.set_buffer(hello.as_mut_ptr(), hello.len()).unwrap();
    let c = tcp(false);
    let (n, err) = run(|| c.connect_async(&a), &a, &rx);
    assert_eq!((n, err), (hello.len(), 0));
    let (mut peer, _) = std_listener.accept().unwrap();
    let mut got = [0u8; 21];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, &hello);
}

#[test]
fn send_and_receive_on_a_never_connected_socket_complete_with_not_connected() {
    let s = tcp(false);
    let (a, _rx) = args();
    let mut b = [1u8; 4];
    a.set_buffer(b.as_mut_ptr(), 4).unwrap();
    assert!(!s.send_async(&a).unwrap());
    assert_eq!(a.socket_error(), SocketError::NotConnected as i32);
    assert_eq!(a.last_operation(), AsyncOperation::Send as i32);
    assert!(!s.receive_async(&a).unwrap());
    assert_eq!(a.socket_error(), SocketError::NotConnected as i32);
}

#[test]
fn a_large_send_goes_pending_and_completes_whole_when_the_peer_drains() {
    let (s, mut peer) = connected_to_std();
    s.set_option(SocketOption::SendBufferSize, 4096).unwrap();
    let data: Vec<u8> = (0..8 * 1024 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    let (a, rx) = args();
    a.set_buffer(data.as_ptr() as *mut u8, data.len()).unwrap();
    assert!(
        s.send_async(&a).unwrap(),
        "8 MiB cannot fit in the socket buffers"
    );
    let mut got = Vec::with_capacity(data.len());
    let mut chunk = vec![0u8; 65536];
    while got.len() < data.len() {
        let n = peer.read(&mut chunk).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&chunk[..n]);
    }
    let c = rx.recv_timeout(WAIT).unwrap();
    assert_eq!((c.bytes, c.error), (data.len(), 0));
    assert!(got == data, "bytes arrive whole and in order");
}

#[test]
fn close_aborts_pending_operations_through_their_callbacks_and_resets_the_peer() {
    let (s, mut peer) = connected_to_std();
    let mut buf = [0u8; 16];
    let (a, rx) = args();
    a.set_buffer(buf.as_mut_ptr(), buf.len()).unwrap();
    assert!(s.receive_async(&a).unwrap());
    s.close();
    let c = rx.recv_timeout(WAIT).unwrap();
    assert_eq!(c.error, SocketError::OperationAborted as i32);
    assert!(c.on_reactor);
    assert_eq!(
        s.receive_async(&a).unwrap_err().status,
        Status::Disposed,
        "operations after close are rejected"
    );
    peer.set_read_timeout(Some(WAIT)).unwrap();
    let err = peer.read(&mut buf).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
}

#[test]
fn receives_are_served_in_order_and_zero_byte_receive_waits_without_consuming() {
    let (s, mut peer) = connected_to_std();
    let (zero, zrx) = args();
    assert!(s.receive_async(&zero).unwrap(), "zero-byte receive waits");
    let mut bufs = [[0u8; 1]; 3];
    let mut pending = Vec::new();
    for b in bufs.iter_mut() {
        let (a, rx) = args();
        a.set_buffer(b.as_mut_ptr(), 1).unwrap();
        assert!(s.receive_async(&a).unwrap());
        pending.push((a, rx));
    }
    peer.write_all(b"xyz").unwrap();
    let z = zrx.recv_timeout(WAIT).unwrap();
    assert_eq!((z.bytes, z.error), (0, 0));
    for (_, rx) in &pending {
        let c = rx.recv_timeout(WAIT).unwrap();
        assert_eq!((c.bytes, c.error), (1, 0));
    }
    assert_eq!(&bufs, &[[b'x'], [b'y'], [b'z']]);
}

#[test]
fn data_arriving_between_would_block_and_queueing_is_never_lost() {
    // The peer writes at the same moment the receive is issued, over and over: whichever
    // way each race falls (sync completion, pending then edge, edge before queueing), every
    // receive must complete with its byte. A lost edge shows as a callback that never comes.
    let (s, mut peer) = connected_to_std();
    let (a, rx) = args();
    let mut byte = [0u8; 1];
    a.set_buffer(byte.as_mut_ptr(), 1).unwrap();
    let (go_tx, go_rx) = std::sync::mpsc::sync_channel::<u8>(0);
    let writer = std::thread::spawn(move || {
        while let Ok(b) = go_rx.recv() {
            peer.write_all(&[b]).unwrap();
        }
    });
    let mut pending = 0;
    for i in 0..3000u32 {
        let value = (i % 251) as u8;
        go_tx.send(value).unwrap();
        let went_pending = s.receive_async(&a).expect("accepted");
        let (n, err) = if went_pending {
            pending += 1;
            let c = rx.recv_timeout(WAIT).expect("callback: an edge was lost");
            (c.bytes, c.error)
        } else {
            (a.bytes_transferred(), a.socket_error())
        };
        assert_eq!((n, err), (1, 0), "round {i}");
        assert_eq!(byte[0], value, "round {i}");
        assert!(!a.is_in_flight(), "the args are free after the completion");
    }
    drop(go_tx);
    writer.join().unwrap();
    eprintln!("{pending} of 3000 receives went pending");
    assert!(
        pending > 0,
        "the race was exercised on the pending path too"
    );
}

#[test]
fn sends_from_many_threads_on_one_socket_never_interleave() {
    let (s, mut peer) = connected_to_std();
    const THREADS: usize = 4;
    const RECORDS: usize = 300;
    const SIZE: usize = 4000;
    let reader = std::thread::spawn(move || {
        let mut all = vec![0u8; THREADS * RECORDS * SIZE];
        peer.read_exact(&mut all).unwrap();
        all
    });
    let senders: Vec<_> = (0..THREADS)
        .map(|t| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                let (a, rx) = args();
                for r in 0..RECORDS {
                    let mut record = vec![t as u8; SIZE];
                    record[..4].copy_from_slice(&(r as u32).to_le_bytes());
                    a.set_buffer(record.as_mut_ptr(), SIZE).unwrap();
                    let (n, err) = run(|| s.send_async(&a), &a, &rx);
                    assert_eq!((n, err), (SIZE, 0));
                }
            })
        })
        .collect();
    for t in senders {
        t.join().unwrap();
    }
    let all = reader.join().unwrap();
    let mut next = [0u32; THREADS];
    for record in all.chunks(SIZE) {
        let t = record[SIZE - 1] as usize;
        assert!(
            record[4..].iter().all(|b| *b as usize == t),
            "a record is whole"
        );
        let r = u32::from_le_bytes(record[..4].try_into().unwrap());
        assert_eq!(r, next[t], "each thread's records arrive in order");
        next[t] += 1;
    }
    assert_eq!(next, [RECORDS as u32; THREADS]);
}

#[test]
fn an_accepted_socket_nobody_reads_is_closed_when_its_args_go() {
    let (l, addr) = listener();
    let (a, rx) = args();
    let pending = l.accept_async(&a).unwrap();
    let mut client = TcpStream::connect(addr).unwrap();
    if pending {
        rx.recv_timeout(WAIT).unwrap();
    }
    assert_eq!(a.socket_error(), 0);
    drop(a);
    client.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(
        client.read(&mut [0u8; 1]).unwrap(),
        0,
        "the unread accepted socket was closed: the client sees end of stream"
    );
}

#[test]
fn a_small_send_behind_a_pending_one_waits_its_turn_and_rejections_still_hold() {
    // The small send could go straight to the kernel (one buffer, connected stream), but a
    // send is pending: it must queue behind it, and its bytes arrive after all of the first.
    let (s, mut peer) = connected_to_std();
    s.set_option(SocketOption::SendBufferSize, 4096).unwrap();
    let big: Vec<u8> = (0..4 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let (first, first_rx) = args();
    first
        .set_buffer(big.as_ptr() as *mut u8, big.len())
        .unwrap();
    assert!(s.send_async(&first).unwrap(), "4 MiB cannot fit at once");
    assert_eq!(
        s.send_async(&first).unwrap_err().status,
        Status::InProgress,
        "its args are busy"
    );
    let mut small = *b"the small send, which comes last";
    let (second, second_rx) = args();
    second.set_buffer(small.as_mut_ptr(), small.len()).unwrap();
    assert!(
        s.send_async(&second).unwrap(),
        "a send behind a pending one queues"
    );
    let mut got = vec![0u8; big.len() + small.len()];
    peer.read_exact(&mut got).unwrap();
    assert!(
        got[..big.len()] == big[..],
        "the first send goes out whole first"
    );
    assert_eq!(&got[big.len()..], &small[..]);
    let c = first_rx.recv_timeout(WAIT).unwrap();
    assert_eq!((c.bytes, c.error), (big.len(), 0));
    let c = second_rx.recv_timeout(WAIT).unwrap();
    assert_eq!((c.bytes, c.error), (small.len(), 0));

    // Once the queue is idle again the small send completes at once.
    assert!(!s.send_async(&second).unwrap());
    assert_eq!(
        (second.bytes_transferred(), second.socket_error()),
        (small.len(), 0)
    );
    peer.read_exact(&mut got[..small.len()]).unwrap();
    assert_eq!(&got[..small.len()], &small[..]);

    // Freed args, then a closed socket: rejected, and nothing reaches the peer.
    let (freed, _rx) = args();
    freed.set_buffer(small.as_mut_ptr(), small.len()).unwrap();
    freed.mark_freed();
    let reject = s.send_async(&freed).unwrap_err();
    assert_eq!(reject.status, Status::InvalidArgument);
    s.close();
    assert_eq!(s.send_async(&second).unwrap_err().status, Status::Disposed);
    assert!(!second.is_in_flight(), "a rejection leaves the args free");
    peer.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(
        peer.read(&mut got).unwrap(),
        0,
        "only end of stream follows"
    );
}

// ---------------------------------------------------------------------------------------
// The debug builds' exactly-once instrument: it must catch what the tests could otherwise
// only count. Each test makes the mistake on purpose, by hand, and expects the panic.
// ---------------------------------------------------------------------------------------

/// Args started for one operation, and a pending form of it made by hand.
#[cfg(debug_assertions)]
fn started_by_hand() -> (Arc<Socket>, Arc<Args>, Receiver<Completed>) {
    let s = tcp(false);
    let (a, rx) = args();
    a.begin_io().expect("claim");
    a.started(AsyncOperation::Disconnect);
    (s, a, rx)
}

#[cfg(debug_assertions)]
#[test]
#[should_panic(expected = "delivered twice")]
fn a_second_delivery_of_one_operation_is_caught() {
    use sockasync::engine::op::{Finished, Pending};
    let (s, a, rx) = started_by_hand();
    let first = Pending::new(&a, &s, 0);
    let again = Pending::new(&a, &s, 0);
    first.complete(Finished::ok(0));
    rx.recv_timeout(WAIT)
        .expect("the first delivery runs the callback");
    again.complete(Finished::ok(0));
}

#[cfg(debug_assertions)]
#[test]
#[should_panic(expected = "a completion for operation 1 of args now on operation 2")]
fn a_stale_completion_after_the_args_were_reused_is_caught() {
    use sockasync::engine::op::{Finished, Pending};
    let (s, a, rx) = started_by_hand();
    let first = Pending::new(&a, &s, 0);
    let stale = Pending::new(&a, &s, 0);
    first.complete(Finished::ok(0));
    rx.recv_timeout(WAIT).unwrap();
    a.begin_io().expect("reusable once completed");
    a.started(AsyncOperation::Disconnect);
    stale.complete(Finished::ok(0));
}
