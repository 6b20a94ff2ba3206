//! The settings of `http` and `https` targets (`credentials` as a header, `tls` to the
//! upstream).

use super::{Login, secret_ref};
use crate::policy::{
    BackendTls, HttpCredentials, PolicyError, Protocol, TargetTls, file::TargetFile, load::Source,
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

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use crate::policy::{
        BackendTls, HttpRequest, Policy, Verdict, load::tests::assert_error,
        matching::tests::principal,
    };

    const API: &str =
        "[[target]]\nname = \"api\"\nprotocol = \"https\"\naddress = \"10.0.0.7:443\"\n";

    fn load(text: &str) -> Policy {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.toml"), text).unwrap();
        Policy::load_dir(dir.path()).unwrap()
    }

    #[test]
    fn http_targets_take_a_credential_header_and_verify_full_by_default() {
        let text = format!(
            "{API}credentials = {{ header = \"Authorization\", value_env = \"TOKEN\", prefix = \"Bearer \" }}\n\
             [[rule]]\nname = \"c\"\ntargets = [\"api\"]\naction = \"allow\"\n\
             [[rule]]\nname = \"d\"\ntargets = [\"api\"]\nmethods = [\"delete\"]\npaths = [\"/v1/users/*\"]\naction = \"deny\"\n"
        );
        let policy = load(&text);
        let api = policy.target("api").unwrap();
        assert_eq!(api.tls.mode, BackendTls::VerifyFull);
        let creds = api.http_credentials.as_ref().unwrap();
        assert_eq!(
            (creds.header.as_str(), creds.prefix.as_str()),
            ("authorization", "Bearer ")
        );
        let p = principal("dev", 1000, &[], "/usr/bin/curl");
        let req = |method, path| HttpRequest { method, path };
        let d = policy.decide_request(&p, "api", &req("DELETE", "/v1/users/42"));
        assert_eq!((d.verdict, d.rule.as_deref()), (Verdict::Deny, Some("d")));
        assert!(
            d.reason.contains("to DELETE /v1/users/42 on target api"),
            "{}",
            d.reason
        );
        let d = policy.decide_request(&p, "api", &req("GET", "/v1/users/42"));
        assert_eq!(
            d.verdict,
            Verdict::Allow,
            "no request rule matches: allowed"
        );
        assert_eq!(policy.decide(&p, "api").verdict, Verdict::Allow);
    }

    #[test]
    fn bad_http_settings_are_refused_with_their_line() {
        let inline = format!("{API}credentials = {{ header = \"X-Key\", value = \"s3cret\" }}\n");
        assert_error(
            &[("a.toml", &inline)],
            "a.toml:5",
            "never written in a policy",
        );
        let no_value = format!("{API}credentials = {{ header = \"X-Key\" }}\n");
        assert_error(
            &[("a.toml", &no_value)],
            "a.toml:5",
            "needs `header` and one of",
        );
        let plain_tls = API.replace("https", "http") + "tls = \"verify-full\"\n";
        assert_error(&[("a.toml", &plain_tls)], "a.toml:5", "plain HTTP");
        let prefer = format!("{API}tls = \"prefer\"\n");
        assert_error(
            &[("a.toml", &prefer)],
            "a.toml:5",
            "not one an https target takes",
        );
        let sql_on_http = format!(
            "{API}[[rule]]\nname = \"r\"\ntargets = [\"api\"]\nsql = [\"ddl\"]\naction = \"deny\"\n"
        );
        assert_error(&[("a.toml", &sql_on_http)], "a.toml:7", "speaks https");
        let pg =
            "[[target]]\nname = \"db\"\nprotocol = \"postgres\"\naddress = \"10.0.0.5:5432\"\n";
        let paths_on_pg = format!(
            "{pg}[[rule]]\nname = \"r\"\ntargets = [\"db\"]\npaths = [\"/x\"]\naction = \"deny\"\n"
        );
        assert_error(&[("a.toml", &paths_on_pg)], "a.toml:7", "speaks postgres");
        let bad_path = format!(
            "{API}[[rule]]\nname = \"r\"\ntargets = [\"api\"]\npaths = [\"v1/*\"]\naction = \"deny\"\n"
        );
        assert_error(&[("a.toml", &bad_path)], "a.toml:8", "must start with `/`");
        let both = format!(
            "{API}[[rule]]\nname = \"r\"\ntargets = [\"*\"]\npaths = [\"/x\"]\nsql = [\"ddl\"]\naction = \"deny\"\n"
        );
        assert_error(
            &[("a.toml", &both)],
            "a.toml:6",
            "mixes SQL (`sql`, `tables`) and HTTP (`methods`, `paths`) keys",
        );
    }
}
