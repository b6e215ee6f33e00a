//! The use cases: deposit, revoke and supersede records, certify issuer keys, read records and content.
//!
//! The vault decides trust (is this signer a certified, unrevoked key of this agency right now?),
//! assigns sequence numbers, signs receipts with its own key, and commits every accepted statement in
//! one atomic catalog batch followed by a durable group sync: when a call returns `Ok`, the statement,
//! its content, its indexes and its receipt survive any crash; before that, none of it is durable.
//!
//! Every acceptance goes through one path (`sequencer`): the next log index (shared by statements and
//! access events: one order of everything that happened), the log leaf, the receipt, one atomic commit,
//! the sync, and only then visibility. `transparency` signs checkpoints and gives proofs and tiles;
//! `access` keeps each person's access log. Storage is the store's business (`store`): the vault never
//! sees a key, a cursor's bytes or where content lives.

mod access;
mod checks;
mod completeness;
mod copies;
mod export;
mod keyring;
mod scrub;
mod sequencer;
mod shares;
mod signed;
mod standing;
mod stats;
mod transparency;
mod validation;
pub use signed::{DocumentDetails, SIGNED_DOCUMENT_SIZE_BYTES_MAX};
pub use stats::{LogFigures, ReuseDay};
pub use validation::VALIDATION_AGE_MS_MAX;
mod witnessing;

use crate::error_code::ErrorCode;
pub use access::{AccessAction, AccessEvent, AccessOutcome, AccessPage, CommittedAccess, Salt, ACCESS_EVENT_VERSION};
pub use checks::{Inclusion, RecordChecks};
pub use completeness::{ChainPage, CheckedCompleteness, Completeness, COMPLETENESS_CHECK_ENTRIES_MAX};
pub use copies::{
    CertificationRequest, CopyError, Upload, UploadError, CERTIFICATION_REQUESTS_PER_RECORD_MAX, UPLOAD_MEDIA_TYPES,
    UPLOAD_SIZE_BYTES_MAX,
};
pub use export::{
    AccessLogEvidence, Evidence, ExportError, ExportScope, ProvenEntry, Receipted, RecordEvidence, RetiredKeyEvidence,
};
pub use keyring::{
    first_key, key_history_files, prepare as prepare_next_key, Prepared, RetiredKey, RotateError, Rotation,
    NEXT_CERTIFICATE_FILE, NEXT_KEY_FILE, NEXT_PUBLIC_KEY_FILE, RETIRED_KEYS_DIRECTORY,
};
pub use scrub::{Finding, FindingKind, ScrubOptions, ScrubProgress, ScrubReport};
use sequencer::{Acceptance, Decision};
pub use shares::{Share, ShareError, ShareId, ShareState, SHARES_ACTIVE_PER_OWNER_MAX, SHARE_DAYS_MAX};
pub use transparency::{ConsistencyProof, InclusionProof, ProofQueryError, SignedCheckpoint};
pub use witnessing::{WitnessFailure, WitnessRound, Witnessed};

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::content::{ContentConfig, ContentError, ContentReader, ContentWriter, Manifest, StagedContent};
use crate::ids::{now_unix_ms, Code, Date, Digest, OwnerId};
use crate::keys::{self, KeyFileError};
use crate::statement::{
    CertificateRevocation, CopyCertification, DecodeError, KeyCertificate, PublicKey, Receipt, Record,
    RecordRevocation, SecretKey, Signed, StatementBody, VaultKeyCertificate,
};
use crate::store::{self, Change, Cursor, EmbeddedConfig, Engines, RecordState, StatementEntry, Store, StoreError};

/// Default largest document accepted: 256 MiB.
pub const DOCUMENT_SIZE_BYTES_MAX_DEFAULT: u64 = 256 * 1024 * 1024;
/// Default and largest page of a listing.
pub const PAGE_SIZE_DEFAULT: usize = 50;
pub const PAGE_SIZE_MAX: usize = 1000;
/// Vietnam's time zone (UTC+7, no daylight saving), in which document dates are read.
pub const UTC_OFFSET_MINUTES_DEFAULT: i16 = 7 * 60;
/// The vault's receipt key inside the data directory.
pub const VAULT_KEY_FILE: &str = "vault-key.pem";
pub const VAULT_PUBLIC_KEY_FILE: &str = "vault-key.pub.pem";
/// What the key of the seals stored with accepted statements is derived from the vault key under
/// (`statement::VerifiedEnvelopes`): a holder of the vault key could sign receipts anyway, and after a
/// rotation the seals made before no longer match, so those statements are verified as before.
const STATEMENT_SEAL_KEY_CONTEXT: &str = "kho 2026-11 stored statement seal v1";
/// A trust anchor's certificate of the vault key (`kho certify-vault`), if the operator installed one.
pub const VAULT_CERTIFICATE_FILE: &str = "vault-key.kho-cert";
/// The newest signed checkpoint, kept outside the store so that a store which lost entries (restored
/// from an old copy, a damaged disk) is noticed at open instead of served.
pub const KEPT_CHECKPOINT_FILE: &str = "log-checkpoint.note";
/// The store's folder inside the data folder.
pub const STORE_DIRECTORY: &str = "store";

#[derive(Debug, Clone)]
pub struct VaultConfig {
    pub data_dir: PathBuf,
    /// Keys whose certificates of issuer keys the vault accepts.
    pub trust_anchors: Vec<PublicKey>,
    pub document_size_bytes_max: u64,
    pub content: ContentConfig,
    /// The embedded engine's settings (cache size, and the recovery flag).
    pub store: EmbeddedConfig,
    /// The zone in which "today" is computed for validity windows.
    pub utc_offset_minutes: i16,
    /// The transparency log's origin (first line of its checkpoints); `None` derives one from the
    /// vault key, `kho/<first 16 hex digits of its fingerprint>`.
    pub log_origin: Option<String>,
    /// The witnesses asked to cosign checkpoints, and the quorum.
    pub witnesses: crate::witness::WitnessPolicy,
    /// The X.509 roots statements may be signed under, and the revocation evidence files.
    pub x509: X509Trust,
}

/// The X.509 side of trust: configured roots (with their agency mapping) and where the CRLs and OCSP
/// responses are (read at each validation, so a CA's new CRL dropped there counts at once).
#[derive(Debug, Clone, Default)]
pub struct X509Trust {
    pub store: crate::x509::TrustStore,
    pub evidence: Vec<PathBuf>,
}

impl VaultConfig {
    pub fn new(data_dir: impl Into<PathBuf>, trust_anchors: Vec<PublicKey>) -> VaultConfig {
        VaultConfig {
            data_dir: data_dir.into(),
            trust_anchors,
            document_size_bytes_max: DOCUMENT_SIZE_BYTES_MAX_DEFAULT,
            content: ContentConfig::default(),
            store: EmbeddedConfig::default(),
            utc_offset_minutes: UTC_OFFSET_MINUTES_DEFAULT,
            log_origin: None,
            witnesses: crate::witness::WitnessPolicy::default(),
            x509: X509Trust::default(),
        }
    }
}

