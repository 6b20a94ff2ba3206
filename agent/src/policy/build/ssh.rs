//! The SSH parts of a policy: an `ssh` target's host identities and login.

use super::secret_ref;
use crate::policy::{
    Credentials, PolicyError, Protocol, SshTarget, file::TargetFile, load::Source,
};
use toml::Spanned;

/// An `ssh` target's `known_hosts` (required), `host_key_file` and `credentials`
/// (`user`, then one of `key_file`, `password_env`, `password_file`).
pub(super) fn ssh_target(
    src: &Source,
    name: &str,
    file: &TargetFile,
) -> Result<(SshTarget, Option<Credentials>), PolicyError> {
    for (key, span) in [
        ("tls", file.tls.as_ref().map(Spanned::span)),
        ("tls_ca", file.tls_ca.as_ref().map(Spanned::span)),
        ("client_auth", file.client_auth.as_ref().map(Spanned::span)),
    ] {
        if let Some(span) = span {
            return Err(src.error(
                span,
                format!("`{key}` in target `{name}` does not apply to protocol = \"ssh\""),
            ));
        }
    }
    let Some(known_hosts) = &file.known_hosts else {
        return Err(src.error(
            file.name.span(),
            format!(
                "ssh target `{name}` needs `known_hosts = \"/path\"`: the target's host keys in \
                 OpenSSH format (e.g. from `ssh-keyscan`); Portcullis never trusts a key on first use"
            ),
        ));
    };
    let absolute = |p: &Spanned<String>, key: &str| {
        if p.get_ref().starts_with('/') {
            Ok(p.get_ref().into())
        } else {
            Err(src.error(
                p.span(),
                format!("target `{name}`: `{key}` must be an absolute path"),
            ))
        }
    };
    let known_hosts = absolute(known_hosts, "known_hosts")?;
    let host_key_file = match &file.host_key_file {
        Some(p) => Some(absolute(p, "host_key_file")?),
        None => None,
    };
    let user_ca_key_file = match &file.user_ca_key_file {
        Some(p) => Some(absolute(p, "user_ca_key_file")?),
        None => None,
    };
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
            let key_file = creds.key_file.as_ref().map(std::path::PathBuf::from);
            if key_file.as_ref().is_some_and(|k| !k.is_absolute()) {
                return Err(src.error(
                    c.span(),
                    format!("target `{name}`: `key_file` must be an absolute path"),
                ));
            }
            if user_ca_key_file.is_some() && (key_file.is_some() || password.is_some()) {
                return Err(src.error(
                    c.span(),
                    format!(
                        "target `{name}` has `user_ca_key_file`, which signs a fresh key per \
                         session: remove `key_file`/`password_*` from its credentials (keep `user`)"
                    ),
                ));
            }
            if key_file.is_some() && password.is_some() {
                return Err(src.error(
                    c.span(),
                    format!(
                        "target `{name}`: set one of `key_file`, `password_env` and `password_file`"
                    ),
                ));
            }
            Some(Credentials {
                user: creds.user.clone(),
                password,
                key_file,
            })
        }
    };
    Ok((
        SshTarget {
            known_hosts,
            host_key_file,
            user_ca_key_file,
        },
        credentials,
    ))
}

/// Refuses SSH-only keys on a target of another protocol.
pub(super) fn refuse_ssh_keys(
    src: &Source,
    name: &str,
    protocol: Protocol,
    file: &TargetFile,
) -> Result<(), PolicyError> {
    let key_file = file
        .credentials
        .as_ref()
        .filter(|c| c.get_ref().key_file.is_some())
        .map(Spanned::span);
    for (key, span) in [
        ("known_hosts", file.known_hosts.as_ref().map(Spanned::span)),
        (
            "host_key_file",
            file.host_key_file.as_ref().map(Spanned::span),
        ),
        (
            "user_ca_key_file",
            file.user_ca_key_file.as_ref().map(Spanned::span),
        ),
        ("key_file", key_file),
    ] {
        if let Some(span) = span {
            return Err(src.error(
                span,
                format!(
                    "`{key}` in target `{name}` only applies to protocol = \"ssh\" (this one is \
                     {protocol})"
                ),
            ));
        }
    }
    Ok(())
}
