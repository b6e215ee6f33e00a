//! The Merkle tree of RFC 9162 section 2.1 (SHA-256; a leaf hashed with prefix 0x00, a node with 0x01),
//! kept as the hashes of its complete subtrees, with roots and proofs computed from them.
//!
//! A node is named by `(level, index)`: the complete subtree of 2^level leaves starting at leaf
//! `index * 2^level`. Appending leaf `n` completes the leaf itself and each ancestor for which it is
//! the last leaf, so a log of n leaves keeps fewer than 2n hashes, never rewritten. Every other hash a
//! root or proof needs (the incomplete right edge) is computed from O(log n) stored ones. This is the
//! layout of C2SP tlog-tiles: the hashes of one level, in index order, are that level's tiles.

use sha2::{Digest as _, Sha256};

pub type Hash = [u8; 32];

/// The leaf hash: SHA-256(0x00 || bytes).
pub fn leaf_hash(bytes: &[u8]) -> Hash {
    Sha256::new().chain_update([0x00]).chain_update(bytes).finalize().into()
}

/// An interior node's hash: SHA-256(0x01 || left || right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Sha256::new().chain_update([0x01]).chain_update(left).chain_update(right).finalize().into()
}

/// The root of the empty tree: SHA-256 of nothing.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProofError {
    #[error("leaf {index} is not in a tree of size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("tree size {old} is larger than tree size {new}")]
    SizesOutOfOrder { old: u64, new: u64 },
    #[error("the proof has the wrong number of hashes ({actual}; {expected} expected)")]
    WrongLength { expected: usize, actual: usize },
    #[error("the proof does not lead to the expected root")]
    RootMismatch,
}

/// Where stored node hashes come from (the catalog, or memory in tests).
pub trait HashSource {
    type Error;
    /// The hash of the complete subtree `(level, index)`; it must exist in the tree being read.
    fn node(&self, level: u8, index: u64) -> Result<Hash, Self::Error>;
}

/// The nodes that appending a leaf with hash `leaf` to a tree of `size` leaves completes, bottom up:
/// the leaf at `(0, size)`, then each ancestor whose last leaf it is.
pub fn appended_nodes<S: HashSource>(size: u64, leaf: Hash, source: &S) -> Result<Vec<(u8, u64, Hash)>, S::Error> {
    let mut nodes = vec![(0, size, leaf)];
    let (mut level, mut index, mut hash) = (0u8, size, leaf);
    while index & 1 == 1 {
        let left = source.node(level, index - 1)?;
        hash = node_hash(&left, &hash);
        level += 1;
        index >>= 1;
        nodes.push((level, index, hash));
    }
    Ok(nodes)
}

/// The largest power of two strictly less than `n` (n >= 2): the RFC's split point k.
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// MTH of leaves `start..end` (end > start); `start` is aligned as in every RFC 9162 decomposition.
fn subtree<S: HashSource>(start: u64, end: u64, source: &S) -> Result<Hash, S::Error> {
    let n = end - start;
    if n.is_power_of_two() {
        let level = n.trailing_zeros() as u8;
        return source.node(level, start >> level);
    }
    let k = split(n);
    Ok(node_hash(&subtree(start, start + k, source)?, &subtree(start + k, end, source)?))
}

/// The root hash of the first `size` leaves.
pub fn root<S: HashSource>(size: u64, source: &S) -> Result<Hash, S::Error> {
    if size == 0 {
        return Ok(empty_root());
    }
    subtree(0, size, source)
}

/// The audit path of leaf `index` in the tree of `size` leaves (RFC 9162 section 2.1.3.1), leaf side
/// first. The caller checks `index < size`.
pub fn inclusion_proof<S: HashSource>(index: u64, size: u64, source: &S) -> Result<Vec<Hash>, S::Error> {
    fn path<S: HashSource>(m: u64, start: u64, end: u64, source: &S, out: &mut Vec<Hash>) -> Result<(), S::Error> {
        if end - start <= 1 {
            return Ok(());
        }
        let k = split(end - start);
        if m < k {
            path(m, start, start + k, source, out)?;
            out.push(subtree(start + k, end, source)?);
        } else {
            path(m - k, start + k, end, source, out)?;
            out.push(subtree(start, start + k, source)?);
        }
        Ok(())
    }
    let mut proof = Vec::new();
    path(index, 0, size, source, &mut proof)?;
    Ok(proof)
}

/// The consistency proof from the tree of `old` leaves to the tree of `new` (RFC 9162 section
/// 2.1.4.1). Empty when `old` is 0 or equal to `new`. The caller checks `old <= new`.
pub fn consistency_proof<S: HashSource>(old: u64, new: u64, source: &S) -> Result<Vec<Hash>, S::Error> {
    fn subproof<S: HashSource>(
        m: u64,
        start: u64,
        end: u64,
        whole: bool,
        source: &S,
        out: &mut Vec<Hash>,
    ) -> Result<(), S::Error> {
        let n = end - start;
        if m == n {
            if !whole {
                out.push(subtree(start, end, source)?);
            }
            return Ok(());
        }
        let k = split(n);
        if m <= k {
            subproof(m, start, start + k, whole, source, out)?;
            out.push(subtree(start + k, end, source)?);
        } else {
            subproof(m - k, start + k, end, false, source, out)?;
            out.push(subtree(start, start + k, source)?);
        }
        Ok(())
    }
    let mut proof = Vec::new();
    if old > 0 && old < new {
        subproof(old, 0, new, true, source, &mut proof)?;
    }
    Ok(proof)
}

