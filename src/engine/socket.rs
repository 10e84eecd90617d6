//! The socket: a non-blocking descriptor registered with the reactor, its two operation
//! queues, and the little state .NET keeps to reject misuse (bound, listening, connected).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

use super::args::{Args, Shape};
use super::endpoint::{Endpoint, Family};
use super::fd::{Fd, FdUse};
use super::op::{self, Attempt, Finished, Pending};
use super::packets::{Packet, SendPackets};
use super::queue::{self, Direction, OpQueue, Queues};
use super::reactor::Reactor;
use super::runtime;
use super::sys::{self, RawBuf};
use crate::error::{AsyncOperation, Reject, SocketError, Status};

const FRESH: u8 = 0;
const CONNECTING: u8 = 1;
const CONNECTED: u8 = 2;
const LISTENING: u8 = 3;

/// .NET's `SocketType` numbers, as `sock_create` takes them.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketType {
    Stream = 1,
    Dgram = 2,
}

/// .NET's `ProtocolType` numbers, as `sock_create` takes them.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolType {
    /// The default protocol for the socket type.
    Unspecified = 0,
    Tcp = 6,
    Udp = 17,
}

/// Options for `sock_set_option` and `sock_get_option`, with the contract's numbers.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketOption {
    NoDelay = 1,
    ReuseAddress = 2,
    KeepAlive = 3,
    SendBufferSize = 4,
    ReceiveBufferSize = 5,
    /// Seconds; -1 = off; 0 = close resets the connection.
    Linger = 6,
    /// 1 = batched sends, a stream socket's choice on the io_uring backend: its sends are
    /// never tried on the calling thread but go pending (unless a close on another thread
    /// comes first: then the send finishes at once with OperationAborted), and the reactor
    /// hands each turn's sends of all such sockets to the kernel in one system call (a
    /// socket's sends queued together go out as one gathered send). Fewer system calls for
    /// many small sends, one reactor turn of latency more. On the epoll backend setting it
    /// is accepted and does nothing (it reads back 0). Datagram sockets: NotSupported.
    BatchSends = 7,
}

impl SocketOption {
    pub fn from_code(code: i32) -> Option<SocketOption> {
        use SocketOption::*;
        [
            NoDelay,
            ReuseAddress,
            KeepAlive,
            SendBufferSize,
            ReceiveBufferSize,
            Linger,
            BatchSends,
        ]
        .into_iter()
        .find(|o| *o as i32 == code)
    }
}

/// `sock_shutdown`'s `how`, with .NET's SocketShutdown numbers.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShutdownHow {
    Receive = 0,
    Send = 1,
    Both = 2,
}

/// `stream_connected` bits.
const CONNECTED_STREAM: u8 = 1;
const BATCHED_SENDS: u8 = 2;

pub struct Socket {
    fd: Fd,
    family: Family,
    stream: bool,
    phase: AtomicU8,
    bound: AtomicBool,
    /// CONNECTED_STREAM once a stream socket has connected (it then receives, and unless
    /// BATCHED_SENDS also sends, through the fast paths), with BATCHED_SENDS
    /// (SOCK_OPTION_BATCH_SENDS on the io_uring backend) in the same byte, so the send fast
    /// path tests one value.
    stream_connected: AtomicU8,
    send_shutdown: AtomicBool,
    /// The read and write queues: `queues` and a state byte each, which sits here with the
    /// other one-byte fields rather than in padding of its own.
    queues: Queues,
    queue_states: [AtomicU8; 2],
    reactor: Arc<Reactor>,
}

/// An operation's own checks on the socket and the args' shape.
type Check = fn(&Socket, &Shape) -> Result<(), Reject>;

fn errno_reject(errno: i32, what: &str) -> Reject {
    Reject::socket(SocketError::from_errno(errno), what)
}

