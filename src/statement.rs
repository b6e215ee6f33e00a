//! Signed statements: records, revocations, issuer and vault key certificates and receipts, in the canonical
//! byte encoding of docs/FORMAT.md.
//!
//! The signed bytes are the one thing an outsider must rebuild, so they are written by hand here, not
//! by a serialization library: a fixed header, then fields in a fixed order, integers big-endian at a
//! fixed width, strings and byte strings behind a 32-bit length. Every value has exactly one encoding,
//! and the decoder rejects anything else (unknown versions, kinds or algorithms, bad field values,
//! trailing bytes). A statement's id is the SHA-256 of its signed bytes.
//!
//! [`Signed`] can only be built by signing or by decoding bytes whose signature verifies under the
//! embedded signer key (verified now, remembered as verified, or sealed by the vault that verified
//! them, see [`VerifiedEnvelopes`]); whether that signer is *trusted* is the vault's decision.

use std::fmt;

use ed25519_dalek::Signer as _;

use crate::ids::{Code, Date, Digest, FieldError, MediaType, OwnerId, Title};

/// Largest signed statement accepted, envelope included.
pub const STATEMENT_SIZE_BYTES_MAX: usize = 64 * 1024;
/// The eight bytes every signed statement starts with.
pub const MAGIC: &[u8; 8] = b"kho-stmt";
/// The version of the signed-bytes layout this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;

/// Why bytes are not a valid signed statement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("statement is {size} bytes, larger than the limit of {STATEMENT_SIZE_BYTES_MAX}")]
    TooLarge { size: usize },
    #[error("statement ends early: {0} is missing")]
    Truncated(&'static str),
    #[error("statement has {0} unexpected bytes after its last field")]
    TrailingBytes(usize),
    #[error("not a Kho statement (bad magic)")]
    BadMagic,
    #[error("statement format version {0} is not supported (this build reads version {FORMAT_VERSION})")]
    UnsupportedVersion(u8),
    #[error("statement kind {found} where a {expected} was expected")]
    WrongKind { expected: &'static str, found: u8 },
    #[error("signature algorithm {0} is not supported (1 = Ed25519, 2 = ECDSA P-256 X.509, 3 = RSA X.509)")]
    UnsupportedAlgorithm(u16),
    #[error("malformed public key: {0}")]
    BadPublicKey(String),
    #[error("field {0} is not valid UTF-8")]
    BadUtf8(&'static str),
    #[error("field {field} has an invalid presence flag {flag}")]
    BadOptionFlag { field: &'static str, flag: u8 },
    #[error(transparent)]
    Field(#[from] FieldError),
    #[error("the signature does not verify under the signer's key")]
    BadSignature,
}

/// Signature algorithms (docs/FORMAT.md section 1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// Pure Ed25519 (RFC 8032) over the signed bytes; Kho's own key certificates.
    Ed25519,
    /// ECDSA on P-256 with SHA-256, the signer named by its X.509 certificate chain.
    EcdsaP256Sha256,
    /// RSA with SHA-256 (PKCS#1 v1.5 or PSS, as the signer says), the signer named by its X.509
    /// certificate chain.
    RsaSha256,
}

impl Algorithm {
    pub const ED25519_ID: u16 = 1;
    pub const ECDSA_P256_SHA256_ID: u16 = 2;
    pub const RSA_SHA256_ID: u16 = 3;

    pub fn id(self) -> u16 {
        match self {
            Algorithm::Ed25519 => Self::ED25519_ID,
            Algorithm::EcdsaP256Sha256 => Self::ECDSA_P256_SHA256_ID,
            Algorithm::RsaSha256 => Self::RSA_SHA256_ID,
        }
    }
}

/// The RSA signature scheme of an algorithm-3 signer, part of the signed bytes so it cannot be
/// swapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RsaPadding {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (what most tokens and remote-signing services make).
    Pkcs1v15,
    /// RSASSA-PSS with SHA-256, MGF1 with SHA-256 and a 32-byte salt.
    Pss,
}

impl RsaPadding {
    fn id(self) -> u8 {
        match self {
            RsaPadding::Pkcs1v15 => 1,
            RsaPadding::Pss => 2,
        }
    }
}

/// Certificates an X.509 signer may carry: its own and the intermediates up to (not including) a root.
pub const X509_CHAIN_LENGTH_MAX: usize = 1 + crate::x509::path::INTERMEDIATES_MAX;

/// A signer known by its X.509 certificate chain (algorithms 2 and 3): the chain travels in the signed
/// bytes, so the statement alone names who signed; whether that chain is trusted is the vault's
/// decision (path validation to a configured root, `x509::TrustStore`).
#[derive(Clone, PartialEq, Eq)]
pub struct X509Signer {
    algorithm: Algorithm,
    padding: Option<RsaPadding>,
    chain: std::sync::Arc<Vec<crate::x509::Certificate>>,
    encoded: std::sync::Arc<[u8]>,
}

impl X509Signer {
    /// A signer with `chain` (its certificate first), the algorithm taken from its key: P-256 gives
    /// algorithm 2, RSA algorithm 3 with `padding`.
    pub fn new(chain: Vec<crate::x509::Certificate>, padding: RsaPadding) -> Result<X509Signer, DecodeError> {
        use crate::x509::signature::{EC_PUBLIC_KEY, RSA_ENCRYPTION};
        if chain.is_empty() || chain.len() > X509_CHAIN_LENGTH_MAX {
            return Err(DecodeError::BadPublicKey(format!(
                "a signer's chain holds 1 to {X509_CHAIN_LENGTH_MAX} certificates"
            )));
        }
        let (algorithm, padding) = match chain[0].inner().tbs_certificate.subject_public_key_info.algorithm.oid {
            EC_PUBLIC_KEY => (Algorithm::EcdsaP256Sha256, None),
            RSA_ENCRYPTION => (Algorithm::RsaSha256, Some(padding)),
            other => {
                return Err(DecodeError::BadPublicKey(format!(
                    "the signer's certificate holds a {other} key, not P-256 or RSA"
                )))
            }
        };
        let mut writer = Writer::default();
        if let Some(padding) = padding {
            writer.u8(padding.id());
        }
        writer.u8(u8::try_from(chain.len()).unwrap_or(u8::MAX));
        for certificate in &chain {
            writer.bytes(certificate.der());
        }
        Ok(X509Signer { algorithm, padding, chain: std::sync::Arc::new(chain), encoded: writer.into_bytes().into() })
    }

    fn decode(algorithm_id: u16, raw: &[u8]) -> Result<X509Signer, DecodeError> {
        let mut reader = Reader::new(raw);
        let padding = match algorithm_id {
            Algorithm::RSA_SHA256_ID => match reader.u8("RSA padding")? {
                1 => RsaPadding::Pkcs1v15,
                2 => RsaPadding::Pss,
                other => {
                    return Err(DecodeError::BadPublicKey(format!("RSA padding {other} (1 = PKCS#1 v1.5, 2 = PSS)")))
                }
            },
            _ => RsaPadding::Pkcs1v15,
        };
        let count = usize::from(reader.u8("certificate count")?);
        let mut chain = Vec::with_capacity(count.min(X509_CHAIN_LENGTH_MAX));
        for _ in 0..count.min(X509_CHAIN_LENGTH_MAX + 1) {
            let der = reader.bytes("certificate")?;
            chain.push(crate::x509::Certificate::from_der(der).map_err(|e| DecodeError::BadPublicKey(e.to_string()))?);
        }
        reader.finish()?;
        let signer = X509Signer::new(chain, padding)?;
        if signer.algorithm.id() != algorithm_id {
            return Err(DecodeError::BadPublicKey(format!(
                "algorithm {algorithm_id} does not fit the signer certificate's key (algorithm {})",
                signer.algorithm.id()
            )));
        }
        Ok(signer)
    }

    /// The signer's certificate.
    pub fn certificate(&self) -> &crate::x509::Certificate {
        &self.chain[0]
    }

    /// The intermediates it carries.
    pub fn intermediates(&self) -> &[crate::x509::Certificate] {
        &self.chain[1..]
    }

    pub fn padding(&self) -> Option<RsaPadding> {
        self.padding
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), DecodeError> {
        let key = &self.certificate().inner().tbs_certificate.subject_public_key_info;
        let verified = match self.padding {
            None => crate::x509::signature::verify_p256_sha256_fixed(key, message, signature),
            Some(padding) => {
                crate::x509::signature::verify_rsa_sha256(key, message, signature, padding == RsaPadding::Pss)
            }
        };
        verified.map_err(|_| DecodeError::BadSignature)
    }
}

/// A public key with its algorithm.
#[derive(Clone, PartialEq, Eq)]
pub enum PublicKey {
    Ed25519(ed25519_dalek::VerifyingKey),
    X509(X509Signer),
}

impl PublicKey {
    pub fn algorithm(&self) -> Algorithm {
        match self {
            PublicKey::Ed25519(_) => Algorithm::Ed25519,
            PublicKey::X509(signer) => signer.algorithm,
        }
    }

    /// The key as the signed bytes carry it: Ed25519's 32 bytes, or an X.509 signer's chain.
    pub fn raw_bytes(&self) -> &[u8] {
        match self {
            PublicKey::Ed25519(key) => key.as_bytes(),
            PublicKey::X509(signer) => &signer.encoded,
        }
    }

    /// The Ed25519 key, if this is one (Kho's own key certificates certify only Ed25519 keys).
    pub fn ed25519(&self) -> Option<&ed25519_dalek::VerifyingKey> {
        match self {
            PublicKey::Ed25519(key) => Some(key),
            PublicKey::X509(_) => None,
        }
    }

    /// SHA-256 of the algorithm id (2 bytes, big-endian) and the raw key (for an X.509 signer, its
    /// certificate): a stable name for a key.
    pub fn fingerprint(&self) -> Digest {
        let mut bytes = self.algorithm().id().to_be_bytes().to_vec();
        match self {
            PublicKey::Ed25519(key) => bytes.extend_from_slice(key.as_bytes()),
            PublicKey::X509(signer) => bytes.extend_from_slice(signer.certificate().der()),
        }
        Digest::sha256(&bytes)
    }

    pub fn from_raw(algorithm_id: u16, raw: &[u8]) -> Result<Self, DecodeError> {
        match algorithm_id {
            Algorithm::ED25519_ID => {
                let bytes: [u8; 32] = raw
                    .try_into()
                    .map_err(|_| DecodeError::BadPublicKey(format!("Ed25519 keys are 32 bytes, not {}", raw.len())))?;
                ed25519_dalek::VerifyingKey::from_bytes(&bytes)
                    .map(PublicKey::Ed25519)
                    .map_err(|e| DecodeError::BadPublicKey(e.to_string()))
            }
            Algorithm::ECDSA_P256_SHA256_ID | Algorithm::RSA_SHA256_ID => {
                X509Signer::decode(algorithm_id, raw).map(PublicKey::X509).map_err(|e| match e {
                    DecodeError::BadPublicKey(_) => e,
                    other => DecodeError::BadPublicKey(format!("not an X.509 signer's chain: {other}")),
                })
            }
            other => Err(DecodeError::UnsupportedAlgorithm(other)),
        }
    }

    /// Verifies a raw signature over `message` (signed notes; statements verify through [`Signed`]).
    pub fn verify_raw(&self, message: &[u8], signature: &[u8]) -> Result<(), DecodeError> {
        self.verify(message, signature)
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), DecodeError> {
        match self {
            PublicKey::Ed25519(key) => {
                let signature =
                    ed25519_dalek::Signature::from_slice(signature).map_err(|_| DecodeError::BadSignature)?;
                key.verify_strict(message, &signature).map_err(|_| DecodeError::BadSignature)
            }
            PublicKey::X509(signer) => signer.verify(message, signature),
        }
    }
}

/// What can sign a statement: Kho's Ed25519 keys, or an agency's X.509 key (`keys::X509SigningKey`).
pub trait StatementSigner {
    /// The key the signed bytes name.
    fn public_key(&self) -> PublicKey;
    /// A signature over `message` in the key's algorithm.
    fn sign_raw(&self, message: &[u8]) -> Vec<u8>;
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublicKey::Ed25519(key) => write!(f, "PublicKey::Ed25519({})", hex::encode(key.as_bytes())),
            PublicKey::X509(signer) => {
                write!(f, "PublicKey::{:?}({})", signer.algorithm, signer.certificate().subject())
            }
        }
    }
}

