//! Approver sign-in with OpenID Connect: the authorization code flow with PKCE.
//!
//! The `openidconnect` crate does the protocol work (discovery, the token exchange,
//! and the ID token's signature, `iss`, `aud`, `exp` and `nonce` checks against the
//! provider's JWKS), so none of it is hand-written here. Its HTTP calls go through the
//! daemon's own `reqwest` client, without redirects (a redirect could point the
//! daemon at an internal address) and with answers capped in size.
//!
//! The provider's metadata and keys are fetched when first needed and again after an
//! hour; an ID token whose signature does not verify makes one fresh fetch (the
//! provider may have rotated its keys) before it is refused.

use super::config::OidcConfig;
use crate::identity::Approver;
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use openidconnect::{
    AuthenticationFlow, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret,
    CsrfToken, HttpRequest, HttpResponse, IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, Scope, TokenResponse as _,
    core::{
        CoreAuthDisplay, CoreClaimName, CoreClaimType, CoreClient, CoreClientAuthMethod,
        CoreDeviceAuthorizationResponse, CoreGrantType, CoreIdToken, CoreJsonWebKey,
        CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm, CoreResponseMode,
        CoreResponseType, CoreSubjectIdentifierType,
    },
};
use serde::{Deserialize, Serialize};
use std::{
    future::Future,
    pin::Pin,
    time::{Duration, Instant},
};
use tokio::sync::RwLock;

/// Largest answer read from the identity provider.
const MAX_ANSWER: usize = 1024 * 1024;
/// Most groups taken from the groups claim.
const MAX_GROUPS: usize = 256;
/// How long discovered metadata and keys are used before they are fetched again.
const METADATA_TTL: Duration = Duration::from_hours(1);

/// Why a sign-in failed. Messages never carry a token, code or secret.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error(
        "the identity provider at {issuer} cannot be discovered: {reason}; check `[web.oidc] issuer`"
    )]
    Discovery { issuer: String, reason: String },
    #[error("the console's redirect URL is not usable: {0}; check `[web] public_url`")]
    Redirect(String),
    #[error("the identity provider refused the sign-in code: {0}")]
    Exchange(String),
    #[error("the identity provider sent no ID token; enable the `openid` scope for this client")]
    NoIdToken,
    #[error("the ID token was refused: {0}")]
    Claims(String),
    #[error(
        "the ID token was refused: its signature does not verify with the provider's \
         published keys ({0})"
    )]
    Signature(String),
    #[error(
        "the identity provider offers no device authorization grant (RFC 8628); enable it for this client to use `portcullis login`"
    )]
    NoDeviceGrant,
    #[error("the device sign-in did not finish: {0}")]
    Device(String),
    #[error("the identity provider's identity is not usable: {0}")]
    Identity(#[from] crate::identity::ApproverError),
}

/// An HTTP failure talking to the provider (what `openidconnect` needs as an error).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

/// The one discovery field the core metadata lacks: where the device authorization
/// grant (RFC 8628, `portcullis login`) starts.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct DeviceEndpoint {
    #[serde(default)]
    device_authorization_endpoint: Option<openidconnect::DeviceAuthorizationUrl>,
}

impl openidconnect::AdditionalProviderMetadata for DeviceEndpoint {}

/// The provider's discovery document.
type Metadata = openidconnect::ProviderMetadata<
    DeviceEndpoint,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

/// The console's OpenID Connect client.
pub struct Oidc {
    config: OidcConfig,
    redirect: String,
    http: Http,
    metadata: RwLock<Option<(Metadata, Instant)>>,
}

/// Where to send the browser, and what to remember until it comes back.
pub struct Start {
    pub url: String,
    pub state: String,
    pub pkce_verifier: String,
    pub nonce: String,
}

impl Oidc {
    /// A client for `config` whose redirect URI is `{public_url}/auth/callback`.
    pub fn new(config: OidcConfig, public_url: &str) -> Result<Self, OidcError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| OidcError::Discovery {
                issuer: config.issuer.clone(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            redirect: format!("{public_url}/auth/callback"),
            config,
            http: Http(http),
            metadata: RwLock::new(None),
        })
    }

    /// The provider's issuer URL.
    #[must_use]
    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }
}

/// The daemon's HTTP client as `openidconnect` calls it.
struct Http(reqwest::Client);

impl<'c> openidconnect::AsyncHttpClient<'c> for Http {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(call(&self.0, request))
    }
}

