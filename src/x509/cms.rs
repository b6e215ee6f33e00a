//! CMS signatures as agencies attach them to documents (RFC 5652 SignedData, detached, one signer; the
//! CAdES form inside PAdES PDFs and `.p7s` files), with an RFC 3161 timestamp token if the signer
//! added one. `verify_detached` checks that the signed attributes bind the document's digest and that
//! the signer's key signed them, and the timestamp's imprint and signature; whether the signer and the
//! timestamping authority are trusted at the time that counts is `TrustStore::validate`'s decision.

use crate::error_code::ErrorCode;
use der::asn1::ObjectIdentifier as Oid;
use der::{Decode as _, Encode as _};
use x509_cert::{der, spki};

use super::signature::{self, DigestAlgorithm};
use super::{generalized_ms, parse_der, time_ms, Certificate, ParseError};

const ID_SIGNED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.2");
const ID_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.1");
const ID_TST_INFO: Oid = Oid::new_unwrap("1.2.840.113549.1.9.16.1.4");
const ATTR_CONTENT_TYPE: Oid = Oid::new_unwrap("1.2.840.113549.1.9.3");
const ATTR_MESSAGE_DIGEST: Oid = Oid::new_unwrap("1.2.840.113549.1.9.4");
const ATTR_SIGNING_TIME: Oid = Oid::new_unwrap("1.2.840.113549.1.9.5");
const ATTR_TIMESTAMP_TOKEN: Oid = Oid::new_unwrap("1.2.840.113549.1.9.16.2.14");
const ID_KP_TIME_STAMPING: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.8");
/// Certificates a signature may carry.
pub const CMS_CERTIFICATES_MAX: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CmsError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error("the signature is not one Kho reads: {0}")]
    Unsupported(String),
    #[error(
        "the document's {algorithm:?} digest is not the one the signature covers: the bytes were changed after signing"
    )]
    BadDigest { algorithm: DigestAlgorithm },
    #[error("the signature does not verify under the signer's certificate: {0}")]
    BadSignature(String),
    #[error("the signature's timestamp is invalid: {0}")]
    BadTimestamp(String),
}

impl CmsError {
    pub fn code(&self) -> ErrorCode {
        match self {
            CmsError::Parse(_) | CmsError::Unsupported(_) => ErrorCode::MalformedSignature,
            CmsError::BadDigest { .. } => ErrorCode::BadDigest,
            CmsError::BadSignature(_) => ErrorCode::BadSignature,
            CmsError::BadTimestamp(_) => ErrorCode::BadTimestamp,
        }
    }
}

/// A signature whose bytes are consistent: what it says, not yet whether it is trusted.
#[derive(Debug, Clone)]
pub struct CmsSignature {
    pub signer: Certificate,
    /// Every certificate the signature carries (candidates for the signer's intermediates).
    pub certificates: Vec<Certificate>,
    pub digest: DigestAlgorithm,
    /// The signing time the signer claims (not proof of anything; a timestamp is).
    pub claimed_signing_time_ms: Option<i64>,
    pub timestamp: Option<Timestamp>,
}

/// An RFC 3161 timestamp over the signature: a trusted third party's word that it existed then.
#[derive(Debug, Clone)]
pub struct Timestamp {
    pub time_ms: i64,
    /// SHA-256 of the timestamp token (its DER).
    pub token_sha256: [u8; 32],
    pub authority: Certificate,
    pub certificates: Vec<Certificate>,
}

/// The parts of one signed CMS structure both signatures and timestamp tokens share.
struct SignedParts {
    signer: Certificate,
    certificates: Vec<Certificate>,
    digest: DigestAlgorithm,
    signed_attributes: Vec<x509_cert::attr::Attribute>,
    unsigned_attributes: Vec<x509_cert::attr::Attribute>,
    algorithm: spki::AlgorithmIdentifierOwned,
    signature: Vec<u8>,
    content: Option<Vec<u8>>,
}

/// Verifies a detached signature `cms` (a DER ContentInfo) over `content`.
pub fn verify_detached(cms: &[u8], content: &[u8]) -> Result<CmsSignature, CmsError> {
    verify_detached_parts(cms, &[content])
}

/// Verifies a detached signature over the concatenation of `content` (a PDF's two signed ranges).
pub fn verify_detached_parts(cms: &[u8], content: &[&[u8]]) -> Result<CmsSignature, CmsError> {
    verify_detached_digest(cms, |algorithm| Some(algorithm.digest_parts(content)))
}

/// Verifies a detached signature over content known only by its SHA-256 (as a Kho record names it):
/// a signature that digested the content otherwise cannot be checked this way.
pub fn verify_detached_sha256(cms: &[u8], sha256: &[u8; 32]) -> Result<CmsSignature, CmsError> {
    verify_detached_digest(cms, |algorithm| (algorithm == DigestAlgorithm::Sha256).then(|| sha256.to_vec()))
}