/// How many verified envelopes a vault's [`VerifiedEnvelopes`] remembers (about 2.5 MiB).
pub const VERIFIED_ENVELOPES_REMEMBERED: usize = 1 << 16;
/// Ed25519 signatures [`VerifiedEnvelopes::verify_batch`] checks in one batch equation: large enough
/// that the shared multiscalar multiplication pays (docs/BENCHMARKS.md), small enough that one bad
/// signature sends few good ones to single verification.
pub const BATCH_VERIFY_CHUNK: usize = 64;

/// Envelopes whose signatures verified, remembered by a BLAKE3 digest of their exact signed bytes and
/// signature, so that statements read again and again (a record and its receipt at every read, the
/// issuer's certificate at every deposit, a bundle's statements checked together first) are not
/// verified again: verification is a function of those bytes alone, so bytes that verified once verify
/// again, and any changed byte (damage on disk, a forgery) is a different digest, verified afresh.
/// Only successes are kept. Bounded: when full, it forgets everything and starts over.
///
/// It also keeps the signers' keys decoded (an Ed25519 point decompressed, an X.509 chain parsed):
/// statements name few signers, and decoding a key costs more than decoding the rest of a record.
///
/// A vault also seals what it accepts ([`VerifiedEnvelopes::sealing`]): a keyed BLAKE3 of the envelope
/// under a key derived from its own secret key, stored with the statement, is the same memo kept on
/// disk. A stored statement whose seal matches is the one whose signature the vault verified when it
/// accepted it, so its signature is not verified again; any changed byte of the envelope, or a seal
/// not made under the key, leaves it to be verified as any other (docs/FORMAT.md section 3.1).
pub struct VerifiedEnvelopes {
    capacity: usize,
    /// The key seals are made and checked under, if this memo belongs to a vault.
    seal_key: Option<[u8; 32]>,
    digests: std::sync::Mutex<std::collections::HashSet<[u8; 32]>>,
    /// By algorithm and BLAKE3 of the raw key.
    keys: std::sync::Mutex<std::collections::HashMap<(u16, [u8; 32]), PublicKey>>,
}

/// How many decoded signer keys a [`VerifiedEnvelopes`] keeps.
pub const DECODED_KEYS_KEPT: usize = 1024;

impl VerifiedEnvelopes {
    pub fn new(capacity: usize) -> VerifiedEnvelopes {
        VerifiedEnvelopes {
            capacity: capacity.max(1),
            seal_key: None,
            digests: Default::default(),
            keys: Default::default(),
        }
    }

    /// A memo that also makes and checks seals under `seal_key` (see the type's docs).
    pub fn sealing(capacity: usize, seal_key: [u8; 32]) -> VerifiedEnvelopes {
        VerifiedEnvelopes { seal_key: Some(seal_key), ..VerifiedEnvelopes::new(capacity) }
    }

    /// The seal of an envelope whose signature verified, to store with it; `None` without a seal key.
    pub fn seal(&self, envelope: &[u8]) -> Option<[u8; 32]> {
        self.seal_key.map(|key| *blake3::keyed_hash(&key, envelope).as_bytes())
    }

    /// Whether `seal` is the seal of `envelope` under this memo's key (compared in constant time).
    fn sealed(&self, envelope: &[u8], seal: Option<&[u8; 32]>) -> bool {
        match (self.seal_key, seal) {
            (Some(key), Some(seal)) => blake3::keyed_hash(&key, envelope) == blake3::Hash::from_bytes(*seal),
            _ => false,
        }
    }

