//! RFC 5280 path validation at a chosen time: from a signer's certificate through the intermediates
//! supplied with it to a configured root, every signature, validity window, basic constraint, key
//! usage and critical extension checked, and every certificate below the root shown unrevoked at that
//! time by the evidence supplied (or, if the policy allows, recorded as unchecked).

use crate::error_code::ErrorCode;
use der::asn1::ObjectIdentifier as Oid;
use x509_cert::der;

use super::revocation::{RevocationEvidence, Source, Status};
use super::{format_ms, Certificate};

/// Intermediates accepted with one signer.
pub const INTERMEDIATES_MAX: usize = 8;
/// Certificates in a path at most, root included.
pub const PATH_LENGTH_MAX: usize = 6;
/// Candidate paths tried at most (names can repeat across CAs).
const PATHS_MAX: usize = 16;
/// Evidence without a next update (some OCSP responders) counts for this long after it was made.
pub const REVOCATION_AGE_MS_MAX_DEFAULT: i64 = 7 * 24 * 3600 * 1000;

/// The extensions whose meaning Kho knows, so that they may be critical.
const KNOWN_EXTENSIONS: [Oid; 14] = [
    Oid::new_unwrap("2.5.29.19"),            // basic constraints
    Oid::new_unwrap("2.5.29.15"),            // key usage
    Oid::new_unwrap("2.5.29.37"),            // extended key usage
    Oid::new_unwrap("2.5.29.14"),            // subject key identifier
    Oid::new_unwrap("2.5.29.35"),            // authority key identifier
    Oid::new_unwrap("2.5.29.31"),            // CRL distribution points
    Oid::new_unwrap("2.5.29.46"),            // freshest CRL
    Oid::new_unwrap("1.3.6.1.5.5.7.1.1"),    // authority information access
    Oid::new_unwrap("2.5.29.17"),            // subject alternative name
    Oid::new_unwrap("2.5.29.18"),            // issuer alternative name
    Oid::new_unwrap("2.5.29.32"),            // certificate policies (any policy is acceptable)
    Oid::new_unwrap("2.5.29.9"),             // subject directory attributes
    Oid::new_unwrap("1.3.6.1.5.5.7.48.1.5"), // OCSP no check
    Oid::new_unwrap("1.3.6.1.5.5.7.1.3"),    // qualified certificate statements
];

/// Why a signer's certificate does not validate. `code()` names the kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    #[error("no path from {subject} to a configured root certificate{detail}")]
    NoPath { subject: String, detail: String },
    #[error("the signature on the certificate of {subject} does not verify under its issuer's key: {reason}")]
    BadSignature { subject: String, reason: String },
    #[error("the certificate of {subject} expired at {not_after}, before {at}")]
    Expired { subject: String, not_after: String, at: String },
    #[error("the certificate of {subject} is valid only from {not_before}, after {at}")]
    NotYetValid { subject: String, not_before: String, at: String },
    #[error("the certificate of {subject} was revoked at {revoked_at}, before {at}")]
    Revoked { subject: String, revoked_at: String, at: String },
    #[error(
        "no current revocation evidence (CRL or OCSP response) for the certificate of {subject} at {at}: {reasons}"
    )]
    NoRevocationInfo { subject: String, at: String, reasons: String },
    #[error("the certificate of {subject} is used as a CA but is not one: {reason}")]
    NotACa { subject: String, reason: String },
    #[error("the certificate of {subject} may not be used to sign documents (key usage)")]
    NotForSigning { subject: String },
    #[error("the certificate of {subject} has a critical extension {oid} that Kho does not understand")]
    UnsupportedCriticalExtension { subject: String, oid: String },
    #[error("the certificate of {subject} is malformed: {reason}")]
    Malformed { subject: String, reason: String },
}

impl PathError {
    pub fn code(&self) -> ErrorCode {
        match self {
            PathError::NoPath { .. } => ErrorCode::NoPath,
            PathError::BadSignature { .. } => ErrorCode::BadSignature,
            PathError::Expired { .. } => ErrorCode::Expired,
            PathError::NotYetValid { .. } => ErrorCode::NotYetValid,
            PathError::Revoked { .. } => ErrorCode::Revoked,
            PathError::NoRevocationInfo { .. } => ErrorCode::NoRevocationInfo,
            PathError::NotACa { .. } => ErrorCode::NotACa,
            PathError::NotForSigning { .. } => ErrorCode::NotForSigning,
            PathError::UnsupportedCriticalExtension { .. } => ErrorCode::UnsupportedCriticalExtension,
            PathError::Malformed { .. } => ErrorCode::MalformedCertificate,
        }
    }
}

