//! Validating parsed policy files and building the domain types from them.

mod action;
mod group;
mod http;
mod ssh;

use std::collections::HashMap;

use toml::Spanned;

use super::{
    BackendTls, Credentials, Policy, PolicyError, Protocol, Target, TargetAddress, TargetTls,
    file::{RuleFile, TargetFile, WhoFile},
    filter::Filter,
    load::Source,
    matching::{Group, Rule, RuleTargets, Who},
};
use crate::secret::SecretRef;

/// The policy under construction, with where each name was first defined.
#[derive(Default)]
pub(super) struct Builder {
    targets: Vec<Target>,
    target_locations: HashMap<String, String>,
    /// Which target (and where) claimed each address, by canonical form.
    address_owners: HashMap<TargetAddress, (String, String)>,
    groups: HashMap<String, (Group, String)>,
    rules: Vec<Rule>,
    rule_locations: HashMap<String, String>,
}

impl Builder {
    pub(super) fn finish(self) -> Policy {
        Policy {
            targets: self.targets,
            groups: self
                .groups
                .into_iter()
                .map(|(name, (group, _))| (name, group))
                .collect(),
            rules: self.rules,
        }
    }

    pub(super) fn add_target(
        &mut self,
        src: &Source,
        file: &TargetFile,
    ) -> Result<(), PolicyError> {
        let name = checked_name(src, &file.name, "target")?;
        unique(src, &file.name, "target", &mut self.target_locations)?;
        let protocol = protocol(src, &file.protocol)?;
        let written: Vec<&Spanned<String>> = match (&file.address, &file.addresses) {
            (Some(address), None) => vec![address],
            (None, Some(list)) if list.get_ref().is_empty() => {
                return Err(src.error(
                    list.span(),
                    format!("empty `addresses` in target `{name}`; list at least one `ip:port` or `host:port`"),
                ));
            }
            (None, Some(list)) => list.get_ref().iter().collect(),
            (Some(_), Some(list)) => {
                return Err(src.error(
                    list.span(),
                    format!("target `{name}` has both `address` and `addresses`; keep one of them"),
                ));
            }
            (None, None) => {
                return Err(src.error(
                    file.name.span(),
                    format!("target `{name}` has no address; add `address = \"ip:port\"` or `addresses = [...]`"),
                ));
            }
        };
        let mut addresses = Vec::with_capacity(written.len());
        for text in written {
            let address = TargetAddress::parse(text.get_ref())
                .map_err(|reason| src.error(text.span(), format!("target `{name}`: {reason}")))?;
            if let Some((owner, at)) = self.address_owners.get(&address.canonical()) {
                return Err(src.error(
                    text.span(),
                    format!(
                        "address `{address}` of target `{name}` is already used by target `{owner}` \
                         ({at}); a connection must belong to exactly one target, remove one of them"
                    ),
                ));
            }
            let owner = (name.to_owned(), src.location(&text.span()));
            self.address_owners.insert(address.canonical(), owner);
            addresses.push(address);
        }
        let (
            Login {
                credentials,
                tls,
                client_auth,
                http_credentials,
            },
            ssh,
        ) = if protocol == Protocol::Ssh {
            let (ssh, credentials) = ssh::ssh_target(src, name, file)?;
            let login = Login {
                credentials,
                tls: TargetTls::default(),
                client_auth: None,
                http_credentials: None,
            };
            (login, Some(ssh))
        } else {
            ssh::refuse_ssh_keys(src, name, protocol, file)?;
            (login(src, name, protocol, file)?, None)
        };
        self.targets.push(Target {
            name: name.to_owned(),
            protocol,
            addresses,
            description: file.description.clone(),
            credentials,
            tls,
            client_auth,
            ssh,
            http_credentials,
        });
        Ok(())
    }

