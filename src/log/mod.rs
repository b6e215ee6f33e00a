//! The transparency log: every accepted statement and every access event, in acceptance order, as the
//! leaves of one append-only Merkle tree (RFC 9162), with signed checkpoints (C2SP tlog-checkpoint),
//! inclusion and consistency proofs, and the C2SP tlog-tiles layout for serving it.
//!
//! A leaf is an [`Entry`] (docs/FORMAT.md section 4.1): what was accepted (its kind and the SHA-256 id of
//! its canonical bytes), when, and, for entries about a person, the link that chains that person's
//! entries. Leaves name statements by id rather than carrying them, so they stay small and a public
//! leaf hash reveals nothing: the id of a signed statement, or of an access event with its random
//! salt, cannot be guessed.

pub mod chain;
pub mod checkpoint;
pub mod map;
pub mod tree;

pub use chain::ChainHead;
pub use checkpoint::{Checkpoint, NoteError};
pub use tree::{
    consistency_proof, empty_root, inclusion_proof, leaf_hash, node_hash, root, verify_consistency, verify_inclusion,
    Hash, HashSource, MemoryTree, ProofError,
};

use crate::ids::{Digest, OwnerId};
use crate::statement::{DecodeError, Reader, Writer};

/// Tiles are 2^8 = 256 hashes wide (C2SP tlog-tiles).
pub const TILE_HEIGHT: u8 = 8;
pub const TILE_WIDTH: u64 = 1 << TILE_HEIGHT;
/// The version byte at the front of every entry.
pub const ENTRY_VERSION: u8 = 1;
/// The kind byte of an access event (statement kinds are their own `StatementBody::KIND`: 1 to 4, and
/// 9 for a copy certification).
pub const KIND_ACCESS_EVENT: u8 = 6;
/// The kind byte of an owner-map commitment: its id is the root of the owner map (see [`map`]) over
/// every entry before it in the log.
pub const KIND_OWNER_MAP: u8 = 7;
/// The kind byte of a copy certification's entry (`statement::CopyCertification::KIND`).
pub const KIND_COPY_CERTIFICATION: u8 = 9;
const _: () =
    assert!(KIND_COPY_CERTIFICATION == <crate::statement::CopyCertification as crate::statement::StatementBody>::KIND);
/// The kind byte of the vault's validation of an X.509 signature (`statement::SignatureValidation`).
pub const KIND_SIGNATURE_VALIDATION: u8 = 10;
const _: () = assert!(
    KIND_SIGNATURE_VALIDATION == <crate::statement::SignatureValidation as crate::statement::StatementBody>::KIND
);

/// Where an entry stands in its owner's chain: the owner's entries (records, their revocations and
/// supersessions, and every access to their data) are linked leaf to leaf, so the newest one commits to
/// how many there are and, through the links, to each of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerLink {
    pub owner: OwnerId,
    /// This entry's position in the owner's chain, from 1.
    pub position: u64,
    /// The leaf hash of the owner's previous entry; zeros for the first.
    pub previous: Hash,
}

/// One leaf of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: u8,
    /// When the vault accepted it (the receipt's time for a statement).
    pub accepted_at_ms: i64,
    /// SHA-256 of the statement's signed bytes (its id), or of the access event's canonical bytes.
    pub id: Digest,
    pub owner: Option<OwnerLink>,
}

impl Entry {
    /// The canonical leaf bytes: `version u8 | kind u8 | accepted_at_ms i64 | id [32] | owner option`,
    /// the owner as `0`, or `1 | owner (u32 length, ASCII) | position u64 | previous [32]`.
    pub fn encode(&self) -> Vec<u8> {
        let mut writer = Writer::default();
        writer.u8(ENTRY_VERSION);
        writer.u8(self.kind);
        writer.i64(self.accepted_at_ms);
        writer.digest(&self.id);
        writer.option(self.owner.as_ref(), |writer, link| {
            writer.str(link.owner.as_str());
            writer.u64(link.position);
            writer.digest(&Digest(link.previous));
        });
        writer.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Entry, DecodeError> {
        let mut reader = Reader::new(bytes);
        let version = reader.u8("entry version")?;
        if version != ENTRY_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let kind = reader.u8("entry kind")?;
        if !matches!(
            kind,
            1..=4 | KIND_ACCESS_EVENT | KIND_OWNER_MAP | KIND_COPY_CERTIFICATION | KIND_SIGNATURE_VALIDATION
        ) {
            return Err(DecodeError::WrongKind { expected: "log entry", found: kind });
        }
        let accepted_at_ms = reader.i64("accepted_at_ms")?;
        let id = reader.digest("id")?;
        let owner = reader.option("owner", |reader| {
            let owner = OwnerId::parse(reader.str("owner")?)?;
            let position = reader.u64("position")?;
            let previous = reader.digest("previous")?.0;
            Ok(OwnerLink { owner, position, previous })
        })?;
        reader.finish()?;
        if kind == KIND_OWNER_MAP && owner.is_some() {
            return Err(DecodeError::WrongKind { expected: "an owner-map commitment without an owner", found: kind });
        }
        Ok(Entry { kind, accepted_at_ms, id, owner })
    }
}

/// A tile's name in the C2SP tlog-tiles layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tile {
    /// `None` for an entry bundle, else the tile level (hashes of tree level `8 * level`).
    pub level: Option<u8>,
    pub index: u64,
    /// The number of hashes (or entries): [`TILE_WIDTH`] for a full tile, 1..=255 for a partial one.
    pub width: u64,
}

