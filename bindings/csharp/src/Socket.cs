// .NET's Socket, for the SocketAsyncEventArgs operations, over one sock object.
using System;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using System.Threading;

namespace SockAsync
{
    public sealed class Socket : IDisposable
    {
        // Linux's SOMAXCONN, what .NET's Listen() uses.
        private const int DefaultBacklog = 4096;

        private readonly SafeSockHandle _handle;
        private int _disposed;

        public Socket(AddressFamily addressFamily, SocketType socketType, ProtocolType protocolType)
        {
            Native.EnsureInitialized();
            IntPtr created = Native.sock_create((int)addressFamily, (int)socketType, (int)protocolType);
            if (created == IntPtr.Zero)
                throw Native.Rejection(Native.sock_last_status(), "addressFamily", this);
            _handle = new SafeSockHandle(created);
            AddressFamily = addressFamily;
            SocketType = socketType;
            ProtocolType = protocolType;
        }

        // A socket an accept on `listener` produced.
        internal Socket(SafeSockHandle accepted, Socket listener)
        {
            _handle = accepted;
            AddressFamily = listener.AddressFamily;
            SocketType = listener.SocketType;
            ProtocolType = listener.ProtocolType;
        }

        private Socket(SafeSockHandle adopted)
        {
            _handle = adopted;
            string local = LocalEndPointText();
            AddressFamily = local.StartsWith("unix:", StringComparison.Ordinal) ? AddressFamily.Unix
                : local.StartsWith("[", StringComparison.Ordinal) ? AddressFamily.InterNetworkV6 : AddressFamily.InterNetwork;
            SocketType = SocketType.Unknown;
            ProtocolType = ProtocolType.Unknown;
        }

        // Adopts a socket descriptor the program made (inherited, from socketpair, ...).
        // With takeOwnership the descriptor is this Socket's from now on; without it the
        // library works on a duplicate and the caller keeps and closes its own.
        public static Socket FromFileDescriptor(IntPtr fileDescriptor, bool takeOwnership)
        {
            Native.EnsureInitialized();
            IntPtr adopted = Native.sock_from_fd(fileDescriptor, takeOwnership);
            if (adopted == IntPtr.Zero)
                throw Native.Rejection(Native.sock_last_status(), "fileDescriptor", null);
            return new Socket(new SafeSockHandle(adopted));
        }

        public AddressFamily AddressFamily { get; private set; }

        public SocketType SocketType { get; private set; }

        public ProtocolType ProtocolType { get; private set; }

        // The native sock*, ref-counted against use on other threads while it is released.
        public SafeHandle SafeHandle
        {
            get { return _handle; }
        }

        // The socket's file descriptor (still the library's: do not close it).
        public IntPtr Handle
        {
            get
            {
                ThrowIfDisposed();
                IntPtr fd = Native.sock_fd(_handle);
                Native.ThrowIfRejected(fd != (IntPtr)(-1), null, this);
                return fd;
            }
        }

        public EndPoint LocalEndPoint
        {
            get
            {
                ThrowIfDisposed();
                return Endpoints.Parse(LocalEndPointText());
            }
        }

        // Null while not connected, as on .NET.
        public EndPoint RemoteEndPoint
        {
            get
            {
                ThrowIfDisposed();
                var text = new byte[Endpoints.TextCapacity];
                int length = (int)(ulong)Native.sock_remote_endpoint(_handle, text, (UIntPtr)(uint)text.Length);
                if (length == 0)
                {
                    if (Native.sock_last_socket_error() == (int)SocketError.NotConnected)
                        return null;
                    throw Native.Rejection(Native.sock_last_status(), null, this);
                }
                return Endpoints.Parse(Encoding.UTF8.GetString(text, 0, length));
            }
        }

        public bool NoDelay
        {
            get { return GetOption(Native.OptionNoDelay) != 0; }
            set { SetOption(Native.OptionNoDelay, value ? 1 : 0); }
        }

        public int SendBufferSize
        {
            get { return (int)GetOption(Native.OptionSendBufferSize); }
            set { SetOption(Native.OptionSendBufferSize, value); }
        }