/// Checks an audit path (RFC 9162 section 2.1.3.2).
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash], root: &Hash) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return Err(ProofError::WrongLength { expected: inclusion_length(index, size), actual: proof.len() });
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::WrongLength { expected: inclusion_length(index, size), actual: proof.len() });
    }
    if &r != root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// A source of zero hashes: the shape (length) of a proof without its hashes.
struct Shape;

impl HashSource for Shape {
    type Error = std::convert::Infallible;
    fn node(&self, _: u8, _: u64) -> Result<Hash, Self::Error> {
        Ok([0; 32])
    }
}

fn infallible<T>(result: Result<T, std::convert::Infallible>) -> T {
    match result {
        Ok(value) => value,
        Err(never) => match never {},
    }
}

fn inclusion_length(index: u64, size: u64) -> usize {
    infallible(inclusion_proof(index, size, &Shape)).len()
}

/// Checks a consistency proof between two roots (RFC 9162 section 2.1.4.2). A tree of size 0 is
/// consistent with every tree (empty proof); equal sizes need equal roots and an empty proof.
pub fn verify_consistency(
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old > new {
        return Err(ProofError::SizesOutOfOrder { old, new });
    }
    if old == 0 || old == new {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength { expected: 0, actual: proof.len() });
        }
        return if old == 0 || old_root == new_root { Ok(()) } else { Err(ProofError::RootMismatch) };
    }
    let wrong_length = || ProofError::WrongLength { expected: consistency_length(old, new), actual: proof.len() };
    let mut hashes: Vec<&Hash> = Vec::with_capacity(proof.len() + 1);
    if old.is_power_of_two() {
        hashes.push(old_root);
    }
    hashes.extend(proof.iter());
    let Some((first, rest)) = hashes.split_first() else {
        return Err(wrong_length());
    };
    let (mut f, mut s) = (old - 1, new - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (**first, **first);
    for c in rest {
        if s == 0 {
            return Err(wrong_length());
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(wrong_length());
    }
    if &fr != old_root || &sr != new_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

fn consistency_length(old: u64, new: u64) -> usize {
    infallible(consistency_proof(old, new, &Shape)).len()
}

/// A tree held in memory, for tests and for verifiers that rebuild a log from its leaves.
#[derive(Debug, Default, Clone)]
pub struct MemoryTree {
    nodes: std::collections::HashMap<(u8, u64), Hash>,
    size: u64,
}

impl MemoryTree {
    pub fn new() -> MemoryTree {
        MemoryTree::default()
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf by its hash.
    pub fn push(&mut self, leaf: Hash) {
        let nodes = infallible(appended_nodes(self.size, leaf, &*self));
        self.nodes.extend(nodes.into_iter().map(|(level, index, hash)| ((level, index), hash)));
        self.size += 1;
    }

    pub fn root(&self, size: u64) -> Hash {
        infallible(root(size, self))
    }

    pub fn inclusion_proof(&self, index: u64, size: u64) -> Vec<Hash> {
        infallible(inclusion_proof(index, size, self))
    }

    pub fn consistency_proof(&self, old: u64, new: u64) -> Vec<Hash> {
        infallible(consistency_proof(old, new, self))
    }
}

impl HashSource for MemoryTree {
    type Error = std::convert::Infallible;
    fn node(&self, level: u8, index: u64) -> Result<Hash, Self::Error> {
        Ok(*self.nodes.get(&(level, index)).expect("the tree holds every node a size below its own needs"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 8-leaf reference tree of the certificate-transparency implementations (RFC 6962 test data).
    fn reference_leaves() -> Vec<Vec<u8>> {
        vec![
            vec![],
            vec![0x00],
            vec![0x10],
            vec![0x20, 0x21],
            vec![0x30, 0x31],
            vec![0x40, 0x41, 0x42, 0x43],
            (0x50..0x58).collect(),
            (0x60..0x70).collect(),
        ]
    }

    const REFERENCE_ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn reference_tree() -> MemoryTree {
        let mut tree = MemoryTree::new();
        for leaf in reference_leaves() {
            tree.push(leaf_hash(&leaf));
        }
        tree
    }

    fn hexes(proof: &[Hash]) -> Vec<String> {
        proof.iter().map(hex::encode).collect()
    }

    fn prefixes(proof: &[Hash]) -> Vec<String> {
        proof.iter().map(|h| hex::encode(&h[..4])).collect()
    }

    #[test]
    fn roots_match_the_reference_tree() {
        let tree = reference_tree();
        assert_eq!(hex::encode(tree.root(0)), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        for (size, expected) in REFERENCE_ROOTS.iter().enumerate() {
            assert_eq!(hex::encode(tree.root(size as u64 + 1)), *expected, "size {}", size + 1);
        }
    }

    #[test]
    fn inclusion_paths_match_the_reference_tree() {
        let tree = reference_tree();
        let cases: [(u64, u64, &[&str]); 4] = [
            (0, 8, &["96a296d2", "5f083f0a", "6b47aaf2"]),
            (5, 8, &["bc1a0643", "ca854ea1", "d37ee418"]),
            (2, 3, &["fac54203"]),
            (1, 5, &["6e340b9c", "5f083f0a", "bc1a0643"]),
        ];
        for (index, size, expected) in cases {
            let proof = inclusion_proof(index, size, &tree).expect("proof");
            assert_eq!(prefixes(&proof), expected, "leaf {index} of {size}");
            let leaf = leaf_hash(&reference_leaves()[index as usize]);
            verify_inclusion(index, size, &leaf, &proof, &tree.root(size)).expect("verifies");
        }
        assert_eq!(
            hexes(&inclusion_proof(0, 8, &tree).expect("proof"))[0],
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"
        );
    }

    #[test]
    fn consistency_proofs_match_the_reference_tree() {
        let tree = reference_tree();
        let cases: [(u64, u64, &[&str]); 4] = [
            (1, 1, &[]),
            (1, 8, &["96a296d2", "5f083f0a", "6b47aaf2"]),
            (6, 8, &["0ebc5d34", "ca854ea1", "d37ee418"]),
            (2, 5, &["5f083f0a", "bc1a0643"]),
        ];
        for (old, new, expected) in cases {
            let proof = consistency_proof(old, new, &tree).expect("proof");
            assert_eq!(prefixes(&proof), expected, "{old} -> {new}");
            verify_consistency(old, new, &tree.root(old), &tree.root(new), &proof).expect("verifies");
        }
    }

    /// A small deterministic generator, so the property tests need no extra crate and repeat exactly.
    struct Lcg(u64);
    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    #[test]
    fn every_proof_verifies_and_any_alteration_fails() {
        let mut tree = MemoryTree::new();
        for i in 0u32..300 {
            tree.push(leaf_hash(&i.to_be_bytes()));
        }
        let mut random = Lcg(7);
        for _ in 0..400 {
            let size = 1 + random.below(300);
            let index = random.below(size);
            let root = tree.root(size);
            let leaf = leaf_hash(&(index as u32).to_be_bytes());
            let proof = inclusion_proof(index, size, &tree).expect("proof");
            verify_inclusion(index, size, &leaf, &proof, &root).expect("inclusion verifies");
            assert!(verify_inclusion(index, size, &leaf_hash(b"other"), &proof, &root).is_err(), "other leaf");
            assert!(verify_inclusion(index, size, &leaf, &proof, &tree.root(size - 1)).is_err() || size == 1);
            if size > 1 {
                let other_index = (index + 1 + random.below(size - 1)) % size;
                assert!(verify_inclusion(other_index, size, &leaf, &proof, &root).is_err(), "other index");
                let mut altered = proof.clone();
                let at = random.below(altered.len() as u64) as usize;
                altered[at][random.below(32) as usize] ^= 1;
                assert!(verify_inclusion(index, size, &leaf, &altered, &root).is_err(), "altered hash");
                assert!(verify_inclusion(index, size, &leaf, &proof[..proof.len() - 1], &root).is_err(), "short");
            }
            let mut long = proof.clone();
            long.push([0; 32]);
            assert!(verify_inclusion(index, size, &leaf, &long, &root).is_err(), "long");

            let old = random.below(size + 1);
            let consistency = consistency_proof(old, size, &tree).expect("proof");
            verify_consistency(old, size, &tree.root(old), &root, &consistency).expect("consistency verifies");
            if old > 0 && old < size {
                let mut altered = consistency.clone();
                let at = random.below(altered.len() as u64) as usize;
                altered[at][random.below(32) as usize] ^= 1;
                assert!(verify_consistency(old, size, &tree.root(old), &root, &altered).is_err(), "altered");
                assert!(verify_consistency(old, size, &tree.root(old - 1), &root, &consistency).is_err(), "old root");
                assert!(verify_consistency(old, size, &tree.root(old), &tree.root(size - 1), &consistency).is_err());
            }
        }
    }

    #[test]
    fn a_rewritten_history_is_inconsistent() {
        let mut honest = MemoryTree::new();
        let mut rewritten = MemoryTree::new();
        for i in 0u32..40 {
            honest.push(leaf_hash(&i.to_be_bytes()));
            // The same history with entry 17 changed (or dropped, or two entries swapped).
            let j = if i == 17 { 1000 } else { i };
            rewritten.push(leaf_hash(&j.to_be_bytes()));
        }
        let proof = consistency_proof(20, 40, &rewritten).expect("proof");
        assert_eq!(
            verify_consistency(20, 40, &honest.root(20), &rewritten.root(40), &proof),
            Err(ProofError::RootMismatch)
        );
    }
}