    /// [`PublicKey::from_raw`], decoded once per key.
    fn public_key(&self, algorithm: u16, raw: &[u8]) -> Result<PublicKey, DecodeError> {
        let name = (algorithm, *blake3::hash(raw).as_bytes());
        if let Some(key) = self.keys.lock().unwrap_or_else(|p| p.into_inner()).get(&name) {
            return Ok(key.clone());
        }
        let key = PublicKey::from_raw(algorithm, raw)?;
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if keys.len() >= DECODED_KEYS_KEPT {
            keys.clear();
        }
        keys.insert(name, key.clone());
        Ok(key)
    }

    fn digest(signed_bytes: &[u8], signature: &[u8]) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new_derive_key("kho 2026 verified statement envelope");
        hasher.update(&(signed_bytes.len() as u64).to_be_bytes());
        hasher.update(signed_bytes);
        hasher.update(signature);
        *hasher.finalize().as_bytes()
    }

    fn contains(&self, digest: &[u8; 32]) -> bool {
        self.digests.lock().unwrap_or_else(|p| p.into_inner()).contains(digest)
    }

    fn insert(&self, digest: [u8; 32]) {
        let mut digests = self.digests.lock().unwrap_or_else(|p| p.into_inner());
        if digests.len() >= self.capacity {
            digests.clear();
        }
        digests.insert(digest);
    }

    /// Verifies the Ed25519 signatures of many envelopes together and remembers those that verify:
    /// ed25519-dalek's batch equation over [`BATCH_VERIFY_CHUNK`] at a time, about twice as fast as
    /// one by one. An envelope that does not decode, is signed by an X.509 key, has a weak key or a
    /// non-canonical or small-order R (which the strict single check refuses) is left out, to be
    /// verified singly when read; when a chunk's equation fails, its envelopes are verified singly and
    /// strictly, so a bad signature is never remembered and never hides a good one. The batch equation
    /// is the standard one: it admits no forgery, only, like every Ed25519 batch check, an odd
    /// signature the key's own holder could make with a torsion component. Returns how many it
    /// remembered.
    pub fn verify_batch<'a>(&self, envelopes: impl IntoIterator<Item = &'a [u8]>) -> usize {
        let mut keys: std::collections::HashMap<[u8; 32], Option<ed25519_dalek::VerifyingKey>> = Default::default();
        let items: Vec<(&[u8], ed25519_dalek::Signature, ed25519_dalek::VerifyingKey, [u8; 32])> = envelopes
            .into_iter()
            .filter_map(|envelope| {
                let (signed_bytes, signature, key) = ed25519_parts(envelope)?;
                let key = *keys
                    .entry(key)
                    .or_insert_with(|| ed25519_dalek::VerifyingKey::from_bytes(&key).ok().filter(|k| !k.is_weak()))
                    .as_ref()?;
                let signature = ed25519_dalek::Signature::from_slice(signature).ok()?;
                if !r_is_canonical_and_not_small_order(signature.r_bytes()) {
                    return None;
                }
                Some((signed_bytes, signature, key, Self::digest(signed_bytes, &signature.to_bytes())))
            })
            .collect();
        let mut remembered = 0;
        for chunk in items.chunks(BATCH_VERIFY_CHUNK) {
            let messages: Vec<&[u8]> = chunk.iter().map(|item| item.0).collect();
            let signatures: Vec<ed25519_dalek::Signature> = chunk.iter().map(|item| item.1).collect();
            let keys: Vec<ed25519_dalek::VerifyingKey> = chunk.iter().map(|item| item.2).collect();
            let all = ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok();
            for (message, signature, key, digest) in chunk {
                if all || key.verify_strict(message, signature).is_ok() {
                    self.insert(*digest);
                    remembered += 1;
                }
            }
        }
        remembered
    }
}

/// How a decoded statement's signature is checked.
#[derive(Clone, Copy)]
enum Check<'a> {
    /// Verified now.
    Verify,
    /// Verified unless remembered as verified, and then remembered.
    Remembered(&'a VerifiedEnvelopes),
    /// Not verified again: the envelope carries the seal the vault made when its signature verified.
    Sealed(&'a VerifiedEnvelopes),
}

/// An envelope's signed bytes, signature and Ed25519 key, if it is a statement signed by one.
fn ed25519_parts(envelope: &[u8]) -> Option<(&[u8], &[u8], [u8; 32])> {
    if envelope.len() > STATEMENT_SIZE_BYTES_MAX {
        return None;
    }
    let mut reader = Reader::new(envelope);
    let signed_bytes = reader.bytes("signed bytes").ok()?;
    let signature = reader.bytes("signature").ok()?;
    reader.finish().ok()?;
    let mut header = Reader::new(signed_bytes);
    if header.take(MAGIC.len(), "magic").ok()? != MAGIC || header.u8("version").ok()? != FORMAT_VERSION {
        return None;
    }
    header.u8("kind").ok()?;
    if header.u16("algorithm").ok()? != Algorithm::ED25519_ID {
        return None;
    }
    let key = header.bytes("signer key").ok()?.try_into().ok()?;
    Some((signed_bytes, signature, key))
}

/// The encodings of Ed25519's eight small-order points (the canonical ones: y < p, and x = 0 with the
/// sign bit clear), as libsodium lists them.
const SMALL_ORDER_ENCODINGS: [[u8; 32]; 8] = {
    const fn digit(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => panic!("not hex"),
        }
    }
    const fn hex32(text: &str) -> [u8; 32] {
        let bytes = text.as_bytes();
        let mut out = [0u8; 32];
        let mut i = 0;
        while i < 32 {
            out[i] = digit(bytes[2 * i]) << 4 | digit(bytes[2 * i + 1]);
            i += 1;
        }
        out
    }
    [
        hex32("0100000000000000000000000000000000000000000000000000000000000000"),
        hex32("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
        hex32("0000000000000000000000000000000000000000000000000000000000000000"),
        hex32("0000000000000000000000000000000000000000000000000000000000000080"),
        hex32("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
        hex32("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa"),
        hex32("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
        hex32("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85"),
    ]
};

/// Whether a signature's R is encoded canonically (y below 2^255 - 19; x = 0 only with the sign bit
/// clear) and is not a small-order point: what the strict single check demands of R beyond the
/// equation, checked on the bytes so the batch need not decompress R twice.
fn r_is_canonical_and_not_small_order(r: &[u8; 32]) -> bool {
    // y = the low 255 bits, little-endian; p = 2^255 - 19 = 0x7fff...ffed.
    let mut y = *r;
    y[31] &= 0x7f;
    let at_least_p = y[31] == 0x7f && y[1..31].iter().all(|&b| b == 0xff) && y[0] >= 0xed;
    // The points with x = 0 are y = 1 and y = -1; their encodings with the sign bit set are not canonical.
    let sign = r[31] & 0x80 != 0;
    let x_is_zero = y == SMALL_ORDER_ENCODINGS[0] || y == SMALL_ORDER_ENCODINGS[1];
    !(at_least_p || (sign && x_is_zero) || SMALL_ORDER_ENCODINGS.contains(r))
}

/// A private signing key with its algorithm. Kho holds only its own receipt key; agencies' keys stay
/// with the agencies and are used here only by the offline CLI.
pub struct SecretKey(ed25519_dalek::SigningKey);

impl SecretKey {
    pub fn generate() -> SecretKey {
        SecretKey(ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng))
    }

    pub fn from_ed25519(key: ed25519_dalek::SigningKey) -> SecretKey {
        SecretKey(key)
    }

    pub fn ed25519(&self) -> &ed25519_dalek::SigningKey {
        &self.0
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey::Ed25519(self.0.verifying_key())
    }

    /// A 32-byte key for `context` derived from this secret key (BLAKE3 `derive_key`), so that keyed
    /// hashes the vault makes (share links, forms) need no key file of their own and the secret never
    /// leaves this type. Each context gives an independent key.
    pub fn derive_key(&self, context: &str) -> [u8; 32] {
        blake3::derive_key(context, self.0.as_bytes())
    }

    /// A raw signature over `message` (signed notes; statements are signed through [`Signed::sign`]).
    pub(crate) fn sign_raw(&self, message: &[u8]) -> Vec<u8> {
        self.0.sign(message).to_bytes().to_vec()
    }
}

impl StatementSigner for SecretKey {
    fn public_key(&self) -> PublicKey {
        SecretKey::public_key(self)
    }

    fn sign_raw(&self, message: &[u8]) -> Vec<u8> {
        SecretKey::sign_raw(self, message)
    }
}

/// Writes the canonical encoding (used by statement bodies; not constructible outside the crate).
#[derive(Default)]
pub struct Writer(Vec<u8>);

impl Writer {
    pub(crate) fn u8(&mut self, value: u8) {
        self.0.push(value);
    }
    pub(crate) fn u16(&mut self, value: u16) {
        self.0.extend_from_slice(&value.to_be_bytes());
    }
    pub(crate) fn u32(&mut self, value: u32) {
        self.0.extend_from_slice(&value.to_be_bytes());
    }
    pub(crate) fn u64(&mut self, value: u64) {
        self.0.extend_from_slice(&value.to_be_bytes());
    }
    pub(crate) fn i64(&mut self, value: i64) {
        self.0.extend_from_slice(&value.to_be_bytes());
    }
    pub(crate) fn digest(&mut self, value: &Digest) {
        self.0.extend_from_slice(&value.0);
    }
    pub(crate) fn bytes(&mut self, value: &[u8]) {
        // Statements are capped far below 4 GiB, so every length fits.
        self.u32(u32::try_from(value.len()).unwrap_or(u32::MAX));
        self.0.extend_from_slice(value);
    }
    pub(crate) fn str(&mut self, value: &str) {
        self.bytes(value.as_bytes());
    }
    /// Bytes of a fixed, known length, with no length in front.
    pub(crate) fn raw(&mut self, value: &[u8]) {
        self.0.extend_from_slice(value);
    }
    pub(crate) fn date(&mut self, value: Date) {
        self.u32(value.to_yyyymmdd());
    }
    pub(crate) fn option<T>(&mut self, value: Option<&T>, write: impl FnOnce(&mut Self, &T)) {
        match value {
            None => self.u8(0),
            Some(value) => {
                self.u8(1);
                write(self, value);
            }
        }
    }
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

/// Reads the canonical encoding; every read names the field it is reading for clear errors.
pub struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader(bytes)
    }
    pub(crate) fn take(&mut self, count: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < count {
            return Err(DecodeError::Truncated(field));
        }
        let (head, rest) = self.0.split_at(count);
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }
    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }
    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }
    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }
    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }
    pub(crate) fn i64(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array(field)?))
    }
    pub(crate) fn digest(&mut self, field: &'static str) -> Result<Digest, DecodeError> {
        Ok(Digest(self.array(field)?))
    }
    pub(crate) fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let length = self.u32(field)? as usize;
        self.take(length, field)
    }
    pub(crate) fn str(&mut self, field: &'static str) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.bytes(field)?).map_err(|_| DecodeError::BadUtf8(field))
    }
    pub(crate) fn code(&mut self, field: &'static str) -> Result<Code, DecodeError> {
        Ok(Code::parse(field, self.str(field)?)?)
    }
    fn date(&mut self, field: &'static str) -> Result<Date, DecodeError> {
        Ok(Date::from_yyyymmdd(self.u32(field)?)?)
    }
    pub(crate) fn option<T>(
        &mut self,
        field: &'static str,
        read: impl FnOnce(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Option<T>, DecodeError> {
        match self.u8(field)? {
            0 => Ok(None),
            1 => read(self).map(Some),
            flag => Err(DecodeError::BadOptionFlag { field, flag }),
        }
    }
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        match self.0.len() {
            0 => Ok(()),
            extra => Err(DecodeError::TrailingBytes(extra)),
        }
    }
}

