//! Numbers people write with separators: payment cards, US SSNs, phone numbers, IPv4
//! addresses, IBANs.
//!
//! Each function takes the value and the index where the number starts (the scanner
//! has checked [`starts_number`](super::starts_number)) and returns where it ends. A
//! number must end at a boundary ([`ends_number`]): "555-123-4567-89" is not a phone.

use super::{Cursor, before, byte, ends_number, word_at};
use std::net::Ipv4Addr;

/// A payment card number: 13–19 digits, Luhn-valid, starting with 2–6 (the issuers of
/// cards in use: Mastercard 2 and 5, Amex, Diners and JCB 3, Visa 4, Discover, `UnionPay`
/// and Maestro 6), written as one run or grouped by one separator (space or dash) the
/// way cards are printed: 4-4-4-4, 4-4-4-4-1..3, 4-4-4-1..4, 4-6-5 or 4-6-4.
///
/// When more groups follow ("4111 1111 1111 1111 0525"), the longest card-shaped prefix
/// that passes Luhn wins; a grouped card does not start in the middle of groups
/// ("6251 2654 5194 0298 8" holds no card at "2654").
pub(in super::super) fn credit_card(v: &[u8], start: usize) -> Option<usize> {
    // Most numbers are not cards: rule them out before reading further. A grouped
    // card goes on with a separator and 4 (or, Amex and Diners, 6) digits.
    let first_run = run_len(v, start);
    let grouped = first_run == 4
        && matches!(byte(v, start + 4), b' ' | b'-')
        && matches!(run_len(v, start + 5), 4 | 6);
    if !(b'2'..=b'6').contains(&byte(v, start)) || !(grouped || (13..=19).contains(&first_run)) {
        return None;
    }
    let mut digits = [0u8; 19];
    let mut count = 0;
    // (length, end) of each group read so far.
    let mut groups = [(0usize, 0usize); 5];
    let mut read = 0;
    let mut sep = None;
    let mut c = Cursor::new(v, start);
    for group in &mut groups {
        let run = c.digits();
        let Some(slots) = digits.get_mut(count..count + run.len()) else {
            break; // more than 19 digits
        };
        for (slot, d) in slots.iter_mut().zip(run) {
            *slot = d - b'0';
        }
        count += run.len();
        *group = (run.len(), c.pos);
        read += 1;
        let next = c.peek();
        let same = sep.is_none_or(|s| s == next);
        if !(matches!(next, b' ' | b'-') && same && c.peek_at(1).is_ascii_digit()) {
            break;
        }
        sep = Some(next);
        c.pos += 1;
    }
    let mid_groups =
        sep.is_some_and(|s| before(v, start) == s && before(v, start - 1).is_ascii_digit());
    if mid_groups {
        return None;
    }
    (1..=read).rev().find_map(|k| {
        let groups = groups.get(..k)?;
        let (_, end) = *groups.last()?;
        let len: usize = groups.iter().map(|g| g.0).sum();
        (card_layout(groups) && ends_number(v, end) && luhn(digits.get(..len)?)).then_some(end)
    })
}

/// Whether the groups' lengths look like a printed card number.
fn card_layout(groups: &[(usize, usize)]) -> bool {
    let total: usize = groups.iter().map(|g| g.0).sum();
    let Some((&(last, _), init)) = groups.split_last() else {
        return false;
    };
    (13..=19).contains(&total)
        && match init {
            [] => true,
            [(4, _), (6, _)] => matches!(last, 4 | 5),
            _ => init.len() >= 3 && init.iter().all(|g| g.0 == 4) && (1..=4).contains(&last),
        }
}

/// The length of the run of digits at `start`.
pub(in super::super) fn run_len(v: &[u8], start: usize) -> usize {
    v.get(start..)
        .unwrap_or_default()
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count()
}

/// The Luhn checksum (ISO/IEC 7812): every second digit from the right doubled.
pub(in super::super) fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                if d * 2 > 9 { d * 2 - 9 } else { d * 2 }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// A US Social Security number written `ddd-dd-dddd` or `ddd dd dddd`, except numbers
/// the SSA never issues: area 000, 666 or 900–999, group 00, serial 0000.
///
/// Nine digits in a row are not matched: too many order numbers look like that. Mask an
/// SSN column by name (`mask_columns = ["*.ssn"]`) instead.
pub(in super::super) fn ssn(v: &[u8], start: usize) -> Option<usize> {
    let mut c = Cursor::new(v, start);
    let area = c.number(3)?;
    let sep = c.eat_one_of(b"- ")?;
    let group = c.number(2)?;
    if !c.eat(sep) {
        return None;
    }
    let serial = c.number(4)?;
    let issued = area != 0 && area != 666 && area < 900 && group != 0 && serial != 0;
    (issued && ends_number(v, c.pos)).then_some(c.pos)
}

/// A phone number: international (starting with `+`) or North American.
pub(in super::super) fn phone(v: &[u8], start: usize) -> Option<usize> {
    if byte(v, start) == b'+' {
        international_phone(v, start)
    } else {
        nanp_phone(v, start)
    }
}

