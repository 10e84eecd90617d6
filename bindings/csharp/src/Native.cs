// The P/Invoke declarations of include/sockasync.h, and the one callback the library
// calls. Internal: the public surface is Socket, SocketAsyncEventArgs and SockAsyncRuntime.
//
// Every declaration is blittable (IntPtr, int, long, UIntPtr for size_t) or a SafeHandle,
// C bool is marshalled as one byte (I1; the default four-byte BOOL would read garbage),
// and the library is named "sockasync": Mono maps it to libsockasync.so.0 through
// SockAsync.dll.config, modern .NET through the resolver below.
using System;
using System.Runtime.InteropServices;

namespace SockAsync
{
    // A pointer the library handed out, released once (SafeHandle counts the calls using
    // it, so it is never released under a call on another thread).
    internal abstract class NativeHandle : SafeHandle
    {
        protected NativeHandle(IntPtr handle) : base(IntPtr.Zero, true)
        {
            SetHandle(handle);
        }

        public override bool IsInvalid
        {
            get { return handle == IntPtr.Zero; }
        }
    }

    internal sealed class SafeSockHandle : NativeHandle
    {
        internal SafeSockHandle(IntPtr handle) : base(handle)
        {
        }

        // sock_free closes the socket if it is open; the library keeps its memory until
        // the last callback for it has returned.
        protected override bool ReleaseHandle()
        {
            Native.sock_free(handle);
            return true;
        }
    }

    internal sealed class SafeSockArgsHandle : NativeHandle
    {
        internal SafeSockArgsHandle(IntPtr handle) : base(handle)
        {
        }

        // Safe while an operation is in flight: its callback still comes.
        protected override bool ReleaseHandle()
        {
            Native.sock_args_free(handle);
            return true;
        }
    }

    [StructLayout(LayoutKind.Sequential)]
    internal struct SockBuf
    {
        internal IntPtr Data;
        internal UIntPtr Length;
    }

    // sock_send_packet: int32 kind, then pointer-aligned fields (the same padding as C's).
    [StructLayout(LayoutKind.Sequential)]
    internal struct SockSendPacket
    {
        internal const int KindMemory = 0;
        internal const int KindPath = 1;

        internal int Kind;
        internal IntPtr Buffer;
        internal IntPtr Path;
        internal IntPtr Fd;
        internal long Offset;
        internal UIntPtr Count;
    }

    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    internal delegate void CompletedCallback(IntPtr socket, IntPtr args, IntPtr userToken);

    internal static class Native
    {
        internal const string Library = "sockasync";
        internal const int SoVersion = 0;

        internal const int StatusOk = 0;
        internal const int StatusNullArgument = 1;
        internal const int StatusInvalidArgument = 2;
        internal const int StatusInProgress = 3;
        internal const int StatusDisposed = 4;
        internal const int StatusInvalidOperation = 5;
        internal const int StatusNotSupported = 6;
        internal const int StatusSocketError = 7;
        internal const int StatusOutOfMemory = 8;

        internal const int OptionNoDelay = 1;
        internal const int OptionReuseAddress = 2;
        internal const int OptionKeepAlive = 3;
        internal const int OptionSendBufferSize = 4;
        internal const int OptionReceiveBufferSize = 5;
        internal const int OptionLinger = 6;
        internal const int OptionBatchSends = 7;

        // The library keeps this function pointer in every args object for as long as the
        // process runs, so the delegate behind it must never be collected: a static field
        // holds the one instance, created once.
        private static readonly CompletedCallback s_completed = SocketAsyncEventArgs.OnNativeCompleted;
        internal static readonly IntPtr CompletedPointer = Marshal.GetFunctionPointerForDelegate(s_completed);

        // An explicit static constructor runs before the first call of any member here,
        // so the runtime's shutdown is registered before the library starts a thread.
        static Native()
        {
#if NETCOREAPP3_0_OR_GREATER
            NativeLibrary.SetDllImportResolver(typeof(Native).Assembly, (name, assembly, path) =>
            {
                IntPtr loaded;
                if (name == Library && NativeLibrary.TryLoad("libsockasync.so." + SoVersion, assembly, path, out loaded))
                    return loaded;
                return IntPtr.Zero;
            });
#endif
            AppDomain.CurrentDomain.ProcessExit += SockAsyncRuntime.OnProcessExit;
        }

