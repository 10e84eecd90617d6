//! Random programs of C API calls over real loopback sockets.
//!
//! The input is a program: each operation is an opcode byte and its operand bytes (a missing
//! byte reads as 0). It works on a small pool of socket and args slots; an empty slot passes
//! NULL, so every pointer argument is also tried as NULL. After every call the contract's
//! invariants are checked (status, message, "rejected means unchanged"); at the end of each
//! input everything is closed and freed and the run waits (at most `DRAIN`) for every
//! pending start's callback, then checks that none came twice and that no descriptor leaked.
//!
//! Sockets are TCP and UDP over IPv4 and IPv6, Unix stream and datagram sockets on abstract
//! names of this process (`unix:@sockasync-fuzz-<pid>-<n>`), and adopted ends of socketpairs
//! (`sock_from_fd`). Args report to the callback or to the input's completion queue, which
//! the program reads as it goes and the end drains: one posted completion per pending start
//! of queued args, as one callback per pending start of the others.
//!
//! What the harness never does, because the contract forbids it: use a handle after freeing
//! it (a freed slot is forgotten), give memory that does not outlive the operations using it
//! (the buffers are allocated once per process and never written after), or name an address
//! off loopback. Endpoint text that would parse to anything but a socket of this pool (or
//! port 0, which refuses, or an abstract name of this process) is replaced before it reaches
//! the library, and a connect or send-to first checks the endpoint the args hold, so they
//! can only reach this process's own sockets. No Unix path is ever bound (a bind creates a
//! file); the only files are the one temporary file send-packets reads and missing paths.

#![no_main]

use std::ffi::{CStr, CString, c_char, c_void};
use std::fs::File;
use std::os::fd::{AsRawFd, IntoRawFd};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::sync::atomic::{
    AtomicBool, AtomicIsize, AtomicPtr, AtomicU32, AtomicU64, Ordering::SeqCst,
};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use sockasync::args::{self as a, sock_args, sock_buf, sock_send_packet};
use sockasync::cq::{self as q, sock_cq};
use sockasync::engine::endpoint::{self, Endpoint};
use sockasync::error::{SocketError, SocketFlags, Status};
use sockasync::runtime as rt;
use sockasync::socket::{self as s, sock};
use sockasync::status as st;

const MAX_OPS: usize = 64;
const SOCKETS: usize = 6;
const ARGS: usize = 6;
/// Each args slot has its own buffer of this size, so two operations never share memory.
const REGION: usize = 64 * 1024;
/// More than one input can create; trackers are reused, never freed (a late callback from
/// an earlier input must find a live tracker and be reported, not touch freed memory).
const TRACKERS: usize = MAX_OPS + 1;
/// A completion this late is a hang (lost callback).
const DRAIN: Duration = Duration::from_secs(5);
/// The longest an `await` operation waits for one args' callback: on loopback a connect or
/// an accept completes in microseconds, and an operation that waits for data may never.
const AWAIT: Duration = Duration::from_millis(2);

const V4: i32 = 2;
const V6: i32 = 23;
const UNIX: i32 = 1;

const OP_ACCEPT: i32 = 1;
const OP_CONNECT: i32 = 2;
const OP_DISCONNECT: i32 = 3;
const OP_RECEIVE: i32 = 4;
const OP_RECEIVE_FROM: i32 = 5;
const OP_SEND: i32 = 7;
const OP_SEND_PACKETS: i32 = 8;
const OP_SEND_TO: i32 = 9;
const OPERATIONS: [i32; 8] = [
    OP_ACCEPT,
    OP_CONNECT,
    OP_DISCONNECT,
    OP_RECEIVE,
    OP_RECEIVE_FROM,
    OP_SEND,
    OP_SEND_PACKETS,
    OP_SEND_TO,
];
/// What a completion may leave in the flags: nothing, or what a receive-from reports.
const REPORTED_FLAGS: i32 =
    SocketFlags::Truncated as i32 | SocketFlags::ControlDataTruncated as i32;

// ---- completion accounting --------------------------------------------------------------

/// One per args object of an input; the args' user token points at it (low bits may carry
/// a tag, which `sock_args_set_user_token` tests).
struct Tracker {
    args: AtomicPtr<sock_args>,
    /// Pending starts not yet called back. Raised before a start (the callback may run before
    /// the start returns) and lowered again if it did not go pending.
    outstanding: AtomicIsize,
    /// What the callback does besides counting: start the same send or receive again (this
    /// many more times), and close the socket it ran for.
    reissues: AtomicU32,
    close_socket: AtomicBool,
    /// The callback tries `sock_runtime_shutdown`, which must be refused there.
    shutdown: AtomicBool,
    /// The args post to the input's completion queue: no callback runs for them.
    queued: AtomicBool,
    /// Handles the program gave to the next callback to free (see `hand_over`).
    free_args: AtomicPtr<sock_args>,
    free_socket: AtomicPtr<sock>,
}

#[allow(clippy::declare_interior_mutable_const)]
const NEW_TRACKER: Tracker = Tracker {
    args: AtomicPtr::new(std::ptr::null_mut()),
    outstanding: AtomicIsize::new(0),
    reissues: AtomicU32::new(0),
    close_socket: AtomicBool::new(false),
    shutdown: AtomicBool::new(false),
    queued: AtomicBool::new(false),
    free_args: AtomicPtr::new(std::ptr::null_mut()),
    free_socket: AtomicPtr::new(std::ptr::null_mut()),
};
static TRACKER: [Tracker; TRACKERS] = [NEW_TRACKER; TRACKERS];

/// Pending starts of this input, and callbacks seen (with a condvar for the final drain).
static PENDING: AtomicU64 = AtomicU64::new(0);
/// Pending starts of queued args this input: each posts one completion to the queue. And
/// the completions taken from it (by the program, or by a racing thread).
static QUEUED: AtomicU64 = AtomicU64::new(0);
static TAKEN: AtomicU64 = AtomicU64::new(0);
/// Set once a callback of this input may close its socket: the program no longer knows
/// which of its sockets are open.
static CALLBACKS_CLOSE: AtomicBool = AtomicBool::new(false);
static CALLBACKS: Mutex<u64> = Mutex::new(0);
static CALLED_BACK: Condvar = Condvar::new();

const TAG_MASK: usize = 7;

fn tracker_of(token: *mut c_void) -> &'static Tracker {
    let address = token as usize & !TAG_MASK;
    TRACKER
        .iter()
        .find(|t| std::ptr::from_ref(*t) as usize == address)
        .unwrap_or_else(|| panic!("callback with a user token no args was given: {token:p}"))
}

/// What every completion (a callback, or one taken from the queue) is handed: the args its
/// token's tracker names, made for this way of completing, with a SocketError and a known
/// last operation. Returns the tracker, the socket error and the operation.
fn check_completion(
    how: &str,
    e: *mut sock_args,
    token: *mut c_void,
    queued: bool,
) -> (&'static Tracker, i32, i32) {
    let tracker = tracker_of(token);
    assert_eq!(
        tracker.args.load(SeqCst),
        e,
        "{how} of args other than the token's"
    );
    assert_eq!(
        tracker.queued.load(SeqCst),
        queued,
        "{how} of args made for the other way of completing"
    );
    let error = a::sock_args_socket_error(e);
    assert!(
        SocketError::from_code(error).is_some(),
        "{how}: args report socket error {error}, not a SocketError"
    );
    let operation = a::sock_args_last_operation(e);
    assert!(
        OPERATIONS.contains(&operation),
        "{how}: last operation {operation}"
    );
    (tracker, error, operation)
}

/// The completion callback of every args object: checks what it is handed and counts.
/// A panic here aborts the process (it cannot unwind through C), which libFuzzer reports.
unsafe extern "C" fn on_completed(socket: *mut sock, args: *mut sock_args, token: *mut c_void) {
    assert!(!socket.is_null(), "callback with a NULL socket");
    let (tracker, error, operation) = check_completion("a callback", args, token, false);
    // Send-to is not started again: the peer it names may have closed since the program
    // checked it, and its port may be another process's by now.
    let again = [OP_SEND, OP_RECEIVE, OP_RECEIVE_FROM].contains(&operation)
        && tracker
            .reissues
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok();
    // A start from here is counted before this callback is uncounted, so the args never
    // look idle to the program (whose "rejected means unchanged" check needs idle args)
    // while it is about to start, and its pending start is counted before this callback,
    // so the drain never sees the totals equal while its callback is still to come.
    let reserved = isize::from(again);
    tracker.outstanding.fetch_add(reserved, SeqCst);
    let before = tracker.outstanding.fetch_sub(1, SeqCst) - reserved;
    assert!(
        before >= 1,
        "a callback without a pending start (double or stray completion), operation {operation}"
    );
    if again {
        let pending = match operation {
            OP_SEND => s::sock_send_async(socket, args),
            OP_RECEIVE => s::sock_receive_async(socket, args),
            _ => s::sock_receive_from_async(socket, args),
        };
        let status = checked_status("a start from a callback");
        if pending {
            assert_eq!(status, Status::Ok as i32, "pending with status {status}");
            PENDING.fetch_add(1, SeqCst);
        } else {
            tracker.outstanding.fetch_sub(1, SeqCst);
        }
    }
    if tracker.shutdown.load(SeqCst) {
        rt::sock_runtime_shutdown();
        assert_eq!(
            checked_status("sock_runtime_shutdown in a callback"),
            Status::InvalidOperation as i32,
            "sock_runtime_shutdown was not refused in a callback"
        );
    }
    if tracker.close_socket.load(SeqCst) {
        s::sock_close(socket);
        assert_eq!(
            checked_status("sock_close in a callback"),
            Status::Ok as i32
        );
    }
    // Freeing in a callback is allowed, also its own args (whose memory lives until this
    // returns); counted last, so the drain does not end before the frees are done.
    let socket_given = tracker.free_socket.swap(std::ptr::null_mut(), SeqCst);
    if tracing() {
        eprintln!(
            "callback {operation} error {error}: frees {socket_given:p} and {:p}",
            tracker.free_args.load(SeqCst)
        );
    }
    if !socket_given.is_null() {
        s::sock_free(socket_given);
        assert_eq!(checked_status("sock_free in a callback"), Status::Ok as i32);
    }
    let args_given = tracker.free_args.swap(std::ptr::null_mut(), SeqCst);
    if !args_given.is_null() {
        a::sock_args_free(args_given);
        assert_eq!(
            checked_status("sock_args_free in a callback"),
            Status::Ok as i32
        );
    }
    *CALLBACKS.lock().unwrap() += 1;
    CALLED_BACK.notify_all();
}

