// Run by SockAsyncTests.exe as a child process.
//   ExitChild.exe open    leaves a listener with a pending accept and a connection with a
//                         pending receive, prints "returning" and returns from Main: the
//                         process must exit at once, the pending operations aborted at exit.
//   ExitChild.exe throw   a Completed handler throws and nothing observes it: the process
//                         must end with the exception reported, as .NET would.
using System;
using System.Net;
using System.Net.Sockets;
using System.Threading;
using SockAsync;
using Socket = SockAsync.Socket;
using SocketAsyncEventArgs = SockAsync.SocketAsyncEventArgs;

internal static class ExitChild
{
    // Starts an operation and waits for it if it went pending.
    private static SocketAsyncEventArgs Finish(Func<SocketAsyncEventArgs, bool> start, SocketAsyncEventArgs e)
    {
        var done = new ManualResetEventSlim();
        e.Completed += (sender, args) => done.Set();
        if (start(e))
            done.Wait();
        return e;
    }

    private static int Main(string[] args)
    {
        bool throwing = args.Length > 0 && args[0] == "throw";
        AppDomain.CurrentDomain.UnhandledException += (sender, e) =>
            Console.WriteLine("UnhandledException raised: " + ((Exception)e.ExceptionObject).Message);

        var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(4);
        var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        var accept = new SocketAsyncEventArgs();
        var accepted = new ManualResetEventSlim();
        accept.Completed += (sender, e) => accepted.Set();
        bool acceptPending = listener.AcceptAsync(accept);
        Finish(client.ConnectAsync, new SocketAsyncEventArgs { RemoteEndPoint = listener.LocalEndPoint });
        if (acceptPending)
            accepted.Wait();
        Socket server = accept.AcceptSocket;

        var receive = new SocketAsyncEventArgs();
        receive.SetBuffer(new byte[16], 0, 16);
        if (throwing)
        {
            receive.Completed += (sender, e) => { throw new ApplicationException("thrown by a Completed handler"); };
            if (!client.ReceiveAsync(receive))
                return 2;
            var send = new SocketAsyncEventArgs();
            send.SetBuffer(new byte[] { 1 }, 0, 1);
            Finish(server.SendAsync, send);
            // The unhandled exception ends the process; nothing here does.
            Thread.Sleep(Timeout.Infinite);
        }

        receive.Completed += (sender, e) => Console.WriteLine("receive completed: " + e.SocketError);
        var secondAccept = new SocketAsyncEventArgs();
        secondAccept.Completed += (sender, e) => Console.WriteLine("accept completed: " + e.SocketError);
        if (!client.ReceiveAsync(receive) || !listener.AcceptAsync(secondAccept))
            return 2;
        Console.WriteLine("returning");
        return 0;
    }
}
