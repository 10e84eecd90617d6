//! Send packets over loopback: memory, path and descriptor elements arriving in order byte for
//! byte (a 100 MB file among them, sent while the peer is not reading, so it goes pending),
//! .NET's rules (count 0 = to the end of the file, empty memory elements skipped, an empty
//! list, a range past the end, a missing file, an unconnected socket), files opened by the
//! operation closed when it completes, close while pending, and args reused afterwards.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sockasync::engine::{Args, FileSource, Packet, Socket};
use sockasync::error::{AsyncOperation, Reject, SocketError, Status};

const WAIT: Duration = Duration::from_secs(30);
const SUCCESS: i32 = SocketError::Success as i32;
const INVALID: i32 = SocketError::InvalidArgument as i32;
const MB: usize = 1 << 20;

#[derive(Debug)]
struct Completed {
    bytes: usize,
    error: i32,
    operation: i32,
}

fn args() -> (Arc<Args>, Receiver<Completed>) {
    let (tx, rx) = channel();
    let tx = Mutex::new(tx);
    let args = Args::new(
        Box::new(move |_, a| {
            let _ = tx.lock().unwrap().send(Completed {
                bytes: a.bytes_transferred(),
                error: a.socket_error(),
                operation: a.last_operation(),
            });
        }),
        0,
    );
    (Arc::new(args), rx)
}

/// The result of an operation that was accepted, whichever way it completed.
fn finish(pending: bool, a: &Args, rx: &Receiver<Completed>) -> (usize, i32) {
    if pending {
        let c = rx.recv_timeout(WAIT).expect("callback");
        assert_eq!(c.operation, AsyncOperation::SendPackets as i32);
        (c.bytes, c.error)
    } else {
        (a.bytes_transferred(), a.socket_error())
    }
}

fn send_packets(s: &Arc<Socket>, a: &Arc<Args>, rx: &Receiver<Completed>) -> (usize, i32) {
    let pending = s.send_packets_async(a).expect("accepted");
    finish(pending, a, rx)
}

fn tcp() -> Arc<Socket> {
    Socket::create(2, 1, 6).expect("create")
}

/// A library socket connected to a std peer.
fn connected() -> (Arc<Socket>, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let s = tcp();
    let (a, rx) = args();
    a.set_remote_endpoint(Some(listener.local_addr().unwrap()))
        .unwrap();
    let pending = s.connect_async(&a).unwrap();
    let error = if pending {
        rx.recv_timeout(WAIT).unwrap().error
    } else {
        a.socket_error()
    };
    assert_eq!(error, SUCCESS, "connect");
    let (peer, _) = listener.accept().unwrap();
    peer.set_read_timeout(Some(WAIT)).unwrap();
    (s, peer)
}

/// A directory of its own under /tmp, removed with everything in it when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = PathBuf::from(format!("/tmp/sockasync-packets-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn file(&self, name: &str, content: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A reproducible byte stream (splitmix64), produced in whole 8-byte words.
struct Pattern(u64);

impl Pattern {
    fn fill(&mut self, out: &mut [u8]) {
        assert_eq!(out.len() % 8, 0, "whole words keep the stream aligned");
        for word in out.chunks_exact_mut(8) {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            word.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
    }

    fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0; len.next_multiple_of(8)];
        Pattern(seed).fill(&mut out);
        out.truncate(len);
        out
    }
}

/// Writes `len` bytes (a multiple of 1 MiB) of the seed's pattern to `path`.
fn write_pattern_file(path: &Path, seed: u64, len: usize) {
    let mut file = File::create(path).unwrap();
    let mut pattern = Pattern(seed);
    let mut block = vec![0u8; MB];
    for _ in 0..len / MB {
        pattern.fill(&mut block);
        file.write_all(&block).unwrap();
    }
}

/// Reads exactly `len` bytes from the peer, checking them against the seed's pattern.
fn read_pattern(peer: &mut TcpStream, seed: u64, len: usize) {
    let mut pattern = Pattern(seed);
    let mut expected = vec![0u8; MB];
    let mut got = vec![0u8; 64 * 1024];
    let mut checked = 0;
    while checked < len {
        let block_at = checked % MB;
        if block_at == 0 {
            pattern.fill(&mut expected);
        }
        let want = (MB - block_at).min(got.len()).min(len - checked);
        peer.read_exact(&mut got[..want]).unwrap();
        assert!(
            got[..want] == expected[block_at..block_at + want],
            "byte {checked}..{} differs from the file",
            checked + want
        );
        checked += want;
    }
}

/// How many of this process's descriptors are open on `path` (the library's files too).
fn open_on(path: &Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| target == path)
        .count()
}

