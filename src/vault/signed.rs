//! Signed documents deposited as they are: a PDF an agency signed (PAdES: a CMS signature over the
//! file's byte ranges, often with an RFC 3161 timestamp) is verified at deposit (the byte ranges, the
//! message digest, the signature, the chain to a configured root at the signing time, the timestamp, the
//! revocation evidence); the vault then records it like any document, with a record it signs itself for
//! the agency the root's mapping reads from the signer's certificate, and logs just before it the
//! validation of the document's signature (kind 10, with the CRLs and OCSP responses used). That record
//! counts for the agency only with that validation (`trust_check`), so the vault's key alone never makes
//! an agency's document.

use super::{Accepted, DepositError, TrustError, Vault};
use crate::ids::{now_unix_ms, Code, Date, Digest, MediaType, OwnerId, Title};
use crate::statement::{Record, Signed, ValidationBasis};
use crate::x509::RevocationEvidence;

/// Largest signed document checked at deposit: it is held in memory while its signature is verified.
pub const SIGNED_DOCUMENT_SIZE_BYTES_MAX: u64 = 64 * 1024 * 1024;

fn embedded(code: crate::error_code::ErrorCode, message: String) -> DepositError {
    DepositError::EmbeddedSignature { code, message }
}

/// What the depositing agency says about a signed document; the vault adds its hashes, size, type and
/// the time its signature counts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentDetails {
    pub owner: OwnerId,
    /// The agency depositing it: the signer's certificate must be for it.
    pub agency: Code,
    pub document_type: Code,
    pub title: Title,
    pub issued_on: Date,
    pub valid_from: Date,
    pub valid_until: Option<Date>,
    pub procedure: Code,
    pub dossier: Code,
    pub supersedes: Option<Digest>,
}

impl Vault {
    /// Verifies a signed PDF and, if its signature holds for `details.agency`, accepts it with the
    /// validation logged first. The same document deposited again with the same details is the record
    /// accepted before (a timestamped signature gives the same record; an untimestamped one is found by
    /// its content). Refusals change nothing.
    pub fn deposit_signed_pdf(&self, pdf: &[u8], details: DocumentDetails) -> Result<Accepted, DepositError> {
        self.check_signed_size(pdf)?;
        let (_, signature) = crate::x509::pdf::verify(pdf).map_err(|e| embedded(e.code(), e.to_string()))?;
        let media_type = MediaType::parse("application/pdf")
            .map_err(|e| embedded(crate::error_code::ErrorCode::MalformedRecord, e.to_string()))?;
        self.deposit_signed(pdf, &signature, media_type, details, None)
    }

    /// Verifies `content` against its detached CMS signature (`.p7s`) and, if it holds for
    /// `details.agency`, accepts the content with the validation logged first and the signature kept
    /// beside the record (an outsider checks it again against the record's SHA-256).
    pub fn deposit_detached_signed(
        &self,
        content: &[u8],
        p7s: &[u8],
        media_type: MediaType,
        details: DocumentDetails,
    ) -> Result<Accepted, DepositError> {
        self.check_signed_size(content)?;
        let der = crate::x509::pem_or_der_blocks(p7s, "PKCS7")
            .ok()
            .and_then(|blocks| blocks.into_iter().next())
            .ok_or_else(|| {
                embedded(
                    crate::error_code::ErrorCode::MalformedSignature,
                    "the signature is neither DER nor PEM".to_owned(),
                )
            })?;
        let signature =
            crate::x509::cms::verify_detached(&der, content).map_err(|e| embedded(e.code(), e.to_string()))?;
        self.deposit_signed(content, &signature, media_type, details, Some(der))
    }

    fn check_signed_size(&self, content: &[u8]) -> Result<(), DepositError> {
        let limit = SIGNED_DOCUMENT_SIZE_BYTES_MAX.min(self.config.document_size_bytes_max);
        if content.len() as u64 > limit {
            return Err(DepositError::DocumentTooLarge { declared_bytes: content.len() as u64, limit_bytes: limit });
        }
        Ok(())
    }

    /// A verified signature over `content`: its signer validated for the agency, then the validation
    /// and the vault's record of the content accepted, in that order.
    fn deposit_signed(
        &self,
        content: &[u8],
        signature: &crate::x509::cms::CmsSignature,
        media_type: MediaType,
        details: DocumentDetails,
        detached: Option<Vec<u8>>,
    ) -> Result<Accepted, DepositError> {
        let trust = &self.config.x509;
        let evidence = RevocationEvidence::read_paths(&trust.evidence).map_err(TrustError::X509Evidence)?;
        let check = crate::x509::check_signature(&trust.store, signature, &evidence, now_unix_ms())
            .map_err(|e| embedded(e.code(), e.to_string()))?;
        if check.agency.as_deref() != Some(details.agency.as_str()) {
            return Err(TrustError::X509OtherAgency { claimed: details.agency, found: check.agency }.into());
        }
        let record = Record {
            owner: details.owner,
            document_type: details.document_type,
            title: details.title,
            issuer_agency: details.agency,
            issued_on: details.issued_on,
            valid_from: details.valid_from,
            valid_until: details.valid_until,
            procedure: details.procedure,
            dossier: details.dossier,
            blake3: Digest(*blake3::hash(content).as_bytes()),
            sha256: Digest::sha256(content),
            size_bytes: content.len() as u64,
            media_type,
            supersedes: details.supersedes,
            signed_at_ms: check.at_ms,
        };
        if let Some(existing) = self.earlier_deposit(&record)? {
            return Ok(existing);
        }
        let record = Signed::sign(record, &self.key);
        let envelope = record.to_envelope();
        // Refused before anything is logged if it would not decode as any deposit's (valid until before
        // valid from).
        Signed::<Record>::from_envelope(&envelope)?;
        let basis = match &signature.timestamp {
            Some(timestamp) => ValidationBasis::Timestamp {
                token: Digest(timestamp.token_sha256),
                authority: super::validation::title(timestamp.authority.subject()),
            },
            None => ValidationBasis::Acceptance,
        };
        let body = record.body();
        let mut prepared = self.validation_of_path(
            record.id(),
            &body.issuer_agency,
            &check.signer_path,
            &evidence,
            basis,
            Some(&body.owner),
        );
        prepared.detached = detached;
        self.accept_validation(prepared)?;
        self.deposit(&envelope, content)
    }

    /// The record this vault made earlier for the same signed document, owner and details, if any.
    fn earlier_deposit(&self, record: &Record) -> Result<Option<Accepted>, DepositError> {
        for item in self.store.content_records(&record.blake3, None) {
            let (_, id) = item?;
            let Some((earlier, sequence)) = self.decode_statement::<Record>(self.store.record(&id)?)? else {
                continue;
            };
            let same = Record { signed_at_ms: earlier.body().signed_at_ms, ..record.clone() };
            if self.is_own_key(earlier.signer()) && earlier.body() == &same {
                return Ok(Some(Accepted {
                    id: earlier.id(),
                    receipt: self.load_receipt(sequence)?,
                    newly_accepted: false,
                }));
            }
        }
        Ok(None)
    }
}
