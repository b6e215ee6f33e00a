//! Evidence that travels: everything an outsider needs to check an owner's store, or one record, offline
//! and without trusting the operator, gathered as of one signed checkpoint. The archive that carries it
//! is `evidence::bundle` (docs/FORMAT.md section 5); this module only reads the vault.
//!
//! Everything is taken as of the checkpoint the evidence is proven against: a record, a revocation or
//! a superseding record accepted after it is left out (it could not be proven yet), so the statuses
//! the evidence shows are those the checkpoint's log supports.

use crate::error_code::ErrorCode;
use std::collections::{BTreeMap, BTreeSet};

use super::{Completeness, ProofQueryError, SignedCheckpoint, StorageError, Vault};
use crate::ids::{Digest, OwnerId};
use crate::log::Hash;
use crate::statement::{
    CopyCertification, PublicKey, Receipt, Record, RecordRevocation, SignatureValidation, Signed, VaultKeyCertificate,
};
use crate::vault::{AccessEvent, CertificateView};

/// Pages read from the catalog while gathering evidence.
const EXPORT_PAGE_SIZE: usize = 500;

/// What to export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportScope {
    /// An owner's whole store: every record with its content, and the access log with its
    /// completeness evidence.
    Owner(OwnerId),
    /// One record with its content and the evidence of its status, to hand to a third party.
    Record(Digest),
}

/// A statement with the vault's receipt for it.
#[derive(Debug, Clone)]
pub struct Receipted<T> {
    pub statement: Signed<T>,
    pub receipt: Signed<Receipt>,
}

/// One record and the evidence of its status.
#[derive(Debug, Clone)]
pub struct RecordEvidence {
    pub record: Receipted<Record>,
    pub revocation: Option<Receipted<RecordRevocation>>,
    /// An agency's certification of a self-uploaded record as a copy of an original.
    pub certification: Option<Receipted<CopyCertification>>,
    /// The record that superseded this one (its statement only; its content is its owner's).
    pub superseded_by: Option<Receipted<Record>>,
}

/// The owner's access log up to the owner-map commitment, with the evidence that it is complete.
#[derive(Debug, Clone)]
pub struct AccessLogEvidence {
    pub completeness: Completeness,
    /// The owner's chain entries below the commitment, newest first: `(log index, leaf bytes)`.
    pub chain: Vec<(u64, Vec<u8>)>,
    /// The access events among them, newest first, with their log indexes.
    pub events: Vec<(u64, AccessEvent)>,
}

/// A log entry the evidence relies on, with its inclusion proof in the checkpoint when it has one
/// (entries of a complete owner chain are proven by their links instead).
#[derive(Debug, Clone)]
pub struct ProvenEntry {
    pub bytes: Vec<u8>,
    pub inclusion: Option<Vec<Hash>>,
}

/// An earlier vault key: its handover note and the consistency proof from it to the export's checkpoint.
#[derive(Debug, Clone)]
pub struct RetiredKeyEvidence {
    pub key: PublicKey,
    pub handover: String,
    pub consistency: Vec<Hash>,
}

/// Everything an export carries except the documents' bytes, which are streamed from the vault.
#[derive(Debug, Clone)]
pub struct Evidence {
    pub scope: ExportScope,
    pub owner: OwnerId,
    pub checkpoint: SignedCheckpoint,
    pub origin: String,
    pub vault_key: PublicKey,
    pub vault_certificate: Option<Signed<VaultKeyCertificate>>,
    /// The keys the vault signed with before `vault_key`, oldest first.
    pub retired_keys: Vec<RetiredKeyEvidence>,
    pub trust_anchors: Vec<PublicKey>,
    /// The witnesses the vault asks to cosign its checkpoints.
    pub witnesses: Vec<crate::log::checkpoint::VerifierKey>,
    /// Newest first.
    pub records: Vec<RecordEvidence>,
    /// Every certificate of a key that signed a record, revocation or superseding record here.
    pub certificates: Vec<CertificateView>,
    /// By log index.
    pub entries: BTreeMap<u64, ProvenEntry>,
    pub access_log: Option<AccessLogEvidence>,
    /// The vault's validations of X.509 signers: of each statement here, and (for a store) every other
    /// one in the owner's chain; by the validation's id.
    pub validations: BTreeMap<Digest, Receipted<SignatureValidation>>,
    /// The CRLs and OCSP responses those validations used, by the SHA-256 of their DER.
    pub x509_evidence: BTreeMap<Digest, Vec<u8>>,
    /// The detached signatures (`.p7s`) records here were deposited with, by record.
    pub detached_signatures: BTreeMap<Digest, Vec<u8>>,
    /// The X.509 roots the vault trusts, with their agency mappings (as configured now).
    pub x509_roots: Vec<crate::x509::Anchor>,
}

