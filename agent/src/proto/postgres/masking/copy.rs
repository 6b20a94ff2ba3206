//! COPY OUT rows (text and CSV) masked by column and by value.
//!
//! A `CopyData` row carries no column names, so the columns come from the statement:
//! `COPY table (a, b)` names them, `COPY table` means the table's columns in order
//! (looked up in the catalog), `COPY (query)` the query's as the server describes
//! them. Each row is split into fields the way the server wrote it, a masked column's
//! value is decoded, masked and written back in the same format, and the other fields
//! are masked by value. Whatever cannot be told apart (a binary COPY, a row with the
//! wrong number of fields) is refused, never passed.

use super::super::classify::CopyFormat;
use crate::mask::{ColumnMask, Masked, Masker};
use std::borrow::Cow;

/// The columns of one COPY OUT, as masking needs them.
#[derive(Debug)]
pub struct CopyColumns {
    pub format: CopyFormat,
    /// The rule of each column, in the order of the row's fields.
    pub rules: Vec<Option<ColumnMask>>,
}

impl CopyColumns {
    /// One row (a `CopyData` body) masked, or `None` when nothing changed. Errs when the
    /// row does not split into as many fields as there are columns.
    pub fn mask_row(&self, masker: &Masker, row: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let f = &self.format;
        let (content, eol) = split_eol(row);
        let fields = if f.csv {
            csv_fields(content, f)
        } else {
            text_fields(content, f.delimiter)
        };
        if fields.len() != self.rules.len() {
            return Err(format!(
                "a COPY row has {} fields where the COPY has {} columns",
                fields.len(),
                self.rules.len()
            ));
        }
        let mut out = Vec::with_capacity(row.len() + 16);
        let mut changed = false;
        for (i, (field, rule)) in fields.iter().zip(&self.rules).enumerate() {
            if i > 0 {
                out.push(f.delimiter);
            }
            let replaced = match rule {
                // NULL stays NULL, as in a result row.
                Some(_) if field.is_null(f) => None,
                Some(rule) => Some(match masker.mask_column_value(rule, &field.value(f)) {
                    Masked::Value(v) => encode(&v, f),
                    Masked::Null => f.null.clone(),
                }),
                None => match masker.mask_value(field.raw) {
                    Cow::Borrowed(_) => None,
                    // Replacements are ASCII words: the field stays well-formed.
                    Cow::Owned(v) => Some(v),
                },
            };
            match replaced {
                Some(v) => {
                    changed = true;
                    out.extend_from_slice(&v);
                }
                None => out.extend_from_slice(field.raw),
            }
        }
        out.extend_from_slice(eol);
        Ok(changed.then_some(out))
    }
}

/// One field of a row, as written.
struct Field<'a> {
    raw: &'a [u8],
    /// CSV: the field was written in quotes (so it is not NULL).
    quoted: bool,
}

impl Field<'_> {
    fn is_null(&self, f: &CopyFormat) -> bool {
        !self.quoted && self.raw == f.null.as_slice()
    }

    /// The value the field stands for.
    fn value(&self, f: &CopyFormat) -> Vec<u8> {
        if f.csv {
            csv_value(self.raw, f)
        } else {
            text_value(self.raw)
        }
    }
}

/// The row without its line end (`\n`, or `\r\n` from a server on Windows).
fn split_eol(row: &[u8]) -> (&[u8], &[u8]) {
    let cut = if row.ends_with(b"\r\n") {
        2
    } else {
        usize::from(row.ends_with(b"\n"))
    };
    row.split_at(row.len() - cut)
}

/// Text format: fields end at each unescaped delimiter (the server escapes a
/// delimiter inside a value with a backslash).
fn text_fields(row: &[u8], delimiter: u8) -> Vec<Field<'_>> {
    let mut fields = Vec::new();
    let (mut start, mut i) = (0, 0);
    while let Some(&b) = row.get(i) {
        if b == b'\\' {
            i += 2;
            continue;
        }
        if b == delimiter {
            fields.push(Field {
                raw: row.get(start..i).unwrap_or_default(),
                quoted: false,
            });
            start = i + 1;
        }
        i += 1;
    }
    fields.push(Field {
        raw: row.get(start..).unwrap_or_default(),
        quoted: false,
    });
    fields
}

/// A text-format value with its backslash escapes decoded.
fn text_value(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.iter().copied().peekable();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        let Some(c) = bytes.next() else { break };
        match c {
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                for _ in 0..2 {
                    match bytes.peek() {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            bytes.next();
                        }
                        _ => break,
                    }
                }
                out.push(u8::try_from(v & 0xff).unwrap_or(0));
            }
            b'x' => {
                let mut v = 0u32;
                let mut digits = 0;
                while digits < 2 {
                    match bytes.peek().and_then(|d| char::from(*d).to_digit(16)) {
                        Some(d) => {
                            v = v * 16 + d;
                            bytes.next();
                            digits += 1;
                        }
                        None => break,
                    }
                }
                if digits == 0 {
                    out.push(b'x');
                } else {
                    out.push(u8::try_from(v).unwrap_or(0));
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// CSV: fields end at each delimiter outside quotes.
fn csv_fields<'a>(row: &'a [u8], f: &CopyFormat) -> Vec<Field<'a>> {
    let mut fields = Vec::new();
    let (mut start, mut i) = (0, 0);
    let (mut in_quotes, mut quoted) = (false, false);
    while let Some(&b) = row.get(i) {
        if in_quotes {
            if b == f.escape
                && f.escape != f.quote
                && matches!(row.get(i + 1), Some(&n) if n == f.quote || n == f.escape)
            {
                i += 2;
                continue;
            }
            if b == f.quote {
                if f.escape == f.quote && row.get(i + 1) == Some(&f.quote) {
                    i += 2;
                    continue;
                }
                in_quotes = false;
            }
        } else if b == f.quote {
            in_quotes = true;
            quoted = true;
        } else if b == f.delimiter {
            fields.push(Field {
                raw: row.get(start..i).unwrap_or_default(),
                quoted,
            });
            start = i + 1;
            quoted = false;
        }
        i += 1;
    }
    fields.push(Field {
        raw: row.get(start..).unwrap_or_default(),
        quoted,
    });
    fields
}

