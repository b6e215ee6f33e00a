//! Owner chains and the owner map, checked from the outside: [`Rebuild`] replays the log's entries
//! the way an auditor does and checks every owner-map commitment against the map it rebuilds;
//! [`verify_completeness`] is the owner's check that the chain entries they were given are all of
//! theirs up to a commitment inside a checkpoint (docs/FORMAT.md section 4.4).

use std::collections::{BTreeMap, BTreeSet};

use super::map::{self, Empty, Key, MapProof, MapWrites, Overlay};
use super::{leaf_hash, verify_inclusion, Checkpoint, Entry, Hash, OwnerLink, ProofError, KIND_OWNER_MAP};
use crate::ids::OwnerId;
use crate::statement::{DecodeError, Reader};

/// The head of an owner's chain: the owner map's value for the owner (and the sequencer's running
/// state). Encoded for the map as `length u64 | index u64 | head [32]`, big-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChainHead {
    /// How many entries the owner's chain holds.
    pub length: u64,
    /// The log index of the newest one.
    pub index: u64,
    /// Its leaf hash (zeros while the chain is empty).
    pub head: Hash,
}

impl ChainHead {
    pub fn encode(&self) -> Vec<u8> {
        [&self.length.to_be_bytes()[..], &self.index.to_be_bytes(), &self.head].concat()
    }

    pub fn decode(bytes: &[u8]) -> Result<ChainHead, DecodeError> {
        let mut reader = Reader::new(bytes);
        let length = reader.u64("chain length")?;
        let index = reader.u64("chain head index")?;
        let head = reader.digest("chain head")?.0;
        reader.finish()?;
        Ok(ChainHead { length, index, head })
    }

