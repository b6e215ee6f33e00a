//! The signatures X.509 objects carry (certificates, CRLs, OCSP responses; later CMS): RSA PKCS#1 v1.5
//! and RSA-PSS with SHA-256/384/512, ECDSA on P-256 and P-384 with SHA-256/384, and Ed25519, verified
//! with the RustCrypto crates. Anything else is refused by name.

use der::asn1::ObjectIdentifier as Oid;
use der::{Decode as _, Encode as _};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::der;
use x509_cert::spki;

pub const RSA_ENCRYPTION: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");
pub const RSASSA_PSS: Oid = Oid::new_unwrap("1.2.840.113549.1.1.10");
pub const SHA256_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.11");
pub const SHA384_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.12");
pub const SHA512_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.13");
pub const EC_PUBLIC_KEY: Oid = Oid::new_unwrap("1.2.840.10045.2.1");
pub const P256: Oid = Oid::new_unwrap("1.2.840.10045.3.1.7");
pub const P384: Oid = Oid::new_unwrap("1.3.132.0.34");
pub const ECDSA_WITH_SHA256: Oid = Oid::new_unwrap("1.2.840.10045.4.3.2");
pub const ECDSA_WITH_SHA384: Oid = Oid::new_unwrap("1.2.840.10045.4.3.3");
pub const ED25519: Oid = Oid::new_unwrap("1.3.101.112");
pub const SHA1: Oid = Oid::new_unwrap("1.3.14.3.2.26");
pub const SHA256: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.1");
pub const SHA384: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.2");
pub const SHA512: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.3");
const MGF1: Oid = Oid::new_unwrap("1.2.840.113549.1.1.8");

/// RSA keys shorter than this are refused.
pub const RSA_MODULUS_BITS_MIN: usize = 2048;
/// RSA keys longer than this are refused (a bound on the work one signature costs).
pub const RSA_MODULUS_BITS_MAX: usize = 8192;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    #[error("signature algorithm {0} is not supported")]
    UnsupportedAlgorithm(String),
    #[error("the public key is not usable: {0}")]
    BadKey(String),
    #[error("the signature algorithm {algorithm} does not fit a {key} key")]
    KeyMismatch { algorithm: String, key: &'static str },
    #[error("the signature does not verify")]
    Invalid,
}

/// The digest algorithms Kho computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestAlgorithm {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl DigestAlgorithm {
    pub fn from_oid(oid: &Oid) -> Option<DigestAlgorithm> {
        [
            (SHA1, DigestAlgorithm::Sha1),
            (SHA256, DigestAlgorithm::Sha256),
            (SHA384, DigestAlgorithm::Sha384),
            (SHA512, DigestAlgorithm::Sha512),
        ]
        .into_iter()
        .find_map(|(known, digest)| (known == *oid).then_some(digest))
    }

    pub fn digest(self, message: &[u8]) -> Vec<u8> {
        self.digest_parts(&[message])
    }

    /// The digest of `parts` one after another (a PDF's two signed ranges, without copying them).
    pub fn digest_parts(self, parts: &[&[u8]]) -> Vec<u8> {
        fn run<D: sha2::Digest>(parts: &[&[u8]]) -> Vec<u8> {
            let mut hasher = D::new();
            for part in parts {
                hasher.update(part);
            }
            hasher.finalize().to_vec()
        }
        match self {
            DigestAlgorithm::Sha1 => run::<sha1::Sha1>(parts),
            DigestAlgorithm::Sha256 => run::<sha2::Sha256>(parts),
            DigestAlgorithm::Sha384 => run::<sha2::Sha384>(parts),
            DigestAlgorithm::Sha512 => run::<sha2::Sha512>(parts),
        }
    }
}

enum Scheme {
    Pkcs1(DigestAlgorithm),
    Pss(DigestAlgorithm, usize),
    Ecdsa(DigestAlgorithm),
    Ed25519,
}