impl Evidence {
    /// How many bytes of documents the export carries.
    pub fn document_bytes(&self) -> u64 {
        self.records.iter().map(|r| r.record.statement.body().size_bytes).sum()
    }
}

/// Why evidence could not be gathered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    #[error("no record {0}")]
    RecordNotFound(Digest),
    #[error(
        "the checkpoint was cosigned by {} of the {} witnesses required, and this vault hands out only witnessed \
         evidence; try again once the witnesses answer", .0.cosigned, .0.quorum
    )]
    NotWitnessed(super::Witnessed),
    #[error(transparent)]
    Proof(#[from] ProofQueryError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<crate::store::StoreError> for ExportError {
    fn from(error: crate::store::StoreError) -> Self {
        ExportError::Storage(error.into())
    }
}

impl ExportError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ExportError::RecordNotFound(_) => ErrorCode::RecordNotFound,
            ExportError::NotWitnessed(_) => ErrorCode::CheckpointNotWitnessed,
            ExportError::Proof(error) => error.code(),
            ExportError::Storage(_) => ErrorCode::StorageError,
        }
    }
}

impl Vault {
    /// Gathers the evidence of `scope` as of a checkpoint signed now (so that everything durable so
    /// far, including the access event recorded for this export, is covered).
    pub fn export_evidence(&self, scope: &ExportScope) -> Result<Evidence, ExportError> {
        // A single record is read before the checkpoint is signed, so the checkpoint covers it.
        let (owner, subject) = match scope {
            ExportScope::Owner(owner) => (owner.clone(), None),
            ExportScope::Record(id) => {
                let view = self.record(id)?.ok_or(ExportError::RecordNotFound(*id))?;
                (view.record.body().owner.clone(), Some(Receipted { statement: view.record, receipt: view.receipt }))
            }
        };
        self.sign_checkpoint()?;
        // Witnesses are asked before the checkpoint leaves, so the bundle carries their cosignatures.
        self.cosign_latest()?;
        // The completeness evidence fixes the checkpoint everything else is taken at.
        let completeness = self.completeness(&owner)?;
        let checkpoint = SignedCheckpoint {
            checkpoint: completeness.evidence.checkpoint.clone(),
            note: completeness.checkpoint_note.clone(),
            witnessed: completeness.witnessed,
        };
        if self.config.witnesses.fail_closed && checkpoint.witnessed.below_quorum() {
            return Err(ExportError::NotWitnessed(checkpoint.witnessed));
        }
        let size = checkpoint.checkpoint.size;
        let records = match subject {
            Some(record) if record.receipt.body().log_index >= size => {
                return Err(ProofQueryError::NotCovered { index: record.receipt.body().log_index, size }.into())
            }
            Some(record) => vec![record],
            None => self.owner_records_below(&owner, size)?,
        };
        let records =
            records.into_iter().map(|record| self.record_evidence(record, size)).collect::<Result<Vec<_>, _>>()?;

        let mut gather = Gather {
            vault: self,
            size,
            entries: BTreeMap::new(),
            signers: BTreeSet::new(),
            validations: BTreeMap::new(),
            x509_evidence: BTreeMap::new(),
            detached_signatures: BTreeMap::new(),
        };
        for evidence in &records {
            gather.statement(&evidence.record)?;
            if let Some(revocation) = &evidence.revocation {
                gather.statement(revocation)?;
            }
            if let Some(certification) = &evidence.certification {
                gather.statement(certification)?;
            }
            if let Some(by) = &evidence.superseded_by {
                gather.statement(by)?;
            }
        }
        let certificates = gather.certificates()?;
        let access_log = match scope {
            ExportScope::Owner(_) => Some(gather.access_log(&owner, completeness)?),
            ExportScope::Record(_) => None,
        };
        Ok(Evidence {
            scope: scope.clone(),
            owner,
            checkpoint,
            origin: self.origin.clone(),
            vault_key: self.public_key(),
            vault_certificate: self.certificate.clone(),
            retired_keys: self
                .retired
                .iter()
                .map(|retired| {
                    let consistency = match retired.until_size {
                        0 => Vec::new(),
                        until => crate::log::consistency_proof(until, size, &self.store)?,
                    };
                    Ok(RetiredKeyEvidence { key: retired.key.clone(), handover: retired.handover.clone(), consistency })
                })
                .collect::<Result<_, StorageError>>()?,
            trust_anchors: self.config.trust_anchors.clone(),
            witnesses: self.config.witnesses.peers.iter().map(|peer| peer.key.clone()).collect(),
            records,
            certificates,
            entries: gather.entries,
            access_log,
            validations: gather.validations,
            x509_evidence: gather.x509_evidence,
            detached_signatures: gather.detached_signatures,
            x509_roots: self.config.x509.store.anchors.clone(),
        })
    }

