//! RFC 5929 `tls-server-end-point` channel binding, as SCRAM-SHA-256-PLUS uses it.
//!
//! The binding data is a hash of the server's end-entity certificate (its DER). The hash
//! function is the one in the certificate's signature algorithm, except that MD5 and
//! SHA-1 are replaced by SHA-256 (RFC 5929 §4.1). Certificates whose signature uses no
//! single hash (Ed25519, Ed448) or an algorithm we do not know get no binding, as in
//! PostgreSQL, so the caller must not offer the `-PLUS` mechanism for them.
//!
//! Only the outer `Certificate` structure is read, by a minimal DER walk: SEQUENCE {
//! tbsCertificate, signatureAlgorithm SEQUENCE { OID, parameters }, signature }.

use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};

/// The `tls-server-end-point` channel-binding data for one server certificate: the bytes
/// SCRAM puts (base64-encoded, after the GS2 header) into the client-final `c=` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelBinding(pub Vec<u8>);

impl ChannelBinding {
    /// The binding for a server's end-entity certificate (DER), or `None` when its
    /// signature algorithm names no usable hash (see the module docs) or it is not DER.
    #[must_use]
    pub fn from_certificate(cert_der: &[u8]) -> Option<Self> {
        let data = match signature_hash(cert_der)? {
            Hash::Sha224 => Sha224::digest(cert_der).to_vec(),
            Hash::Sha256 => Sha256::digest(cert_der).to_vec(),
            Hash::Sha384 => Sha384::digest(cert_der).to_vec(),
            Hash::Sha512 => Sha512::digest(cert_der).to_vec(),
        };
        Some(Self(data))
    }

    /// The binding data.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// The hash functions a binding can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hash {
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

const TAG_SEQUENCE: u8 = 0x30;
const TAG_OID: u8 = 0x06;
/// `[0]` EXPLICIT, constructed: `hashAlgorithm` in RSASSA-PSS-params.
const TAG_CONTEXT_0: u8 = 0xa0;

// Signature algorithm OIDs (DER contents), RFC 3279, 4055, 5758.
const MD5_WITH_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x04];
const SHA1_WITH_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05];
const RSASSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
const SHA256_WITH_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
const SHA384_WITH_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c];
const SHA512_WITH_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d];
const SHA224_WITH_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0e];
const ECDSA_WITH_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01];
const ECDSA_WITH_SHA224: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x01];
const ECDSA_WITH_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
const ECDSA_WITH_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
const ECDSA_WITH_SHA512: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04];
// Hash OIDs, for RSASSA-PSS parameters (RFC 4055).
const SHA1: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x1a];
const SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
const SHA384: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];
const SHA512: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03];
const SHA224: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x04];

/// The binding hash for a certificate: its signature algorithm's hash, MD5 and SHA-1
/// upgraded to SHA-256.
fn signature_hash(cert_der: &[u8]) -> Option<Hash> {
    let certificate = expect(TAG_SEQUENCE, cert_der)?.0;
    let (_tbs_tag, _tbs, rest) = tlv(certificate)?;
    let algorithm = expect(TAG_SEQUENCE, rest)?.0;
    let (oid, parameters) = expect(TAG_OID, algorithm)?;
    Some(match oid {
        // MD5 and SHA-1 are upgraded to SHA-256.
        MD5_WITH_RSA | SHA1_WITH_RSA | ECDSA_WITH_SHA1 | SHA256_WITH_RSA | ECDSA_WITH_SHA256 => {
            Hash::Sha256
        }
        SHA224_WITH_RSA | ECDSA_WITH_SHA224 => Hash::Sha224,
        SHA384_WITH_RSA | ECDSA_WITH_SHA384 => Hash::Sha384,
        SHA512_WITH_RSA | ECDSA_WITH_SHA512 => Hash::Sha512,
        RSASSA_PSS => pss_hash(parameters)?,
        _ => return None,
    })
}

