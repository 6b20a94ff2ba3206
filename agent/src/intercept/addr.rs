//! Address newtypes and conversions to and from the kernel's [`Endpoint`] form.

use portcullis_common::Endpoint;
use std::{
    fmt,
    net::{IpAddr, Ipv6Addr, SocketAddr},
};

/// The client's end of an accepted connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub SocketAddr);

/// Where the client meant to connect before the kernel redirected it to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OrigDstAddr(pub SocketAddr);

impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for OrigDstAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The kernel's form of `addr`: IPv6 bytes (IPv4 mapped), host-order port.
#[must_use]
pub fn to_endpoint(addr: SocketAddr) -> Endpoint {
    let v6 = match addr.ip() {
        IpAddr::V4(ip) => ip.to_ipv6_mapped(),
        IpAddr::V6(ip) => ip,
    };
    Endpoint::v6(words(v6), addr.port())
}

/// The socket address of a kernel endpoint; mapped IPv4 comes back as IPv4.
#[must_use]
pub fn from_endpoint(e: &Endpoint) -> SocketAddr {
    let mut bytes = [0u8; 16];
    for (chunk, word) in bytes.chunks_exact_mut(4).zip(e.addr) {
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    let v6 = Ipv6Addr::from(bytes);
    let ip = v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4);
    SocketAddr::new(ip, e.port)
}

/// The four memory-order words of an IPv6 address, as BPF programs read them.
#[must_use]
pub fn words(ip: Ipv6Addr) -> [u32; 4] {
    let mut words = [0u32; 4];
    for (word, chunk) in words.iter_mut().zip(ip.octets().chunks_exact(4)) {
        *word = u32::from_ne_bytes(chunk.try_into().unwrap_or_default());
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_round_trips_v4_v6_and_mapped() {
        for s in ["127.0.0.2:7000", "[::1]:5432", "[fe80::1:2]:1"] {
            let a: SocketAddr = s.parse().unwrap_or_else(|e| unreachable!("{e}"));
            assert_eq!(from_endpoint(&to_endpoint(a)), a);
        }
        let mapped: SocketAddr = "[::ffff:127.0.0.2]:7000"
            .parse()
            .unwrap_or_else(|e| unreachable!("{e}"));
        let plain: SocketAddr = "127.0.0.2:7000"
            .parse()
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(to_endpoint(mapped), to_endpoint(plain));
        assert!(to_endpoint(plain).is_v4_mapped());
    }

    #[test]
    fn v4_word_matches_kernel_user_ip4() {
        // The kernel's user_ip4 is the address in network order read as a native u32.
        let raw = u32::from_ne_bytes([127, 0, 0, 2]);
        let e = Endpoint::v4(raw, 7000);
        assert_eq!(
            from_endpoint(&e),
            "127.0.0.2:7000"
                .parse()
                .unwrap_or_else(|e| unreachable!("{e}"))
        );
    }
}
