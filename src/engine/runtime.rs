//! The runtime: the reactor threads (sockets are spread over them round-robin), the optional
//! worker pool that runs callbacks under Pool dispatch, and their life: started lazily on
//! first use, configured before that, shut down on request and startable again afterwards.
//!
//! Shutdown has to end with every completion delivered exactly once and no thread of ours
//! left, so it runs in this order: take the runtime out of the global state (new sockets are
//! refused until shutdown is over), stop the operation queues of every registered socket of
//! every reactor, then close those sockets (the waiting operations become Abort messages; no
//! socket is closed before all queues are stopped, since closing one end of a connection
//! would complete a receive at the other with end of stream), stop each reactor (it handles every message ahead of
//! Stop, running or dispatching each callback), join the reactors, then stop and join the
//! pool, which by then has every callback queued ahead of its stop messages.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use super::args::Args;
use super::op::Pending;
use super::reactor::{self, Reactor};
use super::socket::Socket;
use super::uring;
use crate::error::{Reject, Status};

/// Where completion callbacks run (`sock_runtime_configure`'s `dispatch`).
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dispatch {
    /// On the reactor thread that finished the operation (the default, and the fastest): a
    /// callback that blocks delays the completions of that reactor's other sockets.
    Inline = 0,
    /// On a small pool of worker threads (at least two), so a slow callback cannot stall
    /// other sockets. Callbacks of one socket may then run at the same time on different
    /// workers.
    Pool = 1,
}

impl Dispatch {
    pub fn from_code(code: i32) -> Option<Dispatch> {
        match code {
            0 => Some(Dispatch::Inline),
            1 => Some(Dispatch::Pool),
            _ => None,
        }
    }
}

/// How reactors wait for readiness (`sock_runtime_set_backend`'s `backend`).
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// epoll, edge-triggered (the default).
    Epoll = 0,
    /// io_uring: readiness still from epoll, which the ring waits on, and stream sends that
    /// wait for room submitted in batches; where the kernel refuses io_uring, epoll instead.
    IoUring = 1,
}

impl Backend {
    pub fn from_code(code: i32) -> Option<Backend> {
        match code {
            0 => Some(Backend::Epoll),
            1 => Some(Backend::IoUring),
            _ => None,
        }
    }

    /// SOCKASYNC_BACKEND (`epoll` or `io_uring`), else epoll.
    fn from_env() -> Result<Backend, Reject> {
        let Some(text) = std::env::var_os("SOCKASYNC_BACKEND") else {
            return Ok(Backend::Epoll);
        };
        match text.to_str().map(str::trim) {
            Some(t) if t.eq_ignore_ascii_case("epoll") => Ok(Backend::Epoll),
            Some(t) if t.eq_ignore_ascii_case("io_uring") => Ok(Backend::IoUring),
            _ => Err(Reject::invalid(format!(
                "SOCKASYNC_BACKEND={} is neither epoll nor io_uring",
                text.to_string_lossy()
            ))),
        }
    }

    /// The backend to run: io_uring only where this kernel and process allow it.
    fn usable(self) -> Backend {
        match self {
            Backend::IoUring if uring::available().is_err() => Backend::Epoll,
            backend => backend,
        }
    }
}

/// The most reactor threads a runtime may have; far above what a machine needs, low enough
/// that a typo cannot start thousands of threads.
pub const MAX_REACTOR_THREADS: u32 = 256;

/// The longest busy poll, in microseconds: one second (`sock_runtime_set_busy_poll` says
/// why).
pub const MAX_BUSY_POLL_US: u32 = 1_000_000;

/// How long a reactor polls without sleeping after a turn (`sock_runtime_set_busy_poll`).
fn checked_busy_poll(microseconds: u32) -> Result<Duration, Reject> {
    if microseconds > MAX_BUSY_POLL_US {
        return Err(Reject::invalid(format!(
            "busy poll must be 0 to {MAX_BUSY_POLL_US} microseconds, not {microseconds}"
        )));
    }
    Ok(Duration::from_micros(microseconds.into()))
}

