//! Masking response bodies as they stream: `application/json` (and `+json`),
//! `application/x-ndjson` and `text/*` pass through the session's [`Masker`] in
//! pieces cut where no masked value can straddle the cut (after a newline, or in
//! JSON after a quote or comma), so memory stays bounded whatever the body's size.
//! `gzip`, `br`, `zstd` and `deflate` bodies are decoded first and sent decoded;
//! `Content-Length` and `Content-Encoding` are dropped then. Other types pass as
//! they are. A maskable body in an encoding the proxy cannot decode is refused
//! (`502`): unmasked data never leaves by a side door.
//!
//! With `mask_json` paths, a JSON body first goes through the session's
//! [`JsonRewriter`] (the selected values masked whole, in bounded memory), then
//! through the value masking. A body that turns out not to be JSON is cut off there
//! with an error: what follows could not be located, so it is not sent.

use super::reply::{BoxError, ProxyBody};
use crate::mask::{Masker, json_stream::JsonRewriter};
use async_compression::tokio::bufread::{BrotliDecoder, GzipDecoder, ZlibDecoder, ZstdDecoder};
use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt as _, TryStreamExt as _, stream::BoxStream};
use http_body_util::{BodyExt as _, StreamBody};
use hyper::{HeaderMap, body::Frame, header};
use std::sync::Arc;
use tokio_util::io::{ReaderStream, StreamReader};

/// Most bytes held back waiting for a safe place to cut; past it the piece is
/// masked as it stands.
const MAX_CARRY: usize = 64 * 1024;

/// How a response body is to be masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Json,
    Text,
}

/// The masking a response with `headers` needs: `Ok(None)` to pass it unchanged,
/// `Err` (the encoding) when it must be masked but cannot be decoded.
pub(super) fn plan(headers: &HeaderMap) -> Result<Option<(Kind, Encoding)>, String> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let kind = if essence == "application/json"
        || essence == "application/x-ndjson"
        || essence.ends_with("+json")
    {
        Kind::Json
    } else if essence.starts_with("text/") {
        Kind::Text
    } else {
        return Ok(None);
    };
    let coding = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase());
    let encoding = match coding.as_deref() {
        None | Some("" | "identity") => Encoding::Identity,
        Some("gzip" | "x-gzip") => Encoding::Gzip,
        Some("br") => Encoding::Brotli,
        Some("zstd") => Encoding::Zstd,
        Some("deflate") => Encoding::Deflate,
        Some(other) => {
            return Err(format!(
                "the response is {essence} in encoding `{other}`, which cannot be decoded to mask it"
            ));
        }
    };
    Ok(Some((kind, encoding)))
}

/// A response body's `Content-Encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Encoding {
    Identity,
    Gzip,
    Brotli,
    Zstd,
    Deflate,
}

/// The masked body of `body`; fix the headers with [`masked_headers`].
pub(super) fn mask_body(
    body: ProxyBody,
    kind: Kind,
    encoding: Encoding,
    masker: Arc<Masker>,
) -> ProxyBody {
    let raw = body.into_data_stream().map_err(std::io::Error::other);
    let decoded: BoxStream<'static, std::io::Result<Bytes>> = match encoding {
        Encoding::Identity => raw.boxed(),
        Encoding::Gzip => ReaderStream::new(GzipDecoder::new(StreamReader::new(raw))).boxed(),
        Encoding::Brotli => ReaderStream::new(BrotliDecoder::new(StreamReader::new(raw))).boxed(),
        Encoding::Zstd => ReaderStream::new(ZstdDecoder::new(StreamReader::new(raw))).boxed(),
        Encoding::Deflate => ReaderStream::new(ZlibDecoder::new(StreamReader::new(raw))).boxed(),
    };
    let json = match kind {
        Kind::Json => masker.json_rewriter(),
        Kind::Text => None,
    };
    let state = Masking {
        input: decoded,
        carry: BytesMut::new(),
        kind,
        masker,
        json,
        done: false,
    };
    let stream = futures_util::stream::unfold(state, Masking::next).map(|piece| {
        piece
            .map(Frame::data)
            .map_err(|e| -> BoxError { Box::new(e) })
    });
    StreamBody::new(stream).boxed_unsync()
}

/// Headers of a masked response: its length and encoding are no longer known.
pub(super) fn masked_headers(headers: &mut HeaderMap) {
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::CONTENT_ENCODING);
    headers.remove(header::ETAG);
    headers.remove(header::ACCEPT_RANGES);
}

/// The state of a body being masked.
struct Masking {
    input: BoxStream<'static, std::io::Result<Bytes>>,
    /// Bytes read but not yet sent: they may end in the middle of a value.
    carry: BytesMut,
    kind: Kind,
    masker: Arc<Masker>,
    /// The `mask_json` rewriting of a JSON body, when the session has paths.
    json: Option<JsonRewriter>,
    done: bool,
}

impl Masking {
    /// The next masked piece, or `None` at the end.
    async fn next(mut self) -> Option<(std::io::Result<Bytes>, Self)> {
        loop {
            if self.done {
                return None;
            }
            match self.input.next().await {
                Some(Ok(chunk)) => {
                    if let Err(error) = self.rewrite(&chunk) {
                        self.done = true;
                        return Some((Err(error), self));
                    }
                    if let Some(cut) = cut(&self.carry, self.kind) {
                        let piece = self.carry.split_to(cut);
                        return Some((Ok(self.mask(&piece)), self));
                    }
                }
                Some(Err(error)) => {
                    self.done = true;
                    return Some((Err(error), self));
                }
                None => {
                    self.done = true;
                    if let Some(json) = &mut self.json {
                        let mut out = Vec::new();
                        json.finish(&self.masker, &mut out);
                        self.carry.extend_from_slice(&out);
                    }
                    if self.carry.is_empty() {
                        return None;
                    }
                    let rest = std::mem::take(&mut self.carry);
                    return Some((Ok(self.mask(&rest)), self));
                }
            }
        }
    }

