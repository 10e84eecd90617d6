// Endpoints cross the boundary as text: "127.0.0.1:80", "[::1]:80", "unix:/path", "unix:@name".
using System;
using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace SockAsync
{
    // A Unix domain socket endpoint: a path, or "@name" for Linux's abstract namespace.
    // Any EndPoint of AddressFamily.Unix works where one is taken (e.g. .NET's
    // UnixDomainSocketEndPoint, whose ToString() is its path); this one exists because
    // Mono has none of its own.
    public sealed class UnixEndPoint : EndPoint
    {
        public UnixEndPoint(string path)
        {
            if (path == null)
                throw new ArgumentNullException("path");
            Path = path;
        }

        public string Path { get; private set; }

        public override AddressFamily AddressFamily
        {
            get { return AddressFamily.Unix; }
        }

        public override string ToString()
        {
            return Path;
        }

        public override bool Equals(object obj)
        {
            var other = obj as UnixEndPoint;
            return other != null && other.Path == Path;
        }

        public override int GetHashCode()
        {
            return Path.GetHashCode();
        }
    }

    internal static class Endpoints
    {
        // Enough for any endpoint text the library writes (48 bytes for IP, 114 for Unix).
        internal const int TextCapacity = 128;

        internal static string ToText(EndPoint endpoint, string paramName)
        {
            var ip = endpoint as IPEndPoint;
            if (ip != null)
            {
                string port = ip.Port.ToString(CultureInfo.InvariantCulture);
                return ip.AddressFamily == AddressFamily.InterNetworkV6 ? "[" + ip.Address + "]:" + port : ip.Address + ":" + port;
            }
            if (endpoint != null && endpoint.AddressFamily == AddressFamily.Unix)
                return "unix:" + endpoint;
            throw new ArgumentException("Only IP and Unix domain endpoints are supported.", paramName);
        }

        internal static EndPoint Parse(string text)
        {
            if (text.StartsWith("unix:", StringComparison.Ordinal))
                return new UnixEndPoint(text.Substring(5));
            int colon = text.LastIndexOf(':');
            string host = text.Substring(0, colon).Trim('[', ']');
            int port = int.Parse(text.Substring(colon + 1), CultureInfo.InvariantCulture);
            return new IPEndPoint(IPAddress.Parse(host), port);
        }
    }
}
