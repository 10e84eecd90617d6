//! The few system-call wrappers. Every `unsafe` of the safe core lives here, but for the
//! reactor's two uses of a registration token (see `reactor.rs`).
//!
//! Each wrapper retries EINTR (managed hosts interrupt every thread for garbage collection),
//! returns `Err(errno)` otherwise, and never raises SIGPIPE (sends carry MSG_NOSIGNAL).

use std::os::fd::{BorrowedFd, RawFd};

pub type Errno = i32;

/// Caller-owned memory: a pointer and a length the C caller handed in and promised, by the
/// API contract, to keep valid until the operation using it has completed. sockasync never
/// builds a Rust reference from it; only the kernel reads or writes through it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawBuf {
    pub ptr: *mut u8,
    pub len: usize,
}

// SAFETY: a RawBuf is an address and a length, never dereferenced by Rust code; the memory it
// names belongs to the caller, who keeps it valid for the operation on whichever thread the
// operation finishes (the documented contract of sock_args_set_buffer and friends).
unsafe impl Send for RawBuf {}
// SAFETY: as above; sharing the address between threads shares no Rust-visible data.
unsafe impl Sync for RawBuf {}

impl RawBuf {
    pub const EMPTY: RawBuf = RawBuf {
        ptr: std::ptr::null_mut(),
        len: 0,
    };

    /// The part of the buffer from `from` on (the caller guarantees `from <= len`).
    pub(crate) fn tail(self, from: usize) -> RawBuf {
        RawBuf {
            ptr: self.ptr.wrapping_add(from),
            len: self.len - from,
        }
    }
}

/// How many iovec entries go into one sendmsg/recvmsg; a longer list is sent in rounds.
/// Kept well under IOV_MAX (1024) so the array fits comfortably on any caller's stack.
pub(crate) const IOV_BATCH: usize = 256;

