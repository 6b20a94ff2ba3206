//! Client encodings: the text a client sends, read as the server reads it.
//!
//! The server converts each string a client sends from the session's
//! `client_encoding` to its own encoding before parsing it. The proxy must read the
//! same characters before it classifies a statement. A reader that splits the bytes
//! into characters another way sees another statement. In `SJIS`, `BIG5`, `GBK`,
//! `UHC` or `GB18030` a byte such as `\` or `'` can be the second half of a
//! character, so one statement can turn into two.
//!
//! The decoders are [`encoding_rs`]'s (the WHATWG Encoding Standard, as Firefox
//! uses it). Each PostgreSQL encoding listed in [`READABLE`] uses the decoder that
//! agrees with the server's conversion. The end-to-end test
//! `every_readable_encoding_reads_as_postgresql_does` checks this against a real
//! server. It tries every one- and two-byte sequence, and the three-byte ones of
//! `EUC_JP`. On those inputs the two never disagree about an ASCII character. Where
//! they map a character differently, that character is listed here, and text
//! containing it is not read: it is classified `unparsed`.
//!
//! Other encodings are read only when the text is ASCII, which every PostgreSQL
//! encoding reads the same way. `BIG5` is one of them: 267 of its characters map
//! differently, among them common ones such as 十. So are `GB18030` (its four-byte
//! sequences are not checked), `EUC_TW`, `JOHAB`, `MULE_INTERNAL`,
//! `EUC_JIS_2004` and `SHIFT_JIS_2004`.

use encoding_rs::Encoding;
use std::borrow::Cow;

/// How the proxy reads the non-ASCII text of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientEncoding {
    /// `UTF8`, or `SQL_ASCII` (the server does not convert): read as UTF-8.
    Utf8,
    /// Read with a decoder that agrees with the server, except on some characters.
    Decoded(Decoder),
    /// Not known, or not known to be read the server's way: only ASCII is read.
    Unsupported,
}

/// A PostgreSQL encoding the proxy reads with an [`encoding_rs`] decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoder {
    name: &'static str,
    encoding: &'static Encoding,
    /// Characters this decoder produces where the server reads other ones.
    differs: &'static [char],
}

/// The PostgreSQL encodings whose non-ASCII text the proxy reads, besides `UTF8`
/// and `SQL_ASCII`.
pub const READABLE: &[&str] = &[
    "LATIN1",
    "LATIN2",
    "LATIN3",
    "LATIN4",
    "LATIN5",
    "LATIN6",
    "LATIN7",
    "LATIN8",
    "LATIN9",
    "LATIN10",
    "ISO_8859_5",
    "ISO_8859_6",
    "ISO_8859_7",
    "ISO_8859_8",
    "WIN866",
    "WIN874",
    "WIN1250",
    "WIN1251",
    "WIN1252",
    "WIN1253",
    "WIN1254",
    "WIN1255",
    "WIN1256",
    "WIN1257",
    "WIN1258",
    "KOI8R",
    "KOI8U",
    "EUC_JP",
    "EUC_KR",
    "EUC_CN",
    "SJIS",
    "GBK",
    "UHC",
];

/// In `LATIN1` and `LATIN5` the bytes 0x80 to 0x9F are control characters. The
/// WHATWG decoders (`windows-1252`, `windows-1254`) read most of them as these.
const WINDOWS_C1: &[char] = &[
    '\u{152}', '\u{153}', '\u{160}', '\u{161}', '\u{178}', '\u{17d}', '\u{17e}', '\u{192}',
    '\u{2c6}', '\u{2dc}', '\u{2013}', '\u{2014}', '\u{2018}', '\u{2019}', '\u{201a}', '\u{201c}',
    '\u{201d}', '\u{201e}', '\u{2020}', '\u{2021}', '\u{2022}', '\u{2026}', '\u{2030}', '\u{2039}',
    '\u{203a}', '\u{20ac}', '\u{2122}',
];

