//! The numbers that cross the C boundary: .NET's `SocketError` and `SocketAsyncOperation`
//! values, and the status codes that say why a call was rejected.
//!
//! The values are .NET's own (see `shared/reference/dotnet-socket-errors.md`), so .NET and
//! Windows people read them without a table. The errno mapping is .NET's
//! `SocketErrorPal.Unix.cs`: anything it does not list becomes `SocketError` (-1).

use std::borrow::Cow;
use std::ffi::CStr;

/// .NET's `System.Net.Sockets.SocketError`: the result of a completed operation, read with
/// `sock_args_socket_error()`, and the code behind a `SOCK_STATUS_SOCKET_ERROR` rejection,
/// read with `sock_last_socket_error()`.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketError {
    Success = 0,
    SocketError = -1,
    Interrupted = 10004,
    AccessDenied = 10013,
    Fault = 10014,
    InvalidArgument = 10022,
    TooManyOpenSockets = 10024,
    WouldBlock = 10035,
    InProgress = 10036,
    AlreadyInProgress = 10037,
    NotSocket = 10038,
    DestinationAddressRequired = 10039,
    MessageSize = 10040,
    ProtocolType = 10041,
    ProtocolOption = 10042,
    ProtocolNotSupported = 10043,
    SocketNotSupported = 10044,
    OperationNotSupported = 10045,
    ProtocolFamilyNotSupported = 10046,
    AddressFamilyNotSupported = 10047,
    AddressAlreadyInUse = 10048,
    AddressNotAvailable = 10049,
    NetworkDown = 10050,
    NetworkUnreachable = 10051,
    NetworkReset = 10052,
    ConnectionAborted = 10053,
    ConnectionReset = 10054,
    NoBufferSpaceAvailable = 10055,
    IsConnected = 10056,
    NotConnected = 10057,
    Shutdown = 10058,
    TimedOut = 10060,
    ConnectionRefused = 10061,
    HostDown = 10064,
    HostUnreachable = 10065,
    ProcessLimit = 10067,
    SystemNotReady = 10091,
    VersionNotSupported = 10092,
    NotInitialized = 10093,
    Disconnecting = 10101,
    TypeNotFound = 10109,
    HostNotFound = 11001,
    TryAgain = 11002,
    NoRecovery = 11003,
    NoData = 11004,
    IOPending = 997,
    OperationAborted = 995,
}

impl SocketError {
    /// Every member, for name look-ups and tests.
    pub const ALL: [SocketError; 47] = {
        use self::SocketError::*;
        [
            Success,
            Self::SocketError,
            Interrupted,
            AccessDenied,
            Fault,
            InvalidArgument,
            TooManyOpenSockets,
            WouldBlock,
            InProgress,
            AlreadyInProgress,
            NotSocket,
            DestinationAddressRequired,
            MessageSize,
            ProtocolType,
            ProtocolOption,
            ProtocolNotSupported,
            SocketNotSupported,
            OperationNotSupported,
            ProtocolFamilyNotSupported,
            AddressFamilyNotSupported,
            AddressAlreadyInUse,
            AddressNotAvailable,
            NetworkDown,
            NetworkUnreachable,
            NetworkReset,
            ConnectionAborted,
            ConnectionReset,
            NoBufferSpaceAvailable,
            IsConnected,
            NotConnected,
            Shutdown,
            TimedOut,
            ConnectionRefused,
            HostDown,
            HostUnreachable,
            ProcessLimit,
            SystemNotReady,
            VersionNotSupported,
            NotInitialized,
            Disconnecting,
            TypeNotFound,
            HostNotFound,
            TryAgain,
            NoRecovery,
            NoData,
            IOPending,
            OperationAborted,
        ]
    };

    pub fn from_code(code: i32) -> Option<SocketError> {
        Self::ALL.into_iter().find(|e| *e as i32 == code)
    }