fn errno() -> Errno {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

#[inline]
fn check_len(ret: isize) -> Result<usize, Errno> {
    if ret < 0 {
        Err(errno())
    } else {
        Ok(ret as usize)
    }
}

/// Repeats `f` while it fails with EINTR.
#[inline]
fn retry(mut f: impl FnMut() -> isize) -> Result<usize, Errno> {
    loop {
        match check_len(f()) {
            Err(libc::EINTR) => continue,
            other => return other,
        }
    }
}

/// A system call's raw return: the result, or -errno (the kernel's convention).
#[inline]
fn check_raw(ret: isize) -> Result<usize, Errno> {
    if ret < 0 {
        Err(-ret as Errno)
    } else {
        Ok(ret as usize)
    }
}

/// The `syscall` instruction itself, for the hot path's sends and receives. Going straight to
/// the kernel rather than through libc's `send`/`recv` matters twice: those wrappers are
/// pthread cancellation points, and a thread cancelled inside sockasync would strand the
/// socket queue it owns; and the call costs a handful of instructions instead of libc's
/// `syscall()` trampoline, which shuffles every argument and stores errno in TLS on failure.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
#[inline(always)]
unsafe fn syscall6(number: libc::c_long, args: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the Linux x86-64 system-call convention (number in rax, arguments in rdi, rsi,
    // rdx, r10, r8, r9; rcx and r11 clobbered; result or -errno in rax). The asm leaves the
    // stack alone, and has no `nomem`: callers' memory the kernel reads or writes is
    // visible to the compiler as used. The caller vouches for the arguments (unsafe fn).
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") number as isize => ret,
            in("rdi") args[0],
            in("rsi") args[1],
            in("rdx") args[2],
            in("r10") args[3],
            in("r8") args[4],
            in("r9") args[5],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

#[cfg(all(target_os = "linux", target_arch = "aarch64"))]
#[inline(always)]
unsafe fn syscall6(number: libc::c_long, args: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the Linux AArch64 system-call convention (number in x8, arguments in x0-x5,
    // result or -errno in x0); as for x86-64, no stack use and memory counts as used.
    unsafe {
        std::arch::asm!(
            "svc 0",
            in("x8") number,
            inlateout("x0") args[0] as isize => ret,
            in("x1") args[1],
            in("x2") args[2],
            in("x3") args[3],
            in("x4") args[4],
            in("x5") args[5],
            options(nostack),
        );
    }
    ret
}

#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
#[inline]
unsafe fn syscall6(number: libc::c_long, args: [usize; 6]) -> isize {
    // SAFETY: libc's generic trampoline with the same arguments (the caller vouches for
    // them); it reports failure as -1 and errno, turned into the kernel's -errno here.
    let ret = unsafe {
        libc::syscall(number, args[0], args[1], args[2], args[3], args[4], args[5]) as isize
    };
    if ret < 0 { -(errno() as isize) } else { ret }
}

/// Repeats a raw system call while it fails with EINTR. Unsafe as `syscall6` is: the
/// caller vouches that the call with these arguments touches only memory it may.
#[inline(always)]
unsafe fn retry_raw(number: libc::c_long, args: [usize; 6]) -> Result<usize, Errno> {
    loop {
        // SAFETY: passed on from this function's caller.
        match check_raw(unsafe { syscall6(number, args) }) {
            Err(libc::EINTR) => continue,
            other => return other,
        }
    }
}

/// send(2) as sendto with no address, never raising SIGPIPE; `flags` are MSG_* bits.
#[inline(always)]
pub fn send(fd: RawFd, buf: RawBuf, flags: i32) -> Result<usize, Errno> {
    // SAFETY: buf is caller memory valid for buf.len bytes (RawBuf contract); the kernel
    // only reads it. A null address and length 0 make sendto a send.
    unsafe {
        retry_raw(
            libc::SYS_sendto,
            [
                fd as usize,
                buf.ptr as usize,
                buf.len,
                (libc::MSG_NOSIGNAL | flags) as usize,
                0,
                0,
            ],
        )
    }
}

/// recv(2) as recvfrom with no address.
#[inline(always)]
pub fn recv(fd: RawFd, buf: RawBuf, flags: i32) -> Result<usize, Errno> {
    // SAFETY: buf is caller memory valid for buf.len writable bytes (RawBuf contract); null
    // address pointers make recvfrom a recv.
    unsafe {
        retry_raw(
            libc::SYS_recvfrom,
            [fd as usize, buf.ptr as usize, buf.len, flags as usize, 0, 0],
        )
    }
}

/// Fills `iov` from `bufs`, starting `skip` bytes into `bufs[0]` and leaving out empty entries.
/// Returns how many iovec entries were filled and how many entries of `bufs` they consumed.
fn fill_iov(bufs: &[RawBuf], skip: usize, iov: &mut [libc::iovec; IOV_BATCH]) -> (usize, usize) {
    let mut n = 0;
    let mut used = 0;
    for (i, b) in bufs.iter().enumerate() {
        if n == IOV_BATCH {
            break;
        }
        let b = if i == 0 { b.tail(skip) } else { *b };
        used = i + 1;
        if b.len == 0 {
            continue;
        }
        iov[n] = libc::iovec {
            iov_base: b.ptr as *mut libc::c_void,
            iov_len: b.len,
        };
        n += 1;
    }
    (n, used)
}

const EMPTY_IOV: libc::iovec = libc::iovec {
    iov_base: std::ptr::null_mut(),
    iov_len: 0,
};

/// One sendmsg over the next batch of `bufs` (the first `skip` bytes of `bufs[0]` are already
/// sent). Returns the bytes the kernel took.
pub fn sendmsg(fd: RawFd, bufs: &[RawBuf], skip: usize, flags: i32) -> Result<usize, Errno> {
    let mut iov = [EMPTY_IOV; IOV_BATCH];
    let (n, _) = fill_iov(bufs, skip, &mut iov);
    if n == 0 {
        return Ok(0);
    }
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = n;
    // SAFETY: msg points at `n` iovecs naming caller memory that stays valid for the
    // operation (RawBuf contract); the kernel only reads it.
    retry(|| unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL | flags) })
}

/// One recvmsg into the next batch of `bufs`. Returns (bytes received, bytes the batch could
/// hold, entries of `bufs` the batch covered), so the caller can go on with the next batch.
pub fn recvmsg(fd: RawFd, bufs: &[RawBuf], flags: i32) -> Result<(usize, usize, usize), Errno> {
    let mut iov = [EMPTY_IOV; IOV_BATCH];
    let (n, used) = fill_iov(bufs, 0, &mut iov);
    let room = iov[..n].iter().map(|v| v.iov_len).sum();
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = n;
    // SAFETY: msg points at `n` iovecs naming writable caller memory (RawBuf contract).
    let got = retry(|| unsafe { libc::recvmsg(fd, &mut msg, flags) })?;
    Ok((got, room, used))
}

/// How many entries of `bufs` (and bytes into the next one) `sent` bytes cover, given that the
/// first `skip` bytes of `bufs[0]` were already sent: advances a buffer-list cursor.
pub fn advance(
    bufs: &[RawBuf],
    mut index: usize,
    mut skip: usize,
    mut sent: usize,
) -> (usize, usize) {
    while sent > 0 && index < bufs.len() {
        let left = bufs[index].len - skip;
        if sent < left {
            return (index, skip + sent);
        }
        sent -= left;
        index += 1;
        skip = 0;
    }
    while index < bufs.len() && bufs[index].len == 0 {
        index += 1;
    }
    (index, skip)
}

/// What a send-packets file element needs to know of its file.
pub struct FileFacts {
    pub regular: bool,
    pub readable: bool,
    pub size: u64,
}

/// fstat(2) and the access mode of a descriptor: EBADF if it is not open.
pub fn file_facts(fd: RawFd) -> Result<FileFacts, Errno> {
    // SAFETY: stat is plain data; all-zero is a valid value for fstat to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid out-pointer of the right type; an invalid descriptor is
    // answered with EBADF.
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return Err(errno());
    }
    // SAFETY: plain system call with integer arguments.
    let mode = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if mode < 0 {
        return Err(errno());
    }
    Ok(FileFacts {
        regular: st.st_mode & libc::S_IFMT == libc::S_IFREG,
        readable: mode & libc::O_ACCMODE != libc::O_WRONLY,
        size: st.st_size as u64,
    })
}

/// The most one sendfile(2) moves (the kernel's MAX_RW_COUNT); a larger range takes rounds.
const SENDFILE_MAX: u64 = 0x7fff_f000;

/// sendfile(2): up to `count` bytes of `file` from `offset` to the socket `out`. The offset is
/// passed explicitly, so the file's own position is neither used nor moved. Unlike send, it
/// has no MSG_NOSIGNAL, so the SIGPIPE a broken connection raises is kept off the process
/// (see `without_sigpipe`). Ok(0) with `count` > 0: the file ends at or before `offset`.
pub fn sendfile(out: RawFd, file: RawFd, offset: u64, count: u64) -> Result<usize, Errno> {
    let mut offset = offset as libc::off_t;
    let count = count.min(SENDFILE_MAX) as usize;
    without_sigpipe(|| {
        // SAFETY: plain system call; `offset` is a valid in-out pointer for the call.
        retry(|| unsafe { libc::sendfile(out, file, &mut offset, count) })
    })
}

/// Runs a send that may raise SIGPIPE with SIGPIPE blocked on this thread, and discards the
/// one it raised, so the host's disposition is never consulted (and never changed). A broken
/// connection's SIGPIPE goes to the sending thread, so blocking it here holds it pending for
/// `sigtimedwait` to take; one that was already pending before is left alone (standard
/// signals do not queue: taking "ours" would take that one).
fn without_sigpipe(send: impl FnOnce() -> Result<usize, Errno>) -> Result<usize, Errno> {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
    let mut pipe: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut pending: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid sigset pointers; these calls only read and write the sets and this
    // thread's signal mask.
    let already_pending = unsafe {
        libc::sigemptyset(&mut pipe);
        libc::sigaddset(&mut pipe, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &pipe, &mut old);
        libc::sigpending(&mut pending) == 0 && libc::sigismember(&pending, libc::SIGPIPE) == 1
    };
    let result = send();
    if result == Err(libc::EPIPE) && !already_pending {
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid set and timeout; a NULL siginfo is allowed. With a zero timeout it
        // returns at once, taking the SIGPIPE just raised (EAGAIN if there is none); another
        // signal arriving first (EINTR) must not leave it pending for the unblock below.
        while unsafe { libc::sigtimedwait(&pipe, std::ptr::null_mut(), &zero) } < 0
            && errno() == libc::EINTR
        {}
    }
    // SAFETY: restores the mask read above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    result
}

pub fn socket(domain: i32, ty: i32, protocol: i32) -> Result<RawFd, Errno> {
    // SAFETY: plain system call with integer arguments.
    let fd = unsafe {
        libc::socket(
            domain,
            ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            protocol,
        )
    };
    if fd < 0 { Err(errno()) } else { Ok(fd) }
}

pub fn accept(fd: RawFd) -> Result<RawFd, Errno> {
    loop {
        // SAFETY: NULL address pointers are allowed by accept4; the new descriptor is owned by
        // the caller of this function.
        let new = unsafe {
            libc::accept4(
                fd,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        };
        if new >= 0 {
            return Ok(new);
        }
        match errno() {
            libc::EINTR => continue,
            e => return Err(e),
        }
    }
}

/// Starts a non-blocking connect. EINTR means the connect goes on asynchronously (POSIX), so
/// it is reported as EINPROGRESS rather than retried (a retry would say EALREADY).
pub fn connect(fd: RawFd, addr: &socket2::SockAddr) -> Result<(), Errno> {
    // SAFETY: addr is a valid socket address of addr.len() bytes.
    let ret = unsafe { libc::connect(fd, addr.as_ptr() as *const libc::sockaddr, addr.len()) };
    if ret == 0 {
        return Ok(());
    }
    match errno() {
        libc::EINTR => Err(libc::EINPROGRESS),
        e => Err(e),
    }
}

/// Whether a connecting socket has finished (connected or failed), without blocking.
pub fn connect_finished(fd: RawFd) -> Result<bool, Errno> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    retry(|| unsafe { libc::poll(&mut pfd, 1, 0) as isize })?;
    Ok(pfd.revents & (libc::POLLOUT | libc::POLLERR | libc::POLLHUP) != 0)
}

/// Reads and clears SO_ERROR.
pub fn take_error(fd: RawFd) -> Result<Errno, Errno> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: value and len are valid out-pointers of the sizes given.
    let ret = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            &mut value as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    if ret < 0 { Err(errno()) } else { Ok(value) }
}

