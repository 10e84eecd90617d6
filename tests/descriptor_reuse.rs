//! A closed socket's descriptor number can go to a newer socket before the reactor has
//! handled the old socket's release. That late release must not make a runtime shutdown
//! forget the newer socket: its waiting operation must still end with OperationAborted.
//! The runtime is process-wide and this test shuts it down, so the file holds one test (its
//! own process).

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sockasync::engine::{Args, Socket, runtime};
use sockasync::error::SocketError;

const WAIT: Duration = Duration::from_secs(10);
const ABORTED: i32 = SocketError::OperationAborted as i32;

/// Args whose callback reports the socket error it completed with.
fn reporting_args(report: Sender<i32>) -> Arc<Args> {
    Arc::new(Args::new(
        Box::new(move |_, args| {
            let _ = report.send(args.socket_error());
        }),
        0,
    ))
}

fn tcp() -> Arc<Socket> {
    Socket::create(2, 1, 6).expect("create a TCP socket")
}

fn connected(listener: &TcpListener) -> (Arc<Socket>, TcpStream) {
    let socket = tcp();
    let (report, reported) = mpsc::channel();
    let args = reporting_args(report);
    args.set_remote_endpoint(Some(listener.local_addr().unwrap()))
        .unwrap();
    if socket.connect_async(&args).unwrap() {
        reported.recv_timeout(WAIT).expect("the connect's callback");
    }
    assert_eq!(args.socket_error(), SocketError::Success as i32, "connect");
    let (peer, _) = listener.accept().unwrap();
    (socket, peer)
}

#[test]
fn shutdown_aborts_a_socket_whose_number_was_released_late() {
    // One reactor with Inline dispatch: a callback that blocks holds every message back.
    runtime::configure(1, 0).expect("configure before first use");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();

    // A receive that will wait on the idle socket until its socket is closed.
    let (idle, _idle_peer) = connected(&listener);
    let (idle_report, idle_reported) = mpsc::channel();
    let idle_args = reporting_args(idle_report);
    let mut idle_inbox = [0u8; 16];
    idle_args
        .set_buffer(idle_inbox.as_mut_ptr(), idle_inbox.len())
        .unwrap();
    assert!(idle.receive_async(&idle_args).unwrap(), "nothing was sent");

    // Park the reactor thread in a callback until told to go on.
    let (blocker, mut blocker_peer) = connected(&listener);
    let (entered, entered_seen) = mpsc::channel();
    let (go_on, go_on_seen) = mpsc::channel::<()>();
    let go_on_seen = Mutex::new(go_on_seen);
    let blocking_args = Arc::new(Args::new(
        Box::new(move |_, _| {
            let _ = entered.send(());
            let _ = go_on_seen.lock().unwrap().recv_timeout(WAIT);
        }),
        0,
    ));
    let mut byte = [0u8; 1];
    blocking_args.set_buffer(byte.as_mut_ptr(), 1).unwrap();
    assert!(blocker.receive_async(&blocking_args).unwrap());
    blocker_peer.write_all(b"x").unwrap();
    entered_seen
        .recv_timeout(WAIT)
        .expect("the reactor ran the blocking callback");

    // With the reactor parked, the old socket's release waits in its channel while the
    // newer socket takes the same number.
    let old = tcp();
    let number = old.raw_fd().unwrap();
    old.close();
    let newer = tcp();
    assert_eq!(
        newer.raw_fd(),
        Some(number),
        "the kernel hands out the lowest free number, which the close just freed"
    );
    newer
        .bind("127.0.0.1:0".parse::<SocketAddr>().unwrap())
        .unwrap();
    newer.listen(1).unwrap();
    let (accept_report, accept_reported) = mpsc::channel();
    let accept_args = reporting_args(accept_report);
    assert!(newer.accept_async(&accept_args).unwrap(), "nobody connects");

    // The idle socket's abort is posted behind the old release, so once its callback came,
    // the reactor has handled that release.
    idle.close();
    go_on.send(()).unwrap();
    assert_eq!(
        idle_reported.recv_timeout(WAIT),
        Ok(ABORTED),
        "the idle receive ends with the close"
    );

    runtime::shutdown().expect("shutdown from a plain thread");
    assert_eq!(
        accept_reported.try_recv(),
        Ok(ABORTED),
        "shutdown closed the newer socket and aborted its accept before returning"
    );
    assert!(newer.is_closed());
}