mod sealed {
    /// The field encoding of a statement body; sealed so that only this module defines statements.
    pub trait Encoding: Sized {
        fn encode_body(&self, writer: &mut super::Writer);
        fn decode_body(reader: &mut super::Reader<'_>) -> Result<Self, super::DecodeError>;
    }
}
use sealed::Encoding;

/// The body of one kind of statement: its kind byte and its fields in canonical order.
pub trait StatementBody: Encoding + Clone + fmt::Debug {
    const KIND: u8;
    const NAME: &'static str;
}

/// What an issuing agency attests about a document (DESIGN.md section 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub owner: OwnerId,
    pub document_type: Code,
    pub title: Title,
    pub issuer_agency: Code,
    pub issued_on: Date,
    pub valid_from: Date,
    /// Inclusive last day of validity; `None` for documents that do not expire.
    pub valid_until: Option<Date>,
    pub procedure: Code,
    pub dossier: Code,
    /// BLAKE3-256 of the exact document bytes: the content address.
    pub blake3: Digest,
    /// SHA-256 of the same bytes, for PKI and preservation formats.
    pub sha256: Digest,
    pub size_bytes: u64,
    pub media_type: MediaType,
    /// The record this one replaces, which must be of the same agency and owner.
    pub supersedes: Option<Digest>,
    /// When the issuer signed, in Unix milliseconds (the issuer's clock; Kho's receipt time is what
    /// counts for key validity).
    pub signed_at_ms: i64,
}

/// The agency, document type, procedure and dossier code of a record the vault signs itself for a
/// document its owner uploaded (docs/FORMAT.md 1.5): only the vault key signs records under it.
pub const SELF_UPLOAD_CODE: &str = "kho.self-upload";

impl Record {
    /// Whether this is the vault's record of its owner's own upload (not legally valid by itself).
    pub fn is_self_upload(&self) -> bool {
        self.issuer_agency.as_str() == SELF_UPLOAD_CODE
    }
}

impl StatementBody for Record {
    const KIND: u8 = 1;
    const NAME: &'static str = "record";
}

impl Encoding for Record {
    fn encode_body(&self, w: &mut Writer) {
        w.str(self.owner.as_str());
        w.str(self.document_type.as_str());
        w.str(self.title.as_str());
        w.str(self.issuer_agency.as_str());
        w.date(self.issued_on);
        w.date(self.valid_from);
        w.option(self.valid_until.as_ref(), |w, d| w.date(*d));
        w.str(self.procedure.as_str());
        w.str(self.dossier.as_str());
        w.digest(&self.blake3);
        w.digest(&self.sha256);
        w.u64(self.size_bytes);
        w.str(self.media_type.as_str());
        w.option(self.supersedes.as_ref(), Writer::digest);
        w.i64(self.signed_at_ms);
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let record = Record {
            owner: OwnerId::parse(r.str("owner")?)?,
            document_type: r.code("document type")?,
            title: Title::parse(r.str("title")?)?,
            issuer_agency: r.code("issuer agency")?,
            issued_on: r.date("issued on")?,
            valid_from: r.date("valid from")?,
            valid_until: r.option("valid until", |r| r.date("valid until"))?,
            procedure: r.code("procedure")?,
            dossier: r.code("dossier")?,
            blake3: r.digest("blake3")?,
            sha256: r.digest("sha256")?,
            size_bytes: r.u64("size")?,
            media_type: MediaType::parse(r.str("media type")?)?,
            supersedes: r.option("supersedes", |r| r.digest("supersedes"))?,
            signed_at_ms: r.i64("signed at")?,
        };
        if let Some(until) = record.valid_until {
            if until < record.valid_from {
                return Err(FieldError::new(
                    "valid until",
                    format!("{until} is before valid from {}", record.valid_from),
                )
                .into());
            }
        }
        Ok(record)
    }
}