fn scheme(algorithm: &AlgorithmIdentifierOwned) -> Result<Scheme, SignatureError> {
    let unsupported = || SignatureError::UnsupportedAlgorithm(algorithm.oid.to_string());
    Ok(match algorithm.oid {
        SHA256_WITH_RSA => Scheme::Pkcs1(DigestAlgorithm::Sha256),
        SHA384_WITH_RSA => Scheme::Pkcs1(DigestAlgorithm::Sha384),
        SHA512_WITH_RSA => Scheme::Pkcs1(DigestAlgorithm::Sha512),
        ECDSA_WITH_SHA256 => Scheme::Ecdsa(DigestAlgorithm::Sha256),
        ECDSA_WITH_SHA384 => Scheme::Ecdsa(DigestAlgorithm::Sha384),
        ED25519 => Scheme::Ed25519,
        RSASSA_PSS => {
            // RFC 4055: the hash and the mask generation's hash must agree; SHA-1 is not accepted.
            let parameters =
                algorithm.parameters.as_ref().ok_or_else(unsupported)?.to_der().map_err(|_| unsupported())?;
            let parameters = rsa::pkcs1::RsaPssParams::from_der(&parameters).map_err(|_| unsupported())?;
            let digest = DigestAlgorithm::from_oid(&parameters.hash.oid)
                .filter(|d| *d != DigestAlgorithm::Sha1)
                .ok_or_else(unsupported)?;
            let mask_hash = parameters.mask_gen.parameters.as_ref().map(|p| p.oid);
            if parameters.mask_gen.oid != MGF1 || mask_hash != Some(parameters.hash.oid) {
                return Err(unsupported());
            }
            Scheme::Pss(digest, usize::from(parameters.salt_len))
        }
        _ => return Err(unsupported()),
    })
}

/// Verifies `signature` over `message` under the key `key`, with `algorithm`.
pub fn verify(
    key: &SubjectPublicKeyInfoOwned,
    algorithm: &AlgorithmIdentifierOwned,
    message: &[u8],
    signature: &[u8],
) -> Result<(), SignatureError> {
    use rsa::signature::Verifier as _;
    let scheme = scheme(algorithm)?;
    let key_bytes = key.subject_public_key.as_bytes().ok_or_else(|| SignatureError::BadKey("unused bits".into()))?;
    let mismatch = |key: &'static str| SignatureError::KeyMismatch { algorithm: algorithm.oid.to_string(), key };
    match key.algorithm.oid {
        RSA_ENCRYPTION | RSASSA_PSS => {
            let key = rsa_key(key_bytes)?;
            let invalid = |_| SignatureError::Invalid;
            match scheme {
                Scheme::Pkcs1(digest) => {
                    let signature = rsa::pkcs1v15::Signature::try_from(signature).map_err(invalid)?;
                    match digest {
                        DigestAlgorithm::Sha256 => {
                            rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key).verify(message, &signature)
                        }
                        DigestAlgorithm::Sha384 => {
                            rsa::pkcs1v15::VerifyingKey::<sha2::Sha384>::new(key).verify(message, &signature)
                        }
                        _ => rsa::pkcs1v15::VerifyingKey::<sha2::Sha512>::new(key).verify(message, &signature),
                    }
                    .map_err(invalid)
                }
                Scheme::Pss(digest, salt) => {
                    let signature = rsa::pss::Signature::try_from(signature).map_err(invalid)?;
                    match digest {
                        DigestAlgorithm::Sha256 => rsa::pss::VerifyingKey::<sha2::Sha256>::new_with_salt_len(key, salt)
                            .verify(message, &signature),
                        DigestAlgorithm::Sha384 => rsa::pss::VerifyingKey::<sha2::Sha384>::new_with_salt_len(key, salt)
                            .verify(message, &signature),
                        _ => rsa::pss::VerifyingKey::<sha2::Sha512>::new_with_salt_len(key, salt)
                            .verify(message, &signature),
                    }
                    .map_err(invalid)
                }
                _ => Err(mismatch("RSA")),
            }
        }
        EC_PUBLIC_KEY => {
            let Scheme::Ecdsa(digest) = scheme else { return Err(mismatch("ECDSA")) };
            let prehash = digest.digest(message);
            let curve = key.algorithm.parameters.as_ref().and_then(|p| p.decode_as::<Oid>().ok());
            verify_ecdsa(curve, key_bytes, &prehash, signature)
        }
        ED25519 => {
            let Scheme::Ed25519 = scheme else { return Err(mismatch("Ed25519")) };
            let bytes: [u8; 32] = key_bytes.try_into().map_err(|_| SignatureError::BadKey("not 32 bytes".into()))?;
            let key =
                ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|e| SignatureError::BadKey(e.to_string()))?;
            let signature = ed25519_dalek::Signature::from_slice(signature).map_err(|_| SignatureError::Invalid)?;
            key.verify_strict(message, &signature).map_err(|_| SignatureError::Invalid)
        }
        other => Err(SignatureError::UnsupportedAlgorithm(format!("public key {other}"))),
    }
}