/// Gives `handle` to the args' next callback to free, if one is still to come: returns
/// whether it did (the program must forget the handle) or kept it with the program. Exactly
/// one side owns it whatever the timing: the callback takes it with a swap at its end, and
/// the program takes it back with a compare-and-swap unless a callback is still due (one
/// whose uncounting, which comes before its swap, has not happened yet).
fn hand_over<T>(slot: &AtomicPtr<T>, handle: *mut T, tracker: &Tracker) -> bool {
    if !slot.load(SeqCst).is_null() {
        return false; // one handle per callback
    }
    slot.store(handle, SeqCst);
    if tracker.outstanding.load(SeqCst) > 0 {
        return true;
    }
    slot.compare_exchange(handle, std::ptr::null_mut(), SeqCst, SeqCst)
        .is_err()
}

/// Takes up to `cap` completions from the queue (waiting up to `timeout_ms` for the first)
/// and checks each as the callback checks what it is handed.
fn take_completions(cq: *mut sock_cq, cap: usize, timeout_ms: i32) {
    let mut out = [std::ptr::null_mut(); 64];
    let cap = cap.min(out.len());
    let taken = q::sock_cq_wait(cq, out.as_mut_ptr(), cap, timeout_ms);
    assert_eq!(checked_status("sock_cq_wait"), Status::Ok as i32);
    assert!(taken <= cap, "sock_cq_wait took {taken} into {cap} slots");
    for &e in &out[..taken] {
        // Args freed while pending are still delivered, readable until the next wait.
        // They may have started again since (they were idle once completed), so only
        // what holds at any time is checked.
        let token = a::sock_args_user_token(e);
        let (tracker, _, operation) = check_completion("a queued completion", e, token, true);
        let before = tracker.outstanding.fetch_sub(1, SeqCst);
        assert!(
            before >= 1,
            "a queued completion without a pending start (double or stray), operation \
             {operation}"
        );
        TAKEN.fetch_add(1, SeqCst);
    }
}

/// Fence callbacks seen (see `reactor_fence`).
static FENCES: Mutex<u64> = Mutex::new(0);
static FENCED: Condvar = Condvar::new();

unsafe extern "C" fn on_fence(_: *mut sock, _: *mut sock_args, _: *mut c_void) {
    *FENCES.lock().unwrap() += 1;
    FENCED.notify_all();
}

/// Returns once the reactor has handled every message posted before the call: the abort
/// of an accept whose socket closes now is delivered after them, in order. Memory and
/// descriptors the reactor releases (a socket's registration, say) are then released, so
/// the leak and descriptor checks see the input's end state, not a race with the reactor.
fn reactor_fence() {
    let listener = s::sock_create(V4, 1, 6);
    assert!(
        s::sock_bind(listener, c"127.0.0.1:0".as_ptr()) && s::sock_listen(listener, 1),
        "fence: cannot listen on 127.0.0.1"
    );
    let e = a::sock_args_new(Some(on_fence), std::ptr::null_mut());
    let mut seen = FENCES.lock().unwrap();
    let target = *seen + 1;
    assert!(
        s::sock_accept_async(listener, e),
        "fence: an accept nobody connects to did not go pending"
    );
    s::sock_free(listener);
    a::sock_args_free(e);
    let deadline = Instant::now() + DRAIN;
    while *seen < target {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "the reactor did not deliver an abort within {DRAIN:?}"
        );
        seen = FENCED.wait_timeout(seen, left).unwrap().0;
    }
}

// ---- per-process memory -----------------------------------------------------------------

/// The buffers operations use: allocated once, never freed and never written after, so any
/// operation's memory outlives it whatever the program does.
fn region(slot: usize) -> *mut u8 {
    static MEMORY: OnceLock<usize> = OnceLock::new();
    let base = *MEMORY.get_or_init(|| {
        let memory: &'static mut [u8] = Box::leak(vec![0x5a; REGION * ARGS].into_boxed_slice());
        memory.as_mut_ptr() as usize
    });
    (base + slot * REGION) as *mut u8
}

/// The bytes of the file send-packets reads.
const FILE_LEN: u64 = 3000;

/// The file send-packets elements name (by path and by descriptor), made once per process:
/// its path, a read-only descriptor, and a write-only one (which the library must refuse).
struct PacketFile {
    path: CString,
    missing: CString,
    read: File,
    write_only: File,
}

fn packet_file() -> &'static PacketFile {
    static FILE: OnceLock<PacketFile> = OnceLock::new();
    FILE.get_or_init(|| {
        let prefix = "/tmp/sockasync-fuzz-";
        // Files of earlier runs whose process is gone (this one's goes when the next run
        // starts: libFuzzer exits without running destructors).
        for entry in std::fs::read_dir("/tmp").into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name
                .strip_prefix("sockasync-fuzz-")
                .and_then(|n| n.strip_suffix(".dat"))
                && !std::path::Path::new(&format!("/proc/{pid}")).exists()
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let path = format!("{prefix}{}.dat", std::process::id());
        std::fs::write(&path, vec![0x66; FILE_LEN as usize]).expect("the send-packets file");
        PacketFile {
            read: File::open(&path).expect("open the send-packets file"),
            write_only: File::options()
                .append(true)
                .open(&path)
                .expect("open the send-packets file for writing"),
            missing: CString::new(format!("{prefix}{}-missing", std::process::id())).unwrap(),
            path: CString::new(path).unwrap(),
        }
    })
}

/// The abstract names this process's Unix sockets use: `@sockasync-fuzz-<pid>-<n>`.
fn abstract_prefix() -> &'static [u8] {
    static PREFIX: OnceLock<Vec<u8>> = OnceLock::new();
    PREFIX.get_or_init(|| format!("unix:@sockasync-fuzz-{}-", std::process::id()).into_bytes())
}

/// A descriptor number that cannot be open: past the process's limit.
fn never_open_descriptor() -> isize {
    static LIMIT: OnceLock<isize> = OnceLock::new();
    *LIMIT.get_or_init(|| {
        std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|limits| {
                let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
                line.split_whitespace().nth(4)?.parse::<isize>().ok()
            })
            .expect("the open-files limit")
    })
}

/// `C_API_TRACE=1` prints each operation start and its outcome (to read a crash's input).
fn tracing() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("C_API_TRACE").is_some())
}

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

// ---- reading the program ----------------------------------------------------------------

struct Program<'a> {
    bytes: &'a [u8],
}

impl Program<'_> {
    fn u8(&mut self) -> u8 {
        let (first, rest) = self.bytes.split_first().unwrap_or((&0, &[]));
        self.bytes = rest;
        *first
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.bytes.len());
        let (taken, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        taken
    }

    /// A size: mostly small, sometimes at the edges the API must reject.
    fn size(&mut self, limit: usize) -> usize {
        match self.u8() % 8 {
            0 => 0,
            1 => limit,
            2 => limit + 1,
            3 => isize::MAX as usize + 1,
            4 => usize::MAX,
            _ => self.u16() as usize,
        }
    }
}

// ---- the pool ---------------------------------------------------------------------------

#[derive(Clone, Copy)]
struct SocketSlot {
    handle: *mut sock,
    /// A stream socket (TCP or Unix); else a datagram one (UDP or Unix).
    stream: bool,
    unix: bool,
    /// Closed by this program: every later call must be rejected as Disposed.
    closed: bool,
    /// Bound by this program (or connected/accepted): only these may listen, so no socket
    /// ever listens on the kernel's wildcard address.
    bound: bool,
}

#[derive(Clone, Copy)]
struct ArgsSlot {
    handle: *mut sock_args,
    tracker: &'static Tracker,
    /// What the library said `sock_args_accept_socket` is: a repeated read returns the same
    /// handle, which must not be adopted twice (it may have been freed since).
    handed_out: *mut sock,
    /// The elements the last accepted `sock_args_set_send_packets` set (None when cleared).
    packets: Option<Packets>,
    /// The length given to the last accepted `sock_args_set_buffer` (None when cleared).
    buffer_length: Option<usize>,
    /// Bytes of the buffer operations use (`sock_args_count`).
    count: usize,
    /// The total length of the buffer list set, if one is.
    list_total: Option<usize>,
}

impl ArgsSlot {
    /// The bytes an operation may move at most: a list wins over a buffer, as in the library.
    fn payload(&self) -> usize {
        self.list_total.unwrap_or(if self.buffer_length.is_some() {
            self.count
        } else {
            0
        })
    }
}

/// What a send-packets operation with the elements set must do.
#[derive(Clone, Copy)]
struct Packets {
    /// The bytes of every element, if every file range fits the file (else the operation
    /// completes with InvalidArgument when it reaches the one that does not).
    total: Option<u64>,
    /// The most it may send before it fails.
    most: u64,
    /// A missing path, a directory or a write-only descriptor: the start is rejected.
    refused: bool,
}

/// Everything an args object reports, to prove a rejected call changed none of it.
#[derive(Debug, PartialEq, Eq)]
struct Results {
    bytes: usize,
    error: i32,
    operation: i32,
    offset: usize,
    count: usize,
    token: *mut c_void,
    flags: i32,
}

fn results(e: *mut sock_args) -> Results {
    Results {
        bytes: a::sock_args_bytes_transferred(e),
        error: a::sock_args_socket_error(e),
        operation: a::sock_args_last_operation(e),
        offset: a::sock_args_offset(e),
        count: a::sock_args_count(e),
        token: a::sock_args_user_token(e),
        flags: a::sock_args_flags(e),
    }
}

/// The args' remote endpoint as the library holds it: None when it has none, else its text.
fn args_endpoint(e: *mut sock_args) -> Option<Vec<u8>> {
    let mut out = [0u8; 128];
    let n = a::sock_args_remote_endpoint(e, out.as_mut_ptr() as *mut c_char, out.len());
    (n > 0).then(|| out[..n].to_vec())
}