impl Socket {
    /// `sock_create`, with .NET's AddressFamily, SocketType and ProtocolType numbers.
    pub fn create(family: i32, socket_type: i32, protocol: i32) -> Result<Arc<Socket>, Reject> {
        let family = Family::from_dotnet(family)?;
        let (ty, stream) = match socket_type {
            t if t == SocketType::Stream as i32 => (libc::SOCK_STREAM, true),
            t if t == SocketType::Dgram as i32 => (libc::SOCK_DGRAM, false),
            other => {
                return Err(Reject::invalid(format!(
                    "unknown socket type {other} (Stream=1, Dgram=2)"
                )));
            }
        };
        let protocol = match protocol {
            p if p == ProtocolType::Unspecified as i32 => 0,
            p if p == ProtocolType::Tcp as i32 => libc::IPPROTO_TCP,
            p if p == ProtocolType::Udp as i32 => libc::IPPROTO_UDP,
            other => {
                return Err(Reject::invalid(format!(
                    "unknown protocol {other} (0 = default, Tcp=6, Udp=17)"
                )));
            }
        };
        let fd =
            sys::socket(family.domain(), ty, protocol).map_err(|e| errno_reject(e, "socket"))?;
        let reactor = match runtime::current() {
            Ok(runtime) => runtime.pick(),
            Err(reject) => {
                sys::close(fd);
                return Err(reject);
            }
        };
        Socket::registered(fd, family, stream, FRESH, reactor, false).map_err(|e| match e {
            SocketError::OperationAborted => Reject::new(
                Status::InvalidOperation,
                "sock_runtime_shutdown ran while the socket was being created",
            ),
            e => Reject::socket(e, "registering the socket"),
        })
    }

    /// Wraps an open descriptor; if registration fails the descriptor is closed, or with
    /// `keep_on_failure` left open for its owner.
    fn registered(
        fd: i32,
        family: Family,
        stream: bool,
        phase: u8,
        reactor: Arc<Reactor>,
        keep_on_failure: bool,
    ) -> Result<Arc<Socket>, SocketError> {
        let socket = Arc::new(Socket {
            fd: Fd::new(fd),
            family,
            stream,
            phase: AtomicU8::new(phase),
            bound: AtomicBool::new(phase == CONNECTED),
            stream_connected: AtomicU8::new(if phase == CONNECTED && stream {
                CONNECTED_STREAM
            } else {
                0
            }),
            send_shutdown: AtomicBool::new(false),
            queues: Queues::default(),
            queue_states: queue::initial_states(),
            reactor,
        });
        if let Err(err) = socket.reactor.register(&socket, fd) {
            if keep_on_failure {
                socket.fd.disown();
            }
            // The Arc drops here, and Fd's Drop closes the descriptor unless disowned.
            return Err(SocketError::from_io(&err));
        }
        Ok(socket)
    }

    /// A connection just accepted on this listening socket, on the next reactor (so accepted
    /// connections spread over the reactor threads). During a shutdown it is refused with
    /// OperationAborted.
    pub(crate) fn adopt_accepted(&self, fd: i32) -> Result<Arc<Socket>, SocketError> {
        let reactor = match runtime::current() {
            Ok(runtime) => runtime.pick(),
            Err(_) => {
                sys::close(fd);
                return Err(SocketError::OperationAborted);
            }
        };
        Socket::registered(fd, self.family, self.stream, CONNECTED, reactor, false)
    }

