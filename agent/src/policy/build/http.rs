//! The settings of `http` and `https` targets (`credentials` as a header, `tls` to the
//! upstream), and which rules may filter their requests.

use super::{Login, secret_ref};
use crate::policy::{
    BackendTls, HttpCredentials, PolicyError, Protocol, Target, TargetTls,
    file::{RuleFile, TargetFile},
    filter::Filter,
    load::Source,
};
use toml::Spanned;

/// An `http`/`https` target's `credentials` (a header) and `tls`.
///
/// `http` targets are plain HTTP upstream: `tls` keys are refused. `https` targets
/// verify the upstream as `tls` says, `verify-full` by default; `disable` forwards
/// plain HTTP (TLS ends at the proxy); `prefer` is refused (no silent downgrade).
pub(super) fn login(
    src: &Source,
    name: &str,
    protocol: Protocol,
    file: &TargetFile,
) -> Result<Login, PolicyError> {
    if let Some(auth) = &file.client_auth {
        return Err(src.error(
            auth.span(),
            format!("`client_auth` in target `{name}` only applies to protocol = \"postgres\""),
        ));
    }
    let http_credentials = match &file.credentials {
        None => None,
        Some(c) => Some(header_credentials(src, name, c)?),
    };
    let tls = if protocol == Protocol::Http {
        let keys = [
            ("tls", file.tls.as_ref().map(Spanned::span)),
            ("tls_ca", file.tls_ca.as_ref().map(Spanned::span)),
        ];
        if let Some((key, Some(span))) = keys.into_iter().find(|(_, s)| s.is_some()) {
            return Err(src.error(
                span,
                format!(
                    "`{key}` in target `{name}`: an \"http\" target is plain HTTP; use \
                     protocol = \"https\" for TLS"
                ),
            ));
        }
        TargetTls {
            mode: BackendTls::Disable,
            ca_file: None,
            server_name: None,
        }
    } else {
        let mode = match &file.tls {
            None => BackendTls::VerifyFull,
            Some(mode) => match BackendTls::from_name(mode.get_ref()) {
                Some(BackendTls::Prefer) | None => {
                    return Err(src.error(
                        mode.span(),
                        format!(
                            "tls mode `{}` in target `{name}` is not one an https target takes; \
                             use verify-full (default), verify-ca, require or disable",
                            mode.get_ref()
                        ),
                    ));
                }
                Some(mode) => mode,
            },
        };
        TargetTls {
            mode,
            ca_file: file.tls_ca.as_ref().map(|p| p.get_ref().into()),
            server_name: file.tls_server_name.clone(),
        }
    };
    Ok(Login {
        credentials: None,
        tls,
        client_auth: None,
        http_credentials,
    })
}

/// `credentials = { header = "Authorization", value_env = "TOKEN", prefix = "Bearer " }`.
fn header_credentials(
    src: &Source,
    name: &str,
    c: &Spanned<crate::policy::file::CredentialsFile>,
) -> Result<HttpCredentials, PolicyError> {
    let creds = c.get_ref();
    if creds.user.is_some() || creds.password_env.is_some() || creds.password_file.is_some() {
        return Err(src.error(
            c.span(),
            format!(
                "target `{name}`: an HTTP target's credentials are a header: write \
                 `credentials = {{ header = \"Authorization\", value_env = \"VAR\", prefix = \
                 \"Bearer \" }}`"
            ),
        ));
    }
    let inline = creds.value.as_ref().or(creds.password.as_ref());
    let value = secret_ref(
        src,
        name,
        c.span(),
        [&creds.value_env, &creds.value_file],
        inline,
    )
    .map_err(|e| match e {
        PolicyError::Invalid { path, line, reason } => PolicyError::Invalid {
            path,
            line,
            reason: reason.replace("password", "value"),
        },
        other => other,
    })?;
    let (Some(header), Some(value)) = (&creds.header, value) else {
        return Err(src.error(
            c.span(),
            format!(
                "target `{name}`: `credentials` needs `header` and one of `value_env` or \
                 `value_file`"
            ),
        ));
    };
    let valid = hyper::header::HeaderName::from_bytes(header.as_bytes()).is_ok();
    let prefix = creds.prefix.clone().unwrap_or_default();
    if !valid || hyper::header::HeaderValue::from_str(&prefix).is_err() {
        return Err(src.error(
            c.span(),
            format!("target `{name}`: `header` must be a header name and `prefix` plain text"),
        ));
    }
    Ok(HttpCredentials {
        header: header.to_ascii_lowercase(),
        value,
        prefix,
    })
}

/// A rule's filter must fit every target it names: `sql`/`tables` for postgres,
/// `methods`/`paths` for http and https.
pub(super) fn check_filter_targets(
    src: &Source,
    rule: &str,
    file: &RuleFile,
    filter: &Filter,
    names: &[String],
    targets: &[Target],
) -> Result<(), PolicyError> {
    let protocol_of = |n: &String| targets.iter().find(|t| &t.name == n).map(|t| t.protocol);
    let misfit = names.iter().find_map(|n| {
        let protocol = protocol_of(n)?;
        let fits = match filter {
            Filter::Http(_) => protocol.is_http(),
            Filter::Sql(_) => protocol == Protocol::Postgres || protocol == Protocol::Tcp,
        };
        (!fits).then(|| (n.clone(), protocol))
    });
    let Some((target, protocol)) = misfit else {
        return Ok(());
    };
    let (keys, wants) = match filter {
        Filter::Http(_) => ("`methods`/`paths`", "http or https"),
        Filter::Sql(_) => ("`sql`/`tables`", "postgres"),
    };
    Err(src.error(
        file.targets.span(),
        format!(
            "rule `{rule}` has {keys}, but target `{target}` speaks {protocol}; use it only \
             with {wants} targets"
        ),
    ))
}