/// The latest call's status, after checking the three status functions agree with the
/// contract: a message is never NULL, empty exactly when the call was accepted, and a socket
/// error is given exactly with the SocketError status.
fn checked_status(what: &str) -> i32 {
    let message = st::sock_last_error_message();
    assert!(
        !message.is_null(),
        "{what}: sock_last_error_message() is NULL"
    );
    // SAFETY: non-NULL, and the contract says a NUL-terminated string valid until the next
    // call into the library on this thread; it is copied before any other call.
    let text = unsafe { CStr::from_ptr(message) }
        .to_string_lossy()
        .into_owned();
    let status = st::sock_last_status();
    let socket_error = st::sock_last_socket_error();
    assert!(
        Status::from_code(status).is_some(),
        "{what}: status {status} is not a sock_status"
    );
    if status == Status::Ok as i32 {
        assert!(text.is_empty(), "{what}: OK with message {text:?}");
        assert_eq!(
            socket_error, 0,
            "{what}: OK with socket error {socket_error}"
        );
    } else {
        assert!(
            !text.is_empty(),
            "{what}: rejected ({status}) without a message"
        );
        assert_ne!(
            status,
            Status::Internal as i32,
            "{what}: internal error: {text}"
        );
        if status == Status::SocketError as i32 {
            assert!(
                SocketError::from_code(socket_error).is_some_and(|e| e != SocketError::Success),
                "{what}: SocketError status with socket error {socket_error}"
            );
        } else {
            assert_eq!(
                socket_error, 0,
                "{what}: status {status} with socket error {socket_error}"
            );
        }
    }
    status
}

struct Run {
    sockets: [Option<SocketSlot>; SOCKETS],
    args: [Option<ArgsSlot>; ARGS],
    trackers_used: usize,
    /// The input's completion queue.
    cq: *mut sock_cq,
}

/// How an operation start went, and what it may report.
#[derive(Clone, Copy)]
enum Start {
    Accept,
    Connect,
    Send,
    Receive,
    Disconnect,
    SendTo,
    ReceiveFrom,
    SendPackets,
}

impl Start {
    fn code(self) -> i32 {
        match self {
            Start::Accept => OP_ACCEPT,
            Start::Connect => OP_CONNECT,
            Start::Send => OP_SEND,
            Start::Receive => OP_RECEIVE,
            Start::Disconnect => OP_DISCONNECT,
            Start::SendTo => OP_SEND_TO,
            Start::ReceiveFrom => OP_RECEIVE_FROM,
            Start::SendPackets => OP_SEND_PACKETS,
        }
    }

    /// Starts the operation (from any thread) and keeps the pending counts exact; returns
    /// whether it went pending and the checked status.
    fn counted(
        self,
        socket: *mut sock,
        e: *mut sock_args,
        tracker: Option<&'static Tracker>,
    ) -> (bool, i32) {
        if let Some(tracker) = tracker {
            tracker.outstanding.fetch_add(1, SeqCst);
        }
        let pending = self.call(socket, e);
        let status = checked_status("operation start");
        if tracing() {
            eprintln!(
                "start {} on {socket:p} with {e:p}: pending {pending}, status {status}, \
                 error {}, bytes {}",
                self.code(),
                a::sock_args_socket_error(e),
                a::sock_args_bytes_transferred(e)
            );
        }
        if pending {
            assert_eq!(status, Status::Ok as i32, "pending with status {status}");
            if tracker.is_some_and(|t| t.queued.load(SeqCst)) {
                QUEUED.fetch_add(1, SeqCst);
            } else {
                PENDING.fetch_add(1, SeqCst);
            }
        } else if let Some(tracker) = tracker {
            tracker.outstanding.fetch_sub(1, SeqCst);
        }
        (pending, status)
    }

    fn call(self, socket: *mut sock, e: *mut sock_args) -> bool {
        match self {
            Start::Accept => s::sock_accept_async(socket, e),
            Start::Connect => s::sock_connect_async(socket, e),
            Start::Send => s::sock_send_async(socket, e),
            Start::Receive => s::sock_receive_async(socket, e),
            Start::Disconnect => s::sock_disconnect_async(socket, e),
            Start::SendTo => s::sock_send_to_async(socket, e),
            Start::ReceiveFrom => s::sock_receive_from_async(socket, e),
            Start::SendPackets => s::sock_send_packets_async(socket, e),
        }
    }
}

impl Run {
    fn new() -> Run {
        let cq = q::sock_cq_new();
        assert_eq!(checked_status("sock_cq_new"), Status::Ok as i32);
        assert!(!cq.is_null(), "sock_cq_new returned NULL with status OK");
        Run {
            sockets: [None; SOCKETS],
            args: [None; ARGS],
            trackers_used: 0,
            cq,
        }
    }

    fn socket(&self, index: u8) -> (*mut sock, Option<SocketSlot>) {
        let slot = self.sockets[index as usize % SOCKETS];
        (slot.map_or(std::ptr::null_mut(), |s| s.handle), slot)
    }

    fn args(&self, index: u8) -> (*mut sock_args, Option<ArgsSlot>) {
        let slot = self.args[index as usize % ARGS];
        (slot.map_or(std::ptr::null_mut(), |a| a.handle), slot)
    }

    /// The local endpoints of this program's open, bound sockets (of one kind, stream or
    /// datagram, or both): the only places a connect or a send-to may go (besides port 0,
    /// which refuses, and this process's abstract names).
    fn own_endpoints(&self, stream: Option<bool>) -> Vec<Endpoint> {
        self.sockets
            .iter()
            .flatten()
            .filter(|s| stream.is_none_or(|stream| s.stream == stream) && !s.closed && s.bound)
            .filter_map(|s| local_endpoint(s.handle))
            .collect()
    }

    /// Whether the endpoint is one this program may send to or connect to from a socket of
    /// that kind: loopback port 0, a socket of this pool, a name of this process, or an
    /// unnamed Unix socket (which nothing can reach).
    fn reachable(&self, text: &[u8], stream: bool) -> bool {
        if text.starts_with(abstract_prefix()) || text == b"unix:" {
            return true;
        }
        let Ok(endpoint) = endpoint::parse(text) else {
            return false;
        };
        let Some(addr) = endpoint.as_ip() else {
            return false;
        };
        addr.ip().is_loopback()
            && (addr.port() == 0 || self.own_endpoints(Some(stream)).contains(&endpoint))
    }

    /// Keeps endpoint text on this pool: IP text that parses to anything else becomes port 0
    /// of loopback in the same family, Unix text an abstract name of this process (text that
    /// does not parse goes through as it is).
    fn fence(&self, text: Vec<u8>) -> Vec<u8> {
        let Ok(endpoint) = endpoint::parse(&text) else {
            return text;
        };
        let Some(addr) = endpoint.as_ip() else {
            // A Unix path could name a file anywhere (a bind creates it) or another
            // process's socket.
            if text.starts_with(abstract_prefix()) {
                return text;
            }
            return [abstract_prefix(), b"0"].concat();
        };
        if addr.ip().is_loopback()
            && (addr.port() == 0 || self.own_endpoints(None).contains(&endpoint))
        {
            return text;
        }
        if addr.is_ipv4() {
            b"127.0.0.1:0".to_vec()
        } else {
            b"[::1]:0".to_vec()
        }
    }

    /// Endpoint text: own sockets, loopback port 0, this process's abstract names, and every
    /// malformed shape.
    fn endpoint_text(&self, p: &mut Program) -> Vec<u8> {
        let choice = p.u8();
        let own = self.own_endpoints(None);
        let text = match choice % 16 {
            0 | 1 | 12 if !own.is_empty() => own[p.u8() as usize % own.len()].to_text(),
            0 | 2 => b"127.0.0.1:0".to_vec(),
            1 | 3 => b"[::1]:0".to_vec(),
            4 => vec![b'1'; 300 + p.u16() as usize % 10_000],
            5 => b"\xff\xfe127.0.0.1:1\x80".to_vec(),
            6 => b"127.0.0.1".to_vec(),
            7 => b"127.0.0.1:65536".to_vec(),
            8 => [
                &b"[::1"[..],
                b"]:0",
                b"::1]:0",
                b"[[::1]]:0",
                b"[]:0",
                b":0",
                b"",
                b"[::1]:",
            ][p.u8() as usize % 8]
                .to_vec(),
            9 => b"localhost:0".to_vec(),
            12 | 13 => [abstract_prefix(), &[b'0' + p.u8() % 4]].concat(),
            14 => match p.u8() % 6 {
                0 => b"unix:".to_vec(),
                1 => b"unix:@".to_vec(),
                // Longer than sun_path takes.
                2 => [abstract_prefix(), &[b'x'; 100]].concat(),
                3 => b"unix:/tmp/sockasync-fuzz-never-bound".to_vec(),
                4 => b"unix:relative".to_vec(),
                _ => b"UNIX:@x".to_vec(),
            },
            _ => {
                let n = p.u8() as usize % 70;
                p.take(n).to_vec()
            }
        };
        // A C string ends at its first NUL.
        let text = text.split(|b| *b == 0).next().unwrap_or(&[]).to_vec();
        self.fence(text)
    }

    fn execute(&mut self, p: &mut Program) {
        let opcode = p.u8() % 40;
        if tracing() {
            eprintln!("op {opcode}");
        }
        match opcode {
            0 => self.create(p),
            1 => self.bind(p),
            2 => self.listen(p),
            3 => self.connect_to_own(p),
            4 => self.start(p, Start::Connect),
            5 => self.start(p, Start::Accept),
            6 | 7 => self.start(p, Start::Send),
            8 | 9 => self.start(p, Start::Receive),
            10 => self.start(p, Start::Disconnect),
            11 => self.shutdown(p),
            12 => self.set_option(p),
            13 => self.get_option(p),
            14 => self.close(p),
            15 => self.free(p),
            16 => self.new_args(p),
            17 => self.free_args(p),
            18 => self.set_buffer(p),
            19 => self.set_range(p),
            20 => self.set_buffer_list(p),
            21 => self.set_remote_endpoint(p),
            22 => self.set_user_token(p),
            23 => self.take_accepted(p),
            24 => self.endpoints(p),
            25 => self.names(p),
            26 => self.await_args(p),
            27 => self.program_callback(p),
            28 => self.race(p),
            29 | 30 => self.start_send_to(p),
            31 | 32 => self.start(p, Start::ReceiveFrom),
            33 => self.start(p, Start::SendPackets),
            34 => self.set_send_packets(p),
            35 => self.set_flags(p),
            36 => self.read_remote_endpoint(p),
            37 => self.adopt_pair(p),
            38 => self.descriptor(p),
            _ => self.queue(p),
        }
    }