impl ClientEncoding {
    /// The encoding a `client_encoding` report names (PostgreSQL's own spelling,
    /// such as `UTF8`, `LATIN1` or `SJIS`).
    #[must_use]
    pub fn named(name: &str) -> ClientEncoding {
        let upper = name.to_ascii_uppercase();
        let (encoding, differs): (&'static Encoding, &'static [char]) = match upper.as_str() {
            "UTF8" | "SQL_ASCII" => return ClientEncoding::Utf8,
            "LATIN1" => (encoding_rs::WINDOWS_1252, WINDOWS_C1),
            "LATIN2" => (encoding_rs::ISO_8859_2, &[]),
            "LATIN3" => (encoding_rs::ISO_8859_3, &[]),
            "LATIN4" => (encoding_rs::ISO_8859_4, &[]),
            "LATIN5" => (encoding_rs::WINDOWS_1254, WINDOWS_C1),
            "LATIN6" => (encoding_rs::ISO_8859_10, &[]),
            "LATIN7" => (encoding_rs::ISO_8859_13, &[]),
            "LATIN8" => (encoding_rs::ISO_8859_14, &[]),
            "LATIN9" => (encoding_rs::ISO_8859_15, &[]),
            "LATIN10" => (encoding_rs::ISO_8859_16, &[]),
            "ISO_8859_5" => (encoding_rs::ISO_8859_5, &[]),
            "ISO_8859_6" => (encoding_rs::ISO_8859_6, &[]),
            "ISO_8859_7" => (encoding_rs::ISO_8859_7, &[]),
            "ISO_8859_8" => (encoding_rs::ISO_8859_8, &[]),
            "WIN866" => (encoding_rs::IBM866, &[]),
            "WIN874" => (encoding_rs::WINDOWS_874, &[]),
            "WIN1250" => (encoding_rs::WINDOWS_1250, &[]),
            "WIN1251" => (encoding_rs::WINDOWS_1251, &[]),
            "WIN1252" => (encoding_rs::WINDOWS_1252, &[]),
            "WIN1253" => (encoding_rs::WINDOWS_1253, &[]),
            "WIN1254" => (encoding_rs::WINDOWS_1254, &[]),
            "WIN1255" => (encoding_rs::WINDOWS_1255, &[]),
            "WIN1256" => (encoding_rs::WINDOWS_1256, &[]),
            "WIN1257" => (encoding_rs::WINDOWS_1257, &[]),
            "WIN1258" => (encoding_rs::WINDOWS_1258, &[]),
            "KOI8R" => (encoding_rs::KOI8_R, &[]),
            // WHATWG's KOI8-U is KOI8-RU: two box-drawing characters are ў and Ў.
            "KOI8U" => (encoding_rs::KOI8_U, &['\u{40e}', '\u{45e}']),
            "EUC_JP" => (encoding_rs::EUC_JP, &['\u{a6}']),
            // WHATWG's EUC-KR is UHC (windows-949), a superset of EUC-KR.
            "EUC_KR" | "UHC" => (encoding_rs::EUC_KR, &[]),
            // EUC_CN is GB2312, a subset of GBK, but for two punctuation marks.
            "EUC_CN" => (encoding_rs::GBK, &['\u{b7}', '\u{2014}']),
            "SJIS" => (encoding_rs::SHIFT_JIS, &[]),
            "GBK" => (encoding_rs::GBK, &[]),
            _ => return ClientEncoding::Unsupported,
        };
        ClientEncoding::Decoded(Decoder {
            name: READABLE
                .iter()
                .find(|n| **n == upper)
                .copied()
                .unwrap_or("?"),
            encoding,
            differs,
        })
    }