impl Tile {
    /// The path under the log's prefix, e.g. `tile/0/x001/x234/067.p/8` or `tile/entries/000`.
    pub fn path(&self) -> String {
        let level = self.level.map_or_else(|| "entries".to_owned(), |level| level.to_string());
        let mut path = format!("tile/{level}/{}", encode_index(self.index));
        if self.width < TILE_WIDTH {
            path.push_str(&format!(".p/{}", self.width));
        }
        path
    }

    /// Parses the part of a path after `tile/`; `None` for anything that is not a tile name.
    pub fn parse(path: &str) -> Option<Tile> {
        let (level, rest) = path.split_once('/')?;
        let level = match level {
            "entries" => None,
            digits if digits.len() == 1 => Some(digits.parse::<u8>().ok()?),
            _ => return None,
        };
        let (index, width) = match rest.split_once(".p/") {
            Some((index, width)) => {
                if width.is_empty() || width.starts_with('0') || !width.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let width: u64 = width.parse().ok()?;
                if width == 0 || width >= TILE_WIDTH {
                    return None;
                }
                (index, width)
            }
            None => (rest, TILE_WIDTH),
        };
        Some(Tile { level, index: decode_index(index)?, width })
    }

    /// The tree level whose hashes this tile holds.
    pub fn tree_level(&self) -> Option<u8> {
        self.level.map(|level| level * TILE_HEIGHT)
    }
}

/// `1234067` -> `x001/x234/067`: three-digit groups, each but the last prefixed with `x`.
fn encode_index(index: u64) -> String {
    let digits = index.to_string();
    let padded = format!("{}{digits}", "0".repeat((3 - digits.len() % 3) % 3));
    let groups: Vec<&str> = padded.as_bytes().chunks(3).map(|g| std::str::from_utf8(g).unwrap_or("000")).collect();
    let last = groups.len() - 1;
    groups
        .iter()
        .enumerate()
        .map(|(i, g)| if i < last { format!("x{g}") } else { (*g).to_owned() })
        .collect::<Vec<_>>()
        .join("/")
}

fn decode_index(text: &str) -> Option<u64> {
    let parts: Vec<&str> = text.split('/').collect();
    let (last, groups) = parts.split_last()?;
    let mut index: u64 = 0;
    for (i, part) in groups.iter().map(|g| g.strip_prefix('x')).chain(std::iter::once(Some(*last))).enumerate() {
        let part = part?;
        if part.len() != 3
            || !part.bytes().all(|b| b.is_ascii_digit())
            || (i == 0 && !groups.is_empty() && part == "000")
        {
            return None;
        }
        index = index.checked_mul(1000)?.checked_add(part.parse().ok()?)?;
    }
    Some(index)
}

/// An entry bundle: each entry as a big-endian u16 length and its bytes.
pub fn entry_bundle<'a>(entries: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut bundle = Vec::new();
    for entry in entries {
        // Entries are about a hundred bytes (see `Entry::encode`), far below the u16 limit.
        bundle.extend_from_slice(&u16::try_from(entry.len()).unwrap_or(u16::MAX).to_be_bytes());
        bundle.extend_from_slice(entry);
    }
    bundle
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_paths_follow_tlog_tiles() {
        let cases = [
            (Tile { level: Some(0), index: 1234067, width: 256 }, "tile/0/x001/x234/067"),
            (Tile { level: Some(1), index: 0, width: 8 }, "tile/1/000.p/8"),
            (Tile { level: None, index: 5, width: 256 }, "tile/entries/005"),
            (Tile { level: None, index: 1000, width: 255 }, "tile/entries/x001/000.p/255"),
        ];
        for (tile, path) in cases {
            assert_eq!(tile.path(), path);
            assert_eq!(Tile::parse(path.strip_prefix("tile/").expect("prefix")), Some(tile), "{path}");
        }
        for bad in [
            "0/1",
            "0/0001",
            "0/x000/001",
            "0/000.p/0",
            "0/000.p/256",
            "0/000.p/08",
            "10/000",
            "a/000",
            "0/x1/000",
            "0",
        ] {
            assert_eq!(Tile::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn entries_round_trip_and_reject_damage() {
        let entry = Entry {
            kind: 1,
            accepted_at_ms: 1_700_000_000_000,
            id: Digest([9; 32]),
            owner: Some(OwnerLink {
                owner: OwnerId::parse("001204012345").expect("owner"),
                position: 3,
                previous: [4; 32],
            }),
        };
        let bytes = entry.encode();
        assert_eq!(Entry::decode(&bytes), Ok(entry.clone()));
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x80;
            if let Ok(decoded) = Entry::decode(&damaged) {
                assert_ne!(decoded, entry);
            }
        }
        assert!(Entry::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(Entry::decode(&[bytes.clone(), vec![0]].concat()).is_err());
    }
}
