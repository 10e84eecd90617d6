"""Where the library is loaded from: $SOCKASYNC_LIB, then the sonames, then the build tree."""

import os
import subprocess
import sys

from conftest import PACKAGE_ROOT, REPO_ROOT, WAIT

from sockasync import _native


def python(code, **env):
    environment = {k: v for k, v in os.environ.items() if k != _native.ENV_OVERRIDE}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(PACKAGE_ROOT)!r}); {code}"],
        capture_output=True, text=True, timeout=WAIT, env=environment,
    )


def test_without_the_override_the_sonames_come_before_the_build_tree(monkeypatch):
    monkeypatch.delenv(_native.ENV_OVERRIDE, raising=False)
    assert _native.candidates() == [
        "libsockasync.so.0",
        "libsockasync.so",
        str(REPO_ROOT / "target" / "release" / "libsockasync.so"),
    ]


def test_the_override_is_used_alone(monkeypatch):
    monkeypatch.setenv(_native.ENV_OVERRIDE, "/somewhere/libsockasync.so")
    assert _native.candidates() == ["/somewhere/libsockasync.so"]


def test_an_override_that_does_not_load_fails_the_import_and_says_what_was_tried():
    result = python("import sockasync", SOCKASYNC_LIB="/nonexistent/libsockasync.so")
    assert result.returncode != 0
    assert "ImportError" in result.stderr
    assert "/nonexistent/libsockasync.so" in result.stderr
    assert "SOCKASYNC_LIB" in result.stderr


def test_the_override_loads_that_file():
    built = REPO_ROOT / "target" / "release" / "libsockasync.so"
    result = python("import sockasync; print(sockasync.library_path, sockasync.version())",
                    SOCKASYNC_LIB=str(built))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == str(built)
