//! The key of `hash` tokens: loaded by reference (an environment variable or a file,
//! never a value in a policy), never printed, and wiped when dropped.

use super::{MaskError, MaskSpec};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use std::{fmt, path::PathBuf};

/// Where the key is kept, as a rule names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `mask_key_env`: the value of this environment variable of the daemon.
    Env(String),
    /// `mask_key_file`: the contents of this file, without a trailing newline.
    File(PathBuf),
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Env(name) => write!(f, "env:{name}"),
            KeySource::File(path) => write!(f, "file:{}", path.display()),
        }
    }
}

impl MaskSpec {
    /// The key this rule names, if any.
    pub fn key_source(&self) -> Result<Option<KeySource>, MaskError> {
        match (&self.mask_key_env, &self.mask_key_file) {
            (Some(_), Some(_)) => Err(MaskError::KeyTwice),
            (Some(name), None) => Ok(Some(KeySource::Env(name.clone()))),
            (None, Some(path)) => Ok(Some(KeySource::File(path.clone()))),
            (None, None) => Ok(None),
        }
    }
}

/// The secret key of `hash` tokens. `Debug` shows `MaskKey(<secret>)`; the bytes are
/// overwritten when it is dropped.
pub struct MaskKey(Vec<u8>);

impl MaskKey {
    /// The shortest key accepted: 128 bits.
    pub const MIN_LEN: usize = 16;

    /// A key from its bytes (at least [`MaskKey::MIN_LEN`] of them).
    pub fn new(bytes: Vec<u8>) -> Result<Self, MaskError> {
        Self::checked(bytes, "given")
    }

    /// Reads the key from where `source` says.
    pub fn load(source: &KeySource) -> Result<Self, MaskError> {
        let from = source.to_string();
        let bytes = match source {
            KeySource::Env(name) => std::env::var_os(name)
                .map(std::ffi::OsString::into_encoded_bytes)
                .ok_or_else(|| MaskError::Key {
                    from: from.clone(),
                    reason: format!("{name} is not set in the daemon's environment; set it, or use mask_key_file"),
                })?,
            KeySource::File(path) => {
                let mut bytes = std::fs::read(path).map_err(|e| MaskError::Key {
                    from: from.clone(),
                    reason: format!("cannot read it ({}); check the path and its permissions", e.kind()),
                })?;
                while bytes.last().is_some_and(|b| matches!(b, b'\n' | b'\r')) {
                    bytes.pop();
                }
                bytes
            }
        };
        Self::checked(bytes, &from)
    }

    /// The one key the rules of a session name (`None` if none names a key).
    pub fn for_specs(specs: &[MaskSpec]) -> Result<Option<Self>, MaskError> {
        let mut chosen: Option<KeySource> = None;
        for spec in specs {
            match (spec.key_source()?, &chosen) {
                (Some(source), Some(first)) if source != *first => {
                    return Err(MaskError::KeyConflict {
                        first: first.to_string(),
                        second: source.to_string(),
                    });
                }
                (Some(source), None) => chosen = Some(source),
                _ => {}
            }
        }
        chosen.as_ref().map(Self::load).transpose()
    }

    fn checked(bytes: Vec<u8>, from: &str) -> Result<Self, MaskError> {
        let key = MaskKey(bytes); // wiped on drop, also on the error path
        if key.0.len() < Self::MIN_LEN {
            return Err(MaskError::Key {
                from: from.to_owned(),
                reason: format!(
                    "{} bytes is too short; use at least {} random bytes (e.g. `openssl rand -base64 32`)",
                    key.0.len(),
                    Self::MIN_LEN
                ),
            });
        }
        Ok(key)
    }
}

impl fmt::Debug for MaskKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MaskKey(<secret>)")
    }
}

impl Drop for MaskKey {
    fn drop(&mut self) {
        self.0.fill(0);
        std::hint::black_box(&self.0); // keep the wipe from being optimized away
    }
}

/// Makes `hash` tokens: HMAC-SHA256 under the key, its first 96 bits in base64url
/// (16 characters). Holds the keyed HMAC state, so each token costs two SHA-256
/// compressions of the input and nothing for the key.
#[derive(Clone)]
pub(super) struct Hasher(Hmac<Sha256>);

impl Hasher {
    pub(super) fn new(key: &MaskKey) -> Result<Self, MaskError> {
        Hmac::new_from_slice(&key.0)
            .map(Hasher)
            .map_err(|_| MaskError::Key {
                from: "given".into(),
                reason: "HMAC refused the key".into(),
            })
    }

    /// The length of a token: 12 bytes in base64.
    pub(super) const TOKEN_LEN: usize = 16;

    /// Appends the token of `input` to `out`. Allocates nothing but room in `out`: the
    /// keyed state is cloned (a copy of two SHA-256 states), the token encoded on the
    /// stack.
    pub(super) fn token(&self, input: &[u8], out: &mut Vec<u8>) {
        let mut mac = self.0.clone();
        mac.update(input);
        let digest = mac.finalize().into_bytes();
        let mut token = [0; Self::TOKEN_LEN];
        let encoded = digest
            .first_chunk::<12>()
            .and_then(|head| URL_SAFE_NO_PAD.encode_slice(head, &mut token).ok());
        if encoded == Some(Self::TOKEN_LEN) {
            out.extend_from_slice(&token);
        }
    }
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hasher(<keyed>)")
    }
}