    /// .NET's errno mapping (SocketErrorPal.Unix.cs); unknown errno values map to -1.
    pub fn from_errno(errno: i32) -> SocketError {
        use self::SocketError::*;
        match errno {
            0 => Success,
            libc::EPERM | libc::EACCES => AccessDenied,
            libc::ENOENT | libc::EADDRNOTAVAIL => AddressNotAvailable,
            libc::EINTR => Interrupted,
            libc::ENXIO => HostNotFound,
            libc::EBADF | libc::ECANCELED => OperationAborted,
            libc::EAGAIN => WouldBlock,
            libc::EFAULT => Fault,
            libc::EINVAL => InvalidArgument,
            libc::ENFILE | libc::EMFILE => TooManyOpenSockets,
            libc::EPIPE => Shutdown,
            libc::ENODATA => NoData,
            libc::ENOTSOCK => NotSocket,
            libc::EDESTADDRREQ => DestinationAddressRequired,
            libc::EMSGSIZE => MessageSize,
            libc::EPROTOTYPE => ProtocolType,
            libc::ENOPROTOOPT => ProtocolOption,
            libc::EPROTONOSUPPORT => ProtocolNotSupported,
            libc::ESOCKTNOSUPPORT => SocketNotSupported,
            libc::EOPNOTSUPP => OperationNotSupported,
            libc::EPFNOSUPPORT => ProtocolFamilyNotSupported,
            libc::EAFNOSUPPORT => AddressFamilyNotSupported,
            libc::EADDRINUSE => AddressAlreadyInUse,
            libc::ENETDOWN => NetworkDown,
            libc::ENETUNREACH => NetworkUnreachable,
            libc::ENETRESET => NetworkReset,
            libc::ECONNABORTED => ConnectionAborted,
            libc::ECONNRESET => ConnectionReset,
            libc::ENOBUFS => NoBufferSpaceAvailable,
            libc::EISCONN => IsConnected,
            libc::ENOTCONN => NotConnected,
            libc::ESHUTDOWN => Disconnecting,
            libc::ETIMEDOUT => TimedOut,
            libc::ECONNREFUSED => ConnectionRefused,
            libc::EHOSTDOWN => HostDown,
            libc::EHOSTUNREACH => HostUnreachable,
            libc::EALREADY => AlreadyInProgress,
            libc::EINPROGRESS => InProgress,
            _ => Self::SocketError,
        }
    }

    pub fn from_io(err: &std::io::Error) -> SocketError {
        err.raw_os_error()
            .map_or(SocketError::SocketError, SocketError::from_errno)
    }

    pub fn name(self) -> &'static CStr {
        use self::SocketError::*;
        match self {
            Success => c"Success",
            Self::SocketError => c"SocketError",
            Interrupted => c"Interrupted",
            AccessDenied => c"AccessDenied",
            Fault => c"Fault",
            InvalidArgument => c"InvalidArgument",
            TooManyOpenSockets => c"TooManyOpenSockets",
            WouldBlock => c"WouldBlock",
            InProgress => c"InProgress",
            AlreadyInProgress => c"AlreadyInProgress",
            NotSocket => c"NotSocket",
            DestinationAddressRequired => c"DestinationAddressRequired",
            MessageSize => c"MessageSize",
            ProtocolType => c"ProtocolType",
            ProtocolOption => c"ProtocolOption",
            ProtocolNotSupported => c"ProtocolNotSupported",
            SocketNotSupported => c"SocketNotSupported",
            OperationNotSupported => c"OperationNotSupported",
            ProtocolFamilyNotSupported => c"ProtocolFamilyNotSupported",
            AddressFamilyNotSupported => c"AddressFamilyNotSupported",
            AddressAlreadyInUse => c"AddressAlreadyInUse",
            AddressNotAvailable => c"AddressNotAvailable",
            NetworkDown => c"NetworkDown",
            NetworkUnreachable => c"NetworkUnreachable",
            NetworkReset => c"NetworkReset",
            ConnectionAborted => c"ConnectionAborted",
            ConnectionReset => c"ConnectionReset",
            NoBufferSpaceAvailable => c"NoBufferSpaceAvailable",
            IsConnected => c"IsConnected",
            NotConnected => c"NotConnected",
            Shutdown => c"Shutdown",
            TimedOut => c"TimedOut",
            ConnectionRefused => c"ConnectionRefused",
            HostDown => c"HostDown",
            HostUnreachable => c"HostUnreachable",
            ProcessLimit => c"ProcessLimit",
            SystemNotReady => c"SystemNotReady",
            VersionNotSupported => c"VersionNotSupported",
            NotInitialized => c"NotInitialized",
            Disconnecting => c"Disconnecting",
            TypeNotFound => c"TypeNotFound",
            HostNotFound => c"HostNotFound",
            TryAgain => c"TryAgain",
            NoRecovery => c"NoRecovery",
            NoData => c"NoData",
            IOPending => c"IOPending",
            OperationAborted => c"OperationAborted",
        }
    }
}

