// An echo server and client in C#, speaking the same protocol as examples-c/ (either end
// works with the C one):
//   mono Echo.exe server ENDPOINT CONNECTIONS      e.g.  server 127.0.0.1:0 3
//   mono Echo.exe client ENDPOINT MESSAGES SIZE    e.g.  client 127.0.0.1:7777 1000 1024
// The server prints "listening on ENDPOINT", echoes everything each connection sends
// until it ends its stream, and exits after CONNECTIONS of them. The client sends MESSAGES
// messages of SIZE bytes, checks every byte that comes back, ends its stream and waits
// for the server's end.
//
// The one rule of the model: an XxxAsync call that returns true is pending and raises
// Completed later, on the library's thread; one that returns false has completed already,
// its results are in the args, and NO Completed event will come, so the caller handles it
// right there. The server's loops below do that; the client waits only for pending ones.
using System;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Threading;
using SockAsync;
using Socket = SockAsync.Socket;
using SocketAsyncEventArgs = SockAsync.SocketAsyncEventArgs;

internal static class Echo
{
    private static int Main(string[] args)
    {
        if (args.Length == 3 && args[0] == "server")
            return new Server(Parse(args[1]), int.Parse(args[2], CultureInfo.InvariantCulture)).Run();
        if (args.Length == 4 && args[0] == "client")
            return Client(Parse(args[1]), int.Parse(args[2], CultureInfo.InvariantCulture), int.Parse(args[3], CultureInfo.InvariantCulture));
        Console.Error.WriteLine("usage: Echo.exe server ENDPOINT CONNECTIONS | client ENDPOINT MESSAGES SIZE");
        return 2;
        // Returning from Main is enough: the binding shuts the library's runtime down at
        // process exit (SockAsyncRuntime.Shutdown).
    }

    private static IPEndPoint Parse(string text)
    {
        int colon = text.LastIndexOf(':');
        return new IPEndPoint(IPAddress.Parse(text.Substring(0, colon).Trim('[', ']')),
            int.Parse(text.Substring(colon + 1), CultureInfo.InvariantCulture));
    }

    // Everything runs from Completed handlers (and inline for synchronous completions).
    private sealed class Server
    {
        private readonly Socket _listener;
        private readonly SocketAsyncEventArgs _accept = new SocketAsyncEventArgs();
        private readonly int _connections;
        private readonly CountdownEvent _finished;
        private int _accepted;
        private int _failures;
        private long _echoed;

        internal Server(IPEndPoint endpoint, int connections)
        {
            _connections = connections;
            _finished = new CountdownEvent(connections);
            _listener = new Socket(endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
            _listener.Bind(endpoint);
            _listener.Listen(128);
            _accept.Completed += (sender, e) =>
            {
                if (Accepted())
                    AcceptNext();
            };
        }

        internal int Run()
        {
            Console.WriteLine("listening on " + _listener.LocalEndPoint);
            Console.Out.Flush();
            AcceptNext();
            _finished.Wait();
            _listener.Dispose();
            Console.WriteLine("served {0} connections, echoed {1} bytes", _connections, Interlocked.Read(ref _echoed));
            return Volatile.Read(ref _failures) == 0 ? 0 : 1;
        }

        private void AcceptNext()
        {
            while (_accepted < _connections)
            {
                // As on .NET on Unix, an accept must start with no AcceptSocket.
                _accept.AcceptSocket = null;
                if (_listener.AcceptAsync(_accept))
                    return;
                if (!Accepted())
                    return;
            }
        }

        private bool Accepted()
        {
            if (_accept.SocketError != SocketError.Success)
            {
                Console.Error.WriteLine("echo server: accept: " + _accept.SocketError);
                for (int i = _accepted; i < _connections; i++)
                    Finished(0, false);
                return false;
            }
            _accepted++;
            new Connection(this, _accept.AcceptSocket).Start();
            return true;
        }

        internal void Finished(long echoed, bool ok)
        {
            Interlocked.Add(ref _echoed, echoed);
            if (!ok)
                Interlocked.Increment(ref _failures);
            _finished.Signal();
        }
    }

    // One connection: receive, send it back, repeat, on one args object.
    private sealed class Connection
    {
        private readonly Server _server;
        private readonly Socket _socket;
        private readonly SocketAsyncEventArgs _args = new SocketAsyncEventArgs();
        private readonly byte[] _buffer = new byte[64 * 1024];
        private long _echoed;

