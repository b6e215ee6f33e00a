//! The one acceptance path. Every accepted statement (record, record revocation, key certificate,
//! certificate revocation) and every access event goes through [`Vault::accept`]: under the commit
//! lock the caller's `decide` checks the input against the catalog as it stands (committed entries
//! included, durable or not, so two callers can never both accept the same thing); then the sequencer
//! takes the next log index, builds the log leaf with the owner's chain link, computes the tree nodes
//! the leaf completes, signs the receipt, and commits all of it with the change as one atomic batch.
//! The lock is released, the group sync makes the batch durable, and only then do readers see it
//! (`Store::durable_size`): nothing is readable, listed or signed into a checkpoint before it survives
//! a power cut. (An access entry the HTTP server records is committed here and its sync awaited by
//! the server without a thread, `Vault::commit_access`; nothing is answered before it.)

use super::{Accepted, StorageError, Vault};
use crate::ids::{Digest, OwnerId};
use crate::log::{self, ChainHead, Entry, OwnerLink};
use crate::statement::{Receipt, Signed};
use crate::store::{Change, Commit, LogAppend};

/// What to accept.
pub(super) struct Acceptance {
    /// The statement kind (`StatementBody::KIND`) or [`log::KIND_ACCESS_EVENT`].
    pub kind: u8,
    /// The statement id, or the access event's id.
    pub id: Digest,
    /// The person whose chain the entry extends (records, their revocations, accesses to their data).
    pub owner: Option<OwnerId>,
    pub accepted_at_ms: i64,
    pub change: Change,
    /// Statements get a receipt; access events are answered with their log index alone.
    pub receipted: bool,
}

/// What `decide` found. (Built once per call and moved straight into the sequencer, so the size
/// difference between the variants costs nothing.)
#[allow(clippy::large_enum_variant)]
pub(super) enum Decision {
    Accept(Acceptance),
    /// The same statement was accepted before, at this sequence number: answer with its receipt.
    Existing {
        id: Digest,
        sequence: u64,
    },
}

/// An accepted entry: its log index and, for a statement, its receipt.
pub(super) struct Sequenced {
    pub id: Digest,
    pub index: u64,
    pub receipt: Option<Signed<Receipt>>,
    pub newly_accepted: bool,
}

impl Sequenced {
    /// The answer to a statement (which always has a receipt).
    pub fn accepted(self) -> Result<Accepted, StorageError> {
        let receipt =
            self.receipt.ok_or_else(|| StorageError::Corrupt(format!("log entry {} has no receipt", self.index)))?;
        Ok(Accepted { id: self.id, receipt, newly_accepted: self.newly_accepted })
    }
}

impl Vault {
    /// Accepts what `decide` says, durably and in log order; see the module docs.
    pub(super) fn accept<E: From<StorageError>>(
        &self,
        decide: impl FnOnce() -> Result<Decision, E>,
    ) -> Result<Sequenced, E> {
        let sequenced = self.accept_committed(decide)?;
        // For an earlier acceptance too: its first caller may still be waiting for this sync.
        self.store.sync().map_err(StorageError::from)?;
        Ok(sequenced)
    }

    /// [`Vault::accept`] up to the commit, without waiting for it to be durable: the caller must wait
    /// (`Store::durable`, for `index + 1` entries) before answering on its strength.
    pub(super) fn accept_committed<E: From<StorageError>>(
        &self,
        decide: impl FnOnce() -> Result<Decision, E>,
    ) -> Result<Sequenced, E> {
        let _guard = self.lock();
        Ok(match decide()? {
            Decision::Accept(acceptance) => self.append(acceptance)?,
            Decision::Existing { id, sequence } => {
                Sequenced { id, index: sequence, receipt: Some(self.load_receipt(sequence)?), newly_accepted: false }
            }
        })
    }

