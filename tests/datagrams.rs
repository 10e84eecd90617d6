//! Datagrams, flags, Unix sockets and completion queues through the safe core, over real
//! loopback (and Unix) sockets: the same contract the C tests check through the header.

use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::IntoRawFd;
use std::os::linux::net::SocketAddrExt;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sockasync::engine::cq::CompletionQueue;
use sockasync::engine::endpoint::{self, Endpoint};
use sockasync::engine::{Args, Socket};
use sockasync::error::{AsyncOperation, SocketError, SocketFlags, Status};

const WAIT: Duration = Duration::from_secs(10);
const SUCCESS: i32 = SocketError::Success as i32;

/// Args whose callback reports (bytes, error, flags) to a channel.
fn args() -> (Arc<Args>, Receiver<(usize, i32, i32)>) {
    let (tx, rx) = channel();
    let tx = Mutex::new(tx);
    let completion = Box::new(move |_: &Arc<Socket>, a: &Arc<Args>| {
        let _ = tx
            .lock()
            .unwrap()
            .send((a.bytes_transferred(), a.socket_error(), a.flags()));
    });
    (Arc::new(Args::new(completion, 0)), rx)
}

/// Runs an operation to its end, either way: (bytes, error, flags).
fn run(
    a: &Arc<Args>,
    rx: &Receiver<(usize, i32, i32)>,
    start: impl FnOnce(&Arc<Args>) -> Result<bool, sockasync::error::Reject>,
) -> (usize, i32, i32) {
    if start(a).expect("accepted") {
        rx.recv_timeout(WAIT).expect("a callback")
    } else {
        (a.bytes_transferred(), a.socket_error(), a.flags())
    }
}

fn udp(bind: &str) -> (Arc<Socket>, SocketAddr) {
    let v6 = bind.starts_with('[');
    let s = Socket::create(if v6 { 23 } else { 2 }, 2, 17).unwrap();
    s.bind(bind.parse::<SocketAddr>().unwrap()).unwrap();
    let addr = s.local_endpoint().unwrap();
    (s, addr)
}

#[test]
fn send_to_and_receive_from_report_sizes_senders_and_operations() {
    for bind in ["127.0.0.1:0", "[::1]:0"] {
        let (a, a_addr) = udp(bind);
        let (b, b_addr) = udp(bind);
        let (e, rx) = args();
        let mut inbox = [0u8; 32];
        e.set_buffer(inbox.as_mut_ptr(), inbox.len()).unwrap();
        assert!(
            b.receive_from_async(&e).unwrap(),
            "nothing sent yet: pending"
        );

        let (s, srx) = args();
        let mut msg = *b"to b";
        s.set_buffer(msg.as_mut_ptr(), msg.len()).unwrap();
        s.set_remote_endpoint(Some(b_addr)).unwrap();
        assert_eq!(run(&s, &srx, |x| a.send_to_async(x)), (4, SUCCESS, 0));
        assert_eq!(s.last_operation(), AsyncOperation::SendTo as i32);

        assert_eq!(rx.recv_timeout(WAIT).unwrap(), (4, SUCCESS, 0));
        assert_eq!(&inbox[..4], b"to b");
        assert_eq!(e.last_operation(), AsyncOperation::ReceiveFrom as i32);
        assert_eq!(e.endpoint().unwrap().as_ip(), Some(a_addr), "the sender");
    }
}

#[test]
fn truncation_peek_zero_length_and_message_size() {
    let (a, _) = udp("127.0.0.1:0");
    let (b, b_addr) = udp("127.0.0.1:0");
    let (e, rx) = args();
    e.set_remote_endpoint(Some(b_addr)).unwrap();
    let mut big = vec![9u8; 70_000];
    e.set_buffer(big.as_mut_ptr(), big.len()).unwrap();
    let too_big = run(&e, &rx, |x| a.send_to_async(x));
    assert_eq!(too_big, (0, SocketError::MessageSize as i32, 0));
    e.set_buffer(big.as_mut_ptr(), 50).unwrap();
    assert_eq!(run(&e, &rx, |x| a.send_to_async(x)).1, SUCCESS);
    e.set_buffer(std::ptr::null_mut(), 0).unwrap();
    assert_eq!(
        run(&e, &rx, |x| a.send_to_async(x)),
        (0, SUCCESS, 0),
        "zero-length"
    );

    let mut small = [0u8; 8];
    e.set_buffer(small.as_mut_ptr(), small.len()).unwrap();
    e.set_flags(SocketFlags::Peek as i32).unwrap();
    let truncated = (8, SUCCESS, SocketFlags::Truncated as i32);
    assert_eq!(
        run(&e, &rx, |x| b.receive_from_async(x)),
        truncated,
        "peeked"
    );
    assert_eq!(
        run(&e, &rx, |x| b.receive_from_async(x)),
        truncated,
        "taken"
    );
    assert_eq!(
        run(&e, &rx, |x| b.receive_from_async(x)),
        (0, SUCCESS, 0),
        "empty one"
    );
    assert_eq!(
        e.set_flags(0x8).unwrap_err().status,
        Status::InvalidArgument,
        "unknown bits"
    );
}

#[test]
fn an_ipv4_sender_reads_as_ipv4_mapped_on_a_dual_mode_socket() {
    let (dual, dual_addr) = udp("[::ffff:127.0.0.1]:0");
    let plain = UdpSocket::bind("127.0.0.1:0").unwrap();
    plain
        .send_to(b"hi", ("127.0.0.1", dual_addr.port()))
        .unwrap();
    let (e, rx) = args();
    let mut inbox = [0u8; 4];
    e.set_buffer(inbox.as_mut_ptr(), inbox.len()).unwrap();
    assert_eq!(run(&e, &rx, |x| dual.receive_from_async(x)).0, 2);
    let sender = e.endpoint().unwrap().to_string();
    let expected = format!("[::ffff:127.0.0.1]:{}", plain.local_addr().unwrap().port());
    assert_eq!(sender, expected);
}