        // Touching any static member runs the static constructor.
        internal static void EnsureInitialized()
        {
            GC.KeepAlive(s_completed);
        }

        [DllImport(Library)] internal static extern IntPtr sock_args_new(IntPtr completed, IntPtr userToken);
        [DllImport(Library)] internal static extern void sock_args_free(IntPtr e);
        [DllImport(Library)] [return: MarshalAs(UnmanagedType.I1)]
        internal static extern bool sock_args_set_buffer(SafeSockArgsHandle e, IntPtr buffer, UIntPtr length);
        [DllImport(Library)] [return: MarshalAs(UnmanagedType.I1)]
        internal static extern bool sock_args_set_buffer_list(SafeSockArgsHandle e, SockBuf[] list, UIntPtr count);
        [DllImport(Library)] [return: MarshalAs(UnmanagedType.I1)]
        internal static extern bool sock_args_set_send_packets(SafeSockArgsHandle e, SockSendPacket[] elements, UIntPtr count);
        [DllImport(Library, CharSet = CharSet.Ansi, BestFitMapping = false)] [return: MarshalAs(UnmanagedType.I1)]
        internal static extern bool sock_args_set_remote_endpoint(SafeSockArgsHandle e, string endpoint);
        [DllImport(Library)] [return: MarshalAs(UnmanagedType.I1)]
        internal static extern bool sock_args_set_flags(SafeSockArgsHandle e, int flags);
        [DllImport(Library)] internal static extern int sock_args_flags(SafeSockArgsHandle e);
        [DllImport(Library)] internal static extern UIntPtr sock_args_remote_endpoint(SafeSockArgsHandle e, byte[] output, UIntPtr capacity);
        [DllImport(Library)] internal static extern UIntPtr sock_args_bytes_transferred(SafeSockArgsHandle e);
        [DllImport(Library)] internal static extern int sock_args_socket_error(SafeSockArgsHandle e);
        [DllImport(Library)] internal static extern IntPtr sock_args_accept_socket(SafeSockArgsHandle e);

        [DllImport(Library)] [return: MarshalAs(UnmanagedType.I1)]
        internal static extern bool sock_runtime_configure(uint reactorThreads, int dispatch);
        [DllImport(Library)] internal static extern void sock_runtime_shutdown();
        [DllImport(Library)] [return: MarshalAs(UnmanagedType.I1)]
        internal static extern bool sock_runtime_set_backend(int backend);
        [DllImport(Library)] internal static extern int sock_runtime_backend();
        [DllImport(Library)] [return: MarshalAs(UnmanagedType.I1)]
        internal static extern bool sock_runtime_set_busy_poll(uint microseconds);
        [DllImport(Library)] internal static extern uint sock_runtime_busy_poll();

        [DllImport(Library)] internal static extern IntPtr sock_create(int addressFamily, int socketType, int protocol);
        [DllImport(Library)] internal static extern IntPtr sock_from_fd(IntPtr fd, [MarshalAs(UnmanagedType.I1)] bool takeOwnership);
        [DllImport(Library)] internal static extern IntPtr sock_fd(SafeSockHandle s);
        [DllImport(Library, CharSet = CharSet.Ansi, BestFitMapping = false)] [return: MarshalAs(UnmanagedType.I1)]
        internal static extern bool sock_bind(SafeSockHandle s, string endpoint);
        [DllImport(Library)] [return: MarshalAs(UnmanagedType.I1)]
        internal static extern bool sock_listen(SafeSockHandle s, int backlog);
        [DllImport(Library)] internal static extern UIntPtr sock_local_endpoint(SafeSockHandle s, byte[] output, UIntPtr capacity);
        [DllImport(Library)] internal static extern UIntPtr sock_remote_endpoint(SafeSockHandle s, byte[] output, UIntPtr capacity);
        [DllImport(Library)] [return: MarshalAs(UnmanagedType.I1)]
        internal static extern bool sock_set_option(SafeSockHandle s, int option, long value);
        [DllImport(Library)] [return: MarshalAs(UnmanagedType.I1)]
        internal static extern bool sock_get_option(SafeSockHandle s, int option, out long value);
        [DllImport(Library)] [return: MarshalAs(UnmanagedType.I1)]
        internal static extern bool sock_shutdown(SafeSockHandle s, int how);
        [DllImport(Library)] internal static extern void sock_close(SafeSockHandle s);
        [DllImport(Library)] internal static extern void sock_free(IntPtr s);