    fn create(&mut self, p: &mut Program) {
        let index = p.u8() as usize % SOCKETS;
        let (family, ty, protocol) = match p.u8() % 13 {
            0..=2 => (V4, 1, 6),
            3..=5 => (V6, 1, 6),
            6 => (V4, 1, 0),
            7 | 10 => (if p.u8().is_multiple_of(2) { V4 } else { V6 }, 2, 17),
            8 => (UNIX, 1, 0),
            11 => (UNIX, 2, 0),
            12 => (UNIX, 2, 17),
            _ => (p.u32() as i32, p.u32() as i32, p.u32() as i32),
        };
        let handle = s::sock_create(family, ty, protocol);
        let status = checked_status("sock_create");
        assert_eq!(
            handle.is_null(),
            status != Status::Ok as i32,
            "sock_create: handle {handle:p} with status {status}"
        );
        if handle.is_null() {
            return;
        }
        if let Some(old) = self.sockets[index].take() {
            s::sock_free(old.handle);
            checked_status("sock_free");
        }
        self.sockets[index] = Some(SocketSlot {
            handle,
            stream: ty == 1,
            unix: family == UNIX,
            closed: false,
            bound: false,
        });
    }

    /// A socket call that is not an operation start: when the socket is known closed it
    /// must be rejected as Disposed, and NULL as NullArgument.
    fn check_plain(what: &str, slot: Option<SocketSlot>, ok: bool, status: i32) {
        assert_eq!(
            ok,
            status == Status::Ok as i32,
            "{what}: returned {ok} with status {status}"
        );
        match slot {
            None => assert_eq!(status, Status::NullArgument as i32, "{what}(NULL)"),
            Some(s) if s.closed => {
                assert_eq!(status, Status::Disposed as i32, "{what} on a closed socket")
            }
            Some(_) => {}
        }
    }

    fn bind(&mut self, p: &mut Program) {
        let index = p.u8();
        let (handle, slot) = self.socket(index);
        let text = self.endpoint_text(p);
        let with_null = p.u8().is_multiple_of(8);
        let text = CString::new(text).expect("cut at the first NUL");
        let ok = s::sock_bind(
            handle,
            if with_null {
                std::ptr::null()
            } else {
                text.as_ptr()
            },
        );
        let status = checked_status("sock_bind");
        Self::check_plain("sock_bind", slot, ok, status);
        if ok && let Some(slot) = &mut self.sockets[index as usize % SOCKETS] {
            slot.bound = true;
        }
    }

    fn listen(&mut self, p: &mut Program) {
        let (handle, slot) = self.socket(p.u8());
        let backlog = match p.u8() % 4 {
            0 => 0,
            1 => -1,
            2 => i32::MAX,
            _ => p.u8() as i32,
        };
        if slot.is_some_and(|s| !s.bound && !s.closed) {
            return; // the kernel would bind it to the wildcard address
        }
        let ok = s::sock_listen(handle, backlog);
        let status = checked_status("sock_listen");
        Self::check_plain("sock_listen", slot, ok, status);
    }

    /// Points the args at one of the pool's listeners, then connects: the productive path.
    fn connect_to_own(&mut self, p: &mut Program) {
        self.aim_at_own(p, Start::Connect);
    }

    /// Points the args at one of the pool's sockets of the kind the start needs (that of the
    /// socket for a connect, datagram for a send-to), then starts it.
    fn aim_at_own(&mut self, p: &mut Program, start: Start) {
        let choice = p.u8() as usize;
        let (e, _) = self.args(p.u8());
        let socket_index = p.u8();
        let stream =
            matches!(start, Start::Connect) && self.socket(socket_index).1.is_none_or(|s| s.stream);
        let own = self.own_endpoints(Some(stream));
        let target = own.get(choice % own.len().max(1)).cloned();
        if let Some(target) = target {
            let text = CString::new(target.to_text()).unwrap();
            a::sock_args_set_remote_endpoint(e, text.as_ptr());
            checked_status("sock_args_set_remote_endpoint");
        }
        self.start_with(socket_index, e, start);
    }

    fn start_send_to(&mut self, p: &mut Program) {
        if p.u8().is_multiple_of(2) {
            self.aim_at_own(p, Start::SendTo);
        } else {
            self.start(p, Start::SendTo);
        }
    }

    fn start(&mut self, p: &mut Program, start: Start) {
        let socket_index = p.u8();
        let (e, _) = self.args(p.u8());
        self.start_with(socket_index, e, start);
    }

    fn start_with(&mut self, socket_index: u8, e: *mut sock_args, start: Start) {
        let (handle, socket) = self.socket(socket_index);
        let slot = self.args.iter().flatten().find(|a| a.handle == e).copied();
        if let (Start::Connect | Start::SendTo, Some(s)) = (start, socket)
            && !s.closed
        {
            // An IP socket's first send-to binds it to the wildcard address, where it would
            // receive from anywhere.
            if matches!(start, Start::SendTo) && !s.unix && !s.bound {
                return;
            }
            // The endpoint set (or the sender a receive-from wrote) may name a socket of this
            // pool that has closed since, whose port may be another process's now.
            if let Some(text) = args_endpoint(e)
                && !self.reachable(&text, s.stream)
            {
                return;
            }
        }
        // Results are stable only while nothing is in flight on the args.
        let idle = slot.is_some_and(|a| a.tracker.outstanding.load(SeqCst) == 0);
        let before = idle.then(|| results(e));
        let (pending, status) = start.counted(handle, e, slot.map(|a| a.tracker));
        match (socket, slot) {
            (None, _) => assert!(
                status == Status::NullArgument as i32,
                "start with a NULL socket: status {status}"
            ),
            (Some(s), _) if s.closed => {
                assert_eq!(status, Status::Disposed as i32, "start on a closed socket")
            }
            (Some(_), None) => {
                // .NET reports a disposed socket before NULL args, and a callback may have
                // closed this one.
                let closed_by_callback =
                    CALLBACKS_CLOSE.load(SeqCst) && status == Status::Disposed as i32;
                assert!(
                    status == Status::NullArgument as i32 || closed_by_callback,
                    "start with NULL args: status {status}"
                )
            }
            (Some(_), Some(_)) => {}
        }
        if status == Status::Ok as i32 && matches!(start, Start::Accept) {
            // The library forgot the last accepted socket when this accept started.
            if let Some(slot) = self.args.iter_mut().flatten().find(|a| a.handle == e) {
                slot.handed_out = std::ptr::null_mut();
            }
        }
        let (Some(before), Some(slot)) = (before, slot) else {
            return;
        };
        let after = results(e);
        if status != Status::Ok as i32 {
            assert_eq!(
                before, after,
                "a rejected start ({status}) changed the args"
            );
            return;
        }
        assert_eq!(
            after.operation,
            start.code(),
            "last operation after a start"
        );
        if matches!(start, Start::SendPackets) {
            let packets = slot
                .packets
                .expect("send-packets without elements was not refused");
            assert!(
                !packets.refused,
                "send-packets of a file it cannot read started"
            );
        }
        if pending {
            return;
        }
        // Completed now: the results are final.
        let error = SocketError::from_code(after.error)
            .unwrap_or_else(|| panic!("completed with socket error {}", after.error));
        let total = match start {
            Start::Accept | Start::Disconnect => 0,
            Start::SendPackets => {
                let packets = slot.packets.expect("checked above");
                if error == SocketError::Success {
                    assert_eq!(
                        Some(after.bytes as u64),
                        packets.total,
                        "send-packets succeeded with the wrong bytes (None: a range past the file)"
                    );
                }
                packets.most as usize
            }
            _ => slot.payload(),
        };
        assert!(
            after.bytes <= total,
            "{} completed with {} bytes of {total}",
            start.code(),
            after.bytes
        );
        let full = match (start, socket) {
            (Start::Send, Some(s)) => s.stream,
            (Start::SendTo, _) => true, // a datagram is never cut short
            _ => false,
        };
        if full && error == SocketError::Success {
            assert_eq!(after.bytes, total, "a send completed short");
        }
        // A datagram receive reports what it cut short; nothing else reports a flag.
        let datagram_receive = match (start, socket) {
            (Start::ReceiveFrom, _) => true,
            (Start::Receive, Some(s)) => !s.stream,
            _ => false,
        };
        let reported = if datagram_receive { REPORTED_FLAGS } else { 0 };
        assert_eq!(
            after.flags & !reported,
            0,
            "{} completed with flags {:#x}",
            start.code(),
            after.flags
        );
        if matches!(start, Start::Connect)
            && error == SocketError::Success
            && let Some(slot) = &mut self.sockets[socket_index as usize % SOCKETS]
        {
            slot.bound = true;
        }
    }

    fn shutdown(&mut self, p: &mut Program) {
        let (handle, slot) = self.socket(p.u8());
        let how = match p.u8() % 5 {
            n @ 0..=2 => n as i32,
            3 => -1,
            _ => p.u32() as i32,
        };
        let ok = s::sock_shutdown(handle, how);
        let status = checked_status("sock_shutdown");
        Self::check_plain("sock_shutdown", slot, ok, status);
    }

    fn set_option(&mut self, p: &mut Program) {
        let (handle, slot) = self.socket(p.u8());
        let code = (p.u8() % 10) as i32 - 1;
        // Linger stays at -1 or 0 (or an invalid value): a close lingering on unsent data
        // would wait, as documented, and only slow the run down.
        let value = match p.u8() % 10 {
            0 => 0,
            1 => 1,
            2 => -1,
            3 => 65536,
            4 => i64::MIN,
            5 => i32::MAX as i64 + 1,
            6 if code != 6 => p.u32() as i64,
            7 if code != 6 => 1 + (p.u16() as i64) * 16,
            _ => p.u8() as i64 % 3 - 1,
        };
        let value = if code == 6 && (1..=65535).contains(&value) {
            0
        } else {
            value
        };
        let ok = s::sock_set_option(handle, code, value);
        let status = checked_status("sock_set_option");
        Self::check_plain("sock_set_option", slot, ok, status);
        let open = slot.is_some_and(|s| !s.closed) && !CALLBACKS_CLOSE.load(SeqCst);
        if !(1..=7).contains(&code) && open {
            assert_eq!(
                status,
                Status::InvalidArgument as i32,
                "unknown option {code} set"
            );
        }
    }

