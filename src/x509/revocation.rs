//! Revocation evidence as a CA publishes it: CRLs (RFC 5280 section 5) and OCSP responses (RFC 6960),
//! parsed from untrusted bytes and applied to one certificate at one time. Only evidence the caller
//! supplies is used.

use der::asn1::ObjectIdentifier as Oid;
use der::Encode as _;
use x509_cert::der;
use x509_ocsp::{BasicOcspResponse, CertStatus, OcspResponseStatus, ResponderId};

use super::signature::DigestAlgorithm;
use super::{generalized_ms, parse_der, time_ms, Certificate, ParseError};

const ID_PKIX_OCSP_BASIC: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.48.1.1");
const ID_KP_OCSP_SIGNING: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.9");
const ISSUING_DISTRIBUTION_POINT: Oid = Oid::new_unwrap("2.5.29.28");
const CRL_NUMBER: Oid = Oid::new_unwrap("2.5.29.20");
const AUTHORITY_KEY_IDENTIFIER: Oid = Oid::new_unwrap("2.5.29.35");
const REASON_CODE: Oid = Oid::new_unwrap("2.5.29.21");
const INVALIDITY_DATE: Oid = Oid::new_unwrap("2.5.29.24");
const OCSP_NONCE: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.48.1.2");

/// A CRL and its bytes.
#[derive(Debug, Clone)]
pub struct Crl {
    der: Vec<u8>,
    crl: x509_cert::crl::CertificateList,
}

/// An OCSP response (the outer `OCSPResponse`) and its bytes.
#[derive(Debug, Clone)]
pub struct OcspResponse {
    der: Vec<u8>,
    basic: BasicOcspResponse,
}

/// The evidence supplied for one validation.
#[derive(Debug, Clone, Default)]
pub struct RevocationEvidence {
    pub crls: Vec<Crl>,
    pub ocsp: Vec<OcspResponse>,
}

/// What the evidence says about one certificate at one time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Not revoked at that time, by this source.
    Good(Source),
    /// Revoked at `at_ms` (at or before the time asked about).
    Revoked { at_ms: i64, source: Source },
}

/// Which piece of evidence decided, for the record of a validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Crl { issuer: String, this_update_ms: i64, sha256: [u8; 32] },
    Ocsp { responder: String, produced_at_ms: i64, sha256: [u8; 32] },
}

impl Source {
    /// SHA-256 of the CRL's or OCSP response's bytes: how a validation names the evidence it kept.
    pub fn sha256(&self) -> [u8; 32] {
        match self {
            Source::Crl { sha256, .. } | Source::Ocsp { sha256, .. } => *sha256,
        }
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).into()
}

/// Files read from one evidence folder at most.
pub const EVIDENCE_FILES_MAX: usize = 10_000;

