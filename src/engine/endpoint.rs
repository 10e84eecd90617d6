//! Endpoints as text (`"127.0.0.1:8080"`, `"[::1]:0"`, `"unix:/run/app.sock"`,
//! `"unix:@name"`) and address families.

use std::fmt;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;

use socket2::SockAddr;

use crate::error::Reject;

/// .NET's `AddressFamily` numbers, as `sock_create` takes them.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressFamily {
    /// Unix domain sockets: endpoints `"unix:/path/to.sock"` or `"unix:@name"` (Linux's
    /// abstract namespace).
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
    Unix,
}

impl Family {
    pub fn from_dotnet(code: i32) -> Result<Family, Reject> {
        match code {
            c if c == AddressFamily::InterNetwork as i32 => Ok(Family::V4),
            c if c == AddressFamily::InterNetworkV6 as i32 => Ok(Family::V6),
            c if c == AddressFamily::Unix as i32 => Ok(Family::Unix),
            other => Err(Reject::invalid(format!(
                "unknown address family {other} (Unix=1, InterNetwork=2, InterNetworkV6=23)"
            ))),
        }
    }

    pub fn domain(self) -> i32 {
        match self {
            Family::V4 => libc::AF_INET,
            Family::V6 => libc::AF_INET6,
            Family::Unix => libc::AF_UNIX,
        }
    }

    fn of_domain(domain: i32) -> Option<Family> {
        match domain {
            libc::AF_INET => Some(Family::V4),
            libc::AF_INET6 => Some(Family::V6),
            libc::AF_UNIX => Some(Family::Unix),
            _ => None,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "InterNetwork",
            Family::V6 => "InterNetworkV6",
            Family::Unix => "Unix",
        })
    }
}

/// The longest Unix socket path (or abstract name) the kernel takes: `sun_path` is 108 bytes,
/// and a path needs its terminating NUL.
const UNIX_PATH_MAX: usize = 107;

/// A socket address of any supported family, as the kernel takes it.
#[derive(Clone)]
pub struct Endpoint(SockAddr);

impl Endpoint {
    /// What the kernel reported (getsockname, getpeername, recvfrom); None for a family this
    /// library does not know.
    pub fn from_sock_addr(addr: SockAddr) -> Option<Endpoint> {
        Family::of_domain(addr.family() as i32).map(|_| Endpoint(addr))
    }

    /// A Unix socket with no name (one that never bound, e.g. a datagram's sender).
    pub fn unnamed_unix() -> Endpoint {
        Endpoint(SockAddr::unix("").expect("an empty path always fits"))
    }

    pub fn family(&self) -> Family {
        Family::of_domain(self.0.family() as i32).expect("checked when made")
    }

    pub fn as_ip(&self) -> Option<SocketAddr> {
        self.0.as_socket()
    }

    pub fn sock_addr(&self) -> &SockAddr {
        &self.0
    }

    /// The endpoint as text, in the form `parse` takes; Unix paths are bytes, so the text is
    /// too (an unnamed Unix socket, e.g. one end of a pair, is `"unix:"`).
    pub fn to_text(&self) -> Vec<u8> {
        if let Some(ip) = self.as_ip() {
            return ip.to_string().into_bytes();
        }
        let mut text = b"unix:".to_vec();
        if let Some(name) = self.0.as_abstract_namespace() {
            text.push(b'@');
            text.extend_from_slice(name);
        } else if let Some(path) = self.0.as_pathname() {
            text.extend_from_slice(path.as_os_str().as_bytes());
        }
        text
    }
}

impl From<SocketAddr> for Endpoint {
    fn from(addr: SocketAddr) -> Endpoint {
        Endpoint(SockAddr::from(addr))
    }
}

impl PartialEq for Endpoint {
    fn eq(&self, other: &Endpoint) -> bool {
        self.family() == other.family() && self.to_text() == other.to_text()
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", String::from_utf8_lossy(&self.to_text()))
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Parses endpoint text: an IPv4 address and port, a bracketed IPv6 address and port, or
/// `unix:` followed by a path or by `@` and an abstract name. No name resolution: a host name
/// is rejected.
pub fn parse(text: &[u8]) -> Result<Endpoint, Reject> {
    let shown = String::from_utf8_lossy(&text[..text.len().min(64)]).into_owned();
    if let Some(unix) = text.strip_prefix(b"unix:") {
        return parse_unix(unix, &shown);
    }
    let text = std::str::from_utf8(text)
        .map_err(|_| Reject::invalid(format!("endpoint {shown:?} is not valid UTF-8")))?;
    text.parse::<SocketAddr>().map(Endpoint::from).map_err(|_| {
        Reject::invalid(format!(
            "endpoint {shown:?} does not parse: expected \"127.0.0.1:8080\", \"[::1]:8080\", \
             \"unix:/path/to.sock\" or \"unix:@name\""
        ))
    })
}

fn parse_unix(name: &[u8], shown: &str) -> Result<Endpoint, Reject> {
    // An abstract name is the path with a leading NUL (how the kernel spells it).
    let (path, what) = match name.strip_prefix(b"@") {
        Some(abstract_name) => ([&[0u8][..], abstract_name].concat(), "abstract name"),
        None => (name.to_vec(), "path"),
    };
    if name.is_empty() || name == b"@" {
        return Err(Reject::invalid(format!(
            "endpoint {shown:?} has an empty Unix {what}"
        )));
    }
    let length = path.len() - usize::from(path[0] == 0);
    if length > UNIX_PATH_MAX {
        return Err(Reject::invalid(format!(
            "endpoint {shown:?}: a Unix {what} is at most {UNIX_PATH_MAX} bytes, not {length}"
        )));
    }
    let path = std::ffi::OsStr::from_bytes(&path);
    SockAddr::unix(path)
        .map(Endpoint)
        .map_err(|e| Reject::invalid(format!("endpoint {shown:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Status;

    #[test]
    fn parses_both_families_and_rejects_the_rest() {
        assert_eq!(
            parse(b"127.0.0.1:8080").unwrap().as_ip(),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(parse(b"[::1]:0").unwrap().to_string(), "[::1]:0");
        for unix in [
            &b"unix:/tmp/a.sock"[..],
            b"unix:@name",
            b"unix:rel/x",
            b"unix:/\xff",
        ] {
            let endpoint = parse(unix).unwrap();
            assert_eq!(endpoint.family(), Family::Unix);
            assert_eq!(endpoint.to_text(), unix, "round trip");
        }
        let longest = [&b"unix:/"[..], &[b'p'; UNIX_PATH_MAX - 1]].concat();
        assert_eq!(parse(&longest).unwrap().to_text(), longest);
        let abstract_longest = [&b"unix:@"[..], &[b'n'; UNIX_PATH_MAX]].concat();
        assert_eq!(
            parse(&abstract_longest).unwrap().to_text(),
            abstract_longest
        );
        for bad in [
            &b"127.0.0.1"[..],
            b"127.0.0.1:65536",
            b"localhost:80",
            b"[::1:80",
            b"::1]:80",
            b"",
            b"\xff\xfe:1",
            b"127.0.0.1:-1",
            b"unix:",
            b"unix:@",
            b"unix",
            [&b"unix:/"[..], &[b'p'; UNIX_PATH_MAX]].concat().as_slice(),
            [&b"unix:@"[..], &[b'n'; UNIX_PATH_MAX + 1]]
                .concat()
                .as_slice(),
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err.status, Status::InvalidArgument, "{bad:?}");
        }
        let long = vec![b'1'; 10_000];
        assert_eq!(parse(&long).unwrap_err().status, Status::InvalidArgument);
    }
}
