// .NET's SocketAsyncEventArgs over one sock_args object.
//
// Lifetimes, the part P/Invoke leaves to us:
// - The native user token is a weak GCHandle to this object, made once. While an operation
//   is in flight a strong GCHandle (the "root") keeps the object alive, so the library's
//   callback always finds it, even if the program dropped every reference.
// - Managed buffers are pinned when an operation starts and unpinned when it completes
//   (inline, or in the callback), never earlier: the kernel writes into them meanwhile.
// - The callback is one static delegate (Native.CompletedPointer), never collected.
// - Dispose during an operation is deferred: the native args and the token are released
//   when that operation completes, as .NET does.
using System;
using System.Collections.Generic;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Threading;

namespace SockAsync
{
    public class SocketAsyncEventArgs : EventArgs, IDisposable
    {
        private const string InProgressMessage =
            "An asynchronous socket operation is already in progress using this SocketAsyncEventArgs instance.";

        private enum NativeBuffer
        {
            None,
            Single,
            List,
        }

        // GCHandles (pins and roots) held now, over every instance: the tests check it
        // returns to zero once every operation has completed.
        private static int s_heldHandles;

        internal readonly SafeSockArgsHandle NativeArgs;
        private readonly object _sync = new object();
        private GCHandle _self;
        private GCHandle _root;
        private bool _inProgress;
        private bool _disposed;

        private byte[] _buffer;
        private int _offset;
        private int _count;
        private IList<ArraySegment<byte>> _bufferList;
        private ArraySegment<byte>[] _bufferListCopy;

        // Every array an operation in flight uses, pinned.
        private GCHandle[] _pins = new GCHandle[1];
        private int _pinCount;
        private SendPacketsElement[] _sendPacketsElements;
        private NativeBuffer _nativeBuffer;
        private IntPtr _nativePointer;
        private int _nativeLength;
        private string _nativeEndpoint;
        // The flags the native args hold now; -1 when not known (after an operation that
        // may have overwritten them).
        private int _nativeFlags;

        private Socket _currentSocket;

        public SocketAsyncEventArgs()
        {
            Native.EnsureInitialized();
            _self = GCHandle.Alloc(this, GCHandleType.Weak);
            IntPtr args = Native.sock_args_new(Native.CompletedPointer, GCHandle.ToIntPtr(_self));
            if (args == IntPtr.Zero)
            {
                _self.Free();
                throw new OutOfMemoryException(Native.Utf8(Native.sock_last_error_message()));
            }
            NativeArgs = new SafeSockArgsHandle(args);
        }

        ~SocketAsyncEventArgs()
        {
            // Only reachable with no operation in flight (the root would hold it); the
            // native args have their own finalizer.
            if (_self.IsAllocated)
                _self.Free();
        }

        public event EventHandler<SocketAsyncEventArgs> Completed;

        public object UserToken { get; set; }

        public Socket AcceptSocket { get; set; }

        public EndPoint RemoteEndPoint { get; set; }

        public byte[] Buffer
        {
            get { return _buffer; }
        }

        public int Offset
        {
            get { return _offset; }
        }

        public int Count
        {
            get { return _count; }
        }

        public int BytesTransferred { get; private set; }

        // Settable, as on .NET; cast straight to and from the library's numbers.
        public SocketError SocketError { get; set; }

        public SocketAsyncOperation LastOperation { get; private set; }

        // What the next operation passes (OutOfBand, Peek, DontRoute); a receive leaves
        // what it reports (Truncated for a datagram cut short), as on .NET.
        public SocketFlags SocketFlags { get; set; }

        // Internal GCHandle accounting, for the tests.
        internal static int HeldHandles
        {
            get { return Volatile.Read(ref s_heldHandles); }
        }

        // What SendPacketsAsync sends: elements with a Buffer (Offset, Count) or a FilePath
        // (Offset, Count; 0 = to the end of the file); null entries are skipped.
        public SendPacketsElement[] SendPacketsElements
        {
            get { return _sendPacketsElements; }
            set
            {
                ThrowIfInProgress();
                _sendPacketsElements = value;
            }
        }

