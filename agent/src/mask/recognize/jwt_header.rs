//! The one question the JWT recognizer asks of a header: is its `alg` a string, and is
//! it `none`?
//!
//! The answer is the one `serde_json` gives when it reads the decoded header into a
//! `Map<String, Value>` and the recognizer looks up `alg`: the header must be a JSON
//! object, the last `alg` entry wins, and every other value must parse as a
//! `serde_json::Value` would (same numbers, strings, nesting limit). What differs is
//! the cost: the header is decoded on the stack, keys are compared where they lie,
//! and scalar values are checked without being copied, so a typical header costs no
//! allocation (only nested arrays and objects are still built, as `Value`s, to keep
//! their rules exactly).

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::de::{
    self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor,
    value::{MapAccessDeserializer, SeqAccessDeserializer},
};
use std::fmt;

/// The longest JWT header worth decoding.
pub(super) const MAX_LEN: usize = 2048;

/// `Some(alg == "none")` if `header` (base64url, at most [`MAX_LEN`] bytes) decodes to
/// a JSON object whose `alg` is a string; `None` otherwise.
pub(super) fn alg_is_none(header: &[u8]) -> Option<bool> {
    if header.len() > MAX_LEN {
        return None;
    }
    // Decoded base64 is shorter than its text, so this always has room.
    let mut json = [0; MAX_LEN];
    let len = URL_SAFE_NO_PAD.decode_slice(header, &mut json).ok()?;
    let header: Header = serde_json::from_slice(json.get(..len)?).ok()?;
    match header.alg? {
        Scalar::Str { none } => Some(none),
        Scalar::Other => None,
    }
}

/// A header object, reduced to its last `alg` entry.
struct Header {
    alg: Option<Scalar>,
}

/// A JSON value, reduced to whether it is a string and that string is `none`.
enum Scalar {
    Str { none: bool },
    Other,
}

/// A key, reduced to whether it is `alg`.
struct IsAlg(bool);

impl<'de> Deserialize<'de> for Header {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // What `Map<String, Value>` asks for.
        d.deserialize_map(HeaderVisitor)
    }
}

struct HeaderVisitor;

impl<'de> Visitor<'de> for HeaderVisitor {
    type Value = Header;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map")
    }

    /// As `Map<String, Value>` reads a unit: an empty map.
    fn visit_unit<E: de::Error>(self) -> Result<Header, E> {
        Ok(Header { alg: None })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Header, A::Error> {
        let mut alg = None;
        while let Some(IsAlg(is_alg)) = map.next_key()? {
            let value: Scalar = map.next_value()?;
            if is_alg {
                alg = Some(value); // a later `alg` replaces an earlier one, as in a map
            }
        }
        Ok(Header { alg })
    }
}

impl<'de> Deserialize<'de> for IsAlg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // What `String` asks for.
        d.deserialize_string(KeyVisitor)
    }
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = IsAlg;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<IsAlg, E> {
        Ok(IsAlg(key == "alg"))
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // What `Value` asks for.
        d.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Scalar, E> {
        Ok(Scalar::Str { none: s == "none" })
    }

    fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }

    fn visit_none<E: de::Error>(self) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Scalar, D::Error> {
        Scalar::deserialize(d)
    }

    /// Arrays and objects are read by `Value` itself: its rules for them (such as the
    /// raw-value marker key) are not repeated here.
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Scalar, A::Error> {
        serde_json::Value::deserialize(SeqAccessDeserializer::new(seq)).map(|_| Scalar::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Scalar, A::Error> {
        serde_json::Value::deserialize(MapAccessDeserializer::new(map)).map(|_| Scalar::Other)
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    /// What the recognizer asked before: the header read into a map.
    fn reference(header: &[u8]) -> Option<bool> {
        let json = URL_SAFE_NO_PAD.decode(header).ok()?;
        let mut map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&json).ok()?;
        match map.remove("alg")? {
            serde_json::Value::String(alg) => Some(alg == "none"),
            _ => None,
        }
    }

    #[test]
    fn answers_as_a_map_would() {
        let nested = format!(
            "{{\"alg\":\"HS256\",\"x\":{}1{}}}",
            "[".repeat(200),
            "]".repeat(200)
        );
        let jsons: Vec<&[u8]> = vec![
            br#"{"alg":"HS256","typ":"JWT"}"#,
            br#"{"alg":"none"}"#,
            br#"{"alg":""}"#,
            br#"{"typ":"JWT"}"#,
            br#"{"alg":"none","alg":"HS256"}"#,
            br#"{"alg":"HS256","alg":"none"}"#,
            br#"{"alg":"HS256","alg":7}"#,
            br#"{"alg":7,"alg":"none"}"#,
            br#"{"\u0061lg":"none"}"#,
            br#"{"alg":"\u006eone"}"#,
            br#"{"alg":null}"#,
            br#"{"alg":["none"]}"#,
            br#"{"alg":{"a":1}}"#,
            br#" { "alg" : "none" } "#,
            br#"{"alg":"none"} x"#,
            br#"{"alg":"none",}"#,
            br#"{"alg":"none""#,
            br#"["alg","none"]"#,
            br#""alg""#,
            b"null",
            b"",
            br#"{"alg":"none","n":1e400}"#,
            br#"{"alg":"none","n":-0.0,"m":18446744073709551616,"k":-9223372036854775809}"#,
            br#"{"alg":"none","n":01}"#,
            br#"{"alg":"none","raw":{"$serde_json::private::RawValue":"[1,2"}}"#,
            br#"{"alg":"none","raw":{"$serde_json::private::RawValue":"[1,2]"}}"#,
            br#"{"alg":"none","raw":{"$serde_json::private::RawValue":"[1]","more":1}}"#,
            br#"{"alg":"none","raw":{"$serde_json::private::RawValue":5}}"#,
            br#"{"alg":"none","t":true,"f":false,"s":"\ud800"}"#,
            b"{\"alg\":\"none\",\"bad\":\"\xff\"}",
            b"{\"alg\":\"n\xc3\xb6ne\"}",
            nested.as_bytes(),
        ];
        for json in jsons {
            let header = URL_SAFE_NO_PAD.encode(json);
            assert_eq!(
                alg_is_none(header.as_bytes()),
                reference(header.as_bytes()),
                "{}",
                String::from_utf8_lossy(json)
            );
        }
        // Not base64url, or with padding.
        for header in ["e30=", "eyJ!", "e", "eyJhbGciOiJub25lIn0="] {
            assert_eq!(
                alg_is_none(header.as_bytes()),
                reference(header.as_bytes()),
                "{header}"
            );
        }
        // The longest header decoded.
        let pad = MAX_LEN / 4 * 3 - r#"{"alg":"none","p":""}"#.len();
        let long = format!("{{\"alg\":\"none\",\"p\":\"{}\"}}", "x".repeat(pad));
        let header = URL_SAFE_NO_PAD.encode(long.as_bytes());
        assert_eq!(header.len(), MAX_LEN);
        assert_eq!(alg_is_none(header.as_bytes()), Some(true));
        assert_eq!(alg_is_none(header.as_bytes()), reference(header.as_bytes()));
        let _ = URL_SAFE_NO_PAD.decode(&header).unwrap();
    }
}
