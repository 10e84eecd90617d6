"""The header's enums with .NET's names and numbers (tests check them against the header)."""

import enum


class Status(enum.IntEnum):
    """`sock_status`: why a call was rejected (OK: it was accepted)."""

    OK = 0
    NULL_ARGUMENT = 1
    INVALID_ARGUMENT = 2
    IN_PROGRESS = 3
    DISPOSED = 4
    INVALID_OPERATION = 5
    NOT_SUPPORTED = 6
    SOCKET_ERROR = 7
    OUT_OF_MEMORY = 8
    INTERNAL = 9


class SocketError(enum.IntEnum):
    """.NET's `SocketError`: the result of a completed operation."""

    SUCCESS = 0
    SOCKET_ERROR = -1
    INTERRUPTED = 10004
    ACCESS_DENIED = 10013
    FAULT = 10014
    INVALID_ARGUMENT = 10022
    TOO_MANY_OPEN_SOCKETS = 10024
    WOULD_BLOCK = 10035
    IN_PROGRESS = 10036
    ALREADY_IN_PROGRESS = 10037
    NOT_SOCKET = 10038
    DESTINATION_ADDRESS_REQUIRED = 10039
    MESSAGE_SIZE = 10040
    PROTOCOL_TYPE = 10041
    PROTOCOL_OPTION = 10042
    PROTOCOL_NOT_SUPPORTED = 10043
    SOCKET_NOT_SUPPORTED = 10044
    OPERATION_NOT_SUPPORTED = 10045
    PROTOCOL_FAMILY_NOT_SUPPORTED = 10046
    ADDRESS_FAMILY_NOT_SUPPORTED = 10047
    ADDRESS_ALREADY_IN_USE = 10048
    ADDRESS_NOT_AVAILABLE = 10049
    NETWORK_DOWN = 10050
    NETWORK_UNREACHABLE = 10051
    NETWORK_RESET = 10052
    CONNECTION_ABORTED = 10053
    CONNECTION_RESET = 10054
    NO_BUFFER_SPACE_AVAILABLE = 10055
    IS_CONNECTED = 10056
    NOT_CONNECTED = 10057
    SHUTDOWN = 10058
    TIMED_OUT = 10060
    CONNECTION_REFUSED = 10061
    HOST_DOWN = 10064
    HOST_UNREACHABLE = 10065
    PROCESS_LIMIT = 10067
    SYSTEM_NOT_READY = 10091
    VERSION_NOT_SUPPORTED = 10092
    NOT_INITIALIZED = 10093
    DISCONNECTING = 10101
    TYPE_NOT_FOUND = 10109
    HOST_NOT_FOUND = 11001
    TRY_AGAIN = 11002
    NO_RECOVERY = 11003
    NO_DATA = 11004
    IO_PENDING = 997
    OPERATION_ABORTED = 995


class AsyncOperation(enum.IntEnum):
    """.NET's `SocketAsyncOperation`: what an args object last started."""

    NONE = 0
    ACCEPT = 1
    CONNECT = 2
    DISCONNECT = 3
    RECEIVE = 4
    RECEIVE_FROM = 5
    RECEIVE_MESSAGE_FROM = 6
    SEND = 7
    SEND_PACKETS = 8
    SEND_TO = 9


class SocketFlags(enum.IntFlag):
    """.NET's `SocketFlags`."""

    NONE = 0
    OUT_OF_BAND = 1
    PEEK = 2
    DONT_ROUTE = 4
    TRUNCATED = 256
    CONTROL_DATA_TRUNCATED = 512


class AddressFamily(enum.IntEnum):
    UNIX = 1
    INTER_NETWORK = 2
    INTER_NETWORK_V6 = 23


class SocketType(enum.IntEnum):
    STREAM = 1
    DGRAM = 2


class ProtocolType(enum.IntEnum):
    UNSPECIFIED = 0
    TCP = 6
    UDP = 17


class Option(enum.IntEnum):
    """`sock_option`, for `Socket.set_option` and `Socket.get_option`."""

    NO_DELAY = 1
    REUSE_ADDRESS = 2
    KEEP_ALIVE = 3
    SEND_BUFFER_SIZE = 4
    RECEIVE_BUFFER_SIZE = 5
    LINGER = 6
    BATCH_SENDS = 7


class ShutdownHow(enum.IntEnum):
    RECEIVE = 0
    SEND = 1
    BOTH = 2


class Dispatch(enum.IntEnum):
    INLINE = 0
    POOL = 1


class Backend(enum.IntEnum):
    """`sock_backend`: how the reactors wait (io_uring falls back to epoll where refused)."""

    EPOLL = 0
    IO_URING = 1


class SendPacketKind(enum.IntEnum):
    """`sock_send_packet_kind`: what a send-packets element names."""

    MEMORY = 0
    PATH = 1
    FD = 2