    /// The head after appending the entry at `index` with leaf hash `leaf`, if `link` continues this
    /// chain (the next position, pointing at this head); `None` if it does not.
    pub fn extended(&self, link: &OwnerLink, index: u64, leaf: Hash) -> Option<ChainHead> {
        (link.position == self.length + 1 && link.previous == self.head).then_some(ChainHead {
            length: link.position,
            index,
            head: leaf,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    #[error("log entry {index} does not decode: {error}")]
    Undecodable { index: u64, error: DecodeError },
    #[error("log entry {index} does not extend its owner's chain")]
    BrokenChain { index: u64 },
    #[error("owner-map commitment {index} does not commit to the map of the entries before it")]
    WrongCommitment { index: u64 },
    #[error("the owner-map commitment is not in the checkpoint: {0}")]
    CommitmentNotIncluded(ProofError),
    #[error("log entry {0} is not an owner-map commitment")]
    NotACommitment(u64),
    #[error("the owner-map proof fails: {0}")]
    MapProof(map::MapProofError),
    #[error("the owner's chain head does not decode: {0}")]
    Head(DecodeError),
    #[error("the chain entry at position {position} is missing, altered or out of order")]
    ChainMismatch { position: u64 },
    #[error("the chain has {extra} entries more than the owner map commits to")]
    ExtraEntries { extra: usize },
    #[error("the chain holds {given} entries; the owner map commits to {committed}")]
    MissingEntries { given: u64, committed: u64 },
}

/// Replays the log from its first entry, rebuilding every owner's chain and the owner map, and checks
/// each link and each commitment.
#[derive(Debug, Default, Clone)]
pub struct Rebuild {
    map: MapWrites,
    heads: BTreeMap<Key, ChainHead>,
    touched: BTreeSet<Key>,
    size: u64,
}

impl Rebuild {
    pub fn new() -> Rebuild {
        Rebuild::default()
    }

    /// How many entries were pushed.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Takes the next entry (its log index is the number pushed before it).
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), ChainError> {
        let index = self.size;
        let entry = Entry::decode(bytes).map_err(|error| ChainError::Undecodable { index, error })?;
        if let Some(link) = &entry.owner {
            let key = map::owner_key(&link.owner);
            let current = self.heads.get(&key).copied().unwrap_or_default();
            let next = current.extended(link, index, leaf_hash(bytes)).ok_or(ChainError::BrokenChain { index })?;
            self.heads.insert(key, next);
            self.touched.insert(key);
        }
        if entry.kind == KIND_OWNER_MAP && entry.id.0 != self.root() {
            return Err(ChainError::WrongCommitment { index });
        }
        self.size += 1;
        Ok(())
    }

    /// The root of the owner map over the entries pushed so far.
    pub fn root(&mut self) -> Hash {
        let updates: BTreeMap<Key, Vec<u8>> =
            std::mem::take(&mut self.touched).into_iter().map(|key| (key, self.heads[&key].encode())).collect();
        let (root, writes) = match map::update(&Overlay { base: &Empty, writes: &self.map }, &updates) {
            Ok(update) => update,
            // An update over memory alone reads only what it wrote itself.
            Err(inconsistency) => unreachable!("an in-memory owner map is inconsistent: {inconsistency}"),
        };
        self.map.extend(writes);
        root
    }

    /// An owner's chain head after the entries pushed so far.
    pub fn head(&self, owner: &OwnerId) -> Option<ChainHead> {
        self.heads.get(&map::owner_key(owner)).copied()
    }
}

/// The evidence an owner checks: a checkpoint (its signature already checked), the owner-map
/// commitment inside it (its log index, leaf bytes and inclusion proof; it covers the entries before
/// it), and the owner's proof in that map.
#[derive(Debug, Clone)]
pub struct CompletenessEvidence {
    pub checkpoint: Checkpoint,
    pub commitment_index: u64,
    pub commitment_entry: Vec<u8>,
    pub commitment_proof: Vec<Hash>,
    pub map_proof: MapProof,
}

/// An owner's chain, checked complete: its head in the owner map (`None`: no entries) and its entries
/// with their log indexes, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompleteChain {
    pub head: Option<ChainHead>,
    pub entries: Vec<(u64, Entry)>,
}

/// Checks that `chain` (the owner's chain entries as `(log index, leaf bytes)`, newest first) is the
/// whole of `owner`'s chain up to the owner-map commitment of `evidence`: the commitment is in the
/// checkpoint, the map proves the owner's head and length, and the entries link from that head back to
/// the first.
pub fn verify_completeness(
    owner: &OwnerId,
    evidence: &CompletenessEvidence,
    chain: &[(u64, Vec<u8>)],
) -> Result<CompleteChain, ChainError> {
    let checkpoint = &evidence.checkpoint;
    verify_inclusion(
        evidence.commitment_index,
        checkpoint.size,
        &leaf_hash(&evidence.commitment_entry),
        &evidence.commitment_proof,
        &checkpoint.root,
    )
    .map_err(ChainError::CommitmentNotIncluded)?;
    let commitment = Entry::decode(&evidence.commitment_entry)
        .map_err(|error| ChainError::Undecodable { index: evidence.commitment_index, error })?;
    if commitment.kind != KIND_OWNER_MAP {
        return Err(ChainError::NotACommitment(evidence.commitment_index));
    }
    let head = map::verify(&commitment.id.0, &map::owner_key(owner), &evidence.map_proof)
        .map_err(ChainError::MapProof)?
        .map(|value| ChainHead::decode(&value))
        .transpose()
        .map_err(ChainError::Head)?;
    let committed = head.unwrap_or_default();
    let (mut expected, mut position) = (committed.head, committed.length);
    let mut entries = Vec::with_capacity(chain.len());
    for (index, bytes) in chain {
        if position == 0 {
            return Err(ChainError::ExtraEntries { extra: chain.len() - entries.len() });
        }
        let entry = Entry::decode(bytes).map_err(|error| ChainError::Undecodable { index: *index, error })?;
        let link = entry.owner.as_ref().filter(|link| &link.owner == owner && link.position == position);
        // The newest entry is the head the map names; all are below the commitment.
        let index_ok = (!entries.is_empty() || *index == committed.index) && *index < evidence.commitment_index;
        match link {
            Some(link) if leaf_hash(bytes) == expected && index_ok => {
                expected = link.previous;
                position -= 1;
            }
            _ => return Err(ChainError::ChainMismatch { position }),
        }
        entries.push((*index, entry));
    }
    if position != 0 {
        return Err(ChainError::MissingEntries { given: chain.len() as u64, committed: committed.length });
    }
    Ok(CompleteChain { head, entries })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Digest;
    use crate::log::MemoryTree;

    fn owner(text: &str) -> OwnerId {
        OwnerId::parse(text).expect("owner")
    }

    /// A log of three owners' entries with commitments, built as the vault builds it.
    struct Log {
        entries: Vec<Vec<u8>>,
        rebuild: Rebuild,
    }

    impl Log {
        fn push(&mut self, who: Option<&OwnerId>) {
            let index = self.rebuild.size();
            let link = who.map(|who| {
                let head = self.rebuild.head(who).unwrap_or_default();
                OwnerLink { owner: who.clone(), position: head.length + 1, previous: head.head }
            });
            let entry = Entry { kind: 6, accepted_at_ms: index as i64, id: Digest([index as u8; 32]), owner: link };
            self.add(entry.encode());
        }
        fn commit(&mut self) {
            let root = self.rebuild.root();
            self.add(Entry { kind: KIND_OWNER_MAP, accepted_at_ms: 0, id: Digest(root), owner: None }.encode());
        }
        fn add(&mut self, bytes: Vec<u8>) {
            self.rebuild.push(&bytes).expect("a well-formed log");
            self.entries.push(bytes);
        }
    }

    #[test]
    fn an_owners_chain_verifies_complete_and_any_gap_or_extra_fails() {
        let (alice, bob) = (owner("001204012345"), owner("079088001234"));
        let mut log = Log { entries: Vec::new(), rebuild: Rebuild::new() };
        for round in 0..5 {
            log.push(Some(&alice));
            log.push(Some(&bob));
            log.push(None);
            if round % 2 == 1 {
                log.push(Some(&alice));
            }
        }
        // A commitment, then an entry it does not cover (which leaves the committed map as it was).
        log.commit();
        let commitment_index = log.entries.len() as u64 - 1;
        log.push(Some(&alice));
        let committed_map = &log.rebuild.map;
        let mut tree = MemoryTree::new();
        log.entries.iter().for_each(|bytes| tree.push(leaf_hash(bytes)));
        let size = tree.size();
        let checkpoint = Checkpoint { origin: "test".into(), size, root: tree.root(size) };
        let proof = tree.inclusion_proof(commitment_index, size);
        let map_proof =
            map::prove(&Overlay { base: &Empty, writes: committed_map }, &map::owner_key(&alice)).expect("prove");
        let evidence = CompletenessEvidence {
            checkpoint,
            commitment_index,
            commitment_entry: log.entries[commitment_index as usize].clone(),
            commitment_proof: proof,
            map_proof,
        };
        let chain: Vec<(u64, Vec<u8>)> = log
            .entries
            .iter()
            .enumerate()
            .take(commitment_index as usize)
            .rev()
            .filter(|(_, bytes)| Entry::decode(bytes).expect("entry").owner.is_some_and(|link| link.owner == alice))
            .map(|(index, bytes)| (index as u64, bytes.clone()))
            .collect();
        let complete = verify_completeness(&alice, &evidence, &chain).expect("complete");
        assert_eq!(complete.head.expect("head").length, 7);
        assert_eq!(complete.entries.len(), 7);

        // One hidden in the middle, one dropped from the end, one extra, one altered: each fails.
        let without = |at: usize| [&chain[..at], &chain[at + 1..]].concat();
        assert!(matches!(verify_completeness(&alice, &evidence, &without(3)), Err(ChainError::ChainMismatch { .. })));
        assert!(matches!(
            verify_completeness(&alice, &evidence, &without(6)),
            Err(ChainError::MissingEntries { given: 6, committed: 7 })
        ));
        let newer = (commitment_index + 1, log.entries[commitment_index as usize + 1].clone());
        assert!(verify_completeness(&alice, &evidence, &[vec![newer], chain.clone()].concat()).is_err());
        let mut altered = chain.clone();
        altered[2].1[5] ^= 1;
        assert!(verify_completeness(&alice, &evidence, &altered).is_err());
        // Bob's proof does not pass for Alice.
        let bob_proof =
            map::prove(&Overlay { base: &Empty, writes: committed_map }, &map::owner_key(&bob)).expect("prove");
        let bob_evidence = CompletenessEvidence { map_proof: bob_proof, ..evidence };
        assert!(verify_completeness(&alice, &bob_evidence, &chain).is_err());
    }

    #[test]
    fn a_rebuild_refuses_a_broken_link_and_a_false_commitment() {
        let alice = owner("001204012345");
        let mut log = Log { entries: Vec::new(), rebuild: Rebuild::new() };
        log.push(Some(&alice));
        log.push(Some(&alice));
        let forked = Entry {
            kind: 6,
            accepted_at_ms: 9,
            id: Digest([9; 32]),
            owner: Some(OwnerLink { owner: alice.clone(), position: 2, previous: leaf_hash(&log.entries[0]) }),
        };
        assert_eq!(log.rebuild.clone().push(&forked.encode()), Err(ChainError::BrokenChain { index: 2 }));
        let false_commitment = Entry { kind: KIND_OWNER_MAP, accepted_at_ms: 0, id: Digest([1; 32]), owner: None };
        assert_eq!(log.rebuild.clone().push(&false_commitment.encode()), Err(ChainError::WrongCommitment { index: 2 }));
        log.commit();
    }
}