pub fn shutdown(fd: RawFd, how: i32) -> Result<(), Errno> {
    // SAFETY: plain system call with integer arguments.
    if unsafe { libc::shutdown(fd, how) } < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

pub fn close(fd: RawFd) {
    // SAFETY: the descriptor is owned by the caller, who closes it exactly once (Fd's state
    // word). EINTR is not retried: on Linux the descriptor is released regardless.
    unsafe {
        libc::close(fd);
    }
}

/// The most iovec entries the kernel takes in one call (UIO_MAXIOV).
const IOV_MAX: usize = 1024;

/// The iovecs naming the non-empty buffers of `bufs`, or None if there are more than one call
/// takes.
fn datagram_iov(bufs: &[RawBuf]) -> Option<Vec<libc::iovec>> {
    let iov: Vec<libc::iovec> = bufs
        .iter()
        .filter(|b| b.len > 0)
        .map(|b| libc::iovec {
            iov_base: b.ptr as *mut libc::c_void,
            iov_len: b.len,
        })
        .take(IOV_MAX + 1)
        .collect();
    (iov.len() <= IOV_MAX).then_some(iov)
}

/// Sends `bufs` as one datagram (to `to`, or the connected peer). A list longer than one call
/// takes is gathered into one buffer first, so a datagram is never split.
pub fn send_datagram(
    fd: RawFd,
    bufs: &[RawBuf],
    to: Option<&socket2::SockAddr>,
    flags: i32,
) -> Result<usize, Errno> {
    let gathered: Vec<u8>;
    let mut iov = match datagram_iov(bufs) {
        Some(iov) => iov,
        None => {
            // SAFETY: each entry is caller memory valid for its length (RawBuf contract),
            // only read here.
            gathered = bufs
                .iter()
                .flat_map(|b| unsafe { std::slice::from_raw_parts(b.ptr, b.len) })
                .copied()
                .collect();
            vec![libc::iovec {
                iov_base: gathered.as_ptr() as *mut libc::c_void,
                iov_len: gathered.len(),
            }]
        }
    };
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = iov.len();
    if let Some(to) = to {
        msg.msg_name = to.as_ptr() as *mut libc::c_void;
        msg.msg_namelen = to.len();
    }
    // SAFETY: msg names memory that stays valid through the call: the iovecs (caller memory,
    // or `gathered`) and the address; the kernel only reads them.
    retry(|| unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL | flags) })
}