/// A configured root certificate, and where the agency code sits in the certificates under it.
#[derive(Debug, Clone)]
pub struct Anchor {
    pub certificate: Certificate,
    /// The subject attribute of a signer's certificate that holds its agency code.
    pub agency_attribute: Oid,
    /// A prefix the CA writes before the code (such as `MNS:`), removed.
    pub agency_prefix: String,
}

/// How revocation is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevocationPolicy {
    /// Refuse a certificate no supplied evidence speaks for.
    pub required: bool,
    /// How long evidence without a next update counts.
    pub age_ms_max: i64,
}

impl Default for RevocationPolicy {
    fn default() -> Self {
        RevocationPolicy { required: true, age_ms_max: REVOCATION_AGE_MS_MAX_DEFAULT }
    }
}

/// The configured roots.
#[derive(Debug, Clone, Default)]
pub struct TrustStore {
    pub anchors: Vec<Anchor>,
    pub revocation: RevocationPolicy,
}

/// A path that validated: the certificates from the signer to the root, and what decided each one's
/// revocation status.
#[derive(Debug, Clone)]
pub struct ValidatedPath {
    /// Signer first, root last.
    pub chain: Vec<Certificate>,
    /// Index of the root in the store.
    pub anchor: usize,
    /// For each certificate but the root, the evidence that showed it unrevoked (None: unchecked, which
    /// only a policy that does not require revocation evidence allows).
    pub revocation: Vec<Option<Source>>,
    pub at_ms: i64,
}

impl ValidatedPath {
    pub fn signer(&self) -> &Certificate {
        &self.chain[0]
    }

    pub fn root(&self) -> &Certificate {
        &self.chain[self.chain.len() - 1]
    }
}

