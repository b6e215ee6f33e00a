//! Scrub: re-read everything the vault holds and report what is damaged, changing nothing. Every log
//! leaf is re-hashed against the stored tree and the root rebuilt from the leaves is compared with the
//! newest checkpoint; every receipt and statement is decoded, which re-verifies its signature; every
//! document is read frame by frame (each frame against its BLAKE3 chaining value, which add up to the
//! document's address) and re-hashed with SHA-256.
//!
//! Each damaged thing is one finding, named by log index, record and owner where they are known: a
//! damaged leaf explains the root that differs, so the root is a finding only when every leaf is sound;
//! a document shared by several records is one finding listing them.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;
use std::time::{Duration, Instant};

use sha2::Digest as _;

use super::{StorageError, Vault};
use crate::ids::{Digest, OwnerId};
use crate::log::{self, Entry, Hash, HashSource as _, MemoryTree, KIND_ACCESS_EVENT, KIND_OWNER_MAP};
use crate::statement::{
    CertificateRevocation, CopyCertification, KeyCertificate, Receipt, Record, RecordRevocation, Signed, StatementBody,
};

/// How fast a scrub may read documents; `None` reads as fast as the disk gives.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScrubOptions {
    pub bytes_per_second: Option<u64>,
}

/// Where a scrub is.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScrubProgress {
    pub entries_checked: u64,
    pub entries_total: u64,
    pub document_bytes_read: u64,
}

/// What is damaged.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// A log leaf that does not hash to the stored tree, or does not decode.
    LogEntry,
    /// The root rebuilt from sound leaves differs from the stored tree or the newest checkpoint.
    LogRoot,
    /// A receipt that does not decode, verify or name its entry.
    Receipt,
    /// A statement that does not decode or verify, or is missing.
    Statement,
    /// A document whose frames or hashes fail.
    Content,
}

/// One damaged thing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub log_index: Option<u64>,
    /// The records it concerns (several when they share a document).
    pub records: Vec<Digest>,
    /// Their owners, where known.
    pub owners: Vec<OwnerId>,
    pub detail: String,
}

impl Finding {
    fn new(
        kind: FindingKind,
        log_index: Option<u64>,
        record: Option<Digest>,
        owner: &Option<OwnerId>,
        detail: String,
    ) -> Finding {
        Finding {
            kind,
            log_index,
            records: record.into_iter().collect(),
            owners: owner.iter().cloned().collect(),
            detail,
        }
    }
}

/// What a scrub found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ScrubReport {
    pub entries: u64,
    pub checkpoint_size: Option<u64>,
    pub records: u64,
    pub documents: u64,
    pub document_bytes: u64,
    pub findings: Vec<Finding>,
}