        [DllImport(Library)] [return: MarshalAs(UnmanagedType.I1)]
        internal static extern bool sock_accept_async(SafeSockHandle s, SafeSockArgsHandle e);
        [DllImport(Library)] [return: MarshalAs(UnmanagedType.I1)]
        internal static extern bool sock_connect_async(SafeSockHandle s, SafeSockArgsHandle e);
        [DllImport(Library)] [return: MarshalAs(UnmanagedType.I1)]
        internal static extern bool sock_send_async(SafeSockHandle s, SafeSockArgsHandle e);
        [DllImport(Library)] [return: MarshalAs(UnmanagedType.I1)]
        internal static extern bool sock_receive_async(SafeSockHandle s, SafeSockArgsHandle e);
        [DllImport(Library)] [return: MarshalAs(UnmanagedType.I1)]
        internal static extern bool sock_send_to_async(SafeSockHandle s, SafeSockArgsHandle e);
        [DllImport(Library)] [return: MarshalAs(UnmanagedType.I1)]
        internal static extern bool sock_receive_from_async(SafeSockHandle s, SafeSockArgsHandle e);
        [DllImport(Library)] [return: MarshalAs(UnmanagedType.I1)]
        internal static extern bool sock_send_packets_async(SafeSockHandle s, SafeSockArgsHandle e);
        [DllImport(Library)] [return: MarshalAs(UnmanagedType.I1)]
        internal static extern bool sock_disconnect_async(SafeSockHandle s, SafeSockArgsHandle e);

        [DllImport(Library)] internal static extern int sock_last_status();
        [DllImport(Library)] internal static extern int sock_last_socket_error();
        [DllImport(Library)] internal static extern IntPtr sock_last_error_message();
        [DllImport(Library)] internal static extern IntPtr sock_version();

        internal static string Utf8(IntPtr text)
        {
            return text == IntPtr.Zero ? null : Marshal.PtrToStringAnsi(text);
        }

        // The exception .NET throws where the library rejected the latest call on this
        // thread with `status`. Reads the thread's status record, so call it right after the
        // rejected call.
        internal static Exception Rejection(int status, string paramName, object disposedObject)
        {
            string message = Utf8(sock_last_error_message());
            switch (status)
            {
                case StatusNullArgument:
                    return new ArgumentNullException(paramName, message);
                case StatusInvalidArgument:
                    return new ArgumentException(message, paramName);
                case StatusInProgress:
                    return new InvalidOperationException(message);
                case StatusDisposed:
                    return new ObjectDisposedException(disposedObject == null ? null : disposedObject.GetType().FullName, message);
                case StatusInvalidOperation:
                    return new InvalidOperationException(message);
                case StatusNotSupported:
                    return new NotSupportedException(message);
                case StatusSocketError:
                    return new System.Net.Sockets.SocketException(sock_last_socket_error());
                case StatusOutOfMemory:
                    return new OutOfMemoryException(message);
                default:
                    return new InvalidOperationException("sockasync status " + status + ": " + message);
            }
        }

        // For calls whose false (or NULL) always means rejected.
        internal static void ThrowIfRejected(bool accepted, string paramName, object disposedObject)
        {
            if (!accepted)
                throw Rejection(sock_last_status(), paramName, disposedObject);
        }
    }
}