    fn get_option(&mut self, p: &mut Program) {
        let (handle, slot) = self.socket(p.u8());
        let code = (p.u8() % 10) as i32 - 1;
        let null_out = p.u8().is_multiple_of(8);
        let mut value: i64 = 0x5a5a;
        let out = if null_out {
            std::ptr::null_mut()
        } else {
            &mut value as *mut i64
        };
        let ok = s::sock_get_option(handle, code, out);
        let status = checked_status("sock_get_option");
        Self::check_plain("sock_get_option", slot, ok, status);
        if !ok {
            assert_eq!(
                value, 0x5a5a,
                "a rejected sock_get_option wrote its out-value"
            );
        }
    }

    fn close(&mut self, p: &mut Program) {
        let index = p.u8() as usize % SOCKETS;
        let handle = self.sockets[index].map_or(std::ptr::null_mut(), |s| s.handle);
        s::sock_close(handle);
        let status = checked_status("sock_close");
        let expected = if handle.is_null() {
            Status::NullArgument
        } else {
            Status::Ok
        };
        assert_eq!(status, expected as i32, "sock_close");
        if let Some(slot) = &mut self.sockets[index] {
            slot.closed = true;
        }
    }

    fn free(&mut self, p: &mut Program) {
        let index = p.u8() as usize % SOCKETS;
        let handle = self.sockets[index]
            .take()
            .map_or(std::ptr::null_mut(), |s| s.handle);
        s::sock_free(handle);
        assert_eq!(checked_status("sock_free"), Status::Ok as i32, "sock_free");
    }

    fn new_args(&mut self, p: &mut Program) {
        let index = p.u8() as usize % ARGS;
        let how = p.u8();
        if how.is_multiple_of(8) {
            let e = a::sock_args_new(None, std::ptr::null_mut());
            assert!(e.is_null(), "sock_args_new without a callback made args");
            assert_eq!(checked_status("sock_args_new"), Status::NullArgument as i32);
            return;
        }
        if how % 8 == 7 {
            let e = a::sock_args_new_queued(std::ptr::null_mut(), std::ptr::null_mut());
            assert!(
                e.is_null(),
                "sock_args_new_queued without a queue made args"
            );
            assert_eq!(
                checked_status("sock_args_new_queued"),
                Status::NullArgument as i32
            );
            return;
        }
        let queued = how % 8 >= 5;
        if self.trackers_used == TRACKERS {
            return;
        }
        let tracker = &TRACKER[self.trackers_used];
        self.trackers_used += 1;
        tracker.reissues.store(0, SeqCst);
        tracker.close_socket.store(false, SeqCst);
        tracker.shutdown.store(false, SeqCst);
        tracker.queued.store(queued, SeqCst);
        assert!(
            tracker.free_args.load(SeqCst).is_null() && tracker.free_socket.load(SeqCst).is_null()
        );
        let token = std::ptr::from_ref(tracker) as *mut c_void;
        let e = if queued {
            a::sock_args_new_queued(self.cq, token)
        } else {
            a::sock_args_new(Some(on_completed), token)
        };
        assert_eq!(checked_status("sock_args_new"), Status::Ok as i32);
        assert!(!e.is_null(), "sock_args_new returned NULL with status OK");
        tracker.args.store(e, SeqCst);
        assert_eq!(
            results(e),
            Results {
                bytes: 0,
                error: 0,
                operation: 0,
                offset: 0,
                count: 0,
                token,
                flags: 0,
            },
            "new args"
        );
        assert!(args_endpoint(e).is_none(), "new args with an endpoint");
        assert!(
            a::sock_args_accept_socket(e).is_null(),
            "new args with an accepted socket"
        );
        if let Some(old) = self.args[index].take() {
            a::sock_args_free(old.handle);
        }
        self.args[index] = Some(ArgsSlot {
            handle: e,
            tracker,
            handed_out: std::ptr::null_mut(),
            packets: None,
            buffer_length: None,
            count: 0,
            list_total: None,
        });
    }

    fn free_args(&mut self, p: &mut Program) {
        let index = p.u8() as usize % ARGS;
        let handle = self.args[index]
            .take()
            .map_or(std::ptr::null_mut(), |a| a.handle);
        a::sock_args_free(handle);
        assert_eq!(
            checked_status("sock_args_free"),
            Status::Ok as i32,
            "sock_args_free"
        );
    }

    /// A setter on args: NULL args are NullArgument; on idle args a rejection changes
    /// nothing. Returns whether it was accepted.
    fn setter(&mut self, index: u8, what: &str, call: impl FnOnce(*mut sock_args) -> bool) -> bool {
        let (e, slot) = self.args(index);
        let idle = slot.is_some_and(|a| a.tracker.outstanding.load(SeqCst) == 0);
        let before = idle.then(|| results(e));
        let ok = call(e);
        let status = checked_status(what);
        assert_eq!(
            ok,
            status == Status::Ok as i32,
            "{what}: returned {ok} with status {status}"
        );
        if slot.is_none() {
            assert_eq!(status, Status::NullArgument as i32, "{what}(NULL args)");
        }
        if let (Some(before), false) = (before, ok) {
            assert_eq!(before, results(e), "a rejected {what} changed the args");
        }
        ok
    }

    fn args_slot(&mut self, index: u8) -> Option<&mut ArgsSlot> {
        self.args[index as usize % ARGS].as_mut()
    }

    fn set_buffer(&mut self, p: &mut Program) {
        let index = p.u8();
        let slot_number = index as usize % ARGS;
        let start = p.u16() as usize % REGION;
        let length = p.size(REGION - start);
        let clear = p.u8().is_multiple_of(6);
        // Valid memory only, except lengths past SSIZE_MAX, which must be refused unread.
        let must_reject = !clear && length > isize::MAX as usize;
        if !clear && !must_reject && start + length > REGION {
            return;
        }
        let buffer = if clear {
            std::ptr::null_mut()
        } else {
            region(slot_number).wrapping_add(start)
        };
        let ok = self.setter(index, "sock_args_set_buffer", |e| {
            a::sock_args_set_buffer(e, buffer as *mut c_void, length)
        });
        if must_reject {
            assert!(
                !ok,
                "sock_args_set_buffer took {length} bytes (> SSIZE_MAX)"
            );
        }
        if ok {
            let (e, _) = self.args(index);
            let expected = if clear { (0, 0) } else { (0, length) };
            assert_eq!(
                (a::sock_args_offset(e), a::sock_args_count(e)),
                expected,
                "offset and count after sock_args_set_buffer"
            );
            if let Some(slot) = self.args_slot(index) {
                slot.buffer_length = (!clear).then_some(length);
                slot.count = if clear { 0 } else { length };
            }
        }
    }

    fn set_range(&mut self, p: &mut Program) {
        let index = p.u8();
        let length = self.args[index as usize % ARGS]
            .and_then(|a| a.buffer_length)
            .unwrap_or(0);
        let offset = p.size(length);
        let count = match p.u8() % 4 {
            0 => length.saturating_sub(offset),
            _ => p.size(length),
        };
        let ok = self.setter(index, "sock_args_set_range", |e| {
            a::sock_args_set_range(e, offset, count)
        });
        let fits = offset.checked_add(count).is_some_and(|end| end <= length);
        let (e, slot) = self.args(index);
        if slot.is_some_and(|a| a.tracker.outstanding.load(SeqCst) == 0) && !ok {
            // Idle args refuse a range only when it does not fit (or the args are busy).
            let status = st::sock_last_status();
            assert!(
                !fits || status == Status::InProgress as i32,
                "sock_args_set_range({offset}, {count}) of {length} bytes refused ({status})"
            );
        }
        if ok {
            assert!(
                fits,
                "sock_args_set_range({offset}, {count}) of {length} bytes taken"
            );
            assert_eq!(
                (a::sock_args_offset(e), a::sock_args_count(e)),
                (offset, count)
            );
            if let Some(slot) = self.args_slot(index) {
                slot.count = count;
            }
        }
    }

    /// Sets an array (`list`, or NULL with a random count, which clears) with `set`; an
    /// array with an entry that `must_reject` must be refused. Returns whether it was
    /// accepted, and whether it was NULL.
    fn set_array<T>(
        &mut self,
        p: &mut Program,
        index: u8,
        what: &str,
        list: &[T],
        must_reject: bool,
        set: extern "C" fn(*mut sock_args, *const T, usize) -> bool,
    ) -> (bool, bool) {
        let null_list = p.u8().is_multiple_of(8);
        let (ptr, count) = if null_list {
            (std::ptr::null(), p.u8() as usize)
        } else {
            (list.as_ptr(), list.len())
        };
        let ok = self.setter(index, what, |e| set(e, ptr, count));
        if !null_list && must_reject {
            assert!(!ok, "{what} took an invalid entry");
        }
        (ok, null_list)
    }

    fn set_buffer_list(&mut self, p: &mut Program) {
        let index = p.u8();
        let base = region(index as usize % ARGS);
        let entries = match p.u8() % 8 {
            0 => 0,
            1 => 1025 + p.u16() as usize % 2048, // past IOV_MAX
            n => n as usize,
        };
        let mut list = Vec::with_capacity(entries);
        let mut must_reject = false;
        let mut total: usize = 0;
        for _ in 0..entries {
            let start = p.u16() as usize % REGION;
            let kind = p.u8();
            let (data, len) = match kind % 10 {
                0 => (std::ptr::null_mut(), 0),
                1 => {
                    must_reject = true;
                    (std::ptr::null_mut(), 1 + p.u8() as usize)
                }
                2 => {
                    must_reject = true;
                    (
                        base.wrapping_add(start) as *mut c_void,
                        isize::MAX as usize + 1,
                    )
                }
                3 => (base.wrapping_add(start) as *mut c_void, 0),
                _ => (
                    base.wrapping_add(start) as *mut c_void,
                    p.u16() as usize % (REGION - start + 1),
                ),
            };
            total = total.saturating_add(len);
            list.push(sock_buf { data, len });
        }
        // A total past SSIZE_MAX must be refused too (entries are never that large here
        // unless one alone is).
        must_reject |= total > isize::MAX as usize;
        let (ok, null_list) = self.set_array(
            p,
            index,
            "sock_args_set_buffer_list",
            &list,
            must_reject,
            a::sock_args_set_buffer_list,
        );
        if ok && let Some(slot) = self.args_slot(index) {
            slot.list_total = (!null_list).then_some(total);
        }
        drop(list); // the array is copied by the library: gone now, while its memory is used
    }

