//! Secrets with a recognizable start: private-key PEM blocks, JWTs, API keys of
//! well-known services, bearer tokens.
//!
//! Each starts with a literal the scanner finds in one aho-corasick pass; [`literals`]
//! lists them per [`Group`], and the functions here take it from the literal's index.

use super::{Cursor, Recognizer, before, jwt_header, word_at, word_before};
use std::ops::Range;

/// What a literal found by the scanner starts.
#[derive(Debug, Clone, Copy)]
pub(in super::super) enum Literal {
    /// `-----BEGIN `: maybe a private key.
    PemBegin,
    /// `eyJ` (`{"` in base64url): maybe a JWT.
    Jwt,
    /// The prefix of an API key format.
    Key(&'static KeyFormat),
    /// `Bearer ` in any of its usual cases.
    Bearer,
}

impl Literal {
    /// The shortest secret this literal can start (so shorter values need no search).
    pub(in super::super) fn min_len(self) -> usize {
        match self {
            Literal::PemBegin => PEM_BEGIN.len() + "PRIVATE KEY".len() + PEM_DASHES.len(),
            // The shortest header with an alg, `{"alg":"none"}`, is 19 characters.
            Literal::Jwt => 19 + 3,
            Literal::Key(format) => format.prefix.len() + format.min,
            Literal::Bearer => "Bearer ".len() + MIN_BEARER_TOKEN,
        }
    }

    pub(in super::super) fn recognizer(self) -> Recognizer {
        match self {
            Literal::PemBegin => Recognizer::PrivateKey,
            Literal::Jwt => Recognizer::Jwt,
            Literal::Key(_) => Recognizer::ApiKey,
            Literal::Bearer => Recognizer::BearerToken,
        }
    }

    /// The span of the secret that starts with this literal at `start`, if it is one.
    pub(in super::super) fn recognize(
        self,
        v: &[u8],
        start: usize,
        len: usize,
    ) -> Option<Range<usize>> {
        match self {
            Literal::PemBegin => private_key(v, start),
            Literal::Jwt => jwt(v, start),
            Literal::Key(format) => api_key(v, start, format),
            Literal::Bearer => bearer_token(v, start, len),
        }
    }
}

/// The literals in groups that the scanner's prefilter rules in or out one by one: a
/// value is searched only for the groups its counts of characters allow. Each group
/// says what all its literals (with the shortest secret they start) hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(in super::super) enum Group {
    /// `-----BEGIN `: ten dashes.
    PemBegin,
    /// `eyJ`: a capital, and the two dots of a JWT.
    Jwt,
    /// `Bearer ` (two letters g–z) or `BEARER ` (six capitals), and a token with a digit.
    Bearer,
    /// API key prefixes with an `_` (`ghp_`, `sk_live_`…).
    KeyWithUnderscore,
    /// API key prefixes with a `-` after three letters g–z (`xoxb-`, `glpat-`…).
    KeyWithDash,
    /// AWS access key ids: four capitals, and 20 capitals and digits in all.
    AwsKey,
    /// Google API keys: two capitals, and 39 characters in all.
    GoogleKey,
}

impl Group {
    pub(in super::super) const ALL: [Group; 7] = [
        Group::PemBegin,
        Group::Jwt,
        Group::Bearer,
        Group::KeyWithUnderscore,
        Group::KeyWithDash,
        Group::AwsKey,
        Group::GoogleKey,
    ];

    /// The group's bit in a set of groups.
    pub(in super::super) fn bit(self) -> usize {
        1 << self as u8
    }

    pub(in super::super) fn recognizer(self) -> Recognizer {
        match self {
            Group::PemBegin => Recognizer::PrivateKey,
            Group::Jwt => Recognizer::Jwt,
            Group::Bearer => Recognizer::BearerToken,
            Group::KeyWithUnderscore | Group::KeyWithDash | Group::AwsKey | Group::GoogleKey => {
                Recognizer::ApiKey
            }
        }
    }
}

