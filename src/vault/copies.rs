//! A person's own scans, and copies an agency certified (Law on E-Transactions 2023, Art. 12).
//!
//! An upload is a record the vault signs itself, with its key, under the reserved agency code
//! [`SELF_UPLOAD_CODE`]: it attests only that the owner uploaded these exact bytes at that time, and is
//! never legally valid on its own. The owner may ask agencies to certify it (a request is the owner's
//! setting, like a share link, not a log entry). An officer of a requested agency who compared the
//! scan with the original signs a [`CopyCertification`] with a certified key of that agency; accepted
//! through the sequencer like any statement, it turns the upload into a certified copy. Nothing is
//! edited: the status is computed when the record is read.

use crate::error_code::ErrorCode;
use serde::{Deserialize, Serialize};

use super::sequencer::{Acceptance, Decision};
use super::{Accepted, DepositError, RecordView, StorageError, TrustError, Vault};
use crate::codec;
use crate::content::ContentWriter;
use crate::ids::{now_unix_ms, Code, Date, Digest, MediaType, OwnerId, Title};
use crate::statement::{CopyCertification, DecodeError, Record, Signed, StatementBody as _, SELF_UPLOAD_CODE};
use crate::store::Change;

/// Largest scan a person may upload.
pub const UPLOAD_SIZE_BYTES_MAX: u64 = 20 * 1024 * 1024;
/// What a scan may be, recognised by its first bytes (the browser's word for it is not trusted).
pub const UPLOAD_MEDIA_TYPES: [(&str, &[u8]); 3] =
    [("application/pdf", b"%PDF-"), ("image/jpeg", &[0xff, 0xd8, 0xff]), ("image/png", b"\x89PNG\r\n\x1a\n")];
/// Most agencies one upload may be sent to for certification.
pub const CERTIFICATION_REQUESTS_PER_RECORD_MAX: usize = 5;
/// Most pending requests listed for an agency at once.
pub const CERTIFICATION_REQUESTS_LISTED_MAX: usize = 500;
const SNIFF_BYTES: usize = 8;