/// SOCKASYNC_BUSY_POLL_US (microseconds), else 0 (off).
fn busy_poll_from_env() -> Result<Duration, Reject> {
    let Some(text) = std::env::var_os("SOCKASYNC_BUSY_POLL_US") else {
        return Ok(Duration::ZERO);
    };
    let invalid = |why: String| {
        Reject::invalid(format!(
            "SOCKASYNC_BUSY_POLL_US={} {why}",
            text.to_string_lossy()
        ))
    };
    let microseconds = text
        .to_str()
        .and_then(|t| t.trim().parse::<u32>().ok())
        .ok_or_else(|| invalid("is not a number of microseconds".into()))?;
    checked_busy_poll(microseconds)
        .map_err(|reject| invalid(format!("is out of range: {}", reject.message)))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    pub reactor_threads: u32,
    pub dispatch: Dispatch,
}

impl Config {
    pub fn new(reactor_threads: u32, dispatch: i32) -> Result<Config, Reject> {
        if reactor_threads == 0 || reactor_threads > MAX_REACTOR_THREADS {
            return Err(Reject::invalid(format!(
                "reactor threads must be 1 to {MAX_REACTOR_THREADS}, not {reactor_threads}"
            )));
        }
        let dispatch = Dispatch::from_code(dispatch).ok_or_else(|| {
            Reject::invalid(format!("unknown dispatch {dispatch} (Inline=0, Pool=1)"))
        })?;
        Ok(Config {
            reactor_threads,
            dispatch,
        })
    }

    /// The defaults: one reactor thread and Inline dispatch, unless the environment says
    /// otherwise (SOCKASYNC_REACTOR_THREADS, SOCKASYNC_DISPATCH). A value that does not
    /// parse is an error, not silently the default: the caller meant something by it.
    pub fn from_env() -> Result<Config, Reject> {
        let threads = match std::env::var_os("SOCKASYNC_REACTOR_THREADS") {
            None => 1,
            Some(text) => text
                .to_str()
                .and_then(|t| t.trim().parse::<u32>().ok())
                .ok_or_else(|| {
                    Reject::invalid(format!(
                        "SOCKASYNC_REACTOR_THREADS={} is not a number of threads",
                        text.to_string_lossy()
                    ))
                })?,
        };
        let dispatch = match std::env::var_os("SOCKASYNC_DISPATCH") {
            None => Dispatch::Inline,
            Some(text) => match text.to_str().map(str::trim) {
                Some(t) if t.eq_ignore_ascii_case("inline") => Dispatch::Inline,
                Some(t) if t.eq_ignore_ascii_case("pool") => Dispatch::Pool,
                _ => {
                    return Err(Reject::invalid(format!(
                        "SOCKASYNC_DISPATCH={} is neither inline nor pool",
                        text.to_string_lossy()
                    )));
                }
            },
        };
        Config::new(threads, dispatch as i32).map_err(|reject| {
            Reject::invalid(format!("SOCKASYNC_REACTOR_THREADS: {}", reject.message))
        })
    }
}

/// A message to the worker pool: a callback to run (the results are already in the args),
/// or a worker's stop.
pub enum PoolMessage {
    Run(Arc<Socket>, Arc<Args>),
    Stop,
}

pub struct Runtime {
    config: Config,
    backend: Backend,
    busy_poll: Duration,
    reactors: Vec<Arc<Reactor>>,
    next: AtomicUsize,
    pool: Option<Sender<PoolMessage>>,
    /// Reactor threads, then pool workers; taken (and joined) by `stop`.
    threads: Mutex<Vec<JoinHandle<()>>>,
    pool_workers: usize,
}

struct State {
    /// What `sock_runtime_configure` asked for, used at the next start.
    configured: Option<Config>,
    /// What `sock_runtime_set_backend` asked for, used at the next start.
    configured_backend: Option<Backend>,
    /// What `sock_runtime_set_busy_poll` asked for, used at the next start.
    configured_busy_poll: Option<Duration>,
    running: Option<Arc<Runtime>>,
    shutting_down: bool,
}

static STATE: Mutex<State> = Mutex::new(State {
    configured: None,
    configured_backend: None,
    configured_busy_poll: None,
    running: None,
    shutting_down: false,
});