/// .NET's `SocketAsyncOperation`: which operation an args object last started, read with
/// `sock_args_last_operation()`.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsyncOperation {
    None = 0,
    Accept = 1,
    Connect = 2,
    Disconnect = 3,
    Receive = 4,
    ReceiveFrom = 5,
    ReceiveMessageFrom = 6,
    Send = 7,
    SendPackets = 8,
    SendTo = 9,
}

/// .NET's `SocketFlags`, as `sock_args_set_flags` takes them and `sock_args_flags` reports
/// them (bits; combine with `|`).
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketFlags {
    None = 0,
    /// Urgent (out-of-band) data: MSG_OOB.
    OutOfBand = 1,
    /// Receive without taking the data off the socket: MSG_PEEK.
    Peek = 2,
    /// Bypass routing: MSG_DONTROUTE.
    DontRoute = 4,
    /// Reported by a receive: the datagram was larger than the buffer, and the rest is lost.
    Truncated = 0x100,
    /// Reported by a receive: control data was cut short.
    ControlDataTruncated = 0x200,
}

impl SocketFlags {
    /// Every bit `sock_args_set_flags` accepts.
    pub const ALL: i32 = SocketFlags::OutOfBand as i32
        | SocketFlags::Peek as i32
        | SocketFlags::DontRoute as i32
        | SocketFlags::Truncated as i32
        | SocketFlags::ControlDataTruncated as i32;

    /// The MSG_* bits an operation passes the kernel. Truncated and ControlDataTruncated only
    /// ever report, so as input they are ignored: args that just reported them can be used
    /// again as they are.
    pub fn to_system(flags: i32) -> i32 {
        let mut system = 0;
        if flags & SocketFlags::OutOfBand as i32 != 0 {
            system |= libc::MSG_OOB;
        }
        if flags & SocketFlags::Peek as i32 != 0 {
            system |= libc::MSG_PEEK;
        }
        if flags & SocketFlags::DontRoute as i32 != 0 {
            system |= libc::MSG_DONTROUTE;
        }
        system
    }

    /// What a receive reports, from the kernel's msg_flags.
    pub fn from_received(msg_flags: i32) -> i32 {
        let mut flags = 0;
        if msg_flags & libc::MSG_TRUNC != 0 {
            flags |= SocketFlags::Truncated as i32;
        }
        if msg_flags & libc::MSG_CTRUNC != 0 {
            flags |= SocketFlags::ControlDataTruncated as i32;
        }
        if msg_flags & libc::MSG_OOB != 0 {
            flags |= SocketFlags::OutOfBand as i32;
        }
        flags
    }
}

/// Whether the latest call on this thread was accepted, and if not, why: read with
/// `sock_last_status()`. A rejected call changed nothing (the .NET API throws in these cases).
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The call was accepted.
    Ok = 0,
    /// A required pointer was NULL (.NET: ArgumentNullException).
    NullArgument = 1,
    /// An argument's value is not allowed (.NET: ArgumentException), e.g. endpoint text that
    /// does not parse, a range past the buffer, a buffer and a buffer list both in use.
    InvalidArgument = 2,
    /// The args object is in use by an operation that has not completed yet.
    InProgress = 3,
    /// The socket was closed (.NET: ObjectDisposedException).
    Disposed = 4,
    /// The call does not fit the socket's state (.NET: InvalidOperationException), e.g. accept
    /// on a socket that is not listening.
    InvalidOperation = 5,
    /// Not supported (.NET: NotSupportedException), e.g. an endpoint of the other family.
    NotSupported = 6,
    /// The system refused (.NET: SocketException); `sock_last_socket_error()` gives the code.
    SocketError = 7,
    /// Memory could not be allocated.
    OutOfMemory = 8,
    /// A bug in sockasync was caught at the boundary; the host keeps running.
    Internal = 9,
}

impl Status {
    pub const ALL: [Status; 10] = [
        Status::Ok,
        Status::NullArgument,
        Status::InvalidArgument,
        Status::InProgress,
        Status::Disposed,
        Status::InvalidOperation,
        Status::NotSupported,
        Status::SocketError,
        Status::OutOfMemory,
        Status::Internal,
    ];

