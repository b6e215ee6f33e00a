//! X.509 as Vietnamese agencies sign under it: certificates of the government's public-duty CA (Decree
//! 68/2024) and of the licensed public CAs (Decree 23/2025), checked by RFC 5280 path validation at a
//! chosen time (validity, basic constraints, key usage, name and key-identifier chaining, each
//! signature), with revocation decided only from evidence supplied with the document or configured
//! (CRLs and OCSP responses), never fetched: a vault must not depend on reaching a CA to keep a
//! verdict. Every parser here reads untrusted bytes and is fuzzed (`verify_x509`).

use crate::error_code::ErrorCode;
use x509_cert::der;
pub mod cms;
pub mod path;
pub mod pdf;
pub mod revocation;
pub mod signature;

use der::asn1::ObjectIdentifier as Oid;
use x509_cert::ext::pkix::{AuthorityKeyIdentifier, BasicConstraints, KeyUsage, SubjectKeyIdentifier};

pub use path::{Anchor, PathError, TrustStore, ValidatedPath};
pub use revocation::{Crl, OcspResponse, RevocationEvidence};

/// Largest certificate, CRL or OCSP response accepted (a national CA's CRL can run to megabytes;
/// certificates inside statements are bounded by the statement's own limit).
pub const OBJECT_SIZE_BYTES_MAX: usize = 32 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    #[error("the {what} is larger than {OBJECT_SIZE_BYTES_MAX} bytes")]
    TooLarge { what: &'static str },
    #[error("the {what} is not DER: {reason}")]
    NotDer { what: &'static str, reason: String },
    #[error("the {what} is not in canonical DER (a re-encoding differs), so its signed bytes are ambiguous")]
    NotCanonical { what: &'static str },
    #[error("no PEM block {0:?} found")]
    NoPem(&'static str),
}

/// Parses `bytes` (DER) as `T`, refusing oversized or non-canonical input.
fn parse_der<T: for<'a> der::Decode<'a> + der::Encode>(what: &'static str, bytes: &[u8]) -> Result<T, ParseError> {
    if bytes.len() > OBJECT_SIZE_BYTES_MAX {
        return Err(ParseError::TooLarge { what });
    }
    let value = T::from_der(bytes).map_err(|e| ParseError::NotDer { what, reason: e.to_string() })?;
    if value.to_der().ok().as_deref() != Some(bytes) {
        return Err(ParseError::NotCanonical { what });
    }
    Ok(value)
}

/// Every `-----BEGIN label-----` block of a PEM text, decoded; or the input itself if it is DER.
pub fn pem_or_der_blocks(bytes: &[u8], label: &'static str) -> Result<Vec<Vec<u8>>, ParseError> {
    use base64::Engine as _;
    let Ok(text) = std::str::from_utf8(bytes) else { return Ok(vec![bytes.to_vec()]) };
    if !text.contains("-----BEGIN ") {
        return Ok(vec![bytes.to_vec()]);
    }
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(&begin) {
        let after = &rest[start + begin.len()..];
        let stop = after.find(&end).ok_or(ParseError::NoPem(label))?;
        let body: String = after[..stop].chars().filter(|c| !c.is_whitespace()).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|e| ParseError::NotDer { what: "PEM block", reason: e.to_string() })?;
        blocks.push(der);
        rest = &after[stop + end.len()..];
    }
    if blocks.is_empty() {
        return Err(ParseError::NoPem(label));
    }
    Ok(blocks)
}

/// A parsed certificate and the exact bytes it came in.
#[derive(Clone)]
pub struct Certificate {
    der: Vec<u8>,
    cert: x509_cert::Certificate,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Certificate({})", self.subject())
    }
}

impl PartialEq for Certificate {
    fn eq(&self, other: &Self) -> bool {
        self.der == other.der
    }
}

impl Eq for Certificate {}

impl Certificate {
    pub fn from_der(bytes: &[u8]) -> Result<Certificate, ParseError> {
        Ok(Certificate { der: bytes.to_vec(), cert: parse_der("certificate", bytes)? })
    }

    /// Every certificate of a PEM file (or the one DER certificate it holds).
    pub fn all_from_pem_or_der(bytes: &[u8]) -> Result<Vec<Certificate>, ParseError> {
        pem_or_der_blocks(bytes, "CERTIFICATE")?.iter().map(|der| Certificate::from_der(der)).collect()
    }

    pub fn der(&self) -> &[u8] {
        &self.der
    }

    pub fn inner(&self) -> &x509_cert::Certificate {
        &self.cert
    }

    /// SHA-256 of the certificate's bytes, its usual fingerprint.
    pub fn fingerprint(&self) -> [u8; 32] {
        use sha2::Digest as _;
        sha2::Sha256::digest(&self.der).into()
    }

    /// The subject as RFC 4514 text (`CN=...,O=...,C=VN`).
    pub fn subject(&self) -> String {
        self.cert.tbs_certificate.subject.to_string()
    }

    pub fn issuer(&self) -> String {
        self.cert.tbs_certificate.issuer.to_string()
    }

    /// The value of the subject's first attribute of type `oid`, as text.
    pub fn subject_attribute(&self, oid: &Oid) -> Option<String> {
        self.cert.tbs_certificate.subject.0.iter().flat_map(|rdn| rdn.0.iter()).find(|atv| atv.oid == *oid).and_then(
            |atv| {
                atv.value
                    .decode_as::<der::asn1::Utf8StringRef<'_>>()
                    .map(|s| s.as_str().to_owned())
                    .or_else(|_| {
                        atv.value.decode_as::<der::asn1::PrintableStringRef<'_>>().map(|s| s.as_str().to_owned())
                    })
                    .or_else(|_| atv.value.decode_as::<der::asn1::Ia5StringRef<'_>>().map(|s| s.as_str().to_owned()))
                    .ok()
            },
        )
    }

    pub fn serial_hex(&self) -> String {
        hex::encode(self.cert.tbs_certificate.serial_number.as_bytes())
    }

    /// The validity window, in Unix milliseconds.
    pub fn validity_ms(&self) -> (i64, i64) {
        let validity = &self.cert.tbs_certificate.validity;
        (time_ms(validity.not_before), time_ms(validity.not_after))
    }

    fn extension<T: for<'a> der::Decode<'a> + der::oid::AssociatedOid>(&self) -> Result<Option<T>, String> {
        let Some(extension) = self.extensions().find(|e| e.extn_id == T::OID) else { return Ok(None) };
        T::from_der(extension.extn_value.as_bytes()).map(Some).map_err(|e| format!("extension {}: {e}", T::OID))
    }

    fn extensions(&self) -> impl Iterator<Item = &x509_cert::ext::Extension> {
        self.cert.tbs_certificate.extensions.iter().flatten()
    }

    fn basic_constraints(&self) -> Result<Option<BasicConstraints>, String> {
        self.extension::<BasicConstraints>()
    }

    fn key_usage(&self) -> Result<Option<KeyUsage>, String> {
        self.extension::<KeyUsage>()
    }

    pub(crate) fn subject_key_id(&self) -> Option<Vec<u8>> {
        self.extension::<SubjectKeyIdentifier>().ok().flatten().map(|id| id.0.as_bytes().to_vec())
    }

    fn authority_key_id(&self) -> Option<Vec<u8>> {
        self.extension::<AuthorityKeyIdentifier>()
            .ok()
            .flatten()
            .and_then(|id| id.key_identifier.map(|k| k.as_bytes().to_vec()))
    }

    pub(crate) fn extended_key_usage(&self) -> Result<Vec<Oid>, String> {
        Ok(self.extension::<x509_cert::ext::pkix::ExtendedKeyUsage>()?.map(|eku| eku.0).unwrap_or_default())
    }

    fn is_self_issued(&self) -> bool {
        self.cert.tbs_certificate.subject == self.cert.tbs_certificate.issuer
    }

    /// Whether `issuer` may have issued this certificate: names chain and, where both say, the
    /// key identifiers agree. (The signature is checked separately.)
    fn may_be_issued_by(&self, issuer: &Certificate) -> bool {
        self.cert.tbs_certificate.issuer == issuer.cert.tbs_certificate.subject
            && match (self.authority_key_id(), issuer.subject_key_id()) {
                (Some(authority), Some(subject)) => authority == subject,
                _ => true,
            }
    }

    /// Checks this certificate's signature under `issuer`'s key.
    fn signed_by(&self, issuer: &Certificate) -> Result<(), signature::SignatureError> {
        if self.cert.signature_algorithm != self.cert.tbs_certificate.signature {
            return Err(signature::SignatureError::Invalid);
        }
        issuer.signature_on(&self.cert.tbs_certificate, &self.cert.signature_algorithm, &self.cert.signature)
    }

    /// Checks `signature` over the DER of `signed` (a certificate's, CRL's or OCSP response's signed
    /// part; all were checked to be canonical DER) under this certificate's key.
    fn signature_on(
        &self,
        signed: &impl der::Encode,
        algorithm: &x509_cert::spki::AlgorithmIdentifierOwned,
        signature: &der::asn1::BitString,
    ) -> Result<(), signature::SignatureError> {
        let signature = signature.as_bytes().ok_or(signature::SignatureError::Invalid)?;
        let signed = signed.to_der().map_err(|_| signature::SignatureError::Invalid)?;
        signature::verify(&self.cert.tbs_certificate.subject_public_key_info, algorithm, &signed, signature)
    }
}

/// An X.509 time in Unix milliseconds.
pub(crate) fn time_ms(time: x509_cert::time::Time) -> i64 {
    i64::try_from(time.to_unix_duration().as_millis()).unwrap_or(i64::MAX)
}

/// A generalized time in Unix milliseconds.
pub(crate) fn generalized_ms(time: der::asn1::GeneralizedTime) -> i64 {
    i64::try_from(time.to_unix_duration().as_millis()).unwrap_or(i64::MAX)
}

/// Unix milliseconds as RFC 3339 text, for messages.
pub fn format_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// A signature that validated: who signed, under which root, when, and what showed it unrevoked.
#[derive(Debug, Clone)]
pub struct SignatureCheck {
    pub signer: String,
    /// The agency code the root's mapping reads from the signer's certificate, if it holds one.
    pub agency: Option<String>,
    pub root: String,
    /// The time the signer's certificate was validated at: the timestamp's, or the time asked.
    pub at_ms: i64,
    pub timestamped_by: Option<String>,
    pub signer_path: ValidatedPath,
}

impl std::fmt::Display for SignatureCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "signed by {} under {}, at {}", self.signer, self.root, format_ms(self.at_ms))?;
        if let Some(authority) = &self.timestamped_by {
            write!(f, ", timestamped by {authority}")?;
        }
        Ok(())
    }
}

