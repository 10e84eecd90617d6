"""The examples run. http_get.py against a server this project did not write:
`python3 -m http.server` serves a file from a temporary directory, the example fetches it
with a hand-written GET, and the bytes must be the file's. hello.py is the README's."""

import os
import re
import subprocess
import sys

import pytest
from conftest import PACKAGE_ROOT, WAIT

EXAMPLE = PACKAGE_ROOT / "examples" / "http_get.py"


@pytest.fixture
def http_server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    server = subprocess.Popen(
        [sys.executable, "-u", "-m", "http.server", "--bind", "127.0.0.1",
         "--directory", str(served), "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        # "Serving HTTP on 127.0.0.1 port 41234 (http://127.0.0.1:41234/) ..."
        line = server.stdout.readline()
        match = re.search(r"port (\d+)", line)
        assert match, f"http.server said {line!r}"
        yield served, int(match.group(1))
    finally:
        server.terminate()
        server.wait(WAIT)


def fetch(url):
    return subprocess.run(
        [sys.executable, str(EXAMPLE), url], capture_output=True, timeout=WAIT * 3
    )


@pytest.mark.parametrize("size", [0, 1, 200_000, 3_000_000])
def test_the_example_fetches_a_file_byte_for_byte(http_server, size):
    served, port = http_server
    content = os.urandom(size)
    (served / "file.bin").write_bytes(content)
    result = fetch(f"http://127.0.0.1:{port}/file.bin")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == content
    assert f"content-length: {size}".encode() in result.stderr


def test_the_example_reports_a_missing_file(http_server):
    _served, port = http_server
    result = fetch(f"http://127.0.0.1:{port}/not-there")
    assert result.returncode == 1
    assert b"status 404" in result.stderr


def test_the_readme_example_runs():
    result = subprocess.run(
        [sys.executable, str(PACKAGE_ROOT / "examples" / "hello.py")],
        capture_output=True, text=True, timeout=WAIT * 3,
        env={**os.environ, "PYTHONPATH": str(PACKAGE_ROOT)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "b'hello'\n"