    /// The sequencer's step, with the commit lock held.
    fn append(&self, acceptance: Acceptance) -> Result<Sequenced, StorageError> {
        let Acceptance { kind, id, owner, accepted_at_ms, change, receipted } = acceptance;
        let index = self.store.log_size()?;
        let link = match owner {
            None => None,
            Some(owner) => {
                let head = self.store.owner_head(&owner)?;
                Some(OwnerLink { owner, position: head.length + 1, previous: head.head })
            }
        };
        let entry = Entry { kind, accepted_at_ms, id, owner: link };
        let bytes = entry.encode();
        let leaf = log::leaf_hash(&bytes);
        let nodes = log::tree::appended_nodes(index, leaf, &self.store)?;
        let owner_head = entry.owner.map(|link| (link.owner, ChainHead { length: link.position, head: leaf, index }));
        let receipt = receipted.then(|| {
            Signed::sign(Receipt { statement: id, statement_kind: kind, log_index: index, accepted_at_ms }, &self.key)
        });
        // Every statement reaching here was signed by the vault or decoded with its signature verified
        // (`Signed`), so its envelope is sealed as verified.
        let seal = change.statement_envelope().and_then(|envelope| self.verified.seal(envelope));
        let changes_trust = matches!(change, Change::Certificate { .. } | Change::CertificateRevocation { .. });
        let committed = self.store.commit(Commit {
            sequence: index,
            receipt: receipt.as_ref().map(Signed::to_envelope),
            change,
            seal,
            log: LogAppend { entry: bytes, nodes, owner_head },
        });
        if changes_trust {
            // Applied (or attempted), not yet durable, the commit lock still held: the standings the
            // trust check keeps are let go before any sync can make the change count, and before the
            // next acceptance's check, which runs under this lock (`standing`).
            self.standings.changed();
        }
        committed?;
        Ok(Sequenced { id, index, receipt, newly_accepted: true })
    }
}

#[cfg(test)]
mod tests {
    use crate::ids::{now_unix_ms, Code, OwnerId};
    use crate::statement::{KeyCertificate, SecretKey, Signed};
    use crate::store::memory::Memory;
    use crate::vault::{Vault, VaultConfig};

    fn key(seed: u8) -> SecretKey {
        SecretKey::from_ed25519(ed25519_dalek::SigningKey::from_bytes(&[seed; 32]))
    }

    /// The sequencer stores every statement with the vault's seal of its envelope, and a read trusts a
    /// seal only while it matches: a damaged seal costs the full signature check, not the record.
    #[test]
    fn accepted_statements_are_stored_sealed_and_a_damaged_seal_is_only_checked_again() {
        let memory = Memory::new();
        let dir = tempfile::tempdir().expect("tempdir");
        let (anchor, issuer) = (key(1), key(2));
        let vault =
            Vault::open_on(VaultConfig::new(dir.path(), vec![anchor.public_key()]), memory.engines()).expect("vault");
        let agency = Code::parse("agency", "000.00.00.H26").expect("code");
        let now = now_unix_ms();
        let certificate = KeyCertificate {
            agency: agency.clone(),
            subject: issuer.public_key(),
            valid_from_ms: now - 1000,
            valid_until_ms: now + 86_400_000,
            signed_at_ms: now,
        };
        let certificate =
            vault.add_certificate(&Signed::sign(certificate, &anchor).to_envelope()).expect("certificate");
        let content = crate::sample::document(5000, 1, true);
        let owner = OwnerId::parse(crate::sample::DEMO_OWNER).expect("owner");
        let record = crate::sample::record(&content, &owner, &agency, now);
        let accepted = vault.deposit(&Signed::sign(record, &issuer).to_envelope(), &content[..]).expect("deposit");

        let stored = vault.store.record(&accepted.id).expect("read").expect("present");
        let seal = stored.seal.expect("a record is stored sealed");
        assert_eq!(Some(seal), vault.verified.seal(&stored.envelope));
        let stored_certificate = vault.store.certificate(&certificate.id).expect("read").expect("present");
        assert_eq!(stored_certificate.seal, vault.verified.seal(&stored_certificate.envelope), "a certificate too");
        assert_ne!(stored_certificate.seal, Some(seal));

        // A damaged seal, read by a vault that remembers nothing as verified: the record still reads,
        // its signature checked in full.
        assert_eq!(memory.flip_bytes(&seal), 1);
        drop(vault);
        let memory = memory.crash();
        let vault =
            Vault::open_on(VaultConfig::new(dir.path(), vec![anchor.public_key()]), memory.engines()).expect("reopen");
        let damaged = vault.store.record(&accepted.id).expect("read").expect("present");
        assert!(damaged.seal.is_some_and(|damaged| damaged != seal));
        let read = vault.record_statement(&accepted.id).expect("read").expect("present");
        assert_eq!(read.to_envelope(), stored.envelope);
    }
}