/// `+` and 8–15 digits (E.164) in groups separated by one or two of ` -.()`:
/// `+442079460958`, `+44 20 7946 0958`, `+1 (555) 123-4567`, `+91-98765-43210`.
fn international_phone(v: &[u8], start: usize) -> Option<usize> {
    let is_sep = |b: u8| matches!(b, b' ' | b'-' | b'.' | b'(' | b')');
    let mut c = Cursor::new(v, start + 1);
    let mut total = 0;
    let mut end = None;
    loop {
        let run = c.digits();
        if run.is_empty() {
            break;
        }
        total += run.len();
        if total > 15 {
            return None;
        }
        if total >= 8 && ends_number(v, c.pos) {
            end = Some(c.pos);
        }
        let sep = if is_sep(c.peek_at(1)) { 2 } else { 1 };
        if !is_sep(c.peek()) || !c.peek_at(sep).is_ascii_digit() {
            break;
        }
        c.pos += sep;
    }
    end
}

/// A North American number: `(555) 123-4567`, `(555)123-4567`, `555-123-4567`,
/// `555.123.4567`, `555 123 4567`, optionally after the trunk prefix `1` and a
/// separator. The area code starts with 2–9 (so "123-456-7890" is not a phone).
fn nanp_phone(v: &[u8], start: usize) -> Option<usize> {
    let mut c = Cursor::new(v, start);
    if c.peek() == b'1' && matches!(c.peek_at(1), b' ' | b'-' | b'.') {
        c.pos += 2;
    }
    let area = if c.eat(b'(') {
        let area = c.number(3)?;
        if !c.eat(b')') {
            return None;
        }
        c.eat(b' ');
        c.number(3)?;
        c.eat_one_of(b"-. ")?;
        area
    } else {
        let area = c.number(3)?;
        let sep = c.eat_one_of(b"-. ")?;
        c.number(3)?;
        if !c.eat(sep) {
            return None;
        }
        area
    };
    c.number(4)?;
    (area >= 200 && ends_number(v, c.pos)).then_some(c.pos)
}

/// An IPv4 address in dotted-quad form, as `std` parses it (four octets of 0–255, no
/// leading zeros). "1.2.3.4.5" and "999.1.1.1" are not addresses.
pub(in super::super) fn ipv4(v: &[u8], start: usize) -> Option<usize> {
    let first_octet = run_len(v, start);
    if first_octet > 3 || byte(v, start + first_octet) != b'.' {
        return None;
    }
    let mut c = Cursor::new(v, start);
    let run = c.take_while(|b| b.is_ascii_digit() || b == b'.');
    let text = run.strip_suffix(b".").unwrap_or(run); // a sentence's full stop
    let end = start + text.len();
    if text.len() > 15 || !ends_number(v, end) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse::<Ipv4Addr>().ok()?;
    Some(end)
}

/// An IBAN starting at `start` (its country code), in electronic form
/// (`DE89370400440532013000`) or printed in groups of four (`DE89 3704 0044 0532 0130
/// 00`): a registered country and that country's length. Returns its end and whether
/// its checksum is right (mod-97 = 1, ISO 13616): a mistyped IBAN is still one token,
/// not a run of numbers that might look like a card. Only upper-case letters, as IBANs
/// are written.
pub(in super::super) fn iban(v: &[u8], start: usize) -> Option<(usize, bool)> {
    let len = iban_length(v.get(start..start + 2)?)?;
    let mut chars = [0u8; 34];
    let mut n = 0;
    let mut c = Cursor::new(v, start);
    let is_char = |b: u8| b.is_ascii_digit() || b.is_ascii_uppercase();
    while n < len {
        if is_char(c.peek()) {
            *chars.get_mut(n)? = c.peek();
            n += 1;
            c.pos += 1;
        } else if c.peek() == b' ' && n % 4 == 0 && is_char(c.peek_at(1)) {
            c.pos += 1;
        } else {
            return None;
        }
    }
    let chars = chars.get(..len)?;
    let check_digits = chars.get(2..4)?;
    (!word_at(v, c.pos) && check_digits.iter().all(u8::is_ascii_digit))
        .then(|| (c.pos, mod97(chars) == 1))
}

/// The IBAN remainder: the first four characters moved to the end, letters as 10–35.
fn mod97(chars: &[u8]) -> u32 {
    let (head, tail) = chars.split_at_checked(4).unwrap_or((chars, &[]));
    tail.iter().chain(head).fold(0, |rem, &b| {
        if b.is_ascii_digit() {
            (rem * 10 + u32::from(b - b'0')) % 97
        } else {
            (rem * 100 + u32::from(b.wrapping_sub(b'A')) + 10) % 97
        }
    })
}