        public IList<ArraySegment<byte>> BufferList
        {
            get { return _bufferList; }
            set
            {
                ThrowIfInProgress();
                if (value == null)
                {
                    _bufferList = null;
                    _bufferListCopy = null;
                    return;
                }
                if (_buffer != null)
                    throw new ArgumentException("Buffer and BufferList properties cannot both be set to non-null values.", "Buffer");
                // Copied now, as .NET does: later changes to the caller's list are not seen.
                var copy = new ArraySegment<byte>[value.Count];
                for (int i = 0; i < copy.Length; i++)
                {
                    if (value[i].Array == null)
                        throw new ArgumentNullException("segment.Array");
                    copy[i] = value[i];
                }
                _bufferList = value;
                _bufferListCopy = copy;
            }
        }

        public void SetBuffer(byte[] buffer, int offset, int count)
        {
            ThrowIfInProgress();
            if (buffer == null)
            {
                _buffer = null;
                _offset = 0;
                _count = 0;
                return;
            }
            if (_bufferList != null)
                throw new ArgumentException("Buffer and BufferList properties cannot both be set to non-null values.", "BufferList");
            CheckRange(buffer.Length, offset, count);
            _buffer = buffer;
            _offset = offset;
            _count = count;
        }

        public void SetBuffer(int offset, int count)
        {
            ThrowIfInProgress();
            CheckRange(_buffer == null ? 0 : _buffer.Length, offset, count);
            _offset = offset;
            _count = count;
        }

        public void Dispose()
        {
            bool releaseNow;
            lock (_sync)
            {
                if (_disposed)
                    return;
                _disposed = true;
                releaseNow = !_inProgress;
            }
            if (releaseNow)
                ReleaseNative();
            GC.SuppressFinalize(this);
        }

        protected virtual void OnCompleted(SocketAsyncEventArgs e)
        {
            EventHandler<SocketAsyncEventArgs> handler = Completed;
            if (handler != null)
                handler(e._currentSocket, e);
        }

        private static void CheckRange(int length, int offset, int count)
        {
            if ((uint)offset > (uint)length)
                throw new ArgumentOutOfRangeException("offset");
            if ((uint)count > (uint)(length - offset))
                throw new ArgumentOutOfRangeException("count");
        }

        private void ThrowIfInProgress()
        {
            lock (_sync)
            {
                if (_inProgress)
                    throw new InvalidOperationException(InProgressMessage);
            }
        }

        // Claims these args for one operation of `socket` and hands the library the
        // pinned buffers; the caller then starts the operation and calls AfterStart (or
        // AbandonStart if the call itself threw).
        internal void BeginOperation(Socket socket, SocketAsyncOperation operation)
        {
            lock (_sync)
            {
                if (_disposed)
                    throw new ObjectDisposedException(GetType().FullName);
                if (_inProgress)
                    throw new InvalidOperationException(InProgressMessage);
                _inProgress = true;
            }
            _currentSocket = socket;
            LastOperation = operation;
            try
            {
                if (operation == SocketAsyncOperation.Connect || operation == SocketAsyncOperation.SendTo)
                    SetNativeEndpoint(Endpoints.ToText(RemoteEndPoint, "remoteEP"));
                SetNativeFlags();
                if (operation == SocketAsyncOperation.SendPackets)
                    PinAndSetNativePackets();
                else
                    PinAndSetNativeBuffers();
                _root = GCHandle.Alloc(this);
                Interlocked.Increment(ref s_heldHandles);
            }
            catch
            {
                ReleaseOperation();
                throw;
            }
        }

        // `pending` is what the library's start call returned. Pending: the callback owns
        // what follows (it may even have run already), so nothing here is touched.
        internal bool AfterStart(bool pending)
        {
            if (pending)
                return true;
            int status = Native.sock_last_status();
            if (status != Native.StatusOk)
            {
                Exception rejection = Native.Rejection(status, "e", _currentSocket);
                ReleaseOperation();
                throw rejection;
            }
            TakeResults();
            ReleaseOperation();
            return false;
        }