    /// Adds `chunk` to the carry, through the `mask_json` rewriter when there is one.
    fn rewrite(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        match &mut self.json {
            None => self.carry.extend_from_slice(chunk),
            Some(json) => {
                let mut out = Vec::with_capacity(chunk.len());
                json.feed(&self.masker, chunk, &mut out)
                    .map_err(std::io::Error::other)?;
                self.carry.extend_from_slice(&out);
            }
        }
        Ok(())
    }

    fn mask(&self, piece: &[u8]) -> Bytes {
        Bytes::from(self.masker.mask_value(piece).into_owned())
    }
}

/// Where `carry` can be cut with nothing masked straddling the cut: just after the
/// last newline (text), or the last newline, quote or comma (JSON); the whole of it
/// when it is over [`MAX_CARRY`] with no such place; `None` to wait for more.
fn cut(carry: &[u8], kind: Kind) -> Option<usize> {
    let boundary = |b: &u8| match kind {
        Kind::Text => *b == b'\n',
        Kind::Json => matches!(*b, b'\n' | b'"' | b','),
    };
    match carry.iter().rposition(boundary) {
        Some(at) => Some(at + 1),
        None if carry.len() > MAX_CARRY => Some(carry.len()),
        None => None,
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::mask::MaskSpec;
    use http_body_util::BodyExt;

    fn masker() -> Arc<Masker> {
        let spec = MaskSpec {
            mask: vec!["email".into()],
            ..MaskSpec::default()
        };
        Arc::new(Masker::compile(&[spec], None).unwrap())
    }

    /// A value split across chunks anywhere is still masked whole.
    #[tokio::test]
    async fn values_across_chunks_are_masked() {
        let json = br#"{"users":[{"email":"ann@example.com"},{"email":"bob@example.org"}]}"#;
        for split in 1..json.len() {
            let (a, b) = json.split_at(split);
            let chunks = vec![
                Ok::<_, std::io::Error>(Frame::data(Bytes::copy_from_slice(a))),
                Ok(Frame::data(Bytes::copy_from_slice(b))),
            ];
            let body = BodyExt::map_err(
                StreamBody::new(futures_util::stream::iter(chunks)),
                |e| -> BoxError { Box::new(e) },
            )
            .boxed_unsync();
            let masked = mask_body(body, Kind::Json, Encoding::Identity, masker());
            let out = masked.collect().await.unwrap().to_bytes();
            let text = String::from_utf8(out.to_vec()).unwrap();
            assert!(!text.contains("ann@example.com"), "split {split}: {text}");
            assert!(!text.contains("bob@example.org"), "split {split}: {text}");
            assert!(text.starts_with(r#"{"users":[{"email":""#), "{text}");
        }
    }

    /// gzip, br, zstd and deflate bodies are decoded, masked, and sent decoded.
    #[tokio::test]
    async fn compressed_bodies_are_decoded_and_masked() {
        use async_compression::tokio::bufread::{
            BrotliEncoder, GzipEncoder, ZlibEncoder, ZstdEncoder,
        };
        use tokio::io::AsyncReadExt as _;
        let json = br#"{"email":"ann@example.com","n":1}"#.repeat(1000);
        for encoding in [
            Encoding::Gzip,
            Encoding::Brotli,
            Encoding::Zstd,
            Encoding::Deflate,
        ] {
            let input = &json[..];
            let mut packed = Vec::new();
            match encoding {
                Encoding::Gzip => GzipEncoder::new(input).read_to_end(&mut packed).await,
                Encoding::Brotli => BrotliEncoder::new(input).read_to_end(&mut packed).await,
                Encoding::Zstd => ZstdEncoder::new(input).read_to_end(&mut packed).await,
                Encoding::Deflate | Encoding::Identity => {
                    ZlibEncoder::new(input).read_to_end(&mut packed).await
                }
            }
            .unwrap();
            let chunks: Vec<Result<Frame<Bytes>, std::io::Error>> = packed
                .chunks(100)
                .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
                .collect();
            let body = BodyExt::map_err(
                StreamBody::new(futures_util::stream::iter(chunks)),
                |e| -> BoxError { Box::new(e) },
            )
            .boxed_unsync();
            let out = mask_body(body, Kind::Json, encoding, masker())
                .collect()
                .await
                .unwrap()
                .to_bytes();
            let text = String::from_utf8(out.to_vec()).unwrap();
            assert_eq!(text.matches(r#""n":1"#).count(), 1000, "{encoding:?}");
            assert!(!text.contains("ann@example.com"), "{encoding:?}");
        }
    }

    #[test]
    fn plans_by_type_and_encoding() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, "image/png".parse().unwrap());
        assert_eq!(plan(&h).unwrap(), None);
        h.insert(
            header::CONTENT_TYPE,
            "application/json; charset=utf-8".parse().unwrap(),
        );
        assert_eq!(plan(&h).unwrap(), Some((Kind::Json, Encoding::Identity)));
        h.insert(header::CONTENT_ENCODING, "br".parse().unwrap());
        assert_eq!(plan(&h).unwrap(), Some((Kind::Json, Encoding::Brotli)));
        h.insert(header::CONTENT_ENCODING, "compress".parse().unwrap());
        assert!(plan(&h).is_err());
        h.insert(header::CONTENT_TYPE, "text/html".parse().unwrap());
        h.remove(header::CONTENT_ENCODING);
        assert_eq!(plan(&h).unwrap(), Some((Kind::Text, Encoding::Identity)));
    }
}