    pub(super) fn add_rule(&mut self, src: &Source, file: &RuleFile) -> Result<(), PolicyError> {
        let name = checked_name(src, &file.name, "rule")?;
        unique(src, &file.name, "rule", &mut self.rule_locations)?;
        if file.targets.get_ref().is_empty() {
            return Err(src.error(
                file.targets.span(),
                format!(
                    "empty `targets` in rule `{name}`; list target names, or \"*\" for every target"
                ),
            ));
        }
        let mut all = false;
        let mut names = Vec::new();
        for target in file.targets.get_ref() {
            if target.get_ref() == "*" {
                all = true;
            } else if self.target_locations.contains_key(target.get_ref()) {
                names.push(target.get_ref().clone());
            } else {
                return Err(src.error(
                    target.span(),
                    format!(
                        "unknown target `{}` in rule `{name}`; define it in a [[target]] table or fix the name",
                        target.get_ref()
                    ),
                ));
            }
        }
        let who = match &file.who {
            Some(who) => Some(self.who(src, name, who)?),
            None => None,
        };
        let action = self.action(src, name, file)?;
        let filter = Filter::parse(src, name, file)?;
        let mask = mask_spec(src, name, file)?;
        if let Some(filter) = &filter {
            filter.check_targets(src, name, &names, &self.targets, file.targets.span())?;
        }
        self.rules.push(Rule {
            name: name.to_owned(),
            targets: if all {
                RuleTargets::All
            } else {
                RuleTargets::Named(names)
            },
            who,
            action,
            filter,
            mask,
            description: file.description.clone(),
        });
        Ok(())
    }

    fn who(&self, src: &Source, rule: &str, file: &Spanned<WhoFile>) -> Result<Who, PolicyError> {
        let who = file.get_ref();
        if who.users.is_empty()
            && who.groups.is_empty()
            && who.unix_groups.is_empty()
            && who.uids.is_empty()
            && who.idp_groups.is_empty()
            && who.exe.is_empty()
        {
            return Err(src.error(
                file.span(),
                format!(
                    "empty `who` in rule `{rule}`; remove `who` to mean everyone, or list \
                     users, groups, unix_groups, uids, idp_groups or exe"
                ),
            ));
        }
        let idp_groups =
            group::checked_idp_groups(src, &format!("rule `{rule}`"), &who.idp_groups)?;
        let mut groups = Vec::with_capacity(who.groups.len());
        for group in &who.groups {
            let Some((found, _)) = self.groups.get(group.get_ref()) else {
                return Err(src.error(
                    group.span(),
                    format!(
                        "unknown group `{}` in rule `{rule}`; define it in a [[group]] table or fix the name",
                        group.get_ref()
                    ),
                ));
            };
            groups.push(found.clone());
        }
        for exe in &who.exe {
            if !exe.get_ref().starts_with(['/', '*']) {
                return Err(src.error(
                    exe.span(),
                    format!(
                        "exe `{}` in rule `{rule}` is not an absolute path; write the full path \
                         (e.g. `/usr/bin/psql`) or a glob (e.g. `*/psql`)",
                        exe.get_ref()
                    ),
                ));
            }
        }
        Ok(Who {
            users: who.users.clone(),
            groups,
            unix_groups: who.unix_groups.clone(),
            uids: who.uids.clone(),
            idp_groups,
            exe: who.exe.iter().map(|e| e.get_ref().clone()).collect(),
        })
    }
}

/// Names are what rules, logs and the CLI use: keep them plain.
fn checked_name<'a>(
    src: &Source,
    name: &'a Spanned<String>,
    kind: &str,
) -> Result<&'a str, PolicyError> {
    let text = name.get_ref();
    if text.is_empty()
        || !text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(src.error(
            name.span(),
            format!("invalid {kind} name `{text}`; use letters, digits, `-`, `_` and `.`"),
        ));
    }
    Ok(text)
}

fn unique(
    src: &Source,
    name: &Spanned<String>,
    kind: &str,
    seen: &mut HashMap<String, String>,
) -> Result<(), PolicyError> {
    if let Some(at) = seen.get(name.get_ref()) {
        return Err(duplicate(src, name, kind, at));
    }
    seen.insert(name.get_ref().clone(), src.location(&name.span()));
    Ok(())
}

fn duplicate(src: &Source, name: &Spanned<String>, kind: &str, first: &str) -> PolicyError {
    src.error(
        name.span(),
        format!(
            "duplicate {kind} name `{}` (first defined at {first}); rename one of them",
            name.get_ref()
        ),
    )
}

