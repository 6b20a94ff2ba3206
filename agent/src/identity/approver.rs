//! Who decides a held action: a local user calling the API socket, or a person signed
//! in through an identity provider (the web console's OpenID Connect login).
//!
//! An approval counts once per [`Approver::key`]; [`Approver::label`] is what messages
//! and records show; [`Approver::name`] is the one word "approved by …" uses. The JSON
//! form (tagged by `kind`) goes into audit records and the approvals table.

use super::Principal;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A person deciding a held action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Approver {
    /// A local user, from the API socket's peer credentials (never from what the
    /// caller says).
    Local {
        uid: u32,
        /// User name for `uid`, when the user database knows it.
        user: Option<String>,
        /// Primary and supplementary unix groups: policy groups admit by them.
        unix_groups: Vec<String>,
        /// The deciding process, for the audit record.
        pid: u32,
    },
    /// A subject of an identity provider, as its verified ID token says. Build it
    /// with [`Approver::idp`], which checks what the key relies on.
    Idp {
        /// The provider's issuer URL (`iss`).
        issuer: String,
        /// The provider's stable id for the person (`sub`).
        subject: String,
        /// Only an address the provider verified: policy groups admit by it.
        email: Option<String>,
        /// The provider's group claims: policy groups admit by them (`idp_groups`).
        groups: Vec<String>,
    },
}

/// Which kind of identity an approver has (a bounded metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApproverKind {
    Local,
    Idp,
}

impl ApproverKind {
    /// The name in metrics and JSON.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Idp => "idp",
        }
    }
}

/// Why an identity-provider identity cannot be an approver.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApproverError {
    #[error(
        "identity provider issuer {0:?} is not usable: it must be a non-empty URL without \
         spaces or `#`; check the issuer in the OpenID Connect settings"
    )]
    Issuer(String),
    #[error(
        "the identity provider gave an empty or unprintable subject; check that its ID \
         tokens carry a `sub` claim"
    )]
    Subject,
}

/// The issuer of Slack identities: a Slack user clicking an approval button is an
/// identity-provider approver with this issuer and the subject `TEAM/USER`.
pub const SLACK_ISSUER: &str = "https://slack.com";

impl Approver {
    /// A Slack user (member id `user` of workspace `team`), from a verified Slack
    /// callback.
    pub fn slack(team: &str, user: &str) -> Result<Self, ApproverError> {
        if user.is_empty() || user.contains(|c: char| !c.is_ascii_alphanumeric()) {
            return Err(ApproverError::Subject);
        }
        Self::idp(SLACK_ISSUER, format!("{team}/{user}"), None, Vec::new())
    }

    /// The Slack member id, for a Slack approver.
    #[must_use]
    pub fn slack_user(&self) -> Option<&str> {
        match self {
            Self::Idp {
                issuer, subject, ..
            } if issuer == SLACK_ISSUER => subject.rsplit('/').next(),
            _ => None,
        }
    }

    /// An identity-provider approver, once its issuer and subject are checked: the
    /// issuer must not contain `#` (OpenID issuers have no fragment), so the key
    /// `idp:ISSUER#SUBJECT` names exactly one person.
    pub fn idp(
        issuer: impl Into<String>,
        subject: impl Into<String>,
        email: Option<String>,
        groups: Vec<String>,
    ) -> Result<Self, ApproverError> {
        let (issuer, subject) = (issuer.into(), subject.into());
        if issuer.is_empty() || issuer.contains(|c: char| c == '#' || c.is_whitespace()) {
            return Err(ApproverError::Issuer(issuer));
        }
        if subject.is_empty() || subject.contains(char::is_control) {
            return Err(ApproverError::Subject);
        }
        Ok(Self::Idp {
            issuer,
            subject,
            email: email.filter(|e| !e.is_empty()),
            groups,
        })
    }

    /// The key an approval is counted under, once per person: `uid:1000`, or
    /// `idp:https://id.example.com#248289761001`.
    #[must_use]
    pub fn key(&self) -> String {
        match self {
            Self::Local { uid, .. } => format!("uid:{uid}"),
            Self::Idp {
                issuer, subject, ..
            } => format!("idp:{issuer}#{subject}"),
        }
    }

    /// Who, for people: `alice (uid 1000)`, `alice@example.com (idp)`.
    #[must_use]
    pub fn label(&self) -> String {
        match self {
            Self::Local {
                uid,
                user: Some(user),
                ..
            } => format!("{user} (uid {uid})"),
            Self::Local {
                uid, user: None, ..
            } => format!("uid {uid}"),
            Self::Idp {
                email: Some(email), ..
            } => format!("{email} (idp)"),
            Self::Idp {
                issuer,
                subject,
                email: None,
                ..
            } => format!("{subject} (idp {issuer})"),
        }
    }