/// A CSV value: the text inside the quotes with escapes removed, or the raw text.
fn csv_value(raw: &[u8], f: &CopyFormat) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut in_quotes = false;
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        if in_quotes {
            let next = raw.get(i + 1).copied();
            if b == f.escape
                && next.is_some_and(|n| n == f.quote || (n == f.escape && f.escape != f.quote))
            {
                out.extend(next);
                i += 2;
                continue;
            }
            if b == f.quote {
                in_quotes = false;
            } else {
                out.push(b);
            }
        } else if b == f.quote {
            in_quotes = true;
        } else {
            out.push(b);
        }
        i += 1;
    }
    out
}

/// A masked value written back in the row's format.
fn encode(value: &[u8], f: &CopyFormat) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 2);
    if f.csv {
        out.push(f.quote);
        for &b in value {
            if b == f.quote || b == f.escape {
                out.push(f.escape);
            }
            out.push(b);
        }
        out.push(f.quote);
        return out;
    }
    for &b in value {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            d if d == f.delimiter => out.extend_from_slice(&[b'\\', d]),
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::{MaskSpec, MaskStyle};

    fn text() -> CopyFormat {
        CopyFormat {
            csv: false,
            delimiter: b'\t',
            null: b"\\N".to_vec(),
            quote: b'"',
            escape: b'"',
            header: false,
        }
    }

    fn csv() -> CopyFormat {
        CopyFormat {
            csv: true,
            delimiter: b',',
            null: Vec::new(),
            ..text()
        }
    }

    /// Column 1 (`t.secret`) masked in `style`; emails masked by value everywhere.
    fn columns(format: CopyFormat, style: MaskStyle) -> (Masker, CopyColumns) {
        let spec = MaskSpec {
            mask: vec!["email".into()],
            mask_columns: vec!["t.secret".into()],
            mask_style: style,
            ..MaskSpec::default()
        };
        let masker = Masker::compile(&[spec], None).unwrap_or_default();
        let rules = ["id", "secret", "note"]
            .iter()
            .map(|c| masker.column_rule("t", c))
            .collect();
        (masker, CopyColumns { format, rules })
    }

    fn masked(c: &(Masker, CopyColumns), row: &str) -> String {
        let out = c.1.mask_row(&c.0, row.as_bytes());
        match out {
            Ok(Some(v)) => String::from_utf8_lossy(&v).into_owned(),
            Ok(None) => row.to_owned(),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn text_rows_mask_the_column_and_values_and_keep_their_shape() {
        let c = columns(text(), MaskStyle::Redact);
        assert_eq!(
            masked(&c, "1\ts3cr\\tet\\\\x\tmail a@example.com\n"),
            "1\t****\tmail [email]\n"
        );
        // NULL stays NULL; a row of other values passes as it is.
        assert_eq!(masked(&c, "2\t\\N\tplain\n"), "2\t\\N\tplain\n");
        // An escaped delimiter is not a field boundary.
        assert_eq!(masked(&c, "3\ta\\\tb\tc\n"), "3\t****\tc\n");
        assert!(masked(&c, "4\tonly two\n").starts_with("error:"));
    }

    #[test]
    fn last4_sees_the_decoded_value_and_writes_it_escaped() {
        let c = columns(text(), MaskStyle::Last4);
        // The value is `ab\tc\\d`: last four characters `\tc\d`, written escaped.
        assert_eq!(masked(&c, "1\tab\\tc\\\\d\tx\n"), "1\t**\\tc\\\\d\tx\n");
    }

    #[test]
    fn csv_rows_mask_quoted_and_plain_values() {
        let c = columns(csv(), MaskStyle::Redact);
        assert_eq!(
            masked(&c, "1,\"has, a comma and \"\"quotes\"\"\",note\n"),
            "1,\"****\",note\n"
        );
        assert_eq!(
            masked(&c, "2,plain,\"x, a@example.com\"\n"),
            "2,\"****\",\"x, [email]\"\n"
        );
        // Unquoted empty is NULL; quoted empty is an empty string, which is masked.
        assert_eq!(masked(&c, "3,,n\n"), "3,,n\n");
        assert_eq!(masked(&c, "4,\"\",n\n"), "4,\"****\",n\n");
        // A newline inside quotes belongs to the value.
        assert_eq!(masked(&c, "5,\"two\nlines\",n\n"), "5,\"****\",n\n");
    }

    #[test]
    fn csv_values_decode_their_escapes() {
        let f = CopyFormat {
            escape: b'\\',
            ..csv()
        };
        assert_eq!(csv_value(b"\"a\\\"b\\\\c\"", &f), b"a\"b\\c");
        assert_eq!(csv_value(b"\"a\"\"b\"", &csv()), b"a\"b");
        assert_eq!(encode(b"a\"b", &csv()), b"\"a\"\"b\"");
        assert_eq!(text_value(b"a\\x41\\101\\n"), b"aAA\n");
    }
}
