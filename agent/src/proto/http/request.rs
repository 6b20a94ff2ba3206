//! One client request as the gate sees it: checked for framing a proxy must not
//! pass on (smuggling), its path normalized once, and turned into an
//! [`Action::Http`].
//!
//! Normalization, done once before any rule matches: the path is percent-decoded
//! once (`%75` → `u`; `%2F` → `/`), dot segments are removed (RFC 3986 §5.2.4) and
//! repeated slashes merged, so `/v1/%75sers/../users//42` is `/v1/users/42`. A path
//! that does not decode to UTF-8, holds a control character or a backslash, or is not
//! in origin form (`/…`, or `*` for `OPTIONS`) is refused. The request still goes
//! upstream as the client wrote it: the server reads the same path the rules did.

use crate::gate::Action;
use hyper::{HeaderMap, Method, Request, Version, header};

/// Headers copied into the action (and so shown to approvers and rules).
const ACTION_HEADERS: [&str; 3] = ["content-type", "content-length", "user-agent"];
/// Longest header value copied into the action.
const ACTION_HEADER_CHARS: usize = 200;

/// Why a request is refused before the gate sees it; the client gets `400`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadRequest {
    #[error("the request has both Content-Length and Transfer-Encoding (request smuggling)")]
    Smuggling,
    #[error("the request names no host (Host header or :authority)")]
    NoHost,
    #[error("the request path is not in origin form (/…)")]
    PathForm,
    #[error("the request path does not decode to text, or holds a control character or `\\`")]
    PathDecoding,
    #[error("the request has more than one Host header, or one that disagrees with its URI")]
    Host,
}

/// The parts of a request the proxy decides on and records.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub method: String,
    pub host: String,
    /// Normalized (see the module docs).
    pub path: String,
    pub query: Option<String>,
    pub headers: Vec<(String, String)>,
    /// Whether the request asks to switch protocols (WebSocket).
    pub upgrade: bool,
    /// Why the requester needs it, from a [`REASON_HEADER`] (bounded, one line).
    pub justification: Option<String>,
}

/// The header a client states its reason in, for approvers; never sent upstream.
pub const REASON_HEADER: &str = "portcullis-reason";

impl Parsed {
    /// The gate's view of this request.
    pub fn action(&self) -> Action {
        Action::Http {
            method: self.method.clone(),
            host: self.host.clone(),
            path: self.path.clone(),
            query: self.query.clone(),
            headers: self.headers.clone(),
        }
    }
}

/// Checks `req` and describes it; `fallback_host` is the address the client dialled.
pub fn parse<B>(req: &Request<B>, fallback_host: &str) -> Result<Parsed, BadRequest> {
    let headers = req.headers();
    if headers.contains_key(header::CONTENT_LENGTH)
        && headers.contains_key(header::TRANSFER_ENCODING)
    {
        return Err(BadRequest::Smuggling);
    }
    let host = host_of(req, fallback_host)?;
    let (raw_path, query) = match req.uri().path_and_query() {
        Some(pq) => (pq.path(), pq.query()),
        None => ("/", None),
    };
    let path = if req.method() == Method::OPTIONS && raw_path == "*" {
        "*".to_owned()
    } else if raw_path.starts_with('/') {
        normalize(raw_path)?
    } else {
        return Err(BadRequest::PathForm);
    };
    let upgrade = req.version() == Version::HTTP_11
        && headers.contains_key(header::UPGRADE)
        && connection_has(headers, "upgrade");
    Ok(Parsed {
        method: req.method().as_str().to_owned(),
        host,
        path,
        query: query.map(str::to_owned),
        headers: chosen_headers(headers),
        upgrade,
        justification: justification(headers),
    })
}