        public int ReceiveBufferSize
        {
            get { return (int)GetOption(Native.OptionReceiveBufferSize); }
            set { SetOption(Native.OptionReceiveBufferSize, value); }
        }

        // On the io_uring backend: sends are never tried on the calling thread; they
        // complete through Completed (unless a close on another thread overtakes one: it
        // then finishes at once with OperationAborted), and the reactor hands each turn's
        // sends of all such sockets to the kernel in one system call. On epoll it reads
        // false and does nothing.
        public bool BatchSends
        {
            get { return GetOption(Native.OptionBatchSends) != 0; }
            set { SetOption(Native.OptionBatchSends, value ? 1 : 0); }
        }

        public LingerOption LingerState
        {
            get
            {
                long seconds = GetOption(Native.OptionLinger);
                return seconds < 0 ? new LingerOption(false, 0) : new LingerOption(true, (int)seconds);
            }
            set
            {
                if (value == null)
                    throw new ArgumentNullException("value");
                SetOption(Native.OptionLinger, value.Enabled ? value.LingerTime : -1);
            }
        }

        // The options the library has: ReuseAddress, KeepAlive, NoDelay, SendBuffer,
        // ReceiveBuffer. Others are NotSupportedException (use Handle for them).
        public void SetSocketOption(SocketOptionLevel optionLevel, SocketOptionName optionName, int optionValue)
        {
            SetOption(OptionCode(optionLevel, optionName), optionValue);
        }

        public void SetSocketOption(SocketOptionLevel optionLevel, SocketOptionName optionName, bool optionValue)
        {
            SetOption(OptionCode(optionLevel, optionName), optionValue ? 1 : 0);
        }

        public void Bind(EndPoint localEP)
        {
            ThrowIfDisposed();
            if (localEP == null)
                throw new ArgumentNullException("localEP");
            Native.ThrowIfRejected(Native.sock_bind(_handle, Endpoints.ToText(localEP, "localEP")), "localEP", this);
        }

        public void Listen()
        {
            Listen(DefaultBacklog);
        }

        public void Listen(int backlog)
        {
            ThrowIfDisposed();
            Native.ThrowIfRejected(Native.sock_listen(_handle, backlog), "backlog", this);
        }

        public void Shutdown(SocketShutdown how)
        {
            ThrowIfDisposed();
            Native.ThrowIfRejected(Native.sock_shutdown(_handle, (int)how), "how", this);
        }

        public bool AcceptAsync(SocketAsyncEventArgs e)
        {
            return Start(e, SocketAsyncOperation.Accept);
        }

        public bool ConnectAsync(SocketAsyncEventArgs e)
        {
            return Start(e, SocketAsyncOperation.Connect);
        }

        public bool SendAsync(SocketAsyncEventArgs e)
        {
            return Start(e, SocketAsyncOperation.Send);
        }

        public bool ReceiveAsync(SocketAsyncEventArgs e)
        {
            return Start(e, SocketAsyncOperation.Receive);
        }

        // One datagram to e.RemoteEndPoint.
        public bool SendToAsync(SocketAsyncEventArgs e)
        {
            return Start(e, SocketAsyncOperation.SendTo);
        }

        // One datagram; e.RemoteEndPoint must be set (as on .NET) and becomes its sender.
        public bool ReceiveFromAsync(SocketAsyncEventArgs e)
        {
            return Start(e, SocketAsyncOperation.ReceiveFrom);
        }

        // e.SendPacketsElements, in order, as one send (files with sendfile(2)).
        public bool SendPacketsAsync(SocketAsyncEventArgs e)
        {
            return Start(e, SocketAsyncOperation.SendPackets);
        }

        public bool DisconnectAsync(SocketAsyncEventArgs e)
        {
            return Start(e, SocketAsyncOperation.Disconnect);
        }

        public void Close()
        {
            Dispose();
        }

