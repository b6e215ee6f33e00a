//! The use cases: deposit, revoke and supersede records, certify issuer keys, read records and content.
//!
//! The vault decides trust (is this signer a certified, unrevoked key of this agency right now?),
//! assigns sequence numbers, signs receipts with its own key, and commits every accepted statement in
//! one atomic catalog batch followed by a durable group sync: when a call returns `Ok`, the statement,
//! its content, its indexes and its receipt survive any crash; before that, none of it is durable.
//!
//! Catalog keys (all values through `codec` unless noted; docs/FORMAT.md has the full table):
//! `r/<record id>` record entry, `s/<record id>` record state (revocation, superseded by),
//! `o/<owner>\0<!sequence>` owner index (newest first), `h/<blake3>\0<sequence>` content index,
//! `k/<certificate id>` certificate entry, `kr/<certificate id>` certificate revocation,
//! `ka/<agency>\0<certificate id>` and `kf/<key fingerprint><certificate id>` certificate indexes,
//! `q/<sequence>` receipt envelope (raw), `al/<owner>\0<!sequence>` access log, `meta/sequence` last
//! sequence number (shared by statements and access events: one order of everything that happened).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::content::{self, ContentConfig, ContentError, ContentReader, ContentWriter, Manifest};
use crate::ids::{now_unix_ms, Code, Date, Digest, OwnerId};
use crate::keys::{self, KeyFileError};
use crate::statement::{
    CertificateRevocation, DecodeError, KeyCertificate, PublicKey, Receipt, Record, RecordRevocation, SecretKey,
    Signed, StatementBody,
};
use crate::store::{Batch, Store, StoreConfig, StoreError};

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
const STORE_DIRECTORY: &str = "store";

#[derive(Debug, Clone)]
pub struct VaultConfig {
    pub data_dir: PathBuf,
    /// Keys whose certificates of issuer keys the vault accepts.
    pub trust_anchors: Vec<PublicKey>,
    pub document_size_bytes_max: u64,
    pub content: ContentConfig,
    pub store: StoreConfig,
    /// The zone in which "today" is computed for validity windows.
    pub utc_offset_minutes: i16,
}

impl VaultConfig {
    pub fn new(data_dir: impl Into<PathBuf>, trust_anchors: Vec<PublicKey>) -> VaultConfig {
        VaultConfig {
            data_dir: data_dir.into(),
            trust_anchors,
            document_size_bytes_max: DOCUMENT_SIZE_BYTES_MAX_DEFAULT,
            content: ContentConfig::default(),
            store: StoreConfig::default(),
            utc_offset_minutes: UTC_OFFSET_MINUTES_DEFAULT,
        }
    }
}