/// An issuer withdraws one of its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRevocation {
    pub record: Digest,
    pub issuer_agency: Code,
    pub reason: Title,
    pub signed_at_ms: i64,
}

impl StatementBody for RecordRevocation {
    const KIND: u8 = 2;
    const NAME: &'static str = "record revocation";
}

impl Encoding for RecordRevocation {
    fn encode_body(&self, w: &mut Writer) {
        w.digest(&self.record);
        w.str(self.issuer_agency.as_str());
        w.str(self.reason.as_str());
        w.i64(self.signed_at_ms);
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(RecordRevocation {
            record: r.digest("record")?,
            issuer_agency: r.code("issuer agency")?,
            reason: Title::parse(r.str("reason")?)?,
            signed_at_ms: r.i64("signed at")?,
        })
    }
}

/// A trust anchor certifies that `subject` is a signing key of `agency` within a validity window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCertificate {
    pub agency: Code,
    pub subject: PublicKey,
    pub valid_from_ms: i64,
    pub valid_until_ms: i64,
    pub signed_at_ms: i64,
}

impl StatementBody for KeyCertificate {
    const KIND: u8 = 3;
    const NAME: &'static str = "key certificate";
}

/// The fields both certificates share after their first one: the certified key, its validity window
/// (which must not be empty) and the signing time.
struct CertifiedKey {
    subject: PublicKey,
    valid_from_ms: i64,
    valid_until_ms: i64,
    signed_at_ms: i64,
}

impl CertifiedKey {
    fn encode(subject: &PublicKey, valid_from_ms: i64, valid_until_ms: i64, signed_at_ms: i64, w: &mut Writer) {
        w.u16(subject.algorithm().id());
        w.bytes(subject.raw_bytes());
        w.i64(valid_from_ms);
        w.i64(valid_until_ms);
        w.i64(signed_at_ms);
    }

    fn decode(r: &mut Reader<'_>) -> Result<CertifiedKey, DecodeError> {
        let algorithm = r.u16("subject algorithm")?;
        if algorithm != Algorithm::ED25519_ID {
            return Err(DecodeError::BadPublicKey(
                "Kho's key certificates certify Ed25519 keys; an X.509 signer is trusted through its own chain".into(),
            ));
        }
        let subject = PublicKey::from_raw(algorithm, r.bytes("subject key")?)?;
        let certified = CertifiedKey {
            subject,
            valid_from_ms: r.i64("valid from")?,
            valid_until_ms: r.i64("valid until")?,
            signed_at_ms: r.i64("signed at")?,
        };
        if certified.valid_until_ms <= certified.valid_from_ms {
            return Err(FieldError::new("valid until", "the certificate's validity window is empty").into());
        }
        Ok(certified)
    }
}

impl Encoding for KeyCertificate {
    fn encode_body(&self, w: &mut Writer) {
        w.str(self.agency.as_str());
        CertifiedKey::encode(&self.subject, self.valid_from_ms, self.valid_until_ms, self.signed_at_ms, w);
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let agency = r.code("agency")?;
        let CertifiedKey { subject, valid_from_ms, valid_until_ms, signed_at_ms } = CertifiedKey::decode(r)?;
        Ok(KeyCertificate { agency, subject, valid_from_ms, valid_until_ms, signed_at_ms })
    }
}

/// A trust anchor certifies the vault's own key, the key that signs its receipts and checkpoints, under
/// the log's origin: those then verify from the trust anchors alone. (Statement kind 8: kinds 6 and 7
/// name log entries that are not statements.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultKeyCertificate {
    /// The log origin the vault signs checkpoints under (`log::checkpoint::is_key_name`).
    pub origin: String,
    pub subject: PublicKey,
    pub valid_from_ms: i64,
    pub valid_until_ms: i64,
    pub signed_at_ms: i64,
}

impl StatementBody for VaultKeyCertificate {
    const KIND: u8 = 8;
    const NAME: &'static str = "vault key certificate";
}

impl Encoding for VaultKeyCertificate {
    fn encode_body(&self, w: &mut Writer) {
        w.str(&self.origin);
        CertifiedKey::encode(&self.subject, self.valid_from_ms, self.valid_until_ms, self.signed_at_ms, w);
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let origin = r.str("origin")?;
        if !crate::log::checkpoint::is_key_name(origin) {
            return Err(FieldError::new("origin", "not a usable log origin").into());
        }
        let origin = origin.to_owned();
        let CertifiedKey { subject, valid_from_ms, valid_until_ms, signed_at_ms } = CertifiedKey::decode(r)?;
        Ok(VaultKeyCertificate { origin, subject, valid_from_ms, valid_until_ms, signed_at_ms })
    }
}

/// A trust anchor withdraws a key certificate, from the moment Kho receives this statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRevocation {
    pub certificate: Digest,
    pub reason: Title,
    pub signed_at_ms: i64,
}

impl StatementBody for CertificateRevocation {
    const KIND: u8 = 4;
    const NAME: &'static str = "certificate revocation";
}

impl Encoding for CertificateRevocation {
    fn encode_body(&self, w: &mut Writer) {
        w.digest(&self.certificate);
        w.str(self.reason.as_str());
        w.i64(self.signed_at_ms);
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(CertificateRevocation {
            certificate: r.digest("certificate")?,
            reason: Title::parse(r.str("reason")?)?,
            signed_at_ms: r.i64("signed at")?,
        })
    }
}

/// An issuing agency certifies that a document its owner uploaded is a true copy of an original one of
/// its officers compared it with (Law on E-Transactions 2023, Art. 12): who converted it, from what
/// original, and when (the signing time). Kind 9.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyCertification {
    /// The self-uploaded record certified (its id binds the copy's exact bytes).
    pub record: Digest,
    pub agency: Code,
    /// The officer who compared the copy with the original and converted it: name or staff id.
    pub officer: Title,
    /// The original's document type.
    pub original_type: Code,
    /// The original as the officer saw it: its title, number and date of issue.
    pub original: Title,
    pub signed_at_ms: i64,
}

impl StatementBody for CopyCertification {
    const KIND: u8 = 9;
    const NAME: &'static str = "copy certification";
}

impl Encoding for CopyCertification {
    fn encode_body(&self, w: &mut Writer) {
        w.digest(&self.record);
        w.str(self.agency.as_str());
        w.str(self.officer.as_str());
        w.str(self.original_type.as_str());
        w.str(self.original.as_str());
        w.i64(self.signed_at_ms);
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(CopyCertification {
            record: r.digest("record")?,
            agency: r.code("agency")?,
            officer: Title::parse(r.str("officer")?)?,
            original_type: r.code("original type")?,
            original: Title::parse(r.str("original")?)?,
            signed_at_ms: r.i64("signed at")?,
        })
    }
}

/// Pieces of revocation evidence one validation may name.
pub const VALIDATION_EVIDENCE_MAX: usize = 64;

/// What decided the time an X.509 signer was validated at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValidationBasis {
    /// The moment the vault accepted the statement.
    Acceptance,
    /// An RFC 3161 timestamp over the signature: the SHA-256 of the token and its authority.
    Timestamp { token: Digest, authority: Title },
}

/// The vault's record of why it trusted a signature made under X.509 (kind 10): which statement (or
/// deposited document's record), the agency the root's mapping read from the signer's certificate, the
/// signer's certificate and the root (by SHA-256 of their DER, and their subjects for people), the time
/// that decided and why, and the SHA-256 of each CRL or OCSP response that showed a certificate
/// unrevoked then (the bytes are kept beside it). Accepted into the log before the statement it
/// validates, so that validity at signing time stays provable after the certificates expire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureValidation {
    pub statement: Digest,
    pub agency: Code,
    pub signer_certificate: Digest,
    pub signer: Title,
    pub root: Digest,
    pub root_subject: Title,
    pub decided_at_ms: i64,
    pub basis: ValidationBasis,
    pub evidence: Vec<Digest>,
    pub signed_at_ms: i64,
}

impl StatementBody for SignatureValidation {
    const KIND: u8 = 10;
    const NAME: &'static str = "signature validation";
}

