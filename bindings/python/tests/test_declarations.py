"""The binding cannot drift from include/sockasync.h: every prototype, the callback type,
sock_buf, sock_send_packet, every enum and the version are compared with what the package
declares."""

import ctypes
import re

import pytest
from conftest import REPO_ROOT

import sockasync
from sockasync import _native, enums

HEADER = (REPO_ROOT / "include" / "sockasync.h").read_text()

# C spelling -> the ctypes type the binding must use for it.
C_TYPES = {
    "void": None,
    "bool": ctypes.c_bool,
    "int32_t": ctypes.c_int32,
    "uint32_t": ctypes.c_uint32,
    "int64_t": ctypes.c_int64,
    "size_t": ctypes.c_size_t,
    "ptrdiff_t": ctypes.c_ssize_t,
    "void*": ctypes.c_void_p,
    "const char*": ctypes.c_char_p,
    "char*": ctypes.POINTER(ctypes.c_char),
    "int64_t*": ctypes.POINTER(ctypes.c_int64),
    "sock*": _native.SOCK_P,
    "const sock*": _native.SOCK_P,
    "sock_args*": _native.ARGS_P,
    "const sock_args*": _native.ARGS_P,
    "sock_args**": ctypes.POINTER(_native.ARGS_P),
    "sock_cq*": _native.CQ_P,
    "const sock_cq*": _native.CQ_P,
    "const sock_buf*": ctypes.POINTER(_native.SockBuf),
    "const void*": ctypes.c_void_p,
    "const sock_send_packet*": ctypes.POINTER(_native.SockSendPacket),
    "sock_completed_fn": _native.COMPLETED_FN,
}


def c_type(declaration):
    """'const char *endpoint' -> 'const char*'; 'sock *' -> 'sock*'."""
    declaration = " ".join(declaration.split())
    match = re.fullmatch(r"(.*?[\w*])\s*(\*+)?\s*(\w+)?", declaration)
    base, stars, _name = match.groups()
    base = base.replace(" *", "*").strip()
    spelled = base + (stars or "")
    if spelled not in C_TYPES and _name is not None:
        # No parameter name: the last word is part of the type ("sock_completed_fn").
        spelled = (base + (stars or "") + " " + _name).strip()
    return spelled