impl RevocationEvidence {
    /// Reads CRLs and OCSP responses (DER, or PEM `X509 CRL` blocks) from files and folders (their
    /// files, not below). A file that is neither is an error naming it: evidence an operator put there
    /// and Kho ignored would be a silent hole.
    pub fn read_paths(paths: &[std::path::PathBuf]) -> Result<RevocationEvidence, String> {
        let mut evidence = RevocationEvidence::default();
        for path in paths {
            let files = if path.is_dir() {
                let mut files: Vec<_> = std::fs::read_dir(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?
                    .filter_map(|entry| entry.ok().map(|e| e.path()))
                    .filter(|p| p.is_file())
                    .take(EVIDENCE_FILES_MAX + 1)
                    .collect();
                if files.len() > EVIDENCE_FILES_MAX {
                    return Err(format!("{}: more than {EVIDENCE_FILES_MAX} files", path.display()));
                }
                files.sort();
                files
            } else {
                vec![path.clone()]
            };
            for file in files {
                let bytes = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
                let blocks =
                    super::pem_or_der_blocks(&bytes, "X509 CRL").map_err(|e| format!("{}: {e}", file.display()))?;
                for block in blocks {
                    evidence.push_der(&block).map_err(|e| format!("{}: {e}", file.display()))?;
                }
            }
        }
        Ok(evidence)
    }

    /// Adds one CRL or OCSP response in DER.
    pub fn push_der(&mut self, der: &[u8]) -> Result<(), String> {
        match (Crl::from_der(der), OcspResponse::from_der(der)) {
            (Ok(crl), _) => self.crls.push(crl),
            (_, Ok(response)) => self.ocsp.push(response),
            (Err(crl), Err(ocsp)) => return Err(format!("neither a CRL ({crl}) nor an OCSP response ({ocsp})")),
        }
        Ok(())
    }
}

impl Crl {
    pub fn from_der(bytes: &[u8]) -> Result<Crl, ParseError> {
        Ok(Crl { der: bytes.to_vec(), crl: parse_der("CRL", bytes)? })
    }

    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The status of `cert` (issued by `issuer`) at `at_ms`, if this CRL covers it then: issued by the
    /// same CA and signed with its key, current at that time (this update at or before it, next update
    /// at or after it), and in scope. `Err` says why this CRL cannot be used.
    pub fn status(&self, cert: &Certificate, issuer: &Certificate, at_ms: i64) -> Result<Status, String> {
        let tbs = &self.crl.tbs_cert_list;
        if tbs.issuer != cert.cert.tbs_certificate.issuer {
            return Err("issued by another CA".into());
        }
        if let Some(key_usage) = issuer.key_usage()? {
            if !key_usage.crl_sign() {
                return Err("its issuer's key may not sign CRLs".into());
            }
        }
        for extension in tbs.crl_extensions.iter().flatten() {
            match extension.extn_id {
                CRL_NUMBER | AUTHORITY_KEY_IDENTIFIER => {}
                ISSUING_DISTRIBUTION_POINT => check_scope(extension.extn_value.as_bytes(), cert)?,
                other if extension.critical => return Err(format!("unsupported critical CRL extension {other}")),
                _ => {}
            }
        }
        if self.crl.signature_algorithm != tbs.signature {
            return Err("its two signature algorithm fields differ".into());
        }
        issuer
            .signature_on(tbs, &self.crl.signature_algorithm, &self.crl.signature)
            .map_err(|e| format!("its signature: {e}"))?;
        let this_update = time_ms(tbs.this_update);
        let next_update = tbs.next_update.map(time_ms).ok_or("it has no next update")?;
        current_at(this_update, next_update, at_ms)?;
        let source =
            Source::Crl { issuer: tbs.issuer.to_string(), this_update_ms: this_update, sha256: sha256(&self.der) };
        let serial = &cert.cert.tbs_certificate.serial_number;
        for revoked in tbs.revoked_certificates.iter().flatten() {
            for extension in revoked.crl_entry_extensions.iter().flatten() {
                if extension.critical && ![REASON_CODE, INVALIDITY_DATE].contains(&extension.extn_id) {
                    return Err(format!("unsupported critical CRL entry extension {}", extension.extn_id));
                }
            }
            if revoked.serial_number == *serial {
                let revoked_at = time_ms(revoked.revocation_date);
                if revoked_at <= at_ms {
                    return Ok(Status::Revoked { at_ms: revoked_at, source });
                }
            }
        }
        Ok(Status::Good(source))
    }
}

/// Evidence speaks for `at_ms` only between its this update and its next update.
fn current_at(this_update: i64, next_update: i64, at_ms: i64) -> Result<(), String> {
    if at_ms < this_update || at_ms > next_update {
        return Err(format!(
            "it is current from {} to {}, not at {}",
            super::format_ms(this_update),
            super::format_ms(next_update),
            super::format_ms(at_ms)
        ));
    }
    Ok(())
}

/// A CRL whose issuing distribution point limits it to user or CA certificates covers only those;
/// indirect CRLs and partitions by reason are not supported (RFC 5280 section 5.2.5).
fn check_scope(value: &[u8], cert: &Certificate) -> Result<(), String> {
    use der::Decode as _;
    let point = x509_cert::ext::pkix::crl::dp::IssuingDistributionPoint::from_der(value)
        .map_err(|e| format!("its issuing distribution point: {e}"))?;
    if point.indirect_crl || point.only_some_reasons.is_some() || point.only_contains_attribute_certs {
        return Err("an indirect or partitioned CRL, which Kho does not use".into());
    }
    let is_ca = cert.basic_constraints()?.is_some_and(|bc| bc.ca);
    if (point.only_contains_user_certs && is_ca) || (point.only_contains_ca_certs && !is_ca) {
        return Err("it covers other kinds of certificates".into());
    }
    Ok(())
}

impl OcspResponse {
    pub fn from_der(bytes: &[u8]) -> Result<OcspResponse, ParseError> {
        let response: x509_ocsp::OcspResponse = parse_der("OCSP response", bytes)?;
        let not_basic = |reason: &str| ParseError::NotDer { what: "OCSP response", reason: reason.to_owned() };
        if response.response_status != OcspResponseStatus::Successful {
            return Err(not_basic(&format!("its status is {:?}, not successful", response.response_status)));
        }
        let body = response.response_bytes.ok_or_else(|| not_basic("it has no response"))?;
        if body.response_type != ID_PKIX_OCSP_BASIC {
            return Err(not_basic("it is not a basic OCSP response"));
        }
        let basic: BasicOcspResponse = parse_der("OCSP basic response", body.response.as_bytes())?;
        Ok(OcspResponse { der: bytes.to_vec(), basic })
    }

    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The status of `cert` (issued by `issuer`) at `at_ms` according to this response, if it speaks
    /// for that certificate then: signed by the CA or by a responder the CA delegated to, with a single
    /// response for the certificate current at that time.
    pub fn status(
        &self,
        cert: &Certificate,
        issuer: &Certificate,
        at_ms: i64,
        age_ms_max: i64,
    ) -> Result<Status, String> {
        let data = &self.basic.tbs_response_data;
        let responder = self.responder(issuer, at_ms)?;
        for extension in data.response_extensions.iter().flatten() {
            if extension.critical && extension.extn_id != OCSP_NONCE {
                return Err(format!("unsupported critical OCSP extension {}", extension.extn_id));
            }
        }
        responder
            .signature_on(data, &self.basic.signature_algorithm, &self.basic.signature)
            .map_err(|e| format!("its signature: {e}"))?;
        let single = data
            .responses
            .iter()
            .find(|single| cert_id_matches(&single.cert_id, cert, issuer))
            .ok_or("it does not speak for this certificate")?;
        let this_update = generalized_ms(single.this_update.0);
        let next_update =
            single.next_update.map(|t| generalized_ms(t.0)).unwrap_or(this_update.saturating_add(age_ms_max));
        current_at(this_update, next_update, at_ms)?;
        let source = Source::Ocsp {
            responder: responder.subject(),
            produced_at_ms: generalized_ms(data.produced_at.0),
            sha256: sha256(&self.der),
        };
        match &single.cert_status {
            CertStatus::Good(_) => Ok(Status::Good(source)),
            CertStatus::Revoked(info) => {
                let revoked_at = generalized_ms(info.revocation_time.0);
                if revoked_at <= at_ms {
                    Ok(Status::Revoked { at_ms: revoked_at, source })
                } else {
                    Ok(Status::Good(source))
                }
            }
            CertStatus::Unknown(_) => Err("the responder does not know the certificate".into()),
        }
    }

