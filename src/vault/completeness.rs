//! Completeness for the owner: the owner map (`log::map`) committed into the log, and the evidence that
//! an owner's list of entries is whole up to a commitment.
//!
//! Before each checkpoint the vault appends an owner-map commitment (kind 7) whose id is the root of
//! the map from every owner to the head of their chain, over every entry before it. The map is
//! derived from the log's leaves alone (any auditor holding the entries can rebuild it and compare
//! roots). The bulk of the update is computed outside the commit lock; only the entries accepted
//! meanwhile are added under it, so deposits wait for a few map paths, not for the whole update.
//!
//! An owner then checks their list against the signed checkpoint: the commitment's inclusion proof,
//! the map proof of their chain head, and their chain walked back from that head link by link. A
//! missing, extra or altered entry breaks a link or the count.

use std::collections::{BTreeMap, HashMap};

use super::sequencer::{Acceptance, Decision};
use super::{ProofQueryError, SignedCheckpoint, StorageError, Vault};
use crate::ids::{now_unix_ms, Digest, OwnerId};
use crate::log::chain::CompletenessEvidence;
use crate::log::map::{self, MapWrites, Overlay};
use crate::log::{self, ChainHead, Entry, KIND_OWNER_MAP};
use crate::store::Change;

/// What an owner needs to check that the entries of their chain they were given are all of them, up to
/// an owner-map commitment inside a signed checkpoint.
#[derive(Debug, Clone)]
pub struct Completeness {
    /// The newest checkpoint's signed note (`evidence.checkpoint` is what it says), with the
    /// witnesses' cosignatures kept so far.
    pub checkpoint_note: String,
    /// How many configured witnesses cosigned that checkpoint.
    pub witnessed: super::Witnessed,
    /// The owner's chain head in the map (`None`: no entries yet), as the map proof shows it.
    pub head: Option<ChainHead>,
    pub evidence: CompletenessEvidence,
}

/// Most chain entries walked when the vault checks an owner's completeness itself (for the citizen's
/// pages); a longer chain is checked with `kho access-log --verify`.
pub const COMPLETENESS_CHECK_ENTRIES_MAX: usize = 20_000;

/// An owner's chain checked complete by the vault, with the evidence an outsider would use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedCompleteness {
    /// When the owner-map commitment it is complete up to was made.
    pub through_ms: i64,
    /// How many entries the owner's chain has up to that commitment.
    pub entries: u64,
}

/// A page of an owner's chain entries covered by the owner map, newest first.
#[derive(Debug, Clone)]
pub struct ChainPage {
    /// `(log index, leaf bytes)`.
    pub entries: Vec<(u64, Vec<u8>)>,
    /// Pass as `before` for the next page; `None` after the chain's first entry.
    pub next_before: Option<u64>,
}

/// Owner chains as they stand after some entries: the running heads of the owners touched so far.
struct ChainWalk<'a> {
    vault: &'a Vault,
    heads: HashMap<OwnerId, ChainHead>,
    chain: Vec<(OwnerId, u64)>,
}

impl ChainWalk<'_> {
    /// Follows entries `from..to`, checking that each owner link extends its owner's chain.
    fn follow(&mut self, from: u64, to: u64) -> Result<(), StorageError> {
        for index in from..to {
            let bytes = self
                .vault
                .store
                .log_entry(index)?
                .ok_or_else(|| StorageError::Corrupt(format!("log entry {index} is missing")))?;
            let entry = Entry::decode(&bytes)
                .map_err(|e| StorageError::Corrupt(format!("log entry {index} does not decode: {e}")))?;
            let Some(link) = entry.owner else { continue };
            let current = match self.heads.get(&link.owner) {
                Some(head) => *head,
                None => self.vault.store.owner_map_value(&link.owner)?.unwrap_or_default(),
            };
            let next = current.extended(&link, index, log::leaf_hash(&bytes)).ok_or_else(|| {
                StorageError::Corrupt(format!(
                    "log entry {index} does not extend its owner's chain (position {}, chain length {})",
                    link.position, current.length
                ))
            })?;
            self.chain.push((link.owner.clone(), index));
            self.heads.insert(link.owner, next);
        }
        Ok(())
    }

    /// The map updates for the owners touched since the last call.
    fn updates(&mut self, touched_from: usize) -> BTreeMap<map::Key, Vec<u8>> {
        self.chain[touched_from..]
            .iter()
            .filter_map(|(owner, _)| self.heads.get(owner).map(|head| (map::owner_key(owner), head.encode())))
            .collect()
    }
}

impl Vault {
    /// Appends an owner-map commitment covering every entry before it, if any entry arrived since the
    /// last one. Called with the checkpoint lock held (the map has one writer).
    pub(super) fn commit_owner_map(&self) -> Result<(), StorageError> {
        let covered = self.store.owner_map_commitment()?.map(|(index, _)| index);
        let from = covered.unwrap_or(0);
        let size = self.store.log_size()?;
        // The previous commitment itself extends no chain.
        if size == 0 || covered.is_some_and(|index| size <= index + 1) {
            return Ok(());
        }
        let mut walk = ChainWalk { vault: self, heads: HashMap::new(), chain: Vec::new() };
        walk.follow(from, size)?;
        let (_, first) = map::update(&self.store, &walk.updates(0))?;
        self.accept(|| {
            // Under the commit lock: add what was accepted while the bulk was computed.
            let now = self.store.log_size()?;
            let touched = walk.chain.len();
            walk.follow(size, now)?;
            let (root, later) = map::update(&Overlay { base: &self.store, writes: &first }, &walk.updates(touched))?;
            let mut writes: MapWrites = first;
            writes.extend(later);
            Ok::<_, StorageError>(Decision::Accept(Acceptance {
                kind: KIND_OWNER_MAP,
                id: Digest(root),
                owner: None,
                accepted_at_ms: now_unix_ms(),
                change: Change::OwnerMap { root, writes, chain: std::mem::take(&mut walk.chain) },
                receipted: false,
            }))
        })?;
        Ok(())
    }

