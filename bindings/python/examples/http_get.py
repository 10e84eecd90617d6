"""Fetches a URL with a hand-written HTTP/1.0 GET over sockasync and asyncio.

    python3 examples/http_get.py http://127.0.0.1:8000/file.bin > file.bin

Writes the body to stdout and the status line and headers to stderr; exits 1 unless the
status is 200 and the body has the length the server announced. Only http://, only IP
addresses (the library does no name resolution).
"""

import asyncio
import sys
import urllib.parse
from pathlib import Path

try:
    import sockasync
except ImportError:  # run from a checkout, without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import sockasync


async def http_get(host, port, path):
    """Returns (status code, headers dict, body bytes)."""
    family = (
        sockasync.AddressFamily.INTER_NETWORK_V6 if ":" in host else sockasync.AddressFamily.INTER_NETWORK
    )
    with sockasync.Socket(family) as s:
        await s.connect((host, port))
        request = f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
        await s.send(request.encode("ascii"))
        chunks = []
        while True:
            chunk = await s.receive(65536)
            if not chunk:  # HTTP/1.0: the server closes after the body
                break
            chunks.append(chunk)
    response = b"".join(chunks)
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("iso-8859-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def main(url):
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None:
        sys.exit(f"usage: {sys.argv[0]} http://IP:PORT/PATH")
    status, headers, body = asyncio.run(
        http_get(parts.hostname, parts.port or 80, parts.path or "/")
    )
    for name, value in headers.items():
        print(f"{name}: {value}", file=sys.stderr)
    sys.stdout.buffer.write(body)
    sys.stdout.buffer.flush()
    announced = headers.get("content-length")
    if status != 200 or (announced is not None and int(announced) != len(body)):
        print(f"status {status}, {len(body)} body bytes", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} http://IP:PORT/PATH")
    sys.exit(main(sys.argv[1]))
