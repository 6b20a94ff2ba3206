//! The proxy's own answers: a JSON body saying what happened, who decided and why,
//! with the status a client library understands (`403` refused, `400` unparseable,
//! `413` too large to hold, `502` target unreachable).

use crate::{gate::ActionOutcome, gate::Gone, policy::Protocol};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, combinators::UnsyncBoxBody};
use hyper::{Response, StatusCode, header};
use serde_json::{Value, json};

/// What a body's stream fails with.
pub(super) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every body the proxy sends either way: the peer's, streamed (and maybe masked),
/// or its own.
pub(super) type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// A body of `bytes`, whole.
pub(super) fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// The header every answer of the proxy's own carries.
pub(super) const OWN: &str = "x-portcullis";

/// A JSON answer; `close` also ends the connection (after a framing error the
/// rest of the stream cannot be trusted).
fn json_reply(status: StatusCode, body: &Value, close: bool) -> Response<ProxyBody> {
    let text = body.to_string();
    let mut response = Response::new(full(text));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    headers.insert(OWN, header::HeaderValue::from_static("refused"));
    if close {
        headers.insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    response
}

/// The status and body for a request the gate did not allow.
pub(super) fn refused(outcome: &ActionOutcome) -> Response<ProxyBody> {
    let (status, error) = match outcome {
        ActionOutcome::Expired { .. } => {
            (StatusCode::FORBIDDEN, "request timed out awaiting approval")
        }
        ActionOutcome::Abandoned {
            gone: Some(Gone::TooLarge),
            ..
        } => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large to hold for approval",
        ),
        ActionOutcome::Abandoned { .. } => (StatusCode::FORBIDDEN, "request abandoned"),
        ActionOutcome::Failed { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "request could not be held for approval",
        ),
        _ => (StatusCode::FORBIDDEN, "request denied by Portcullis"),
    };
    let body = json!({
        "error": error,
        "request": outcome.request(),
        "decided_by": outcome.decided_by(),
        "reason": outcome.message(),
    });
    json_reply(status, &body, false)
}

/// A request the proxy cannot read safely: refused, and the connection closed.
pub(super) fn bad_request(reason: &str) -> Response<ProxyBody> {
    bad_head(StatusCode::BAD_REQUEST, reason)
}

/// A request head refused with `status` (`400`, or `431` when too large), and the
/// connection closed.
pub(super) fn bad_head(status: StatusCode, reason: &str) -> Response<ProxyBody> {
    let error = if status == StatusCode::BAD_REQUEST {
        "bad request"
    } else {
        "request header fields too large"
    };
    let body = json!({
        "error": error,
        "request": Value::Null,
        "decided_by": "portcullis",
        "reason": reason,
    });
    json_reply(status, &body, true)
}

/// The target could not be reached or answered badly.
pub(super) fn bad_gateway(reason: &str) -> Response<ProxyBody> {
    let body = json!({
        "error": "bad gateway",
        "request": Value::Null,
        "decided_by": Value::Null,
        "reason": reason,
    });
    json_reply(StatusCode::BAD_GATEWAY, &body, false)
}

/// Every request on a connection the gate refused.
pub(super) fn refused_connection(reason: &str, protocol: Protocol) -> Response<ProxyBody> {
    let body = json!({
        "error": format!("connection to this {protocol} target denied by Portcullis"),
        "request": Value::Null,
        "decided_by": Value::Null,
        "reason": reason,
    });
    json_reply(StatusCode::FORBIDDEN, &body, true)
}

/// An answer whose record could not be written: not given (fail closed).
pub(super) fn not_recorded() -> Response<ProxyBody> {
    let body = json!({
        "error": "not recorded",
        "request": Value::Null,
        "decided_by": Value::Null,
        "reason": "the request's record could not be written (check the store's health)",
    });
    json_reply(StatusCode::SERVICE_UNAVAILABLE, &body, true)
}
