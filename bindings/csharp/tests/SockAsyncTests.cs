// The C# binding's tests: .NET's SocketAsyncEventArgs behaviours over real loopback
// sockets (127.0.0.1, ::1 and Linux's abstract Unix namespace), run by scripts/test.sh:
//   LD_LIBRARY_PATH=target/release mono build/csharp/SockAsyncTests.exe
// Prints one line per test and "csharp: N passed, N failed"; exits 1 if any failed.
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Threading;
using SockAsync;
using Socket = SockAsync.Socket;
using SocketAsyncEventArgs = SockAsync.SocketAsyncEventArgs;

internal static class SockAsyncTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(20);
    private static int s_passed;
    private static int s_failed;

    private static int Main()
    {
        Run("a send that completes at once returns false and raises no Completed", SyncSendHasNoCompleted);
        Run("a receive with no data is pending; Completed brings it (sender, token, thread)", PendingReceive);
        Run("a receive of data already there completes at once", SyncReceive);
        Run("concurrent sends go out whole and in order (FIFO); each pending one completes once", FifoSends);
        Run("closing a socket aborts its pending receive and accept with OperationAborted", CloseAbortsPending);
        Run("args in use are rejected with InvalidOperationException, reusable after completion", InUseRejection);
        Run("rejections throw what .NET throws, and leave nothing pinned", Rejections);
        Run("a refused connect completes with ConnectionRefused (not thrown)", ConnectRefused);
        Run("BufferList: a gather send and a scatter receive", BufferLists);
        Run("buffers stay pinned while in flight and are unpinned on completion", PinnedWhileInFlight);
        Run("args the program dropped still complete (rooted while in flight)", UnreferencedArgsComplete);
        Run("64 connections echo 100 messages each at once, driven from Completed", ManyConnectionsEcho);
        Run("a Completed handler's exception goes to CompletedHandlerException", HandlerExceptionIsReported);
        Run("accept hands out a connected Socket in AcceptSocket", AcceptHandsOutSocket);
        Run("DisconnectAsync ends the stream after queued sends", Disconnect);
        Run("IPv6 and Unix domain sockets echo", OtherFamilies);
        Run("datagrams: SendToAsync, ReceiveFromAsync (sender, Truncated, Peek) and their rejections", Datagrams);
        Run("SendPacketsAsync sends buffers and file ranges in order, as one send", SendPackets);
        Run("FromFileDescriptor adopts a descriptor (here a duplicate of another socket's)", AdoptDescriptor);
        Run("Shutdown aborts pending operations before it returns; the runtime restarts", ExplicitShutdown);
        Run("on io_uring, BatchSends sends always complete through Completed, whole and in order", BatchedSends);
        Run("SetBusyPoll is checked and taken before the start only; traffic flows with it on", BusyPoll);
        Run("returning from Main with sockets open exits within a second", ExitWithSocketsOpen);
        Run("an unobserved Completed handler exception ends the process loudly", UnobservedHandlerExceptionEndsProcess);
        Console.WriteLine("csharp: {0} passed, {1} failed", s_passed, s_failed);
        return s_failed == 0 ? 0 : 1;
    }

    // SOCKASYNC_CSHARP_TESTS=text runs only the tests whose names contain it.
    private static readonly string s_only = Environment.GetEnvironmentVariable("SOCKASYNC_CSHARP_TESTS");

    private static void Run(string name, Action test)
    {
        if (!string.IsNullOrEmpty(s_only) && !name.Contains(s_only))
            return;
        int heldBefore = SocketAsyncEventArgs.HeldHandles;
        try
        {
            test();
            Check(SocketAsyncEventArgs.HeldHandles == heldBefore,
                "GCHandles held: " + SocketAsyncEventArgs.HeldHandles + ", before: " + heldBefore);
            s_passed++;
            Console.WriteLine("  ok   " + name);
        }
        catch (Exception e)
        {
            s_failed++;
            Console.WriteLine("  FAIL " + name + ": " + e);
        }
    }

    private static void Check(bool condition, string what)
    {
        if (!condition)
            throw new Exception("check failed: " + what);
    }

    private static void Throws<T>(Action action, string what) where T : Exception
    {
        try
        {
            action();
        }
        catch (Exception e)
        {
            Check(e.GetType() == typeof(T), what + ": threw " + e.GetType().Name + " (" + e.Message + "), expected " + typeof(T).Name);
            return;
        }
        throw new Exception("check failed: " + what + ": nothing thrown, expected " + typeof(T).Name);
    }

    // Counts Completed events of one args object and lets the test wait for the next.
    private sealed class Completion
    {
        private readonly SemaphoreSlim _signal = new SemaphoreSlim(0);
        private int _count;

        internal Completion(SocketAsyncEventArgs e)
        {
            e.Completed += (sender, args) =>
            {
                Sender = sender;
                ThreadId = Thread.CurrentThread.ManagedThreadId;
                Interlocked.Increment(ref _count);
                _signal.Release();
            };
        }

        internal object Sender { get; private set; }
        internal int ThreadId { get; private set; }
        internal int Count
        {
            get { return Volatile.Read(ref _count); }
        }

        internal void Wait()
        {
            if (!_signal.Wait(Patience))
                throw new TimeoutException("no Completed event within " + Patience.TotalSeconds + " s");
        }

        // Finishes an operation whichever way it went: a pending one by its event.
        internal void Finish(bool pending)
        {
            if (pending)
                Wait();
        }
    }

    private static Socket Listener(AddressFamily family, EndPoint endpoint)
    {
        var listener = new Socket(family, SocketType.Stream, family == AddressFamily.Unix ? ProtocolType.Unspecified : ProtocolType.Tcp);
        listener.Bind(endpoint);
        listener.Listen(16);
        return listener;
    }

    private static Socket Listener()
    {
        return Listener(AddressFamily.InterNetwork, new IPEndPoint(IPAddress.Loopback, 0));
    }

    // A connected pair: [0] connected to the listener, [1] its accepted end.
    private static Socket[] Pair(AddressFamily family, EndPoint endpoint)
    {
        using (Socket listener = Listener(family, endpoint))
        using (var accept = new SocketAsyncEventArgs())
        using (var connect = new SocketAsyncEventArgs())
        {
            var accepted = new Completion(accept);
            var connected = new Completion(connect);
            bool acceptPending = listener.AcceptAsync(accept);
            var client = new Socket(family, SocketType.Stream, family == AddressFamily.Unix ? ProtocolType.Unspecified : ProtocolType.Tcp);
            connect.RemoteEndPoint = listener.LocalEndPoint;
            connected.Finish(client.ConnectAsync(connect));
            Check(connect.SocketError == SocketError.Success, "connect: " + connect.SocketError);
            accepted.Finish(acceptPending);
            Check(accept.SocketError == SocketError.Success, "accept: " + accept.SocketError);
            return new[] { client, accept.AcceptSocket };
        }
    }

    private static Socket[] Pair()
    {
        return Pair(AddressFamily.InterNetwork, new IPEndPoint(IPAddress.Loopback, 0));
    }

    private static void Dispose(Socket[] pair)
    {
        pair[0].Dispose();
        pair[1].Dispose();
    }

    private static void SendAll(Socket socket, byte[] data)
    {
        using (var e = new SocketAsyncEventArgs())
        {
            var done = new Completion(e);
            e.SetBuffer(data, 0, data.Length);
            done.Finish(socket.SendAsync(e));
            Check(e.SocketError == SocketError.Success && e.BytesTransferred == data.Length,
                "send: " + e.SocketError + ", " + e.BytesTransferred + " bytes");
        }
    }

    private static byte[] ReceiveExactly(Socket socket, int length)
    {
        var data = new byte[length];
        using (var e = new SocketAsyncEventArgs())
        {
            var done = new Completion(e);
            int got = 0;
            while (got < length)
            {
                e.SetBuffer(data, got, length - got);
                done.Finish(socket.ReceiveAsync(e));
                Check(e.SocketError == SocketError.Success, "receive: " + e.SocketError);
                Check(e.BytesTransferred > 0, "end of stream after " + got + " of " + length + " bytes");
                got += e.BytesTransferred;
            }
        }
        return data;
    }

    private static void SyncSendHasNoCompleted()
    {
        Socket[] pair = Pair();
        using (var e = new SocketAsyncEventArgs())
        {
            var done = new Completion(e);
            e.SetBuffer(new byte[] { 1, 2, 3, 4 }, 0, 4);
            Check(!pair[0].SendAsync(e), "a small send on an idle connection completes at once");
            Check(e.BytesTransferred == 4 && e.SocketError == SocketError.Success, "results are there at once");
            Check(e.LastOperation == SocketAsyncOperation.Send, "LastOperation " + e.LastOperation);
            byte[] echoed = ReceiveExactly(pair[1], 4);
            Check(echoed[3] == 4, "the bytes arrived");
            Check(done.Count == 0, "no Completed for a synchronous completion");
        }
        Dispose(pair);
    }

    private static void PendingReceive()
    {
        Socket[] pair = Pair();
        var buffer = new byte[16];
        using (var e = new SocketAsyncEventArgs())
        {
            var done = new Completion(e);
            var token = new object();
            e.UserToken = token;
            e.SetBuffer(buffer, 2, 10);
            Check(pair[1].ReceiveAsync(e), "a receive with nothing to read is pending");
            SendAll(pair[0], new byte[] { 10, 20, 30, 40, 50 });
            done.Wait();
            Check(done.Count == 1, "one Completed");
            Check(done.Sender == pair[1], "the sender is the socket");
            Check(e.UserToken == token, "UserToken kept");
            Check(done.ThreadId != Thread.CurrentThread.ManagedThreadId, "Completed runs on the library's thread");
            Check(e.BytesTransferred == 5 && e.SocketError == SocketError.Success, e.BytesTransferred + " bytes, " + e.SocketError);
            Check(buffer[2] == 10 && buffer[6] == 50 && buffer[1] == 0 && buffer[7] == 0, "received into the range");
            Check(e.LastOperation == SocketAsyncOperation.Receive, "LastOperation " + e.LastOperation);
        }
        Dispose(pair);
    }

    private static void SyncReceive()
    {
        Socket[] pair = Pair();
        // On loopback a send that completed has put its bytes in the peer's receive queue.
        SendAll(pair[0], new byte[] { 7, 8, 9 });
        using (var e = new SocketAsyncEventArgs())
        {
            var done = new Completion(e);
            var buffer = new byte[8];
            e.SetBuffer(buffer, 0, buffer.Length);
            Check(!pair[1].ReceiveAsync(e), "data already there: completes at once");
            Check(e.BytesTransferred == 3 && buffer[2] == 9, e.BytesTransferred + " bytes");
            Check(done.Count == 0, "no Completed");
        }
        Dispose(pair);
    }

    private static void FifoSends()
    {
        const int Sends = 24;
        const int Size = 256 * 1024;
        Socket[] pair = Pair();
        pair[0].SendBufferSize = 16 * 1024;
        var sends = new SocketAsyncEventArgs[Sends];
        var completions = new Completion[Sends];
        var pending = new bool[Sends];
        int pendingCount = 0;
        for (int i = 0; i < Sends; i++)
        {
            var data = new byte[Size];
            for (int j = 0; j < Size; j++)
                data[j] = (byte)(i + j / 4096);
            sends[i] = new SocketAsyncEventArgs();
            completions[i] = new Completion(sends[i]);
            sends[i].SetBuffer(data, 0, Size);
            pending[i] = pair[0].SendAsync(sends[i]);
            if (pending[i])
                pendingCount++;
        }
        byte[] received = ReceiveExactly(pair[1], Sends * Size);
        for (int i = 0; i < Sends; i++)
        {
            completions[i].Finish(pending[i]);
            Check(completions[i].Count == (pending[i] ? 1 : 0), "send " + i + ": " + completions[i].Count + " Completed events");
            Check(sends[i].BytesTransferred == Size && sends[i].SocketError == SocketError.Success, "send " + i + " whole");
            for (int j = 0; j < Size; j += 512)
                Check(received[i * Size + j] == (byte)(i + j / 4096), "send " + i + " arrived in order, unmixed (byte " + j + ")");
            sends[i].Dispose();
        }
        Check(pendingCount > 0, "with a 16 KiB send buffer some of 6 MiB of sends went pending");
        Dispose(pair);
    }

    private static void CloseAbortsPending()
    {
        Socket[] pair = Pair();
        Socket listener = Listener();
        using (var receive = new SocketAsyncEventArgs())
        using (var accept = new SocketAsyncEventArgs())
        {
            var received = new Completion(receive);
            var accepted = new Completion(accept);
            receive.SetBuffer(new byte[64], 0, 64);
            Check(pair[1].ReceiveAsync(receive), "receive pending");
            Check(listener.AcceptAsync(accept), "accept pending");
            pair[1].Close();
            listener.Close();
            received.Wait();
            accepted.Wait();
            Check(receive.SocketError == SocketError.OperationAborted, "receive: " + receive.SocketError);
            Check(receive.BytesTransferred == 0, "nothing received");
            Check(received.Sender == pair[1], "sender is the closed socket");
            Check(accept.SocketError == SocketError.OperationAborted && accept.AcceptSocket == null, "accept: " + accept.SocketError);
            Throws<ObjectDisposedException>(() => pair[1].ReceiveAsync(receive), "receive on the closed socket");
        }
        Dispose(pair);
    }

    private static void InUseRejection()
    {
        Socket[] pair = Pair();
        using (var e = new SocketAsyncEventArgs())
        {
            var done = new Completion(e);
            var buffer = new byte[8];
            e.SetBuffer(buffer, 0, 8);
            Check(pair[1].ReceiveAsync(e), "receive pending");
            Throws<InvalidOperationException>(() => pair[1].ReceiveAsync(e), "a second receive with the same args");
            Throws<InvalidOperationException>(() => pair[0].SendAsync(e), "a send with the same args on another socket");
            Throws<InvalidOperationException>(() => e.SetBuffer(buffer, 0, 4), "SetBuffer while in flight");
            Throws<InvalidOperationException>(() => e.SetBuffer(0, 4), "SetBuffer(offset, count) while in flight");
            Throws<InvalidOperationException>(() => e.BufferList = null, "BufferList while in flight");
            SendAll(pair[0], new byte[] { 42 });
            done.Wait();
            Check(e.BytesTransferred == 1 && buffer[0] == 42, "the first receive got the byte");
            Check(done.Count == 1, "the rejected calls raised nothing");
            e.SetBuffer(buffer, 1, 7);
            SendAll(pair[0], new byte[] { 43 });
            done.Finish(pair[1].ReceiveAsync(e));
            Check(e.BytesTransferred == 1 && buffer[1] == 43, "reused after completion");
        }
        Dispose(pair);
    }

    private static void Rejections()
    {
        Socket[] pair = Pair();
        Socket unbound = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        Socket listener = Listener();
        var e = new SocketAsyncEventArgs();
        Throws<ArgumentNullException>(() => pair[0].SendAsync(null), "SendAsync(null)");
        Throws<InvalidOperationException>(() => unbound.AcceptAsync(e), "accept on a socket that is not listening");
        e.SetBuffer(new byte[8], 0, 8);
        Throws<NotSupportedException>(() => listener.AcceptAsync(e), "accept with a buffer");
        e.SetBuffer(null, 0, 0);
        e.BufferList = new[] { new ArraySegment<byte>(new byte[4]) };
        Throws<ArgumentException>(() => listener.AcceptAsync(e), "accept with a buffer list");
        Throws<ArgumentException>(() => e.SetBuffer(new byte[4], 0, 4), "Buffer while a BufferList is set");
        e.BufferList = null;
        e.AcceptSocket = pair[0];
        Throws<PlatformNotSupportedException>(() => listener.AcceptAsync(e), "accept into an existing socket (as .NET on Unix)");
        e.AcceptSocket = null;
        Throws<ArgumentNullException>(() => unbound.ConnectAsync(e), "connect without RemoteEndPoint");
        e.RemoteEndPoint = listener.LocalEndPoint;
        SocketException connected = null;
        try
        {
            pair[0].ConnectAsync(e);
        }
        catch (SocketException thrown)
        {
            connected = thrown;
        }
        Check(connected != null && connected.SocketErrorCode == SocketError.IsConnected, "connect on a connected socket: SocketException IsConnected");
        Throws<InvalidOperationException>(() => listener.ConnectAsync(e), "connect on a listening socket");
        SocketException inUse = null;
        try
        {
            unbound.Bind(listener.LocalEndPoint);
        }
        catch (SocketException thrown)
        {
            inUse = thrown;
        }
        Check(inUse != null && inUse.SocketErrorCode == SocketError.AddressAlreadyInUse, "bind to a port in use: SocketException AddressAlreadyInUse");
        Throws<ArgumentOutOfRangeException>(() => e.SetBuffer(new byte[4], 2, 3), "a range past the buffer");
        Throws<ArgumentOutOfRangeException>(() => e.SetBuffer(new byte[4], -1, 1), "a negative offset");
        Throws<ArgumentNullException>(() => e.BufferList = new[] { default(ArraySegment<byte>) }, "a BufferList entry without an array");
        Throws<NotSupportedException>(() => unbound.SetSocketOption(SocketOptionLevel.IP, SocketOptionName.TypeOfService, 1), "an option the library lacks");
        pair[0].Close();
        Throws<ObjectDisposedException>(() => pair[0].SendAsync(e), "send on a closed socket");
        Throws<ObjectDisposedException>(() => { var unused = pair[0].LocalEndPoint; }, "LocalEndPoint of a closed socket");
        e.Dispose();
        Throws<ObjectDisposedException>(() => pair[1].SendAsync(e), "send with disposed args");
        unbound.Dispose();
        listener.Dispose();
        Dispose(pair);
    }

    private static void ConnectRefused()
    {
        EndPoint free;
        using (Socket probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
        {
            probe.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            free = probe.LocalEndPoint;
        }
        using (Socket client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
        using (var e = new SocketAsyncEventArgs())
        {
            var done = new Completion(e);
            e.RemoteEndPoint = free;
            done.Finish(client.ConnectAsync(e));
            Check(e.SocketError == SocketError.ConnectionRefused, "connect: " + e.SocketError);
            Check(e.LastOperation == SocketAsyncOperation.Connect, "LastOperation " + e.LastOperation);
        }
    }

    private static void BufferLists()
    {
        Socket[] pair = Pair();
        using (var send = new SocketAsyncEventArgs())
        using (var receive = new SocketAsyncEventArgs())
        {
            var sent = new Completion(send);
            var received = new Completion(receive);
            var list = new List<ArraySegment<byte>>
            {
                new ArraySegment<byte>(new byte[] { 0, 1, 2, 3 }, 1, 2),
                new ArraySegment<byte>(new byte[] { 3, 4, 5 }),
            };
            send.BufferList = list;
            list.Clear(); // copied when set, as on .NET
            sent.Finish(pair[0].SendAsync(send));
            Check(send.BytesTransferred == 5, "gathered " + send.BytesTransferred + " bytes");
            var first = new byte[2];
            var second = new byte[8];
            receive.BufferList = new[] { new ArraySegment<byte>(first), new ArraySegment<byte>(second, 4, 3) };
            received.Finish(pair[1].ReceiveAsync(receive));
            Check(receive.BytesTransferred == 5, "scattered " + receive.BytesTransferred + " bytes");
            Check(first[0] == 1 && first[1] == 2 && second[4] == 3 && second[6] == 5 && second[3] == 0, "in the right places");
        }
        Dispose(pair);
    }

    private static void PinnedWhileInFlight()
    {
        Socket[] pair = Pair();
        int before = SocketAsyncEventArgs.HeldHandles;
        using (var e = new SocketAsyncEventArgs())
        {
            var done = new Completion(e);
            var buffer = new byte[32];
            e.SetBuffer(buffer, 0, buffer.Length);
            Check(pair[1].ReceiveAsync(e), "receive pending");
            Check(SocketAsyncEventArgs.HeldHandles == before + 2, "the buffer pinned and the args rooted: " + (SocketAsyncEventArgs.HeldHandles - before));
            GC.Collect();
            GC.WaitForPendingFinalizers();
            SendAll(pair[0], new byte[] { 99 });
            done.Wait();
            Check(buffer[0] == 99, "the kernel wrote into the array it was given");
            Check(SocketAsyncEventArgs.HeldHandles == before, "unpinned once completed");
        }
        Dispose(pair);
    }

    // One side of an echo: receives whatever comes and sends it back, forever, from its
    // Completed handler (and inline while operations complete at once).
    private sealed class Echoer
    {
        private readonly Socket _socket;
        private readonly SocketAsyncEventArgs _args = new SocketAsyncEventArgs();
        private readonly byte[] _buffer = new byte[8192];

        internal Echoer(Socket socket)
        {
            _socket = socket;
            _args.Completed += (sender, e) => Continue();
            _args.SetBuffer(_buffer, 0, _buffer.Length);
            if (!_socket.ReceiveAsync(_args))
                Continue();
        }

        internal readonly ManualResetEventSlim Ended = new ManualResetEventSlim();

        private void Continue()
        {
            while (true)
            {
                bool pending;
                if (_args.SocketError != SocketError.Success || (_args.LastOperation == SocketAsyncOperation.Receive && _args.BytesTransferred == 0))
                {
                    _args.Dispose();
                    Ended.Set();
                    return;
                }
                if (_args.LastOperation == SocketAsyncOperation.Receive)
                {
                    _args.SetBuffer(0, _args.BytesTransferred);
                    pending = _socket.SendAsync(_args);
                }
                else
                {
                    _args.SetBuffer(0, _buffer.Length);
                    pending = _socket.ReceiveAsync(_args);
                }
                if (pending)
                    return;
            }
        }
    }

    // The other side: sends random messages and checks each echo, with the receive posted
    // before the send so both are in flight at once, all from Completed handlers; the next
    // message starts when both halves of this one are done, on whichever thread finished last.
    private sealed class EchoClient
    {
        private readonly Socket _socket;
        private readonly SocketAsyncEventArgs _send = new SocketAsyncEventArgs();
        private readonly SocketAsyncEventArgs _receive = new SocketAsyncEventArgs();
        private readonly Random _random;
        private readonly int _messages;
        private byte[] _message;
        private byte[] _echo;
        private int _received;
        private int _sent;
        private int _halvesLeft;

        internal EchoClient(Socket socket, int seed, int messages)
        {
            _socket = socket;
            _random = new Random(seed);
            _messages = messages;
            _send.Completed += (sender, e) => SendDone();
            _receive.Completed += (sender, e) => Received();
        }

        internal readonly ManualResetEventSlim Done = new ManualResetEventSlim();
        internal string Failure;

        internal void Next()
        {
            if (_sent == _messages)
            {
                _socket.Shutdown(SocketShutdown.Send);
                Done.Set();
                return;
            }
            _message = new byte[1 + _random.Next(16384)];
            _random.NextBytes(_message);
            _echo = new byte[_message.Length];
            _received = 0;
            _sent++;
            _halvesLeft = 2;
            ReceiveMore();
            _send.SetBuffer(_message, 0, _message.Length);
            if (!_socket.SendAsync(_send))
                SendDone();
        }

        private void ReceiveMore()
        {
            _receive.SetBuffer(_echo, _received, _echo.Length - _received);
            if (!_socket.ReceiveAsync(_receive))
                Received();
        }

        private void SendDone()
        {
            if (_send.SocketError != SocketError.Success)
                Fail("send: " + _send.SocketError);
            else
                HalfDone();
        }

        private void Received()
        {
            if (_receive.SocketError != SocketError.Success || _receive.BytesTransferred == 0)
            {
                Fail("receive: " + _receive.SocketError + ", " + _receive.BytesTransferred + " bytes");
                return;
            }
            _received += _receive.BytesTransferred;
            if (_received < _echo.Length)
            {
                ReceiveMore();
                return;
            }
            for (int i = 0; i < _echo.Length; i++)
            {
                if (_echo[i] != _message[i])
                {
                    Fail("message " + _sent + ", byte " + i);
                    return;
                }
            }
            HalfDone();
        }

        private void HalfDone()
        {
            if (Interlocked.Decrement(ref _halvesLeft) == 0)
                Next();
        }

        private void Fail(string why)
        {
            Failure = why;
            Done.Set();
        }
    }

    private static void ManyConnectionsEcho()
    {
        const int Connections = 64;
        const int Messages = 100;
        var pairs = new Socket[Connections][];
        var echoers = new Echoer[Connections];
        var clients = new EchoClient[Connections];
        for (int i = 0; i < Connections; i++)
        {
            pairs[i] = Pair();
            // The echo comes back in several sends: without NoDelay, Nagle's algorithm
            // and delayed ACKs would hold each message's last piece for ~40 ms.
            pairs[i][0].NoDelay = true;
            pairs[i][1].NoDelay = true;
            echoers[i] = new Echoer(pairs[i][1]);
            clients[i] = new EchoClient(pairs[i][0], i, Messages);
        }
        foreach (EchoClient client in clients)
            client.Next();
        for (int i = 0; i < Connections; i++)
        {
            Check(clients[i].Done.Wait(Patience), "connection " + i + " finished in time");
            Check(clients[i].Failure == null, "connection " + i + ": " + clients[i].Failure);
            Check(echoers[i].Ended.Wait(Patience), "connection " + i + ": the echoing end saw the end of stream");
        }
        foreach (Socket[] pair in pairs)
            Dispose(pair);
    }

    private sealed class Box
    {
        internal readonly ManualResetEventSlim Done = new ManualResetEventSlim();
        internal int Byte = -1;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void StartUnreferencedReceive(Socket socket, Box box)
    {
        var e = new SocketAsyncEventArgs();
        e.SetBuffer(new byte[4], 0, 4);
        e.Completed += (sender, args) =>
        {
            box.Byte = args.Buffer[0];
            box.Done.Set();
            args.Dispose();
        };
        Check(socket.ReceiveAsync(e), "receive pending");
    }

    private static void UnreferencedArgsComplete()
    {
        Socket[] pair = Pair();
        var box = new Box();
        StartUnreferencedReceive(pair[1], box);
        for (int i = 0; i < 3; i++)
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
        }
        SendAll(pair[0], new byte[] { 77 });
        Check(box.Done.Wait(Patience), "Completed ran");
        Check(box.Byte == 77, "with the data");
        Dispose(pair);
    }

    private static void HandlerExceptionIsReported()
    {
        Socket[] pair = Pair();
        var reported = new ManualResetEventSlim();
        Exception seen = null;
        EventHandler<CompletedHandlerExceptionEventArgs> observer = (sender, args) =>
        {
            seen = args.Exception;
            reported.Set();
        };
        SockAsyncRuntime.CompletedHandlerException += observer;
        try
        {
            using (var e = new SocketAsyncEventArgs())
            {
                e.SetBuffer(new byte[4], 0, 4);
                e.Completed += (sender, args) => { throw new ApplicationException("thrown by a Completed handler"); };
                Check(pair[1].ReceiveAsync(e), "receive pending");
                SendAll(pair[0], new byte[] { 1 });
                Check(reported.Wait(Patience), "the exception was reported");
                Check(seen is ApplicationException && seen.Message == "thrown by a Completed handler", "the handler's own exception: " + seen);
                SendAll(pair[0], new byte[] { 2 });
                bool pending = pair[1].ReceiveAsync(e);
                Check(!pending && e.Buffer[0] == 2, "the args were released before the handler ran, and work on");
            }
        }
        finally
        {
            SockAsyncRuntime.CompletedHandlerException -= observer;
        }
        Dispose(pair);
    }

    private static void AcceptHandsOutSocket()
    {
        Socket[] pair = Pair();
        Check(pair[1] != null && pair[1].AddressFamily == AddressFamily.InterNetwork, "AcceptSocket set");
        Check(pair[1].RemoteEndPoint.Equals(pair[0].LocalEndPoint), "the accepted end's peer is the client: " + pair[1].RemoteEndPoint);
        SendAll(pair[1], new byte[] { 5, 6 });
        Check(ReceiveExactly(pair[0], 2)[1] == 6, "data flows from the accepted socket");
        Dispose(pair);
    }

    private static void Disconnect()
    {
        Socket[] pair = Pair();
        using (var send = new SocketAsyncEventArgs())
        using (var disconnect = new SocketAsyncEventArgs())
        using (var receive = new SocketAsyncEventArgs())
        {
            var disconnected = new Completion(disconnect);
            var received = new Completion(receive);
            send.SetBuffer(new byte[] { 1, 2, 3 }, 0, 3);
            Check(!pair[0].SendAsync(send), "send done at once");
            disconnected.Finish(pair[0].DisconnectAsync(disconnect));
            Check(disconnect.SocketError == SocketError.Success && disconnect.LastOperation == SocketAsyncOperation.Disconnect, "disconnect: " + disconnect.SocketError);
            Check(ReceiveExactly(pair[1], 3)[2] == 3, "the queued bytes first");
            receive.SetBuffer(new byte[8], 0, 8);
            received.Finish(pair[1].ReceiveAsync(receive));
            Check(receive.SocketError == SocketError.Success && receive.BytesTransferred == 0, "then end of stream");
        }
        Dispose(pair);
    }

    private static void Echo(Socket[] pair)
    {
        var message = new byte[1000];
        new Random(1).NextBytes(message);
        SendAll(pair[0], message);
        byte[] back = ReceiveExactly(pair[1], message.Length);
        for (int i = 0; i < message.Length; i++)
            Check(back[i] == message[i], "byte " + i);
    }

    private static void OtherFamilies()
    {
        Socket[] v6 = Pair(AddressFamily.InterNetworkV6, new IPEndPoint(IPAddress.IPv6Loopback, 0));
        Check(((IPEndPoint)v6[0].RemoteEndPoint).Address.Equals(IPAddress.IPv6Loopback), "::1 peer");
        Echo(v6);
        Dispose(v6);
        var name = new UnixEndPoint("@sockasync-csharp-" + Process.GetCurrentProcess().Id);
        Socket[] unix = Pair(AddressFamily.Unix, name);
        Check(unix[0].RemoteEndPoint.Equals(name), "the abstract name reads back: " + unix[0].RemoteEndPoint);
        Echo(unix);
        Dispose(unix);
    }

    private static Socket Udp()
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return socket;
    }

    private static void Datagrams()
    {
        using (Socket a = Udp())
        using (Socket b = Udp())
        using (Socket unbound = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp))
        using (var send = new SocketAsyncEventArgs())
        using (var receive = new SocketAsyncEventArgs())
        {
            var sent = new Completion(send);
            var received = new Completion(receive);
            var buffer = new byte[4];
            receive.SetBuffer(buffer, 0, buffer.Length);
            Throws<ArgumentException>(() => b.ReceiveFromAsync(receive), "ReceiveFromAsync without RemoteEndPoint");
            receive.RemoteEndPoint = new IPEndPoint(IPAddress.Any, 0);
            Throws<InvalidOperationException>(() => unbound.ReceiveFromAsync(receive), "receive-from on an unbound socket");
            bool pending = b.ReceiveFromAsync(receive);
            Check(pending, "a receive-from with no datagram waiting is pending");

            send.SetBuffer(new byte[] { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }, 0, 10);
            Throws<ArgumentException>(() => a.SendToAsync(send), "SendToAsync without RemoteEndPoint");
            send.RemoteEndPoint = b.LocalEndPoint;
            sent.Finish(a.SendToAsync(send));
            Check(send.SocketError == SocketError.Success && send.BytesTransferred == 10, "sent: " + send.SocketError);
            Check(send.LastOperation == SocketAsyncOperation.SendTo, "LastOperation " + send.LastOperation);
            received.Wait();
            Check(receive.BytesTransferred == 4 && buffer[3] == 4, "a 10-byte datagram cut to the 4-byte buffer: " + receive.BytesTransferred);
            Check((receive.SocketFlags & SocketFlags.Truncated) != 0, "Truncated reported: " + receive.SocketFlags);
            Check(receive.RemoteEndPoint.Equals(a.LocalEndPoint), "the sender: " + receive.RemoteEndPoint);
            Check(receive.LastOperation == SocketAsyncOperation.ReceiveFrom, "LastOperation " + receive.LastOperation);

            send.SetBuffer(new byte[] { 42 }, 0, 1);
            sent.Finish(a.SendToAsync(send));
            receive.SocketFlags = SocketFlags.Peek;
            received.Finish(b.ReceiveFromAsync(receive));
            Check(receive.BytesTransferred == 1 && buffer[0] == 42, "peeked");
            buffer[0] = 0;
            receive.SocketFlags = SocketFlags.None;
            received.Finish(b.ReceiveFromAsync(receive));
            Check(receive.BytesTransferred == 1 && buffer[0] == 42 && receive.SocketFlags == SocketFlags.None, "the peeked datagram is still there");
        }
        Socket[] pair = Pair();
        using (var e = new SocketAsyncEventArgs())
        {
            e.RemoteEndPoint = pair[1].LocalEndPoint;
            Throws<NotSupportedException>(() => pair[0].SendToAsync(e), "SendToAsync on a stream socket");
        }
        Dispose(pair);
    }

    private static void SendPackets()
    {
        string file = Path.GetTempFileName();
        try
        {
            var content = new byte[5000];
            new Random(3).NextBytes(content);
            File.WriteAllBytes(file, content);
            Socket[] pair = Pair();
            using (var e = new SocketAsyncEventArgs())
            using (Socket unconnected = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
            {
                var done = new Completion(e);
                Throws<ArgumentException>(() => pair[0].SendPacketsAsync(e), "SendPacketsAsync without elements");
                e.SendPacketsElements = new[]
                {
                    new SendPacketsElement(new byte[] { 9, 1, 2, 9 }, 1, 2),
                    null,
                    new SendPacketsElement(file, 10, 100),
                    new SendPacketsElement(file, 0, 0),
                };
                Throws<NotSupportedException>(() => unconnected.SendPacketsAsync(e), "send-packets on an unconnected socket");
                done.Finish(pair[0].SendPacketsAsync(e));
                Check(e.SocketError == SocketError.Success && e.LastOperation == SocketAsyncOperation.SendPackets, "sent: " + e.SocketError);
                Check(e.BytesTransferred == 2 + 100 + content.Length, "bytes " + e.BytesTransferred);
                byte[] got = ReceiveExactly(pair[1], e.BytesTransferred);
                Check(got[0] == 1 && got[1] == 2, "the buffer's range first");
                for (int i = 0; i < 100; i++)
                    Check(got[2 + i] == content[10 + i], "the file range, byte " + i);
                for (int i = 0; i < content.Length; i++)
                    Check(got[102 + i] == content[i], "the whole file, byte " + i);
                e.SendPacketsElements = new[] { new SendPacketsElement(file + ".missing") };
                Throws<ArgumentException>(() => pair[0].SendPacketsAsync(e), "a file that cannot be opened");
            }
            Dispose(pair);
        }
        finally
        {
            File.Delete(file);
        }
    }

    private static void AdoptDescriptor()
    {
        Socket[] pair = Pair();
        using (Socket adopted = Socket.FromFileDescriptor(pair[0].Handle, false))
        {
            Check(adopted.AddressFamily == AddressFamily.InterNetwork, "family read from the kernel: " + adopted.AddressFamily);
            Check(adopted.LocalEndPoint.Equals(pair[0].LocalEndPoint), "the same connection");
            SendAll(adopted, new byte[] { 11, 12 });
        }
        Check(ReceiveExactly(pair[1], 2)[1] == 12, "sent through the adopted descriptor");
        SendAll(pair[0], new byte[] { 13 });
        Check(ReceiveExactly(pair[1], 1)[0] == 13, "the original still works: the library closed only its duplicate");
        Dispose(pair);
    }

    private static void BatchedSends()
    {
        SockAsyncRuntime.Shutdown();
        SockAsyncRuntime.SetBackend(Backend.IoUring);
        try
        {
            bool uring = SockAsyncRuntime.Backend == Backend.IoUring;
            Throws<InvalidOperationException>(() => SockAsyncRuntime.SetBackend(Backend.Epoll), "the runtime is running");
            Socket[] pair = Pair();
            pair[0].BatchSends = true;
            Check(pair[0].BatchSends == uring, "BatchSends is in effect only on io_uring");
            const int Sends = 200;
            var sends = new SocketAsyncEventArgs[Sends];
            var completions = new Completion[Sends];
            var pending = new bool[Sends];
            for (int i = 0; i < Sends; i++)
            {
                sends[i] = new SocketAsyncEventArgs();
                completions[i] = new Completion(sends[i]);
                sends[i].SetBuffer(new byte[] { (byte)i, (byte)(i >> 8), 0x5A }, 0, 3);
                pending[i] = pair[0].SendAsync(sends[i]);
                Check(pending[i] || !uring, "send " + i + " went pending (batched)");
            }
            byte[] received = ReceiveExactly(pair[1], Sends * 3);
            for (int i = 0; i < Sends; i++)
            {
                completions[i].Finish(pending[i]);
                Check(completions[i].Count == (pending[i] ? 1 : 0), "send " + i + ": " + completions[i].Count + " Completed events");
                Check(sends[i].BytesTransferred == 3 && sends[i].SocketError == SocketError.Success, "send " + i + " whole");
                Check(received[i * 3] == (byte)i && received[i * 3 + 1] == (byte)(i >> 8), "send " + i + " in order");
                sends[i].Dispose();
            }
            Dispose(pair);
        }
        finally
        {
            SockAsyncRuntime.Shutdown();
            SockAsyncRuntime.SetBackend(Environment.GetEnvironmentVariable("SOCKASYNC_BACKEND") == "io_uring" ? Backend.IoUring : Backend.Epoll);
        }
    }

    private static void BusyPoll()
    {
        SockAsyncRuntime.Shutdown();
        int before = SockAsyncRuntime.BusyPoll;
        Throws<ArgumentException>(() => SockAsyncRuntime.SetBusyPoll(1000001), "above the maximum");
        Throws<ArgumentOutOfRangeException>(() => SockAsyncRuntime.SetBusyPoll(-1), "negative");
        SockAsyncRuntime.SetBusyPoll(200);
        try
        {
            Check(SockAsyncRuntime.BusyPoll == 200, "read back: " + SockAsyncRuntime.BusyPoll);
            Socket[] pair = Pair();
            Throws<InvalidOperationException>(() => SockAsyncRuntime.SetBusyPoll(0), "the runtime is running");
            Check(SockAsyncRuntime.BusyPoll == 200, "the running runtime's");
            using (var e = new SocketAsyncEventArgs())
            {
                var done = new Completion(e);
                var buffer = new byte[8];
                for (int i = 0; i < 100; i++)
                {
                    e.SetBuffer(buffer, 0, buffer.Length);
                    bool pending = pair[1].ReceiveAsync(e);
                    Check(pending, "receive " + i + " waits for its message");
                    SendAll(pair[0], new byte[] { (byte)i, 0x5A });
                    done.Finish(pending);
                    Check(e.BytesTransferred == 2 && buffer[0] == (byte)i && buffer[1] == 0x5A, "message " + i);
                }
            }
            Dispose(pair);
            SockAsyncRuntime.Shutdown();
            Check(SockAsyncRuntime.BusyPoll == 200, "kept for the next start");
        }
        finally
        {
            SockAsyncRuntime.Shutdown();
            SockAsyncRuntime.SetBusyPoll(before);
        }
    }

    private static void ExplicitShutdown()
    {
        Socket[] pair = Pair();
        var e = new SocketAsyncEventArgs();
        var done = new Completion(e);
        e.SetBuffer(new byte[4], 0, 4);
        Check(pair[1].ReceiveAsync(e), "receive pending");
        SockAsyncRuntime.Shutdown();
        Check(done.Count == 1, "Completed ran before Shutdown returned");
        Check(e.SocketError == SocketError.OperationAborted, "aborted: " + e.SocketError);
        Throws<ObjectDisposedException>(() => pair[1].ReceiveAsync(e), "the socket is closed");
        e.Dispose();
        Dispose(pair);
        Socket[] again = Pair();
        Echo(again);
        Dispose(again);
    }

    // Runs ExitChild.exe (beside this program) in `mode`; returns its exit code, output
    // and the seconds from its "returning" line to its exit.
    private static int RunChild(string mode, out string output, out double secondsAfterReturn)
    {
        string here = Path.GetDirectoryName(typeof(SockAsyncTests).Assembly.Location);
        var start = new ProcessStartInfo(Process.GetCurrentProcess().MainModule.FileName,
            "\"" + Path.Combine(here, "ExitChild.exe") + "\" " + mode)
        {
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        var lines = new List<string>();
        var clock = new Stopwatch();
        using (var child = new Process { StartInfo = start })
        {
            // Read as lines arrive: a child that never exits never closes its output.
            child.OutputDataReceived += (sender, e) =>
            {
                if (e.Data == null)
                    return;
                if (e.Data == "returning")
                    clock.Start();
                lock (lines)
                    lines.Add(e.Data);
            };
            child.Start();
            var stderr = child.StandardError.ReadToEndAsync();
            child.BeginOutputReadLine();
            bool exited = child.WaitForExit((int)Patience.TotalMilliseconds);
            clock.Stop();
            if (!exited)
                child.Kill();
            child.WaitForExit();
            secondsAfterReturn = clock.Elapsed.TotalSeconds;
            lock (lines)
                output = string.Join("\n", lines) + "\n" + stderr.Result;
            return exited ? child.ExitCode : -1;
        }
    }

    private static void ExitWithSocketsOpen()
    {
        string output;
        double seconds;
        int code = RunChild("open", out output, out seconds);
        Console.WriteLine("     the child exited {0:F3} s after returning from Main", seconds);
        Check(code == 0, "exit code " + code + (code == -1 ? " (still running after " + Patience.TotalSeconds + " s: killed)" : "") + "; output:\n" + output);
        Check(output.Contains("returning"), "the child got to the end of Main:\n" + output);
        Check(seconds < 1.0, "exited " + seconds.ToString("F2") + " s after returning from Main");
        Check(output.Contains("receive completed: OperationAborted") && output.Contains("accept completed: OperationAborted"),
            "the pending operations were aborted at exit through Completed:\n" + output);
    }

    private static void UnobservedHandlerExceptionEndsProcess()
    {
        string output;
        double seconds;
        int code = RunChild("throw", out output, out seconds);
        Check(code != 0 && code != -1, "exit code " + code + "; output:\n" + output);
        Check(output.Contains("thrown by a Completed handler"), "the exception was printed:\n" + output);
        Check(output.Contains("UnhandledException raised"), "AppDomain.UnhandledException was raised:\n" + output);
    }
}