/// Failures of the storage underneath, as opposed to rejected input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    #[error(transparent)]
    Store(StoreError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl From<StoreError> for StorageError {
    fn from(error: StoreError) -> Self {
        match error {
            // Damage the store found stays an integrity failure, whichever layer noticed it.
            StoreError::Corrupt(reason) => StorageError::Corrupt(reason),
            other => StorageError::Store(other),
        }
    }
}

impl From<ContentError> for StorageError {
    fn from(error: ContentError) -> Self {
        match error {
            ContentError::Store(error) => error.into(),
            other => StorageError::Corrupt(other.to_string()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Key(#[from] KeyFileError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(
        "log origin {0:?} is not usable: it must be 1 to {max} characters with no spaces, control characters or '+' \
         (for example \"kho.example.gov.vn/log\")",
        max = crate::log::checkpoint::ORIGIN_LENGTH_MAX
    )]
    BadLogOrigin(String),
    #[error(
        "the record of this vault's retired keys is damaged at {path}: {reason}. Nothing was changed; restore \
         the data folder's retired-keys from a backup"
    )]
    KeyHistory { path: PathBuf, reason: String },
    #[error("the vault key certificate {path} cannot be used: {reason}")]
    VaultCertificate { path: PathBuf, reason: String },
    #[error(
        "the store's log has {found} entries, but this vault signed a checkpoint of {kept} entries (kept in \
         {path}): log entries {found}..{last} are missing, so the store lost acknowledged data. Nothing was \
         changed. Restore the store from a backup at least as new as that checkpoint (or, if only the catalog \
         was damaged, start with `kho serve --recover` to rebuild it from its journal); do not delete {path}",
        last = kept - 1
    )]
    LogBehindCheckpoint { path: PathBuf, kept: u64, found: u64 },
    #[error(
        "the store's log does not match the checkpoint of {size} entries this vault signed (kept in {path}): \
         {reason}. The store is not the one that checkpoint was signed over. Nothing was changed; restore the \
         store from a backup"
    )]
    LogContradictsCheckpoint { path: PathBuf, size: u64, reason: String },
    #[error(
        "the checkpoint kept in {path} cannot be used: {reason}. Nothing was changed; it is this vault's newest \
         signed checkpoint, needed to check the store: restore it from a backup of the data folder"
    )]
    KeptCheckpointUnusable { path: PathBuf, reason: String },
}

/// The log origin of a vault whose configuration names none: `kho/` and the first 16 hex digits of its
/// key's fingerprint.
pub fn default_log_origin(key: &PublicKey) -> String {
    format!("kho/{}", &key.fingerprint().to_hex()[..16])
}

/// Reads the vault key certificate from the data directory, if present, and checks it: a trust anchor
/// signed it, for this vault key and this log origin. A certificate that does not fit refuses the open,
/// so a vault never hands out a certificate that would make its own receipts fail to verify.
fn load_vault_certificate(
    config: &VaultConfig,
    key: &PublicKey,
    origin: &str,
) -> Result<Option<Signed<VaultKeyCertificate>>, OpenError> {
    load_certificate_file(config, &config.data_dir.join(VAULT_CERTIFICATE_FILE), key, origin)
}

/// Reads and checks a vault key certificate file for `key` (see `load_vault_certificate`), if present.
fn load_certificate_file(
    config: &VaultConfig,
    path: &Path,
    key: &PublicKey,
    origin: &str,
) -> Result<Option<Signed<VaultKeyCertificate>>, OpenError> {
    let path = path.to_owned();
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(OpenError::VaultCertificate { path, reason: error.to_string() }),
    };
    let refuse = |reason: String| OpenError::VaultCertificate { path: path.clone(), reason };
    let certificate = Signed::<VaultKeyCertificate>::from_envelope(&bytes).map_err(|e| refuse(e.to_string()))?;
    if !config.trust_anchors.contains(certificate.signer()) {
        return Err(refuse("it is not signed by a configured trust anchor".into()));
    }
    if &certificate.body().subject != key {
        return Err(refuse("it certifies another key than this vault's".into()));
    }
    if certificate.body().origin != origin {
        return Err(refuse(format!("it names log origin {:?}; this vault's is {origin:?}", certificate.body().origin)));
    }
    Ok(Some(certificate))
}

/// Checks the store's log against the newest checkpoint kept outside it: the log must have at least its
/// entries and the same root at its size.
fn check_kept_checkpoint(store: &Store, path: &Path, origin: &str, keys: &[PublicKey]) -> Result<(), OpenError> {
    let contradicts =
        |size, reason: String| OpenError::LogContradictsCheckpoint { path: path.to_owned(), size, reason };
    let unusable = |reason: String| OpenError::KeptCheckpointUnusable { path: path.to_owned(), reason };
    let note = crate::files::read_if_exists(path).map_err(|error| unusable(format!("cannot read it: {error}")))?;
    let Some(note) = note else {
        return Ok(());
    };
    let note = String::from_utf8(note).map_err(|_| unusable("it is not text".into()))?;
    let kept = crate::log::checkpoint::open_any(&note, origin, keys)
        .map_err(|error| unusable(format!("it does not verify under this vault's keys and origin: {error}")))?;
    let found = store.durable_size();
    if found < kept.size {
        return Err(OpenError::LogBehindCheckpoint { path: path.to_owned(), kept: kept.size, found });
    }
    let root = crate::log::root(kept.size, store).map_err(|error| contradicts(kept.size, error.to_string()))?;
    if root != kept.root {
        return Err(contradicts(
            kept.size,
            format!(
                "the store's root at that size is {}, the checkpoint's {}",
                hex::encode(root),
                hex::encode(kept.root)
            ),
        ));
    }
    Ok(())
}

/// Why a signer is not trusted for an agency at a moment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    #[error("agency {agency} has no certified keys")]
    UnknownAgency { agency: Code },
    #[error("key {fingerprint} is not certified for agency {agency}")]
    KeyNotCertified { agency: Code, fingerprint: Digest },
    #[error("key {fingerprint} belongs to agency {certified_for}, not {claimed}")]
    KeyOfAnotherAgency { claimed: Code, certified_for: Code, fingerprint: Digest },
    #[error("key {fingerprint} is not valid before {valid_from}")]
    KeyNotYetValid { fingerprint: Digest, valid_from: String },
    #[error("key {fingerprint} expired at {valid_until}")]
    KeyExpired { fingerprint: Digest, valid_until: String },
    #[error("key {fingerprint} was revoked at {revoked_at}")]
    KeyRevoked { fingerprint: Digest, revoked_at: String },
    #[error("signer {fingerprint} is not a configured trust anchor")]
    UnknownAnchor { fingerprint: Digest },
    #[error(
        "key {fingerprint} is not this vault's: only the vault signs its owners' uploads (agency {})",
        crate::statement::SELF_UPLOAD_CODE
    )]
    SelfUploadNotByVault { fingerprint: Digest },
    #[error("the X.509 signer is not trusted: {0}")]
    X509(crate::x509::PathError),
    #[error("the signer's certificate is for agency {found:?} under its root's mapping, not {claimed}")]
    X509OtherAgency { claimed: Code, found: Option<String> },
    #[error("the revocation evidence cannot be read: {0}")]
    X509Evidence(String),
    #[error("no validation of this X.509 signature was recorded before it was accepted")]
    X509NotValidated,
}