    fn set_remote_endpoint(&mut self, p: &mut Program) {
        let index = p.u8();
        let null = p.u8().is_multiple_of(8);
        let text = self.endpoint_text(p);
        let parsed = endpoint::parse(&text).ok();
        let text = CString::new(text).expect("cut at the first NUL");
        let ptr = if null {
            std::ptr::null()
        } else {
            text.as_ptr()
        };
        let ok = self.setter(index, "sock_args_set_remote_endpoint", |e| {
            a::sock_args_set_remote_endpoint(e, ptr)
        });
        let (e, slot) = self.args(index);
        if ok {
            assert!(null || parsed.is_some(), "unparsable endpoint text taken");
        }
        if ok && slot.is_some_and(|a| a.tracker.outstanding.load(SeqCst) == 0) {
            // Read back as set (the library's text for it: "[::1]:0" for "[0::1]:0").
            assert_eq!(
                args_endpoint(e),
                parsed.filter(|_| !null).map(|p| p.to_text()),
                "the remote endpoint read back"
            );
        }
    }

    fn set_user_token(&mut self, p: &mut Program) {
        let (e, slot) = self.args(p.u8());
        let tag = p.u8() as usize & TAG_MASK;
        // Tags keep the token pointing at the args' tracker, so completions stay counted.
        let token = slot.map_or(tag, |a| std::ptr::from_ref(a.tracker) as usize | tag);
        a::sock_args_set_user_token(e, token as *mut c_void);
        let status = checked_status("sock_args_set_user_token");
        if slot.is_some() {
            assert_eq!(status, Status::Ok as i32);
            assert_eq!(
                a::sock_args_user_token(e) as usize,
                token,
                "user token read back"
            );
        } else {
            assert_eq!(status, Status::NullArgument as i32);
        }
    }

    /// Adopts the socket a completed accept produced (the caller owns it once read).
    fn take_accepted(&mut self, p: &mut Program) {
        let index = p.u8();
        let socket_index = p.u8() as usize % SOCKETS;
        let (e, slot) = self.args(index);
        let accepted = a::sock_args_accept_socket(e);
        checked_status("sock_args_accept_socket");
        let Some(slot) = slot else {
            assert!(accepted.is_null(), "an accepted socket from NULL args");
            return;
        };
        if accepted.is_null() || accepted == slot.handed_out {
            return; // nothing new: a repeated read names a socket already adopted
        }
        if let Some(slot) = self.args_slot(index) {
            slot.handed_out = accepted;
        }
        if let Some(old) = self.sockets[socket_index].take() {
            s::sock_free(old.handle);
            checked_status("sock_free");
        }
        self.sockets[socket_index] = Some(SocketSlot {
            handle: accepted,
            stream: true,
            // Of a Unix listener, perhaps: the flag only matters for datagram sockets.
            unix: false,
            closed: false,
            bound: true,
        });
    }

    fn endpoints(&mut self, p: &mut Program) {
        let (handle, slot) = self.socket(p.u8());
        let remote = p.u8().is_multiple_of(2);
        // 48 bytes hold any IP endpoint, 114 any Unix one.
        let cap = p.u8() as usize % 128;
        let null_out = p.u8().is_multiple_of(8);
        let mut out = [0xaa_u8; 128];
        let ptr = if null_out {
            std::ptr::null_mut()
        } else {
            out.as_mut_ptr() as *mut c_char
        };
        let written = if remote {
            s::sock_remote_endpoint(handle, ptr, cap)
        } else {
            s::sock_local_endpoint(handle, ptr, cap)
        };
        let status = checked_status("sock_*_endpoint");
        Self::check_plain("sock_*_endpoint", slot, written > 0, status);
        if written == 0 {
            assert!(
                out.iter().all(|b| *b == 0xaa),
                "a refused endpoint read wrote text"
            );
            return;
        }
        assert!(
            written < cap,
            "{written} bytes of text in a {cap}-byte buffer"
        );
        assert_eq!(out[written], 0, "endpoint text without its NUL");
        assert!(out[..written].iter().all(|b| *b != 0));
        // Unix sockets report "unix:" (unnamed) or their name, which parse does not take
        // back when empty.
        let text = &out[..written];
        assert!(
            text == b"unix:" || sockasync::engine::endpoint::parse(text).is_ok(),
            "endpoint text {:?} does not parse",
            String::from_utf8_lossy(text)
        );
    }

    /// Two threads at once on one socket: two starts (send, receive or receive-from), a
    /// start against a close, two closes, or a setter against a start on the same args; and
    /// perhaps both taking from the queue. Only calls the contract allows concurrently: no
    /// handle is freed while the other thread may use it.
    fn race(&mut self, p: &mut Program) {
        let socket_index = p.u8();
        let (handle, socket) = self.socket(socket_index);
        let (first, first_slot) = self.args(p.u8());
        let (second, second_slot) = self.args(p.u8());
        let how = p.u8();
        let kind = |bits: u8| match bits & 3 {
            1 => Start::Receive,
            3 => Start::ReceiveFrom,
            _ => Start::Send,
        };
        // The racing thread also takes from the queue, at the same time as the program may.
        let waits = how & 0x40 != 0;
        let cq_raw = self.cq as usize;
        let (mine, theirs) = (kind(how >> 2), kind(how >> 3));
        let closes = how % 4 == 1 || how % 4 == 2;
        if closes && socket.is_none() {
            return;
        }
        let barrier = std::sync::Barrier::new(2);
        let raw = |ptr: *mut c_void| ptr as usize;
        let (socket_raw, first_raw, second_raw) =
            (raw(handle.cast()), raw(first.cast()), raw(second.cast()));
        let region_raw = raw(region(p.u8() as usize % ARGS).cast());
        let (first_tracker, second_tracker) = (
            first_slot.map(|a| a.tracker),
            second_slot.map(|a| a.tracker),
        );
        let buffer_set = std::thread::scope(|scope| {
            let other = scope.spawn(|| {
                let socket = socket_raw as *mut sock;
                barrier.wait();
                if waits {
                    take_completions(cq_raw as *mut sock_cq, 8, 1);
                }
                match how % 4 {
                    0 | 1 => {
                        theirs.counted(socket, second_raw as *mut sock_args, second_tracker);
                        false
                    }
                    2 => {
                        s::sock_close(socket);
                        checked_status("sock_close racing");
                        false
                    }
                    _ => {
                        let e = first_raw as *mut sock_args;
                        let set = a::sock_args_set_buffer(e, region_raw as *mut c_void, 100);
                        checked_status("sock_args_set_buffer racing");
                        set
                    }
                }
            });
            barrier.wait();
            if waits {
                take_completions(cq_raw as *mut sock_cq, 8, 0);
            }
            match how % 4 {
                0 | 3 => drop(mine.counted(handle, first, first_tracker)),
                _ => {
                    s::sock_close(handle);
                    checked_status("sock_close racing");
                }
            }
            other.join().expect("the racing thread panicked")
        });
        if closes && let Some(slot) = &mut self.sockets[socket_index as usize % SOCKETS] {
            slot.closed = true;
        }
        if buffer_set && let Some(slot) = self.args.iter_mut().flatten().find(|a| a.handle == first)
        {
            slot.buffer_length = Some(100);
            slot.count = 100;
        }
    }

    /// Gives an args' callback work to do: start its send or receive again, close the socket.
    fn program_callback(&mut self, p: &mut Program) {
        let (_, slot) = self.args(p.u8());
        let what = p.u8();
        let Some(slot) = slot.filter(|a| !a.tracker.queued.load(SeqCst)) else {
            return; // no callback runs for queued args
        };
        slot.tracker.reissues.store(u32::from(what % 4), SeqCst);
        slot.tracker.shutdown.store(what & 32 != 0, SeqCst);
        if what & 4 != 0 {
            CALLBACKS_CLOSE.store(true, SeqCst);
            slot.tracker.close_socket.store(true, SeqCst);
        }
        let socket_index = p.u8() as usize % SOCKETS;
        if what & 8 != 0
            && let Some(socket) = self.sockets[socket_index]
            && hand_over(&slot.tracker.free_socket, socket.handle, slot.tracker)
        {
            self.sockets[socket_index] = None;
        }
        if what & 16 != 0 && hand_over(&slot.tracker.free_args, slot.handle, slot.tracker) {
            self.args = self.args.map(|a| a.filter(|a| a.handle != slot.handle));
        }
    }

