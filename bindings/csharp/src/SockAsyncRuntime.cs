// The library's runtime (its reactor threads), seen from .NET.
using System;
using System.Runtime.ExceptionServices;
using System.Threading;

namespace SockAsync
{
    // Where completion callbacks run (sock_dispatch).
    public enum Dispatch
    {
        // On the reactor thread that finished the operation (the default).
        Inline = 0,
        // On a pool of at least two worker threads.
        Pool = 1,
    }

    // How the reactors wait for readiness (sock_backend).
    public enum Backend
    {
        // epoll (the default).
        Epoll = 0,
        // io_uring, which also sends batched sends (Socket.BatchSends); where the kernel
        // refuses io_uring the runtime runs on epoll instead.
        IoUring = 1,
    }

    public sealed class CompletedHandlerExceptionEventArgs : EventArgs
    {
        internal CompletedHandlerExceptionEventArgs(Exception exception)
        {
            Exception = exception;
        }

        public Exception Exception { get; private set; }
    }

    public static class SockAsyncRuntime
    {
        private static int s_shutdowns;

        // An exception that escaped a Completed handler (which runs on the library's
        // thread). With a subscriber here, it is handed to the subscriber and the process
        // goes on. Without one, it is rethrown on a thread-pool thread with its original
        // stack trace: an unhandled exception, as it would be on .NET, which raises
        // AppDomain.UnhandledException and ends the process with the exception printed.
        // Either way the library's thread is never unwound, and the operation that
        // completed has already given back its args (unpinned, reusable).
        public static event EventHandler<CompletedHandlerExceptionEventArgs> CompletedHandlerException;

        public static string Version
        {
            get
            {
                Native.EnsureInitialized();
                return Native.Utf8(Native.sock_version());
            }
        }

        // How many times the runtime has been shut down from here (explicitly or at exit).
        internal static int Shutdowns
        {
            get { return Volatile.Read(ref s_shutdowns); }
        }

        // Before the first Socket is made (or after Shutdown): the number of reactor
        // threads and where callbacks run.
        public static void Configure(int reactorThreads, Dispatch dispatch)
        {
            Native.EnsureInitialized();
            if (reactorThreads < 1)
                throw new ArgumentOutOfRangeException("reactorThreads");
            Native.ThrowIfRejected(Native.sock_runtime_configure((uint)reactorThreads, (int)dispatch), "reactorThreads", null);
        }

        // Before the first Socket is made (or after Shutdown): epoll or io_uring.
        public static void SetBackend(Backend backend)
        {
            Native.EnsureInitialized();
            Native.ThrowIfRejected(Native.sock_runtime_set_backend((int)backend), "backend", null);
        }

        // The backend the runtime runs on (starting it): io_uring asked for but refused
        // by the kernel reads as Epoll.
        public static Backend Backend
        {
            get
            {
                Native.EnsureInitialized();
                int backend = Native.sock_runtime_backend();
                Native.ThrowIfRejected(backend >= 0, null, null);
                return (Backend)backend;
            }
        }

        // Before the first Socket is made (or after Shutdown): how long each reactor polls
        // without sleeping after a turn with work, in microseconds (0, the default, is off;
        // at most 1,000,000). Lower latency for a core's worth of CPU during that window: for
        // latency-sensitive programs with spare cores.
        public static void SetBusyPoll(int microseconds)
        {
            Native.EnsureInitialized();
            if (microseconds < 0)
                throw new ArgumentOutOfRangeException("microseconds");
            Native.ThrowIfRejected(Native.sock_runtime_set_busy_poll((uint)microseconds), "microseconds", null);
        }

        // The busy poll (microseconds) of the running runtime, or of the next start.
        public static int BusyPoll
        {
            get
            {
                Native.EnsureInitialized();
                uint microseconds = Native.sock_runtime_busy_poll();
                Native.ThrowIfRejected(Native.sock_last_status() == Native.StatusOk, null, null);
                return (int)microseconds;
            }
        }

        // Closes every open socket, completes every pending operation with
        // OperationAborted through its Completed event, and joins the library's threads;
        // returns when no Completed handler can run any more. The next Socket starts the
        // runtime again. Called by itself when the process exits (AppDomain.ProcessExit):
        // Mono does not exit while a native thread it has seen runs. Not from a Completed
        // handler (InvalidOperationException: it would wait for itself).
        public static void Shutdown()
        {
            Native.EnsureInitialized();
            Native.sock_runtime_shutdown();
            Native.ThrowIfRejected(Native.sock_last_status() == Native.StatusOk, null, null);
            Interlocked.Increment(ref s_shutdowns);
        }

        internal static void OnProcessExit(object sender, EventArgs e)
        {
            // From inside a Completed handler (Environment.Exit there) this is rejected;
            // nothing better can be done at exit than to go on.
            Native.sock_runtime_shutdown();
            if (Native.sock_last_status() == Native.StatusOk)
                Interlocked.Increment(ref s_shutdowns);
        }

        internal static void ReportCompletedHandlerException(Exception exception)
        {
            EventHandler<CompletedHandlerExceptionEventArgs> handler = CompletedHandlerException;
            if (handler != null)
            {
                try
                {
                    handler(null, new CompletedHandlerExceptionEventArgs(exception));
                    return;
                }
                catch (Exception fromHandler)
                {
                    exception = fromHandler;
                }
            }
            ExceptionDispatchInfo unhandled = ExceptionDispatchInfo.Capture(exception);
            ThreadPool.UnsafeQueueUserWorkItem(state => ((ExceptionDispatchInfo)state).Throw(), unhandled);
        }
    }
}