impl Encoding for SignatureValidation {
    fn encode_body(&self, w: &mut Writer) {
        w.digest(&self.statement);
        w.str(self.agency.as_str());
        w.digest(&self.signer_certificate);
        w.str(self.signer.as_str());
        w.digest(&self.root);
        w.str(self.root_subject.as_str());
        w.i64(self.decided_at_ms);
        match &self.basis {
            ValidationBasis::Acceptance => w.u8(1),
            ValidationBasis::Timestamp { token, authority } => {
                w.u8(2);
                w.digest(token);
                w.str(authority.as_str());
            }
        }
        w.u16(u16::try_from(self.evidence.len()).unwrap_or(u16::MAX));
        for digest in &self.evidence {
            w.digest(digest);
        }
        w.i64(self.signed_at_ms);
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let statement = r.digest("statement")?;
        let agency = r.code("agency")?;
        let signer_certificate = r.digest("signer certificate")?;
        let signer = Title::parse(r.str("signer")?)?;
        let root = r.digest("root")?;
        let root_subject = Title::parse(r.str("root subject")?)?;
        let decided_at_ms = r.i64("decided at")?;
        let basis = match r.u8("basis")? {
            1 => ValidationBasis::Acceptance,
            2 => ValidationBasis::Timestamp {
                token: r.digest("timestamp token")?,
                authority: Title::parse(r.str("timestamp authority")?)?,
            },
            other => {
                return Err(FieldError::new("basis", format!("{other} is not 1 (acceptance) or 2 (timestamp)")).into())
            }
        };
        let count = usize::from(r.u16("evidence count")?);
        if count > VALIDATION_EVIDENCE_MAX {
            return Err(FieldError::new("evidence", format!("more than {VALIDATION_EVIDENCE_MAX} pieces")).into());
        }
        let evidence = (0..count).map(|_| r.digest("evidence")).collect::<Result<_, _>>()?;
        Ok(SignatureValidation {
            statement,
            agency,
            signer_certificate,
            signer,
            root,
            root_subject,
            decided_at_ms,
            basis,
            evidence,
            signed_at_ms: r.i64("signed at")?,
        })
    }
}

/// Kho's own statement that it accepted a statement at a time, as entry `log_index` of its
/// transparency log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub statement: Digest,
    pub statement_kind: u8,
    pub log_index: u64,
    pub accepted_at_ms: i64,
}

impl StatementBody for Receipt {
    const KIND: u8 = 5;
    const NAME: &'static str = "receipt";
}

impl Encoding for Receipt {
    fn encode_body(&self, w: &mut Writer) {
        w.digest(&self.statement);
        w.u8(self.statement_kind);
        w.u64(self.log_index);
        w.i64(self.accepted_at_ms);
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Receipt {
            statement: r.digest("statement")?,
            statement_kind: r.u8("statement kind")?,
            log_index: r.u64("log index")?,
            accepted_at_ms: r.i64("accepted at")?,
        })
    }
}

/// A statement whose signature has been verified under `signer`.
#[derive(Clone)]
pub struct Signed<T> {
    body: T,
    signer: PublicKey,
    signed_bytes: Vec<u8>,
    signature: Vec<u8>,
    id: Digest,
}

impl<T: StatementBody> Signed<T> {
    /// Signs `body` with `key`.
    pub fn sign<K: StatementSigner + ?Sized>(body: T, key: &K) -> Signed<T> {
        let signer = key.public_key();
        let signed_bytes = encode_signed_bytes(&body, &signer);
        let signature = key.sign_raw(&signed_bytes);
        let id = Digest::sha256(&signed_bytes);
        Signed { body, signer, signed_bytes, signature, id }
    }

    /// Decodes an envelope (see [`Signed::to_envelope`]) and verifies its signature.
    pub fn from_envelope(envelope: &[u8]) -> Result<Signed<T>, DecodeError> {
        Self::decode_envelope(envelope, Check::Verify)
    }

    /// [`Signed::from_envelope`] for statements read again and again: the signature of exactly these
    /// bytes is verified once and then remembered in `verified`.
    pub fn from_envelope_remembered(envelope: &[u8], verified: &VerifiedEnvelopes) -> Result<Signed<T>, DecodeError> {
        Self::decode_envelope(envelope, Check::Remembered(verified))
    }

    /// [`Signed::from_envelope_remembered`] for a statement the vault stored with `seal`: when the seal
    /// is the envelope's under `verified`'s key, the signature verified at acceptance and is not
    /// verified again; otherwise it is verified (or found remembered) as any other.
    pub fn from_envelope_sealed(
        envelope: &[u8],
        seal: Option<&[u8; 32]>,
        verified: &VerifiedEnvelopes,
    ) -> Result<Signed<T>, DecodeError> {
        let check = if verified.sealed(envelope, seal) { Check::Sealed(verified) } else { Check::Remembered(verified) };
        Self::decode_envelope(envelope, check)
    }

    fn decode_envelope(envelope: &[u8], check: Check<'_>) -> Result<Signed<T>, DecodeError> {
        if envelope.len() > STATEMENT_SIZE_BYTES_MAX {
            return Err(DecodeError::TooLarge { size: envelope.len() });
        }
        let mut reader = Reader::new(envelope);
        let signed_bytes = reader.bytes("signed bytes")?;
        let signature = reader.bytes("signature")?;
        reader.finish()?;
        Self::decode_parts(signed_bytes, signature, check)
    }

    /// Decodes signed bytes and a detached signature, and verifies the signature.
    pub fn from_parts(signed_bytes: &[u8], signature: &[u8]) -> Result<Signed<T>, DecodeError> {
        Self::decode_parts(signed_bytes, signature, Check::Verify)
    }

    fn decode_parts(signed_bytes: &[u8], signature: &[u8], check: Check<'_>) -> Result<Signed<T>, DecodeError> {
        if signed_bytes.len() > STATEMENT_SIZE_BYTES_MAX {
            return Err(DecodeError::TooLarge { size: signed_bytes.len() });
        }
        let mut reader = Reader::new(signed_bytes);
        if reader.take(MAGIC.len(), "magic")? != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let version = reader.u8("version")?;
        if version != FORMAT_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let kind = reader.u8("kind")?;
        if kind != T::KIND {
            return Err(DecodeError::WrongKind { expected: T::NAME, found: kind });
        }
        let algorithm = reader.u16("algorithm")?;
        let raw_key = reader.bytes("signer key")?;
        let signer = match check {
            Check::Remembered(verified) | Check::Sealed(verified) => verified.public_key(algorithm, raw_key)?,
            Check::Verify => PublicKey::from_raw(algorithm, raw_key)?,
        };
        let body = T::decode_body(&mut reader)?;
        reader.finish()?;
        match check {
            Check::Verify => signer.verify(signed_bytes, signature)?,
            Check::Remembered(verified) => {
                let digest = VerifiedEnvelopes::digest(signed_bytes, signature);
                if !verified.contains(&digest) {
                    signer.verify(signed_bytes, signature)?;
                    verified.insert(digest);
                }
            }
            Check::Sealed(_) => {}
        }
        Ok(Signed {
            body,
            signer,
            signed_bytes: signed_bytes.to_vec(),
            signature: signature.to_vec(),
            id: Digest::sha256(signed_bytes),
        })
    }

    /// The envelope: the signed bytes and the signature, each behind a 32-bit big-endian length.
    pub fn to_envelope(&self) -> Vec<u8> {
        let mut writer = Writer::default();
        writer.bytes(&self.signed_bytes);
        writer.bytes(&self.signature);
        writer.into_bytes()
    }

    pub fn body(&self) -> &T {
        &self.body
    }
    pub fn signer(&self) -> &PublicKey {
        &self.signer
    }
    pub fn signed_bytes(&self) -> &[u8] {
        &self.signed_bytes
    }
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }
    /// SHA-256 of the signed bytes.
    pub fn id(&self) -> Digest {
        self.id
    }
}

