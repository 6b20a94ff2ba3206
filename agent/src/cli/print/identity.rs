//! The identity-provider identity a session's requester had linked with `portcullis
//! login`, as `sessions show` and `sessions replay` print it.

use super::{at, clean};
use serde_json::Value;

/// `carol@example.com (idp https://id.example.com) groups [analysts]`, from the
/// session's `principal.idp`; `None` when the requester had no linked identity.
pub fn linked(session: &Value) -> Option<String> {
    let idp = at(session, "/principal/idp");
    let issuer = idp.get("issuer")?.as_str()?;
    let subject = idp.get("subject")?.as_str()?;
    let who = idp
        .get("email")
        .and_then(Value::as_str)
        .map_or_else(|| subject.to_owned(), str::to_owned);
    let groups: Vec<&str> = idp
        .get("groups")
        .and_then(Value::as_array)
        .map(|g| g.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    Some(clean(
        &format!("{who} (idp {issuer}) groups [{}]", groups.join(", ")),
        false,
    ))
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn prints_the_linked_identity_cleaned() {
        let s = serde_json::json!({ "principal": { "idp": {
            "issuer": "https://id.example.com", "subject": "s1",
            "email": "carol@example.com", "groups": ["analysts", "x\u{1b}[2J"] } } });
        assert_eq!(
            linked(&s).unwrap(),
            "carol@example.com (idp https://id.example.com) groups [analysts, x\\u{1b}[2J]"
        );
        assert!(linked(&serde_json::json!({ "principal": { "uid": 1 } })).is_none());
        assert!(linked(&serde_json::json!({ "principal": null })).is_none());
    }
}