fn path_element(path: &Path, offset: i64, count: usize) -> Packet {
    let path = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    Packet::file(FileSource::Path(path), offset, count).unwrap()
}

fn fd_element(file: &File, offset: i64, count: usize) -> Packet {
    Packet::file(FileSource::Fd(file.as_raw_fd()), offset, count).unwrap()
}

fn memory_element(bytes: &[u8]) -> Packet {
    Packet::memory(bytes.as_ptr() as *mut u8, 0, bytes.len()).unwrap()
}

/// A send-packets of one whole file, written from `seed`, that went pending: the peer has
/// read nothing, and `len` bytes cannot fit the kernel's buffers. (Keep `dir` bound: the
/// file goes with it.)
struct PendingFile {
    dir: TempDir,
    path: PathBuf,
    s: Arc<Socket>,
    peer: TcpStream,
    a: Arc<Args>,
    rx: Receiver<Completed>,
}

impl PendingFile {
    fn start(seed: u64, len: usize) -> PendingFile {
        let dir = TempDir::new();
        let path = dir.0.join("whole");
        write_pattern_file(&path, seed, len);
        let (s, peer) = connected();
        let (a, rx) = args();
        a.set_send_packets(Some(vec![path_element(&path, 0, 0)]))
            .unwrap();
        assert!(
            s.send_packets_async(&a).unwrap(),
            "{len} bytes cannot go at once"
        );
        PendingFile {
            dir,
            path,
            s,
            peer,
            a,
            rx,
        }
    }
}

fn read_exactly(peer: &mut TcpStream, len: usize) -> Vec<u8> {
    let mut got = vec![0; len];
    peer.read_exact(&mut got).unwrap();
    got
}

/// Sends a marker with a plain send and checks that the peer's next bytes are `before` and
/// then the marker: what was sent before it arrived, and nothing else is on the way.
fn next_bytes_are(s: &Arc<Socket>, peer: &mut TcpStream, before: &[u8]) {
    let (a, rx) = args();
    let mut marker = b"|mark".to_vec();
    a.set_buffer(marker.as_mut_ptr(), marker.len()).unwrap();
    let pending = s.send_async(&a).unwrap();
    if pending {
        assert_eq!(rx.recv_timeout(WAIT).unwrap().error, SUCCESS);
    }
    let got = read_exactly(peer, before.len() + marker.len());
    assert_eq!(&got[..before.len()], before);
    assert_eq!(&got[before.len()..], marker);
}

#[test]
fn memory_path_and_descriptor_elements_arrive_in_order_byte_for_byte() {
    let dir = TempDir::new();
    let one = Pattern::bytes(1, 5000);
    let two = Pattern::bytes(2, 3001);
    let by_path = dir.file("one", &one);
    let mut by_fd = File::open(dir.file("two", &two)).unwrap();
    by_fd.seek(SeekFrom::Start(7)).unwrap();
    let head = Pattern::bytes(3, 100);
    let middle = b"-- between the files --".to_vec();

    let (s, mut peer) = connected();
    let (a, rx) = args();
    let offset_memory = Packet::memory(head.as_ptr() as *mut u8, 10, 50).unwrap();
    a.set_send_packets(Some(vec![
        memory_element(&head),
        path_element(&by_path, 1000, 2000),
        fd_element(&by_fd, 0, 0),
        memory_element(&middle),
        path_element(&by_path, 0, 0),
        offset_memory,
        fd_element(&by_fd, 3000, 1),
    ]))
    .unwrap();
    let mut expected = head.clone();
    expected.extend_from_slice(&one[1000..3000]);
    expected.extend_from_slice(&two);
    expected.extend_from_slice(&middle);
    expected.extend_from_slice(&one);
    expected.extend_from_slice(&head[10..60]);
    expected.extend_from_slice(&two[3000..]);

    assert_eq!(send_packets(&s, &a, &rx), (expected.len(), SUCCESS));
    assert_eq!(a.last_operation(), AsyncOperation::SendPackets as i32);
    assert!(read_exactly(&mut peer, expected.len()) == expected);
    next_bytes_are(&s, &mut peer, b"");

    // The descriptor stays the caller's: open, and its position untouched.
    assert_eq!(by_fd.stream_position().unwrap(), 7);
    let mut rest = Vec::new();
    by_fd.read_to_end(&mut rest).unwrap();
    assert!(rest == two[7..]);
    assert_eq!(open_on(&by_path), 0, "the file it opened is closed again");
    s.close();
}