    /// Every record of `owner` in the log below `size`, newest first.
    fn owner_records_below(&self, owner: &OwnerId, size: u64) -> Result<Vec<Receipted<Record>>, ExportError> {
        let mut records = Vec::new();
        for item in self.store.owner_records(owner, None) {
            let (cursor, id) = item?;
            if cursor.sequence() >= size {
                continue;
            }
            let (statement, sequence) = self
                .decode_statement::<Record>(self.store.record(&id)?)?
                .ok_or_else(|| StorageError::Corrupt(format!("indexed record {id} is missing")))?;
            records.push(Receipted { statement, receipt: self.load_receipt(sequence)? });
        }
        Ok(records)
    }

    /// A record's revocation, certification and superseding record, as of the log's first `size` entries.
    fn record_evidence(&self, record: Receipted<Record>, size: u64) -> Result<RecordEvidence, StorageError> {
        let state = self.store.record_state(&record.statement.id())?;
        let revocation = match self.decode_statement::<RecordRevocation>(state.revocation)? {
            Some((statement, sequence)) if sequence < size => {
                Some(Receipted { statement, receipt: self.load_receipt(sequence)? })
            }
            _ => None,
        };
        let superseded_by = match state.superseded_by {
            None => None,
            Some(by) => match self.decode_statement::<Record>(self.store.record(&by)?)? {
                Some((statement, sequence)) if sequence < size => {
                    Some(Receipted { statement, receipt: self.load_receipt(sequence)? })
                }
                _ => None,
            },
        };
        let certification =
            match self.decode_statement::<CopyCertification>(self.store.copy_certification(&record.statement.id())?)? {
                Some((statement, sequence)) if sequence < size => {
                    Some(Receipted { statement, receipt: self.load_receipt(sequence)? })
                }
                _ => None,
            };
        Ok(RecordEvidence { record, revocation, certification, superseded_by })
    }
}

/// Collects the log entries and signers the evidence relies on.
struct Gather<'v> {
    vault: &'v Vault,
    size: u64,
    entries: BTreeMap<u64, ProvenEntry>,
    signers: BTreeSet<[u8; 32]>,
    validations: BTreeMap<Digest, Receipted<SignatureValidation>>,
    x509_evidence: BTreeMap<Digest, Vec<u8>>,
    detached_signatures: BTreeMap<Digest, Vec<u8>>,
}