/// Receives one datagram into `bufs`: (bytes kept, the kernel's msg_flags, the sender). A list
/// longer than one call takes receives into one buffer that is then scattered.
pub fn receive_datagram(
    fd: RawFd,
    bufs: &[RawBuf],
    flags: i32,
) -> Result<(usize, i32, socket2::SockAddr), Errno> {
    let mut bounce: Vec<u8> = Vec::new();
    let mut iov = match datagram_iov(bufs) {
        Some(iov) => iov,
        None => {
            bounce.resize(bufs.iter().map(|b| b.len).sum(), 0);
            vec![libc::iovec {
                iov_base: bounce.as_mut_ptr() as *mut libc::c_void,
                iov_len: bounce.len(),
            }]
        }
    };
    let mut msg_flags = 0;
    // SAFETY: try_init hands a zeroed sockaddr_storage and its length for recvmsg to fill;
    // the iovecs name writable memory (caller memory by the RawBuf contract, or `bounce`)
    // valid through the call.
    let (got, from) = unsafe {
        socket2::SockAddr::try_init(|storage, len| {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = iov.as_mut_ptr();
            msg.msg_iovlen = iov.len();
            msg.msg_name = storage as *mut libc::c_void;
            msg.msg_namelen = *len;
            let got = retry(|| libc::recvmsg(fd, &mut msg, flags))
                .map_err(std::io::Error::from_raw_os_error)?;
            *len = msg.msg_namelen;
            msg_flags = msg.msg_flags;
            Ok(got)
        })
    }
    .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
    if !bounce.is_empty() {
        let mut rest = &bounce[..got];
        for b in bufs {
            let n = rest.len().min(b.len);
            // SAFETY: b is writable caller memory of b.len bytes (RawBuf contract), n <= len,
            // and `bounce` is ours: the ranges do not overlap.
            unsafe { std::ptr::copy_nonoverlapping(rest.as_ptr(), b.ptr, n) };
            rest = &rest[n..];
        }
    }
    Ok((got, msg_flags, from))
}