/// Verifies a detached signature whose content's digest under an algorithm `content_digest` gives (None:
/// not known under that one).
fn verify_detached_digest(
    cms: &[u8],
    content_digest: impl Fn(DigestAlgorithm) -> Option<Vec<u8>>,
) -> Result<CmsSignature, CmsError> {
    let info: cms::content_info::ContentInfo = parse_der("CMS signature", cms)?;
    let parts = signed_parts(&info, ID_DATA).map_err(CmsError::Unsupported)?;
    if parts.content.is_some() {
        return Err(CmsError::Unsupported("it encapsulates its content; a detached signature was expected".into()));
    }
    let claimed_signing_time_ms =
        check_signed_attributes(&parts, ID_DATA, &content_digest, |algorithm| CmsError::BadDigest { algorithm })?;
    let timestamp = match parts.unsigned_attributes.iter().find(|a| a.oid == ATTR_TIMESTAMP_TOKEN) {
        None => None,
        Some(attribute) => {
            let token = single_value(attribute).map_err(CmsError::BadTimestamp)?;
            Some(verify_timestamp(
                &token.to_der().map_err(|e| CmsError::BadTimestamp(e.to_string()))?,
                &parts.signature,
            )?)
        }
    };
    Ok(CmsSignature {
        signer: parts.signer,
        certificates: parts.certificates,
        digest: parts.digest,
        claimed_signing_time_ms,
        timestamp,
    })
}

/// Verifies an RFC 3161 timestamp token over `signature_value`.
fn verify_timestamp(token: &[u8], signature_value: &[u8]) -> Result<Timestamp, CmsError> {
    let bad = CmsError::BadTimestamp;
    let info = cms::content_info::ContentInfo::from_der(token).map_err(|e| bad(e.to_string()))?;
    let parts = signed_parts(&info, ID_TST_INFO).map_err(bad)?;
    let content = parts.content.as_deref().ok_or_else(|| bad("it has no TSTInfo".into()))?;
    check_signed_attributes(
        &parts,
        ID_TST_INFO,
        &|algorithm: DigestAlgorithm| Some(algorithm.digest_parts(&[content])),
        |_| bad("its signed attributes do not bind its TSTInfo".into()),
    )?;
    let tst = x509_tsp::TstInfo::from_der(content).map_err(|e| bad(format!("its TSTInfo: {e}")))?;
    let imprint = DigestAlgorithm::from_oid(&tst.message_imprint.hash_algorithm.oid)
        .filter(|d| *d != DigestAlgorithm::Sha1)
        .ok_or_else(|| bad("its imprint's hash algorithm is not SHA-2".into()))?;
    if imprint.digest(signature_value) != tst.message_imprint.hashed_message.as_bytes() {
        return Err(bad("it is over another signature".into()));
    }
    if !parts.signer.extended_key_usage().map_err(bad)?.contains(&ID_KP_TIME_STAMPING) {
        return Err(bad(format!("{} is not a timestamping authority (extended key usage)", parts.signer.subject())));
    }
    Ok(Timestamp {
        time_ms: generalized_ms(tst.gen_time),
        token_sha256: <sha2::Sha256 as sha2::Digest>::digest(token).into(),
        authority: parts.signer,
        certificates: parts.certificates,
    })
}

fn single_value(attribute: &x509_cert::attr::Attribute) -> Result<&der::Any, String> {
    match attribute.values.as_slice() {
        [value] => Ok(value),
        _ => Err(format!("attribute {} must have exactly one value", attribute.oid)),
    }
}

/// The signed attributes: the content type, the digest of `content`, and the signature over them
/// under the signer's key. Returns the claimed signing time, if any.
fn check_signed_attributes(
    parts: &SignedParts,
    content_type: Oid,
    content_digest: &dyn Fn(DigestAlgorithm) -> Option<Vec<u8>>,
    bad_digest: impl Fn(DigestAlgorithm) -> CmsError,
) -> Result<Option<i64>, CmsError> {
    let unsupported = |m: &str| CmsError::Unsupported(m.to_owned());
    let find = |oid: Oid| parts.signed_attributes.iter().find(|a| a.oid == oid);
    let declared_type = find(ATTR_CONTENT_TYPE).ok_or_else(|| unsupported("no content-type attribute"))?;
    if single_value(declared_type).map_err(CmsError::Unsupported)?.decode_as::<Oid>().ok() != Some(content_type) {
        return Err(unsupported("its content-type attribute names other content"));
    }
    let digest = find(ATTR_MESSAGE_DIGEST).ok_or_else(|| unsupported("no message-digest attribute"))?;
    let digest = single_value(digest)
        .map_err(CmsError::Unsupported)?
        .decode_as::<der::asn1::OctetString>()
        .map_err(|_| unsupported("its message digest is not an octet string"))?;
    let expected = content_digest(parts.digest).ok_or_else(|| {
        CmsError::Unsupported(format!("it digests its content with {:?}, which cannot be checked here", parts.digest))
    })?;
    if digest.as_bytes() != expected {
        return Err(bad_digest(parts.digest));
    }
    let signing_time = match find(ATTR_SIGNING_TIME) {
        None => None,
        Some(attribute) => {
            let value = single_value(attribute).map_err(CmsError::Unsupported)?.to_der().unwrap_or_default();
            let time =
                x509_cert::time::Time::from_der(&value).map_err(|_| unsupported("its signing time is not a time"))?;
            Some(time_ms(time))
        }
    };
    // The signature covers the attributes' DER as a SET OF (RFC 5652 section 5.4); the whole structure
    // was checked to be canonical DER, so re-encoding gives the bytes the signer signed.
    let set: der::asn1::SetOfVec<x509_cert::attr::Attribute> =
        parts.signed_attributes.clone().try_into().map_err(|_| unsupported("its signed attributes are not a set"))?;
    let signed = set.to_der().map_err(|e| CmsError::Unsupported(e.to_string()))?;
    signature::verify(
        &parts.signer.inner().tbs_certificate.subject_public_key_info,
        &parts.algorithm,
        &signed,
        &parts.signature,
    )
    .map_err(|e| CmsError::BadSignature(e.to_string()))?;
    Ok(signing_time)
}