    /// `sock_from_fd`: wraps a socket the host created. Without `take_ownership` the library
    /// works on a duplicate (the host keeps and closes its own descriptor); with it, the
    /// descriptor becomes the library's on success. On failure the host's descriptor is
    /// neither closed nor kept. The state .NET tracks (listening, connected, bound) is read
    /// from the kernel.
    pub fn adopt(fd: i32, take_ownership: bool) -> Result<Arc<Socket>, Reject> {
        if fd < 0 {
            return Err(Reject::invalid(format!("{fd} is not a descriptor")));
        }
        let facts = sys::describe_socket(fd).map_err(|errno| match errno {
            libc::EBADF => Reject::invalid(format!("descriptor {fd} is not open")),
            libc::ENOTSOCK => Reject::invalid(format!("descriptor {fd} is not a socket")),
            e => errno_reject(e, "reading the socket's type"),
        })?;
        let stream = match facts.socket_type {
            libc::SOCK_STREAM => true,
            libc::SOCK_DGRAM => false,
            other => {
                return Err(Reject::new(
                    Status::NotSupported,
                    format!("socket type {other} (only stream and datagram sockets)"),
                ));
            }
        };
        let family = match facts.domain {
            libc::AF_INET => Family::V4,
            libc::AF_INET6 => Family::V6,
            libc::AF_UNIX => Family::Unix,
            other => {
                return Err(Reject::new(
                    Status::NotSupported,
                    format!("address family {other} (only IPv4, IPv6 and Unix)"),
                ));
            }
        };
        let reactor = runtime::current()?.pick();
        let own = if take_ownership {
            fd
        } else {
            sys::duplicate(fd).map_err(|e| errno_reject(e, "duplicating the descriptor"))?
        };
        // Non-blocking is a property of the open file, so the host's descriptor sees it too.
        if let Err(e) = sys::set_nonblocking(own) {
            if !take_ownership {
                sys::close(own);
            }
            return Err(errno_reject(e, "making the socket non-blocking"));
        }
        let phase = if facts.listening {
            LISTENING
        } else if facts.connected {
            CONNECTED
        } else {
            FRESH
        };
        let socket = Socket::registered(own, family, stream, phase, reactor, take_ownership)
            .map_err(|e| Reject::socket(e, "registering the socket"))?;
        socket.bound.store(
            facts.bound || facts.listening || facts.connected,
            Ordering::Release,
        );
        Ok(socket)
    }

    /// `sock_fd`: the descriptor, while the socket is open.
    pub fn raw_fd(&self) -> Option<i32> {
        self.fd.acquire().map(|fd| fd.raw())
    }

    pub(crate) fn fd(&self) -> &Fd {
        &self.fd
    }

    pub(crate) fn reactor(&self) -> &Reactor {
        &self.reactor
    }