/// One shutdown at a time; a second caller waits for the first and then finds nothing to do.
static SHUTDOWN: Mutex<()> = Mutex::new(());

thread_local! {
    static ON_RUNTIME_THREAD: Cell<bool> = const { Cell::new(false) };
}

fn state() -> MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Starts one of the runtime's threads and returns once it runs under its name and knows it
/// is ours (so a shutdown from it is refused), which makes the threads observable as soon as
/// the first socket exists.
pub(crate) fn spawn(
    name: String,
    body: impl FnOnce() + Send + 'static,
) -> std::io::Result<JoinHandle<()>> {
    let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
    let thread = std::thread::Builder::new().name(name).spawn(move || {
        ON_RUNTIME_THREAD.with(|on| on.set(true));
        let _ = ready_tx.send(());
        body();
    })?;
    let _ = ready_rx.recv();
    Ok(thread)
}

/// True on the library's own threads, i.e. inside a callback.
pub fn on_runtime_thread() -> bool {
    ON_RUNTIME_THREAD.try_with(Cell::get).unwrap_or(false)
}

/// `sock_runtime_configure`: accepted only while no runtime is running (before first use, or
/// after a shutdown).
pub fn configure(reactor_threads: u32, dispatch: i32) -> Result<(), Reject> {
    let config = Config::new(reactor_threads, dispatch)?;
    not_running("sock_runtime_configure")?.configured = Some(config);
    Ok(())
}

/// `sock_runtime_set_backend`: like `configure`, only while no runtime is running.
pub fn set_backend(backend: i32) -> Result<(), Reject> {
    let backend = Backend::from_code(backend).ok_or_else(|| {
        Reject::invalid(format!("unknown backend {backend} (Epoll=0, IoUring=1)"))
    })?;
    not_running("sock_runtime_set_backend")?.configured_backend = Some(backend);
    Ok(())
}

/// `sock_runtime_set_busy_poll`: like `configure`, only while no runtime is running.
pub fn set_busy_poll(microseconds: u32) -> Result<(), Reject> {
    let busy_poll = checked_busy_poll(microseconds)?;
    not_running("sock_runtime_set_busy_poll")?.configured_busy_poll = Some(busy_poll);
    Ok(())
}

/// `sock_runtime_busy_poll`: the running runtime's busy poll, else what the next start will
/// use (the call's, else the environment's), in microseconds. Starts nothing.
pub fn busy_poll_us() -> Result<u32, Reject> {
    let state = state();
    let busy_poll = match (&state.running, state.configured_busy_poll) {
        (Some(runtime), _) => runtime.busy_poll,
        (None, Some(configured)) => configured,
        (None, None) => busy_poll_from_env()?,
    };
    // At most MAX_BUSY_POLL_US, so it fits.
    Ok(busy_poll.as_micros() as u32)
}

fn not_running(what: &str) -> Result<MutexGuard<'static, State>, Reject> {
    let state = state();
    if state.running.is_some() || state.shutting_down {
        return Err(Reject::new(
            Status::InvalidOperation,
            format!(
                "the runtime is already running: call {what} before the first socket is \
                 created (or after sock_runtime_shutdown)"
            ),
        ));
    }
    Ok(state)
}

/// The running runtime, started on first use.
pub fn current() -> Result<Arc<Runtime>, Reject> {
    let mut state = state();
    if state.shutting_down {
        return Err(Reject::new(
            Status::InvalidOperation,
            "sock_runtime_shutdown is in progress: no new sockets until it returns",
        ));
    }
    if let Some(runtime) = &state.running {
        return Ok(Arc::clone(runtime));
    }
    let config = match state.configured {
        Some(config) => config,
        None => Config::from_env()?,
    };
    let backend = match state.configured_backend {
        Some(backend) => backend,
        None => Backend::from_env()?,
    };
    let busy_poll = match state.configured_busy_poll {
        Some(busy_poll) => busy_poll,
        None => busy_poll_from_env()?,
    };
    let runtime = Arc::new(Runtime::start(config, backend.usable(), busy_poll)?);
    state.running = Some(Arc::clone(&runtime));
    Ok(runtime)
}

