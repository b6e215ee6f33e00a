//! The owner map: a verifiable map from each owner to the head of their chain in the log, so that an
//! owner can check that the entries they were shown are *all* of theirs up to a point, not just that
//! each one exists (docs/FORMAT.md section 4.4).
//!
//! It is a sparse Merkle tree over 256-bit keys with single-leaf subtrees collapsed: the hash of an empty
//! subtree is 32 zero bytes, a subtree holding one leaf has that leaf's hash whatever its depth, and any
//! other subtree hashes its two halves as `SHA-256(0x03 || left || right)`, the left half being the keys
//! whose next bit is 0. A leaf's hash is `SHA-256(0x02 || key || value)`. A proof is the sibling hash at
//! every depth down to where the key's subtree holds at most one leaf, and that leaf (if any): it proves
//! the key's value, or that the key is absent. With n keys a proof has about log2(n) hashes, and an
//! update recomputes only the paths of the keys it changes.
//!
//! The map is read through [`MapSource`] (the catalog, or memory), stores a hash for every subtree of
//! two or more leaves, and never removes a key (owners' chains only grow), so an update only adds or
//! overwrites. Nothing here touches storage.

use std::collections::BTreeMap;

use sha2::{Digest as _, Sha256};

use super::Hash;
use crate::ids::OwnerId;

/// A map key: SHA-256 of what it names.
pub type Key = [u8; 32];

/// The hash of an empty subtree, and the root of the empty map.
pub const EMPTY: Hash = [0; 32];
/// Keys have 256 bits, so a map is at most 256 levels deep.
pub const KEY_BITS: usize = 256;

/// The owner map's key for an owner: SHA-256 of the owner id's ASCII.
pub fn owner_key(owner: &OwnerId) -> Key {
    Sha256::digest(owner.as_str().as_bytes()).into()
}

/// A leaf's hash: SHA-256(0x02 || key || value).
pub fn leaf_hash(key: &Key, value: &[u8]) -> Hash {
    Sha256::new().chain_update([0x02]).chain_update(key).chain_update(value).finalize().into()
}

/// The hash of a subtree of two or more leaves: SHA-256(0x03 || left || right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Sha256::new().chain_update([0x03]).chain_update(left).chain_update(right).finalize().into()
}

/// Bit `depth` of a key, most significant first.
pub fn bit(key: &Key, depth: usize) -> bool {
    key[depth / 8] & (0x80 >> (depth % 8)) != 0
}

/// The key with every bit from `depth` on cleared: the name of the subtree at `depth` holding it.
pub fn prefix(key: &Key, depth: usize) -> Key {
    let mut prefix = [0; 32];
    let whole = depth / 8;
    prefix[..whole].copy_from_slice(&key[..whole]);
    if !depth.is_multiple_of(8) {
        prefix[whole] = key[whole] & !(0xff >> (depth % 8));
    }
    prefix
}

/// Whether `key` lies in the subtree at `depth` named by `prefix`.
pub fn has_prefix(key: &Key, depth: usize, prefix_key: &Key) -> bool {
    prefix(key, depth) == *prefix_key
}

fn with_bit(key: &Key, depth: usize) -> Key {
    let mut key = *key;
    key[depth / 8] |= 0x80 >> (depth % 8);
    key
}

/// The map was found in a state no correct update leaves (a stored node missing or extra).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the owner map is inconsistent: {0}")]
pub struct MapInconsistency(pub String);

/// Where a map's stored leaves and subtree hashes come from.
pub trait MapSource {
    type Error: From<MapInconsistency>;
    /// The stored hash of the subtree at `depth` named by `prefix`, which exists exactly when that
    /// subtree holds two or more leaves.
    fn node(&self, depth: usize, prefix: &Key) -> Result<Option<Hash>, Self::Error>;
    /// Up to `limit` leaves of the subtree at `depth` named by `prefix`, in key order.
    fn leaves(&self, depth: usize, prefix: &Key, limit: usize) -> Result<Vec<(Key, Vec<u8>)>, Self::Error>;
}

/// What an update writes: new or changed leaves and subtree hashes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapWrites {
    pub leaves: BTreeMap<Key, Vec<u8>>,
    /// `(depth, prefix) -> hash` of every subtree of two or more leaves the update touched.
    pub nodes: BTreeMap<(u8, Key), Hash>,
}

impl MapWrites {
    /// Adds `later` on top of these writes (later values win).
    pub fn extend(&mut self, later: MapWrites) {
        self.leaves.extend(later.leaves);
        self.nodes.extend(later.nodes);
    }
}

/// A map source with pending writes laid over it; over [`Empty`] it is a map held in memory.
pub struct Overlay<'a, S> {
    pub base: &'a S,
    pub writes: &'a MapWrites,
}