impl<T: fmt::Debug> fmt::Debug for Signed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signed").field("id", &self.id).field("signer", &self.signer).field("body", &self.body).finish()
    }
}

fn encode_signed_bytes<T: StatementBody>(body: &T, signer: &PublicKey) -> Vec<u8> {
    let mut writer = Writer::default();
    writer.0.extend_from_slice(MAGIC);
    writer.u8(FORMAT_VERSION);
    writer.u8(T::KIND);
    writer.u16(signer.algorithm().id());
    writer.bytes(signer.raw_bytes());
    body.encode_body(&mut writer);
    writer.into_bytes()
}

/// The kind byte at the start of signed bytes, without decoding the rest; `None` if not a statement.
pub fn peek_kind(envelope: &[u8]) -> Option<u8> {
    let mut reader = Reader::new(envelope);
    let signed = reader.bytes("signed bytes").ok()?;
    (signed.len() > MAGIC.len() + 1 && &signed[..MAGIC.len()] == MAGIC).then(|| signed[MAGIC.len() + 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SecretKey {
        SecretKey::from_ed25519(ed25519_dalek::SigningKey::from_bytes(&[seed; 32]))
    }

    pub(crate) fn sample_record() -> Record {
        Record {
            owner: OwnerId::parse("001204012345").expect("owner"),
            document_type: Code::parse("document type", "GKS").expect("code"),
            title: Title::parse("Giấy khai sinh").expect("title"),
            issuer_agency: Code::parse("agency", "000.00.00.H26").expect("code"),
            issued_on: Date::parse("2024-03-01").expect("date"),
            valid_from: Date::parse("2024-03-01").expect("date"),
            valid_until: None,
            procedure: Code::parse("procedure", "1.001193").expect("code"),
            dossier: Code::parse("dossier", "H26.22-240301-0001").expect("code"),
            blake3: Digest([7; 32]),
            sha256: Digest([9; 32]),
            size_bytes: 1234,
            media_type: MediaType::parse("application/pdf").expect("media"),
            supersedes: None,
            signed_at_ms: 1_709_251_200_000,
        }
    }

    #[test]
    fn sign_and_decode_round_trip() {
        let signed = Signed::sign(sample_record(), &key(1));
        let decoded = Signed::<Record>::from_envelope(&signed.to_envelope()).expect("decodes");
        assert_eq!(decoded.body(), &sample_record());
        assert_eq!(decoded.id(), signed.id());
        assert_eq!(decoded.signer(), &key(1).public_key());
    }

    #[test]
    fn a_signature_validation_round_trips_and_refuses_an_unknown_basis_or_too_much_evidence() {
        let validation = SignatureValidation {
            statement: Digest([3; 32]),
            agency: Code::parse("agency", "000.00.00.H26").expect("code"),
            signer_certificate: Digest([4; 32]),
            signer: Title::parse("CN=Sở Tư pháp tỉnh Thái Bình,OU=000.00.00.H26,C=VN").expect("title"),
            root: Digest([5; 32]),
            root_subject: Title::parse("CN=Root CA,O=Ban Cơ yếu Chính phủ,C=VN").expect("title"),
            decided_at_ms: 1_780_000_000_000,
            basis: ValidationBasis::Timestamp {
                token: Digest([6; 32]),
                authority: Title::parse("CN=Time Stamping Authority,C=VN").expect("title"),
            },
            evidence: vec![Digest([7; 32]), Digest([8; 32])],
            signed_at_ms: 1_780_000_000_500,
        };
        let signed = Signed::sign(validation.clone(), &key(1));
        let decoded = Signed::<SignatureValidation>::from_envelope(&signed.to_envelope()).expect("decodes");
        assert_eq!(decoded.body(), &validation);
        assert_eq!(peek_kind(&signed.to_envelope()), Some(10));
        // The basis byte sits after the fixed fields: flip it to an unknown value.
        let mut body = Writer::default();
        validation.encode_body(&mut body);
        let body = body.into_bytes();
        let basis_at = 32
            + 4
            + 13
            + 32
            + 4
            + validation.signer.as_str().len()
            + 32
            + 4
            + validation.root_subject.as_str().len()
            + 8;
        let mut bad = body.clone();
        bad[basis_at] = 3;
        assert!(SignatureValidation::decode_body(&mut Reader::new(&bad)).is_err());
        let mut many = validation;
        many.evidence = vec![Digest([1; 32]); VALIDATION_EVIDENCE_MAX + 1];
        let mut body = Writer::default();
        many.encode_body(&mut body);
        assert!(SignatureValidation::decode_body(&mut Reader::new(&body.into_bytes())).is_err());
    }

    #[test]
    fn a_copy_certification_round_trips_and_names_its_fields() {
        let certification = CopyCertification {
            record: Digest([3; 32]),
            agency: Code::parse("agency", "000.00.00.H26").expect("code"),
            officer: Title::parse("Nguyễn Văn An, cán bộ một cửa").expect("title"),
            original_type: Code::parse("original type", "BTN").expect("code"),
            original: Title::parse("Bằng tốt nghiệp THPT số A123, cấp ngày 2010-06-30").expect("title"),
            signed_at_ms: 1_709_251_200_000,
        };
        let signed = Signed::sign(certification.clone(), &key(2));
        let envelope = signed.to_envelope();
        assert_eq!(peek_kind(&envelope), Some(9));
        let decoded = Signed::<CopyCertification>::from_envelope(&envelope).expect("decodes");
        assert_eq!(decoded.body(), &certification);
        assert!(matches!(Signed::<Record>::from_envelope(&envelope), Err(DecodeError::WrongKind { found: 9, .. })));
        let bytes = signed.signed_bytes();
        assert!(matches!(
            Signed::<CopyCertification>::from_parts(&bytes[..bytes.len() - 1], signed.signature()),
            Err(DecodeError::Truncated("signed at"))
        ));
    }

    #[test]
    fn any_changed_byte_is_rejected() {
        let envelope = Signed::sign(sample_record(), &key(1)).to_envelope();
        for index in 0..envelope.len() {
            let mut changed = envelope.clone();
            changed[index] ^= 0x01;
            assert!(Signed::<Record>::from_envelope(&changed).is_err(), "byte {index} flipped was accepted");
        }
    }

    #[test]
    fn a_batch_remembers_exactly_the_envelopes_whose_signatures_verify() {
        let keys: Vec<SecretKey> = (1..=3).map(key).collect();
        let mut envelopes: Vec<Vec<u8>> = (0..150)
            .map(|i| {
                let mut record = sample_record();
                record.signed_at_ms += i as i64;
                Signed::sign(record, &keys[i % keys.len()]).to_envelope()
            })
            .collect();
        // One bad signature in the second chunk (its last byte changed), one envelope that is not one.
        let bad = BATCH_VERIFY_CHUNK + 5;
        let last = envelopes[bad].len() - 1;
        envelopes[bad][last] ^= 0x01;
        envelopes.push(b"not an envelope".to_vec());
        let verified = VerifiedEnvelopes::new(1000);
        assert_eq!(verified.verify_batch(envelopes.iter().map(Vec::as_slice)), 149);
        for (index, envelope) in envelopes.iter().enumerate().take(150) {
            let mut reader = Reader::new(envelope);
            let (signed_bytes, signature) = (reader.bytes("s").unwrap(), reader.bytes("s").unwrap());
            assert_eq!(verified.contains(&VerifiedEnvelopes::digest(signed_bytes, signature)), index != bad, "{index}");
            let read = Signed::<Record>::from_envelope_remembered(envelope, &verified);
            assert_eq!(read.is_ok(), index != bad, "{index}");
        }
        // An empty batch and a batch of what is not Ed25519-signed remember nothing.
        assert_eq!(VerifiedEnvelopes::new(10).verify_batch([]), 0);
        assert_eq!(VerifiedEnvelopes::new(10).verify_batch([&envelopes[150][..]]), 0);
    }

    #[test]
    fn small_order_and_non_canonical_r_are_left_to_the_strict_check() {
        let mut seen = std::collections::HashSet::new();
        for encoding in SMALL_ORDER_ENCODINGS {
            let point = ed25519_dalek::VerifyingKey::from_bytes(&encoding).expect("a point");
            assert!(point.is_weak(), "{} is not small-order", hex::encode(encoding));
            assert!(seen.insert(encoding));
            assert!(!r_is_canonical_and_not_small_order(&encoding));
        }
        // Non-canonical: y = p and p + 1 (the points y = 0 and y = 1), x = 0 with its sign bit set.
        let mut p = [0xffu8; 32];
        p[0] = 0xed;
        p[31] = 0x7f;
        let mut p_plus_one = p;
        p_plus_one[0] = 0xee;
        let mut identity_negative = SMALL_ORDER_ENCODINGS[0];
        identity_negative[31] |= 0x80;
        let mut minus_one_negative = SMALL_ORDER_ENCODINGS[1];
        minus_one_negative[31] |= 0x80;
        for encoding in [p, p_plus_one, identity_negative, minus_one_negative] {
            assert!(!r_is_canonical_and_not_small_order(&encoding), "{}", hex::encode(encoding));
        }
        // Every R of a real signature passes.
        for i in 0..50u8 {
            let signed = Signed::sign(sample_record(), &key(i + 1));
            let signature = ed25519_dalek::Signature::from_slice(&signed.signature).expect("64 bytes");
            assert!(r_is_canonical_and_not_small_order(signature.r_bytes()));
        }
        // A signature with a small-order R is not batched, so not remembered.
        let signed = Signed::sign(sample_record(), &key(1));
        let mut forged = signed.signature.clone();
        forged[..32].copy_from_slice(&SMALL_ORDER_ENCODINGS[0]);
        let mut writer = Writer::default();
        writer.bytes(&signed.signed_bytes);
        writer.bytes(&forged);
        assert_eq!(VerifiedEnvelopes::new(10).verify_batch([&writer.into_bytes()[..]]), 0);
    }

    #[test]
    fn remembered_verification_still_refuses_every_changed_byte_and_never_remembers_a_failure() {
        let verified = VerifiedEnvelopes::new(VERIFIED_ENVELOPES_REMEMBERED);
        let signed = Signed::sign(sample_record(), &key(1));
        let envelope = signed.to_envelope();
        let digest = VerifiedEnvelopes::digest(&signed.signed_bytes, &signed.signature);
        assert!(!verified.contains(&digest));
        let first = Signed::<Record>::from_envelope_remembered(&envelope, &verified).expect("verifies");
        assert!(verified.contains(&digest), "a success is remembered");
        let again = Signed::<Record>::from_envelope_remembered(&envelope, &verified).expect("remembered");
        assert_eq!((first.id(), first.body(), first.signer()), (again.id(), again.body(), again.signer()));
        // The kept decoded key is the key of each envelope, not merely the last one decoded.
        let by_other_key = Signed::sign(sample_record(), &key(3));
        let read =
            Signed::<Record>::from_envelope_remembered(&by_other_key.to_envelope(), &verified).expect("verifies");
        assert_eq!(read.signer(), &key(3).public_key());
        assert_eq!(verified.keys.lock().unwrap().len(), 2);
        // With the original remembered, any flipped byte is still refused, and not remembered.
        for index in 0..envelope.len() {
            let mut changed = envelope.clone();
            changed[index] ^= 0x01;
            assert!(Signed::<Record>::from_envelope_remembered(&changed, &verified).is_err(), "byte {index} accepted");
        }
        let other = Signed::sign(sample_record(), &key(2));
        let forged = Signed::<Record>::from_parts(&other.signed_bytes, &signed.signature);
        assert!(forged.is_err());
        assert!(!verified.contains(&VerifiedEnvelopes::digest(&other.signed_bytes, &signed.signature)));
        // Bounded: with one slot, a newer success replaces the older one.
        let small = VerifiedEnvelopes::new(1);
        Signed::<Record>::from_envelope_remembered(&envelope, &small).expect("verifies");
        Signed::<Record>::from_envelope_remembered(&other.to_envelope(), &small).expect("verifies");
        assert!(!small.contains(&digest));
        assert!(small.contains(&VerifiedEnvelopes::digest(&other.signed_bytes, &other.signature)));
    }

    /// A seal stands for the signature check of exactly the envelope it was made of, under exactly its
    /// memo's key: the check is skipped only then (shown with an envelope whose signature is bad but
    /// which was sealed anyway, as only a holder of the key could), and anything else is verified.
    #[test]
    fn a_seal_skips_the_signature_check_of_exactly_its_envelope_under_exactly_its_key() {
        let sealing = VerifiedEnvelopes::sealing(10, [7; 32]);
        assert_eq!(VerifiedEnvelopes::new(10).seal(b"anything"), None, "no key, no seal");
        let signed = Signed::sign(sample_record(), &key(1));
        let envelope = signed.to_envelope();
        let seal = sealing.seal(&envelope).expect("a seal");
        let read = Signed::<Record>::from_envelope_sealed(&envelope, Some(&seal), &sealing).expect("sealed");
        assert_eq!((read.id(), read.signer()), (signed.id(), &key(1).public_key()));

        let mut bad = envelope.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x01;
        let bad_seal = sealing.seal(&bad).expect("a seal");
        assert!(Signed::<Record>::from_envelope_sealed(&bad, Some(&bad_seal), &sealing).is_ok(), "not checked again");
        for (seal, memo) in [
            (None, &sealing),
            (Some(&seal), &sealing),
            (Some(&bad_seal), &VerifiedEnvelopes::sealing(10, [8; 32])),
            (Some(&bad_seal), &VerifiedEnvelopes::new(10)),
        ] {
            let read = Signed::<Record>::from_envelope_sealed(&bad, seal, memo);
            assert_eq!(read.err(), Some(DecodeError::BadSignature));
        }
        // With the envelope's own seal given, any changed byte is a different envelope, checked in full.
        for index in 0..envelope.len() {
            let mut changed = envelope.clone();
            changed[index] ^= 0x01;
            let read = Signed::<Record>::from_envelope_sealed(&changed, Some(&seal), &sealing);
            assert!(read.is_err(), "byte {index} accepted");
        }
    }

    #[test]
    fn wrong_kind_trailing_bytes_and_unknown_algorithm_are_rejected() {
        let signed = Signed::sign(sample_record(), &key(1));
        assert!(matches!(
            Signed::<RecordRevocation>::from_envelope(&signed.to_envelope()),
            Err(DecodeError::WrongKind { found: 1, .. })
        ));
        let mut bytes = signed.signed_bytes().to_vec();
        bytes.push(0);
        assert!(matches!(Signed::<Record>::from_parts(&bytes, signed.signature()), Err(DecodeError::TrailingBytes(1))));
        let mut bytes = signed.signed_bytes().to_vec();
        bytes[10..12].copy_from_slice(&4u16.to_be_bytes());
        assert!(matches!(
            Signed::<Record>::from_parts(&bytes, signed.signature()),
            Err(DecodeError::UnsupportedAlgorithm(4))
        ));
        // An Ed25519 key relabelled as an X.509 signer is not a certificate chain.
        let mut bytes = signed.signed_bytes().to_vec();
        bytes[10..12].copy_from_slice(&Algorithm::ECDSA_P256_SHA256_ID.to_be_bytes());
        assert!(matches!(Signed::<Record>::from_parts(&bytes, signed.signature()), Err(DecodeError::BadPublicKey(_))));
    }

    #[test]
    fn signature_by_another_key_is_rejected() {
        let signed = Signed::sign(sample_record(), &key(1));
        let forged = Signed::sign(sample_record(), &key(2));
        assert!(matches!(
            Signed::<Record>::from_parts(signed.signed_bytes(), forged.signature()),
            Err(DecodeError::BadSignature)
        ));
    }
}
