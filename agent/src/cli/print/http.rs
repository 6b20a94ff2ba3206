//! An `http` event of a replay transcript: the request line, the headers kept
//! (credentials already redacted by the recorder), sizes and body samples both ways,
//! and the status.

use super::{at, clean, replay::Shown};
use serde_json::Value;

/// An HTTP request and its response, as a short transcript.
pub(super) fn http(d: &Value) -> Shown {
    let method = clean(at(d, "/method").as_str().unwrap_or("?"), false);
    let host = clean(at(d, "/host").as_str().unwrap_or_default(), false);
    let url = clean(at(d, "/url").as_str().unwrap_or_default(), false);
    let version = clean(at(d, "/version").as_str().unwrap_or_default(), false);
    let mut lines = vec![format!("    {method} {host}{url} {version}")];
    if url.split('?').next() != at(d, "/path").as_str() {
        lines.push(format!(
            "    path     {} (as the rules read it)",
            clean(at(d, "/path").as_str().unwrap_or_default(), false)
        ));
    }
    lines.extend(headers(at(d, "/request_headers"), '>'));
    lines.extend(body(d, "request"));
    lines.extend(headers(at(d, "/response_headers"), '<'));
    lines.extend(body(d, "response"));
    if at(d, "/upgrade").as_bool() == Some(true) {
        let line = if at(d, "/relay").as_str() == Some("ended") {
            "    upgraded: the relay has ended (bytes moved both ways above)"
        } else {
            "    upgraded: relayed both ways after the 101"
        };
        lines.push(line.to_owned());
    }
    let status = at(d, "/status").as_u64();
    Shown {
        tag: match status {
            Some(code) => format!("{method} {code}"),
            None => method.clone(),
        },
        lines,
        result: status.map(|code| format!("HTTP {code}")),
        tail: Vec::new(),
    }
}

fn headers(map: &Value, arrow: char) -> Vec<String> {
    map.as_object()
        .into_iter()
        .flatten()
        .map(|(name, value)| {
            let value = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_owned);
            format!(
                "    {arrow} {}: {}",
                clean(name, false),
                clean(&value, false)
            )
        })
        .collect()
}

fn body(d: &Value, side: &str) -> Vec<String> {
    let bytes = at(d, &format!("/{side}_bytes")).as_u64().unwrap_or(0);
    if bytes == 0 {
        return Vec::new();
    }
    let mut lines = vec![format!("    {side:<8} {bytes} bytes")];
    if let Some(sample) = at(d, &format!("/{side}_body")).as_str() {
        lines.extend(
            clean(sample, true)
                .lines()
                .take(20)
                .map(|line| format!("      {line}")),
        );
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_http_event_reads_like_a_request_and_its_response() {
        let shown = http(&json!({
            "method": "DELETE", "host": "api.internal", "url": "/v1/%75sers/42?force=…",
            "path": "/v1/users/42", "version": "HTTP/1.1", "status": 403,
            "request_headers": {"authorization": "[redacted]"},
            "response_headers": {"content-type": "application/json"},
            "request_bytes": 0, "response_bytes": 12, "response_body": "{\"error\":1}",
        }));
        assert_eq!(shown.tag, "DELETE 403");
        let text = shown.lines.join("\n");
        assert!(
            text.contains("DELETE api.internal/v1/%75sers/42?force=… HTTP/1.1"),
            "{text}"
        );
        assert!(
            text.contains("path     /v1/users/42 (as the rules read it)"),
            "{text}"
        );
        assert!(text.contains("> authorization: [redacted]"), "{text}");
        assert!(text.contains("response 12 bytes"), "{text}");
        assert_eq!(shown.result.as_deref(), Some("HTTP 403"));
    }
}