/// The registered IBAN length of a country (SWIFT IBAN registry).
fn iban_length(country: &[u8]) -> Option<usize> {
    Some(match country {
        b"NO" => 15,
        b"BE" => 16,
        b"DK" | b"FI" | b"FK" | b"FO" | b"GL" | b"NL" | b"SD" => 18,
        b"MK" | b"SI" => 19,
        b"AT" | b"BA" | b"EE" | b"KZ" | b"LT" | b"LU" | b"MN" | b"XK" => 20,
        b"CH" | b"HR" | b"LI" | b"LV" => 21,
        b"BG" | b"BH" | b"CR" | b"DE" | b"GB" | b"GE" | b"IE" | b"ME" | b"RS" | b"VA" => 22,
        b"AE" | b"GI" | b"IL" | b"IQ" | b"OM" | b"SO" | b"TL" => 23,
        b"AD" | b"CZ" | b"ES" | b"MD" | b"PK" | b"RO" | b"SA" | b"SE" | b"SK" | b"TN" | b"VG" => 24,
        b"LY" | b"PT" | b"ST" => 25,
        b"IS" | b"TR" => 26,
        b"BI" | b"DJ" | b"FR" | b"GR" | b"IT" | b"MC" | b"MR" | b"SM" => 27,
        b"AL" | b"AZ" | b"BY" | b"CY" | b"DO" | b"GT" | b"HN" | b"HU" | b"LB" | b"NI" | b"PL"
        | b"SV" => 28,
        b"BR" | b"EG" | b"PS" | b"QA" | b"UA" => 29,
        b"JO" | b"KW" | b"MU" | b"YE" => 30,
        b"MT" | b"SC" => 31,
        b"LC" => 32,
        b"RU" => 33,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(f: fn(&[u8], usize) -> Option<usize>, text: &str) -> bool {
        f(text.as_bytes(), 0) == Some(text.len())
    }

    #[test]
    fn cards() {
        for ok in [
            "4111111111111111",
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "378282246310005",
            "3782 822463 10005",
            "6011000990139424",
            "5555555555554444",
            "4222222222222",
        ] {
            assert!(whole(credit_card, ok), "{ok}");
        }
        for bad in [
            "4111111111111112",        // Luhn
            "4111 1111-1111 1111",     // mixed separators
            "41 11 11 11 11 11 11 11", // not a card layout
            "0000000000000000",        // no issuer starts with 0
            "4111111111111111-5",      // glued to more digits
        ] {
            assert!(!whole(credit_card, bad), "{bad}");
        }
        // A trailing group (an expiry, say) does not hide the card.
        assert_eq!(credit_card(b"4111 1111 1111 1111 0525", 0), Some(19));
        assert_eq!(credit_card(b"6251 4111 1111 1111 1111", 5), None);
        assert_eq!(credit_card(b"6251 4111111111111111", 5), Some(21));
    }

    #[test]
    fn ssns() {
        assert!(whole(ssn, "123-45-6789"));
        assert!(whole(ssn, "123 45 6789"));
        for bad in [
            "000-12-3456",
            "666-12-3456",
            "900-12-3456",
            "123-00-4567",
            "123-45-0000",
            "123-45 6789",
            "123456789",
        ] {
            assert!(!whole(ssn, bad), "{bad}");
        }
    }

    #[test]
    fn phones() {
        for ok in [
            "(555) 123-4567",
            "(555)123-4567",
            "555-123-4567",
            "555.123.4567",
            "555 123 4567",
            "1-800-555-0199",
            "+15551234567",
            "+1 (555) 123-4567",
            "+44 20 7946 0958",
            "+33 1 23 45 67 89",
            "+91-98765-43210",
        ] {
            assert!(whole(phone, ok), "{ok}");
        }
        for bad in [
            "123-456-7890",
            "555-123-45678",
            "+1234567",
            "+1234567890123456",
            "555-123.4567",
        ] {
            assert!(!whole(phone, bad), "{bad}");
        }
    }

    #[test]
    fn ipv4s() {
        assert!(whole(ipv4, "10.0.0.1"));
        assert_eq!(ipv4(b"192.168.1.20.", 0), Some(12));
        for bad in ["999.1.1.1", "1.2.3", "1.2.3.4.5", "256.0.0.1", "01.2.3.4"] {
            assert!(!whole(ipv4, bad), "{bad}");
        }
    }

    #[test]
    fn ibans() {
        let check = |text: &str| {
            iban(text.as_bytes(), 0)
                .filter(|&(end, _)| end == text.len())
                .map(|(_, ok)| ok)
        };
        for ok in [
            "DE89370400440532013000",
            "DE89 3704 0044 0532 0130 00",
            "GB29NWBK60161331926819",
            "NO9386011117947",
        ] {
            assert_eq!(check(ok), Some(true), "{ok}");
        }
        assert_eq!(check("DE88370400440532013000"), Some(false));
        for bad in [
            "DE8937040044053201300",
            "XX89370400440532013000",
            "DE89 370 40044 0532 0130 00",
            "de89370400440532013000",
        ] {
            assert_eq!(check(bad), None, "{bad}");
        }
    }
}
