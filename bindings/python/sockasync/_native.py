"""Loads libsockasync and declares every exported function's argtypes and restype.

The declarations are a table, so tests/test_declarations.py can check it against the
prototypes in include/sockasync.h: a binding whose argtypes drifted from the header would
pass wrong-width values silently (ctypes cannot know), which is why no function is called
undeclared.
"""

import ctypes
import os
from pathlib import Path

ENV_OVERRIDE = "SOCKASYNC_LIB"
SONAMES = ("libsockasync.so.0", "libsockasync.so")


class Sock(ctypes.Structure):
    """Opaque `sock`: only ever handled through a pointer."""


class SockArgs(ctypes.Structure):
    """Opaque `sock_args`."""


class SockCq(ctypes.Structure):
    """Opaque `sock_cq`."""


class SockBuf(ctypes.Structure):
    """`sock_buf`: one entry of a buffer list."""

    _fields_ = [("data", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class SockSendPacket(ctypes.Structure):
    """`sock_send_packet`: one element of a send-packets list (`kind`: a SendPacketKind)."""

    _fields_ = [
        ("kind", ctypes.c_int32),
        ("buffer", ctypes.c_void_p),
        ("path", ctypes.c_char_p),
        ("fd", ctypes.c_ssize_t),
        ("offset", ctypes.c_int64),
        ("count", ctypes.c_size_t),
    ]


SOCK_P = ctypes.POINTER(Sock)
ARGS_P = ctypes.POINTER(SockArgs)
CQ_P = ctypes.POINTER(SockCq)

# void (*sock_completed_fn)(sock *socket, sock_args *args, void *user_token)
COMPLETED_FN = ctypes.CFUNCTYPE(None, SOCK_P, ARGS_P, ctypes.c_void_p)

_bool = ctypes.c_bool
_i32 = ctypes.c_int32
_size = ctypes.c_size_t
_ptrdiff = ctypes.c_ssize_t
_str = ctypes.c_char_p
_out_text = ctypes.POINTER(ctypes.c_char)

# name: (restype, argtypes), in the header's order.
SIGNATURES = {
    "sock_args_new": (ARGS_P, [COMPLETED_FN, ctypes.c_void_p]),
    "sock_args_new_queued": (ARGS_P, [CQ_P, ctypes.c_void_p]),
    "sock_args_free": (None, [ARGS_P]),
    "sock_args_set_buffer": (_bool, [ARGS_P, ctypes.c_void_p, _size]),
    "sock_args_set_range": (_bool, [ARGS_P, _size, _size]),
    "sock_args_set_buffer_list": (_bool, [ARGS_P, ctypes.POINTER(SockBuf), _size]),
    "sock_args_set_send_packets": (_bool, [ARGS_P, ctypes.POINTER(SockSendPacket), _size]),
    "sock_args_set_remote_endpoint": (_bool, [ARGS_P, _str]),
    "sock_args_set_flags": (_bool, [ARGS_P, _i32]),
    "sock_args_flags": (_i32, [ARGS_P]),
    "sock_args_remote_endpoint": (_size, [ARGS_P, _out_text, _size]),
    "sock_args_set_user_token": (None, [ARGS_P, ctypes.c_void_p]),
    "sock_args_user_token": (ctypes.c_void_p, [ARGS_P]),
    "sock_args_bytes_transferred": (_size, [ARGS_P]),
    "sock_args_socket_error": (_i32, [ARGS_P]),
    "sock_args_last_operation": (_i32, [ARGS_P]),
    "sock_args_offset": (_size, [ARGS_P]),
    "sock_args_count": (_size, [ARGS_P]),
    "sock_args_accept_socket": (SOCK_P, [ARGS_P]),
    "sock_cq_new": (CQ_P, []),
    "sock_cq_free": (None, [CQ_P]),
    "sock_cq_wait": (_size, [CQ_P, ctypes.POINTER(ARGS_P), _size, _i32]),
    "sock_cq_fd": (_ptrdiff, [CQ_P]),
    "sock_runtime_configure": (_bool, [ctypes.c_uint32, _i32]),
    "sock_runtime_shutdown": (None, []),
    "sock_runtime_set_backend": (_bool, [_i32]),
    "sock_runtime_backend": (_i32, []),
    "sock_runtime_set_busy_poll": (_bool, [ctypes.c_uint32]),
    "sock_runtime_busy_poll": (ctypes.c_uint32, []),
    "sock_create": (SOCK_P, [_i32, _i32, _i32]),
    "sock_from_fd": (SOCK_P, [_ptrdiff, _bool]),
    "sock_fd": (_ptrdiff, [SOCK_P]),
    "sock_bind": (_bool, [SOCK_P, _str]),
    "sock_listen": (_bool, [SOCK_P, _i32]),
    "sock_local_endpoint": (_size, [SOCK_P, _out_text, _size]),
    "sock_remote_endpoint": (_size, [SOCK_P, _out_text, _size]),
    "sock_set_option": (_bool, [SOCK_P, _i32, ctypes.c_int64]),
    "sock_get_option": (_bool, [SOCK_P, _i32, ctypes.POINTER(ctypes.c_int64)]),
    "sock_shutdown": (_bool, [SOCK_P, _i32]),
    "sock_close": (None, [SOCK_P]),
    "sock_free": (None, [SOCK_P]),
    "sock_accept_async": (_bool, [SOCK_P, ARGS_P]),
    "sock_connect_async": (_bool, [SOCK_P, ARGS_P]),
    "sock_send_async": (_bool, [SOCK_P, ARGS_P]),
    "sock_receive_async": (_bool, [SOCK_P, ARGS_P]),
    "sock_send_to_async": (_bool, [SOCK_P, ARGS_P]),
    "sock_receive_from_async": (_bool, [SOCK_P, ARGS_P]),
    "sock_disconnect_async": (_bool, [SOCK_P, ARGS_P]),
    "sock_send_packets_async": (_bool, [SOCK_P, ARGS_P]),
    "sock_last_status": (_i32, []),
    "sock_last_socket_error": (_i32, []),
    "sock_last_error_message": (_str, []),
    "sock_error_name": (_str, [_i32]),
    "sock_status_name": (_str, [_i32]),
    "sock_version": (_str, []),
}


def _build_tree_candidates():
    # bindings/python/sockasync/_native.py: the repository root is three levels up. An
    # installed copy has no build tree above it; the candidate then fails to load, harmlessly.
    parents = Path(__file__).resolve().parents
    if len(parents) < 4:
        return []
    return [parents[3] / "target" / "release" / "libsockasync.so"]


def candidates():
    """Where the library is looked for, in order: the override, the sonames, the build tree."""
    override = os.environ.get(ENV_OVERRIDE)
    if override:
        # An override that does not load is an error, not a reason to load something else.
        return [override]
    return [*SONAMES, *(str(p) for p in _build_tree_candidates())]


def load():
    tried = []
    for name in candidates():
        try:
            # CDLL, never PyDLL: the GIL must be released while a call waits, or a callback
            # on a reactor thread that needs the GIL would deadlock against it.
            lib = ctypes.CDLL(name)
        except OSError as e:
            tried.append(f"{name}: {e}")
            continue
        declare(lib)
        return lib, name
    raise ImportError(
        "sockasync: libsockasync could not be loaded; set "
        f"{ENV_OVERRIDE}=/path/to/libsockasync.so or build it with "
        "`cargo build --release`. Tried:\n  " + "\n  ".join(tried)
    )


def declare(lib):
    for name, (restype, argtypes) in SIGNATURES.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes


lib, path = load()