        internal void AbandonStart()
        {
            ReleaseOperation();
        }

        // The library's callback, on its reactor thread (or a pool worker). Nothing may
        // escape it: an exception crossing into native code would kill the process with
        // no managed handler seeing it (SockAsyncRuntime.CompletedHandlerException says
        // where a Completed handler's exception goes instead).
        internal static void OnNativeCompleted(IntPtr socket, IntPtr args, IntPtr userToken)
        {
            try
            {
                var e = (SocketAsyncEventArgs)GCHandle.FromIntPtr(userToken).Target;
                e.TakeResults();
                e.ReleaseOperation();
                e.OnCompleted(e);
            }
            catch (Exception exception)
            {
                SockAsyncRuntime.ReportCompletedHandlerException(exception);
            }
        }

        private void TakeResults()
        {
            BytesTransferred = (int)(ulong)Native.sock_args_bytes_transferred(NativeArgs);
            SocketError = (SocketError)Native.sock_args_socket_error(NativeArgs);
            if (LastOperation == SocketAsyncOperation.Receive || LastOperation == SocketAsyncOperation.ReceiveFrom)
            {
                _nativeFlags = Native.sock_args_flags(NativeArgs);
                SocketFlags = (SocketFlags)_nativeFlags;
            }
            else
            {
                // Sends report None; the others are not promised to keep what was set.
                _nativeFlags = LastOperation == SocketAsyncOperation.Send || LastOperation == SocketAsyncOperation.SendTo
                    || LastOperation == SocketAsyncOperation.SendPackets ? 0 : -1;
            }
            if (LastOperation == SocketAsyncOperation.ReceiveFrom)
            {
                // The library now holds the sender as the args' endpoint.
                _nativeEndpoint = null;
                if (SocketError == SocketError.Success)
                    RemoteEndPoint = Endpoints.Parse(ReadNativeEndpoint());
            }
            if (LastOperation == SocketAsyncOperation.Accept)
            {
                IntPtr accepted = SocketError == SocketError.Success ? Native.sock_args_accept_socket(NativeArgs) : IntPtr.Zero;
                AcceptSocket = accepted == IntPtr.Zero ? null : new Socket(new SafeSockHandle(accepted), _currentSocket);
            }
        }

        private string ReadNativeEndpoint()
        {
            var text = new byte[Endpoints.TextCapacity];
            int length = (int)(ulong)Native.sock_args_remote_endpoint(NativeArgs, text, (UIntPtr)(uint)text.Length);
            return System.Text.Encoding.UTF8.GetString(text, 0, length);
        }

        // Truncated and ControlDataTruncated are results, not requests: the library ignores
        // them as input.
        private void SetNativeFlags()
        {
            int wanted = (int)SocketFlags;
            if (wanted == _nativeFlags)
                return;
            Native.ThrowIfRejected(Native.sock_args_set_flags(NativeArgs, wanted), "SocketFlags", this);
            _nativeFlags = wanted;
        }

        private void SetNativeEndpoint(string text)
        {
            if (text == _nativeEndpoint)
                return;
            Native.ThrowIfRejected(Native.sock_args_set_remote_endpoint(NativeArgs, text), "remoteEP", this);
            _nativeEndpoint = text;
        }

        private IntPtr Pin(byte[] array)
        {
            if (_pinCount == _pins.Length)
                Array.Resize(ref _pins, _pins.Length * 2);
            _pins[_pinCount] = GCHandle.Alloc(array, GCHandleType.Pinned);
            Interlocked.Increment(ref s_heldHandles);
            return _pins[_pinCount++].AddrOfPinnedObject();
        }