impl TrustError {
    pub fn code(&self) -> ErrorCode {
        match self {
            TrustError::UnknownAgency { .. } => ErrorCode::UnknownAgency,
            TrustError::KeyNotCertified { .. } => ErrorCode::KeyNotCertified,
            TrustError::KeyOfAnotherAgency { .. } => ErrorCode::KeyOfAnotherAgency,
            TrustError::KeyNotYetValid { .. } => ErrorCode::KeyNotYetValid,
            TrustError::KeyExpired { .. } => ErrorCode::KeyExpired,
            TrustError::KeyRevoked { .. } => ErrorCode::KeyRevoked,
            TrustError::UnknownAnchor { .. } => ErrorCode::UnknownTrustAnchor,
            TrustError::SelfUploadNotByVault { .. } => ErrorCode::SelfUploadNotByVault,
            TrustError::X509(error) => match error {
                crate::x509::PathError::NoPath { .. } => ErrorCode::X509NoPath,
                crate::x509::PathError::BadSignature { .. } => ErrorCode::X509BadSignature,
                crate::x509::PathError::Expired { .. } => ErrorCode::X509Expired,
                crate::x509::PathError::NotYetValid { .. } => ErrorCode::X509NotYetValid,
                crate::x509::PathError::Revoked { .. } => ErrorCode::X509Revoked,
                crate::x509::PathError::NoRevocationInfo { .. } => ErrorCode::X509NoRevocationInfo,
                _ => ErrorCode::X509InvalidCertificate,
            },
            TrustError::X509OtherAgency { .. } => ErrorCode::X509OtherAgency,
            TrustError::X509Evidence(_) => ErrorCode::X509EvidenceUnreadable,
            TrustError::X509NotValidated => ErrorCode::X509NotValidated,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DepositError {
    #[error("invalid record: {0}")]
    Statement(#[from] DecodeError),
    #[error("untrusted signer: {0}")]
    Trust(#[from] TrustError),
    #[error("the record declares {declared_bytes} bytes, more than the limit of {limit_bytes}")]
    DocumentTooLarge { declared_bytes: u64, limit_bytes: u64 },
    #[error("the content is longer than the {declared_bytes} bytes the record declares")]
    ContentTooLong { declared_bytes: u64 },
    #[error("the content ended after {received_bytes} of the {declared_bytes} bytes the record declares")]
    ContentTruncated { declared_bytes: u64, received_bytes: u64 },
    #[error("the content's BLAKE3 is {actual}, but the record says {declared}")]
    Blake3Mismatch { declared: Digest, actual: Digest },
    #[error("the content's SHA-256 is {actual}, but the record says {declared}")]
    Sha256Mismatch { declared: Digest, actual: Digest },
    #[error("the superseded record {0} does not exist")]
    SupersedesUnknown(Digest),
    #[error("the superseded record {record} belongs to agency {agency}, not the signer's")]
    SupersedesOtherAgency { record: Digest, agency: Code },
    #[error("the superseded record {record} belongs to another owner")]
    SupersedesOtherOwner { record: Digest },
    #[error("the superseded record {record} is revoked")]
    SupersedesRevoked { record: Digest },
    #[error("the record {record} is already superseded by {by}")]
    AlreadySuperseded { record: Digest, by: Digest },
    #[error("reading the content failed: {0}")]
    ContentRead(std::io::Error),
    #[error("the document's own signature is not valid: {message}")]
    EmbeddedSignature { code: ErrorCode, message: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl DepositError {
    /// A stable machine-readable code for this case.
    pub fn code(&self) -> ErrorCode {
        match self {
            DepositError::Statement(DecodeError::BadSignature) => ErrorCode::BadSignature,
            DepositError::Statement(_) => ErrorCode::MalformedRecord,
            DepositError::Trust(error) => error.code(),
            DepositError::EmbeddedSignature { code, .. } => *code,
            DepositError::DocumentTooLarge { .. } => ErrorCode::DocumentTooLarge,
            DepositError::ContentTooLong { .. } => ErrorCode::ContentTooLong,
            DepositError::ContentTruncated { .. } => ErrorCode::ContentTruncated,
            DepositError::Blake3Mismatch { .. } => ErrorCode::ContentHashMismatch,
            DepositError::Sha256Mismatch { .. } => ErrorCode::ContentSha256Mismatch,
            DepositError::SupersedesUnknown(_) => ErrorCode::SupersedesUnknown,
            DepositError::SupersedesOtherAgency { .. } => ErrorCode::SupersedesOtherAgency,
            DepositError::SupersedesOtherOwner { .. } => ErrorCode::SupersedesOtherOwner,
            DepositError::SupersedesRevoked { .. } => ErrorCode::SupersedesRevoked,
            DepositError::AlreadySuperseded { .. } => ErrorCode::AlreadySuperseded,
            DepositError::ContentRead(_) => ErrorCode::ContentReadFailed,
            DepositError::Storage(_) => ErrorCode::StorageError,
        }
    }
}

impl From<StoreError> for DepositError {
    fn from(error: StoreError) -> Self {
        DepositError::Storage(error.into())
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RevokeError {
    #[error("invalid revocation: {0}")]
    Statement(#[from] DecodeError),
    #[error("untrusted signer: {0}")]
    Trust(#[from] TrustError),
    #[error("record {0} does not exist")]
    UnknownRecord(Digest),
    #[error("record {record} was issued by {record_agency}; agency {revoking_agency} cannot revoke it")]
    NotIssuersRecord { record: Digest, record_agency: Code, revoking_agency: Code },
    #[error("record {record} is already revoked")]
    AlreadyRevoked { record: Digest },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl RevokeError {
    pub fn code(&self) -> ErrorCode {
        match self {
            RevokeError::Statement(DecodeError::BadSignature) => ErrorCode::BadSignature,
            RevokeError::Statement(_) => ErrorCode::MalformedRevocation,
            RevokeError::Trust(error) => error.code(),
            RevokeError::UnknownRecord(_) => ErrorCode::RecordNotFound,
            RevokeError::NotIssuersRecord { .. } => ErrorCode::NotIssuersRecord,
            RevokeError::AlreadyRevoked { .. } => ErrorCode::AlreadyRevoked,
            RevokeError::Storage(_) => ErrorCode::StorageError,
        }
    }
}

impl From<StoreError> for RevokeError {
    fn from(error: StoreError) -> Self {
        RevokeError::Storage(error.into())
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateError {
    #[error("invalid certificate statement: {0}")]
    Statement(#[from] DecodeError),
    #[error(transparent)]
    Trust(#[from] TrustError),
    #[error("certificate {0} does not exist")]
    UnknownCertificate(Digest),
    #[error("certificate {0} is already revoked")]
    AlreadyRevoked(Digest),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl CertificateError {
    pub fn code(&self) -> ErrorCode {
        match self {
            CertificateError::Statement(DecodeError::BadSignature) => ErrorCode::BadSignature,
            CertificateError::Statement(_) => ErrorCode::MalformedCertificate,
            CertificateError::Trust(error) => error.code(),
            CertificateError::UnknownCertificate(_) => ErrorCode::CertificateNotFound,
            CertificateError::AlreadyRevoked(_) => ErrorCode::AlreadyRevoked,
            CertificateError::Storage(_) => ErrorCode::StorageError,
        }
    }
}

impl From<StoreError> for CertificateError {
    fn from(error: StoreError) -> Self {
        CertificateError::Storage(error.into())
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    #[error("page size {requested} is outside 1..={PAGE_SIZE_MAX}")]
    InvalidPageSize { requested: usize },
    #[error("cursor {0:?} is not a cursor this vault returned")]
    InvalidCursor(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<StoreError> for QueryError {
    fn from(error: StoreError) -> Self {
        QueryError::Storage(error.into())
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    #[error(transparent)]
    RangeNotSatisfiable(ContentError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<StoreError> for ReadError {
    fn from(error: StoreError) -> Self {
        ReadError::Storage(error.into())
    }
}

/// A record's current status, computed when it is read. (Its JSON shape is in `json::status_json`.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Valid,
    NotYetValid,
    Expired,
    /// With the signed revocation and Kho's receipt for it, verbatim, so that a reader can check both.
    Revoked {
        revocation: Digest,
        reason: String,
        revoked_at_ms: i64,
        envelope: Vec<u8>,
        receipt_envelope: Vec<u8>,
    },
    Superseded {
        by: Digest,
    },
    /// Uploaded by its owner; not legally valid.
    SelfUploaded,
    /// An upload an agency certified as a copy of an original, with the signed certification and Kho's
    /// receipt for it, verbatim.
    CertifiedCopy {
        certification: Digest,
        agency: Code,
        officer: String,
        original_type: Code,
        original: String,
        certified_at_ms: i64,
        envelope: Vec<u8>,
        receipt_envelope: Vec<u8>,
    },
}

/// The status names a listing can filter by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusKind {
    Valid,
    NotYetValid,
    Expired,
    Revoked,
    Superseded,
    SelfUploaded,
    CertifiedCopy,
}

impl StatusKind {
    /// The name a listing filters by (and the pages' badge class).
    pub fn as_str(self) -> &'static str {
        match self {
            StatusKind::Valid => "valid",
            StatusKind::NotYetValid => "not_yet_valid",
            StatusKind::Expired => "expired",
            StatusKind::Revoked => "revoked",
            StatusKind::Superseded => "superseded",
            StatusKind::SelfUploaded => "self_uploaded",
            StatusKind::CertifiedCopy => "certified_copy",
        }
    }
}

impl Status {
    pub fn kind(&self) -> StatusKind {
        match self {
            Status::Valid => StatusKind::Valid,
            Status::NotYetValid => StatusKind::NotYetValid,
            Status::Expired => StatusKind::Expired,
            Status::Revoked { .. } => StatusKind::Revoked,
            Status::Superseded { .. } => StatusKind::Superseded,
            Status::SelfUploaded => StatusKind::SelfUploaded,
            Status::CertifiedCopy { .. } => StatusKind::CertifiedCopy,
        }
    }
}

/// A record as read from the vault: the verified statement, Kho's receipt, and its current status.
#[derive(Debug, Clone)]
pub struct RecordView {
    pub record: Signed<Record>,
    pub receipt: Signed<Receipt>,
    pub status: Status,
    /// For a record trusted through X.509 (signed under it, or a signed document deposited as it is):
    /// the vault's validation of that signature, which says who signed under which root and when.
    pub signature: Option<Signed<crate::statement::SignatureValidation>>,
}

impl RecordView {
    pub fn id(&self) -> Digest {
        self.record.id()
    }
}

/// The result of an accepted statement.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub id: Digest,
    pub receipt: Signed<Receipt>,
    /// False when the same statement had been accepted before; the earlier receipt is returned.
    pub newly_accepted: bool,
}

/// An issuer key certificate as stored, with its revocation if any.
#[derive(Debug, Clone)]
pub struct CertificateView {
    pub certificate: Signed<KeyCertificate>,
    pub receipt: Signed<Receipt>,
    pub revocation: Option<(Signed<CertificateRevocation>, Signed<Receipt>)>,
}

/// Filters of an owner listing; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub document_type: Option<Code>,
    pub issuer_agency: Option<Code>,
    pub status: Option<StatusKind>,
    /// Issued on or after this day.
    pub issued_from: Option<Date>,
    /// Issued on or before this day.
    pub issued_until: Option<Date>,
    /// Words the title contains, compared in lower case.
    pub title_contains: Option<String>,
}

impl ListFilter {
    fn matches(&self, view: &RecordView) -> bool {
        let body = view.record.body();
        self.document_type.as_ref().is_none_or(|t| &body.document_type == t)
            && self.issuer_agency.as_ref().is_none_or(|a| &body.issuer_agency == a)
            && self.status.is_none_or(|s| view.status.kind() == s)
            && self.issued_from.is_none_or(|from| body.issued_on >= from)
            && self.issued_until.is_none_or(|until| body.issued_on <= until)
            && self
                .title_contains
                .as_ref()
                .is_none_or(|words| body.title.as_str().to_lowercase().contains(&words.to_lowercase()))
    }
}

#[derive(Debug, Clone)]
pub struct Page {
    pub records: Vec<RecordView>,
    /// Pass back to get the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// The vault on one node.
pub struct Vault {
    store: Store,
    key: SecretKey,
    /// The keys it replaced, oldest first (`keyring`).
    retired: Vec<keyring::RetiredKey>,
    config: VaultConfig,
    /// Serializes the short commit step (sequence assignment, checks against the catalog, batch).
    /// Content streaming and the durable sync run outside it.
    commit_lock: Mutex<()>,
    /// One checkpoint signed at a time.
    checkpoint_lock: Mutex<()>,
    origin: String,
    /// The trust anchor's certificate of the vault key, checked at open.
    certificate: Option<Signed<VaultKeyCertificate>>,
    /// What each witness last cosigned, as learned; held while witnesses are asked (one round at a time).
    witness_sizes: Mutex<witnessing::WitnessSizes>,
    /// The reuse figures, read from the log so far.
    reuse: Mutex<stats::ReuseTally>,
    /// Stored statements whose signatures verified already (read paths decode the same ones often).
    verified: crate::statement::VerifiedEnvelopes,
    /// Ed25519 keys' certificates as the trust check last read them.
    standings: standing::KeyStandings,
}

impl Vault {
    /// Opens (or creates) the vault in `config.data_dir` on the embedded engine, creating its receipt key
    /// on first start; the store sets aside whatever crashed uploads left behind.
    pub fn open(config: VaultConfig) -> Result<Vault, OpenError> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).map_err(|source| OpenError::DataDir { path: dir.clone(), source })?;
        let engines = store::embedded::open(&dir.join(STORE_DIRECTORY), &config.store).map_err(StorageError::from)?;
        Vault::open_on(config, engines)
    }

    /// Opens the vault on given engines (the memory engine in tests, a fault injector around any engine).
    /// The receipt key still lives in `config.data_dir`.
    pub fn open_on(config: VaultConfig, engines: Engines) -> Result<Vault, OpenError> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).map_err(|source| OpenError::DataDir { path: dir.clone(), source })?;
        let retired = keyring::load(dir)?;
        keyring::finish_interrupted(dir, &retired)?;
        let key = load_or_create_key(dir)?;
        let store = Store::new(engines).map_err(StorageError::from)?;
        // The origin stays the first key's across rotations.
        let origin = keyring::origin(&config, retired.first().map_or(&key.public_key(), |first| &first.key))?;
        keyring::check_chain(dir, &retired, &key.public_key(), &origin)?;
        let certificate = load_vault_certificate(&config, &key.public_key(), &origin)?;
        let own_keys: Vec<PublicKey> =
            std::iter::once(key.public_key()).chain(retired.iter().map(|r| r.key.clone())).collect();
        check_kept_checkpoint(&store, &dir.join(KEPT_CHECKPOINT_FILE), &origin, &own_keys)?;
        Ok(Vault {
            store,
            retired,
            config,
            commit_lock: Mutex::new(()),
            checkpoint_lock: Mutex::new(()),
            origin,
            certificate,
            witness_sizes: Mutex::new(Default::default()),
            reuse: Mutex::new(Default::default()),
            verified: crate::statement::VerifiedEnvelopes::sealing(
                crate::statement::VERIFIED_ENVELOPES_REMEMBERED,
                key.derive_key(STATEMENT_SEAL_KEY_CONTEXT),
            ),
            standings: Default::default(),
            key,
        })
    }

    /// The trust anchor's certificate of the vault key, if one is installed.
    pub fn vault_certificate(&self) -> Option<&Signed<VaultKeyCertificate>> {
        self.certificate.as_ref()
    }

    /// What opening the store found and did (batches restored, bytes quarantined).
    pub fn open_report(&self) -> &store::OpenReport {
        self.store.open_report()
    }

    pub fn config(&self) -> &VaultConfig {
        &self.config
    }

    /// The public key that verifies this vault's receipts.
    /// A key for `context` derived from the vault key: keyed hashes at the edges (forms) without a key
    /// file of their own. Each context gives an independent key; the vault key itself never leaves.
    pub fn derived_key(&self, context: &str) -> [u8; 32] {
        self.key.derive_key(context)
    }

    pub fn public_key(&self) -> PublicKey {
        self.key.public_key()
    }

    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    /// A digest of everything stored (see `Store::state_digest`): equal digests, equal contents.
    pub fn state_digest(&self) -> Result<[u8; 32], StorageError> {
        Ok(self.store.state_digest()?)
    }

    /// Sets the observer of durable syncs (group-commit latency and size, for metrics).
    pub fn observe_syncs(&self, observer: store::SyncObserver) {
        self.store.observe_syncs(observer);
    }

    /// Bytes the store occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64, StorageError> {
        Ok(self.store.size_on_disk()?)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.commit_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn today(&self, now_ms: i64) -> Date {
        Date::at(now_ms, self.config.utc_offset_minutes)
    }

    fn load_receipt(&self, sequence: u64) -> Result<Signed<Receipt>, StorageError> {
        let bytes = self
            .store
            .receipt(sequence)?
            .ok_or_else(|| StorageError::Corrupt(format!("receipt {sequence} is missing")))?;
        Signed::from_envelope_remembered(&bytes, &self.verified)
            .map_err(|e| StorageError::Corrupt(format!("receipt {sequence}: {e}")))
    }

    /// A stored statement, its signature verified (or remembered as verified, or sealed by this vault
    /// when it verified it).
    fn decode_statement<T: StatementBody>(
        &self,
        entry: Option<StatementEntry>,
    ) -> Result<Option<(Signed<T>, u64)>, StorageError> {
        let Some(entry) = entry else {
            return Ok(None);
        };
        let statement = Signed::from_envelope_sealed(&entry.envelope, entry.seal.as_ref(), &self.verified)
            .map_err(|e| StorageError::Corrupt(format!("stored {}: {e}", T::NAME)))?;
        Ok(Some((statement, entry.sequence)))
    }

    // ----- trust -----

    fn anchor_check(&self, signer: &PublicKey) -> Result<(), TrustError> {
        if self.config.trust_anchors.contains(signer) {
            Ok(())
        } else {
            Err(TrustError::UnknownAnchor { fingerprint: signer.fingerprint() })
        }
    }

    /// Checks that `signer` of `statement` holds a certificate for `agency`, valid and unrevoked at
    /// `at_ms`: a Kho key certificate for an Ed25519 key, or, for an X.509 signer, the validation the
    /// vault recorded just before (`validation`).
    fn trust_check(
        &self,
        statement: &Digest,
        signer: &PublicKey,
        agency: &Code,
        at_ms: i64,
    ) -> Result<Result<(), TrustError>, StorageError> {
        if let PublicKey::X509(_) = signer {
            return self.x509_trust(statement, agency, at_ms);
        }
        if self.is_own_key(signer) && agency.as_str() != crate::statement::SELF_UPLOAD_CODE {
            // A signed document deposited as it is: the vault's record of it counts for the agency only
            // with the validation of the document's own signature the vault logged just before.
            return self.x509_trust(statement, agency, at_ms);
        }
        if agency.as_str() == crate::statement::SELF_UPLOAD_CODE {
            // Owners' uploads: signed by this vault alone, for the reserved code alone.
            return Ok(if self.is_own_key(signer) {
                Ok(())
            } else {
                Err(TrustError::SelfUploadNotByVault { fingerprint: signer.fingerprint() })
            });
        }
        let fingerprint = signer.fingerprint();
        let mut other_agency = None;
        let mut best_failure: Option<TrustError> = None;
        for standing in self.key_standing(&fingerprint, signer)?.iter() {
            if &standing.agency != agency {
                other_agency = Some(standing.agency.clone());
                continue;
            }
            // Rank the reasons so the most telling one is reported: revoked > not yet valid > expired.
            let failure = standing.revoked_at_ms.filter(|revoked_at| *revoked_at <= at_ms).map(|revoked_at| {
                TrustError::KeyRevoked { fingerprint, revoked_at: crate::ids::format_unix_ms(revoked_at) }
            });
            let failure = failure.or_else(|| {
                if at_ms < standing.valid_from_ms {
                    Some(TrustError::KeyNotYetValid {
                        fingerprint,
                        valid_from: crate::ids::format_unix_ms(standing.valid_from_ms),
                    })
                } else if at_ms > standing.valid_until_ms {
                    Some(TrustError::KeyExpired {
                        fingerprint,
                        valid_until: crate::ids::format_unix_ms(standing.valid_until_ms),
                    })
                } else {
                    None
                }
            });
            match failure {
                None => return Ok(Ok(())),
                Some(failure) => {
                    let rank = |e: &TrustError| match e {
                        TrustError::KeyRevoked { .. } => 3,
                        TrustError::KeyNotYetValid { .. } => 2,
                        _ => 1,
                    };
                    if best_failure.as_ref().is_none_or(|best| rank(&failure) > rank(best)) {
                        best_failure = Some(failure);
                    }
                }
            }
        }
        if let Some(failure) = best_failure {
            return Ok(Err(failure));
        }
        if let Some(certified_for) = other_agency {
            return Ok(Err(TrustError::KeyOfAnotherAgency { claimed: agency.clone(), certified_for, fingerprint }));
        }
        let agency_known = self.store.agency_has_certificates(agency)?;
        Ok(Err(if agency_known {
            TrustError::KeyNotCertified { agency: agency.clone(), fingerprint }
        } else {
            TrustError::UnknownAgency { agency: agency.clone() }
        }))
    }

    /// The certificates of the Ed25519 key `signer` (whose fingerprint is `fingerprint`), durable ones
    /// only, as kept from the last check or read from the catalog (`standing`).
    fn key_standing(&self, fingerprint: &Digest, signer: &PublicKey) -> Result<standing::KeyStanding, StorageError> {
        let generation = self.standings.generation();
        if let Some(kept) = self.standings.get(fingerprint, generation) {
            return Ok(kept);
        }
        let mut standings = Vec::new();
        // Kept only if every statement it is read from is durable: one that is not yet may become so
        // without any change being accepted, and must then count.
        let mut settled = true;
        for id in self.store.certificates_of_key(fingerprint) {
            let id = id?;
            let entry = self
                .store
                .certificate(&id)?
                .ok_or_else(|| StorageError::Corrupt(format!("certificate {id} indexed but missing")))?;
            // One not yet durable does not count yet.
            let Some((certificate, _)) = self.decode_statement::<KeyCertificate>(self.visible(Some(entry)))? else {
                settled = false;
                continue;
            };
            let certificate = certificate.body();
            if &certificate.subject != signer {
                return Err(StorageError::Corrupt(format!("certificate {id} indexed under the wrong key")));
            }
            let revoked_at_ms = match self.store.certificate_revocation(&id)? {
                Some(revocation) if !self.store.is_visible(revocation.sequence) => {
                    settled = false;
                    None
                }
                revocation => match self.decode_statement::<CertificateRevocation>(revocation)? {
                    Some((_, sequence)) => Some(self.load_receipt(sequence)?.body().accepted_at_ms),
                    None => None,
                },
            };
            standings.push(standing::Standing {
                agency: certificate.agency.clone(),
                valid_from_ms: certificate.valid_from_ms,
                valid_until_ms: certificate.valid_until_ms,
                revoked_at_ms,
            });
        }
        let standings: standing::KeyStanding = standings.into();
        if settled {
            self.standings.keep(*fingerprint, generation, Arc::clone(&standings));
        }
        Ok(standings)
    }

    // ----- certificates -----

    /// Accepts an issuer key certificate signed by a configured trust anchor.
    pub fn add_certificate(&self, envelope: &[u8]) -> Result<Accepted, CertificateError> {
        let certificate = Signed::<KeyCertificate>::from_envelope(envelope)?;
        self.anchor_check(certificate.signer())?;
        let id = certificate.id();
        let sequenced = self.accept(|| {
            if let Some(entry) = self.store.certificate(&id)? {
                return Ok(Decision::Existing { id, sequence: entry.sequence });
            }
            Ok::<_, CertificateError>(Decision::Accept(Acceptance {
                kind: KeyCertificate::KIND,
                id,
                owner: None,
                accepted_at_ms: now_unix_ms(),
                change: Change::Certificate {
                    id,
                    agency: certificate.body().agency.clone(),
                    key_fingerprint: certificate.body().subject.fingerprint(),
                    envelope: certificate.to_envelope(),
                },
                receipted: true,
            }))
        })?;
        Ok(sequenced.accepted()?)
    }

    /// Accepts a trust anchor's revocation of a certificate; the key stops counting from now on.
    pub fn revoke_certificate(&self, envelope: &[u8]) -> Result<Accepted, CertificateError> {
        let revocation = Signed::<CertificateRevocation>::from_envelope(envelope)?;
        self.anchor_check(revocation.signer())?;
        let id = revocation.id();
        let target = revocation.body().certificate;
        let sequenced = self.accept(|| {
            if self.store.certificate(&target)?.is_none() {
                return Err(CertificateError::UnknownCertificate(target));
            }
            if let Some((existing, sequence)) =
                self.decode_statement::<CertificateRevocation>(self.store.certificate_revocation(&target)?)?
            {
                if existing.id() == id {
                    return Ok(Decision::Existing { id, sequence });
                }
                return Err(CertificateError::AlreadyRevoked(target));
            }
            Ok(Decision::Accept(Acceptance {
                kind: CertificateRevocation::KIND,
                id,
                owner: None,
                accepted_at_ms: now_unix_ms(),
                change: Change::CertificateRevocation { certificate: target, envelope: revocation.to_envelope() },
                receipted: true,
            }))
        })?;
        Ok(sequenced.accepted()?)
    }

    pub fn certificate(&self, id: &Digest) -> Result<Option<CertificateView>, StorageError> {
        let entry = self.visible(self.store.certificate(id)?);
        let Some((certificate, sequence)) = self.decode_statement::<KeyCertificate>(entry)? else {
            return Ok(None);
        };
        let revocation = self.visible(self.store.certificate_revocation(id)?);
        let revocation = match self.decode_statement::<CertificateRevocation>(revocation)? {
            None => None,
            Some((revocation, sequence)) => Some((revocation, self.load_receipt(sequence)?)),
        };
        Ok(Some(CertificateView { certificate, receipt: self.load_receipt(sequence)?, revocation }))
    }

    /// Every certificate, in id order.
    pub fn certificates(&self) -> Result<Vec<CertificateView>, StorageError> {
        let mut views = Vec::new();
        for id in self.store.certificate_ids() {
            views.extend(self.certificate(&id?)?);
        }
        Ok(views)
    }

    // ----- deposits -----

    /// Starts a deposit of a record (its signature verified as it was decoded): checks its size and
    /// signer, then accepts content bytes with [`Deposit::write`] until [`Deposit::commit`].
    pub fn begin_deposit(&self, record: Signed<Record>) -> Result<Deposit<'_>, DepositError> {
        let body = record.body();
        if body.size_bytes > self.config.document_size_bytes_max {
            return Err(DepositError::DocumentTooLarge {
                declared_bytes: body.size_bytes,
                limit_bytes: self.config.document_size_bytes_max,
            });
        }
        match record.signer() {
            // Refused before any byte is read: validated now, recorded only at the commit.
            PublicKey::X509(signer) => {
                self.prepare_validation(record.id(), signer, &body.issuer_agency, Some(&body.owner))?;
            }
            signer => self.trust_check(&record.id(), signer, &body.issuer_agency, now_unix_ms())??,
        }
        let writer =
            ContentWriter::begin(&self.store, &self.config.content, body.size_bytes).map_err(StorageError::from)?;
        Ok(Deposit { vault: self, record, writer })
    }

    /// Deposits a signed record with its content read from `content`.
    pub fn deposit(&self, envelope: &[u8], content: impl Read) -> Result<Accepted, DepositError> {
        let mut deposit = self.begin_deposit(Signed::<Record>::from_envelope(envelope)?)?;
        self.read_content(content, |bytes| deposit.write(bytes))?;
        deposit.commit()
    }

    /// Feeds `content` to `write` a frame's worth at a time; a failed read is `ContentRead`.
    fn read_content<E: From<DepositError>>(
        &self,
        mut content: impl Read,
        mut write: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut buffer = vec![0u8; self.config.content.frame_size_bytes as usize];
        loop {
            match content.read(&mut buffer) {
                Ok(0) => return Ok(()),
                Ok(count) => write(&buffer[..count])?,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(DepositError::ContentRead(error).into()),
            }
        }
    }

    /// Whether a record with this id has been accepted.
    pub fn contains_record(&self, id: &Digest) -> Result<bool, StorageError> {
        Ok(self.visible(self.store.record(id)?).is_some())
    }

    /// A stored statement entry, if readers may see it yet (durable before visible).
    fn visible(&self, entry: Option<StatementEntry>) -> Option<StatementEntry> {
        entry.filter(|entry| self.store.is_visible(entry.sequence))
    }

    /// The commit step of a deposit. Also says whether a commit naming the staged content as the
    /// stored copy was attempted: then the caller keeps the bytes whatever the outcome (a commit that
    /// failed midway may still have landed); otherwise (a duplicate record, content already stored, a
    /// rejection) it discards them.
    fn commit_record(&self, record: &Signed<Record>, staged: &StagedContent) -> (Result<Accepted, DepositError>, bool) {
        let id = record.id();
        let body = record.body();
        let mut content_stored = false;
        // An X.509 signer's validation goes into the log first (not again for a record already
        // accepted); the record's acceptance below requires it.
        let validated = match self.store.record(&id) {
            Ok(Some(_)) => Ok(()),
            Ok(None) => self.validate_signer(id, record.signer(), &body.issuer_agency, Some(&body.owner)),
            Err(error) => Err(StorageError::from(error).into()),
        };
        if let Err(error) = validated {
            return (Err(error), false);
        }
        let sequenced = self.accept(|| {
            if let Some(entry) = self.store.record(&id)? {
                return Ok(Decision::Existing { id, sequence: entry.sequence });
            }
            let accepted_at_ms = now_unix_ms();
            // The signer was checked when the deposit began; check again at the moment of acceptance, in
            // case its certificate was revoked or expired while the content streamed in.
            self.trust_check(&id, record.signer(), &body.issuer_agency, accepted_at_ms)??;
            if let Some(old) = body.supersedes {
                self.check_supersession(body, old)?;
            }
            let content_exists = self.store.manifest(&staged.blake3)?.is_some();
            content_stored = !content_exists;
            Ok::<_, DepositError>(Decision::Accept(Acceptance {
                kind: Record::KIND,
                id,
                owner: Some(body.owner.clone()),
                accepted_at_ms,
                change: Change::Record {
                    id,
                    owner: body.owner.clone(),
                    blake3: body.blake3,
                    envelope: record.to_envelope(),
                    supersedes: body.supersedes,
                    content: (!content_exists).then(|| staged.new_content()),
                },
                receipted: true,
            }))
        });
        (sequenced.and_then(|sequenced| Ok(sequenced.accepted()?)), content_stored)
    }

    /// Commits a record whose content is staged and checked, keeping the bytes only if a commit naming
    /// them was attempted.
    fn commit_staged(&self, record: &Signed<Record>, staged: StagedContent) -> Result<Accepted, DepositError> {
        let (result, content_committed) = self.commit_record(record, &staged);
        if content_committed {
            staged.release();
        } else {
            // Identical content is stored once, and rejected content not at all.
            staged.discard().map_err(StorageError::from)?;
        }
        result
    }

    /// Whether `body` may supersede record `old`: same agency and owner, not revoked, not superseded.
    fn check_supersession(&self, body: &Record, old: Digest) -> Result<(), DepositError> {
        let (old_record, _) =
            self.decode_statement::<Record>(self.store.record(&old)?)?.ok_or(DepositError::SupersedesUnknown(old))?;
        let old_body = old_record.body();
        if old_body.issuer_agency != body.issuer_agency {
            return Err(DepositError::SupersedesOtherAgency { record: old, agency: old_body.issuer_agency.clone() });
        }
        if old_body.owner != body.owner {
            return Err(DepositError::SupersedesOtherOwner { record: old });
        }
        let state = self.store.record_state(&old)?;
        if state.revocation.is_some() {
            return Err(DepositError::SupersedesRevoked { record: old });
        }
        if let Some(by) = state.superseded_by {
            return Err(DepositError::AlreadySuperseded { record: old, by });
        }
        Ok(())
    }

    // ----- revocation -----

    /// Accepts an issuer's revocation of one of its own records.
    pub fn revoke(&self, envelope: &[u8]) -> Result<Accepted, RevokeError> {
        let revocation = Signed::<RecordRevocation>::from_envelope(envelope)?;
        let body = revocation.body();
        let id = revocation.id();
        // Validated (and the validation logged) only once the revocation could be accepted otherwise.
        let record = self.decode_statement::<Record>(self.store.record(&body.record)?)?;
        if let Some((record, _)) = record.filter(|(record, _)| record.body().issuer_agency == body.issuer_agency) {
            self.validate_signer::<RevokeError>(
                id,
                revocation.signer(),
                &body.issuer_agency,
                Some(&record.body().owner),
            )?;
        }
        let sequenced = self.accept(|| {
            let (record, _) = self
                .decode_statement::<Record>(self.store.record(&body.record)?)?
                .ok_or(RevokeError::UnknownRecord(body.record))?;
            if record.body().issuer_agency != body.issuer_agency {
                return Err(RevokeError::NotIssuersRecord {
                    record: body.record,
                    record_agency: record.body().issuer_agency.clone(),
                    revoking_agency: body.issuer_agency.clone(),
                });
            }
            let accepted_at_ms = now_unix_ms();
            self.trust_check(&id, revocation.signer(), &body.issuer_agency, accepted_at_ms)??;
            let state = self.store.record_state(&body.record)?;
            if let Some(existing) = &state.revocation {
                if Signed::<RecordRevocation>::from_envelope(&existing.envelope).is_ok_and(|e| e.id() == id) {
                    return Ok(Decision::Existing { id, sequence: existing.sequence });
                }
                return Err(RevokeError::AlreadyRevoked { record: body.record });
            }
            Ok(Decision::Accept(Acceptance {
                kind: RecordRevocation::KIND,
                id,
                owner: Some(record.body().owner.clone()),
                accepted_at_ms,
                change: Change::RecordRevocation { record: body.record, envelope: revocation.to_envelope() },
                receipted: true,
            }))
        })?;
        Ok(sequenced.accepted()?)
    }

    // ----- reads -----

    /// A record with its receipt and current status.
    pub fn record(&self, id: &Digest) -> Result<Option<RecordView>, StorageError> {
        let Some((record, sequence)) = self.stored_record(id)? else {
            return Ok(None);
        };
        let receipt = self.load_receipt(sequence)?;
        if receipt.body().statement != *id {
            return Err(StorageError::Corrupt(format!("receipt {sequence} does not name record {id}")));
        }
        self.view(record, receipt).map(Some)
    }

    /// A record's view from the record and its receipt: its status and validation loaded now.
    fn view(&self, record: Signed<Record>, receipt: Signed<Receipt>) -> Result<RecordView, StorageError> {
        let status = self.status(&record, now_unix_ms())?;
        let signature = self.signature_validation_of(&record)?;
        Ok(RecordView { record, receipt, status, signature })
    }

    /// A record alone, its signature verified (or remembered as verified): what a download needs to
    /// decide and serve, without the receipt, status and validation [`Vault::record`] also loads. A
    /// read of a record not read lately pays a signature check for each statement it loads, so this
    /// is one check and at least two catalog reads fewer (docs/BENCHMARKS.md, "A download loads its
    /// record alone").
    pub fn record_statement(&self, id: &Digest) -> Result<Option<Signed<Record>>, StorageError> {
        Ok(self.stored_record(id)?.map(|(record, _)| record))
    }

    /// The visible record stored under `id`, verified, with its sequence; a valid record stored under
    /// another's id is damage, not that record.
    fn stored_record(&self, id: &Digest) -> Result<Option<(Signed<Record>, u64)>, StorageError> {
        let stored = self.decode_statement::<Record>(self.visible(self.store.record(id)?))?;
        if let Some((record, _)) = &stored {
            if record.id() != *id {
                return Err(StorageError::Corrupt(format!("the record stored as {id} is {}", record.id())));
            }
        }
        Ok(stored)
    }

    /// The validation a record's acceptance relied on, if its trust came from X.509.
    fn signature_validation_of(
        &self,
        record: &Signed<Record>,
    ) -> Result<Option<Signed<crate::statement::SignatureValidation>>, StorageError> {
        let by_vault = self.is_own_key(record.signer()) && !record.body().is_self_upload();
        if !matches!(record.signer(), PublicKey::X509(_)) && !by_vault {
            return Ok(None);
        }
        let entry = self.store.signature_validation(&record.id())?;
        Ok(self.decode_statement(entry)?.map(|(validation, _)| validation))
    }

    fn status(&self, record: &Signed<Record>, now_ms: i64) -> Result<Status, StorageError> {
        let state: RecordState = self.store.record_state(&record.id())?;
        if let Some(entry) = self.visible(state.revocation) {
            let revocation = Signed::<RecordRevocation>::from_envelope(&entry.envelope)
                .map_err(|e| StorageError::Corrupt(format!("stored revocation: {e}")))?;
            let receipt = self.load_receipt(entry.sequence)?;
            return Ok(Status::Revoked {
                revocation: revocation.id(),
                reason: revocation.body().reason.to_string(),
                revoked_at_ms: receipt.body().accepted_at_ms,
                envelope: entry.envelope,
                receipt_envelope: receipt.to_envelope(),
            });
        }
        if let Some(by) = state.superseded_by {
            if self.visible(self.store.record(&by)?).is_some() {
                return Ok(Status::Superseded { by });
            }
        }
        let body = record.body();
        if body.is_self_upload() {
            return self.upload_status(&record.id());
        }
        let today = self.today(now_ms);
        Ok(if today < body.valid_from {
            Status::NotYetValid
        } else if body.valid_until.is_some_and(|until| today > until) {
            Status::Expired
        } else {
            Status::Valid
        })
    }

    /// An upload's status: certified if an agency's certification of it is durable.
    fn upload_status(&self, record: &Digest) -> Result<Status, StorageError> {
        let Some((certification, sequence)) =
            self.decode_statement::<CopyCertification>(self.visible(self.store.copy_certification(record)?))?
        else {
            return Ok(Status::SelfUploaded);
        };
        let receipt = self.load_receipt(sequence)?;
        let body = certification.body();
        Ok(Status::CertifiedCopy {
            certification: certification.id(),
            agency: body.agency.clone(),
            officer: body.officer.to_string(),
            original_type: body.original_type.clone(),
            original: body.original.to_string(),
            certified_at_ms: receipt.body().accepted_at_ms,
            envelope: certification.to_envelope(),
            receipt_envelope: receipt.to_envelope(),
        })
    }

    /// An owner's records, newest first, filtered, one page at a time.
    pub fn list_owner(
        &self,
        owner: &OwnerId,
        filter: &ListFilter,
        cursor: Option<&str>,
        page_size: usize,
    ) -> Result<Page, QueryError> {
        let after = check_page(cursor, page_size)?;
        self.page_of_records(self.store.owner_records(owner, after), page_size, |view| filter.matches(view))
    }

    /// The records that point to a content hash, oldest first, one page at a time.
    pub fn records_by_content(
        &self,
        blake3: &Digest,
        cursor: Option<&str>,
        page_size: usize,
    ) -> Result<Page, QueryError> {
        let after = check_page(cursor, page_size)?;
        self.page_of_records(self.store.content_records(blake3, after), page_size, |_| true)
    }

    /// Collects up to `page_size` records that `keep` accepts from an index walk.
    fn page_of_records(
        &self,
        index: impl Iterator<Item = Result<(Cursor, Digest), StoreError>>,
        page_size: usize,
        keep: impl Fn(&RecordView) -> bool,
    ) -> Result<Page, QueryError> {
        let mut records = Vec::new();
        let mut last_cursor = None;
        let now_ms = now_unix_ms();
        for item in index {
            let (cursor, id) = item?;
            if !self.store.is_visible(cursor.sequence()) {
                continue;
            }
            let (record, sequence) = self
                .decode_statement::<Record>(self.store.record(&id)?)?
                .ok_or_else(|| StorageError::Corrupt(format!("indexed record {id} is missing")))?;
            let status = self.status(&record, now_ms)?;
            let signature = self.signature_validation_of(&record)?;
            let view = RecordView { record, receipt: self.load_receipt(sequence)?, status, signature };
            if keep(&view) {
                if records.len() == page_size {
                    // One more match exists: the page is full and there is a next one.
                    return Ok(Page { records, next_cursor: last_cursor.map(|c: Cursor| c.to_string()) });
                }
                records.push(view);
            }
            last_cursor = Some(cursor);
        }
        Ok(Page { records, next_cursor: None })
    }

    /// Whether the vault can serve: the catalog answers and no fsync has failed.
    pub fn check_ready(&self) -> Result<(), StorageError> {
        self.store.check_writable()?;
        self.store.log_size().map(|_| ()).map_err(StorageError::from)
    }

    /// The manifest of stored content, if the vault holds it.
    pub fn content_manifest(&self, blake3: &Digest) -> Result<Option<Manifest>, StorageError> {
        Ok(crate::content::load_manifest(&self.store, blake3)?)
    }

    /// A verified reader of stored content, for the whole document or a byte range `start..end`.
    pub fn open_content(&self, blake3: &Digest, range: Option<(u64, u64)>) -> Result<Option<ContentReader>, ReadError> {
        let Some(manifest) = self.content_manifest(blake3)? else {
            return Ok(None);
        };
        match ContentReader::open(&self.store, *blake3, manifest, range) {
            Ok(reader) => Ok(Some(reader)),
            Err(error @ ContentError::RangeNotSatisfiable { .. }) => Err(ReadError::RangeNotSatisfiable(error)),
            Err(error) => Err(ReadError::Storage(error.into())),
        }
    }
}

/// Feeds arbitrary bytes to the decoder of every internal stored value type (for the fuzz targets).
#[doc(hidden)]
pub fn fuzz_decode_stored_values(bytes: &[u8]) {
    let _ = StatementEntry::decode(bytes);
    let _ = codec::decode::<RecordState>(bytes);
    let _ = codec::decode::<u64>(bytes);
    let _ = Manifest::decode(bytes);
    let _ = AccessEvent::decode(bytes);
    let _ = crate::log::Entry::decode(bytes);
}

/// Checks the paging arguments of any listing: a page size in 1..=[`PAGE_SIZE_MAX`] and, if given, a
/// cursor this vault could have handed out; returns the position the cursor stands for. Edges call it to
/// reject a bad request before doing anything else (such as recording an access).
pub fn check_page(cursor: Option<&str>, page_size: usize) -> Result<Option<Cursor>, QueryError> {
    if page_size == 0 || page_size > PAGE_SIZE_MAX {
        return Err(QueryError::InvalidPageSize { requested: page_size });
    }
    cursor.map(|text| Cursor::parse(text).ok_or_else(|| QueryError::InvalidCursor(text.to_owned()))).transpose()
}

/// Loads the receipt key, or creates it (atomically) on first start, with its public half beside it.
fn load_or_create_key(dir: &Path) -> Result<SecretKey, KeyFileError> {
    let key = keys::load_or_create_secret_key(&dir.join(VAULT_KEY_FILE))?;
    // The public half is a convenience copy for auditors; rewrite it if it is missing or stale.
    let public = dir.join(VAULT_PUBLIC_KEY_FILE);
    if keys::read_public_key(&public).ok() != Some(key.public_key()) {
        if public.exists() {
            std::fs::remove_file(&public).map_err(|source| KeyFileError::Write { path: public.clone(), source })?;
        }
        keys::write_public_key(&public, &key.public_key())?;
    }
    Ok(key)
}

/// A deposit in progress: content bytes are hashed, compressed and stored as they arrive.
pub struct Deposit<'v> {
    vault: &'v Vault,
    record: Signed<Record>,
    writer: ContentWriter,
}

impl Deposit<'_> {
    pub fn record(&self) -> &Signed<Record> {
        &self.record
    }

    pub fn write(&mut self, bytes: &[u8]) -> Result<(), DepositError> {
        self.writer.write(bytes).map_err(|error| match error {
            ContentError::TooLarge { .. } => {
                DepositError::ContentTooLong { declared_bytes: self.record.body().size_bytes }
            }
            other => DepositError::Storage(other.into()),
        })
    }

    /// Checks the content against the record and, if it matches, makes everything durable.
    pub fn commit(self) -> Result<Accepted, DepositError> {
        self.commit_keeping_record().map(|(accepted, _)| accepted)
    }

    /// [`Deposit::commit`], answered with the record as it reads now and whether it is newly
    /// accepted. A new record's view is made from the record and receipt in hand (neither read back
    /// nor verified again: docs/BENCHMARKS.md, "A deposit's answer from what it holds"); one
    /// accepted before is loaded as stored.
    pub fn commit_viewed(self) -> Result<(RecordView, bool), DepositError> {
        let vault = self.vault;
        let (accepted, record) = self.commit_keeping_record()?;
        let view = if accepted.newly_accepted {
            vault.view(record, accepted.receipt)?
        } else {
            let id = accepted.id;
            vault
                .record(&id)?
                .ok_or_else(|| StorageError::Corrupt(format!("record {id} was accepted but is missing")))?
        };
        Ok((view, accepted.newly_accepted))
    }

    fn commit_keeping_record(self) -> Result<(Accepted, Signed<Record>), DepositError> {
        let declared = self.record.body();
        let received = self.writer.size_bytes();
        if received < declared.size_bytes {
            return Err(DepositError::ContentTruncated {
                declared_bytes: declared.size_bytes,
                received_bytes: received,
            });
        }
        let staged = self.writer.finish().map_err(StorageError::from)?;
        let mismatch = if staged.blake3 != declared.blake3 {
            Some(DepositError::Blake3Mismatch { declared: declared.blake3, actual: staged.blake3 })
        } else if staged.manifest.sha256 != declared.sha256 {
            Some(DepositError::Sha256Mismatch { declared: declared.sha256, actual: staged.manifest.sha256 })
        } else {
            None
        };
        if let Some(error) = mismatch {
            staged.discard().map_err(StorageError::from)?;
            return Err(error);
        }
        let accepted = self.vault.commit_staged(&self.record, staged)?;
        Ok((accepted, self.record))
    }
}
