//! The `[web]` table of the config file: where the console listens, how it proves
//! itself (TLS), how approvers sign in (`[web.oidc]`) and how Slack reaches it
//! (`[web.slack]`).
//!
//! Two stages like the rest of the config: [`WebFile`] mirrors the TOML, [`WebConfig`]
//! is what the console runs with. Secrets are named by environment variable, never
//! written in the file, and read at start into [`Secret`]s.

use crate::secret::Secret;
use serde::Deserialize;
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

/// `[web]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebFile {
    /// Address the console listens on, like `"0.0.0.0:8443"`. Absent: no console.
    pub listen: Option<SocketAddr>,
    /// How browsers reach the console (`https://gw.example.com:8443`); the OIDC
    /// redirect URI and sign-in links are built from it. Default: from `listen`.
    pub public_url: Option<String>,
    /// Serve plain HTTP; refused unless `listen` is a loopback address.
    #[serde(default)]
    pub plain_http: bool,
    /// PEM certificate chain and key; default: a generated self-signed certificate.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// How long a sign-in lasts ("8h").
    pub session_ttl: Option<String>,
    /// Most signed-in browsers kept at once (default 1000).
    pub max_sessions: Option<usize>,
    /// Policy groups whose members see every session, the audit status and the
    /// policy in the console (root and `admin_group` always do).
    #[serde(default)]
    pub admin_groups: Vec<String>,
    pub oidc: Option<OidcFile>,
    pub slack: Option<SlackFile>,
}

/// `[web.oidc]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcFile {
    pub issuer: String,
    pub client_id: String,
    /// Environment variable holding the client secret.
    pub client_secret_env: Option<String>,
    /// The ID-token claim listing the person's groups (default `groups`).
    pub groups_claim: Option<String>,
    /// How long `portcullis login` links a local account to its identity ("12h").
    pub link_ttl: Option<String>,
}

/// `[web.slack]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackFile {
    /// Environment variable holding the Slack app's signing secret.
    pub signing_secret_env: String,
    /// Where Slack's `response_url`s must point (default `https://hooks.slack.com`):
    /// the console posts the outcome only there.
    pub response_origin: Option<String>,
}

/// The console's validated settings.
#[derive(Debug, Clone)]
pub struct WebConfig {
    pub listen: SocketAddr,
    /// Without a trailing slash.
    pub public_url: String,
    /// `None`: plain HTTP (loopback only).
    pub tls: Option<TlsFiles>,
    pub session_ttl: Duration,
    pub max_sessions: usize,
    pub admin_groups: Vec<String>,
    pub oidc: Option<OidcConfig>,
    pub slack: Option<SlackConfig>,
    /// Where a generated certificate is kept.
    pub state_dir: PathBuf,
}

/// Where the console's certificate comes from.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// The identity provider approvers sign in with.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<Secret>,
    pub groups_claim: String,
    pub link_ttl: Duration,
}

/// Slack's interactive callbacks.
#[derive(Debug, Clone)]
pub struct SlackConfig {
    pub signing_secret: Secret,
    /// Without a trailing slash.
    pub response_origin: String,
}