impl Vault {
    /// Re-reads and re-checks everything durable; reports damage, changes nothing.
    pub fn scrub(
        &self,
        options: ScrubOptions,
        mut progress: impl FnMut(ScrubProgress),
    ) -> Result<ScrubReport, StorageError> {
        let size = self.store.durable_size();
        let mut report = ScrubReport { entries: size, ..ScrubReport::default() };
        let mut state = ScrubProgress { entries_total: size, ..ScrubProgress::default() };
        let mut tree = MemoryTree::new();
        let mut damaged_leaves = false;
        // Revocations are reached through what they revoke: those in the log, by index, and those found.
        let mut revocations_logged: BTreeMap<Digest, u64> = BTreeMap::new();
        let mut revocations_stored: BTreeSet<Digest> = BTreeSet::new();
        let mut documents: BTreeMap<Digest, Vec<(Digest, OwnerId)>> = BTreeMap::new();
        let mut pacer = Pacer::new(options.bytes_per_second);
        for index in 0..size {
            let bytes = self.store.log_entry(index)?.unwrap_or_default();
            tree.push(log::leaf_hash(&bytes));
            let leaf_sound = self.store.node(0, index)? == log::leaf_hash(&bytes);
            let entry = Entry::decode(&bytes);
            let owner = entry.as_ref().ok().and_then(|e| e.owner.as_ref().map(|link| link.owner.clone()));
            if !leaf_sound || entry.is_err() {
                damaged_leaves = true;
                let detail = match &entry {
                    Err(error) => format!("log entry {index} does not decode: {error}"),
                    Ok(_) => format!("log entry {index} does not hash to the stored tree's leaf"),
                };
                report.findings.push(Finding::new(FindingKind::LogEntry, Some(index), None, &owner, detail));
            }
            let kind = entry.as_ref().map(|e| e.kind).ok();
            if matches!(kind, Some(KIND_ACCESS_EVENT | KIND_OWNER_MAP)) {
                state.entries_checked += 1;
                continue;
            }
            // A receipted statement: its receipt says which (signed by the vault key).
            let receipt = match self.store.receipt(index)? {
                None => None,
                Some(envelope) => match Signed::<Receipt>::from_envelope(&envelope) {
                    Ok(receipt)
                        if receipt.signer() == &self.key_of_entry(index) && receipt.body().log_index == index =>
                    {
                        Some(receipt)
                    }
                    Ok(_) => {
                        let detail = format!("receipt {index} is not the vault's receipt for entry {index}");
                        report.findings.push(Finding::new(FindingKind::Receipt, Some(index), None, &owner, detail));
                        None
                    }
                    Err(error) => {
                        let detail = format!("receipt {index} does not verify: {error}");
                        report.findings.push(Finding::new(FindingKind::Receipt, Some(index), None, &owner, detail));
                        None
                    }
                },
            };
            let (statement_kind, id) = match (&receipt, &entry) {
                (Some(receipt), _) => (receipt.body().statement_kind, receipt.body().statement),
                (None, Ok(entry)) => (entry.kind, entry.id),
                (None, Err(_)) => {
                    state.entries_checked += 1;
                    continue;
                }
            };
            match statement_kind {
                k if k == Record::KIND => {
                    report.records += 1;
                    match self.scrub_record(&id, &mut revocations_stored) {
                        Ok(record) => {
                            let body = record.body();
                            documents.entry(body.blake3).or_default().push((id, body.owner.clone()));
                        }
                        Err(detail) => report.findings.push(Finding::new(
                            FindingKind::Statement,
                            Some(index),
                            Some(id),
                            &owner,
                            detail,
                        )),
                    }
                }
                k if k == KeyCertificate::KIND => {
                    if let Err(detail) = self.scrub_certificate(&id, &mut revocations_stored) {
                        report.findings.push(Finding::new(FindingKind::Statement, Some(index), None, &None, detail));
                    }
                }
                k if k == crate::statement::SignatureValidation::KIND => {
                    if let Err(detail) = self.scrub_validation(&id) {
                        report.findings.push(Finding::new(FindingKind::Statement, Some(index), None, &owner, detail));
                    }
                }
                k if k == RecordRevocation::KIND
                    || k == CertificateRevocation::KIND
                    || k == CopyCertification::KIND =>
                {
                    revocations_logged.insert(id, index);
                }
                _ => {}
            }
            state.entries_checked += 1;
            progress(state);
        }
        // Revocations and certifications seen in the log but not reached through their record or certificate.
        for (id, index) in revocations_logged.into_iter().filter(|(id, _)| !revocations_stored.contains(id)) {
            let detail = format!("revocation or certification {id} is in the log but not stored with what it concerns");
            report.findings.push(Finding::new(FindingKind::Statement, Some(index), None, &None, detail));
        }
        // The root, from the leaves, against the stored tree and the newest checkpoint.
        let checkpoint = self.latest_checkpoint()?;
        report.checkpoint_size = checkpoint.as_ref().map(|c| c.checkpoint.size);
        if !damaged_leaves {
            let rebuilt = tree.root(size);
            let stored = log::root(size, &self.store)?;
            let mut problems = Vec::new();
            if rebuilt != stored {
                problems.push("the stored tree's root differs from the root rebuilt from the leaves".to_owned());
            }
            if let Some(checkpoint) = &checkpoint {
                let at = checkpoint.checkpoint.size.min(size);
                let root_then: Hash = tree.root(at);
                if checkpoint.checkpoint.size > size || root_then != checkpoint.checkpoint.root {
                    problems.push(format!(
                        "the leaves do not rebuild the newest checkpoint ({} entries)",
                        checkpoint.checkpoint.size
                    ));
                }
            }
            if !problems.is_empty() {
                report.findings.push(Finding::new(FindingKind::LogRoot, None, None, &None, problems.join("; ")));
            }
        }
        // Every document, once.
        for (blake3, records) in documents {
            report.documents += 1;
            match self.scrub_content(&blake3, &mut pacer, &mut |bytes| {
                state.document_bytes_read += bytes;
                progress(state);
            }) {
                Ok(bytes) => report.document_bytes += bytes,
                Err(detail) => {
                    let mut owners: Vec<OwnerId> = records.iter().map(|(_, owner)| owner.clone()).collect();
                    owners.dedup();
                    let records = records.into_iter().map(|(id, _)| id).collect();
                    report.findings.push(Finding {
                        kind: FindingKind::Content,
                        log_index: None,
                        records,
                        owners,
                        detail,
                    })
                }
            }
        }
        progress(state);
        Ok(report)
    }