/// A rule's masking keys as one spec, checked by compiling it (with a stand-in key:
/// the real one is read per session, so it never sits in the policy).
fn mask_spec(
    src: &Source,
    rule: &str,
    file: &RuleFile,
) -> Result<Option<crate::mask::MaskSpec>, PolicyError> {
    let spec = crate::mask::MaskSpec {
        mask: file
            .mask
            .as_ref()
            .map(|m| m.get_ref().clone())
            .unwrap_or_default(),
        mask_columns: file.mask_columns.clone().unwrap_or_default(),
        mask_style: file.mask_style.unwrap_or_default(),
        mask_regex: file.mask_regex.clone().unwrap_or_default(),
        mask_words: file.mask_words.clone().unwrap_or_default(),
        mask_key_env: file.mask_key_env.clone(),
        mask_key_file: file.mask_key_file.clone(),
        mask_learn: file.mask_learn.unwrap_or_default(),
        mask_json: mask_json(src, rule, file)?,
    };
    if spec == crate::mask::MaskSpec::default() {
        return Ok(None);
    }
    let span = file
        .mask
        .as_ref()
        .map_or_else(|| file.name.span(), Spanned::span);
    let stand_in = crate::mask::MaskKey::new(vec![0x5a; crate::mask::MaskKey::MIN_LEN]).ok();
    if let Err(error) = crate::mask::Masker::compile(std::slice::from_ref(&spec), stand_in.as_ref())
    {
        return Err(src.error(span, format!("rule `{rule}`: {error}")));
    }
    if let Err(error) = spec.key_source() {
        return Err(src.error(span, format!("rule `{rule}`: {error}")));
    }
    Ok(Some(spec))
}

/// A rule's `mask_json` paths, each parsed so that a bad one is refused at its line.
fn mask_json(src: &Source, rule: &str, file: &RuleFile) -> Result<Vec<String>, PolicyError> {
    let mut paths = Vec::new();
    for path in file.mask_json.iter().flatten() {
        if let Err(error) = crate::mask::json_path::JsonPath::parse(path.get_ref()) {
            return Err(src.error(
                path.span(),
                format!(
                    "rule `{rule}`: mask_json path `{}`: {error}",
                    path.get_ref()
                ),
            ));
        }
        paths.push(path.get_ref().clone());
    }
    Ok(paths)
}

/// A postgres target's login settings, which only `postgres` targets use.
struct Login {
    credentials: Option<Credentials>,
    tls: TargetTls,
    client_auth: Option<SecretRef>,
    http_credentials: Option<super::HttpCredentials>,
}

/// A target's `credentials`, `tls` and `client_auth`, which only `postgres` targets use.
fn login(
    src: &Source,
    name: &str,
    protocol: Protocol,
    file: &TargetFile,
) -> Result<Login, PolicyError> {
    if protocol.is_http() {
        return http::login(src, name, protocol, file);
    }
    if protocol != Protocol::Postgres {
        let keys = [
            ("credentials", file.credentials.as_ref().map(Spanned::span)),
            ("tls", file.tls.as_ref().map(Spanned::span)),
            ("tls_ca", file.tls_ca.as_ref().map(Spanned::span)),
            ("client_auth", file.client_auth.as_ref().map(Spanned::span)),
        ];
        if let Some((key, Some(span))) = keys.into_iter().find(|(_, s)| s.is_some()) {
            return Err(src.error(
                span,
                format!("`{key}` in target `{name}` only applies to protocol = \"postgres\""),
            ));
        }
        return Ok(Login {
            credentials: None,
            tls: TargetTls::default(),
            client_auth: None,
            http_credentials: None,
        });
    }
    let credentials = match &file.credentials {
        None => None,
        Some(c) => {
            let creds = c.get_ref();
            let password = secret_ref(
                src,
                name,
                c.span(),
                [&creds.password_env, &creds.password_file],
                creds.password.as_ref(),
            )?;
            Some(Credentials {
                user: creds.user.clone(),
                password,
                key_file: None,
            })
        }
    };
    let client_auth = match &file.client_auth {
        None => None,
        Some(auth) => {
            let a = auth.get_ref();
            let secret = secret_ref(
                src,
                name,
                auth.span(),
                [&a.password_env, &a.password_file],
                a.password.as_ref(),
            )?;
            Some(secret.ok_or_else(|| {
                src.error(
                    auth.span(),
                    format!(
                        "target `{name}`: `client_auth` needs `password_env = \"VAR\"` or \
                         `password_file = \"/path\"`"
                    ),
                )
            })?)
        }
    };
    let mode = match &file.tls {
        None => BackendTls::default(),
        Some(mode) => BackendTls::from_name(mode.get_ref()).ok_or_else(|| {
            src.error(
                mode.span(),
                format!(
                    "unknown tls mode `{}` in target `{name}`; use disable, prefer, require, \
                     verify-ca or verify-full",
                    mode.get_ref()
                ),
            )
        })?,
    };
    let tls = TargetTls {
        mode,
        ca_file: file.tls_ca.as_ref().map(|p| p.get_ref().into()),
        server_name: file.tls_server_name.clone(),
    };
    Ok(Login {
        credentials,
        tls,
        client_auth,
        http_credentials: None,
    })
}

