//! Who is signed in to the console: server-side sessions behind a random cookie,
//! logins in progress (OIDC state, PKCE verifier, nonce) and one-time sign-in links.
//!
//! Every table is bounded and every entry expires. Tokens are 32 random bytes; only
//! their SHA-256 is kept as a key, so the table itself holds no usable cookie. Each
//! session has its own CSRF token, which every decision form must carry back.

use crate::identity::Approver;
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest as _, Sha256};
use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

/// How long a login may take at the identity provider.
const LOGIN_TTL: Duration = Duration::from_mins(10);
/// How long a one-time sign-in link stays usable.
const LINK_TTL: Duration = Duration::from_mins(2);
/// Logins in progress and unused links kept at once.
const MAX_PENDING: usize = 1000;

/// A signed-in browser.
#[derive(Debug, Clone)]
pub struct WebSession {
    pub approver: Approver,
    /// Must come back with every decision form (compared in constant time).
    pub csrf: String,
    pub expires: Instant,
}

/// A login started at the identity provider, found again by its `state`.
#[derive(Debug, Clone)]
pub struct PendingLogin {
    pub pkce_verifier: String,
    pub nonce: String,
    /// The hash of the login cookie that must come back with the callback, so a
    /// callback started in another browser (login CSRF) is refused.
    binding: [u8; 32],
    expires: Instant,
}

/// All of the console's sign-in state.
pub struct Sessions {
    ttl: Duration,
    max: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    signed_in: HashMap<[u8; 32], WebSession>,
    logins: HashMap<String, PendingLogin>,
    links: HashMap<[u8; 32], (Approver, Instant)>,
}