def declarations():
    """The statements between extern "C" { and its closing brace, comments and preprocessor
    lines removed, whitespace folded: one prototype each, however cbindgen wrapped it."""
    text = re.sub(r"/\*.*?\*/", "", HEADER, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    body = text.split('extern "C" {', 1)[1].rsplit("}", 1)[0]
    body = "\n".join(l for l in body.splitlines() if not l.lstrip().startswith("#"))
    return [" ".join(st.split()) for st in body.split(";") if st.strip()]


def prototypes():
    found = {}
    for statement in declarations():
        match = re.fullmatch(r"(.+?)\s*\b(sock_\w+)\((.*)\)", statement)
        assert match, f"not a prototype: {statement!r}"
        restype, name, params = match.groups()
        ret = restype.replace(" *", "*").strip()
        args = [] if params.strip() == "void" else [c_type(p) for p in params.split(",")]
        found[name] = (ret, args)
    return found


PROTOS = prototypes()


def test_the_header_parses_into_the_functions_it_declares():
    statements = declarations()
    assert len(statements) == len(PROTOS) > 40
    # Every function the header mentions as "sock_x(" in code is one of them.
    code = re.sub(r"/\*.*?\*/", "", HEADER, flags=re.S)
    called = set(re.findall(r"\b(sock_\w+)\(", code)) - {"sock_completed_fn"}
    assert called == set(PROTOS)


def test_every_header_function_is_declared_and_nothing_else():
    undeclared = sorted(set(PROTOS) - set(_native.SIGNATURES))
    unknown = sorted(set(_native.SIGNATURES) - set(PROTOS))
    assert not undeclared, f"in the header, missing from sockasync/_native.py SIGNATURES: {undeclared}"
    assert not unknown, f"in SIGNATURES, not in the header: {unknown}"


@pytest.mark.parametrize("name", sorted(PROTOS))
def test_declaration_matches_the_prototype(name):
    c_ret, c_args = PROTOS[name]
    for spelled in [c_ret, *c_args]:
        assert spelled in C_TYPES, f"{name}: no ctypes mapping for C type {spelled!r}"
    fn = getattr(_native.lib, name)
    assert fn.restype is C_TYPES[c_ret], f"{name} returns {c_ret}"
    assert len(fn.argtypes) == len(c_args), f"{name} takes {len(c_args)} arguments"
    for i, (declared, spelled) in enumerate(zip(fn.argtypes, c_args)):
        assert declared is C_TYPES[spelled], f"{name} argument {i} is {spelled}"


def test_the_callback_type_matches_sock_completed_fn():
    match = re.search(r"typedef (\w+) \(\*sock_completed_fn\)\((.*)\);", HEADER)
    ret, params = match.groups()
    assert ret == "void" and _native.COMPLETED_FN._restype_ is None
    assert [C_TYPES[c_type(p)] for p in params.split(",")] == list(_native.COMPLETED_FN._argtypes_)


@pytest.mark.parametrize(
    "c_name, structure",
    [("sock_buf", _native.SockBuf), ("sock_send_packet", _native.SockSendPacket)],
)
def test_struct_matches(c_name, structure):
    body = re.search(r"typedef struct \{([^{}]*?)\} %s;" % c_name, HEADER, re.S).group(1)
    body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
    fields = [c_type(f) for f in body.split(";") if f.strip()]
    assert [C_TYPES[f] for f in fields] == [t for _, t in structure._fields_]


def header_enum(c_name):
    body = re.search(r"enum %s\n.*?\{(.*?)\};" % c_name, HEADER, re.S).group(1)
    body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
    prefix = c_name.upper() + "_"
    return {
        name[len(prefix):]: int(value)
        for name, value in re.findall(r"(\w+) = (-?\d+)", body)
    }


ENUMS = [
    ("sock_status", enums.Status),
    ("sock_socket_error", enums.SocketError),
    ("sock_async_operation", enums.AsyncOperation),
    ("sock_socket_flags", enums.SocketFlags),
    ("sock_address_family", enums.AddressFamily),
    ("sock_socket_type", enums.SocketType),
    ("sock_protocol_type", enums.ProtocolType),
    ("sock_option", enums.Option),
    ("sock_shutdown_how", enums.ShutdownHow),
    ("sock_dispatch", enums.Dispatch),
    ("sock_backend", enums.Backend),
    ("sock_send_packet_kind", enums.SendPacketKind),
]


@pytest.mark.parametrize("c_name, python_enum", ENUMS)
def test_enum_matches_the_header(c_name, python_enum):
    in_header = header_enum(c_name)
    assert in_header, c_name
    assert {name: int(m) for name, m in python_enum.__members__.items()} == in_header


def test_every_header_enum_has_a_python_twin():
    declared = set(re.findall(r"^enum (sock_\w+)$", HEADER, re.M))
    covered = {c_name for c_name, _ in ENUMS}
    assert declared - covered == set(), "header enums without a twin in sockasync/enums.py"
    assert covered - declared == set()


def test_library_version_is_the_headers():
    parts = [re.search(r"#define SOCKASYNC_VERSION_%s (\d+)" % p, HEADER).group(1)
             for p in ("MAJOR", "MINOR", "PATCH")]
    assert sockasync.version() == ".".join(parts)


def test_names_come_from_the_library():
    for code in enums.SocketError:
        assert sockasync.error_name(code).lower() == code.name.replace("_", "").lower()
    for status in enums.Status:
        assert sockasync.status_name(status).lower() == status.name.replace("_", "").lower()


def test_the_package_version_is_the_librarys():
    from conftest import PACKAGE_ROOT

    pyproject = (PACKAGE_ROOT / "pyproject.toml").read_text()
    assert re.search(r'^version = "([^"]+)"', pyproject, re.M).group(1) == sockasync.__version__
    assert sockasync.__version__ == sockasync.version()