    /// Who, in one word, as "approved by …" and "denied by …" say it: the user name
    /// (`uid 1000` without one), the email, or the subject.
    #[must_use]
    pub fn name(&self) -> String {
        match self {
            Self::Local {
                user: Some(user), ..
            } => user.clone(),
            Self::Local {
                uid, user: None, ..
            } => format!("uid {uid}"),
            Self::Idp {
                email: Some(email), ..
            } => email.clone(),
            Self::Idp { subject, .. } => subject.clone(),
        }
    }

    /// The local uid, for a local approver.
    #[must_use]
    pub fn uid(&self) -> Option<u32> {
        match self {
            Self::Local { uid, .. } => Some(*uid),
            Self::Idp { .. } => None,
        }
    }

    #[must_use]
    pub fn kind(&self) -> ApproverKind {
        match self {
            Self::Local { .. } => ApproverKind::Local,
            Self::Idp { .. } => ApproverKind::Idp,
        }
    }
}

impl From<&Principal> for Approver {
    /// The API socket's caller as an approver.
    fn from(p: &Principal) -> Self {
        Self::Local {
            uid: p.uid,
            user: p.user.clone(),
            unix_groups: p.unix_groups.clone(),
            pid: p.pid,
        }
    }
}

impl fmt::Display for Approver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;

    fn alice() -> Approver {
        Approver::Local {
            uid: 1000,
            user: Some("alice".into()),
            unix_groups: vec!["alice".into(), "dba".into()],
            pid: 42,
        }
    }

    fn idp(email: Option<&str>) -> Approver {
        Approver::idp(
            "https://id.example.com",
            "248289761001",
            email.map(str::to_owned),
            vec!["sre".into()],
        )
        .unwrap()
    }

    #[test]
    fn keys_count_one_person_once() {
        assert_eq!(alice().key(), "uid:1000");
        let mut other_process = alice();
        if let Approver::Local { pid, user, .. } = &mut other_process {
            *pid = 7;
            *user = None;
        }
        assert_eq!(other_process.key(), alice().key(), "same uid, same person");
        assert_eq!(
            idp(Some("a@example.com")).key(),
            "idp:https://id.example.com#248289761001"
        );
        assert_eq!(idp(None).key(), idp(Some("a@example.com")).key());
        assert_ne!(idp(None).key(), alice().key());
    }

    #[test]
    fn labels_and_names() {
        assert_eq!(alice().label(), "alice (uid 1000)");
        assert_eq!(alice().name(), "alice");
        assert_eq!(alice().to_string(), "alice (uid 1000)");
        let unnamed = Approver::Local {
            uid: 5,
            user: None,
            unix_groups: vec![],
            pid: 1,
        };
        assert_eq!(
            (unnamed.label(), unnamed.name()),
            ("uid 5".into(), "uid 5".into())
        );
        let mail = idp(Some("alice@example.com"));
        assert_eq!(mail.label(), "alice@example.com (idp)");
        assert_eq!(mail.name(), "alice@example.com");
        assert_eq!(
            idp(None).label(),
            "248289761001 (idp https://id.example.com)"
        );
        assert_eq!(idp(None).name(), "248289761001");
        assert_eq!(
            (alice().kind(), mail.kind()),
            (ApproverKind::Local, ApproverKind::Idp)
        );
        assert_eq!((alice().uid(), mail.uid()), (Some(1000), None));
    }

    #[test]
    fn json_is_tagged_and_round_trips() {
        let json = serde_json::to_value(alice()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"kind": "local", "uid": 1000, "user": "alice",
                               "unix_groups": ["alice", "dba"], "pid": 42})
        );
        let mail = idp(Some("alice@example.com"));
        let json = serde_json::to_value(&mail).unwrap();
        assert_eq!(json["kind"], "idp");
        assert_eq!(json["issuer"], "https://id.example.com");
        assert_eq!(serde_json::from_value::<Approver>(json).unwrap(), mail);
    }

    #[test]
    fn idp_identities_are_checked() {
        let bad_issuer = Approver::idp("https://id.example.com#x", "s", None, vec![]);
        assert!(matches!(bad_issuer, Err(ApproverError::Issuer(_))));
        assert!(Approver::idp("", "s", None, vec![]).is_err());
        assert!(Approver::idp("https://id example", "s", None, vec![]).is_err());
        assert_eq!(
            Approver::idp("https://id.example.com", "", None, vec![]),
            Err(ApproverError::Subject)
        );
        let empty_email = Approver::idp("https://i", "s", Some(String::new()), vec![]).unwrap();
        assert!(matches!(empty_email, Approver::Idp { email: None, .. }));
    }

    #[test]
    fn a_principal_becomes_a_local_approver() {
        let p = Principal {
            pid: 42,
            ppid: None,
            uid: 1000,
            gid: 1000,
            user: Some("alice".into()),
            unix_groups: vec!["alice".into(), "dba".into()],
            exe: Some("/usr/bin/portcullis".into()),
            cmdline: None,
            comm: "portcullis".into(),
            cgroup: None,
            idp: None,
        };
        assert_eq!(Approver::from(&p), alice());
    }
}