    /// Lets a pending operation finish (briefly), so later operations see its results: what
    /// makes "connect, accept, then use the accepted socket" reachable without luck.
    fn await_args(&mut self, p: &mut Program) {
        let (_, slot) = self.args(p.u8());
        let Some(slot) = slot else {
            return;
        };
        let deadline = Instant::now() + AWAIT;
        if slot.tracker.queued.load(SeqCst) {
            while slot.tracker.outstanding.load(SeqCst) > 0 && Instant::now() < deadline {
                take_completions(self.cq, 4, 1);
            }
            return;
        }
        let mut seen = CALLBACKS.lock().unwrap();
        while slot.tracker.outstanding.load(SeqCst) > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            seen = CALLED_BACK.wait_timeout(seen, left).unwrap().0;
        }
    }

    fn names(&mut self, p: &mut Program) {
        let code = match p.u8() % 4 {
            0 => p.u16() as i32 + 10_000,
            1 => p.u8() as i32,
            _ => p.u32() as i32,
        };
        let known = SocketError::from_code(code).is_some();
        let name = st::sock_error_name(code);
        let status = checked_status("sock_error_name");
        assert!(!name.is_null());
        assert_eq!(
            status == Status::Ok as i32,
            known,
            "sock_error_name({code})"
        );
        let name = st::sock_status_name(code % 16);
        let status = checked_status("sock_status_name");
        assert!(!name.is_null());
        assert_eq!(
            status == Status::Ok as i32,
            Status::from_code(code % 16).is_some()
        );
        assert!(!st::sock_version().is_null());
    }

    /// The queue calls the program makes: waits with every kind of argument, and its
    /// descriptor. (A NULL queue, a NULL `out`, cap 0 and timeouts below -1 are refused.)
    fn queue(&mut self, p: &mut Program) {
        let how = p.u8();
        match how % 8 {
            0 => {
                let mut out = [std::ptr::null_mut(); 2];
                let taken = q::sock_cq_wait(std::ptr::null_mut(), out.as_mut_ptr(), 2, 0);
                assert_eq!(
                    (taken, checked_status("sock_cq_wait(NULL)")),
                    (0, Status::NullArgument as i32)
                );
            }
            1 => {
                let taken = q::sock_cq_wait(self.cq, std::ptr::null_mut(), 2, 0);
                assert_eq!(
                    (taken, checked_status("sock_cq_wait(out NULL)")),
                    (0, Status::NullArgument as i32)
                );
            }
            2 | 3 => {
                let mut out = [std::ptr::null_mut(); 2];
                let (cap, timeout) = if how % 8 == 2 {
                    (0, 0)
                } else {
                    (2, -2 - i32::from(p.u8()))
                };
                let taken = q::sock_cq_wait(self.cq, out.as_mut_ptr(), cap, timeout);
                assert_eq!(
                    (taken, checked_status("sock_cq_wait")),
                    (0, Status::InvalidArgument as i32),
                    "sock_cq_wait(cap {cap}, timeout {timeout})"
                );
                assert!(out.iter().all(|e| e.is_null()), "a refused wait wrote");
            }
            4 => {
                let fd = q::sock_cq_fd(self.cq);
                assert_eq!(checked_status("sock_cq_fd"), Status::Ok as i32);
                assert!(
                    std::fs::read_link(format!("/proc/self/fd/{fd}"))
                        .is_ok_and(|l| l.to_string_lossy().contains("eventfd")),
                    "sock_cq_fd {fd} is not an open eventfd"
                );
                assert_eq!(q::sock_cq_fd(std::ptr::null()), -1);
                assert_eq!(
                    checked_status("sock_cq_fd(NULL)"),
                    Status::NullArgument as i32
                );
            }
            5 => {
                // The runtime is running (the first sock_create started it): too late.
                let threads = u32::from(p.u8() % 4);
                let dispatch = i32::from(p.u8() % 3);
                let ok = rt::sock_runtime_configure(threads, dispatch);
                let status = checked_status("sock_runtime_configure");
                assert!(!ok, "sock_runtime_configure taken while the runtime runs");
                assert!(
                    [
                        Status::InvalidArgument as i32,
                        Status::InvalidOperation as i32
                    ]
                    .contains(&status),
                    "sock_runtime_configure while running: status {status}"
                );
            }
            6 => self.abandoned_queue(p),
            _ => take_completions(self.cq, 1 + p.u8() as usize % 8, i32::from(p.u8() % 3)),
        }
    }

    /// A queue of its own for args that start an operation, then the queue and the args
    /// freed (in either order) while it may be pending: its completion goes nowhere, and
    /// the queue's memory and descriptor must go when the operation ends (at the latest
    /// when the input closes the socket).
    fn abandoned_queue(&mut self, p: &mut Program) {
        let (handle, slot) = self.socket(p.u8());
        let how = p.u8();
        let cq = q::sock_cq_new();
        assert_eq!(checked_status("sock_cq_new"), Status::Ok as i32);
        let e = a::sock_args_new_queued(cq, std::ptr::null_mut());
        assert_eq!(checked_status("sock_args_new_queued"), Status::Ok as i32);
        let start = match how % 3 {
            0 => Start::Accept,
            1 => Start::Receive,
            _ => Start::ReceiveFrom,
        };
        let pending = start.call(handle, e);
        let status = checked_status("a start with args of an abandoned queue");
        if slot.is_none() {
            assert_eq!(status, Status::NullArgument as i32);
        }
        assert!(!pending || status == Status::Ok as i32);
        if how & 4 == 0 {
            q::sock_cq_free(cq);
            a::sock_args_free(e);
        } else {
            a::sock_args_free(e);
            q::sock_cq_free(cq);
        }
        assert_eq!(checked_status("sock_cq_free"), Status::Ok as i32);
    }

    fn set_flags(&mut self, p: &mut Program) {
        let index = p.u8();
        let flags = match p.u8() % 6 {
            0 => 0,
            1 => SocketFlags::Peek as i32,
            2 => SocketFlags::OutOfBand as i32,
            3 => (p.u16() as i32) & SocketFlags::ALL,
            4 => 1 << (p.u8() % 32),
            _ => p.u32() as i32,
        };
        let valid = flags & !SocketFlags::ALL == 0;
        let ok = self.setter(index, "sock_args_set_flags", |e| {
            a::sock_args_set_flags(e, flags)
        });
        let (e, slot) = self.args(index);
        let idle = slot.is_some_and(|a| a.tracker.outstanding.load(SeqCst) == 0);
        // Idle by the count, which a callback lowers before it returns: the library may
        // still see the args in use (InProgress) until it has.
        if idle && !ok && valid {
            let status = st::sock_last_status();
            assert_eq!(
                status,
                Status::InProgress as i32,
                "sock_args_set_flags({flags:#x}) refused on idle args"
            );
        }
        if ok {
            assert!(valid, "sock_args_set_flags took {flags:#x}");
        }
        if ok && idle {
            assert_eq!(a::sock_args_flags(e), flags, "flags read back");
            assert_eq!(checked_status("sock_args_flags"), Status::Ok as i32);
        }
        if slot.is_none() {
            assert_eq!(a::sock_args_flags(e), 0);
            assert_eq!(
                checked_status("sock_args_flags(NULL)"),
                Status::NullArgument as i32
            );
        }
    }

    /// `sock_args_remote_endpoint` with every cap: whole text and its NUL, or nothing.
    fn read_remote_endpoint(&mut self, p: &mut Program) {
        let (e, slot) = self.args(p.u8());
        let cap = p.u8() as usize % 132;
        let null_out = p.u8().is_multiple_of(8);
        let mut out = [0xaa_u8; 132];
        let ptr = if null_out {
            std::ptr::null_mut()
        } else {
            out.as_mut_ptr() as *mut c_char
        };
        let written = a::sock_args_remote_endpoint(e, ptr, cap);
        let status = checked_status("sock_args_remote_endpoint");
        if slot.is_none() {
            assert_eq!(
                (written, status),
                (0, Status::NullArgument as i32),
                "sock_args_remote_endpoint(NULL)"
            );
        }
        if written == 0 {
            assert!(
                [
                    Status::Ok as i32,
                    Status::InvalidArgument as i32,
                    Status::NullArgument as i32
                ]
                .contains(&status),
                "sock_args_remote_endpoint: 0 with status {status}"
            );
            assert!(
                out.iter().all(|b| *b == 0xaa),
                "a refused or empty endpoint read wrote text"
            );
            return;
        }
        assert_eq!(status, Status::Ok as i32);
        assert!(
            written < cap,
            "{written} bytes of text in a {cap}-byte buffer"
        );
        assert_eq!(out[written], 0, "endpoint text without its NUL");
        let text = &out[..written];
        assert!(
            text == b"unix:" || endpoint::parse(text).is_ok(),
            "args endpoint text {:?} does not parse",
            String::from_utf8_lossy(text)
        );
    }

    /// Sets send-packets elements: memory of the args' region, the file by path and by
    /// descriptor, and what must be refused (when set, or when the operation starts).
    fn set_send_packets(&mut self, p: &mut Program) {
        let index = p.u8();
        let base = region(index as usize % ARGS);
        let file = packet_file();
        let entries = match p.u8() % 8 {
            0 => 0,
            1 => 7 + p.u8() as usize % 60,
            n => n as usize,
        };
        let mut list = Vec::with_capacity(entries);
        let mut must_reject = false;
        let mut refused = false;
        let mut fits = true;
        let mut total: u64 = 0;
        for _ in 0..entries {
            let mut element = sock_send_packet {
                kind: 0,
                buffer: std::ptr::null(),
                path: std::ptr::null(),
                fd: -1,
                offset: 0,
                count: 0,
            };
            let kind = p.u8();
            match kind % 12 {
                // Memory inside the region.
                0..=2 => {
                    let start = p.u16() as usize % REGION;
                    let offset = p.u16() as usize % (REGION - start + 1);
                    let count = p.u16() as usize % (REGION - start - offset + 1);
                    element.buffer = base.wrapping_add(start) as *const c_void;
                    element.offset = offset as i64;
                    element.count = count;
                    total += count as u64;
                }
                3 => {
                    // Refused when set: NULL with bytes, a negative offset, past SSIZE_MAX.
                    must_reject = true;
                    match p.u8() % 3 {
                        0 => element.count = 1 + p.u8() as usize,
                        1 => {
                            element.buffer = base as *const c_void;
                            element.offset = -1 - i64::from(p.u8());
                        }
                        _ => {
                            element.buffer = base as *const c_void;
                            element.offset = 1;
                            element.count = isize::MAX as usize;
                        }
                    }
                }
                4 => {
                    // Two that are each in range alone, together past SSIZE_MAX: refused
                    // (never sent, as they name memory far past the region).
                    must_reject = true;
                    element.buffer = base as *const c_void;
                    element.count = isize::MAX as usize / 2 + 1;
                    list.push(element);
                }
                5..=8 => {
                    let by_path = kind % 12 <= 6;
                    element.kind = if by_path { 1 } else { 2 };
                    element.path = file.path.as_ptr();
                    element.fd = file.read.as_raw_fd() as isize;
                    element.offset = match p.u8() % 4 {
                        0 => 0,
                        1 => FILE_LEN as i64,
                        2 => i64::MAX,
                        _ => i64::from(p.u16()) % 3500,
                    };
                    element.count = match p.u8() % 4 {
                        0 => 0,
                        1 => usize::MAX,
                        _ => p.u16() as usize % 3500,
                    };
                    let offset = element.offset as u64;
                    let bytes = if element.count == 0 {
                        FILE_LEN.checked_sub(offset)
                    } else {
                        offset
                            .checked_add(element.count as u64)
                            .filter(|end| *end <= FILE_LEN)
                            .map(|_| element.count as u64)
                    };
                    match bytes {
                        Some(n) => total += n,
                        None => fits = false,
                    }
                }
                9 => {
                    // Refused when the operation starts.
                    refused = true;
                    match p.u8() % 3 {
                        0 => {
                            element.kind = 1;
                            element.path = file.missing.as_ptr();
                        }
                        1 => {
                            element.kind = 1;
                            element.path = c"/tmp".as_ptr();
                        }
                        _ => {
                            element.kind = 2;
                            element.fd = file.write_only.as_raw_fd() as isize;
                        }
                    }
                }
                10 => {
                    // Refused when set: an empty or NULL path, a negative or too large
                    // descriptor, an unknown kind.
                    must_reject = true;
                    match p.u8() % 5 {
                        0 => {
                            element.kind = 1;
                            element.path = c"".as_ptr();
                        }
                        1 => element.kind = 1,
                        2 => {
                            element.kind = 2;
                            element.fd = -1 - isize::from(p.u8());
                        }
                        3 => {
                            element.kind = 2;
                            element.fd = i32::MAX as isize + 1;
                        }
                        _ => element.kind = 3 + i32::from(p.u8()),
                    }
                }
                _ => {} // an empty memory element (NULL, 0 bytes): skipped
            }
            list.push(element);
        }
        let (ok, null_list) = self.set_array(
            p,
            index,
            "sock_args_set_send_packets",
            &list,
            must_reject,
            a::sock_args_set_send_packets,
        );
        if ok && let Some(slot) = self.args_slot(index) {
            slot.packets = (!null_list).then_some(Packets {
                total: fits.then_some(total),
                most: total,
                refused,
            });
        }
        drop(list); // copied by the library, paths included
    }

    /// Adopts the ends of a socketpair (stream or datagram), with and without ownership, and
    /// tries descriptors that are not sockets or not open.
    fn adopt_pair(&mut self, p: &mut Program) {
        let how = p.u8();
        let slots = [p.u8() as usize % SOCKETS, p.u8() as usize % SOCKETS];
        if how % 4 == 3 {
            let file = &packet_file().read;
            let fd = match p.u8() % 5 {
                0 => file.as_raw_fd() as isize,
                1 => -1 - isize::from(p.u8()),
                2 => never_open_descriptor() + isize::from(p.u8()),
                3 => i32::MAX as isize + 1,
                _ => isize::MIN,
            };
            let taken = s::sock_from_fd(fd, p.u8().is_multiple_of(2));
            assert!(taken.is_null(), "sock_from_fd({fd}) made a socket");
            assert_eq!(
                checked_status("sock_from_fd"),
                Status::InvalidArgument as i32,
                "sock_from_fd({fd})"
            );
            assert!(
                file.metadata().is_ok(),
                "a refused sock_from_fd closed the file"
            );
            return;
        }
        let stream = how % 4 != 0;
        let ends: [std::os::fd::OwnedFd; 2] = if stream {
            let (x, y) = UnixStream::pair().expect("socketpair");
            [x.into(), y.into()]
        } else {
            let (x, y) = UnixDatagram::pair().expect("socketpair");
            [x.into(), y.into()]
        };
        for (i, end) in ends.into_iter().enumerate() {
            let own = how & (4 << i) != 0;
            let fd = end.as_raw_fd();
            let handle = s::sock_from_fd(fd as isize, own);
            assert_eq!(checked_status("sock_from_fd"), Status::Ok as i32);
            assert!(
                !handle.is_null(),
                "sock_from_fd returned NULL with status OK"
            );
            let library_fd = s::sock_fd(handle);
            assert_eq!(checked_status("sock_fd"), Status::Ok as i32);
            if own {
                assert_eq!(library_fd, fd as isize, "an owned descriptor was not kept");
                let _ = end.into_raw_fd(); // the library's now
            } else {
                assert!(
                    library_fd >= 0 && library_fd != fd as isize,
                    "without ownership the library works on a duplicate, not {library_fd}"
                );
                drop(end); // the host's own copy: the library's duplicate lives on
            }
            if let Some(old) = self.sockets[slots[i]].take() {
                s::sock_free(old.handle);
                checked_status("sock_free");
            }
            self.sockets[slots[i]] = Some(SocketSlot {
                handle,
                stream,
                unix: true,
                closed: false,
                bound: true, // connected
            });
        }
    }

    fn descriptor(&mut self, p: &mut Program) {
        let (handle, slot) = self.socket(p.u8());
        let fd = s::sock_fd(handle);
        let status = checked_status("sock_fd");
        match slot {
            None => assert_eq!((fd, status), (-1, Status::NullArgument as i32)),
            Some(s) if s.closed => assert_eq!((fd, status), (-1, Status::Disposed as i32)),
            // A callback may close it meanwhile.
            Some(_) if status == Status::Disposed as i32 && CALLBACKS_CLOSE.load(SeqCst) => {}
            Some(_) => {
                assert_eq!(status, Status::Ok as i32, "sock_fd of an open socket");
                if !CALLBACKS_CLOSE.load(SeqCst) {
                    assert!(
                        std::fs::read_link(format!("/proc/self/fd/{fd}"))
                            .is_ok_and(|l| l.to_string_lossy().starts_with("socket:")),
                        "sock_fd {fd} is not an open socket"
                    );
                }
            }
        }
    }

    /// Closes and frees everything, then waits for every pending start's one callback.
    fn finish(mut self, descriptors_before: usize) {
        // Handles given to a callback that has not run may wait for nothing but this close
        // (a receive on the very socket handed over): take back whatever no callback took.
        for tracker in &TRACKER[..self.trackers_used] {
            let socket = tracker.free_socket.swap(std::ptr::null_mut(), SeqCst);
            if !socket.is_null() {
                s::sock_free(socket);
            }
            let args = tracker.free_args.swap(std::ptr::null_mut(), SeqCst);
            if !args.is_null() {
                a::sock_args_free(args);
            }
        }
        for slot in self.sockets.iter_mut() {
            if let Some(socket) = slot.take() {
                s::sock_free(socket.handle);
            }
        }
        for slot in self.args.iter_mut() {
            if let Some(args) = slot.take() {
                a::sock_args_free(args.handle);
            }
        }
        let deadline = Instant::now() + DRAIN;
        // PENDING is read afresh each time: a callback that starts its operation again
        // raises it, and both that callback and the next one may have come by the time this
        // thread wakes (a snapshot taken before would then look exceeded). Equal totals mean
        // quiet: a callback counts its own start's successor before itself.
        let mut seen = CALLBACKS.lock().unwrap();
        while *seen < PENDING.load(SeqCst) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "lost completions: {} starts went pending, {} callbacks came within {DRAIN:?} \
                 of closing every socket",
                PENDING.load(SeqCst),
                *seen
            );
            seen = CALLED_BACK.wait_timeout(seen, left).unwrap().0;
        }
        let pending = PENDING.load(SeqCst);
        assert_eq!(*seen, pending, "more callbacks than pending starts");
        *seen = 0;
        PENDING.store(0, SeqCst);
        CALLBACKS_CLOSE.store(false, SeqCst);
        drop(seen);
        // The queue: one completion per pending start of its args, also of args freed
        // while pending.
        while TAKEN.load(SeqCst) < QUEUED.load(SeqCst) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "lost completions: {} starts of queued args went pending, {} were posted \
                 within {DRAIN:?} of closing every socket",
                QUEUED.load(SeqCst),
                TAKEN.load(SeqCst)
            );
            take_completions(self.cq, 64, left.as_millis().max(1) as i32);
        }
        for (i, tracker) in TRACKER[..self.trackers_used].iter().enumerate() {
            assert_eq!(
                tracker.outstanding.load(SeqCst),
                0,
                "args #{i}: completions != pending starts"
            );
        }
        // A callback's args (and a socket they accepted) are released after it returns, and
        // that can post more to the reactor: the second fence comes after all of it.
        reactor_fence();
        reactor_fence();
        // Nothing more may come; the wait also lets go of freed args the last one handed
        // out (which hold the queue, and so its descriptor).
        let mut out = [std::ptr::null_mut(); 4];
        let extra = q::sock_cq_wait(self.cq, out.as_mut_ptr(), out.len(), 0);
        assert_eq!(checked_status("sock_cq_wait"), Status::Ok as i32);
        assert_eq!(
            (extra, QUEUED.load(SeqCst)),
            (0, TAKEN.load(SeqCst)),
            "a completion posted after every pending start's own"
        );
        QUEUED.store(0, SeqCst);
        TAKEN.store(0, SeqCst);
        q::sock_cq_free(self.cq);
        assert_eq!(checked_status("sock_cq_free"), Status::Ok as i32);
        for tracker in &TRACKER[..self.trackers_used] {
            tracker.args.store(std::ptr::null_mut(), SeqCst);
        }
        // Descriptors close with the last use; one still held by the reactor closes soon.
        while open_descriptors() > descriptors_before {
            assert!(
                Instant::now() < deadline,
                "descriptor leak: {} open after everything was freed, {descriptors_before} before",
                open_descriptors()
            );
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

fn local_endpoint(handle: *mut sock) -> Option<Endpoint> {
    let mut out = [0u8; 128];
    let n = s::sock_local_endpoint(handle, out.as_mut_ptr() as *mut c_char, out.len());
    endpoint::parse(&out[..n]).ok()
}

fuzz_target!(|data: &[u8]| {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        // The reactor's own descriptors (epoll, waker) belong to no input, nor do the
        // send-packets file's.
        s::sock_free(s::sock_create(V4, 1, 6));
        packet_file();
    });
    let descriptors_before = open_descriptors();
    let mut program = Program { bytes: data };
    let mut run = Run::new();
    for _ in 0..MAX_OPS {
        if program.bytes.is_empty() {
            break;
        }
        run.execute(&mut program);
    }
    run.finish(descriptors_before);
});