/// The literals of `group`.
pub(in super::super) fn literals(group: Group) -> Vec<(&'static [u8], Literal)> {
    match group {
        Group::PemBegin => vec![(PEM_BEGIN, Literal::PemBegin)],
        Group::Jwt => vec![(b"eyJ", Literal::Jwt)],
        Group::Bearer => [b"Bearer ", b"bearer ", b"BEARER "]
            .map(|p| (p.as_slice(), Literal::Bearer))
            .to_vec(),
        keys => KEY_FORMATS
            .iter()
            .filter(|f| f.group == keys)
            .map(|f| (f.prefix.as_bytes(), Literal::Key(f)))
            .collect(),
    }
}

// ---- Private keys --------------------------------------------------------------------

const PEM_BEGIN: &[u8] = b"-----BEGIN ";
const PEM_END: &[u8] = b"-----END ";
const PEM_DASHES: &[u8] = b"-----";

/// A PEM block whose label ends in `PRIVATE KEY` (`RSA PRIVATE KEY`, `EC PRIVATE KEY`,
/// `OPENSSH PRIVATE KEY`, `ENCRYPTED PRIVATE KEY`, `PRIVATE KEY`), from `-----BEGIN` to
/// the matching `-----END …-----`. Without its END line (a value cut short), the key
/// runs to the end of the value: a partial key is still a secret.
fn private_key(v: &[u8], start: usize) -> Option<Range<usize>> {
    let after = start + PEM_BEGIN.len();
    let rest = v.get(after..)?;
    let label_len = rest
        .iter()
        .take(64)
        .position(|&b| !(b.is_ascii_uppercase() || b == b' '))?;
    let (label, rest) = rest.split_at_checked(label_len)?;
    if !label.ends_with(b"PRIVATE KEY") || !rest.starts_with(PEM_DASHES) {
        return None;
    }
    let body = after + label_len + PEM_DASHES.len();
    let end = find_end(v, body, label).unwrap_or(v.len());
    Some(start..end)
}

/// The end of `-----END {label}-----` at or after `from`.
fn find_end(v: &[u8], from: usize, label: &[u8]) -> Option<usize> {
    let mut at = from;
    loop {
        let rest = v.get(at..)?;
        let found = at + rest.windows(PEM_END.len()).position(|w| w == PEM_END)?;
        let tail = v.get(found + PEM_END.len()..)?;
        if tail.starts_with(label) && tail.get(label.len()..)?.starts_with(PEM_DASHES) {
            return Some(found + PEM_END.len() + label.len() + PEM_DASHES.len());
        }
        at = found + 1;
    }
}

// ---- JWTs ----------------------------------------------------------------------------

fn is_base64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// A JWT (JWS compact form): three base64url segments joined by dots, the first
/// decoding to a JSON object with a string `alg`. The payload may not be empty; the
/// signature is empty exactly when `alg` is `none` (an unsecured JWT), so a header and
/// payload followed by a full stop are not mistaken for one.
fn jwt(v: &[u8], start: usize) -> Option<Range<usize>> {
    let b = before(v, start);
    if is_base64url(b) || b == b'.' {
        return None;
    }
    let mut run = Cursor::new(v, start).take_while(|b| is_base64url(b) || b == b'.');
    if run.ends_with(b".") && run.split(|&b| b == b'.').nth(3).is_some() {
        run = run.split_last().map_or(run, |(_, r)| r); // a sentence's full stop
    }
    let mut parts = run.split(|&b| b == b'.');
    let (header, payload, signature) = (parts.next()?, parts.next()?, parts.next()?);
    let valid = parts.next().is_none()
        && header.len() <= jwt_header::MAX_LEN
        && !payload.is_empty()
        && payload.len() % 4 != 1
        && signature.len() % 4 != 1
        && jwt_header::alg_is_none(header).is_some_and(|none| none == signature.is_empty());
    valid.then(|| start..start + run.len())
}

// ---- API keys ------------------------------------------------------------------------

