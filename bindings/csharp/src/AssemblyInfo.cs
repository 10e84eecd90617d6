using System.Reflection;
using System.Runtime.CompilerServices;

[assembly: AssemblyTitle("SockAsync")]
[assembly: AssemblyDescription(".NET's SocketAsyncEventArgs model over the sockasync C library")]
[assembly: AssemblyVersion("0.1.0.0")]
// The tests read the GCHandle count (SocketAsyncEventArgs.HeldHandles).
[assembly: InternalsVisibleTo("SockAsyncTests")]