impl TrustStore {
    /// Validates `signer` with `intermediates` at `at_ms` under the supplied evidence.
    pub fn validate(
        &self,
        signer: &Certificate,
        intermediates: &[Certificate],
        at_ms: i64,
        evidence: &RevocationEvidence,
    ) -> Result<ValidatedPath, PathError> {
        let subject = signer.subject();
        if intermediates.len() > INTERMEDIATES_MAX {
            return Err(PathError::NoPath {
                subject,
                detail: format!(": more than {INTERMEDIATES_MAX} intermediates"),
            });
        }
        if self.anchors.iter().any(|anchor| anchor.certificate == *signer) {
            return Err(PathError::NoPath {
                subject,
                detail: ": it is a root certificate, which signs certificates, not documents".into(),
            });
        }
        let paths = self.candidate_paths(signer, intermediates);
        if paths.is_empty() {
            return Err(PathError::NoPath { subject, detail: String::new() });
        }
        let mut first_error = None;
        for (chain, anchor) in paths {
            match self.check(chain, anchor, at_ms, evidence) {
                Ok(path) => return Ok(path),
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        Err(first_error.unwrap_or(PathError::NoPath { subject, detail: String::new() }))
    }

    /// Every chain of names and key identifiers from `signer` to a root, shortest first.
    fn candidate_paths(&self, signer: &Certificate, pool: &[Certificate]) -> Vec<(Vec<Certificate>, usize)> {
        let mut found = Vec::new();
        let mut frontier = vec![vec![signer.clone()]];
        while let Some(path) = frontier.pop() {
            let Some(last) = path.last() else { continue };
            for (index, anchor) in self.anchors.iter().enumerate() {
                if last.may_be_issued_by(&anchor.certificate) && found.len() < PATHS_MAX {
                    let mut chain = path.clone();
                    if *last != anchor.certificate {
                        chain.push(anchor.certificate.clone());
                    }
                    found.push((chain, index));
                }
            }
            if path.len() + 1 >= PATH_LENGTH_MAX {
                continue;
            }
            for candidate in pool {
                if !path.contains(candidate) && last.may_be_issued_by(candidate) && !candidate.is_self_issued() {
                    let mut longer = path.clone();
                    longer.push(candidate.clone());
                    frontier.insert(0, longer);
                }
            }
        }
        found.sort_by_key(|(chain, _)| chain.len());
        found
    }

    fn check(
        &self,
        chain: Vec<Certificate>,
        anchor: usize,
        at_ms: i64,
        evidence: &RevocationEvidence,
    ) -> Result<ValidatedPath, PathError> {
        let at = format_ms(at_ms);
        for pair in chain.windows(2) {
            let (child, parent) = (&pair[0], &pair[1]);
            child
                .signed_by(parent)
                .map_err(|e| PathError::BadSignature { subject: child.subject(), reason: e.to_string() })?;
        }
        for cert in &chain {
            let (not_before, not_after) = cert.validity_ms();
            if at_ms > not_after {
                return Err(PathError::Expired { subject: cert.subject(), not_after: format_ms(not_after), at });
            }
            if at_ms < not_before {
                return Err(PathError::NotYetValid { subject: cert.subject(), not_before: format_ms(not_before), at });
            }
        }
        let root_index = chain.len() - 1;
        for (position, cert) in chain.iter().enumerate().take(root_index) {
            if let Some(extension) = cert.extensions().find(|e| e.critical && !KNOWN_EXTENSIONS.contains(&e.extn_id)) {
                return Err(PathError::UnsupportedCriticalExtension {
                    subject: cert.subject(),
                    oid: extension.extn_id.to_string(),
                });
            }
            if position == 0 {
                let usage = cert.key_usage().map_err(|reason| malformed(cert, reason))?;
                if usage.is_some_and(|u| !u.digital_signature() && !u.non_repudiation()) {
                    return Err(PathError::NotForSigning { subject: cert.subject() });
                }
                continue;
            }
            let not_a_ca = |reason: &str| PathError::NotACa { subject: cert.subject(), reason: reason.to_owned() };
            let constraints = cert.basic_constraints().map_err(|reason| malformed(cert, reason))?;
            let constraints =
                constraints.filter(|bc| bc.ca).ok_or_else(|| not_a_ca("its basic constraints do not say CA"))?;
            // Intermediates strictly between this one and the signer, self-issued ones not counted.
            let below = chain[1..position].iter().filter(|c| !c.is_self_issued()).count();
            if constraints.path_len_constraint.is_some_and(|length| below > usize::from(length)) {
                return Err(not_a_ca("its path length constraint is exceeded"));
            }
            if cert.key_usage().map_err(|reason| malformed(cert, reason))?.is_some_and(|u| !u.key_cert_sign()) {
                return Err(not_a_ca("its key usage does not allow signing certificates"));
            }
        }
        let mut revocation = Vec::with_capacity(root_index);
        for pair in chain.windows(2) {
            revocation.push(self.revocation_status(&pair[0], &pair[1], at_ms, evidence)?);
        }
        Ok(ValidatedPath { chain, anchor, revocation, at_ms })
    }

    fn revocation_status(
        &self,
        cert: &Certificate,
        issuer: &Certificate,
        at_ms: i64,
        evidence: &RevocationEvidence,
    ) -> Result<Option<Source>, PathError> {
        let mut reasons = Vec::new();
        let answers = evidence
            .ocsp
            .iter()
            .map(|response| {
                response.status(cert, issuer, at_ms, self.revocation.age_ms_max).map_err(|e| format!("OCSP: {e}"))
            })
            .chain(evidence.crls.iter().map(|crl| crl.status(cert, issuer, at_ms).map_err(|e| format!("CRL: {e}"))));
        for answer in answers {
            match answer {
                Ok(Status::Good(source)) => return Ok(Some(source)),
                Ok(Status::Revoked { at_ms: revoked_at, .. }) => {
                    return Err(PathError::Revoked {
                        subject: cert.subject(),
                        revoked_at: format_ms(revoked_at),
                        at: format_ms(at_ms),
                    })
                }
                Err(reason) => reasons.push(reason),
            }
        }
        if !self.revocation.required {
            return Ok(None);
        }
        // Only the reasons of evidence from this certificate's CA help the reader.
        reasons.retain(|reason| !reason.contains("another CA") && !reason.contains("does not speak for"));
        Err(PathError::NoRevocationInfo {
            subject: cert.subject(),
            at: format_ms(at_ms),
            reasons: if reasons.is_empty() {
                format!("none from its issuer ({}) was supplied", cert.issuer())
            } else {
                reasons.join("; ")
            },
        })
    }
}

fn malformed(cert: &Certificate, reason: String) -> PathError {
    PathError::Malformed { subject: cert.subject(), reason }
}

impl Anchor {
    /// The agency code a signer's certificate under this root carries, per the configured mapping.
    pub fn agency_of(&self, signer: &Certificate) -> Option<String> {
        let value = signer.subject_attribute(&self.agency_attribute)?;
        Some(value.strip_prefix(self.agency_prefix.as_str())?.trim().to_owned())
    }
}