        private void PinAndSetNativeBuffers()
        {
            if (_buffer != null)
            {
                IntPtr start = IntPtr.Add(Pin(_buffer), _offset);
                // The library still holds the range the last operation used; if the array
                // was pinned at the same place again, that range is still right.
                if (_nativeBuffer == NativeBuffer.Single && start == _nativePointer && _count == _nativeLength)
                    return;
                ClearNativeBuffer(NativeBuffer.List);
                Native.ThrowIfRejected(Native.sock_args_set_buffer(NativeArgs, start, (UIntPtr)(uint)_count), "buffer", this);
                _nativeBuffer = NativeBuffer.Single;
                _nativePointer = start;
                _nativeLength = _count;
            }
            else if (_bufferListCopy != null)
            {
                ClearNativeBuffer(NativeBuffer.Single);
                var entries = new SockBuf[_bufferListCopy.Length];
                for (int i = 0; i < _bufferListCopy.Length; i++)
                {
                    ArraySegment<byte> segment = _bufferListCopy[i];
                    entries[i].Data = IntPtr.Add(Pin(segment.Array), segment.Offset);
                    entries[i].Length = (UIntPtr)(uint)segment.Count;
                }
                // The library copies the entries: the array may go once the call returns.
                Native.ThrowIfRejected(
                    Native.sock_args_set_buffer_list(NativeArgs, entries, (UIntPtr)(uint)entries.Length), "BufferList", this);
                _nativeBuffer = NativeBuffer.List;
            }
            else
            {
                ClearNativeBuffer(NativeBuffer.Single);
                ClearNativeBuffer(NativeBuffer.List);
            }
        }

        // The library copies the element array and the paths; only the buffers must stay.
        private void PinAndSetNativePackets()
        {
            var elements = new List<SockSendPacket>(_sendPacketsElements.Length);
            var paths = new List<IntPtr>();
            try
            {
                foreach (SendPacketsElement element in _sendPacketsElements)
                {
                    if (element == null)
                        continue;
                    var packet = new SockSendPacket { Offset = element.Offset, Count = (UIntPtr)(uint)element.Count };
                    if (element.Buffer != null)
                    {
                        packet.Kind = SockSendPacket.KindMemory;
                        packet.Buffer = Pin(element.Buffer);
                    }
                    else if (element.FilePath != null)
                    {
                        packet.Kind = SockSendPacket.KindPath;
                        packet.Path = Marshal.StringToHGlobalAnsi(element.FilePath);
                        paths.Add(packet.Path);
                    }
                    else
                    {
                        throw new NotSupportedException("sockasync sends buffer and file path elements only.");
                    }
                    elements.Add(packet);
                }
                Native.ThrowIfRejected(
                    Native.sock_args_set_send_packets(NativeArgs, elements.ToArray(), (UIntPtr)(uint)elements.Count), "e", this);
            }
            finally
            {
                foreach (IntPtr path in paths)
                    Marshal.FreeHGlobal(path);
            }
        }

        private void ClearNativeBuffer(NativeBuffer kind)
        {
            if (_nativeBuffer != kind)
                return;
            bool cleared = kind == NativeBuffer.Single
                ? Native.sock_args_set_buffer(NativeArgs, IntPtr.Zero, UIntPtr.Zero)
                : Native.sock_args_set_buffer_list(NativeArgs, null, UIntPtr.Zero);
            Native.ThrowIfRejected(cleared, "buffer", this);
            _nativeBuffer = NativeBuffer.None;
        }

        // Ends the claim BeginOperation made: unpins, drops the root, frees the args for
        // the next operation, and finishes a Dispose that came while it was in flight.
        private void ReleaseOperation()
        {
            for (int i = 0; i < _pinCount; i++)
            {
                _pins[i].Free();
                Interlocked.Decrement(ref s_heldHandles);
            }
            _pinCount = 0;
            if (_root.IsAllocated)
            {
                _root.Free();
                Interlocked.Decrement(ref s_heldHandles);
            }
            bool releaseNative;
            lock (_sync)
            {
                _inProgress = false;
                releaseNative = _disposed;
            }
            if (releaseNative)
                ReleaseNative();
        }

        private void ReleaseNative()
        {
            NativeArgs.Dispose();
            if (_self.IsAllocated)
                _self.Free();
        }
    }
}
