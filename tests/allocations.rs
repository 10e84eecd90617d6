//! Allocations per operation on the steady path, counted by a global allocator: none for a
//! send that completes synchronously, and none for pending operations once the queues and
//! the reactor have warmed up. A count, not a timing, so it is exact on any machine.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use sockasync::engine::runtime;
use sockasync::engine::{Args, Backend, Socket, SocketOption};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; counting is a side
// effect on an atomic that allocates nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded with the caller's arguments.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(work: impl FnOnce()) -> usize {
    let count = count_allocations(work);
    // The counter itself must see an allocation, or a zero below would prove nothing.
    assert_eq!(
        count_allocations(|| drop(std::hint::black_box(Box::new(1u8)))),
        1
    );
    count
}

fn count_allocations(work: impl FnOnce()) -> usize {
    ALLOCATIONS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    work();
    COUNTING.store(false, Ordering::SeqCst);
    ALLOCATIONS.load(Ordering::SeqCst)
}

/// Completion counting without channels (a channel send allocates).
#[derive(Default)]
struct Done {
    count: Mutex<u64>,
    cond: Condvar,
}

impl Done {
    fn wait_for(&self, n: u64) {
        let guard = self.count.lock().unwrap();
        let (guard, timeout) = self
            .cond
            .wait_timeout_while(guard, Duration::from_secs(10), |c| *c < n)
            .unwrap();
        assert!(
            !timeout.timed_out(),
            "completion {n} never came ({})",
            *guard
        );
    }
}

fn args_counting(done: &Arc<Done>) -> Arc<Args> {
    let done = Arc::clone(done);
    Arc::new(Args::new(
        Box::new(move |_, _| {
            *done.count.lock().unwrap() += 1;
            done.cond.notify_all();
        }),
        0,
    ))
}

fn tcp() -> Arc<Socket> {
    Socket::create(2, 1, 6).unwrap()
}

fn connect(s: &Arc<Socket>, to: std::net::SocketAddr) {
    let done = Arc::new(Done::default());
    let a = args_counting(&done);
    a.set_remote_endpoint(Some(to)).unwrap();
    if s.connect_async(&a).unwrap() {
        done.wait_for(1);
    }
    assert_eq!(a.socket_error(), 0);
}

/// Run without libtest (`harness = false` in Cargo.toml): the count is process-wide, and
/// the harness's own thread allocates while tests run (bookkeeping right after it starts a
/// test, waking when one finishes), which landed in a count now and then. Here the only
/// threads are the checks', their helpers' and the library's.
fn main() {
    let checks: [(&str, fn()); 3] = [
        (
            "a_synchronous_send_allocates_nothing",
            a_synchronous_send_allocates_nothing,
        ),
        (
            "pending_operations_allocate_nothing_once_warm",
            pending_operations_allocate_nothing_once_warm,
        ),
        // Last: it restarts the runtime on the io_uring backend.
        (
            "batched_sends_allocate_nothing_once_warm",
            batched_sends_allocate_nothing_once_warm,
        ),
    ];
    for (name, check) in checks {
        check();
        println!("test {name} ... ok");
    }
    println!("test result: ok. {} passed; 0 failed", checks.len());
}

fn a_synchronous_send_allocates_nothing() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let s = tcp();
    connect(&s, listener.local_addr().unwrap());
    let (mut peer, _) = listener.accept().unwrap();
    let drain = std::thread::spawn(move || std::io::copy(&mut peer, &mut std::io::sink()));

    let done = Arc::new(Done::default());
    let a = args_counting(&done);
    let mut msg = [7u8; 64];
    a.set_buffer(msg.as_mut_ptr(), msg.len()).unwrap();
    let mut pending = 0;
    let mut send = |n: usize| {
        for _ in 0..n {
            if s.send_async(&a).unwrap() {
                pending += 1;
                done.wait_for(pending);
            }
            assert_eq!(a.bytes_transferred(), 64);
        }
    };
    send(1000);
    let count = allocations_during(|| send(10_000));
    assert_eq!(count, 0, "allocations in 10,000 sends");
    s.close();
    drain.join().unwrap().unwrap();
}