#[test]
fn a_100_mb_file_goes_pending_and_arrives_whole() {
    const SEED: u64 = 0x5eed_0100;
    const LEN: usize = 100 * MB;
    let PendingFile {
        path,
        s,
        mut peer,
        a,
        rx,
        dir: _dir,
        ..
    } = PendingFile::start(SEED, LEN);
    assert_eq!(open_on(&path), 1, "the operation holds the file open");
    assert_eq!(
        a.set_send_packets(None).unwrap_err().status,
        Status::InProgress
    );
    assert_eq!(
        s.send_packets_async(&a).unwrap_err().status,
        Status::InProgress
    );
    read_pattern(&mut peer, SEED, LEN);
    let done = rx.recv_timeout(WAIT).unwrap();
    assert_eq!((done.bytes, done.error), (LEN, SUCCESS));
    assert_eq!(open_on(&path), 0, "closed before the callback ran");
    next_bytes_are(&s, &mut peer, b"");
    s.close();
}

#[test]
fn count_0_sends_from_the_offset_to_the_end_of_the_file() {
    let dir = TempDir::new();
    let content = Pattern::bytes(4, 10_000);
    let path = dir.file("f", &content);
    let file = File::open(&path).unwrap();
    let (s, mut peer) = connected();
    let (a, rx) = args();
    a.set_send_packets(Some(vec![
        path_element(&path, 9_000, 0),
        fd_element(&file, 1234, 0),
        // At the very end: nothing, and no error.
        path_element(&path, 10_000, 0),
    ]))
    .unwrap();
    assert_eq!(send_packets(&s, &a, &rx), (1000 + 10_000 - 1234, SUCCESS));
    assert!(read_exactly(&mut peer, 1000) == content[9_000..]);
    assert!(read_exactly(&mut peer, 10_000 - 1234) == content[1234..]);
    next_bytes_are(&s, &mut peer, b"");
    s.close();
}

#[test]
fn empty_memory_elements_are_skipped_and_an_empty_list_sends_nothing() {
    let (s, mut peer) = connected();
    let (a, rx) = args();
    a.set_send_packets(Some(vec![])).unwrap();
    assert!(
        !s.send_packets_async(&a).unwrap(),
        "nothing to send: done at once"
    );
    assert_eq!((a.bytes_transferred(), a.socket_error()), (0, SUCCESS));
    assert_eq!(a.last_operation(), AsyncOperation::SendPackets as i32);

    let word = b"word".to_vec();
    a.set_send_packets(Some(vec![
        Packet::memory(std::ptr::null_mut(), 0, 0).unwrap(),
        memory_element(&word[..0]),
        memory_element(&word),
        Packet::memory(std::ptr::null_mut(), 0, 0).unwrap(),
    ]))
    .unwrap();
    assert_eq!(send_packets(&s, &a, &rx), (4, SUCCESS));
    next_bytes_are(&s, &mut peer, b"word");

    a.set_send_packets(Some(vec![
        Packet::memory(std::ptr::null_mut(), 0, 0).unwrap(),
    ]))
    .unwrap();
    assert_eq!(send_packets(&s, &a, &rx), (0, SUCCESS));
    next_bytes_are(&s, &mut peer, b"");
    s.close();
}

#[test]
fn a_range_past_the_end_completes_with_invalid_argument_and_the_bytes_before_it() {
    let dir = TempDir::new();
    let path = dir.file("hundred", &Pattern::bytes(5, 100));
    let (s, mut peer) = connected();
    let (a, rx) = args();
    let head = b"head".to_vec();
    let tail = b"tail".to_vec();
    for past_the_end in [
        path_element(&path, 50, 51),
        path_element(&path, 101, 0),
        path_element(&path, 100, 1),
    ] {
        a.set_send_packets(Some(vec![
            memory_element(&head),
            past_the_end,
            memory_element(&tail),
        ]))
        .unwrap();
        assert_eq!(send_packets(&s, &a, &rx), (4, INVALID));
        // "head" went out, and nothing after it.
        next_bytes_are(&s, &mut peer, b"head");
        assert_eq!(open_on(&path), 0);
    }
    s.close();
}

#[test]
fn a_file_range_is_checked_when_reached_against_the_file_as_it_is_then() {
    let dir = TempDir::new();
    let path = dir.file("shrinks", &Pattern::bytes(6, 100));
    let (s, mut peer) = connected();
    let (a, rx) = args();
    let big = Pattern::bytes(7, 16 * MB);
    a.set_send_packets(Some(vec![
        memory_element(&big),
        path_element(&path, 0, 100),
    ]))
    .unwrap();
    assert!(s.send_packets_async(&a).unwrap(), "16 MB cannot go at once");
    // The range fitted when the operation started; it no longer does when reached.
    File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(50)
        .unwrap();
    assert!(read_exactly(&mut peer, big.len()) == big);
    let done = rx.recv_timeout(WAIT).unwrap();
    assert_eq!((done.bytes, done.error), (big.len(), INVALID));
    next_bytes_are(&s, &mut peer, b"");
    s.close();
}