    /// The certificate whose key signed this response: the CA's own, or a delegated responder's
    /// certificate carried in the response, issued by the CA for OCSP signing and valid at `at_ms`.
    fn responder(&self, issuer: &Certificate, at_ms: i64) -> Result<Certificate, String> {
        let data = &self.basic.tbs_response_data;
        let names = |candidate: &Certificate| match &data.responder_id {
            ResponderId::ByName(name) => *name == candidate.cert.tbs_certificate.subject,
            ResponderId::ByKey(hash) => {
                let key = candidate.cert.tbs_certificate.subject_public_key_info.subject_public_key.raw_bytes();
                DigestAlgorithm::Sha1.digest(key) == hash.as_bytes()
            }
        };
        if names(issuer) {
            return Ok(issuer.clone());
        }
        for der in self.basic.certs.iter().flatten() {
            let candidate =
                Certificate::from_der(&der.to_der().map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
            if !names(&candidate) {
                continue;
            }
            if !candidate.may_be_issued_by(issuer) || candidate.signed_by(issuer).is_err() {
                return Err("its responder's certificate was not issued by the CA".into());
            }
            if !candidate.extended_key_usage()?.contains(&ID_KP_OCSP_SIGNING) {
                return Err("its responder's certificate is not for OCSP signing".into());
            }
            let (not_before, not_after) = candidate.validity_ms();
            if at_ms < not_before || at_ms > not_after {
                return Err("its responder's certificate is not valid at that time".into());
            }
            return Ok(candidate);
        }
        Err("it is signed by neither the CA nor a responder the CA delegated to".into())
    }
}

fn cert_id_matches(id: &x509_ocsp::CertId, cert: &Certificate, issuer: &Certificate) -> bool {
    let Some(digest) = DigestAlgorithm::from_oid(&id.hash_algorithm.oid) else { return false };
    let name = issuer.cert.tbs_certificate.subject.to_der().unwrap_or_default();
    let key = issuer.cert.tbs_certificate.subject_public_key_info.subject_public_key.raw_bytes();
    id.serial_number == cert.cert.tbs_certificate.serial_number
        && digest.digest(&name) == id.issuer_name_hash.as_bytes()
        && digest.digest(key) == id.issuer_key_hash.as_bytes()
}