/// The reserved code as a [`Code`].
fn self_upload_code() -> Code {
    Code::parse("self upload", SELF_UPLOAD_CODE).expect("the reserved code is a valid code")
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UploadError {
    #[error("the file is empty")]
    Empty,
    #[error("the file is larger than the limit of {UPLOAD_SIZE_BYTES_MAX} bytes")]
    TooLarge,
    #[error("the file is not a PDF, JPEG or PNG")]
    NotAScan,
    #[error(transparent)]
    Deposit(#[from] DepositError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl UploadError {
    pub fn code(&self) -> ErrorCode {
        match self {
            UploadError::Empty => ErrorCode::UploadEmpty,
            UploadError::TooLarge => ErrorCode::UploadTooLarge,
            UploadError::NotAScan => ErrorCode::UploadNotAScan,
            UploadError::Deposit(error) => error.code(),
            UploadError::Storage(_) => ErrorCode::StorageError,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CopyError {
    #[error("invalid copy certification: {0}")]
    Statement(#[from] DecodeError),
    #[error("untrusted signer: {0}")]
    Trust(#[from] TrustError),
    /// Also for another owner's record: an owner cannot learn that it exists.
    #[error("no such upload in your store")]
    NotFound,
    #[error("record {0} is not a self-uploaded document; only uploads are certified as copies")]
    NotAnUpload(Digest),
    #[error("record {record} is already certified (by {agency})")]
    AlreadyCertified { record: Digest, agency: Code },
    #[error("the owner did not ask agency {agency} to certify record {record}")]
    NotRequested { record: Digest, agency: Code },
    #[error("agency {0} has no certified keys, so it cannot certify copies")]
    UnknownAgency(Code),
    #[error("an upload may be sent to at most {CERTIFICATION_REQUESTS_PER_RECORD_MAX} agencies")]
    TooManyRequests,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl CopyError {
    pub fn code(&self) -> ErrorCode {
        match self {
            CopyError::Statement(DecodeError::BadSignature) => ErrorCode::BadSignature,
            CopyError::Statement(_) => ErrorCode::MalformedCertification,
            CopyError::Trust(error) => error.code(),
            CopyError::NotFound => ErrorCode::RecordNotFound,
            CopyError::NotAnUpload(_) => ErrorCode::NotAnUpload,
            CopyError::AlreadyCertified { .. } => ErrorCode::AlreadyCertified,
            CopyError::NotRequested { .. } => ErrorCode::CertificationNotRequested,
            CopyError::UnknownAgency(_) => ErrorCode::UnknownAgency,
            CopyError::TooManyRequests => ErrorCode::TooManyCertificationRequests,
            CopyError::Storage(_) => ErrorCode::StorageError,
        }
    }
}

impl From<crate::store::StoreError> for CopyError {
    fn from(error: crate::store::StoreError) -> Self {
        CopyError::Storage(error.into())
    }
}

/// An owner asked `agency` to certify `record`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificationRequest {
    pub record: Digest,
    pub owner: OwnerId,
    pub agency: Code,
    pub requested_at_ms: i64,
}

/// The stored request (`codec`).
#[derive(Serialize, Deserialize)]
struct StoredRequest {
    record: [u8; 32],
    owner: String,
    agency: String,
    requested_at_ms: i64,
}

/// An upload in progress: bytes are hashed, compressed and stored as they arrive, like a deposit's.
pub struct Upload<'v> {
    vault: &'v Vault,
    owner: OwnerId,
    title: Title,
    head: Vec<u8>,
    writer: ContentWriter,
}

impl Upload<'_> {
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), UploadError> {
        let wanted = SNIFF_BYTES.saturating_sub(self.head.len()).min(bytes.len());
        self.head.extend_from_slice(&bytes[..wanted]);
        self.writer.write(bytes).map_err(|error| match error {
            crate::content::ContentError::TooLarge { .. } => UploadError::TooLarge,
            other => UploadError::Storage(other.into()),
        })
    }

    /// Recognises the scan, signs its record with the vault key and accepts it; durable on return.
    pub fn commit(self) -> Result<Accepted, UploadError> {
        let Upload { vault, owner, title, head, writer } = self;
        if writer.size_bytes() == 0 {
            return Err(UploadError::Empty);
        }
        let media_type = UPLOAD_MEDIA_TYPES
            .iter()
            .find(|(_, magic)| head.starts_with(magic))
            .map(|(name, _)| MediaType::parse(name).expect("the scan types are valid media types"));
        let staged = writer.finish().map_err(StorageError::from)?;
        let Some(media_type) = media_type else {
            staged.discard().map_err(StorageError::from)?;
            return Err(UploadError::NotAScan);
        };
        let now = now_unix_ms();
        let today: Date = vault.today(now);
        let code = self_upload_code();
        let record = Signed::sign(
            Record {
                owner,
                document_type: code.clone(),
                title,
                issuer_agency: code.clone(),
                issued_on: today,
                valid_from: today,
                valid_until: None,
                procedure: code.clone(),
                dossier: code,
                blake3: staged.blake3,
                sha256: staged.manifest.sha256,
                size_bytes: staged.manifest.size_bytes,
                media_type,
                supersedes: None,
                signed_at_ms: now,
            },
            &vault.key,
        );
        Ok(vault.commit_staged(&record, staged)?)
    }
}

impl Vault {
    /// Starts an upload of `owner`'s own scan, titled in their words.
    pub fn begin_upload(&self, owner: &OwnerId, title: Title) -> Result<Upload<'_>, UploadError> {
        let limit = UPLOAD_SIZE_BYTES_MAX.min(self.config.document_size_bytes_max);
        let writer = ContentWriter::begin(&self.store, &self.config.content, limit).map_err(StorageError::from)?;
        Ok(Upload { vault: self, owner: owner.clone(), title, head: Vec::with_capacity(SNIFF_BYTES), writer })
    }

    /// Uploads `owner`'s scan read from `content`.
    pub fn upload(&self, owner: &OwnerId, title: Title, content: impl std::io::Read) -> Result<Accepted, UploadError> {
        let mut upload = self.begin_upload(owner, title)?;
        self.read_content(content, |bytes| upload.write(bytes))?;
        upload.commit()
    }

    /// `owner` asks `agency` to certify their upload `record`. Asking again changes nothing.
    pub fn request_certification(
        &self,
        owner: &OwnerId,
        record: &Digest,
        agency: &Code,
    ) -> Result<CertificationRequest, CopyError> {
        let view = self.owned_upload(owner, record)?;
        if let super::Status::CertifiedCopy { agency: by, .. } = &view.status {
            return Err(CopyError::AlreadyCertified { record: *record, agency: by.clone() });
        }
        if !self.store.agency_has_certificates(agency)? {
            return Err(CopyError::UnknownAgency(agency.clone()));
        }
        if let Some(bytes) = self.store.certification_request(record, agency)? {
            return Ok(decode_request(&bytes)?);
        }
        if self.certification_requests(record)?.len() >= CERTIFICATION_REQUESTS_PER_RECORD_MAX {
            return Err(CopyError::TooManyRequests);
        }
        let request = CertificationRequest {
            record: *record,
            owner: owner.clone(),
            agency: agency.clone(),
            requested_at_ms: now_unix_ms(),
        };
        let stored = StoredRequest {
            record: record.0,
            owner: owner.as_str().to_owned(),
            agency: agency.as_str().to_owned(),
            requested_at_ms: request.requested_at_ms,
        };
        self.store.put_certification_request(record, agency, request.requested_at_ms, &codec::encode(&stored))?;
        self.store.sync()?;
        Ok(request)
    }

    /// The agencies an upload was sent to, in agency-code order.
    pub fn certification_requests(&self, record: &Digest) -> Result<Vec<CertificationRequest>, StorageError> {
        self.store.certification_requests(record).map(|bytes| decode_request(&bytes?)).collect()
    }

    /// The uploads `agency` was asked to certify and has not yet (nor has anyone), newest request first,
    /// with the record as read now.
    pub fn pending_certifications(
        &self,
        agency: &Code,
    ) -> Result<Vec<(CertificationRequest, RecordView)>, StorageError> {
        let mut pending = Vec::new();
        for record in self.store.agency_requests(agency) {
            let record = record?;
            let Some(view) = self.record(&record)? else { continue };
            if !matches!(view.status, super::Status::SelfUploaded) {
                continue;
            }
            let bytes = self.store.certification_request(&record, agency)?.ok_or_else(|| {
                StorageError::Corrupt(format!("request of {agency} for {record} indexed but missing"))
            })?;
            pending.push((decode_request(&bytes)?, view));
            if pending.len() == CERTIFICATION_REQUESTS_LISTED_MAX {
                break;
            }
        }
        Ok(pending)
    }

    /// Accepts an agency's certification of a self-uploaded record that its owner asked it to certify.
    pub fn certify_copy(&self, envelope: &[u8]) -> Result<Accepted, CopyError> {
        let certification = Signed::<CopyCertification>::from_envelope(envelope)?;
        let body = certification.body();
        let id = certification.id();
        if let Some((record, _)) = self.decode_statement::<Record>(self.store.record(&body.record)?)? {
            self.validate_signer::<CopyError>(id, certification.signer(), &body.agency, Some(&record.body().owner))?;
        }
        let sequenced = self.accept(|| {
            let (record, _) =
                self.decode_statement::<Record>(self.store.record(&body.record)?)?.ok_or(CopyError::NotFound)?;
            if !record.body().is_self_upload() {
                return Err(CopyError::NotAnUpload(body.record));
            }
            if self.store.certification_request(&body.record, &body.agency)?.is_none() {
                return Err(CopyError::NotRequested { record: body.record, agency: body.agency.clone() });
            }
            if let Some(existing) = self.store.copy_certification(&body.record)? {
                let earlier = Signed::<CopyCertification>::from_envelope(&existing.envelope)
                    .map_err(|e| StorageError::Corrupt(format!("stored copy certification: {e}")))?;
                if earlier.id() == id {
                    return Ok(Decision::Existing { id, sequence: existing.sequence });
                }
                return Err(CopyError::AlreadyCertified { record: body.record, agency: earlier.body().agency.clone() });
            }
            let accepted_at_ms = now_unix_ms();
            self.trust_check(&id, certification.signer(), &body.agency, accepted_at_ms)??;
            Ok(Decision::Accept(Acceptance {
                kind: CopyCertification::KIND,
                id,
                owner: Some(record.body().owner.clone()),
                accepted_at_ms,
                change: Change::CopyCertification { record: body.record, envelope: certification.to_envelope() },
                receipted: true,
            }))
        })?;
        Ok(sequenced.accepted()?)
    }

    /// `owner`'s self-uploaded record `record`, as read now.
    fn owned_upload(&self, owner: &OwnerId, record: &Digest) -> Result<RecordView, CopyError> {
        let view = match self.record(record)? {
            Some(view) if &view.record.body().owner == owner => view,
            _ => return Err(CopyError::NotFound),
        };
        if !view.record.body().is_self_upload() {
            return Err(CopyError::NotAnUpload(*record));
        }
        Ok(view)
    }
}

fn decode_request(bytes: &[u8]) -> Result<CertificationRequest, StorageError> {
    let corrupt = |e: String| StorageError::Corrupt(format!("certification request: {e}"));
    let stored: StoredRequest = codec::decode(bytes).map_err(|e| corrupt(e.to_string()))?;
    Ok(CertificationRequest {
        record: Digest(stored.record),
        owner: OwnerId::parse(&stored.owner).map_err(|e| corrupt(e.to_string()))?,
        agency: Code::parse("agency", &stored.agency).map_err(|e| corrupt(e.to_string()))?,
        requested_at_ms: stored.requested_at_ms,
    })
}