#[test]
fn a_file_that_gets_shorter_while_it_is_sent_ends_with_invalid_argument() {
    const SEED: u64 = 8;
    let PendingFile {
        path,
        s,
        mut peer,
        rx,
        dir: _dir,
        ..
    } = PendingFile::start(SEED, 16 * MB);
    // Cut while the peer has read nothing, so the file is still far from sent.
    File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(MB as u64)
        .unwrap();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        got
    });
    let done = rx.recv_timeout(WAIT).unwrap();
    assert_eq!(done.error, INVALID);
    // Everything up to the new end goes out, and perhaps more, sent before the cut.
    assert!(done.bytes >= MB && done.bytes < 16 * MB, "{}", done.bytes);
    s.shutdown(sockasync::engine::ShutdownHow::Send).unwrap();
    let got = reader.join().unwrap();
    assert_eq!(got.len(), done.bytes);
    assert!(got[..MB] == Pattern::bytes(SEED, MB));
    s.close();
}

#[test]
fn a_missing_file_is_rejected_at_the_call_naming_it_and_nothing_is_sent() {
    let dir = TempDir::new();
    let present = dir.file("present", b"present");
    let missing = dir.0.join("missing");
    let (s, mut peer) = connected();
    let (a, rx) = args();
    let head = b"head".to_vec();
    let mut before = b"before".to_vec();
    a.set_buffer(before.as_mut_ptr(), before.len()).unwrap();
    assert!(!s.send_async(&a).unwrap());
    a.set_send_packets(Some(vec![
        memory_element(&head),
        path_element(&present, 0, 0),
        path_element(&missing, 0, 0),
    ]))
    .unwrap();
    let reject = s.send_packets_async(&a).unwrap_err();
    assert_eq!(reject.status, Status::InvalidArgument);
    assert!(
        reject.message.contains(missing.to_str().unwrap()),
        "{}",
        reject.message
    );
    assert!(reject.message.contains("element 2"), "{}", reject.message);
    // Nothing changed: the last operation's results, the args free, the first file closed.
    assert_eq!(a.last_operation(), AsyncOperation::Send as i32);
    assert_eq!((a.bytes_transferred(), a.socket_error()), (6, SUCCESS));
    assert!(!a.is_in_flight());
    assert_eq!(open_on(&present), 0);
    next_bytes_are(&s, &mut peer, b"before");

    // A directory and a closed descriptor are refused at the call too.
    a.set_send_packets(Some(vec![path_element(&dir.0, 0, 0)]))
        .unwrap();
    let reject = s.send_packets_async(&a).unwrap_err();
    assert_eq!(reject.status, Status::InvalidArgument);
    assert!(
        reject.message.contains("not a regular file"),
        "{}",
        reject.message
    );
    let write_only = File::options().write(true).open(&present).unwrap();
    a.set_send_packets(Some(vec![fd_element(&write_only, 0, 0)]))
        .unwrap();
    let reject = s.send_packets_async(&a).unwrap_err();
    assert!(
        reject.message.contains("not open for reading"),
        "{}",
        reject.message
    );
    // (A number far above any open descriptor: a closed one could be reused meanwhile.)
    let not_open = Packet::file(FileSource::Fd(999_999), 0, 0).unwrap();
    a.set_send_packets(Some(vec![not_open])).unwrap();
    assert_eq!(
        s.send_packets_async(&a).unwrap_err().status,
        Status::InvalidArgument
    );

    // Once the file is there, the same args send it.
    std::fs::write(&missing, b"found").unwrap();
    a.set_send_packets(Some(vec![path_element(&missing, 0, 0)]))
        .unwrap();
    assert_eq!(send_packets(&s, &a, &rx), (5, SUCCESS));
    next_bytes_are(&s, &mut peer, b"found");
    s.close();
}