/// One HTTP exchange with the provider, its answer capped at [`MAX_ANSWER`].
async fn call(http: &reqwest::Client, request: HttpRequest) -> Result<HttpResponse, HttpError> {
    let request = reqwest::Request::try_from(request).map_err(|e| HttpError(e.to_string()))?;
    let mut answer = http
        .execute(request)
        .await
        .map_err(|e| HttpError(e.without_url().to_string()))?;
    let mut builder = axum::http::Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        builder = builder.header(name, value);
    }
    let mut body = Vec::new();
    while let Some(chunk) = answer.chunk().await.map_err(|e| HttpError(e.to_string()))? {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(HttpError(format!("answer larger than {MAX_ANSWER} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    builder.body(body).map_err(|e| HttpError(e.to_string()))
}

impl Oidc {
    /// The provider's metadata and keys: cached, or fetched when stale or `fresh`.
    async fn metadata(&self, fresh: bool) -> Result<Metadata, OidcError> {
        if !fresh
            && let Some((m, at)) = &*self.metadata.read().await
            && at.elapsed() < METADATA_TTL
        {
            return Ok(m.clone());
        }
        let discovery = |reason: String| OidcError::Discovery {
            issuer: self.config.issuer.clone(),
            reason,
        };
        let issuer =
            IssuerUrl::new(self.config.issuer.clone()).map_err(|e| discovery(e.to_string()))?;
        let m = Metadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| discovery(error_chain(&e)))?;
        *self.metadata.write().await = Some((m.clone(), Instant::now()));
        Ok(m)
    }

    async fn client(
        &self,
        fresh: bool,
    ) -> Result<
        CoreClient<
            openidconnect::EndpointSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointMaybeSet,
            openidconnect::EndpointMaybeSet,
        >,
        OidcError,
    > {
        let redirect = RedirectUrl::new(self.redirect.clone())
            .map_err(|e| OidcError::Redirect(e.to_string()))?;
        Ok(CoreClient::from_provider_metadata(
            self.metadata(fresh).await?,
            ClientId::new(self.config.client_id.clone()),
            self.config
                .client_secret
                .as_ref()
                .map(|s| ClientSecret::new(s.expose().to_owned())),
        )
        .set_redirect_uri(redirect))
    }

    /// Starts a sign-in: the provider's authorization URL with a fresh state, nonce
    /// and PKCE (S256) challenge.
    pub async fn start(&self) -> Result<Start, OidcError> {
        let client = self.client(false).await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = client
            .authorize_url(
                AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("email".into()))
            .add_scope(Scope::new("profile".into()))
            .add_scope(Scope::new(self.config.groups_claim.clone()))
            .set_pkce_challenge(challenge)
            .url();
        Ok(Start {
            url: url.to_string(),
            state: state.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
            nonce: nonce.secret().clone(),
        })
    }

    /// Finishes a sign-in: exchanges `code` (with the PKCE verifier), verifies the ID
    /// token and returns the person as an approver.
    pub async fn finish(
        &self,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
    ) -> Result<Approver, OidcError> {
        let client = self.client(false).await?;
        let answer = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| OidcError::Exchange(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()))
            .request_async(&self.http)
            .await
            .map_err(|e| OidcError::Exchange(error_chain(&e)))?;
        let token = answer.id_token().ok_or(OidcError::NoIdToken)?;
        let nonce = Nonce::new(nonce.to_owned());
        match self.identity(&client, token, &nonce) {
            Err(OidcError::Signature(_)) => {
                // Perhaps new keys: fetch them once and check again.
                let fresh = self.client(true).await?;
                self.identity(&fresh, token, &nonce)
            }
            done => done,
        }
    }

    /// Starts the device authorization grant: what the person must open and type.
    pub async fn device_start(&self) -> Result<CoreDeviceAuthorizationResponse, OidcError> {
        let url = self
            .metadata(false)
            .await?
            .additional_metadata()
            .device_authorization_endpoint
            .clone()
            .ok_or(OidcError::NoDeviceGrant)?;
        let client = self.client(false).await?.set_device_authorization_url(url);
        client
            .exchange_device_code()
            .add_scope(Scope::new("email".into()))
            .add_scope(Scope::new("profile".into()))
            .add_scope(Scope::new(self.config.groups_claim.clone()))
            .request_async(&self.http)
            .await
            .map_err(|e| OidcError::Device(error_chain(&e)))
    }

    /// Waits (polling as the provider asks) until the person approved the device
    /// sign-in, then verifies the ID token: the identity to link.
    pub async fn device_finish(
        &self,
        details: &CoreDeviceAuthorizationResponse,
    ) -> Result<Approver, OidcError> {
        let url = self
            .metadata(false)
            .await?
            .additional_metadata()
            .device_authorization_endpoint
            .clone()
            .ok_or(OidcError::NoDeviceGrant)?;
        let client = self.client(false).await?.set_device_authorization_url(url);
        let answer = client
            .exchange_device_access_token(details)
            .map_err(|e| OidcError::Device(e.to_string()))?
            .request_async(&self.http, tokio::time::sleep, Some(details.expires_in()))
            .await
            .map_err(|e| OidcError::Device(error_chain(&e)))?;
        let token = answer.id_token().ok_or(OidcError::NoIdToken)?;
        // No nonce in this grant: the token comes straight from the token endpoint.
        let no_nonce = |_: Option<&Nonce>| Ok(());
        self.identity(&client, token, no_nonce)
    }

    fn identity<A, B, C, D, E, F>(
        &self,
        client: &CoreClient<A, B, C, D, E, F>,
        token: &CoreIdToken,
        nonce: impl openidconnect::NonceVerifier,
    ) -> Result<Approver, OidcError>
    where
        A: openidconnect::EndpointState,
        B: openidconnect::EndpointState,
        C: openidconnect::EndpointState,
        D: openidconnect::EndpointState,
        E: openidconnect::EndpointState,
        F: openidconnect::EndpointState,
    {
        let claims = token
            .claims(&client.id_token_verifier(), nonce)
            .map_err(|e| refusal(&e))?;
        let email = match claims.email_verified() {
            Some(true) => claims.email().map(|e| e.as_str().to_lowercase()),
            _ => None,
        };
        let groups = groups_of(&token.to_string(), &self.config.groups_claim);
        Ok(Approver::idp(
            claims.issuer().as_str(),
            claims.subject().as_str(),
            email,
            groups,
        )?)
    }
}

/// Why an ID token was refused, with what to check for the usual causes.
fn refusal(e: &ClaimsVerificationError) -> OidcError {
    match e {
        ClaimsVerificationError::SignatureVerification(why) => {
            OidcError::Signature(why.to_string())
        }
        ClaimsVerificationError::InvalidAudience(_) => OidcError::Claims(format!(
            "{e}; it was issued for another application: check that `[web.oidc] client_id` \
             is this console's client at the identity provider"
        )),
        ClaimsVerificationError::Expired(_) => OidcError::Claims(format!(
            "{e}; sign in again, and check that the clocks of this gateway and of the \
             identity provider agree"
        )),
        _ => OidcError::Claims(e.to_string()),
    }
}

/// The groups claim of a JWT whose signature was already verified: its payload is
/// read again for the one claim the typed claims do not carry.
fn groups_of(jwt: &str, claim: &str) -> Vec<String> {
    let payload = jwt
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    let list = payload
        .as_ref()
        .and_then(|p| p.get(claim))
        .and_then(serde_json::Value::as_array);
    list.map(|l| {
        l.iter()
            .filter_map(serde_json::Value::as_str)
            .filter(|g| !g.is_empty() && g.len() <= 256)
            .take(MAX_GROUPS)
            .map(str::to_owned)
            .collect()
    })
    .unwrap_or_default()
}

/// An error and its causes on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_say_what_to_check() {
        let aud = refusal(&ClaimsVerificationError::InvalidAudience(
            "`x` is not trusted".into(),
        ));
        assert!(
            matches!(&aud, OidcError::Claims(m) if m.contains("client_id")),
            "{aud}"
        );
        let exp = refusal(&ClaimsVerificationError::Expired("at 1".into()));
        assert!(exp.to_string().contains("clocks"), "{exp}");
        let other = refusal(&ClaimsVerificationError::InvalidNonce("n".into()));
        assert_eq!(
            other.to_string(),
            "the ID token was refused: Invalid nonce: n"
        );
    }

    #[test]
    fn groups_come_from_the_named_claim() {
        let payload =
            URL_SAFE_NO_PAD.encode(br#"{"sub":"a","groups":["sre","",7,"dba"],"roles":"x"}"#);
        let jwt = format!("h.{payload}.s");
        assert_eq!(groups_of(&jwt, "groups"), ["sre", "dba"]);
        assert!(groups_of(&jwt, "roles").is_empty());
        assert!(groups_of("garbage", "groups").is_empty());
    }
}