/// A documented API key format: a prefix, then a body of `min..=max` bytes of `body`.
#[derive(Debug)]
pub(in super::super) struct KeyFormat {
    prefix: &'static str,
    body: fn(u8) -> bool,
    min: usize,
    max: usize,
    /// Which of the `Key…` groups the prefix is in, by its shape.
    group: Group,
}

fn upper_alnum(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit()
}

fn alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

/// Letters, digits, `_` and `-`.
fn token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

const fn key(prefix: &'static str, body: fn(u8) -> bool, min: usize, max: usize) -> KeyFormat {
    let group = match prefix.as_bytes() {
        [b'A', b'K' | b'S', b'I', b'A'] => Group::AwsKey,
        [b'A', b'I', b'z', b'a'] => Group::GoogleKey,
        [.., b'-'] => Group::KeyWithDash,
        _ => Group::KeyWithUnderscore,
    };
    KeyFormat {
        prefix,
        body,
        min,
        max,
        group,
    }
}

/// The API key formats recognized. Each body length is the documented one, or a range
/// around it when a service documents none.
static KEY_FORMATS: [KeyFormat; 25] = [
    // AWS access key ids: long-term (AKIA) and temporary (ASIA).
    key("AKIA", upper_alnum, 16, 16),
    key("ASIA", upper_alnum, 16, 16),
    // Stripe secret, restricted and webhook-signing keys.
    key("sk_live_", alnum, 16, 247),
    key("sk_test_", alnum, 16, 247),
    key("rk_live_", alnum, 16, 247),
    key("rk_test_", alnum, 16, 247),
    key("whsec_", alnum, 24, 64),
    // GitHub tokens: personal, OAuth, server, user-to-server, refresh, fine-grained.
    key("ghp_", alnum, 36, 36),
    key("gho_", alnum, 36, 36),
    key("ghs_", alnum, 36, 36),
    key("ghu_", alnum, 36, 36),
    key("ghr_", alnum, 36, 76),
    key("github_pat_", token, 22, 255),
    // GitLab personal access tokens.
    key("glpat-", token, 20, 64),
    // Slack bot, user, app-level and legacy tokens.
    key("xoxb-", token, 10, 255),
    key("xoxp-", token, 10, 255),
    key("xoxa-", token, 10, 255),
    key("xoxs-", token, 10, 255),
    key("xapp-", token, 10, 255),
    // Google API keys.
    key("AIza", token, 35, 35),
    // OpenAI project keys and Anthropic keys.
    key("sk-proj-", token, 20, 255),
    key("sk-ant-", token, 20, 255),
    // npm, PyPI and Hugging Face tokens.
    key("npm_", alnum, 36, 36),
    key("pypi-", token, 50, 255),
    key("hf_", alnum, 30, 40),
];

/// An API key of a known format at `start`: not inside a word, and its body ends there
/// too (`AKIAIOSFODNN7EXAMPLEx` is not an AWS key id).
fn api_key(v: &[u8], start: usize, format: &KeyFormat) -> Option<Range<usize>> {
    if word_before(v, start) {
        return None;
    }
    let mut c = Cursor::new(v, start + format.prefix.len());
    let body = c.take_while(format.body);
    ((format.min..=format.max).contains(&body.len()) && !word_at(v, c.pos)).then_some(start..c.pos)
}

// ---- Bearer tokens -------------------------------------------------------------------

const MIN_BEARER_TOKEN: usize = 16;

