//! Target addresses: `ip:port`, `[v6]:port` or `host:port`, port 1–65535.

use std::{fmt, net::SocketAddr};

use serde::{Serialize, Serializer};

/// Where a target listens, as written in the policy.
///
/// Host names are kept (lowercased) rather than resolved here: resolution is the
/// interceptor's job and has to be repeated as DNS changes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TargetAddress {
    /// A literal IP address and port.
    Socket(SocketAddr),
    /// A DNS name and port.
    Host { host: String, port: u16 },
}

impl TargetAddress {
    /// The port connections to this address use.
    #[must_use]
    pub fn port(&self) -> u16 {
        match self {
            TargetAddress::Socket(addr) => addr.port(),
            TargetAddress::Host { port, .. } => *port,
        }
    }

    /// The form used to spot two spellings of one address: IPv4-mapped IPv6
    /// addresses become IPv4 (host names are already lowercased).
    pub(super) fn canonical(&self) -> TargetAddress {
        match self {
            TargetAddress::Socket(addr) => {
                TargetAddress::Socket(SocketAddr::new(addr.ip().to_canonical(), addr.port()))
            }
            TargetAddress::Host { .. } => self.clone(),
        }
    }

    /// Parses one address; the error is a reason ending with what to write instead.
    pub(super) fn parse(text: &str) -> Result<TargetAddress, String> {
        if let Ok(addr) = text.parse::<SocketAddr>() {
            if addr.port() == 0 {
                return Err(bad_port("0", text));
            }
            return Ok(TargetAddress::Socket(addr));
        }
        if text.starts_with('[') {
            return Err(format!(
                "invalid address `{text}`; write an IPv6 address as `[v6]:port`, e.g. `[::1]:5432`"
            ));
        }
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err(format!(
                "address `{text}` has no port; write it as `host:port`, e.g. `db.internal:5432`"
            ));
        };
        if host.contains(':') {
            return Err(format!(
                "invalid address `{text}`; put IPv6 addresses in brackets, e.g. `[::1]:5432`"
            ));
        }
        let port = match port.parse::<u16>() {
            Ok(port) if port != 0 => port,
            _ => return Err(bad_port(port, text)),
        };
        check_host(host, text)?;
        Ok(TargetAddress::Host {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

fn bad_port(port: &str, text: &str) -> String {
    format!("invalid port `{port}` in address `{text}`; use a number from 1 to 65535")
}

/// Accepts DNS names: dot-separated labels of letters, digits, `-` and `_`.
fn check_host(host: &str, text: &str) -> Result<(), String> {
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) {
        return Err(format!(
            "invalid host `{host}` in address `{text}`; use an IP address or a DNS name"
        ));
    }
    if host.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(format!(
            "invalid IPv4 address `{host}` in address `{text}`; each part must be 0-255"
        ));
    }
    Ok(())
}

impl fmt::Display for TargetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetAddress::Socket(addr) => addr.fmt(f),
            TargetAddress::Host { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl Serialize for TargetAddress {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn ok(text: &str) -> String {
        TargetAddress::parse(text).unwrap().to_string()
    }

    fn err(text: &str) -> String {
        TargetAddress::parse(text).unwrap_err()
    }

    #[test]
    fn accepts_ip_v6_and_hosts() {
        assert_eq!(ok("127.0.0.2:7000"), "127.0.0.2:7000");
        assert_eq!(ok("[::1]:7000"), "[::1]:7000");
        assert_eq!(ok("DB.internal:5432"), "db.internal:5432");
        assert_eq!(ok("localhost:65535"), "localhost:65535");
        assert!(matches!(
            TargetAddress::parse("[::1]:1"),
            Ok(TargetAddress::Socket(_))
        ));
        assert_eq!(
            TargetAddress::parse("db-1.example.com:22").unwrap(),
            TargetAddress::Host {
                host: "db-1.example.com".into(),
                port: 22
            }
        );
        assert_eq!(TargetAddress::parse("db:22").unwrap().port(), 22);
    }

    #[test]
    fn rejects_bad_addresses() {
        assert!(err("127.0.0.1").contains("has no port"));
        assert!(err("127.0.0.1:0").contains("invalid port `0`"));
        assert!(err("db:70000").contains("invalid port `70000`"));
        assert!(err("db:").contains("invalid port ``"));
        assert!(err(":80").contains("invalid host"));
        assert!(err("::1:80").contains("brackets"));
        assert!(err("[::1]").contains("[v6]:port"));
        assert!(err("[::1]:0").contains("invalid port"));
        assert!(err("300.1.1.1:80").contains("invalid IPv4"));
        assert!(err("bad host:80").contains("invalid host"));
        assert!(err("-db:80").contains("invalid host"));
        assert!(err("a..b:80").contains("invalid host"));
    }

    #[test]
    fn serializes_as_string() {
        let addr = TargetAddress::parse("[::1]:7000").unwrap();
        assert_eq!(serde_json::to_string(&addr).unwrap(), "\"[::1]:7000\"");
    }
}