/// Why a well-formed signature is not trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    #[error("the signer: {0}")]
    Signer(PathError),
    #[error("the timestamping authority: {0}")]
    TimestampAuthority(PathError),
}

impl CheckError {
    pub fn code(&self) -> ErrorCode {
        match self {
            CheckError::Signer(error) => error.code(),
            CheckError::TimestampAuthority(_) => ErrorCode::UntrustedTimestamp,
        }
    }
}

/// Validates a signature's signer (and its timestamping authority) under `store`: at the timestamp's
/// time if it has one (a trusted third party's word for when it was signed), else at `at_ms`.
pub fn check_signature(
    store: &TrustStore,
    signature: &cms::CmsSignature,
    evidence: &RevocationEvidence,
    at_ms: i64,
) -> Result<SignatureCheck, CheckError> {
    let (at_ms, timestamped_by) = match &signature.timestamp {
        Some(timestamp) => {
            store
                .validate(&timestamp.authority, &timestamp.certificates, timestamp.time_ms, evidence)
                .map_err(CheckError::TimestampAuthority)?;
            (timestamp.time_ms, Some(timestamp.authority.subject()))
        }
        None => (at_ms, None),
    };
    let path =
        store.validate(&signature.signer, &signature.certificates, at_ms, evidence).map_err(CheckError::Signer)?;
    Ok(SignatureCheck {
        signer: signature.signer.subject(),
        agency: store.anchors[path.anchor].agency_of(&signature.signer),
        root: path.root().subject(),
        at_ms,
        timestamped_by,
        signer_path: path,
    })
}
