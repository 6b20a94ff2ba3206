//! Requesters matched by the identity they linked with `portcullis login` (issue 20):
//! `who = { idp_groups = [...] }` and policy groups' `idp_groups` / `emails`.
#![expect(clippy::unwrap_used, reason = "tests")]

use super::tests::principal;
use crate::{
    identity::{LinkedIdentity, Principal},
    policy::{Policy, Verdict, load::tests::assert_error},
};

fn policy(rules: &str) -> Policy {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[[target]]\nname = \"db\"\nprotocol = \"tcp\"\naddress = \"127.0.0.2:5432\"\n\
         [[group]]\nname = \"analysts\"\nidp_groups = [\"analytics\"]\nemails = [\"Dana@Example.com\"]\n\
         [[rule]]\nname = \"connect\"\ntargets = [\"db\"]\naction = \"allow\"\n{rules}"
    );
    std::fs::write(dir.path().join("p.toml"), text).unwrap();
    Policy::load_dir(dir.path()).unwrap()
}

/// `nobody`, linked (or not) to an identity with `email` and `groups`.
fn linked(email: Option<&str>, groups: &[&str]) -> Principal {
    let mut p = principal("nobody", 65534, &["nogroup"], "/usr/bin/psql");
    p.idp = Some(LinkedIdentity {
        issuer: "https://id.example.com".into(),
        subject: "s-1".into(),
        email: email.map(str::to_owned),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        expires_at: None,
    });
    p
}

#[test]
fn who_idp_groups_matches_the_linked_identity_only() {
    let p = policy(
        "[[rule]]\nname = \"contractors-out\"\ntargets = [\"db\"]\n\
         who = { idp_groups = [\"contractors\"] }\naction = \"deny\"\n",
    );
    let contractor = linked(Some("carol@example.com"), &["staff", "contractors"]);
    let staff = linked(Some("alice@example.com"), &["staff"]);
    let unlinked = principal("nobody", 65534, &["contractors"], "/usr/bin/psql");
    let decided = p.decide(&contractor, "db");
    assert_eq!(decided.verdict, Verdict::Deny);
    assert_eq!(decided.rule.as_deref(), Some("contractors-out"));
    assert_eq!(p.decide(&staff, "db").verdict, Verdict::Allow);
    assert_eq!(
        p.decide(&unlinked, "db").verdict,
        Verdict::Allow,
        "a unix group of the same name is not an IdP group"
    );
}

#[test]
fn policy_groups_admit_requesters_by_linked_groups_or_email() {
    let p = policy(
        "[[rule]]\nname = \"analysts-out\"\ntargets = [\"db\"]\n\
         who = { groups = [\"analysts\"] }\naction = \"deny\"\n",
    );
    for (who, expected) in [
        (linked(None, &["analytics"]), Verdict::Deny),
        (linked(Some("dana@example.com"), &[]), Verdict::Deny),
        (linked(Some("erin@example.com"), &["sales"]), Verdict::Allow),
        (
            principal("analytics", 1, &["analytics"], "/usr/bin/psql"),
            Verdict::Allow,
        ),
    ] {
        assert_eq!(p.decide(&who, "db").verdict, expected, "{:?}", who.idp);
    }
}

#[test]
fn bad_idp_groups_in_who_are_refused_with_their_line() {
    let rule = |who: &str| {
        format!(
            "[[target]]\nname = \"db\"\nprotocol = \"tcp\"\naddress = \"127.0.0.2:5432\"\n\
             [[rule]]\nname = \"r\"\ntargets = [\"db\"]\naction = \"deny\"\nwho = {{ {who} }}\n"
        )
    };
    assert_error(
        &[("a.toml", &rule("idp_groups = [\"ok\", \"\"]"))],
        "a.toml:9",
        "empty or unprintable name in `idp_groups` of rule `r`",
    );
    assert_error(
        &[("a.toml", &rule("idp_groups = [1]"))],
        "a.toml:9",
        "invalid type",
    );
    assert_error(
        &[("a.toml", &rule("idp_group = [\"x\"]"))],
        "a.toml:9",
        "unknown field `idp_group`",
    );
}
