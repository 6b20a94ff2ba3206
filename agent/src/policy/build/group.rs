//! A `[[group]]` table: its members by local identity (`users`, `unix_groups`) and by
//! identity-provider identity (`idp_groups`, `emails`).

use toml::Spanned;

use super::{Builder, checked_name, duplicate};
use crate::policy::{PolicyError, file::GroupFile, load::Source, matching::Group};

impl Builder {
    pub(in crate::policy) fn add_group(
        &mut self,
        src: &Source,
        file: &GroupFile,
    ) -> Result<(), PolicyError> {
        let name = checked_name(src, &file.name, "group")?;
        if let Some((_, at)) = self.groups.get(name) {
            return Err(duplicate(src, &file.name, "group", at));
        }
        let idp_groups = checked_idp_groups(src, &format!("group `{name}`"), &file.idp_groups)?;
        let mut emails = Vec::with_capacity(file.emails.len());
        for email in &file.emails {
            emails.push(checked_email(src, name, email)?);
        }
        let group = Group {
            users: file.users.clone(),
            unix_groups: file.unix_groups.clone(),
            idp_groups,
            emails,
            slack_users: file.slack_users.clone(),
        };
        self.groups
            .insert(name.to_owned(), (group, src.location(&file.name.span())));
        Ok(())
    }
}

/// Names in an `idp_groups` list of `owner` (`group \`sre\``, `rule \`x\``): each
/// must be a name the identity provider could send in its groups claim.
pub(in crate::policy) fn checked_idp_groups(
    src: &Source,
    owner: &str,
    list: &[Spanned<String>],
) -> Result<Vec<String>, PolicyError> {
    let mut names = Vec::with_capacity(list.len());
    for group in list {
        let text = group.get_ref();
        if text.trim().is_empty() || text.contains(char::is_control) {
            return Err(src.error(
                group.span(),
                format!(
                    "empty or unprintable name in `idp_groups` of {owner}; write the group \
                     as the identity provider names it in its `groups` claim"
                ),
            ));
        }
        names.push(text.clone());
    }
    Ok(names)
}

/// An address in `emails`, lowercased (compared without regard to case).
fn checked_email(
    src: &Source,
    group: &str,
    email: &Spanned<String>,
) -> Result<String, PolicyError> {
    let text = email.get_ref();
    let plausible = text
        .split_once('@')
        .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
        && !text.contains(|c: char| c.is_whitespace() || c.is_control());
    if !plausible {
        return Err(src.error(
            email.span(),
            format!(
                "`{text}` in `emails` of group `{group}` is not an email address; write it \
                 as `name@example.com`"
            ),
        ));
    }
    Ok(text.to_lowercase())
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use crate::{
        identity::Approver,
        policy::{Policy, load::tests::assert_error},
    };

    #[test]
    fn idp_groups_and_emails_must_be_usable() {
        let group = |body: &str| format!("[[group]]\nname = \"g\"\n{body}\n");
        let cases = [
            (
                "idp_groups = [\"sre\",\n  \"\"]",
                "a.toml:4",
                "empty or unprintable name in `idp_groups` of group `g`",
            ),
            (
                "idp_groups = [\" \"]",
                "a.toml:3",
                "empty or unprintable name in `idp_groups`",
            ),
            (
                "emails = [\"\"]",
                "a.toml:3",
                "`` in `emails` of group `g` is not an email address",
            ),
            (
                "emails = [\"alice\"]",
                "a.toml:3",
                "`alice` in `emails` of group `g`",
            ),
            (
                "emails = [\"@example.com\"]",
                "a.toml:3",
                "is not an email address",
            ),
            (
                "emails = [\"alice@\"]",
                "a.toml:3",
                "is not an email address",
            ),
            (
                "emails = [\"a b@example.com\"]",
                "a.toml:3",
                "is not an email address",
            ),
            ("emails = [1]", "a.toml:3", "invalid type"),
            (
                "idp_group = [\"sre\"]",
                "a.toml:3",
                "unknown field `idp_group`",
            ),
        ];
        for (body, location, reason) in cases {
            assert_error(&[("a.toml", &group(body))], location, reason);
        }
    }

    #[test]
    fn idp_approvers_are_members_by_idp_group_or_email() {
        let dir = tempfile::tempdir().unwrap();
        let text = "[[group]]\nname = \"sre\"\nusers = [\"bob\"]\nidp_groups = [\"sre-oncall\"]\n\
                    emails = [\"Alice@Example.com\"]\n";
        std::fs::write(dir.path().join("g.toml"), text).unwrap();
        let policy = Policy::load_dir(dir.path()).unwrap();
        let idp = |email: Option<&str>, groups: &[&str]| {
            Approver::idp(
                "https://id.example.com",
                "s1",
                email.map(str::to_owned),
                groups.iter().map(|g| (*g).to_owned()).collect(),
            )
            .unwrap()
        };
        assert!(policy.is_member("sre", &idp(None, &["staff", "sre-oncall"])));
        assert!(policy.is_member("sre", &idp(Some("alice@example.com"), &[])));
        assert!(
            policy.is_member("sre", &idp(Some("ALICE@EXAMPLE.COM"), &[])),
            "emails compare without regard to case"
        );
        assert!(!policy.is_member("sre", &idp(Some("mallory@example.com"), &["SRE-ONCALL"])));
        assert!(!policy.is_member("sre", &idp(None, &[])));
        // A local name or unix group admits local approvers only, and an IdP group or
        // email IdP approvers only.
        assert!(!policy.is_member("sre", &idp(Some("bob"), &["bob"])));
        let bob = Approver::Local {
            uid: 1002,
            user: Some("bob".into()),
            unix_groups: vec!["sre-oncall".into()],
            pid: 1,
        };
        assert!(policy.is_member("sre", &bob));
        let carol = Approver::Local {
            uid: 1003,
            user: Some("alice@example.com".into()),
            unix_groups: vec!["sre-oncall".into()],
            pid: 1,
        };
        assert!(!policy.is_member("sre", &carol));
    }
}