/// A secret given as `password_env` or `password_file` (at most one; the file by
/// absolute path); an inline `password` is refused.
pub(super) fn secret_ref(
    src: &Source,
    name: &str,
    span: std::ops::Range<usize>,
    [env, file]: [&Option<String>; 2],
    inline: Option<&Spanned<toml::Value>>,
) -> Result<Option<SecretRef>, PolicyError> {
    if let Some(inline) = inline {
        return Err(src.error(
            inline.span(),
            format!(
                "target `{name}`: a password is never written in a policy; use \
                 `password_env = \"VAR\"` or `password_file = \"/path\"`"
            ),
        ));
    }
    match (env, file) {
        (Some(_), Some(_)) => Err(src.error(
            span,
            format!("target `{name}`: set one of `password_env` and `password_file`"),
        )),
        (Some(var), None) => Ok(Some(SecretRef::Env(var.clone()))),
        (None, Some(path)) if !path.starts_with('/') => Err(src.error(
            span,
            format!("target `{name}`: `password_file` must be an absolute path"),
        )),
        (None, Some(path)) => Ok(Some(SecretRef::File(path.into()))),
        (None, None) => Ok(None),
    }
}

fn protocol(src: &Source, name: &Spanned<String>) -> Result<Protocol, PolicyError> {
    match name.get_ref().as_str() {
        "tcp" => Ok(Protocol::Tcp),
        "postgres" => Ok(Protocol::Postgres),
        "ssh" => Ok(Protocol::Ssh),
        "http" => Ok(Protocol::Http),
        "https" => Ok(Protocol::Https),
        other => Err(src.error(
            name.span(),
            format!(
                "unknown protocol `{other}`; use \"tcp\", \"postgres\", \"ssh\", \"http\" or \"https\""
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use crate::policy::load::tests::{TARGET, assert_error};

    #[test]
    fn duplicate_names_across_files() {
        let two = format!("# second\n{}", TARGET.replace("7000", "7001"));
        assert_error(
            &[("a.toml", TARGET), ("b.toml", &two)],
            "b.toml:3",
            "duplicate target name `echo` (first defined at",
        );
        let group = "[[group]]\nname = \"dba\"\n";
        assert_error(
            &[("a.toml", group), ("b.toml", group)],
            "b.toml:2",
            "duplicate group name `dba`",
        );
        let rule = "[[rule]]\nname = \"r\"\ntargets = [\"*\"]\naction = \"deny\"\n";
        assert_error(
            &[("a.toml", &format!("{rule}{rule}"))],
            "a.toml:6",
            "duplicate rule name `r`",
        );
    }

    #[test]
    fn unknown_target_and_group() {
        let rule = format!(
            "{TARGET}[[rule]]\nname = \"r1\"\ntargets = [\"echo\",\n  \"dbx\"]\naction = \"allow\"\n"
        );
        assert_error(
            &[("a.toml", &rule)],
            "a.toml:8",
            "unknown target `dbx` in rule `r1`; define it in a [[target]] table or fix the name",
        );
        let rule = "[[rule]]\nname = \"r\"\ntargets = [\"*\"]\nwho = { groups = [\"dbas\"] }\naction = \"allow\"\n";
        assert_error(
            &[("r.toml", rule)],
            "r.toml:4",
            "unknown group `dbas` in rule `r`",
        );
    }

    #[test]
    fn rule_shape_errors() {
        let rule =
            |body: &str| format!("{TARGET}[[rule]]\nname = \"r\"\n{body}\naction = \"allow\"\n");
        assert_error(
            &[("a.toml", &rule("targets = []"))],
            "a.toml:7",
            "empty `targets` in rule `r`",
        );
        let empty_who = rule("targets = [\"*\"]\nwho = {}");
        assert_error(
            &[("a.toml", &empty_who)],
            "a.toml:8",
            "empty `who` in rule `r`",
        );
        let relative = rule("targets = [\"*\"]\nwho = { exe = [\"psql\"] }");
        assert_error(
            &[("a.toml", &relative)],
            "a.toml:8",
            "exe `psql` in rule `r` is not an absolute path",
        );
        let bad_name = "[[rule]]\nname = \"a rule\"\ntargets = [\"*\"]\naction = \"allow\"\n";
        assert_error(
            &[("a.toml", bad_name)],
            "a.toml:2",
            "invalid rule name `a rule`",
        );
    }

    /// Issue 19: a `mask_json` path that cannot be matched while streaming is refused
    /// at its own line, with the reason.
    #[test]
    fn mask_json_paths_are_checked_at_load() {
        let rule = format!(
            "{TARGET}[[rule]]\nname = \"r\"\ntargets = [\"*\"]\naction = \"allow\"\nmask_json = [\n  \"$.users[*].email\",\n  \"$.users[?@.admin].ssn\",\n]\n"
        );
        assert_error(
            &[("a.toml", &rule)],
            "a.toml:11",
            "rule `r`: mask_json path `$.users[?@.admin].ssn`: at byte 8: a filter",
        );
    }

    #[test]
    fn address_errors() {
        let target =
            |fields: &str| format!("\n[[target]]\nname = \"t\"\nprotocol = \"tcp\"\n{fields}\n");
        let cases = [
            ("address = \"127.0.0.2\"", "a.toml:5", "has no port"),
            ("address = \"127.0.0.2:0\"", "a.toml:5", "invalid port `0`"),
            ("address = \"db:99999\"", "a.toml:5", "invalid port `99999`"),
            (
                "addresses = [\"[::1]:1\",\n \"::1:80\"]",
                "a.toml:6",
                "brackets",
            ),
            (
                "addresses = []",
                "a.toml:5",
                "empty `addresses` in target `t`",
            ),
            (
                "address = \"a:1\"\naddresses = [\"b:1\"]",
                "a.toml:6",
                "both `address` and `addresses`",
            ),
            (
                "description = \"x\"",
                "a.toml:3",
                "target `t` has no address",
            ),
            (
                "addresses = [\"a:1\", \"A:1\"]",
                "a.toml:5",
                "already used by target `t`",
            ),
            (
                "addresses = [\"10.0.0.1:5\",\n \"[::ffff:10.0.0.1]:5\"]",
                "a.toml:6",
                "already used by target `t`",
            ),
        ];
        for (fields, location, reason) in cases {
            assert_error(&[("a.toml", &target(fields))], location, reason);
        }
    }

    #[test]
    fn protocol_errors() {
        let target = |protocol: &str| {
            format!(
                "[[target]]\nname = \"t\"\nprotocol = \"{protocol}\"\naddress = \"127.0.0.2:1\"\n"
            )
        };
        assert_error(
            &[("a.toml", &target("udp"))],
            "a.toml:3",
            "unknown protocol `udp`",
        );
    }

    #[test]
    fn secrets_are_references_never_inline() {
        let target = |protocol: &str, extra: &str| {
            format!(
                "[[target]]\nname = \"t\"\nprotocol = \"{protocol}\"\naddress = \"127.0.0.2:1\"\n{extra}\n"
            )
        };
        let cases = [
            (
                "postgres",
                "client_auth = { password = \"hunter2\" }",
                "a.toml:5",
                "a password is never written in a policy",
            ),
            (
                "postgres",
                "credentials = { password = \"hunter2\" }",
                "a.toml:5",
                "a password is never written in a policy",
            ),
            (
                "postgres",
                "client_auth = { password_env = \"A\", password_file = \"/b\" }",
                "a.toml:5",
                "set one of `password_env` and `password_file`",
            ),
            (
                "postgres",
                "client_auth = { password_file = \"token\" }",
                "a.toml:5",
                "`password_file` must be an absolute path",
            ),
            (
                "postgres",
                "client_auth = {}",
                "a.toml:5",
                "`client_auth` needs `password_env",
            ),
            (
                "tcp",
                "client_auth = { password_env = \"A\" }",
                "a.toml:5",
                "`client_auth` in target `t` only applies to protocol = \"postgres\"",
            ),
        ];
        for (protocol, extra, location, reason) in cases {
            let text = target(protocol, extra);
            assert_error(&[("a.toml", &text)], location, reason);
            // The refused value never shows in the error.
            assert!(
                !super::super::load::tests::error_text(&[("a.toml", &text)]).contains("hunter2")
            );
        }
        let dir = tempfile::tempdir().unwrap_or_else(|e| unreachable!("{e}"));
        let text = target(
            "postgres",
            "client_auth = { password_env = \"PG_GATE_TOKEN\" }",
        );
        std::fs::write(dir.path().join("a.toml"), text).unwrap_or_else(|e| unreachable!("{e}"));
        let policy =
            crate::policy::Policy::load_dir(dir.path()).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(
            policy.target("t").and_then(|t| t.client_auth.clone()),
            Some(crate::secret::SecretRef::Env("PG_GATE_TOKEN".into()))
        );
    }
}
