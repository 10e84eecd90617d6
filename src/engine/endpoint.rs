//! Endpoints as text (`"127.0.0.1:8080"`, `"[::1]:0"`) and address families.

use std::fmt;
use std::net::SocketAddr;

use crate::error::{Reject, Status};

/// .NET's `AddressFamily` numbers, as `sock_create` takes them.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressFamily {
    /// Unix domain sockets (not supported yet: rejected as NotSupported).
    Unix = 1,
    /// IPv4.
    InterNetwork = 2,
    /// IPv6.
    InterNetworkV6 = 23,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn from_dotnet(code: i32) -> Result<Family, Reject> {
        match code {
            c if c == AddressFamily::InterNetwork as i32 => Ok(Family::V4),
            c if c == AddressFamily::InterNetworkV6 as i32 => Ok(Family::V6),
            c if c == AddressFamily::Unix as i32 => Err(Reject::new(
                Status::NotSupported,
                "AddressFamily Unix (1) is not supported yet",
            )),
            other => Err(Reject::invalid(format!(
                "unknown address family {other} (InterNetwork=2, InterNetworkV6=23)"
            ))),
        }
    }

    pub fn domain(self) -> i32 {
        match self {
            Family::V4 => libc::AF_INET,
            Family::V6 => libc::AF_INET6,
        }
    }

    pub fn of(addr: &SocketAddr) -> Family {
        match addr {
            SocketAddr::V4(_) => Family::V4,
            SocketAddr::V6(_) => Family::V6,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "InterNetwork",
            Family::V6 => "InterNetworkV6",
        })
    }
}

/// Parses endpoint text: an IPv4 address and port, or a bracketed IPv6 address and port.
/// No name resolution: a host name is rejected.
pub fn parse(text: &[u8]) -> Result<SocketAddr, Reject> {
    let shown = String::from_utf8_lossy(&text[..text.len().min(64)]).into_owned();
    let text = std::str::from_utf8(text)
        .map_err(|_| Reject::invalid(format!("endpoint {shown:?} is not valid UTF-8")))?;
    text.parse::<SocketAddr>().map_err(|_| {
        Reject::invalid(format!(
            "endpoint {shown:?} does not parse: expected \"127.0.0.1:8080\" or \"[::1]:8080\""
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_families_and_rejects_the_rest() {
        assert_eq!(
            parse(b"127.0.0.1:8080").unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(parse(b"[::1]:0").unwrap().to_string(), "[::1]:0");
        for bad in [
            &b"127.0.0.1"[..],
            b"127.0.0.1:65536",
            b"localhost:80",
            b"[::1:80",
            b"::1]:80",
            b"",
            b"\xff\xfe:1",
            b"127.0.0.1:-1",
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err.status, Status::InvalidArgument, "{bad:?}");
        }
        let long = vec![b'1'; 10_000];
        assert_eq!(parse(&long).unwrap_err().status, Status::InvalidArgument);
    }
}