/// The hash of RSASSA-PSS-params `SEQUENCE { hashAlgorithm [0] DEFAULT sha1, … }`.
fn pss_hash(parameters: &[u8]) -> Option<Hash> {
    let fields = expect(TAG_SEQUENCE, parameters)?.0;
    let hash_oid = match tlv(fields) {
        Some((TAG_CONTEXT_0, explicit, _)) => {
            let algorithm = expect(TAG_SEQUENCE, explicit)?.0;
            expect(TAG_OID, algorithm)?.0
        }
        // Absent: the default, SHA-1.
        _ => SHA1,
    };
    match hash_oid {
        SHA1 | SHA256 => Some(Hash::Sha256),
        SHA224 => Some(Hash::Sha224),
        SHA384 => Some(Hash::Sha384),
        SHA512 => Some(Hash::Sha512),
        _ => None,
    }
}

/// The contents of a TLV with tag `tag` at the start of `input`, and what follows it.
fn expect(tag: u8, input: &[u8]) -> Option<(&[u8], &[u8])> {
    let (found, contents, rest) = tlv(input)?;
    (found == tag).then_some((contents, rest))
}

/// Splits the DER tag-length-value at the start of `input` into (tag, contents, rest).
/// Only single-byte tags and definite lengths up to 4 bytes, which is all X.509 needs.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, input) = input.split_first()?;
    let (&first, input) = input.split_first()?;
    let (len, input) = if first < 0x80 {
        (usize::from(first), input)
    } else {
        let octets = usize::from(first & 0x7f);
        if octets == 0 || octets > 4 {
            return None; // indefinite (BER only) or absurdly long
        }
        let (octets, input) = input.split_at_checked(octets)?;
        let len = octets
            .iter()
            .fold(0usize, |len, &b| (len << 8) | usize::from(b));
        (len, input)
    };
    let (contents, rest) = input.split_at_checked(len)?;
    Some((tag, contents, rest))
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair, SignatureAlgorithm};

    fn self_signed(alg: &'static SignatureAlgorithm) -> Vec<u8> {
        let key = KeyPair::generate_for(alg).unwrap();
        let params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn hash_follows_the_signature_algorithm_of_rcgen_certs() {
        let p256 = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
        assert_eq!(signature_hash(&p256), Some(Hash::Sha256));
        assert_eq!(
            ChannelBinding::from_certificate(&p256).unwrap().0,
            Sha256::digest(&p256).to_vec()
        );

        let p384 = self_signed(&rcgen::PKCS_ECDSA_P384_SHA384);
        assert_eq!(signature_hash(&p384), Some(Hash::Sha384));
        assert_eq!(
            ChannelBinding::from_certificate(&p384).unwrap().0,
            Sha384::digest(&p384).to_vec()
        );

        let p521 = self_signed(&rcgen::PKCS_ECDSA_P521_SHA512);
        assert_eq!(signature_hash(&p521), Some(Hash::Sha512));
        assert_eq!(ChannelBinding::from_certificate(&p521).unwrap().0.len(), 64);

        // Ed25519 signs without a separate hash: no binding, as in PostgreSQL.
        let ed25519 = self_signed(&rcgen::PKCS_ED25519);
        assert_eq!(ChannelBinding::from_certificate(&ed25519), None);
    }

    /// A skeleton certificate: the signatureAlgorithm is all `signature_hash` reads.
    fn skeleton(oid: &[u8], parameters: &[u8]) -> Vec<u8> {
        let mut algorithm = der(TAG_OID, oid);
        algorithm.extend_from_slice(parameters);
        let mut certificate = der(TAG_SEQUENCE, &[]); // tbsCertificate
        certificate.extend(der(TAG_SEQUENCE, &algorithm));
        certificate.extend(der(0x03, &[0x00])); // signatureValue
        der(TAG_SEQUENCE, &certificate)
    }

    fn der(tag: u8, contents: &[u8]) -> Vec<u8> {
        let len = contents.len();
        let mut out = vec![tag];
        if len < 0x80 {
            out.push(u8::try_from(len).unwrap());
        } else {
            out.extend([
                0x82,
                u8::try_from(len >> 8).unwrap(),
                u8::try_from(len & 0xff).unwrap(),
            ]);
        }
        out.extend_from_slice(contents);
        out
    }

    fn pss(hash: Option<&[u8]>) -> Vec<u8> {
        let fields = hash
            .map(|oid| der(TAG_CONTEXT_0, &der(TAG_SEQUENCE, &der(TAG_OID, oid))))
            .unwrap_or_default();
        der(TAG_SEQUENCE, &fields)
    }

    #[test]
    fn md5_and_sha1_are_upgraded_to_sha256() {
        for oid in [MD5_WITH_RSA, SHA1_WITH_RSA, ECDSA_WITH_SHA1] {
            assert_eq!(signature_hash(&skeleton(oid, &[])), Some(Hash::Sha256));
        }
    }

    #[test]
    fn rsa_signatures_use_their_hash() {
        let null = der(0x05, &[]);
        assert_eq!(
            signature_hash(&skeleton(SHA224_WITH_RSA, &null)),
            Some(Hash::Sha224)
        );
        assert_eq!(
            signature_hash(&skeleton(SHA256_WITH_RSA, &null)),
            Some(Hash::Sha256)
        );
        assert_eq!(
            signature_hash(&skeleton(SHA384_WITH_RSA, &null)),
            Some(Hash::Sha384)
        );
        assert_eq!(
            signature_hash(&skeleton(SHA512_WITH_RSA, &null)),
            Some(Hash::Sha512)
        );
    }

    #[test]
    fn rsa_pss_uses_the_hash_in_its_parameters() {
        let cases = [
            (Some(SHA384), Some(Hash::Sha384)),
            (Some(SHA512), Some(Hash::Sha512)),
            (Some(SHA1), Some(Hash::Sha256)),
            (None, Some(Hash::Sha256)), // absent: SHA-1 by default
            (Some(ECDSA_WITH_SHA256), None),
        ];
        for (hash, expected) in cases {
            assert_eq!(
                signature_hash(&skeleton(RSASSA_PSS, &pss(hash))),
                expected,
                "{hash:?}"
            );
        }
        // PSS needs its parameters.
        assert_eq!(signature_hash(&skeleton(RSASSA_PSS, &[])), None);
    }

    #[test]
    fn unknown_algorithms_and_malformed_der_give_no_binding() {
        let ed448 = [0x2b, 0x65, 0x71];
        assert_eq!(signature_hash(&skeleton(&ed448, &[])), None);

        let good = skeleton(SHA256_WITH_RSA, &der(0x05, &[]));
        for end in 0..good.len() {
            assert_eq!(
                signature_hash(good.get(..end).unwrap()),
                None,
                "cut at {end}"
            );
        }
        assert_eq!(signature_hash(&[]), None);
        // Indefinite and oversized lengths.
        assert_eq!(signature_hash(&[0x30, 0x80, 0x00, 0x00]), None);
        assert_eq!(signature_hash(&[0x30, 0x85, 1, 2, 3, 4, 5]), None);
        assert_eq!(signature_hash(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
    }

    #[test]
    fn long_form_lengths_are_read() {
        let padding = der(0x04, &[0u8; 300]); // an OCTET STRING in the tbsCertificate
        let mut certificate = der(TAG_SEQUENCE, &padding);
        let mut algorithm = der(TAG_OID, ECDSA_WITH_SHA384);
        algorithm.extend(der(0x05, &[]));
        certificate.extend(der(TAG_SEQUENCE, &algorithm));
        assert_eq!(
            signature_hash(&der(TAG_SEQUENCE, &certificate)),
            Some(Hash::Sha384)
        );
    }
}
