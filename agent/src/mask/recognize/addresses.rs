//! Addresses: email addresses (anchored at `@`) and IPv6 addresses (anchored at `:`).

use super::{before, byte, word_at, word_before};
use std::{net::Ipv6Addr, ops::Range};

/// The longest local part (RFC 5321) and domain (RFC 1035) of an email address.
const MAX_LOCAL: usize = 64;
const MAX_DOMAIN: usize = 253;

/// The email address around the `@` at `at`.
///
/// The local part is letters, digits, `._%+-` and non-ASCII characters; the domain has
/// at least two labels of letters, digits and `-` (or non-ASCII), and ends in a top-level
/// domain of two or more letters (or `xn--…`).
///
/// In a URL, the userinfo before `@` is masked together with the host when the host is
/// dotted: `https://alice@example.com/` and `ftp://bob:pw@files.example.org/` (there
/// `pw@files.example.org`, the password included) are masked, because userinfo names an
/// account; `http://user@host/` is not an email address and is left alone. Mentions
/// (`@alice`) and `user@localhost` are not addresses either.
pub(in super::super) fn email(v: &[u8], at: usize) -> Option<Range<usize>> {
    let is_local = |b: u8| b.is_ascii_alphanumeric() || b >= 0x80 || b"._%+-".contains(&b);
    let is_domain = |b: u8| b.is_ascii_alphanumeric() || b >= 0x80 || b == b'.' || b == b'-';

    let mut start = at;
    while at - start <= MAX_LOCAL && is_local(before(v, start)) {
        start -= 1;
    }
    while byte(v, start) == b'.' {
        start += 1;
    }
    let local = v.get(start..at)?;
    if local.is_empty() || local.len() > MAX_LOCAL || local.ends_with(b".") || has_double_dot(local)
    {
        return None;
    }

    let mut end = at + 1;
    while end - at <= MAX_DOMAIN && is_domain(byte(v, end)) {
        end += 1;
    }
    while end > at + 1 && matches!(before(v, end), b'.' | b'-') {
        end -= 1; // a sentence's full stop, a dash after the address
    }
    let domain = v.get(at + 1..end)?;
    (domain.len() <= MAX_DOMAIN && valid_domain(domain)).then_some(start..end)
}

fn has_double_dot(s: &[u8]) -> bool {
    s.windows(2).any(|w| w == b"..")
}

/// Whether `domain` is a dotted host name with a plausible top-level domain.
fn valid_domain(domain: &[u8]) -> bool {
    let mut labels = 0;
    let mut last: &[u8] = &[];
    for label in domain.split(|&b| b == b'.') {
        if label.is_empty() || label.len() > 63 || label.starts_with(b"-") || label.ends_with(b"-")
        {
            return false;
        }
        labels += 1;
        last = label;
    }
    let tld_ok = last.starts_with(b"xn--")
        || (last.len() >= 2 && last.iter().all(|&b| b.is_ascii_alphabetic() || b >= 0x80));
    labels >= 2 && tld_ok
}

/// The longest textual IPv6 address (`ffff:…:255.255.255.255`).
const MAX_IPV6: usize = 45;

/// The IPv6 address around the `:` at `colon`, as `std` parses it: `2001:db8::1`,
/// `fe80::1`, `::ffff:192.0.2.1`. The candidate is the run of hex digits, `:` and `.`
/// around the colon, standing alone (not inside a word); it must hold `::` or seven
/// colons, and a decimal digit, so times ("12:34:56"), MAC addresses and `Foo::bar`
/// paths are ruled out before `std` parses anything.
pub(in super::super) fn ipv6(v: &[u8], colon: usize) -> Option<Range<usize>> {
    let is_part = |b: u8| b.is_ascii_hexdigit() || b == b':' || b == b'.';
    let mut start = colon;
    while colon - start <= MAX_IPV6 && is_part(before(v, start)) {
        start -= 1;
    }
    let mut end = colon;
    while end - start <= MAX_IPV6 && is_part(byte(v, end)) {
        end += 1;
    }
    while before(v, end) == b'.' {
        end -= 1; // a sentence's full stop
    }
    let text = v.get(start..end)?;
    let plausible = text.len() <= MAX_IPV6
        && !word_before(v, start)
        && !word_at(v, end)
        && (text.windows(2).any(|w| w == b"::")
            || text.iter().filter(|&&b| b == b':').nth(6).is_some())
        && text.iter().any(u8::is_ascii_digit);
    if !plausible {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse::<Ipv6Addr>().ok()?;
    Some(start..end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email_in(text: &str) -> Option<&str> {
        let at = text.find('@')?;
        email(text.as_bytes(), at).and_then(|r| text.get(r))
    }

    fn ipv6_in(text: &str) -> Option<&str> {
        let colon = text.find(':')?;
        ipv6(text.as_bytes(), colon).and_then(|r| text.get(r))
    }

    #[test]
    fn emails() {
        assert_eq!(
            email_in("mail alice.smith+tag@mail.example.co.uk."),
            Some("alice.smith+tag@mail.example.co.uk")
        );
        assert_eq!(email_in("<bob@example.com>"), Some("bob@example.com"));
        assert_eq!(email_in("josé@exemple.fr"), Some("josé@exemple.fr"));
        assert_eq!(
            email_in("https://alice@example.com/x"),
            Some("alice@example.com")
        );
        assert_eq!(
            email_in("ftp://bob:pw@files.example.org/"),
            Some("pw@files.example.org")
        );
        for none in [
            "http://user@host/",
            "@alice",
            "user@localhost",
            "a@b.c",
            "x@-a.com",
            "x.@a.com",
            "a..b@c.com",
            "a@b..com",
        ] {
            assert_eq!(email_in(none), None, "{none}");
        }
    }

    #[test]
    fn ipv6s() {
        assert_eq!(ipv6_in("from 2001:db8::1."), Some("2001:db8::1"));
        assert_eq!(ipv6_in("[fe80::1%eth0]"), Some("fe80::1"));
        assert_eq!(ipv6_in("::ffff:192.0.2.1"), Some("::ffff:192.0.2.1"));
        assert_eq!(
            ipv6_in("2001:0db8:85a3:0000:0000:8a2e:0370:7334"),
            Some("2001:0db8:85a3:0000:0000:8a2e:0370:7334")
        );
        for none in [
            "12:34:56",
            "00:1a:2b:3c:4d:5e",
            "std::fs",
            "x2001:db8::1",
            "a::b",
            "1:2:3",
        ] {
            assert_eq!(ipv6_in(none), None, "{none}");
        }
    }
}