impl<S: MapSource> MapSource for Overlay<'_, S> {
    type Error = S::Error;

    fn node(&self, depth: usize, prefix: &Key) -> Result<Option<Hash>, S::Error> {
        match u8::try_from(depth).ok().and_then(|depth| self.writes.nodes.get(&(depth, *prefix))) {
            Some(hash) => Ok(Some(*hash)),
            None => self.base.node(depth, prefix),
        }
    }

    fn leaves(&self, depth: usize, prefix: &Key, limit: usize) -> Result<Vec<(Key, Vec<u8>)>, S::Error> {
        // Both sides are in key order: merge them, the pending value winning for a key in both.
        let mut merged: BTreeMap<Key, Vec<u8>> = self.base.leaves(depth, prefix, limit)?.into_iter().collect();
        let pending = self.writes.leaves.range(*prefix..).take_while(|(key, _)| has_prefix(key, depth, prefix));
        for (key, value) in pending.take(limit) {
            merged.insert(*key, value.clone());
        }
        Ok(merged.into_iter().take(limit).collect())
    }
}

/// The map with nothing in it.
pub struct Empty;

impl MapSource for Empty {
    type Error = MapInconsistency;
    fn node(&self, _: usize, _: &Key) -> Result<Option<Hash>, MapInconsistency> {
        Ok(None)
    }
    fn leaves(&self, _: usize, _: &Key, _: usize) -> Result<Vec<(Key, Vec<u8>)>, MapInconsistency> {
        Ok(Vec::new())
    }
}

/// The current hash of the subtree at `depth` named by `prefix`.
fn subtree_hash<S: MapSource>(source: &S, depth: usize, prefix: &Key) -> Result<Hash, S::Error> {
    if let Some(hash) = source.node(depth, prefix)? {
        return Ok(hash);
    }
    match source.leaves(depth, prefix, 2)?.as_slice() {
        [] => Ok(EMPTY),
        [(key, value)] => Ok(leaf_hash(key, value)),
        _ => Err(MapInconsistency(format!("the subtree at depth {depth} holds several leaves but no hash")).into()),
    }
}

/// The map's root.
pub fn root<S: MapSource>(source: &S) -> Result<Hash, S::Error> {
    subtree_hash(source, 0, &[0; 32])
}

/// Sets each key of `updates` to its value (adding the keys that are new) and returns the new root and
/// what to write. Reads only the paths of the updated keys and their siblings.
pub fn update<S: MapSource>(source: &S, updates: &BTreeMap<Key, Vec<u8>>) -> Result<(Hash, MapWrites), S::Error> {
    let updates: Vec<(Key, &[u8])> = updates.iter().map(|(key, value)| (*key, value.as_slice())).collect();
    let mut writes = MapWrites::default();
    let root = update_subtree(source, 0, &[0; 32], &updates, &mut writes)?;
    writes.leaves.extend(updates.iter().map(|(key, value)| (*key, value.to_vec())));
    Ok((root, writes))
}

fn update_subtree<S: MapSource>(
    source: &S,
    depth: usize,
    prefix: &Key,
    updates: &[(Key, &[u8])],
    writes: &mut MapWrites,
) -> Result<Hash, S::Error> {
    let [(first_key, first_value), ..] = updates else {
        return subtree_hash(source, depth, prefix);
    };
    // Does the subtree hold two or more leaves once updated? Then it is a node; else the one leaf.
    let branches = source.node(depth, prefix)?.is_some() || updates.len() > 1 || {
        let existing = source.leaves(depth, prefix, 2)?;
        existing.iter().any(|(key, _)| key != first_key)
    };
    if !branches {
        return Ok(leaf_hash(first_key, first_value));
    }
    let depth_u8 =
        u8::try_from(depth).map_err(|_| MapInconsistency("two keys agree on all 256 bits but differ".to_owned()))?;
    let split = updates.partition_point(|(key, _)| !bit(key, depth));
    let right_prefix = with_bit(prefix, depth);
    let left = update_subtree(source, depth + 1, prefix, &updates[..split], writes)?;
    let right = update_subtree(source, depth + 1, &right_prefix, &updates[split..], writes)?;
    let hash = node_hash(&left, &right);
    writes.nodes.insert((depth_u8, *prefix), hash);
    Ok(hash)
}

/// That a key has a value in a map, or has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapProof {
    /// The sibling subtree's hash at each depth from 1 down, along the key's path.
    pub siblings: Vec<Hash>,
    /// The one leaf in the key's subtree below the last sibling, if any: the key's own (the key is
    /// present) or another key's (absent), or none (absent).
    pub leaf: Option<(Key, Vec<u8>)>,
}

