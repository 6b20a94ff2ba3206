//! The key of `hash` tokens: loaded by reference (an environment variable or a file,
//! never a value in a policy), never printed, and wiped when dropped.

use super::{MaskError, MaskSpec};
use sha2::{
    Digest as _, Sha256, Sha256VarCore,
    digest::{
        Output,
        core_api::{Block, Buffer, UpdateCore as _, VariableOutputCore as _},
    },
};
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
/// (16 characters).
///
/// Holds the SHA-256 states after the key's inner and outer blocks (what
/// `Hmac::new` computes), so a token costs the compressions of the input and of the
/// inner digest, and nothing for the key. It drives SHA-256's block function itself
/// rather than cloning an `Hmac`: a token is made for every finding of a value, and
/// the clone and buffer copies of the generic wrapper cost as much as a compression.
#[derive(Clone)]
pub(super) struct Hasher {
    /// After the key XOR ipad.
    inner: Sha256VarCore,
    /// After the key XOR opad.
    outer: Sha256VarCore,
}

impl Hasher {
    pub(super) fn new(key: &MaskKey) -> Result<Self, MaskError> {
        let refused = || MaskError::Key {
            from: "given".into(),
            reason: "SHA-256 refused its output size".into(),
        };
        // RFC 2104: a key longer than a block is hashed first; then zero-padded.
        let mut block = Block::<Sha256VarCore>::default();
        if key.0.len() > block.len() {
            let digest = Sha256::digest(&key.0);
            block.iter_mut().zip(digest).for_each(|(b, k)| *b = k);
        } else {
            block.iter_mut().zip(&key.0).for_each(|(b, k)| *b = *k);
        }
        let keyed = |pad: u8| {
            let mut core = Sha256VarCore::new(32).map_err(|_| refused())?;
            let mut padded = block;
            padded.iter_mut().for_each(|b| *b ^= pad);
            core.update_blocks(std::slice::from_ref(&padded));
            padded.fill(0);
            Ok::<_, MaskError>(core)
        };
        let hasher = Hasher {
            inner: keyed(0x36)?,
            outer: keyed(0x5c)?,
        };
        block.fill(0);
        std::hint::black_box(&block); // keep the wipe from being optimized away
        Ok(hasher)
    }

    /// The length of a token: 12 bytes in base64.
    pub(super) const TOKEN_LEN: usize = 16;

    /// Appends the token of `input` to `out`. Allocates nothing but room in `out`.
    pub(super) fn token(&self, input: &[u8], out: &mut Vec<u8>) {
        let mut inner = self.inner.clone();
        let mut buffer = Buffer::<Sha256VarCore>::default();
        buffer.digest_blocks(input, |blocks| inner.update_blocks(blocks));
        let mut digest = Output::<Sha256VarCore>::default();
        inner.finalize_variable_core(&mut buffer, &mut digest);
        let mut outer = self.outer.clone();
        let mut buffer = Buffer::<Sha256VarCore>::default();
        buffer.digest_blocks(&digest, |blocks| outer.update_blocks(blocks));
        outer.finalize_variable_core(&mut buffer, &mut digest);
        if let Some(head) = digest.first_chunk::<12>() {
            out.extend_from_slice(&base64url(head));
        }
    }
}

/// The base64url alphabet (RFC 4648, section 5).
const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// 12 bytes in base64url: 16 characters, no padding needed.
fn base64url(bytes: &[u8; 12]) -> [u8; Hasher::TOKEN_LEN] {
    let mut token = [0; Hasher::TOKEN_LEN];
    let (groups, _) = bytes.as_chunks::<3>();
    let (chars, _) = token.as_chunks_mut::<4>();
    for (&[a, b, c], chars) in groups.iter().zip(chars) {
        let n = u32::from(a) << 16 | u32::from(b) << 8 | u32::from(c);
        for (i, ch) in chars.iter_mut().enumerate() {
            let sextet = (n >> (18 - 6 * i)) & 63;
            *ch = BASE64URL.get(sextet as usize).copied().unwrap_or(b'A');
        }
    }
    token
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hasher(<keyed>)")
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::{Hasher, MaskKey};
    use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
    use hmac::{Hmac, Mac as _};
    use sha2::Sha256;

    /// Tokens are HMAC-SHA256 as the `hmac` crate computes it, for keys shorter and
    /// longer than a block and inputs that end anywhere in one, two or three blocks.
    #[test]
    fn tokens_are_hmac_sha256() {
        for key_len in [16u8, 31, 63, 64, 65, 100] {
            let key: Vec<u8> = (0..key_len).map(|i| i.wrapping_mul(7) ^ 3).collect();
            let hasher = Hasher::new(&MaskKey::new(key.clone()).unwrap()).unwrap();
            for len in 0..200u8 {
                let input: Vec<u8> = (0..len).map(|i| i.wrapping_mul(13) ^ len).collect();
                let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
                mac.update(&input);
                let digest = mac.finalize().into_bytes();
                let expected = URL_SAFE_NO_PAD.encode(digest.get(..12).unwrap());
                let mut token = Vec::new();
                hasher.token(&input, &mut token);
                assert_eq!(
                    String::from_utf8(token).unwrap(),
                    expected,
                    "{key_len} {len}"
                );
            }
        }
    }
}