    /// `bytes` as the server reads them, or why they cannot be read so: they are not
    /// valid in the encoding, hold a character the server reads otherwise, or the
    /// encoding is not one the proxy reads. ASCII always reads as itself.
    pub fn read(self, bytes: &[u8]) -> Result<Cow<'_, str>, String> {
        if bytes.is_ascii() {
            return Ok(Cow::Borrowed(ascii(bytes)));
        }
        match self {
            ClientEncoding::Utf8 => std::str::from_utf8(bytes)
                .map(Cow::Borrowed)
                .map_err(|_| "the text is not valid UTF-8, the session's client_encoding".into()),
            ClientEncoding::Decoded(d) => {
                let text = d
                    .encoding
                    .decode_without_bom_handling_and_without_replacement(bytes)
                    .ok_or_else(|| {
                        format!(
                            "the text is not valid {}, the session's client_encoding",
                            d.name
                        )
                    })?;
                match text.chars().find(|c| d.differs.contains(c)) {
                    Some(c) => Err(format!(
                        "the text has a character PostgreSQL reads otherwise than the proxy \
                         in client_encoding {} ({c})",
                        d.name
                    )),
                    None => Ok(text),
                }
            }
            ClientEncoding::Unsupported => Err(
                "the text is not ASCII and the proxy cannot read the session's client_encoding \
                 as the server does (set client_encoding to UTF8)"
                    .into(),
            ),
        }
    }

    /// `bytes` for a record or a message: as [`ClientEncoding::read`] would read
    /// them where it can, with U+FFFD for what is not valid.
    #[must_use]
    pub fn lossy(self, bytes: &[u8]) -> Cow<'_, str> {
        if bytes.is_ascii() {
            return Cow::Borrowed(ascii(bytes));
        }
        match self {
            ClientEncoding::Decoded(d) => d.encoding.decode_without_bom_handling(bytes).0,
            ClientEncoding::Utf8 | ClientEncoding::Unsupported => String::from_utf8_lossy(bytes),
        }
    }

    /// `text` in this encoding, for a message to the client. A character the
    /// encoding lacks is written as `&#NNNN;`. Without a decoder (`Unsupported`),
    /// UTF-8.
    #[must_use]
    pub fn encode(self, text: &str) -> Cow<'_, [u8]> {
        match self {
            ClientEncoding::Decoded(d) if !text.is_ascii() => d.encoding.encode(text).0,
            _ => Cow::Borrowed(text.as_bytes()),
        }
    }
}

/// ASCII bytes as a `str`.
fn ascii(bytes: &[u8]) -> &str {
    // ASCII is valid UTF-8: the fallback is never taken.
    std::str::from_utf8(bytes).unwrap_or_default()
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn every_readable_name_has_a_decoder() {
        for name in READABLE {
            assert!(
                matches!(ClientEncoding::named(name), ClientEncoding::Decoded(d) if d.name == *name),
                "{name}"
            );
            let lower = name.to_ascii_lowercase();
            assert!(matches!(
                ClientEncoding::named(&lower),
                ClientEncoding::Decoded(_)
            ));
        }
        assert_eq!(ClientEncoding::named("sql_ascii"), ClientEncoding::Utf8);
        for other in ["BIG5", "GB18030", "EUC_TW", "JOHAB", "SHIFT_JIS_2004", "X"] {
            assert_eq!(ClientEncoding::named(other), ClientEncoding::Unsupported);
        }
    }

    #[test]
    fn sjis_reads_a_backslash_as_half_of_a_character() {
        // 0x83 0x5C is ソ; read as UTF-8 the 0x5C would be a backslash.
        let sjis = ClientEncoding::named("SJIS");
        assert_eq!(sjis.read(b"SELECT E'\xc3\x83\\'").unwrap(), "SELECT E'ﾃソ'");
        assert!(
            sjis.read(b"SELECT '\x83'")
                .unwrap_err()
                .contains("not valid SJIS")
        );
    }

    #[test]
    fn characters_read_otherwise_are_refused_and_shown_lossily() {
        let latin1 = ClientEncoding::named("LATIN1");
        assert_eq!(latin1.read(b"caf\xe9").unwrap(), "café");
        // 0x80 is a control character to PostgreSQL, € to windows-1252.
        assert!(latin1.read(b"x\x80").unwrap_err().contains("(€)"));
        assert_eq!(latin1.lossy(b"x\x80"), "x€");
        assert!(ClientEncoding::Unsupported.read(b"\xe9").is_err());
        assert_eq!(ClientEncoding::Unsupported.read(b"plain").unwrap(), "plain");
        assert!(ClientEncoding::Utf8.read(b"\xe9").is_err());
        assert_eq!(ClientEncoding::Utf8.lossy(b"\xe9"), "\u{fffd}");
    }

    #[test]
    fn messages_are_written_in_the_clients_encoding() {
        let latin1 = ClientEncoding::named("LATIN1");
        assert_eq!(&*latin1.encode("prix gelés"), b"prix gel\xe9s");
        assert_eq!(&*latin1.encode("雪"), b"&#38634;");
        assert_eq!(&*ClientEncoding::named("SJIS").encode("ソ"), b"\x83\x5c");
        assert_eq!(&*ClientEncoding::Utf8.encode("é"), "é".as_bytes());
    }
}