        internal Connection(Server server, Socket socket)
        {
            _server = server;
            _socket = socket;
            _args.Completed += (sender, e) => Continue();
        }

        internal void Start()
        {
            _args.SetBuffer(_buffer, 0, _buffer.Length);
            if (!_socket.ReceiveAsync(_args))
                Continue();
        }

        // Handles the operation that just completed, starts the next, and goes on here as
        // long as they complete at once.
        private void Continue()
        {
            while (true)
            {
                if (_args.SocketError != SocketError.Success)
                {
                    Console.Error.WriteLine("echo server: " + _args.LastOperation + ": " + _args.SocketError);
                    End(false);
                    return;
                }
                bool pending;
                if (_args.LastOperation == SocketAsyncOperation.Receive)
                {
                    if (_args.BytesTransferred == 0)
                    {
                        End(true);
                        return;
                    }
                    _args.SetBuffer(0, _args.BytesTransferred);
                    pending = _socket.SendAsync(_args);
                }
                else
                {
                    _echoed += _args.BytesTransferred;
                    _args.SetBuffer(0, _buffer.Length);
                    pending = _socket.ReceiveAsync(_args);
                }
                if (pending)
                    return;
            }
        }

        private void End(bool ok)
        {
            try
            {
                if (ok)
                    _socket.Shutdown(SocketShutdown.Send);
            }
            catch (SocketException e)
            {
                Console.Error.WriteLine("echo server: shutdown: " + e.SocketErrorCode);
                ok = false;
            }
            _socket.Dispose();
            _args.Dispose();
            _server.Finished(_echoed, ok);
        }
    }

    // Waits for an operation only if it went pending.
    private sealed class Operation
    {
        private readonly AutoResetEvent _completed = new AutoResetEvent(false);

        internal Operation()
        {
            Args.Completed += (sender, e) => _completed.Set();
        }

        internal SocketAsyncEventArgs Args { get; } = new SocketAsyncEventArgs();

        internal void Run(Func<SocketAsyncEventArgs, bool> start, string what)
        {
            if (start(Args))
                _completed.WaitOne();
            if (Args.SocketError != SocketError.Success)
                throw new Exception(what + ": " + Args.SocketError);
        }
    }

    private static int Client(IPEndPoint endpoint, int messages, int size)
    {
        var clock = Stopwatch.StartNew();
        var message = new byte[size];
        var echo = new byte[size];
        int done = 0;
        using (var socket = new Socket(endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp))
        {
            try
            {
                var operation = new Operation();
                operation.Args.RemoteEndPoint = endpoint;
                operation.Run(socket.ConnectAsync, "connect");
                for (; done < messages; done++)
                {
                    for (int i = 0; i < size; i++)
                        message[i] = (byte)(done * 31 + i);
                    operation.Args.SetBuffer(message, 0, size);
                    operation.Run(socket.SendAsync, "send");
                    for (int got = 0; got < size; got += operation.Args.BytesTransferred)
                    {
                        operation.Args.SetBuffer(echo, got, size - got);
                        operation.Run(socket.ReceiveAsync, "receive");
                        if (operation.Args.BytesTransferred == 0)
                            throw new Exception("message " + done + ": the server ended the stream after " + got + " bytes");
                    }
                    for (int i = 0; i < size; i++)
                    {
                        if (echo[i] != message[i])
                            throw new Exception("message " + done + ": byte " + i + " came back as " + echo[i] + ", sent " + message[i]);
                    }
                }
                socket.Shutdown(SocketShutdown.Send);
                operation.Args.SetBuffer(echo, 0, 1);
                operation.Run(socket.ReceiveAsync, "receive the end of stream");
                if (operation.Args.BytesTransferred != 0)
                    throw new Exception("unexpected data after the last echo");
            }
            catch (Exception e)
            {
                Console.Error.WriteLine("echo client: " + e.Message);
                Console.Error.WriteLine("echo client: stopped after {0} of {1} messages", done, messages);
                return 1;
            }
        }
        Console.WriteLine("echoed {0} messages of {1} bytes ({2} bytes) in {3:F2} s", messages, size, (long)messages * size,
            clock.Elapsed.TotalSeconds);
        return 0;
    }
}