/// The configuration of the running runtime, if one runs.
pub fn running_config() -> Option<Config> {
    state().running.as_ref().map(|r| r.config)
}

/// `sock_runtime_shutdown` (see the module comment). Rejected on the library's own threads,
/// where waiting for the callbacks to end would wait for ourselves.
pub fn shutdown() -> Result<(), Reject> {
    if on_runtime_thread() {
        return Err(Reject::new(
            Status::InvalidOperation,
            "sock_runtime_shutdown cannot be called from a callback (it waits for every \
             callback to return)",
        ));
    }
    let _one_at_a_time = SHUTDOWN.lock().unwrap_or_else(PoisonError::into_inner);
    let runtime = {
        let mut state = state();
        let Some(runtime) = state.running.take() else {
            return Ok(());
        };
        state.shutting_down = true;
        runtime
    };
    runtime.stop();
    state().shutting_down = false;
    Ok(())
}

impl Runtime {
    fn start(config: Config, backend: Backend, busy_poll: Duration) -> Result<Runtime, Reject> {
        let failed = |err: std::io::Error| Reject::io(&err, "starting the runtime's threads");
        let mut runtime = Runtime {
            config,
            backend,
            busy_poll,
            reactors: Vec::new(),
            next: AtomicUsize::new(0),
            pool: None,
            threads: Mutex::new(Vec::new()),
            pool_workers: 0,
        };
        let mut start_threads = || -> Result<(), Reject> {
            if config.dispatch == Dispatch::Pool {
                let (tx, rx) = crossbeam_channel::unbounded();
                // At least two, so one blocked callback never stops the rest.
                let workers = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
                for i in 0..workers {
                    let rx = rx.clone();
                    let thread = spawn(format!("sockasync-pool-{i}"), move || pool_worker(rx))
                        .map_err(failed)?;
                    runtime.threads.get_mut().unwrap().push(thread);
                    runtime.pool_workers += 1;
                }
                runtime.pool = Some(tx);
            }
            for _ in 0..config.reactor_threads {
                let (reactor, thread) = Reactor::start(
                    "sockasync-reactor".into(),
                    backend,
                    busy_poll,
                    runtime.pool.clone(),
                )
                .map_err(failed)?;
                runtime.reactors.push(reactor);
                runtime.threads.get_mut().unwrap().push(thread);
            }
            Ok(())
        };
        match start_threads() {
            Ok(()) => Ok(runtime),
            Err(reject) => {
                // Join whatever did start (no socket exists yet).
                runtime.stop();
                Err(reject)
            }
        }
    }

    /// The backend the reactors run on (io_uring asked for may have become epoll).
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The reactor for the next socket: round-robin.
    pub fn pick(&self) -> Arc<Reactor> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.reactors.len();
        Arc::clone(&self.reactors[i])
    }

    fn stop(&self) {
        let sockets: Vec<Arc<Socket>> = self
            .reactors
            .iter()
            .flat_map(|reactor| reactor.close_registrations())
            .collect();
        let stopped: Vec<Vec<Pending>> = sockets.iter().map(|s| s.stop_queues()).collect();
        for (socket, taken) in sockets.iter().zip(stopped) {
            socket.close_aborting(taken);
        }
        for reactor in &self.reactors {
            reactor.stop();
        }
        let mut workers =
            std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner));
        let reactor_threads = workers.split_off(self.pool_workers);
        for thread in reactor_threads {
            // A reactor thread catches its panics, so join fails only if it was killed.
            let _ = thread.join();
        }
        // Every callback is queued by now (only reactors queue them): each worker takes one
        // Stop after the last of them.
        if let Some(pool) = &self.pool {
            for _ in 0..workers.len() {
                let _ = pool.send(PoolMessage::Stop);
            }
        }
        for worker in workers {
            let _ = worker.join();
        }
    }
}

fn pool_worker(jobs: Receiver<PoolMessage>) {
    for message in jobs.iter() {
        match message {
            PoolMessage::Run(socket, args) => reactor::survive(|| args.notify(&socket)),
            PoolMessage::Stop => return,
        }
    }
}