/// What `sock_from_fd` needs to know of a socket the host made.
pub struct SocketFacts {
    pub socket_type: i32,
    pub domain: i32,
    pub listening: bool,
    pub connected: bool,
    pub bound: bool,
}

fn int_option(fd: RawFd, name: i32) -> Result<i32, Errno> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: value and len are valid out-pointers of the sizes given; an invalid descriptor
    // is answered with EBADF, a non-socket with ENOTSOCK.
    let ret = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            name,
            &mut value as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    if ret < 0 { Err(errno()) } else { Ok(value) }
}

/// Reads a host socket's type, family and state, checking first that `fd` is an open socket
/// (so no view of it is built otherwise).
pub fn describe_socket(fd: RawFd) -> Result<SocketFacts, Errno> {
    let socket_type = int_option(fd, libc::SO_TYPE)?;
    let domain = int_option(fd, libc::SO_DOMAIN)?;
    let listening = int_option(fd, libc::SO_ACCEPTCONN)? != 0;
    let (connected, bound) = with_sock(fd, |s| {
        let bound = s.local_addr().is_ok_and(|a| match a.as_socket() {
            Some(ip) => ip.port() != 0,
            None => !a.is_unnamed(),
        });
        (s.peer_addr().is_ok(), bound)
    });
    Ok(SocketFacts {
        socket_type,
        domain,
        listening,
        connected,
        bound,
    })
}