/// The host the request names: `:authority`/absolute URI, else the one `Host`
/// header; both present must agree.
fn host_of<B>(req: &Request<B>, fallback: &str) -> Result<String, BadRequest> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err(BadRequest::Host);
    }
    let header = match header {
        Some(value) => Some(value.to_str().map_err(|_| BadRequest::Host)?),
        None => None,
    };
    let authority = req
        .uri()
        .authority()
        .map(hyper::http::uri::Authority::as_str);
    match (authority, header) {
        (Some(a), Some(h)) if !a.eq_ignore_ascii_case(h) => Err(BadRequest::Host),
        (Some(a), _) => Ok(a.to_ascii_lowercase()),
        (None, Some(h)) if !h.is_empty() => Ok(h.to_ascii_lowercase()),
        (None, _) if req.version() >= Version::HTTP_11 => Err(BadRequest::NoHost),
        (None, _) => Ok(fallback.to_owned()),
    }
}

/// The [`REASON_HEADER`]'s value, on one line and bounded; `None` if absent or blank.
fn justification(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(REASON_HEADER)?;
    let text = crate::gate::bounded_justification(&String::from_utf8_lossy(value.as_bytes()));
    (!text.is_empty()).then_some(text)
}

/// Whether the `Connection` header lists `token`.
pub fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn chosen_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    ACTION_HEADERS
        .iter()
        .filter_map(|name| {
            let value = headers.get(*name)?.to_str().ok()?;
            Some((
                (*name).to_owned(),
                value.chars().take(ACTION_HEADER_CHARS).collect(),
            ))
        })
        .collect()
}

/// The path the rules match: decoded once, dot segments removed, slashes merged.
pub fn normalize(raw: &str) -> Result<String, BadRequest> {
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| BadRequest::PathDecoding)?;
    if decoded.chars().any(|c| c.is_control() || c == '\\') {
        return Err(BadRequest::PathDecoding);
    }
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = decoded.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "." | "" => trailing_slash = i == last,
            ".." => {
                out.pop();
                trailing_slash = i == last;
            }
            other => {
                out.push(other);
                trailing_slash = false;
            }
        }
    }
    let mut path = String::with_capacity(decoded.len());
    for segment in &out {
        path.push('/');
        path.push_str(segment);
    }
    if trailing_slash || path.is_empty() {
        path.push('/');
    }
    Ok(path)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn normalizes_once_before_matching() {
        let cases = [
            ("/v1/%75sers/../users/42", "/v1/users/42"),
            ("/v1/users/42", "/v1/users/42"),
            ("/a/./b/../../admin/x", "/admin/x"),
            ("/../../etc", "/etc"),
            ("//admin///x", "/admin/x"),
            ("/admin/", "/admin/"),
            ("/admin/.", "/admin/"),
            ("/", "/"),
            ("/a/%2e%2e/admin", "/admin"),
            ("/v1/users%2F42", "/v1/users/42"),
            ("/%252e%252e/x", "/%2e%2e/x"),
            ("/caf%C3%A9", "/café"),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize(raw).unwrap(), want, "{raw}");
        }
        for bad in ["/%00", "/a%0d%0ab", "/%ff", "/a%5cb"] {
            assert_eq!(normalize(bad), Err(BadRequest::PathDecoding), "{bad}");
        }
    }

    #[test]
    fn smuggling_and_hosts_are_refused() {
        let both = Request::post("/x")
            .header("host", "api")
            .header("content-length", "3")
            .header("transfer-encoding", "chunked")
            .body(())
            .unwrap();
        assert_eq!(parse(&both, "x").unwrap_err(), BadRequest::Smuggling);
        let two_hosts = Request::get("/x")
            .header("host", "a")
            .header("host", "b")
            .body(())
            .unwrap();
        assert_eq!(parse(&two_hosts, "x").unwrap_err(), BadRequest::Host);
        let none = Request::get("/x").body(()).unwrap();
        assert_eq!(parse(&none, "x").unwrap_err(), BadRequest::NoHost);
        let ok = Request::delete("/v1/%75sers/../users/42?force=1")
            .header("host", "API.internal")
            .header("user-agent", "curl/8")
            .body(())
            .unwrap();
        let parsed = parse(&ok, "x").unwrap();
        assert_eq!(parsed.host, "api.internal");
        assert_eq!(parsed.path, "/v1/users/42");
        assert_eq!(parsed.query.as_deref(), Some("force=1"));
        assert_eq!(parsed.headers, [("user-agent".into(), "curl/8".into())]);
    }
}
