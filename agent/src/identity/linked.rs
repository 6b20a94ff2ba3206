//! The identity-provider identity a requester's uid is linked to by `portcullis
//! login` (RFC 8628 device grant): carried on the [`Principal`](super::Principal) so
//! policy can admit or refuse requesters by their provider's groups and records say
//! who the person is beyond the local account.

use serde::{Deserialize, Serialize};

/// Most group claims kept per linked identity (a provider sending more is cut).
pub const MAX_LINKED_GROUPS: usize = 256;

/// A person as the identity provider named them when they signed in with
/// `portcullis login`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkedIdentity {
    /// The provider's issuer URL (`iss`).
    pub issuer: String,
    /// The provider's stable id for the person (`sub`).
    pub subject: String,
    /// Only an address the provider verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The provider's group claims at sign-in: `who = { idp_groups = [...] }` and
    /// policy groups' `idp_groups` match them.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Unix milliseconds when the link ends (`link_ttl` after the sign-in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

impl LinkedIdentity {
    /// Who, for people: `alice@example.com (idp)`, or the subject and issuer.
    #[must_use]
    pub fn label(&self) -> String {
        match &self.email {
            Some(email) => format!("{email} (idp)"),
            None => format!("{} (idp {})", self.subject, self.issuer),
        }
    }

    /// Whether the identity carries one of `groups`.
    #[must_use]
    pub fn in_any(&self, groups: &[String]) -> bool {
        self.groups.iter().any(|g| groups.contains(g))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_groups() {
        let mut who = LinkedIdentity {
            issuer: "https://id.example.com".into(),
            subject: "248289761001".into(),
            email: None,
            groups: vec!["analysts".into()],
            expires_at: None,
        };
        assert_eq!(who.label(), "248289761001 (idp https://id.example.com)");
        who.email = Some("carol@example.com".into());
        assert_eq!(who.label(), "carol@example.com (idp)");
        assert!(who.in_any(&["sre".into(), "analysts".into()]));
        assert!(!who.in_any(&["sre".into()]));
        assert!(!who.in_any(&[]));
    }
}