/// A non-blocking eventfd with count 0 (a completion queue's readiness descriptor).
pub fn eventfd() -> Result<RawFd, Errno> {
    // SAFETY: plain system call with integer arguments.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 { Err(errno()) } else { Ok(fd) }
}

/// Adds to an eventfd's count (it becomes readable).
pub fn eventfd_add(fd: RawFd, n: u64) {
    // SAFETY: writes 8 bytes from a local u64, as eventfd requires. It cannot fail short of
    // the count overflowing, which one add per empty-to-non-empty change never reaches.
    let _ = retry(|| unsafe { libc::write(fd, &n as *const u64 as *const libc::c_void, 8) });
}

/// Resets an eventfd's count to 0 (it stops being readable).
pub fn eventfd_take(fd: RawFd) {
    let mut count = 0u64;
    // SAFETY: reads 8 bytes into a local u64; EAGAIN (count already 0) is fine.
    let _ = retry(|| unsafe { libc::read(fd, &mut count as *mut u64 as *mut libc::c_void, 8) });
}

/// A close-on-exec duplicate of `fd`.
pub fn duplicate(fd: RawFd) -> Result<RawFd, Errno> {
    // SAFETY: plain system call with integer arguments.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if new < 0 { Err(errno()) } else { Ok(new) }
}

pub fn set_nonblocking(fd: RawFd) -> Result<(), Errno> {
    // SAFETY: plain system calls with integer arguments.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(errno());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(errno());
    }
    Ok(())
}

/// Runs `f` with a socket2 view of the descriptor, for option and address calls.
pub fn with_sock<R>(fd: RawFd, f: impl FnOnce(socket2::SockRef<'_>) -> R) -> R {
    // SAFETY: callers hold an Fd use guard, so the descriptor stays open during `f` (or, in
    // `describe_socket`, the host's descriptor was just checked open and is the host's to keep
    // open for the duration of its sock_from_fd call).
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    f(socket2::SockRef::from(&borrowed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buf(len: usize) -> RawBuf {
        RawBuf {
            ptr: std::ptr::NonNull::<u8>::dangling().as_ptr(),
            len,
        }
    }

    #[test]
    fn advance_walks_a_buffer_list_cursor() {
        let bufs = [buf(3), buf(0), buf(5), buf(2)];
        assert_eq!(advance(&bufs, 0, 0, 0), (0, 0));
        assert_eq!(advance(&bufs, 0, 0, 2), (0, 2));
        assert_eq!(advance(&bufs, 0, 0, 3), (2, 0));
        assert_eq!(advance(&bufs, 0, 2, 2), (2, 1));
        assert_eq!(advance(&bufs, 2, 1, 6), (4, 0));
    }
}