/// The one signer of a SignedData over `expected` content, its certificates and attributes.
fn signed_parts(info: &cms::content_info::ContentInfo, expected: Oid) -> Result<SignedParts, String> {
    use cms::cert::CertificateChoices;
    use cms::signed_data::SignerIdentifier;
    if info.content_type != ID_SIGNED_DATA {
        return Err(format!("its content is {}, not SignedData", info.content_type));
    }
    let data: cms::signed_data::SignedData = info.content.decode_as().map_err(|e| format!("its SignedData: {e}"))?;
    if data.encap_content_info.econtent_type != expected {
        return Err(format!("it signs {} content, not {expected}", data.encap_content_info.econtent_type));
    }
    let content = match &data.encap_content_info.econtent {
        None => None,
        Some(any) => Some(
            any.decode_as::<der::asn1::OctetString>().map_err(|e| format!("its content: {e}"))?.as_bytes().to_vec(),
        ),
    };
    let mut certificates = Vec::new();
    for choice in data.certificates.iter().flat_map(|set| set.0.iter()) {
        if let CertificateChoices::Certificate(certificate) = choice {
            if certificates.len() == CMS_CERTIFICATES_MAX {
                return Err(format!("it carries more than {CMS_CERTIFICATES_MAX} certificates"));
            }
            let der = certificate.to_der().map_err(|e| e.to_string())?;
            certificates.push(Certificate::from_der(&der).map_err(|e| e.to_string())?);
        }
    }
    let [signer_info] = data.signer_infos.0.as_slice() else {
        return Err(format!("it has {} signers; Kho reads signatures with exactly one", data.signer_infos.0.len()));
    };
    let digest = DigestAlgorithm::from_oid(&signer_info.digest_alg.oid)
        .filter(|d| *d != DigestAlgorithm::Sha1)
        .ok_or_else(|| format!("its digest algorithm {} is not SHA-2", signer_info.digest_alg.oid))?;
    let signer = certificates
        .iter()
        .find(|certificate| match &signer_info.sid {
            SignerIdentifier::IssuerAndSerialNumber(id) => {
                let tbs = &certificate.inner().tbs_certificate;
                tbs.issuer == id.issuer && tbs.serial_number == id.serial_number
            }
            SignerIdentifier::SubjectKeyIdentifier(id) => {
                certificate.subject_key_id().as_deref() == Some(id.0.as_bytes())
            }
        })
        .cloned()
        .ok_or("it does not carry its signer's certificate")?;
    let signed_attributes: Vec<_> =
        signer_info.signed_attrs.as_ref().ok_or("it has no signed attributes")?.iter().cloned().collect();
    let unsigned_attributes = signer_info.unsigned_attrs.iter().flat_map(|set| set.iter().cloned()).collect();
    // Signers often name only rsaEncryption and leave the hash to the digest algorithm.
    let algorithm = if signer_info.signature_algorithm.oid == signature::RSA_ENCRYPTION {
        let oid = match digest {
            DigestAlgorithm::Sha384 => signature::SHA384_WITH_RSA,
            DigestAlgorithm::Sha512 => signature::SHA512_WITH_RSA,
            _ => signature::SHA256_WITH_RSA,
        };
        spki::AlgorithmIdentifierOwned { oid, parameters: None }
    } else {
        signer_info.signature_algorithm.clone()
    };
    Ok(SignedParts {
        signer,
        certificates,
        digest,
        signed_attributes,
        unsigned_attributes,
        algorithm,
        signature: signer_info.signature.as_bytes().to_vec(),
        content,
    })
}