/// The proof for `key` in the map as `source` holds it.
pub fn prove<S: MapSource>(source: &S, key: &Key) -> Result<MapProof, S::Error> {
    let mut siblings = Vec::new();
    let mut depth = 0;
    loop {
        let here = prefix(key, depth);
        if source.node(depth, &here)?.is_none() {
            let leaves = source.leaves(depth, &here, 2)?;
            return match leaves.as_slice() {
                [] => Ok(MapProof { siblings, leaf: None }),
                [leaf] => Ok(MapProof { siblings, leaf: Some(leaf.clone()) }),
                _ => {
                    Err(MapInconsistency(format!("the subtree at depth {depth} holds several leaves but no hash"))
                        .into())
                }
            };
        }
        let sibling = if bit(key, depth) { here } else { with_bit(&here, depth) };
        siblings.push(subtree_hash(source, depth + 1, &sibling)?);
        depth += 1;
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MapProofError {
    #[error("the proof has {0} levels; a map has at most 256")]
    TooDeep(usize),
    #[error("the proof's leaf is not on the key's path")]
    LeafOffPath,
    #[error("the proof does not lead to the map's root")]
    RootMismatch,
}

/// Checks `proof` for `key` against `root`: the key's value if it is present, `None` if it is absent.
pub fn verify(root: &Hash, key: &Key, proof: &MapProof) -> Result<Option<Vec<u8>>, MapProofError> {
    let depth = proof.siblings.len();
    if depth > KEY_BITS {
        return Err(MapProofError::TooDeep(depth));
    }
    let mut hash = match &proof.leaf {
        None => EMPTY,
        Some((leaf_key, value)) => {
            if prefix(leaf_key, depth) != prefix(key, depth) {
                return Err(MapProofError::LeafOffPath);
            }
            leaf_hash(leaf_key, value)
        }
    };
    for (level, sibling) in proof.siblings.iter().enumerate().rev() {
        hash = if bit(key, level) { node_hash(sibling, &hash) } else { node_hash(&hash, sibling) };
    }
    if hash != *root {
        return Err(MapProofError::RootMismatch);
    }
    Ok(proof.leaf.as_ref().filter(|(leaf_key, _)| leaf_key == key).map(|(_, value)| value.clone()))
}

/// The root of a whole map computed from its leaves alone, the way an outsider rebuilds it.
pub fn root_of(leaves: &BTreeMap<Key, Vec<u8>>) -> Hash {
    fn subtree(depth: usize, leaves: &[(&Key, &Vec<u8>)]) -> Hash {
        match leaves {
            [] => EMPTY,
            [(key, value)] => leaf_hash(key, value),
            _ => {
                let split = leaves.partition_point(|(key, _)| !bit(key, depth));
                node_hash(&subtree(depth + 1, &leaves[..split]), &subtree(depth + 1, &leaves[split..]))
            }
        }
    }
    subtree(0, &leaves.iter().collect::<Vec<_>>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u64) -> Key {
        Sha256::digest(seed.to_be_bytes()).into()
    }

    /// A map in memory: pending writes over nothing.
    struct Memory(MapWrites);

    impl Memory {
        fn apply(&mut self, updates: &BTreeMap<Key, Vec<u8>>) -> Hash {
            let (root, writes) = update(&Overlay { base: &Empty, writes: &self.0 }, updates).expect("update");
            self.0.extend(writes);
            root
        }
        fn source(&self) -> Overlay<'_, Empty> {
            Overlay { base: &Empty, writes: &self.0 }
        }
    }

    #[test]
    fn prefixes_and_bits() {
        let key = [0b1010_1100; 32];
        assert!(bit(&key, 0) && !bit(&key, 1) && bit(&key, 2) && bit(&key, 4) && !bit(&key, 7));
        assert_eq!(prefix(&key, 0), [0; 32]);
        assert_eq!(prefix(&key, 3)[0], 0b1010_0000);
        assert_eq!(prefix(&key, 3)[1], 0);
        assert_eq!(prefix(&key, 12)[..2], [0b1010_1100, 0b1010_0000]);
        assert_eq!(prefix(&key, 256), key);
        assert!(has_prefix(&key, 5, &prefix(&key, 5)));
    }

    #[test]
    fn the_empty_map_and_a_map_of_one_leaf() {
        assert_eq!(root(&Empty).expect("root"), EMPTY);
        assert_eq!(root_of(&BTreeMap::new()), EMPTY);
        let mut map = Memory(MapWrites::default());
        let root = map.apply(&BTreeMap::from([(key(1), b"one".to_vec())]));
        assert_eq!(root, leaf_hash(&key(1), b"one"));
        let proof = prove(&map.source(), &key(1)).expect("prove");
        assert!(proof.siblings.is_empty());
        assert_eq!(verify(&root, &key(1), &proof), Ok(Some(b"one".to_vec())));
        let absent = prove(&map.source(), &key(2)).expect("prove");
        assert_eq!(verify(&root, &key(2), &absent), Ok(None));
    }

    /// Incremental updates in random batches give the root of the whole map rebuilt from its leaves;
    /// every key's proof verifies to its value, absent keys' to nothing, and any altered proof fails.
    #[test]
    fn updates_match_a_rebuild_and_every_proof_verifies() {
        let mut map = Memory(MapWrites::default());
        let mut model: BTreeMap<Key, Vec<u8>> = BTreeMap::new();
        let mut seed = 7u64;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            seed >> 33
        };
        for round in 0..40 {
            let batch: BTreeMap<Key, Vec<u8>> =
                (0..1 + next() % 9).map(|_| (key(next() % 120), format!("v{round}-{}", next()).into_bytes())).collect();
            model.extend(batch.clone());
            let root = map.apply(&batch);
            assert_eq!(root, root_of(&model), "round {round}");
            assert_eq!(super::root(&map.source()).expect("root"), root);
        }
        let root = root_of(&model);
        for seed in 0..150 {
            let key = key(seed);
            let proof = prove(&map.source(), &key).expect("prove");
            assert_eq!(verify(&root, &key, &proof), Ok(model.get(&key).cloned()), "key {seed}");
            for level in 0..proof.siblings.len() {
                let mut altered = proof.clone();
                altered.siblings[level][0] ^= 1;
                assert!(verify(&root, &key, &altered).is_err(), "altered sibling {level} of key {seed}");
            }
            let mut shorter = proof.clone();
            if shorter.siblings.pop().is_some() {
                assert!(verify(&root, &key, &shorter).is_err(), "shortened proof of key {seed}");
            }
            let mut longer = proof.clone();
            longer.siblings.push(EMPTY);
            assert!(verify(&root, &key, &longer).is_err(), "lengthened proof of key {seed}");
            if let Some((_, value)) = &proof.leaf {
                let mut forged = proof.clone();
                forged.leaf = Some((key, [value.as_slice(), b"!"].concat()));
                assert!(verify(&root, &key, &forged).is_err(), "forged value of key {seed}");
                let mut hidden = proof.clone();
                hidden.leaf = None;
                assert!(verify(&root, &key, &hidden).is_err(), "a present key shown absent {seed}");
            }
        }
    }

    /// The vector of docs/FORMAT.md section 4.6, computed there independently.
    #[test]
    fn the_documented_vector() {
        use crate::log::ChainHead;
        let hex = |h: &[u8]| hex::encode(h);
        let first = owner_key(&OwnerId::parse("001204012345").expect("owner"));
        let second = owner_key(&OwnerId::parse("079088001234").expect("owner"));
        assert_eq!(hex(&first), "3b1927a2fa2da9281d095598b612c46c040b614d3eeaa4dd3d78e6a7b4a96209");
        let mut head = [0; 32];
        head.copy_from_slice(
            &hex::decode("731be7e9c4ea5f5e61555a00bf5e3e17367940916a5f8bbd8559bb9438e1a523").expect("hex"),
        );
        let first_value = ChainHead { length: 1, index: 1, head }.encode();
        let second_value = ChainHead { length: 3, index: 7, head: [0; 32] }.encode();
        assert_eq!(
            hex(&leaf_hash(&first, &first_value)),
            "db1fd86256d9ef27adca9fa06f8c61fc83314836f6ffc3dca08213312eb0ecfe"
        );
        let both = BTreeMap::from([(first, first_value), (second, second_value)]);
        let root = root_of(&both);
        assert_eq!(hex(&root), "02e1cd62390c59e4f6749f29d95d6f3bec02857a404bf0fac2809a4d541dd325");
        let mut map = Memory(MapWrites::default());
        assert_eq!(map.apply(&both), root);
        let proof = prove(&map.source(), &first).expect("prove");
        assert_eq!(proof.siblings.len(), 2);
        assert_eq!(hex(&proof.siblings[0]), hex(&EMPTY));
        assert_eq!(hex(&proof.siblings[1]), "42d7f2f138ee74c7418d822b2f764e02f6046dc0348a99c5fddd64242630adde");
    }

    #[test]
    fn an_update_reads_and_writes_only_the_paths_it_changes() {
        let mut map = Memory(MapWrites::default());
        map.apply(&(0..1000).map(|seed| (key(seed), vec![1])).collect());
        let (_, writes) = update(&map.source(), &BTreeMap::from([(key(5), vec![2])])).expect("update");
        assert_eq!(writes.leaves.len(), 1);
        assert!(writes.nodes.len() <= 20, "{} nodes rewritten for one key in a map of 1000", writes.nodes.len());
    }
}