#[test]
fn unix_stream_and_datagram_sockets_use_the_same_operations() {
    let name = format!("unix:@sockasync-rust-{}", std::process::id());
    let listener = Socket::create(1, 1, 0).unwrap();
    listener
        .bind(endpoint::parse(name.as_bytes()).unwrap())
        .unwrap();
    listener.listen(4).unwrap();
    assert_eq!(listener.address(false).unwrap().to_string(), name);
    let mut peer = std::os::unix::net::UnixStream::connect_addr(
        &std::os::unix::net::SocketAddr::from_abstract_name(&name.as_bytes()[6..]).unwrap(),
    )
    .unwrap();
    let (e, rx) = args();
    run(&e, &rx, |x| listener.accept_async(x));
    let accepted = e.accept_socket();
    assert!(!accepted.is_null());
    // SAFETY: the handle came from accept_socket, which handed this test its reference.
    let server = unsafe { Arc::from_raw(accepted) };
    peer.write_all(b"unix").unwrap();
    let mut inbox = [0u8; 4];
    e.set_buffer(inbox.as_mut_ptr(), 4).unwrap();
    assert_eq!(run(&e, &rx, |x| server.receive_async(x)).0, 4);
    assert_eq!(&inbox, b"unix");

    // Datagrams between two named Unix sockets.
    let (x, y) = (
        Socket::create(1, 2, 0).unwrap(),
        Socket::create(1, 2, 0).unwrap(),
    );
    let y_name = format!("{name}-y");
    x.bind(endpoint::parse(format!("{name}-x").as_bytes()).unwrap())
        .unwrap();
    y.bind(endpoint::parse(y_name.as_bytes()).unwrap()).unwrap();
    e.set_remote_endpoint(Some(endpoint::parse(y_name.as_bytes()).unwrap()))
        .unwrap();
    assert_eq!(run(&e, &rx, |a| x.send_to_async(a)), (4, SUCCESS, 0));
    assert_eq!(run(&e, &rx, |a| y.receive_from_async(a)).0, 4);
    assert_eq!(e.endpoint().unwrap().to_string(), format!("{name}-x"));
}

#[test]
fn an_adopted_socketpair_end_works_and_a_pipe_is_refused() {
    let (mine, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let s = Socket::adopt(mine.into_raw_fd(), true).unwrap();
    let (e, rx) = args();
    let mut msg = *b"pair";
    e.set_buffer(msg.as_mut_ptr(), 4).unwrap();
    assert_eq!(run(&e, &rx, |a| s.send_async(a)), (4, SUCCESS, 0));
    let mut got = [0u8; 4];
    theirs.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"pair");
    assert_eq!(s.address(true).unwrap(), Endpoint::unnamed_unix());

    let (reader, writer) = std::io::pipe().unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&reader);
    let refused = Socket::adopt(fd, false)
        .err()
        .expect("a pipe is not a socket");
    assert_eq!(refused.status, Status::InvalidArgument);
    drop((reader, writer));
}

#[test]
fn a_queue_gets_each_pending_completion_once_from_four_threads() {
    const CONNS: usize = 16;
    const ROUNDS: usize = 200;
    let queue = Arc::new(CompletionQueue::new().unwrap());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut conns = Vec::new();
    for i in 0..CONNS {
        let s = Socket::create(2, 1, 6).unwrap();
        let (c, crx) = args();
        c.set_remote_endpoint(Some(listener.local_addr().unwrap()))
            .unwrap();
        run(&c, &crx, |a| s.connect_async(a));
        let (peer, _) = listener.accept().unwrap();
        let e = Arc::new(Args::with_queue(Arc::clone(&queue), i));
        conns.push((s, e, peer));
    }
    // Every connection: a pending zero-byte receive, then its peer writes; repeated.
    let taken = Arc::new(AtomicU64::new(0));
    let mut pendings = 0u64;
    for _ in 0..ROUNDS {
        for (s, e, _) in &conns {
            if s.receive_async(e).unwrap() {
                pendings += 1;
            }
        }
        for (_, _, peer) in &mut conns {
            peer.write_all(b"!").unwrap();
        }
        let wanted = pendings;
        let drainers: Vec<_> = (0..4)
            .map(|_| {
                let (queue, taken) = (Arc::clone(&queue), Arc::clone(&taken));
                std::thread::spawn(move || {
                    while taken.load(SeqCst) < wanted {
                        let n = queue.wait(8, Some(Duration::from_millis(20)), |_, a| {
                            // SAFETY: the queue hands out args this test still holds.
                            assert_eq!(unsafe { (*a).socket_error() }, SUCCESS);
                        });
                        taken.fetch_add(n as u64, SeqCst);
                    }
                })
            })
            .collect();
        drainers.into_iter().for_each(|d| d.join().unwrap());
        // Drain what the zero-byte receives left readable.
        for (s, e, _) in &conns {
            let mut sink = [0u8; 8];
            e.set_buffer(sink.as_mut_ptr(), sink.len()).unwrap();
            assert!(!s.receive_async(e).unwrap(), "data is there: done at once");
            e.set_buffer(std::ptr::null_mut(), 0).unwrap();
        }
    }
    assert_eq!(
        taken.load(SeqCst),
        pendings,
        "one completion per pending start"
    );
    assert_eq!(
        queue.wait(8, Some(Duration::ZERO), |_, _| ()),
        0,
        "and no more"
    );
}