        // Every pending operation completes with OperationAborted through its Completed
        // event, on the library's thread, never inside this call.
        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) != 0)
                return;
            // Closed now even if a call on another thread still holds the handle (which
            // defers only the release of the memory).
            try
            {
                Native.sock_close(_handle);
            }
            finally
            {
                _handle.Dispose();
            }
        }

        private bool Start(SocketAsyncEventArgs e, SocketAsyncOperation operation)
        {
            ThrowIfDisposed();
            if (e == null)
                throw new ArgumentNullException("e");
            if (operation == SocketAsyncOperation.Connect && e.RemoteEndPoint == null)
                throw new ArgumentNullException("remoteEP");
            if ((operation == SocketAsyncOperation.SendTo || operation == SocketAsyncOperation.ReceiveFrom) && e.RemoteEndPoint == null)
                throw new ArgumentException("The parameter 'e.RemoteEndPoint' cannot be null.", "e");
            if (operation == SocketAsyncOperation.SendPackets && e.SendPacketsElements == null)
                throw new ArgumentException("The parameter 'e.SendPacketsElements' cannot be null.", "e");
            if (operation == SocketAsyncOperation.Accept && e.AcceptSocket != null)
                throw new PlatformNotSupportedException("Accepting into an existing Socket is not supported on this platform.");
            e.BeginOperation(this, operation);
            bool pending;
            try
            {
                switch (operation)
                {
                    case SocketAsyncOperation.Accept:
                        pending = Native.sock_accept_async(_handle, e.NativeArgs);
                        break;
                    case SocketAsyncOperation.Connect:
                        pending = Native.sock_connect_async(_handle, e.NativeArgs);
                        break;
                    case SocketAsyncOperation.Send:
                        pending = Native.sock_send_async(_handle, e.NativeArgs);
                        break;
                    case SocketAsyncOperation.Receive:
                        pending = Native.sock_receive_async(_handle, e.NativeArgs);
                        break;
                    case SocketAsyncOperation.SendTo:
                        pending = Native.sock_send_to_async(_handle, e.NativeArgs);
                        break;
                    case SocketAsyncOperation.ReceiveFrom:
                        pending = Native.sock_receive_from_async(_handle, e.NativeArgs);
                        break;
                    case SocketAsyncOperation.SendPackets:
                        pending = Native.sock_send_packets_async(_handle, e.NativeArgs);
                        break;
                    default:
                        pending = Native.sock_disconnect_async(_handle, e.NativeArgs);
                        break;
                }
            }
            catch
            {
                // The handle was released by another thread (ObjectDisposedException from
                // the marshaller): nothing started.
                e.AbandonStart();
                throw;
            }
            return e.AfterStart(pending);
        }

        private string LocalEndPointText()
        {
            var text = new byte[Endpoints.TextCapacity];
            int length = (int)(ulong)Native.sock_local_endpoint(_handle, text, (UIntPtr)(uint)text.Length);
            Native.ThrowIfRejected(length != 0, null, this);
            return Encoding.UTF8.GetString(text, 0, length);
        }

        private static int OptionCode(SocketOptionLevel level, SocketOptionName name)
        {
            if (level == SocketOptionLevel.Socket && name == SocketOptionName.ReuseAddress)
                return Native.OptionReuseAddress;
            if (level == SocketOptionLevel.Socket && name == SocketOptionName.KeepAlive)
                return Native.OptionKeepAlive;
            if (level == SocketOptionLevel.Socket && name == SocketOptionName.SendBuffer)
                return Native.OptionSendBufferSize;
            if (level == SocketOptionLevel.Socket && name == SocketOptionName.ReceiveBuffer)
                return Native.OptionReceiveBufferSize;
            if (level == SocketOptionLevel.Tcp && name == SocketOptionName.NoDelay)
                return Native.OptionNoDelay;
            throw new NotSupportedException("sockasync does not set " + level + "." + name + "; use Handle for it.");
        }

        private void SetOption(int option, long value)
        {
            ThrowIfDisposed();
            Native.ThrowIfRejected(Native.sock_set_option(_handle, option, value), "value", this);
        }

        private long GetOption(int option)
        {
            ThrowIfDisposed();
            long value;
            Native.ThrowIfRejected(Native.sock_get_option(_handle, option, out value), null, this);
            return value;
        }

        private void ThrowIfDisposed()
        {
            if (Volatile.Read(ref _disposed) != 0)
                throw new ObjectDisposedException(GetType().FullName);
        }
    }
}