fn rsa_key(pkcs1: &[u8]) -> Result<rsa::RsaPublicKey, SignatureError> {
    use rsa::pkcs1::DecodeRsaPublicKey as _;
    use rsa::traits::PublicKeyParts as _;
    let key = rsa::RsaPublicKey::from_pkcs1_der(pkcs1).map_err(|e| SignatureError::BadKey(e.to_string()))?;
    let bits = key.n().bits();
    if !(RSA_MODULUS_BITS_MIN..=RSA_MODULUS_BITS_MAX).contains(&bits) {
        return Err(SignatureError::BadKey(format!(
            "an RSA modulus of {bits} bits; {RSA_MODULUS_BITS_MIN} to {RSA_MODULUS_BITS_MAX} are accepted"
        )));
    }
    Ok(key)
}

fn verify_ecdsa(curve: Option<Oid>, point: &[u8], prehash: &[u8], signature: &[u8]) -> Result<(), SignatureError> {
    use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
    let bad_key = |e: p256::ecdsa::Error| SignatureError::BadKey(e.to_string());
    match curve {
        Some(P256) => {
            let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(point).map_err(bad_key)?;
            let signature = p256::ecdsa::DerSignature::from_bytes(signature).map_err(|_| SignatureError::Invalid)?;
            key.verify_prehash(prehash, &signature).map_err(|_| SignatureError::Invalid)
        }
        Some(P384) => {
            let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(point).map_err(bad_key)?;
            let signature = p384::ecdsa::DerSignature::from_bytes(signature).map_err(|_| SignatureError::Invalid)?;
            key.verify_prehash(prehash, &signature).map_err(|_| SignatureError::Invalid)
        }
        other => Err(SignatureError::UnsupportedAlgorithm(format!(
            "elliptic curve {}",
            other.map_or("(none)".to_owned(), |oid| oid.to_string())
        ))),
    }
}

/// Kho statements signed under algorithm 2: ECDSA P-256 with SHA-256, the signature as the 64 bytes
/// `r || s` (one encoding, unlike DER's).
pub fn verify_p256_sha256_fixed(
    key: &SubjectPublicKeyInfoOwned,
    message: &[u8],
    signature: &[u8],
) -> Result<(), SignatureError> {
    use p256::ecdsa::signature::Verifier as _;
    let curve = key.algorithm.parameters.as_ref().and_then(|p| p.decode_as::<Oid>().ok());
    if key.algorithm.oid != EC_PUBLIC_KEY || curve != Some(P256) {
        return Err(SignatureError::KeyMismatch { algorithm: "ECDSA P-256 SHA-256".into(), key: "non-P-256" });
    }
    let point = key.subject_public_key.as_bytes().ok_or_else(|| SignatureError::BadKey("unused bits".into()))?;
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(point).map_err(|e| SignatureError::BadKey(e.to_string()))?;
    let signature = p256::ecdsa::Signature::from_slice(signature).map_err(|_| SignatureError::Invalid)?;
    key.verify(message, &signature).map_err(|_| SignatureError::Invalid)
}

/// Kho statements signed under algorithm 3: RSA with SHA-256, PKCS#1 v1.5 or PSS (MGF1 SHA-256, a
/// 32-byte salt).
pub fn verify_rsa_sha256(
    key: &SubjectPublicKeyInfoOwned,
    message: &[u8],
    signature: &[u8],
    pss: bool,
) -> Result<(), SignatureError> {
    use rsa::signature::Verifier as _;
    if key.algorithm.oid != RSA_ENCRYPTION {
        return Err(SignatureError::KeyMismatch { algorithm: "RSA SHA-256".into(), key: "non-RSA" });
    }
    let key = rsa_key(key.subject_public_key.as_bytes().ok_or_else(|| SignatureError::BadKey("unused bits".into()))?)?;
    if pss {
        let signature = rsa::pss::Signature::try_from(signature).map_err(|_| SignatureError::Invalid)?;
        rsa::pss::VerifyingKey::<sha2::Sha256>::new_with_salt_len(key, 32).verify(message, &signature)
    } else {
        let signature = rsa::pkcs1v15::Signature::try_from(signature).map_err(|_| SignatureError::Invalid)?;
        rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key).verify(message, &signature)
    }
    .map_err(|_| SignatureError::Invalid)
}