/// Failures of the storage underneath, as opposed to rejected input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl From<ContentError> for StorageError {
    fn from(error: ContentError) -> Self {
        match error {
            ContentError::Store(error) => StorageError::Store(error),
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
}

impl TrustError {
    pub fn code(&self) -> &'static str {
        match self {
            TrustError::UnknownAgency { .. } => "unknown_agency",
            TrustError::KeyNotCertified { .. } => "key_not_certified",
            TrustError::KeyOfAnotherAgency { .. } => "key_of_another_agency",
            TrustError::KeyNotYetValid { .. } => "key_not_yet_valid",
            TrustError::KeyExpired { .. } => "key_expired",
            TrustError::KeyRevoked { .. } => "key_revoked",
            TrustError::UnknownAnchor { .. } => "unknown_trust_anchor",
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
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl DepositError {
    /// A stable machine-readable code for this case.
    pub fn code(&self) -> &'static str {
        match self {
            DepositError::Statement(DecodeError::BadSignature) => "bad_signature",
            DepositError::Statement(_) => "malformed_record",
            DepositError::Trust(error) => error.code(),
            DepositError::DocumentTooLarge { .. } => "document_too_large",
            DepositError::ContentTooLong { .. } => "content_too_long",
            DepositError::ContentTruncated { .. } => "content_truncated",
            DepositError::Blake3Mismatch { .. } => "content_hash_mismatch",
            DepositError::Sha256Mismatch { .. } => "content_sha256_mismatch",
            DepositError::SupersedesUnknown(_) => "supersedes_unknown",
            DepositError::SupersedesOtherAgency { .. } => "supersedes_other_agency",
            DepositError::SupersedesOtherOwner { .. } => "supersedes_other_owner",
            DepositError::SupersedesRevoked { .. } => "supersedes_revoked",
            DepositError::AlreadySuperseded { .. } => "already_superseded",
            DepositError::ContentRead(_) => "content_read_failed",
            DepositError::Storage(_) => "storage_error",
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
    pub fn code(&self) -> &'static str {
        match self {
            RevokeError::Statement(DecodeError::BadSignature) => "bad_signature",
            RevokeError::Statement(_) => "malformed_revocation",
            RevokeError::Trust(error) => error.code(),
            RevokeError::UnknownRecord(_) => "record_not_found",
            RevokeError::NotIssuersRecord { .. } => "not_issuers_record",
            RevokeError::AlreadyRevoked { .. } => "already_revoked",
            RevokeError::Storage(_) => "storage_error",
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
    pub fn code(&self) -> &'static str {
        match self {
            CertificateError::Statement(DecodeError::BadSignature) => "bad_signature",
            CertificateError::Statement(_) => "malformed_certificate",
            CertificateError::Trust(error) => error.code(),
            CertificateError::UnknownCertificate(_) => "certificate_not_found",
            CertificateError::AlreadyRevoked(_) => "already_revoked",
            CertificateError::Storage(_) => "storage_error",
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
    Revoked { revocation: Digest, reason: String, revoked_at_ms: i64 },
    Superseded { by: Digest },
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
}

impl Status {
    pub fn kind(&self) -> StatusKind {
        match self {
            Status::Valid => StatusKind::Valid,
            Status::NotYetValid => StatusKind::NotYetValid,
            Status::Expired => StatusKind::Expired,
            Status::Revoked { .. } => StatusKind::Revoked,
            Status::Superseded { .. } => StatusKind::Superseded,
        }
    }
}

/// A record as read from the vault: the verified statement, Kho's receipt, and its current status.
#[derive(Debug, Clone)]
pub struct RecordView {
    pub record: Signed<Record>,
    pub receipt: Signed<Receipt>,
    pub status: Status,
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
}

#[derive(Debug, Clone)]
pub struct Page {
    pub records: Vec<RecordView>,
    /// Pass back to get the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// What someone did with a person's documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessAction {
    ReadRecord,
    ReadContent,
    ListRecords,
}

/// Whether the access was allowed; denials are logged too. (Stored through `codec`, so no serde
/// attributes that need a self-describing format.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccessOutcome {
    Allowed,
    Denied { reason: String },
}

/// One entry of an owner's access log: who (subject, role, agency) did what, why, when, and how it
/// ended. Recorded durably before any of the owner's data is sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessEvent {
    pub at_ms: i64,
    pub owner: OwnerId,
    pub subject: String,
    pub role: String,
    pub agency: Option<Code>,
    /// The dossier code the reader stated.
    pub purpose: Option<Code>,
    pub record: Option<Digest>,
    pub action: AccessAction,
    pub outcome: AccessOutcome,
}

/// A page of an owner's access log, newest first, with each entry's sequence number.
#[derive(Debug, Clone)]
pub struct AccessPage {
    pub entries: Vec<(u64, AccessEvent)>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StatementEntry {
    envelope: Vec<u8>,
    sequence: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct RecordState {
    revocation: Option<StatementEntry>,
    superseded_by: Option<Digest>,
}

mod key {
    use super::*;

    pub(super) const SEQUENCE: &[u8] = b"meta/sequence";

    pub(super) fn record(id: &Digest) -> Vec<u8> {
        [b"r/".as_slice(), &id.0].concat()
    }
    pub(super) fn record_state(id: &Digest) -> Vec<u8> {
        [b"s/".as_slice(), &id.0].concat()
    }
    pub(super) fn owner_prefix(owner: &OwnerId) -> Vec<u8> {
        [b"o/".as_slice(), owner.as_str().as_bytes(), b"\0"].concat()
    }
    /// Inverted so that a forward scan yields newest first.
    pub(super) fn owner_entry(owner: &OwnerId, sequence: u64) -> Vec<u8> {
        [owner_prefix(owner).as_slice(), &(u64::MAX - sequence).to_be_bytes()].concat()
    }
    pub(super) fn content_prefix(blake3: &Digest) -> Vec<u8> {
        [b"h/".as_slice(), &blake3.0, b"\0"].concat()
    }
    pub(super) fn content_entry(blake3: &Digest, sequence: u64) -> Vec<u8> {
        [content_prefix(blake3).as_slice(), &sequence.to_be_bytes()].concat()
    }
    pub(super) fn certificate(id: &Digest) -> Vec<u8> {
        [b"k/".as_slice(), &id.0].concat()
    }
    pub(super) const CERTIFICATE_PREFIX: &[u8] = b"k/";
    pub(super) fn certificate_revocation(id: &Digest) -> Vec<u8> {
        [b"kr/".as_slice(), &id.0].concat()
    }
    pub(super) fn agency_prefix(agency: &Code) -> Vec<u8> {
        [b"ka/".as_slice(), agency.as_str().as_bytes(), b"\0"].concat()
    }
    pub(super) fn fingerprint_prefix(fingerprint: &Digest) -> Vec<u8> {
        [b"kf/".as_slice(), &fingerprint.0].concat()
    }
    pub(super) fn access_prefix(owner: &OwnerId) -> Vec<u8> {
        [b"al/".as_slice(), owner.as_str().as_bytes(), b"\0"].concat()
    }
    pub(super) fn access_entry(owner: &OwnerId, sequence: u64) -> Vec<u8> {
        [access_prefix(owner).as_slice(), &(u64::MAX - sequence).to_be_bytes()].concat()
    }
    pub(super) fn receipt(sequence: u64) -> Vec<u8> {
        [b"q/".as_slice(), &sequence.to_be_bytes()].concat()
    }
}

/// The vault on one node.
pub struct Vault {
    store: Store,
    key: SecretKey,
    config: VaultConfig,
    /// Serializes the short commit step (sequence assignment, checks against the catalog, batch).
    /// Content streaming and the durable sync run outside it.
    commit_lock: Mutex<()>,
}

impl Vault {
    /// Opens (or creates) the vault in `config.data_dir`, creating its receipt key on first start; the
    /// store removes whatever crashed uploads left behind.
    pub fn open(config: VaultConfig) -> Result<Vault, OpenError> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).map_err(|source| OpenError::DataDir { path: dir.clone(), source })?;
        let key = load_or_create_key(dir)?;
        let store = Store::open(&dir.join(STORE_DIRECTORY), &config.store).map_err(StorageError::from)?;
        Ok(Vault { store, key, config, commit_lock: Mutex::new(()) })
    }

    pub fn config(&self) -> &VaultConfig {
        &self.config
    }

    /// The public key that verifies this vault's receipts.
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

    fn get_decoded<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        match self.store.get(key)? {
            None => Ok(None),
            Some(bytes) => codec::decode(&bytes).map(Some).map_err(|e| {
                StorageError::Corrupt(format!("catalog value {}: {e}", String::from_utf8_lossy(&key[..2])))
            }),
        }
    }

    fn next_sequence(&self) -> Result<u64, StorageError> {
        Ok(self.get_decoded::<u64>(key::SEQUENCE)?.unwrap_or(0) + 1)
    }

    /// Signs a receipt for `statement` and adds it and the new sequence number to `batch`.
    fn receipt_into<T: StatementBody>(
        &self,
        batch: &mut Batch,
        statement: &Signed<T>,
        sequence: u64,
        accepted_at_ms: i64,
    ) -> Signed<Receipt> {
        let receipt = Signed::sign(
            Receipt { statement: statement.id(), statement_kind: T::KIND, sequence, accepted_at_ms },
            &self.key,
        );
        batch.insert(key::receipt(sequence), receipt.to_envelope());
        batch.insert(key::SEQUENCE, codec::encode(&sequence));
        receipt
    }

    /// The answer to a statement accepted before: its earlier receipt, once that acceptance is durable
    /// (the first caller may still be waiting for its sync).
    fn already_accepted(&self, id: Digest, sequence: u64) -> Result<Accepted, StorageError> {
        let receipt = self.load_receipt(sequence)?;
        self.store.sync()?;
        Ok(Accepted { id, receipt, newly_accepted: false })
    }

    fn load_receipt(&self, sequence: u64) -> Result<Signed<Receipt>, StorageError> {
        let bytes = self
            .store
            .get(&key::receipt(sequence))?
            .ok_or_else(|| StorageError::Corrupt(format!("receipt {sequence} is missing")))?;
        Signed::from_envelope(&bytes).map_err(|e| StorageError::Corrupt(format!("receipt {sequence}: {e}")))
    }

    fn load_statement<T: StatementBody>(&self, key: &[u8]) -> Result<Option<(Signed<T>, u64)>, StorageError> {
        let Some(entry) = self.get_decoded::<StatementEntry>(key)? else {
            return Ok(None);
        };
        let statement = Signed::from_envelope(&entry.envelope)
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

    /// Checks that `signer` holds a certificate for `agency`, valid and unrevoked at `at_ms`.
    fn trust_check(
        &self,
        signer: &PublicKey,
        agency: &Code,
        at_ms: i64,
    ) -> Result<Result<(), TrustError>, StorageError> {
        let fingerprint = signer.fingerprint();
        let mut other_agency = None;
        let mut best_failure: Option<TrustError> = None;
        for item in self.store.scan_prefix(&key::fingerprint_prefix(&fingerprint), None) {
            let (entry_key, _) = item?;
            let id = digest_suffix(&entry_key)?;
            let view = self
                .certificate(&id)?
                .ok_or_else(|| StorageError::Corrupt(format!("certificate {id} indexed but missing")))?;
            let certificate = view.certificate.body();
            if &certificate.subject != signer {
                return Err(StorageError::Corrupt(format!("certificate {id} indexed under the wrong key")));
            }
            if &certificate.agency != agency {
                other_agency = Some(certificate.agency.clone());
                continue;
            }
            // Rank the reasons so the most telling one is reported: revoked > not yet valid > expired.
            let failure = if let Some((_, receipt)) = &view.revocation {
                if receipt.body().accepted_at_ms <= at_ms {
                    Some(TrustError::KeyRevoked {
                        fingerprint,
                        revoked_at: crate::ids::format_unix_ms(receipt.body().accepted_at_ms),
                    })
                } else {
                    None
                }
            } else {
                None
            };
            let failure = failure.or_else(|| {
                if at_ms < certificate.valid_from_ms {
                    Some(TrustError::KeyNotYetValid {
                        fingerprint,
                        valid_from: crate::ids::format_unix_ms(certificate.valid_from_ms),
                    })
                } else if at_ms > certificate.valid_until_ms {
                    Some(TrustError::KeyExpired {
                        fingerprint,
                        valid_until: crate::ids::format_unix_ms(certificate.valid_until_ms),
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
        let agency_known = self.store.scan_prefix(&key::agency_prefix(agency), None).next().is_some();
        Ok(Err(if agency_known {
            TrustError::KeyNotCertified { agency: agency.clone(), fingerprint }
        } else {
            TrustError::UnknownAgency { agency: agency.clone() }
        }))
    }

    // ----- certificates -----

    /// Accepts an issuer key certificate signed by a configured trust anchor.
    pub fn add_certificate(&self, envelope: &[u8]) -> Result<Accepted, CertificateError> {
        let certificate = Signed::<KeyCertificate>::from_envelope(envelope)?;
        self.anchor_check(certificate.signer())?;
        let id = certificate.id();
        let guard = self.lock();
        if let Some((_, sequence)) = self.load_statement::<KeyCertificate>(&key::certificate(&id))? {
            drop(guard);
            return self.already_accepted(id, sequence).map_err(CertificateError::from);
        }
        let sequence = self.next_sequence()?;
        let mut batch = Batch::default();
        batch.insert(
            key::certificate(&id),
            codec::encode(&StatementEntry { envelope: certificate.to_envelope(), sequence }),
        );
        batch.insert([key::agency_prefix(&certificate.body().agency), id.0.to_vec()].concat(), Vec::new());
        batch.insert(
            [key::fingerprint_prefix(&certificate.body().subject.fingerprint()), id.0.to_vec()].concat(),
            Vec::new(),
        );
        let receipt = self.receipt_into(&mut batch, &certificate, sequence, now_unix_ms());
        self.store.commit(batch)?;
        drop(guard);
        self.store.sync()?;
        Ok(Accepted { id, receipt, newly_accepted: true })
    }

    /// Accepts a trust anchor's revocation of a certificate; the key stops counting from now on.
    pub fn revoke_certificate(&self, envelope: &[u8]) -> Result<Accepted, CertificateError> {
        let revocation = Signed::<CertificateRevocation>::from_envelope(envelope)?;
        self.anchor_check(revocation.signer())?;
        let id = revocation.id();
        let target = revocation.body().certificate;
        let guard = self.lock();
        if self.load_statement::<KeyCertificate>(&key::certificate(&target))?.is_none() {
            return Err(CertificateError::UnknownCertificate(target));
        }
        if let Some((existing, sequence)) =
            self.load_statement::<CertificateRevocation>(&key::certificate_revocation(&target))?
        {
            if existing.id() == id {
                drop(guard);
                return self.already_accepted(id, sequence).map_err(CertificateError::from);
            }
            return Err(CertificateError::AlreadyRevoked(target));
        }
        let sequence = self.next_sequence()?;
        let mut batch = Batch::default();
        batch.insert(
            key::certificate_revocation(&target),
            codec::encode(&StatementEntry { envelope: revocation.to_envelope(), sequence }),
        );
        let receipt = self.receipt_into(&mut batch, &revocation, sequence, now_unix_ms());
        self.store.commit(batch)?;
        drop(guard);
        self.store.sync()?;
        Ok(Accepted { id, receipt, newly_accepted: true })
    }

    pub fn certificate(&self, id: &Digest) -> Result<Option<CertificateView>, StorageError> {
        let Some((certificate, sequence)) = self.load_statement::<KeyCertificate>(&key::certificate(id))? else {
            return Ok(None);
        };
        let revocation = match self.load_statement::<CertificateRevocation>(&key::certificate_revocation(id))? {
            None => None,
            Some((revocation, sequence)) => Some((revocation, self.load_receipt(sequence)?)),
        };
        Ok(Some(CertificateView { certificate, receipt: self.load_receipt(sequence)?, revocation }))
    }

    /// Every certificate, in id order.
    pub fn certificates(&self) -> Result<Vec<CertificateView>, StorageError> {
        let mut views = Vec::new();
        for item in self.store.scan_prefix(key::CERTIFICATE_PREFIX, None) {
            let (entry_key, _) = item?;
            let id = digest_suffix(&entry_key)?;
            views.extend(self.certificate(&id)?);
        }
        Ok(views)
    }

    // ----- deposits -----

    /// Starts a deposit: checks the signed record and its signer, then accepts content bytes with
    /// [`Deposit::write`] until [`Deposit::commit`].
    pub fn begin_deposit(&self, envelope: &[u8]) -> Result<Deposit<'_>, DepositError> {
        let record = Signed::<Record>::from_envelope(envelope)?;
        let body = record.body();
        if body.size_bytes > self.config.document_size_bytes_max {
            return Err(DepositError::DocumentTooLarge {
                declared_bytes: body.size_bytes,
                limit_bytes: self.config.document_size_bytes_max,
            });
        }
        self.trust_check(record.signer(), &body.issuer_agency, now_unix_ms())??;
        let writer =
            ContentWriter::begin(&self.store, &self.config.content, body.size_bytes).map_err(StorageError::from)?;
        Ok(Deposit { vault: self, record, writer })
    }

    /// Deposits a signed record with its content read from `content`.
    pub fn deposit(&self, envelope: &[u8], mut content: impl Read) -> Result<Accepted, DepositError> {
        let mut deposit = self.begin_deposit(envelope)?;
        let mut buffer = vec![0u8; self.config.content.frame_size_bytes as usize];
        loop {
            let count = match content.read(&mut buffer) {
                Ok(0) => break,
                Ok(count) => count,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(DepositError::ContentRead(error)),
            };
            deposit.write(&buffer[..count])?;
        }
        deposit.commit()
    }

    /// Whether a record with this id has been accepted.
    pub fn contains_record(&self, id: &Digest) -> Result<bool, StorageError> {
        Ok(self.store.contains(&key::record(id))?)
    }

    /// The commit step of a deposit. Returns whether the staged content became the stored copy; when
    /// it did not (a duplicate record, content already stored, or an error), the caller discards it.
    fn commit_record(
        &self,
        record: &Signed<Record>,
        staged: &content::StagedContent,
    ) -> Result<(Accepted, bool), DepositError> {
        let id = record.id();
        let body = record.body();
        let _guard = self.lock(); // held until the batch is committed
        if let Some((_, sequence)) = self.load_statement::<Record>(&key::record(&id))? {
            return Ok((Accepted { id, receipt: self.load_receipt(sequence)?, newly_accepted: false }, false));
        }
        let accepted_at_ms = now_unix_ms();
        // The signer was checked when the deposit began; check again at the moment of acceptance, in
        // case its certificate was revoked or expired while the content streamed in.
        self.trust_check(record.signer(), &body.issuer_agency, accepted_at_ms)??;
        let mut batch = Batch::default();
        if let Some(old) = body.supersedes {
            let (old_record, _) =
                self.load_statement::<Record>(&key::record(&old))?.ok_or(DepositError::SupersedesUnknown(old))?;
            let old_body = old_record.body();
            if old_body.issuer_agency != body.issuer_agency {
                return Err(DepositError::SupersedesOtherAgency {
                    record: old,
                    agency: old_body.issuer_agency.clone(),
                });
            }
            if old_body.owner != body.owner {
                return Err(DepositError::SupersedesOtherOwner { record: old });
            }
            let mut state = self.get_decoded::<RecordState>(&key::record_state(&old))?.unwrap_or_default();
            if state.revocation.is_some() {
                return Err(DepositError::SupersedesRevoked { record: old });
            }
            if let Some(by) = state.superseded_by {
                return Err(DepositError::AlreadySuperseded { record: old, by });
            }
            state.superseded_by = Some(id);
            batch.insert(key::record_state(&old), codec::encode(&state));
        }
        let content_exists = self.store.contains(&content::manifest_key(&staged.blake3))?;
        let sequence = self.next_sequence()?;
        batch.insert(key::record(&id), codec::encode(&StatementEntry { envelope: record.to_envelope(), sequence }));
        batch.insert(key::owner_entry(&body.owner, sequence), id.0.to_vec());
        batch.insert(key::content_entry(&body.blake3, sequence), id.0.to_vec());
        if !content_exists {
            staged.commit_into(&mut batch);
        }
        let receipt = self.receipt_into(&mut batch, record, sequence, accepted_at_ms);
        self.store.commit(batch)?;
        Ok((Accepted { id, receipt, newly_accepted: true }, !content_exists))
    }

    // ----- revocation -----

    /// Accepts an issuer's revocation of one of its own records.
    pub fn revoke(&self, envelope: &[u8]) -> Result<Accepted, RevokeError> {
        let revocation = Signed::<RecordRevocation>::from_envelope(envelope)?;
        let body = revocation.body();
        let id = revocation.id();
        let guard = self.lock();
        let (record, _) = self
            .load_statement::<Record>(&key::record(&body.record))?
            .ok_or(RevokeError::UnknownRecord(body.record))?;
        if record.body().issuer_agency != body.issuer_agency {
            return Err(RevokeError::NotIssuersRecord {
                record: body.record,
                record_agency: record.body().issuer_agency.clone(),
                revoking_agency: body.issuer_agency.clone(),
            });
        }
        let accepted_at_ms = now_unix_ms();
        self.trust_check(revocation.signer(), &body.issuer_agency, accepted_at_ms)??;
        let mut state = self.get_decoded::<RecordState>(&key::record_state(&body.record))?.unwrap_or_default();
        if let Some(existing) = &state.revocation {
            if Signed::<RecordRevocation>::from_envelope(&existing.envelope).is_ok_and(|e| e.id() == id) {
                drop(guard);
                return self.already_accepted(id, existing.sequence).map_err(RevokeError::from);
            }
            return Err(RevokeError::AlreadyRevoked { record: body.record });
        }
        let sequence = self.next_sequence()?;
        state.revocation = Some(StatementEntry { envelope: revocation.to_envelope(), sequence });
        let mut batch = Batch::default();
        batch.insert(key::record_state(&body.record), codec::encode(&state));
        let receipt = self.receipt_into(&mut batch, &revocation, sequence, accepted_at_ms);
        self.store.commit(batch)?;
        drop(guard);
        self.store.sync()?;
        Ok(Accepted { id, receipt, newly_accepted: true })
    }

    // ----- reads -----

    /// A record with its receipt and current status.
    pub fn record(&self, id: &Digest) -> Result<Option<RecordView>, StorageError> {
        let Some((record, sequence)) = self.load_statement::<Record>(&key::record(id))? else {
            return Ok(None);
        };
        let receipt = self.load_receipt(sequence)?;
        if receipt.body().statement != *id {
            return Err(StorageError::Corrupt(format!("receipt {sequence} does not name record {id}")));
        }
        let status = self.status(&record, now_unix_ms())?;
        Ok(Some(RecordView { record, receipt, status }))
    }

    fn status(&self, record: &Signed<Record>, now_ms: i64) -> Result<Status, StorageError> {
        let state = self.get_decoded::<RecordState>(&key::record_state(&record.id()))?.unwrap_or_default();
        if let Some(entry) = state.revocation {
            let revocation = Signed::<RecordRevocation>::from_envelope(&entry.envelope)
                .map_err(|e| StorageError::Corrupt(format!("stored revocation: {e}")))?;
            let receipt = self.load_receipt(entry.sequence)?;
            return Ok(Status::Revoked {
                revocation: revocation.id(),
                reason: revocation.body().reason.to_string(),
                revoked_at_ms: receipt.body().accepted_at_ms,
            });
        }
        if let Some(by) = state.superseded_by {
            return Ok(Status::Superseded { by });
        }
        let today = self.today(now_ms);
        let body = record.body();
        Ok(if today < body.valid_from {
            Status::NotYetValid
        } else if body.valid_until.is_some_and(|until| today > until) {
            Status::Expired
        } else {
            Status::Valid
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
        let prefix = key::owner_prefix(owner);
        self.list_index(&prefix, cursor, page_size, |view| {
            filter.document_type.as_ref().is_none_or(|t| &view.record.body().document_type == t)
                && filter.issuer_agency.as_ref().is_none_or(|a| &view.record.body().issuer_agency == a)
                && filter.status.is_none_or(|s| view.status.kind() == s)
        })
    }

    /// The records that point to a content hash, oldest first, one page at a time.
    pub fn records_by_content(
        &self,
        blake3: &Digest,
        cursor: Option<&str>,
        page_size: usize,
    ) -> Result<Page, QueryError> {
        self.list_index(&key::content_prefix(blake3), cursor, page_size, |_| true)
    }

    /// Walks an index whose keys are `prefix` + 8 bytes and whose values are record ids.
    fn list_index(
        &self,
        prefix: &[u8],
        cursor: Option<&str>,
        page_size: usize,
        keep: impl Fn(&RecordView) -> bool,
    ) -> Result<Page, QueryError> {
        check_page(cursor, page_size)?;
        let after = cursor.map(|text| cursor_key(prefix, text)).transpose()?;
        let mut records = Vec::new();
        let mut last_key = None;
        let now_ms = now_unix_ms();
        for item in self.store.scan_prefix(prefix, after.as_deref()) {
            let (entry_key, value) = item?;
            let id =
                Digest(value.try_into().map_err(|_| StorageError::Corrupt("index entry is not a record id".into()))?);
            let (record, sequence) = self
                .load_statement::<Record>(&key::record(&id))?
                .ok_or_else(|| StorageError::Corrupt(format!("indexed record {id} is missing")))?;
            let status = self.status(&record, now_ms)?;
            let view = RecordView { record, receipt: self.load_receipt(sequence)?, status };
            if keep(&view) {
                if records.len() == page_size {
                    // One more match exists: the page is full and there is a next one.
                    return Ok(Page {
                        records,
                        next_cursor: last_key.map(|k: Vec<u8>| hex::encode(&k[prefix.len()..])),
                    });
                }
                records.push(view);
            }
            last_key = Some(entry_key);
        }
        Ok(Page { records, next_cursor: None })
    }

    /// Whether the vault can serve: the catalog answers and no fsync has failed.
    pub fn check_ready(&self) -> Result<(), StorageError> {
        self.store.check_writable()?;
        self.next_sequence().map(|_| ())
    }

    // ----- access log -----

    /// Records an access to an owner's documents and returns once it is durable, with its sequence
    /// number. Callers must not send any of the owner's data before this returns `Ok`.
    pub fn record_access(&self, event: &AccessEvent) -> Result<u64, StorageError> {
        let guard = self.lock();
        let sequence = self.next_sequence()?;
        let mut batch = Batch::default();
        batch.insert(key::access_entry(&event.owner, sequence), codec::encode(event));
        batch.insert(key::SEQUENCE, codec::encode(&sequence));
        self.store.commit(batch)?;
        drop(guard);
        self.store.sync()?;
        Ok(sequence)
    }

    /// An owner's access log, newest first, one page at a time.
    pub fn access_log(
        &self,
        owner: &OwnerId,
        cursor: Option<&str>,
        page_size: usize,
    ) -> Result<AccessPage, QueryError> {
        check_page(cursor, page_size)?;
        let prefix = key::access_prefix(owner);
        let after = cursor.map(|text| cursor_key(&prefix, text)).transpose()?;
        let mut entries: Vec<(u64, AccessEvent)> = Vec::new();
        for item in self.store.scan_prefix(&prefix, after.as_deref()) {
            let (entry_key, value) = item?;
            if entries.len() == page_size {
                let last_sequence: u64 = entries[page_size - 1].0;
                let next_cursor = Some(hex::encode((u64::MAX - last_sequence).to_be_bytes()));
                return Ok(AccessPage { entries, next_cursor });
            }
            let inverted = entry_key.get(prefix.len()..).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes);
            let sequence = u64::MAX - inverted.ok_or_else(|| StorageError::Corrupt("access log key".into()))?;
            let event = codec::decode(&value).map_err(|e| StorageError::Corrupt(format!("access log entry: {e}")))?;
            entries.push((sequence, event));
        }
        Ok(AccessPage { entries, next_cursor: None })
    }

    /// The manifest of stored content, if the vault holds it.
    pub fn content_manifest(&self, blake3: &Digest) -> Result<Option<Manifest>, StorageError> {
        Ok(content::load_manifest(&self.store, blake3)?)
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
    let _ = codec::decode::<StatementEntry>(bytes);
    let _ = codec::decode::<RecordState>(bytes);
    let _ = codec::decode::<u64>(bytes);
    let _ = codec::decode::<Manifest>(bytes);
    let _ = codec::decode::<AccessEvent>(bytes);
}

/// Checks the paging arguments of any listing: a page size in 1..=[`PAGE_SIZE_MAX`] and, if given, a
/// cursor of the shape this vault hands out. Edges call it to reject a bad request before doing anything
/// else (such as recording an access).
pub fn check_page(cursor: Option<&str>, page_size: usize) -> Result<(), QueryError> {
    if page_size == 0 || page_size > PAGE_SIZE_MAX {
        return Err(QueryError::InvalidPageSize { requested: page_size });
    }
    cursor.map(cursor_position).transpose().map(|_| ())
}

/// The 8-byte index position a cursor encodes in hex.
fn cursor_position(cursor: &str) -> Result<[u8; 8], QueryError> {
    let mut position = [0u8; 8];
    hex::decode_to_slice(cursor, &mut position).map_err(|_| QueryError::InvalidCursor(cursor.to_owned()))?;
    Ok(position)
}

/// The index key a cursor stands for: the prefix and the cursor's position.
fn cursor_key(prefix: &[u8], cursor: &str) -> Result<Vec<u8>, QueryError> {
    Ok([prefix, &cursor_position(cursor)?].concat())
}

fn digest_suffix(key: &[u8]) -> Result<Digest, StorageError> {
    key.len()
        .checked_sub(32)
        .and_then(|start| key[start..].try_into().ok())
        .map(Digest)
        .ok_or_else(|| StorageError::Corrupt("index key too short".into()))
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
        let result = self.vault.commit_record(&self.record, &staged);
        if matches!(result, Ok((_, true))) {
            staged.release();
        } else {
            // Identical content is stored once, and rejected content not at all.
            staged.discard().map_err(StorageError::from)?;
        }
        let (accepted, _) = result?;
        self.vault.store.sync()?;
        Ok(accepted)
    }
}