#[test]
fn only_connected_stream_sockets_and_args_with_elements_are_accepted() {
    let (a, _rx) = args();
    let word = b"word".to_vec();
    let unconnected = tcp();
    let status = |s: &Arc<Socket>, a: &Arc<Args>| s.send_packets_async(a).unwrap_err().status;
    // .NET checks the elements before the connection.
    assert_eq!(status(&unconnected, &a), Status::InvalidArgument);
    a.set_send_packets(Some(vec![memory_element(&word)]))
        .unwrap();
    assert_eq!(status(&unconnected, &a), Status::NotSupported);

    let listening = tcp();
    listening
        .bind("127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap())
        .unwrap();
    listening.listen(1).unwrap();
    assert_eq!(status(&listening, &a), Status::NotSupported);

    let udp = Socket::create(2, 2, 17).unwrap();
    udp.bind("127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap())
        .unwrap();
    let (c, crx) = args();
    c.set_remote_endpoint(Some(udp.local_endpoint().unwrap()))
        .unwrap();
    if udp.connect_async(&c).unwrap() {
        crx.recv_timeout(WAIT).unwrap();
    }
    assert_eq!(c.socket_error(), SUCCESS);
    assert_eq!(status(&udp, &a), Status::NotSupported);

    unconnected.close();
    assert_eq!(status(&unconnected, &a), Status::Disposed);
    assert_eq!(a.last_operation(), AsyncOperation::None as i32);
    for s in [listening, udp] {
        s.close();
    }
}

#[test]
fn elements_are_checked_when_set() {
    let invalid = |made: Result<Packet, String>| made.unwrap_err();
    let dangling = std::ptr::NonNull::<u8>::dangling().as_ptr();
    assert!(invalid(Packet::memory(std::ptr::null_mut(), 0, 1)).contains("NULL"));
    assert!(invalid(Packet::memory(dangling, -1, 1)).contains("negative"));
    assert!(invalid(Packet::memory(dangling, i64::MAX, 1)).contains("SSIZE_MAX"));
    assert!(invalid(Packet::memory(dangling, 1, isize::MAX as usize)).contains("SSIZE_MAX"));
    let path = || FileSource::Path(CString::new("/tmp").unwrap());
    assert!(invalid(Packet::file(path(), -5, 0)).contains("negative"));
    assert!(invalid(Packet::file(FileSource::Path(CString::default()), 0, 0)).contains("empty"));
    assert!(invalid(Packet::file(FileSource::Fd(-1), 0, 0)).contains("-1"));

    let (a, _rx) = args();
    let half = isize::MAX as usize / 2 + 1;
    let too_much = vec![
        Packet::memory(dangling, 0, half).unwrap(),
        Packet::memory(dangling, 0, half).unwrap(),
    ];
    let reject: Reject = a.set_send_packets(Some(too_much)).unwrap_err();
    assert_eq!(reject.status, Status::InvalidArgument);
}

#[test]
fn close_while_pending_aborts_with_the_bytes_sent_and_closes_the_file() {
    let PendingFile {
        dir,
        path,
        s,
        peer,
        a,
        rx,
    } = PendingFile::start(9, 16 * MB);
    s.close();
    let done = rx.recv_timeout(WAIT).unwrap();
    assert_eq!(done.error, SocketError::OperationAborted as i32);
    assert_eq!(done.operation, AsyncOperation::SendPackets as i32);
    assert!(done.bytes > 0 && done.bytes < 16 * MB, "{}", done.bytes);
    assert_eq!(open_on(&path), 0);
    drop(peer);

    // The args are free again, with their elements still set.
    let (s, mut peer) = connected();
    let small = dir.file("small", b"small file");
    a.set_send_packets(Some(vec![path_element(&small, 0, 0)]))
        .unwrap();
    assert_eq!(send_packets(&s, &a, &rx), (10, SUCCESS));
    assert_eq!(send_packets(&s, &a, &rx), (10, SUCCESS));
    let mut word = b"word".to_vec();
    a.set_buffer(word.as_mut_ptr(), word.len()).unwrap();
    assert!(!s.send_async(&a).unwrap());
    assert_eq!(a.last_operation(), AsyncOperation::Send as i32);
    next_bytes_are(&s, &mut peer, b"small filesmall fileword");
    s.close();
}

#[test]
fn a_send_queued_behind_send_packets_goes_out_after_all_of_it() {
    const SEED: u64 = 10;
    let PendingFile {
        dir: _dir,
        s,
        mut peer,
        rx,
        ..
    } = PendingFile::start(SEED, 8 * MB);
    let (b, brx) = args();
    let mut after = b"after".to_vec();
    b.set_buffer(after.as_mut_ptr(), after.len()).unwrap();
    assert!(s.send_async(&b).unwrap(), "queued behind the send-packets");
    read_pattern(&mut peer, SEED, 8 * MB);
    assert_eq!(read_exactly(&mut peer, 5), b"after");
    assert_eq!(rx.recv_timeout(WAIT).unwrap().error, SUCCESS);
    assert_eq!(brx.recv_timeout(WAIT).unwrap().error, SUCCESS);
    s.close();
}