    #[inline]
    pub(crate) fn queue(&self, direction: Direction) -> OpQueue<'_> {
        self.queues
            .queue(&self.queue_states[direction as usize], direction)
    }

    #[inline]
    fn read(&self) -> OpQueue<'_> {
        self.queue(Direction::Read)
    }

    #[inline]
    fn write(&self) -> OpQueue<'_> {
        self.queue(Direction::Write)
    }

    pub fn family(&self) -> Family {
        self.family
    }

    #[inline]
    pub fn is_stream(&self) -> bool {
        self.stream
    }

    pub fn is_closed(&self) -> bool {
        self.fd.is_closed()
    }

    /// A stream socket that has connected (a datagram socket never is one: its connect only
    /// names the peer, and its sends and receives keep to the general path).
    #[inline]
    pub(crate) fn stream_connected(&self) -> bool {
        self.stream_connected.load(Ordering::Acquire) & CONNECTED_STREAM != 0
    }

    /// A connected stream socket whose sends are tried at once (not batched).
    #[inline]
    fn sends_directly(&self) -> bool {
        self.stream_connected.load(Ordering::Acquire) == CONNECTED_STREAM
    }

    pub(crate) fn connect_finished(&self, connected: bool) {
        if connected && self.stream {
            self.stream_connected
                .fetch_or(CONNECTED_STREAM, Ordering::Release);
        }
        if connected {
            self.bound.store(true, Ordering::Relaxed);
        }
        self.phase
            .store(if connected { CONNECTED } else { FRESH }, Ordering::Release);
    }

    pub(crate) fn mark_send_shutdown(&self) {
        self.send_shutdown.store(true, Ordering::Relaxed);
    }

    /// The socket is open (.NET checks disposal before anything else).
    #[inline]
    pub fn check_open(&self) -> Result<(), Reject> {
        if self.is_closed() {
            Err(Reject::disposed())
        } else {
            Ok(())
        }
    }

    /// Runs `f` on the open descriptor.
    fn with_fd<R>(&self, f: impl FnOnce(i32) -> Result<R, Reject>) -> Result<R, Reject> {
        let fd = self.fd.acquire().ok_or_else(Reject::disposed)?;
        f(fd.raw())
    }

    fn check_family(&self, endpoint: &Endpoint) -> Result<(), Reject> {
        if endpoint.family() == self.family {
            Ok(())
        } else {
            Err(Reject::new(
                Status::NotSupported,
                format!(
                    "endpoint {endpoint} is not of the socket's address family ({})",
                    self.family
                ),
            ))
        }
    }

    pub fn bind(&self, endpoint: impl Into<Endpoint>) -> Result<(), Reject> {
        let endpoint = endpoint.into();
        self.check_family(&endpoint)?;
        self.with_fd(|fd| {
            sys::with_sock(fd, |s| s.bind(endpoint.sock_addr())).map_err(|e| Reject::io(&e, "bind"))
        })?;
        self.bound.store(true, Ordering::Release);
        Ok(())
    }

    pub fn listen(&self, backlog: i32) -> Result<(), Reject> {
        self.with_fd(|fd| {
            sys::with_sock(fd, |s| s.listen(backlog)).map_err(|e| Reject::io(&e, "listen"))
        })?;
        self.phase.store(LISTENING, Ordering::Release);
        Ok(())
    }

    /// The local (or, with `peer`, the remote) endpoint, of any family.
    pub fn address(&self, peer: bool) -> Result<Endpoint, Reject> {
        let what = if peer { "getpeername" } else { "getsockname" };
        let addr = self.with_fd(|fd| {
            sys::with_sock(fd, |s| if peer { s.peer_addr() } else { s.local_addr() })
                .map_err(|e| Reject::io(&e, what))
        })?;
        Endpoint::from_sock_addr(addr)
            .ok_or_else(|| Reject::new(Status::NotSupported, format!("{what}: unknown family")))
    }

    fn ip_address(&self, peer: bool) -> Result<SocketAddr, Reject> {
        self.address(peer)?
            .as_ip()
            .ok_or_else(|| Reject::new(Status::NotSupported, "not an IP endpoint"))
    }

    /// The local IP endpoint (NotSupported for a Unix socket; see `address`).
    pub fn local_endpoint(&self) -> Result<SocketAddr, Reject> {
        self.ip_address(false)
    }

    /// The peer's IP endpoint (NotSupported for a Unix socket; see `address`).
    pub fn remote_endpoint(&self) -> Result<SocketAddr, Reject> {
        self.ip_address(true)
    }

    pub fn set_option(&self, option: SocketOption, value: i64) -> Result<(), Reject> {
        use SocketOption::*;
        let flag = || match value {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Reject::invalid(format!(
                "option {option:?} is a boolean: 0 or 1, not {value}"
            ))),
        };
        let size = || {
            usize::try_from(value)
                .ok()
                .filter(|v| *v > 0 && *v <= i32::MAX as usize)
                .ok_or_else(|| {
                    Reject::invalid(format!(
                        "option {option:?} takes a size from 1 to {}, not {value}",
                        i32::MAX
                    ))
                })
        };
        let linger = || match value {
            -1 => Ok(None),
            0..=65535 => Ok(Some(Duration::from_secs(value as u64))),
            _ => Err(Reject::invalid(format!(
                "Linger takes -1 (off) or 0 to 65535 seconds, not {value}"
            ))),
        };
        if option == BatchSends {
            return self.set_batched_sends(flag()?);
        }
        self.with_fd(|fd| {
            sys::with_sock(fd, |s| -> Result<(), Reject> {
                let result = match option {
                    NoDelay => s.set_tcp_nodelay(flag()?),
                    ReuseAddress => s.set_reuse_address(flag()?),
                    KeepAlive => s.set_keepalive(flag()?),
                    SendBufferSize => s.set_send_buffer_size(size()?),
                    ReceiveBufferSize => s.set_recv_buffer_size(size()?),
                    Linger => s.set_linger(linger()?),
                    BatchSends => unreachable!("handled above"),
                };
                result.map_err(|e| Reject::io(&e, "setsockopt"))
            })
        })
    }

    pub fn get_option(&self, option: SocketOption) -> Result<i64, Reject> {
        use SocketOption::*;
        if option == BatchSends {
            self.check_open()?;
            let bits = self.stream_connected.load(Ordering::Relaxed);
            return Ok(i64::from(bits & BATCHED_SENDS != 0));
        }
        self.with_fd(|fd| {
            sys::with_sock(fd, |s| {
                let value = match option {
                    NoDelay => s.tcp_nodelay().map(i64::from),
                    ReuseAddress => s.reuse_address().map(i64::from),
                    KeepAlive => s.keepalive().map(i64::from),
                    SendBufferSize => s.send_buffer_size().map(|v| v as i64),
                    ReceiveBufferSize => s.recv_buffer_size().map(|v| v as i64),
                    Linger => s.linger().map(|l| l.map_or(-1, |d| d.as_secs() as i64)),
                    BatchSends => unreachable!("handled above"),
                };
                value.map_err(|e| Reject::io(&e, "getsockopt"))
            })
        })
    }

    fn set_batched_sends(&self, on: bool) -> Result<(), Reject> {
        self.check_open()?;
        if !self.stream {
            return Err(Reject::new(
                Status::NotSupported,
                "batched sends are for stream sockets",
            ));
        }
        if !self.reactor.batches_sends() {
            return Ok(());
        }
        if on {
            self.stream_connected
                .fetch_or(BATCHED_SENDS, Ordering::AcqRel);
        } else {
            self.stream_connected
                .fetch_and(!BATCHED_SENDS, Ordering::AcqRel);
        }
        Ok(())
    }

    pub fn shutdown(&self, how: ShutdownHow) -> Result<(), Reject> {
        let raw = match how {
            ShutdownHow::Receive => libc::SHUT_RD,
            ShutdownHow::Send => libc::SHUT_WR,
            ShutdownHow::Both => libc::SHUT_RDWR,
        };
        self.with_fd(|fd| sys::shutdown(fd, raw).map_err(|e| errno_reject(e, "shutdown")))?;
        if how != ShutdownHow::Receive {
            self.mark_send_shutdown();
        }
        Ok(())
    }

    /// Closes the socket. Pending operations complete with OperationAborted on the reactor
    /// thread; if there were any, the close resets the connection unless sending was shut
    /// down first. Idempotent.
    pub fn close(&self) {
        self.close_aborting(Vec::new());
    }

    /// A runtime shutdown's first step, for every socket before any is closed: stops both
    /// queues so that no readiness edge can finish what is waiting (closing one end of a
    /// connection would otherwise complete the other end's receive with end of stream), and
    /// returns the waiting operations for `close_aborting`.
    pub(crate) fn stop_queues(&self) -> Vec<Pending> {
        let mut stopped = self.read().stop();
        stopped.extend(self.write().stop());
        stopped
    }

    /// Closes the socket, aborting `taken` (operations `stop_queues` took out) together with
    /// whatever is still queued.
    pub(crate) fn close_aborting(&self, taken: Vec<Pending>) {
        // Held from claiming the descriptor until the messages are posted, so a runtime
        // shutdown cannot stop the reactor in between (see reactor.rs).
        let closing = self.reactor.hold_for_close();
        let mut aborted = taken;
        let Some(fd) = self.fd.close() else {
            // Someone else closed it after the operations were taken: they are ours to end.
            self.reactor.abort(&closing, aborted);
            return;
        };
        aborted.extend(self.stop_queues());
        if !aborted.is_empty() && self.stream && !self.send_shutdown.load(Ordering::Relaxed) {
            // Abortive: the peer must not mistake an abandoned transfer for a clean end.
            let _ = sys::with_sock(fd.raw(), |s| s.set_linger(Some(Duration::ZERO)));
        }
        self.reactor.deregister(&closing, self, fd.raw());
        self.reactor.abort(&closing, aborted);
        // The descriptor closes when the last user (possibly this guard) lets go.
        drop(fd);
    }

    /// Takes the args for an operation after the checks .NET makes: disposal first, then the
    /// operation's own checks against the args as they are (even if another operation owns
    /// them, so the right error wins over InProgress), then again once the args are taken.
    fn begin(&self, args: &Args, check: Option<Check>, with_endpoint: bool) -> Result<(), Reject> {
        self.check_open()?;
        if let Some(check) = check {
            check(self, &args.peek_shape(with_endpoint))?;
        }
        let shape = args.begin(with_endpoint)?;
        if let Some(check) = check {
            if let Err(reject) = check(self, &shape) {
                args.abandon();
                return Err(reject);
            }
        }
        Ok(())
    }

    pub fn accept_async(self: &Arc<Self>, args: &Arc<Args>) -> Result<bool, Reject> {
        let check: Check = |s, shape| {
            if shape.has_list {
                return Err(Reject::invalid("accept does not take a buffer list"));
            }
            if !s.bound.load(Ordering::Acquire) {
                return Err(Reject::new(
                    Status::InvalidOperation,
                    "accept needs a bound socket: call sock_bind first",
                ));
            }
            if s.phase.load(Ordering::Acquire) != LISTENING {
                return Err(Reject::new(
                    Status::InvalidOperation,
                    "accept needs a listening socket: call sock_listen first",
                ));
            }
            if shape.has_buffer {
                return Err(Reject::new(
                    Status::NotSupported,
                    "accept with a receive buffer is not supported: clear the buffer",
                ));
            }
            Ok(())
        };
        self.begin(args, Some(check), false)?;
        self.read().start(self, args, AsyncOperation::Accept)
    }

    pub fn connect_async(self: &Arc<Self>, args: &Arc<Args>) -> Result<bool, Reject> {
        let check: Check = |s, shape| {
            if shape.has_list {
                return Err(Reject::invalid("connect does not take a buffer list"));
            }
            let Some(endpoint) = &shape.endpoint else {
                return Err(Reject::invalid(
                    "connect needs a remote endpoint: call sock_args_set_remote_endpoint",
                ));
            };
            match s.phase.load(Ordering::Acquire) {
                LISTENING => {
                    return Err(Reject::new(
                        Status::InvalidOperation,
                        "connect on a listening socket",
                    ));
                }
                CONNECTED => {
                    return Err(Reject::socket(SocketError::IsConnected, "connect"));
                }
                _ => {}
            }
            s.check_family(endpoint)?;
            if s.phase.load(Ordering::Acquire) == CONNECTING {
                return Err(Reject::new(
                    Status::InvalidOperation,
                    "a connect is already in progress on this socket",
                ));
            }
            Ok(())
        };
        self.begin(args, Some(check), true)?;
        args.start_connect();
        self.phase.store(CONNECTING, Ordering::Release);
        let started = self.write().start(self, args, AsyncOperation::Connect);
        if started.is_err() {
            self.phase.store(FRESH, Ordering::Release);
        }
        started
    }

    /// The fast paths' claims, in .NET's order of rejections: the descriptor's use guard
    /// (which doubles as the disposal check), then the args; then, for one non-empty buffer
    /// without flags on a socket `eligible` for the fast path, the idle queue of `direction`,
    /// with the edge count seen. Ok(None): the args are claimed, and the general path takes
    /// them on.
    #[inline(always)]
    fn claim_fast(
        &self,
        args: &Args,
        direction: Direction,
        eligible: impl FnOnce(&Self) -> bool,
    ) -> Result<Option<(FdUse<'_>, RawBuf, u32)>, Reject> {
        let fd = self.fd.acquire().ok_or_else(Reject::disposed)?;
        Ok(match args.begin_io_single()? {
            Some(buf) if buf.len > 0 && eligible(self) => self
                .queue(direction)
                .try_claim()
                .map(|observed| (fd, buf, observed)),
            _ => None,
        })
    }

    /// A send. The common case (a connected stream socket, one buffer, nobody else using the
    /// send queue) is one straight line: the descriptor's use guard, the args and queue
    /// claims, one `sendto`, and the claims given back. Anything else, and a send the
    /// kernel takes only in part or not at all, goes through the queue machinery as before.
    #[inline]
    pub fn send_async(self: &Arc<Self>, args: &Arc<Args>) -> Result<bool, Reject> {
        let Some((fd, buf, observed)) =
            self.claim_fast(args, Direction::Write, Socket::sends_directly)?
        else {
            return self.send_queued(args);
        };
        args.started(AsyncOperation::Send);
        let sent = sys::send(fd.raw(), buf, 0);
        drop(fd);
        let (done, errno) = match sent {
            Ok(n) if n == buf.len => {
                self.write().release_after_caller(self);
                args.finish_plain(n);
                return Ok(false);
            }
            Ok(n) => (n, 0),
            Err(errno) => (0, errno),
        };
        Ok(self.send_settle(args, done, errno, observed))
    }

    /// Every send the fast path does not take: buffer lists, datagrams, empty sends, sockets
    /// not (yet) connected, and a send queue someone else owns, which it must queue behind.
    #[inline(never)]
    fn send_queued(self: &Arc<Self>, args: &Arc<Args>) -> Result<bool, Reject> {
        if self.never_connected() {
            return Ok(self.finish_now(args, AsyncOperation::Send, SocketError::NotConnected));
        }
        if self.stream_connected.load(Ordering::Acquire) == CONNECTED_STREAM | BATCHED_SENDS {
            return self.write().start_batched(self, args);
        }
        self.write().start(self, args, AsyncOperation::Send)
    }

    /// The fast path's send did not finish at once: `done` bytes went out, then the kernel
    /// said `errno` (0: it took only part). The queue machinery takes it from there.
    #[cold]
    #[inline(never)]
    fn send_settle(
        self: &Arc<Self>,
        args: &Arc<Args>,
        mut done: usize,
        errno: i32,
        observed: u32,
    ) -> bool {
        let attempt = match errno {
            0 => op::attempt(self, args, &mut done),
            libc::EAGAIN => Attempt::WouldBlock,
            errno => Attempt::Done(Finished::failed(0, SocketError::from_errno(errno))),
        };
        self.write()
            .settle_owned(self, args, done, observed, attempt)
    }

    /// A receive, with the same straight line as a send: with one non-empty buffer and the
    /// receive queue idle, one `recvfrom`; anything else, and a receive the kernel has
    /// nothing for yet, goes through the queue machinery.
    #[inline]
    pub fn receive_async(self: &Arc<Self>, args: &Arc<Args>) -> Result<bool, Reject> {
        let Some((fd, buf, observed)) =
            self.claim_fast(args, Direction::Read, Socket::stream_connected)?
        else {
            return self.receive_queued(args);
        };
        args.started(AsyncOperation::Receive);
        let received = sys::recv(fd.raw(), buf, 0);
        drop(fd);
        match received {
            Ok(n) => {
                self.read().release_after_caller(self);
                args.finish_plain(n);
                Ok(false)
            }
            Err(errno) => Ok(self.receive_settle(args, errno, observed)),
        }
    }

    /// A datagram to the args' remote endpoint (`sock_send_to_async`).
    pub fn send_to_async(self: &Arc<Self>, args: &Arc<Args>) -> Result<bool, Reject> {
        let check: Check = |s, shape| {
            s.check_datagram("send-to")?;
            let Some(endpoint) = &shape.endpoint else {
                return Err(Reject::invalid(
                    "send-to needs a remote endpoint: call sock_args_set_remote_endpoint",
                ));
            };
            s.check_family(endpoint)
        };
        self.begin(args, Some(check), true)?;
        self.write().start(self, args, AsyncOperation::SendTo)
    }

    /// A datagram and its sender (`sock_receive_from_async`).
    pub fn receive_from_async(self: &Arc<Self>, args: &Arc<Args>) -> Result<bool, Reject> {
        let check: Check = |s, _| {
            s.check_datagram("receive-from")?;
            if !s.bound.load(Ordering::Acquire) {
                return Err(Reject::new(
                    Status::InvalidOperation,
                    "receive-from needs a bound socket: call sock_bind (or send to someone \
                     first)",
                ));
            }
            Ok(())
        };
        self.begin(args, Some(check), false)?;
        self.read().start(self, args, AsyncOperation::ReceiveFrom)
    }

    fn check_datagram(&self, what: &str) -> Result<(), Reject> {
        if self.stream {
            return Err(Reject::new(
                Status::NotSupported,
                format!("{what} is for datagram sockets; a stream socket sends and receives"),
            ));
        }
        Ok(())
    }

    /// The kernel bound the socket (its first send-to picks a local port).
    pub(crate) fn mark_bound(&self) {
        self.bound.store(true, Ordering::Release);
    }

    /// Every receive the fast path does not take: zero-byte receives, buffer lists, sockets
    /// never connected, and a receive queue someone else owns, which it must queue behind.
    #[inline(never)]
    fn receive_queued(self: &Arc<Self>, args: &Arc<Args>) -> Result<bool, Reject> {
        if self.never_connected() {
            return Ok(self.finish_now(args, AsyncOperation::Receive, SocketError::NotConnected));
        }
        self.read().start(self, args, AsyncOperation::Receive)
    }

    /// The fast path's receive failed or found nothing (`errno`): the queue machinery takes
    /// it from there.
    #[cold]
    #[inline(never)]
    fn receive_settle(self: &Arc<Self>, args: &Arc<Args>, errno: i32, observed: u32) -> bool {
        let attempt = match errno {
            libc::EAGAIN => Attempt::WouldBlock,
            errno => Attempt::Done(Finished::failed(0, SocketError::from_errno(errno))),
        };
        self.read().settle_owned(self, args, 0, observed, attempt)
    }

    pub fn disconnect_async(self: &Arc<Self>, args: &Arc<Args>) -> Result<bool, Reject> {
        self.check_open()?;
        args.begin_io()?;
        self.write().start(self, args, AsyncOperation::Disconnect)
    }

    /// `sock_send_packets_async`: the args' send-packets elements, in order, through the send
    /// queue (so it never interleaves with other sends). .NET's checks come first, in its
    /// order (elements set, then connected), then InProgress, then the files are opened: any
    /// of them failing leaves the args as they were and nothing sent.
    pub fn send_packets_async(self: &Arc<Self>, args: &Arc<Args>) -> Result<bool, Reject> {
        let check = |s: &Socket, elements: Option<&Arc<[Packet]>>| {
            if elements.is_none() {
                return Err(Reject::invalid(
                    "send-packets needs elements: call sock_args_set_send_packets",
                ));
            }
            if !s.stream {
                // .NET allows connected datagram sockets, but each element's sends would
                // become datagrams cut wherever the kernel pleases.
                return Err(Reject::new(
                    Status::NotSupported,
                    "send-packets is for stream sockets",
                ));
            }
            if s.phase.load(Ordering::Acquire) != CONNECTED {
                return Err(Reject::new(
                    Status::NotSupported,
                    "send-packets needs a connected socket",
                ));
            }
            Ok(())
        };
        self.check_open()?;
        check(self, args.peek_send_packets().as_ref())?;
        let elements = args.begin_send_packets()?;
        let opened = check(self, elements.as_ref())
            .and_then(|()| SendPackets::open(elements.as_deref().unwrap_or_default()));
        match opened {
            Ok(packets) => {
                // Its open files and cursor wait in the args' extras between attempts; a
                // start refused after all (the socket closed) drops them with the claim.
                args.hold_send_packets(Box::new(packets));
                self.write().start(self, args, AsyncOperation::SendPackets)
            }
            Err(reject) => {
                args.abandon();
                Err(reject)
            }
        }
    }

    /// A stream socket that never connected (and is not connecting): .NET completes sends
    /// and receives on it with NotConnected rather than passing on the kernel's EPIPE.
    #[inline]
    fn never_connected(&self) -> bool {
        self.stream && !self.stream_connected() && self.phase.load(Ordering::Acquire) != CONNECTING
    }

    /// Completes an accepted operation on the caller's thread without a system call.
    #[cold]
    fn finish_now(&self, args: &Args, operation: AsyncOperation, error: SocketError) -> bool {
        args.started(operation);
        args.finish(Finished::failed(0, error));
        false
    }
}