/// A fresh random token (32 bytes, base64url).
#[must_use]
pub fn token() -> String {
    let mut bytes = [0u8; 32];
    // getrandom only fails without a kernel RNG; an all-zero token would then be
    // refused by `is_usable`, never handed out as a session.
    if getrandom::fill(&mut bytes).is_err() {
        return String::new();
    }
    URL_SAFE_NO_PAD.encode(bytes)
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn is_usable(token: &str) -> bool {
    token.len() >= 43
}

impl Sessions {
    #[must_use]
    pub fn new(ttl: Duration, max: usize) -> Self {
        Self {
            ttl,
            max: max.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How long a sign-in lasts.
    #[must_use]
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Signs `approver` in: returns the cookie value. The oldest session goes when
    /// the table is full.
    pub fn sign_in(&self, approver: Approver) -> Option<String> {
        let cookie = token();
        let csrf = token();
        if !is_usable(&cookie) || !is_usable(&csrf) {
            return None;
        }
        let now = Instant::now();
        let mut inner = self.lock();
        inner.signed_in.retain(|_, s| s.expires > now);
        if inner.signed_in.len() >= self.max
            && let Some(oldest) = inner
                .signed_in
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| *k)
        {
            inner.signed_in.remove(&oldest);
        }
        inner.signed_in.insert(
            digest(&cookie),
            WebSession {
                approver,
                csrf,
                expires: now + self.ttl,
            },
        );
        Some(cookie)
    }

    /// The live session behind cookie value `cookie`.
    #[must_use]
    pub fn get(&self, cookie: &str) -> Option<WebSession> {
        let mut inner = self.lock();
        let key = digest(cookie);
        match inner.signed_in.get(&key) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                inner.signed_in.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends the session behind `cookie`.
    pub fn sign_out(&self, cookie: &str) {
        self.lock().signed_in.remove(&digest(cookie));
    }

    /// Remembers a login started with `state`; returns the login cookie that binds
    /// it to this browser.
    pub fn start_login(
        &self,
        state: String,
        pkce_verifier: String,
        nonce: String,
    ) -> Option<String> {
        let cookie = token();
        if !is_usable(&cookie) {
            return None;
        }
        let now = Instant::now();
        let mut inner = self.lock();
        inner.logins.retain(|_, l| l.expires > now);
        if inner.logins.len() >= MAX_PENDING {
            return None;
        }
        inner.logins.insert(
            state,
            PendingLogin {
                pkce_verifier,
                nonce,
                binding: digest(&cookie),
                expires: now + LOGIN_TTL,
            },
        );
        Some(cookie)
    }

    /// Takes the login started with `state`, if `cookie` is the browser's login
    /// cookie and it has not expired. Used once: a replayed callback finds nothing.
    pub fn finish_login(&self, state: &str, cookie: Option<&str>) -> Option<PendingLogin> {
        let login = self.lock().logins.remove(state)?;
        let bound = cookie.is_some_and(|c| {
            subtle::ConstantTimeEq::ct_eq(&digest(c)[..], &login.binding[..]).into()
        });
        (bound && login.expires > Instant::now()).then_some(login)
    }

    /// A one-time sign-in link token for a local approver.
    pub fn issue_link(&self, approver: Approver) -> Option<String> {
        let t = token();
        if !is_usable(&t) {
            return None;
        }
        let now = Instant::now();
        let mut inner = self.lock();
        inner.links.retain(|_, (_, until)| *until > now);
        if inner.links.len() >= MAX_PENDING {
            return None;
        }
        inner.links.insert(digest(&t), (approver, now + LINK_TTL));
        Some(t)
    }

    /// Uses up link token `t`: the approver it was issued to, once.
    pub fn redeem_link(&self, t: &str) -> Option<Approver> {
        let (approver, until) = self.lock().links.remove(&digest(t))?;
        (until > Instant::now()).then_some(approver)
    }
}

/// Whether two secrets are equal, in time independent of where they differ.
#[must_use]
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && subtle::ConstantTimeEq::ct_eq(a.as_bytes(), b.as_bytes()).into()
}

/// The value of cookie `name` in the request's `Cookie` headers.
#[must_use]
pub fn cookie<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn who() -> Approver {
        Approver::Local {
            uid: 1,
            user: None,
            unix_groups: vec![],
            pid: 1,
        }
    }

    #[test]
    fn sessions_expire_and_are_bounded() {
        let table = Sessions::new(Duration::from_mins(1), 2);
        let first = table.sign_in(who()).unwrap();
        let second = table.sign_in(who()).unwrap();
        assert!(table.get(&first).is_some() && table.get(&second).is_some());
        let third = table.sign_in(who()).unwrap();
        assert!(table.get(&first).is_none(), "the oldest goes when full");
        assert!(table.get(&third).is_some());
        assert!(table.get("forged").is_none());
        table.sign_out(&third);
        assert!(table.get(&third).is_none());
        let gone = Sessions::new(Duration::ZERO, 2);
        let t = gone.sign_in(who()).unwrap();
        assert!(gone.get(&t).is_none(), "expired");
    }

    #[test]
    fn logins_are_bound_to_the_browser_and_used_once() {
        let s = Sessions::new(Duration::from_mins(1), 2);
        let cookie = s.start_login("st".into(), "v".into(), "n".into()).unwrap();
        assert!(s.finish_login("st", Some("other")).is_none());
        let cookie2 = s.start_login("st2".into(), "v".into(), "n".into()).unwrap();
        assert!(s.finish_login("st2", Some(&cookie2)).is_some());
        assert!(s.finish_login("st2", Some(&cookie2)).is_none(), "replayed");
        assert!(
            s.finish_login("st", Some(&cookie)).is_none(),
            "refused once is gone"
        );
    }

    #[test]
    fn links_work_once() {
        let s = Sessions::new(Duration::from_mins(1), 2);
        let t = s.issue_link(who()).unwrap();
        assert_eq!(s.redeem_link(&t), Some(who()));
        assert_eq!(s.redeem_link(&t), None);
    }

    #[test]
    fn cookies_and_secrets() {
        let mut h = axum::http::HeaderMap::new();
        h.append("cookie", "a=1; pc=xyz".parse().unwrap());
        assert_eq!(cookie(&h, "pc"), Some("xyz"));
        assert_eq!(cookie(&h, "b"), None);
        assert!(same_secret("abc", "abc") && !same_secret("abc", "abd") && !same_secret("a", "ab"));
    }
}