impl Gather<'_> {
    fn entry(&mut self, index: u64, proven: bool) -> Result<(), ExportError> {
        if self.entries.get(&index).is_some_and(|entry| entry.inclusion.is_some() || !proven) {
            return Ok(());
        }
        let bytes = self
            .vault
            .store
            .log_entry(index)?
            .ok_or_else(|| StorageError::Corrupt(format!("log entry {index} is missing")))?;
        let inclusion = if proven { Some(self.vault.inclusion_proof(index, Some(self.size))?.hashes) } else { None };
        self.entries.insert(index, ProvenEntry { bytes, inclusion });
        Ok(())
    }

    fn statement<T: crate::statement::StatementBody>(&mut self, statement: &Receipted<T>) -> Result<(), ExportError> {
        self.entry(statement.receipt.body().log_index, true)?;
        let id = statement.statement.id();
        match statement.statement.signer() {
            PublicKey::X509(_) => {
                let entry = self.vault.store.signature_validation(&id)?;
                self.add_validation(entry, &id)
            }
            // The vault's own record of a signed document deposited as it is, trusted through the
            // validation of the document's signature (a self-upload has none), with the detached
            // signature if it came with one.
            signer if self.vault.is_own_key(signer) => {
                if let Some(signature) = self.vault.store.detached_signature(&id)? {
                    self.detached_signatures.insert(id, signature);
                }
                match self.vault.store.signature_validation(&id)? {
                    Some(entry) => self.add_validation(Some(entry), &id),
                    None => Ok(()),
                }
            }
            signer => {
                self.signers.insert(signer.fingerprint().0);
                Ok(())
            }
        }
    }

    /// A validation with its receipt, its log entry and the CRLs and OCSP responses it used.
    fn add_validation(&mut self, entry: Option<crate::store::StatementEntry>, of: &Digest) -> Result<(), ExportError> {
        let missing = || StorageError::Corrupt(format!("the X.509 validation {of} is missing"));
        let (validation, sequence) = self.vault.decode_statement::<SignatureValidation>(entry)?.ok_or_else(missing)?;
        if sequence >= self.size {
            return Err(missing().into());
        }
        for digest in &validation.body().evidence {
            let bytes = self.vault.store.revocation_evidence(digest)?.ok_or_else(|| {
                StorageError::Corrupt(format!("revocation evidence {digest} of the validation {of} is missing"))
            })?;
            self.x509_evidence.insert(*digest, bytes);
        }
        let receipted = Receipted { statement: validation, receipt: self.vault.load_receipt(sequence)? };
        self.entry(sequence, true)?;
        self.validations.insert(receipted.statement.id(), receipted);
        Ok(())
    }

    /// The certificates of every signer seen, with their entries; a certificate or revocation accepted
    /// after the checkpoint is left out.
    fn certificates(&mut self) -> Result<Vec<CertificateView>, ExportError> {
        let mut certificates = Vec::new();
        for fingerprint in std::mem::take(&mut self.signers) {
            for id in self.vault.store.certificates_of_key(&Digest(fingerprint)) {
                let Some(mut view) = self.vault.certificate(&id?)? else { continue };
                if view.receipt.body().log_index >= self.size {
                    continue;
                }
                if view.revocation.as_ref().is_some_and(|(_, receipt)| receipt.body().log_index >= self.size) {
                    view.revocation = None;
                }
                self.entry(view.receipt.body().log_index, true)?;
                if let Some((_, receipt)) = &view.revocation {
                    self.entry(receipt.body().log_index, true)?;
                }
                certificates.push(view);
            }
        }
        Ok(certificates)
    }

    /// The owner's chain below the commitment and the access events in it.
    fn access_log(&mut self, owner: &OwnerId, completeness: Completeness) -> Result<AccessLogEvidence, ExportError> {
        let commitment = completeness.evidence.commitment_index;
        let mut chain = Vec::new();
        let mut before = Some(commitment);
        while let Some(below) = before {
            let page = self.vault.owner_chain(owner, Some(below), EXPORT_PAGE_SIZE)?;
            chain.extend(page.entries);
            before = page.next_before;
        }
        for (index, bytes) in &chain {
            self.entries.entry(*index).or_insert_with(|| ProvenEntry { bytes: bytes.clone(), inclusion: None });
        }
        // Every validation in the owner's chain travels, including one whose statement was then refused
        // (a completeness check needs them all).
        for (_, bytes) in &chain {
            let entry = crate::log::Entry::decode(bytes).map_err(|e| StorageError::Corrupt(e.to_string()))?;
            if entry.kind == crate::log::KIND_SIGNATURE_VALIDATION && !self.validations.contains_key(&entry.id) {
                let stored = self.vault.store.validation(&entry.id)?;
                self.add_validation(stored, &entry.id)?;
            }
        }
        self.entry(commitment, true)?;
        let mut events = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page =
                self.vault.access_log(owner, cursor.as_deref(), EXPORT_PAGE_SIZE).map_err(|error| match error {
                    super::QueryError::Storage(error) => error,
                    other => StorageError::Corrupt(other.to_string()),
                })?;
            events.extend(page.entries.into_iter().filter(|(index, _)| *index < commitment));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        Ok(AccessLogEvidence { completeness, chain, events })
    }
}