/// The token after `Bearer ` (the literal, `len` bytes, at `start`): RFC 6750's token68
/// characters, at least 16 of them with a digit among them, so prose ("the bearer of
/// bad news") is left alone. Only the token is masked, not the word `Bearer`.
fn bearer_token(v: &[u8], start: usize, len: usize) -> Option<Range<usize>> {
    if word_before(v, start) {
        return None;
    }
    let mut c = Cursor::new(v, start + len);
    while c.eat(b' ') {}
    let from = c.pos;
    let token = c.take_while(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b));
    while c.eat(b'=') {}
    (token.len() >= MIN_BEARER_TOKEN && token.iter().any(u8::is_ascii_digit) && !word_at(v, c.pos))
        .then_some(from..c.pos)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn find(text: &str, literal: Literal, prefix: &str) -> Option<String> {
        let start = text.find(prefix)?;
        let range = literal.recognize(text.as_bytes(), start, prefix.len())?;
        text.get(range).map(str::to_owned)
    }

    const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";

    #[test]
    fn jwts() {
        assert_eq!(
            find(&format!("token={JWT}."), Literal::Jwt, "eyJ").as_deref(),
            Some(JWT)
        );
        // Unsecured: empty signature.
        let none = "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.";
        assert_eq!(find(none, Literal::Jwt, "eyJ").as_deref(), Some(none));
        // {"typ":"JWT"}: no alg. Not base64. Two segments. Signed but no signature.
        for bad in [
            "eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiIxIn0.abc",
            "eyJhbGciOi.notbase64.x",
            "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.",
        ] {
            assert_eq!(find(bad, Literal::Jwt, "eyJ"), None, "{bad}");
        }
    }

    #[test]
    fn private_keys() {
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAK\n-----END RSA PRIVATE KEY-----";
        assert_eq!(
            find(
                &format!("key: {pem}\nnext"),
                Literal::PemBegin,
                "-----BEGIN "
            )
            .as_deref(),
            Some(pem)
        );
        let cut = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAA";
        assert_eq!(
            find(cut, Literal::PemBegin, "-----BEGIN ").as_deref(),
            Some(cut)
        );
        let public = "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----";
        assert_eq!(find(public, Literal::PemBegin, "-----BEGIN "), None);
    }

    #[test]
    fn api_keys() {
        let aws = KEY_FORMATS.iter().find(|f| f.prefix == "AKIA").unwrap();
        assert_eq!(
            find("id AKIAIOSFODNN7EXAMPLE,", Literal::Key(aws), "AKIA").as_deref(),
            Some("AKIAIOSFODNN7EXAMPLE")
        );
        for bad in [
            "AKIAIOSFODNN7EXAMPL",
            "AKIAIOSFODNN7EXAMPLEx",
            "XAKIAIOSFODNN7EXAMPLE",
        ] {
            assert_eq!(find(bad, Literal::Key(aws), "AKIA"), None, "{bad}");
        }
    }

    /// Each key format's prefix and shortest key hold what its group says: the
    /// prefilter relies on it.
    #[test]
    fn key_groups_match_their_prefixes() {
        let count = |s: &str, f: fn(&u8) -> bool| s.bytes().filter(f).count();
        for format in &KEY_FORMATS {
            let p = format.prefix;
            let lowers = count(p, |b| (b'g'..=b'z').contains(b));
            let capitals = count(p, u8::is_ascii_uppercase);
            let holds = match format.group {
                Group::KeyWithUnderscore => p.contains('_'),
                Group::KeyWithDash => p.contains('-') && lowers >= 3,
                Group::AwsKey => {
                    let body = (0..=u8::MAX).filter(|&b| (format.body)(b));
                    capitals >= 4
                        && capitals == p.len()
                        && capitals + format.min >= 20
                        && body
                            .into_iter()
                            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
                }
                Group::GoogleKey => capitals >= 2 && p.len() + format.min >= 39,
                Group::PemBegin | Group::Jwt | Group::Bearer => false,
            };
            assert!(holds, "{p}: {:?}", format.group);
        }
        let grouped: usize = Group::ALL.iter().map(|&g| literals(g).len()).sum();
        assert_eq!(grouped, KEY_FORMATS.len() + 5);
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(
            find(
                "Authorization: Bearer abcDEF0123456789xyz==",
                Literal::Bearer,
                "Bearer "
            )
            .as_deref(),
            Some("abcDEF0123456789xyz==")
        );
        assert_eq!(
            find("the Bearer of bad news", Literal::Bearer, "Bearer "),
            None
        );
    }
}