    /// The record and its revocation, decoded (so verified) with their receipts.
    fn scrub_record(&self, id: &Digest, revocations: &mut BTreeSet<Digest>) -> Result<Signed<Record>, String> {
        let (record, sequence) = self
            .decode_statement::<Record>(self.store.record(id).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("record {id} is in the log but not stored"))?;
        if record.id() != *id {
            return Err(format!("the record stored as {id} is {}", record.id()));
        }
        self.load_receipt(sequence).map_err(|e| e.to_string())?;
        let state = self.store.record_state(id).map_err(|e| e.to_string())?;
        if let Some(entry) = state.revocation {
            let revocation = Signed::<RecordRevocation>::from_envelope(&entry.envelope)
                .map_err(|e| format!("the revocation of record {id} does not verify: {e}"))?;
            revocations.insert(revocation.id());
        }
        if let Some(entry) = self.store.copy_certification(id).map_err(|e| e.to_string())? {
            let certification = Signed::<CopyCertification>::from_envelope(&entry.envelope)
                .map_err(|e| format!("the copy certification of record {id} does not verify: {e}"))?;
            revocations.insert(certification.id());
        }
        Ok(record)
    }

    fn scrub_certificate(&self, id: &Digest, revocations: &mut BTreeSet<Digest>) -> Result<(), String> {
        self.decode_statement::<KeyCertificate>(self.store.certificate(id).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("certificate {id} is in the log but not stored"))?;
        if let Some((revocation, _)) = self
            .decode_statement::<CertificateRevocation>(
                self.store.certificate_revocation(id).map_err(|e| e.to_string())?,
            )
            .map_err(|e| e.to_string())?
        {
            revocations.insert(revocation.id());
        }
        Ok(())
    }

    /// A validation of an X.509 signature: stored, signed by this vault, and every CRL and OCSP
    /// response it names kept with the bytes it names.
    fn scrub_validation(&self, id: &Digest) -> Result<(), String> {
        let (validation, _) = self
            .decode_statement::<crate::statement::SignatureValidation>(
                self.store.validation(id).map_err(|e| e.to_string())?,
            )
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("signature validation {id} is in the log but not stored"))?;
        if !self.is_own_key(validation.signer()) {
            return Err(format!("signature validation {id} is not signed by this vault"));
        }
        for digest in &validation.body().evidence {
            let bytes = self
                .store
                .revocation_evidence(digest)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("signature validation {id}: revocation evidence {digest} is missing"))?;
            if Digest::sha256(&bytes) != *digest {
                return Err(format!("signature validation {id}: revocation evidence {digest} is damaged"));
            }
        }
        Ok(())
    }

    /// Reads a whole document through its frames (each checked against the address) and re-hashes its
    /// SHA-256.
    fn scrub_content(&self, blake3: &Digest, pacer: &mut Pacer, progress: &mut impl FnMut(u64)) -> Result<u64, String> {
        let manifest = self
            .content_manifest(blake3)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("document {blake3} has no stored manifest"))?;
        let sha256_expected = manifest.sha256;
        let mut reader = self.open_content(blake3, None).map_err(|e| e.to_string())?.ok_or("content is missing")?;
        let mut sha256 = sha2::Sha256::new();
        let mut total = 0u64;
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let count = reader.read(&mut buffer).map_err(|e| format!("document {blake3}: {e}"))?;
            if count == 0 {
                break;
            }
            sha256.update(&buffer[..count]);
            total += count as u64;
            progress(count as u64);
            pacer.pace(count as u64);
        }
        if Digest(sha256.finalize().into()) != sha256_expected {
            return Err(format!("document {blake3}: its SHA-256 differs from the one recorded"));
        }
        Ok(total)
    }
}

/// Keeps reading under a byte rate by sleeping.
struct Pacer {
    bytes_per_second: Option<u64>,
    started: Instant,
    bytes: u64,
}

impl Pacer {
    fn new(bytes_per_second: Option<u64>) -> Pacer {
        Pacer { bytes_per_second, started: Instant::now(), bytes: 0 }
    }

    fn pace(&mut self, bytes: u64) {
        let Some(rate) = self.bytes_per_second.filter(|rate| *rate > 0) else { return };
        self.bytes += bytes;
        let due = Duration::from_secs_f64(self.bytes as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(self.started.elapsed()) {
            std::thread::sleep(wait);
        }
    }
}