    pub fn from_code(code: i32) -> Option<Status> {
        Self::ALL.into_iter().find(|s| *s as i32 == code)
    }

    pub fn name(self) -> &'static CStr {
        match self {
            Status::Ok => c"Ok",
            Status::NullArgument => c"NullArgument",
            Status::InvalidArgument => c"InvalidArgument",
            Status::InProgress => c"InProgress",
            Status::Disposed => c"Disposed",
            Status::InvalidOperation => c"InvalidOperation",
            Status::NotSupported => c"NotSupported",
            Status::SocketError => c"SocketError",
            Status::OutOfMemory => c"OutOfMemory",
            Status::Internal => c"Internal",
        }
    }
}

/// Why a call was rejected: the status, the socket error behind a `Status::SocketError`, and a
/// message for people. Built only on the rejection path; boxed so that every `Result` on
/// the success path stays one word wide.
#[derive(Debug, Clone)]
pub struct Reject(Box<RejectInfo>);

#[derive(Debug, Clone)]
pub struct RejectInfo {
    pub status: Status,
    pub socket_error: SocketError,
    pub message: Cow<'static, str>,
}

impl std::ops::Deref for Reject {
    type Target = RejectInfo;

    fn deref(&self) -> &RejectInfo {
        &self.0
    }
}

impl Reject {
    #[cold]
    pub fn new(status: Status, message: impl Into<Cow<'static, str>>) -> Reject {
        Reject(Box::new(RejectInfo {
            status,
            socket_error: SocketError::Success,
            message: message.into(),
        }))
    }

    /// A synchronous system call failed: .NET throws a SocketException here.
    #[cold]
    pub fn socket(error: SocketError, what: &str) -> Reject {
        Reject(Box::new(RejectInfo {
            status: Status::SocketError,
            socket_error: error,
            message: format!(
                "{what} failed: {} ({})",
                error.name().to_string_lossy(),
                error as i32
            )
            .into(),
        }))
    }

    #[cold]
    pub fn io(err: &std::io::Error, what: &str) -> Reject {
        Reject::socket(SocketError::from_io(err), what)
    }

    #[cold]
    pub fn null(what: &str) -> Reject {
        Reject::new(Status::NullArgument, format!("{what} must not be NULL"))
    }

    #[cold]
    pub fn invalid(message: impl Into<Cow<'static, str>>) -> Reject {
        Reject::new(Status::InvalidArgument, message)
    }

    #[cold]
    pub fn disposed() -> Reject {
        Reject::new(Status::Disposed, "the socket has been closed")
    }

    #[cold]
    pub fn in_progress() -> Reject {
        Reject::new(
            Status::InProgress,
            "the args object is in use by an operation that has not completed",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_socket_error_round_trips_through_its_code_and_has_a_distinct_name() {
        let mut names = std::collections::HashSet::new();
        for e in SocketError::ALL {
            assert_eq!(SocketError::from_code(e as i32), Some(e));
            assert!(names.insert(e.name()), "duplicate name {:?}", e.name());
            assert_eq!(e.name().to_str().unwrap(), format!("{e:?}"));
        }
        assert_eq!(names.len(), 47);
        assert_eq!(SocketError::from_code(12345), None);
    }

    #[test]
    fn errno_mapping_follows_dotnet() {
        assert_eq!(SocketError::from_errno(libc::EPIPE), SocketError::Shutdown);
        assert_eq!(
            SocketError::from_errno(libc::EBADF),
            SocketError::OperationAborted
        );
        assert_eq!(
            SocketError::from_errno(libc::EMFILE),
            SocketError::TooManyOpenSockets
        );
        assert_eq!(
            SocketError::from_errno(libc::ECONNREFUSED),
            SocketError::ConnectionRefused
        );
        assert_eq!(
            SocketError::from_errno(libc::ENOENT),
            SocketError::AddressNotAvailable
        );
        assert_eq!(
            SocketError::from_errno(libc::ESHUTDOWN),
            SocketError::Disconnecting
        );
        assert_eq!(
            SocketError::from_errno(libc::ENOMEM),
            SocketError::SocketError
        );
    }

    #[test]
    fn status_names_match_their_variants() {
        for s in Status::ALL {
            assert_eq!(Status::from_code(s as i32), Some(s));
            assert_eq!(s.name().to_str().unwrap(), format!("{s:?}"));
        }
    }
}