    /// The evidence that `owner`'s chain, as [`Vault::owner_chain`] pages it, is complete up to the
    /// newest owner-map commitment inside the newest checkpoint.
    pub fn completeness(&self, owner: &OwnerId) -> Result<Completeness, ProofQueryError> {
        // The checkpoint lock keeps the map and the newest checkpoint from moving while we read them;
        // each commitment is followed by its checkpoint under the same lock.
        let _guard = self.checkpoint_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let checkpoint = self.latest_checkpoint()?.ok_or(ProofQueryError::NoCheckpoint)?;
        let Some((commitment_index, root)) = self.store.owner_map_commitment().map_err(StorageError::from)? else {
            return Err(ProofQueryError::NoCheckpoint);
        };
        let size = checkpoint.checkpoint.size;
        if commitment_index >= size {
            return Err(StorageError::Corrupt(format!(
                "owner-map commitment {commitment_index} is not in the newest checkpoint ({size})"
            ))
            .into());
        }
        let commitment_entry = self
            .store
            .log_entry(commitment_index)
            .map_err(StorageError::from)?
            .ok_or_else(|| StorageError::Corrupt(format!("log entry {commitment_index} is missing")))?;
        let commitment_proof = log::inclusion_proof(commitment_index, size, &self.store).map_err(StorageError::from)?;
        let map_proof = map::prove(&self.store, &map::owner_key(owner)).map_err(StorageError::from)?;
        let head = map::verify(&root, &map::owner_key(owner), &map_proof)
            .map_err(|e| StorageError::Corrupt(format!("the stored owner map does not prove its own root: {e}")))?
            .map(|value| ChainHead::decode(&value))
            .transpose()
            .map_err(|e| StorageError::Corrupt(format!("owner map value: {e}")))?;
        let SignedCheckpoint { checkpoint, note, witnessed } = checkpoint;
        Ok(Completeness {
            checkpoint_note: note,
            witnessed,
            head,
            evidence: CompletenessEvidence {
                checkpoint,
                commitment_index,
                commitment_entry,
                commitment_proof,
                map_proof,
            },
        })
    }

    /// Checks `owner`'s chain against the newest checkpoint the way `kho access-log --verify` does:
    /// `None` before the first checkpoint; `Some(Err(reason))` if the check fails or the chain is longer
    /// than [`COMPLETENESS_CHECK_ENTRIES_MAX`].
    pub fn check_completeness(
        &self,
        owner: &OwnerId,
    ) -> Result<Option<Result<CheckedCompleteness, String>>, StorageError> {
        let completeness = match self.completeness(owner) {
            Ok(completeness) => completeness,
            Err(ProofQueryError::NoCheckpoint) => return Ok(None),
            Err(ProofQueryError::Storage(error)) => return Err(error),
            Err(other) => return Ok(Some(Err(other.to_string()))),
        };
        let length = completeness.head.map_or(0, |head| head.length);
        if length > COMPLETENESS_CHECK_ENTRIES_MAX as u64 {
            return Ok(Some(Err(format!("{length} entries: check them with `kho access-log --verify`"))));
        }
        let mut chain = Vec::new();
        let mut before = None;
        loop {
            let page = self.owner_chain(owner, before, super::PAGE_SIZE_MAX)?;
            chain.extend(page.entries);
            match page.next_before {
                Some(next) if chain.len() <= COMPLETENESS_CHECK_ENTRIES_MAX => before = Some(next),
                _ => break,
            }
        }
        let evidence = &completeness.evidence;
        let through_ms = Entry::decode(&evidence.commitment_entry).map(|entry| entry.accepted_at_ms);
        Ok(Some(match (log::chain::verify_completeness(owner, evidence, &chain), through_ms) {
            (Ok(complete), Ok(through_ms)) => {
                Ok(CheckedCompleteness { through_ms, entries: complete.head.map_or(0, |head| head.length) })
            }
            (Err(error), _) => Err(error.to_string()),
            (_, Err(error)) => Err(error.to_string()),
        }))
    }

    /// A page of `owner`'s chain entries covered by the owner map, newest first, with log index below
    /// `before` (from the newest when `None`).
    pub fn owner_chain(
        &self,
        owner: &OwnerId,
        before: Option<u64>,
        page_size: usize,
    ) -> Result<ChainPage, StorageError> {
        let mut entries = Vec::new();
        for index in self.store.owner_chain(owner, before).take(page_size) {
            let index = index?;
            let bytes = self
                .store
                .log_entry(index)?
                .ok_or_else(|| StorageError::Corrupt(format!("log entry {index} is missing")))?;
            entries.push((index, bytes));
        }
        let next_before = match entries.last() {
            Some((index, _)) if entries.len() == page_size => Some(*index),
            _ => None,
        };
        Ok(ChainPage { entries, next_before })
    }
}