impl WebFile {
    /// The validated console settings; `Ok(None)` when `listen` is absent (console
    /// off). `base` resolves relative paths; `env` reads secrets.
    pub fn validate(
        self,
        base: &Path,
        state_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<WebConfig>, String> {
        let Some(listen) = self.listen else {
            return Ok(None);
        };
        if self.plain_http && !listen.ip().is_loopback() {
            return Err(format!(
                "[web] `plain_http` is only allowed on a loopback address, not {listen}; \
                 remove it to serve HTTPS"
            ));
        }
        let rel = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("[web] needs both `tls_cert` and `tls_key`, or neither".into());
        }
        let scheme = if self.plain_http { "http" } else { "https" };
        let public_url = self
            .public_url
            .unwrap_or_else(|| format!("{scheme}://{listen}"))
            .trim_end_matches('/')
            .to_owned();
        if !public_url.starts_with(&format!("{scheme}://")) {
            return Err(format!(
                "[web] `public_url` {public_url:?} must start with {scheme}:// like the listener"
            ));
        }
        let session_ttl = match self.session_ttl {
            None => Duration::from_hours(8),
            Some(v) => humantime::parse_duration(&v)
                .map_err(|e| format!("[web] `session_ttl` = {v:?}: {e}; write e.g. \"8h\""))?,
        };
        let oidc = self.oidc.map(|o| oidc(o, env)).transpose()?;
        let slack = self
            .slack
            .map(|s| {
                env(&s.signing_secret_env)
                    .filter(|v| !v.is_empty())
                    .map(|v| SlackConfig {
                        signing_secret: Secret::new(v),
                        response_origin: s
                            .response_origin
                            .as_deref()
                            .unwrap_or("https://hooks.slack.com")
                            .trim_end_matches('/')
                            .to_owned(),
                    })
                    .ok_or_else(|| {
                        format!(
                            "[web.slack] `signing_secret_env` names {:?}, which is not set; \
                             set it in the daemon's environment",
                            s.signing_secret_env
                        )
                    })
            })
            .transpose()?;
        Ok(Some(WebConfig {
            listen,
            public_url,
            tls: (!self.plain_http).then(|| TlsFiles {
                cert: self.tls_cert.map(rel),
                key: self.tls_key.map(rel),
            }),
            session_ttl,
            max_sessions: self.max_sessions.unwrap_or(1000).max(1),
            admin_groups: self.admin_groups,
            oidc,
            slack,
            state_dir: state_dir.to_owned(),
        }))
    }
}

fn oidc(o: OidcFile, env: &dyn Fn(&str) -> Option<String>) -> Result<OidcConfig, String> {
    let client_secret = match &o.client_secret_env {
        None => None,
        Some(var) => Some(Secret::new(env(var).filter(|v| !v.is_empty()).ok_or_else(
            || {
                format!(
                    "[web.oidc] `client_secret_env` names {var:?}, which is not set; set it \
                     in the daemon's environment"
                )
            },
        )?)),
    };
    if o.issuer.trim().is_empty() || o.client_id.trim().is_empty() {
        return Err("[web.oidc] needs `issuer` and `client_id`".into());
    }
    let link_ttl = match &o.link_ttl {
        None => Duration::from_hours(12),
        Some(v) => humantime::parse_duration(v)
            .map_err(|e| format!("[web.oidc] `link_ttl` = {v:?}: {e}; write e.g. \"12h\""))?,
    };
    Ok(OidcConfig {
        link_ttl,
        issuer: o.issuer.trim_end_matches('/').to_owned(),
        client_id: o.client_id,
        client_secret,
        groups_claim: o.groups_claim.unwrap_or_else(|| "groups".into()),
    })
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn parse(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<WebConfig>, String> {
        let file: WebFile = toml::from_str(text).map_err(|e| e.to_string())?;
        file.validate(Path::new("/etc/pc"), Path::new("/var/lib/pc"), env)
    }

    #[test]
    fn off_unless_listen_and_plain_only_on_loopback() {
        assert!(parse("", &|_| None).unwrap().is_none());
        let e = parse("listen = \"0.0.0.0:8080\"\nplain_http = true", &|_| None).unwrap_err();
        assert!(e.contains("loopback"), "{e}");
        let c = parse("listen = \"127.0.0.1:8080\"\nplain_http = true", &|_| None)
            .unwrap()
            .unwrap();
        assert!(c.tls.is_none());
        assert_eq!(c.public_url, "http://127.0.0.1:8080");
        let c = parse(
            "listen = \"0.0.0.0:8443\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"",
            &|_| None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.public_url, "https://0.0.0.0:8443");
        assert_eq!(c.tls.unwrap().cert.unwrap(), Path::new("/etc/pc/c.pem"));
    }

    #[test]
    fn secrets_come_from_the_environment() {
        let text = "listen = \"127.0.0.1:1\"\n[oidc]\nissuer = \"https://id/\"\nclient_id = \"pc\"\nclient_secret_env = \"S\"\n[slack]\nsigning_secret_env = \"SL\"";
        let e = parse(text, &|_| None).unwrap_err();
        assert!(e.contains("not set"), "{e}");
        let c = parse(text, &|k| Some(format!("{k}-value")))
            .unwrap()
            .unwrap();
        let oidc = c.oidc.unwrap();
        assert_eq!(oidc.issuer, "https://id");
        assert_eq!(oidc.client_secret.unwrap().expose(), "S-value");
        assert!(!format!("{:?}", c.slack).contains("SL-value"));
    }
}