fn pending_operations_allocate_nothing_once_warm() {
    // Ping-pong between two library sockets: every receive goes pending and completes on
    // the reactor, whose callback counts it; the main thread drives the sends.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = tcp();
    connect(&a, listener.local_addr().unwrap());
    let (b_std, _) = listener.accept().unwrap();
    let b = Arc::new(b_std);

    let done = Arc::new(Done::default());
    let receive = args_counting(&done);
    let mut inbox = [0u8; 64];
    receive.set_buffer(inbox.as_mut_ptr(), inbox.len()).unwrap();
    let sent = Arc::new(Done::default());
    let send = args_counting(&sent);
    let mut msg = [1u8; 64];
    send.set_buffer(msg.as_mut_ptr(), msg.len()).unwrap();

    let echo = {
        let b = Arc::clone(&b);
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            let mut buf = [0u8; 64];
            let mut stream: &TcpStream = &b;
            while stream.read_exact(&mut buf).is_ok() {
                if stream.write_all(&buf).is_err() {
                    break;
                }
            }
        })
    };
    let round = |i: u64| {
        assert!(
            a.receive_async(&receive).unwrap(),
            "nothing to read yet: pending"
        );
        if a.send_async(&send).unwrap() {
            panic!("a 64-byte send on an idle connection completes at once");
        }
        done.wait_for(i);
        assert_eq!(receive.bytes_transferred(), 64);
    };
    for i in 1..=1000 {
        round(i);
    }
    let count = allocations_during(|| {
        for i in 1001..=3000 {
            round(i);
        }
    });
    assert_eq!(count, 0, "allocations in 2,000 pending receives");
    a.close();
    b.shutdown(std::net::Shutdown::Both).unwrap();
    echo.join().unwrap();
}

fn batched_sends_allocate_nothing_once_warm() {
    // Batched sends (io_uring) from the main thread, 16 at a time on each of two sockets:
    // each one goes pending, queues, and the reactor sends what queued in its next batch.
    runtime::shutdown().unwrap();
    runtime::set_backend(Backend::IoUring as i32).unwrap();
    if runtime::current().unwrap().backend() != Backend::IoUring {
        eprintln!("io_uring is refused here: batched sends not checked");
        runtime::shutdown().unwrap();
        return;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut sockets = Vec::new();
    let mut drains = Vec::new();
    for _ in 0..2 {
        let s = tcp();
        connect(&s, listener.local_addr().unwrap());
        s.set_option(SocketOption::BatchSends, 1).unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        drains.push(std::thread::spawn(move || {
            std::io::copy(&mut peer, &mut std::io::sink())
        }));
        sockets.push(s);
    }
    const IN_FLIGHT: usize = 16;
    let done = Arc::new(Done::default());
    let mut msg = [3u8; 64];
    let args: Vec<Arc<Args>> = (0..IN_FLIGHT * 2)
        .map(|_| {
            let a = args_counting(&done);
            a.set_buffer(msg.as_mut_ptr(), msg.len()).unwrap();
            a
        })
        .collect();
    let mut issued = 0u64;
    let mut send = |rounds: usize| {
        for _ in 0..rounds {
            for (i, a) in args.iter().enumerate() {
                assert!(sockets[i % 2].send_async(a).unwrap(), "batched: pending");
                issued += 1;
            }
            done.wait_for(issued);
        }
    };
    send(100);
    let count = allocations_during(|| send(500));
    assert_eq!(count, 0, "allocations in 16,000 batched sends");
    for s in &sockets {
        s.close();
    }
    for d in drains {
        d.join().unwrap().unwrap();
    }
    runtime::shutdown().unwrap();
}
