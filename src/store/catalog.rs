//! The catalog: what the vault keeps about statements, indexes, receipts and access events, with its
//! key layout (docs/FORMAT.md section 3), its cursors and its sequence numbers, over any
//! [`CatalogEngine`].
//!
//! Every accepted statement or access event is one [`Commit`]: the catalog checks that it carries the
//! next sequence number (so two writers can never both take one), derives the index entries, and
//! applies everything in one atomic batch. Values are the callers' encodings (through `codec`); the
//! catalog owns only the keys and the two small value types it must read itself.

use serde::{Deserialize, Serialize};

use super::{Batch, EngineState, Store, StoreError};
use crate::codec;
use crate::ids::{Code, Digest, OwnerId};
use crate::log::map::{self, Key, MapInconsistency, MapSource, MapWrites};
use crate::log::{ChainHead, Hash, HashSource};

/// A signed statement as stored: its envelope, the sequence number it was accepted at, and the vault's
/// seal of the envelope (`statement::VerifiedEnvelopes`), made when its signature verified at acceptance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementEntry {
    pub envelope: Vec<u8>,
    pub sequence: u64,
    /// `None` for a statement stored before seals (stored format 5 and before) and for a revocation
    /// kept in its record's state, whose layout has no seal.
    #[serde(skip)]
    pub seal: Option<[u8; 32]>,
}

/// A statement entry as stored with its seal (stored format 6); the layout without it is
/// [`StatementEntry`]'s. The two cannot be confused: the older ends where the seal begins, and the
/// decoder refuses both missing and trailing bytes.
#[derive(Serialize, Deserialize)]
struct SealedStatementEntry {
    envelope: Vec<u8>,
    sequence: u64,
    seal: [u8; 32],
}

impl StatementEntry {
    fn encode(self) -> Vec<u8> {
        match self.seal {
            Some(seal) => {
                codec::encode(&SealedStatementEntry { envelope: self.envelope, sequence: self.sequence, seal })
            }
            None => codec::encode(&self),
        }
    }

    /// Decodes either layout.
    pub fn decode(bytes: &[u8]) -> Result<StatementEntry, codec::CodecError> {
        match codec::decode::<SealedStatementEntry>(bytes) {
            Ok(SealedStatementEntry { envelope, sequence, seal }) => {
                Ok(StatementEntry { envelope, sequence, seal: Some(seal) })
            }
            Err(error) => codec::decode::<StatementEntry>(bytes).map_err(|_| error),
        }
    }
}

/// A share link as stored: the grant (the vault's encoding) and when it was revoked, if it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareEntry {
    pub grant: Vec<u8>,
    pub revoked_at_ms: Option<i64>,
}

/// What happened to a record after it was accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordState {
    pub revocation: Option<StatementEntry>,
    pub superseded_by: Option<Digest>,
}

/// One accepted statement or access event, with everything the catalog must index about it.
#[derive(Debug, Clone)]
pub enum Change {
    Certificate {
        id: Digest,
        agency: Code,
        key_fingerprint: Digest,
        envelope: Vec<u8>,
    },
    CertificateRevocation {
        certificate: Digest,
        envelope: Vec<u8>,
    },
    Record {
        id: Digest,
        owner: OwnerId,
        blake3: Digest,
        envelope: Vec<u8>,
        supersedes: Option<Digest>,
        content: Option<NewContent>,
    },
    RecordRevocation {
        record: Digest,
        envelope: Vec<u8>,
    },
    /// An agency certifies a self-uploaded record as a copy of an original.
    CopyCertification {
        record: Digest,
        envelope: Vec<u8>,
    },
    /// The vault's validation of an X.509 signature on `statement`, with the revocation evidence it
    /// used (each piece under the SHA-256 of its bytes, stored once).
    SignatureValidation {
        id: Digest,
        statement: Digest,
        envelope: Vec<u8>,
        evidence: Vec<(Digest, Vec<u8>)>,
        /// A detached CMS signature (`.p7s`) the validation is of, kept beside the statement.
        detached: Option<Vec<u8>>,
    },
    Access {
        owner: OwnerId,
        event: Vec<u8>,
    },
    /// An owner-map commitment: the map's new root, leaves and subtree hashes, and the log index of
    /// every entry it covers that extends an owner's chain (the chain index the owner pages through).
    OwnerMap {
        root: Hash,
        writes: MapWrites,
        chain: Vec<(OwnerId, u64)>,
    },
}

impl Change {
    /// The signed statement the change stores, if it stores one under its own key (a record's
    /// revocation is kept in the record's state instead, without a seal).
    pub fn statement_envelope(&self) -> Option<&[u8]> {
        match self {
            Change::Certificate { envelope, .. }
            | Change::CertificateRevocation { envelope, .. }
            | Change::Record { envelope, .. }
            | Change::CopyCertification { envelope, .. }
            | Change::SignatureValidation { envelope, .. } => Some(envelope),
            Change::RecordRevocation { .. } | Change::Access { .. } | Change::OwnerMap { .. } => None,
        }
    }
}

/// Content stored for the first time with a record: its manifest (encoded by `content`) and the blob
/// engine's committed state.
#[derive(Debug, Clone)]
pub struct NewContent {
    pub blake3: Digest,
    pub manifest: Vec<u8>,
    pub blob_state: Option<EngineState>,
}

/// A change with its sequence number (its index in the transparency log), its log leaf and the tree
/// nodes that leaf completes, and, for statements, the vault's receipt envelope.
#[derive(Debug, Clone)]
pub struct Commit {
    pub sequence: u64,
    pub receipt: Option<Vec<u8>>,
    pub change: Change,
    /// The vault's seal of the change's statement envelope ([`Change::statement_envelope`]), stored
    /// with it.
    pub seal: Option<[u8; 32]>,
    pub log: LogAppend,
}

/// What one commit adds to the transparency log.
#[derive(Debug, Clone)]
pub struct LogAppend {
    /// The leaf's bytes (`log::Entry::encode`).
    pub entry: Vec<u8>,
    /// `(level, index, hash)` of every tree node the leaf completes (`log::tree::appended_nodes`).
    pub nodes: Vec<(u8, u64, Hash)>,
    /// The owner whose chain the leaf extends, with the chain's new length and head (the leaf hash).
    pub owner_head: Option<(OwnerId, ChainHead)>,
}

/// A position in a listing, opaque to everyone above the catalog. Listings are ordered by sequence
/// number, so a cursor is the sequence number of the last entry returned; its text form is versioned
/// base64url so that it can change without breaking clients that only pass it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor(u64);

const CURSOR_VERSION: u8 = 1;

/// What [`Cursor::parse`] accepts, as a regular expression (see `ids::owner_id_pattern`): base64url of
/// the version byte 1 and eight bytes.
pub const CURSOR_PATTERN: &str = "^A[Q-Za-f][A-Za-z0-9_-]{10}$";

impl Cursor {
    /// The sequence number of the entry the cursor stands at.
    pub fn sequence(self) -> u64 {
        self.0
    }

    pub fn parse(text: &str) -> Option<Cursor> {
        let bytes = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, text).ok()?;
        match bytes.as_slice() {
            [CURSOR_VERSION, rest @ ..] => rest.try_into().ok().map(u64::from_be_bytes).map(Cursor),
            _ => None,
        }
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bytes = [&[CURSOR_VERSION][..], &self.0.to_be_bytes()].concat();
        f.write_str(&base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes))
    }
}

mod key {
    use super::*;

    /// The stored format (one byte), written when the store is created.
    pub(super) const FORMAT: &[u8] = b"meta/format";
    /// The number of log entries, which is the next sequence number.
    pub(super) const LOG_SIZE: &[u8] = b"meta/log-size";
    /// The tree size of the newest signed checkpoint.
    pub(super) const LATEST_CHECKPOINT: &[u8] = b"meta/log-checkpoint";
    pub(super) const CERTIFICATE_PREFIX: &[u8] = b"k/";
    pub(super) const BLOB_STATE_PREFIX: &[u8] = b"b/";

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
    pub(super) fn manifest(blake3: &Digest) -> Vec<u8> {
        [b"m/".as_slice(), &blake3.0].concat()
    }
    pub(super) fn certificate(id: &Digest) -> Vec<u8> {
        [CERTIFICATE_PREFIX, &id.0].concat()
    }
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
    pub(super) fn log_entry(index: u64) -> Vec<u8> {
        [b"le/".as_slice(), &index.to_be_bytes()].concat()
    }
    pub(super) const LOG_NODE_PREFIX: &[u8] = b"ln/";
    /// Ordered by level, then index, so that one level's hashes (a tile) are one range.
    pub(super) fn log_node(level: u8, index: u64) -> Vec<u8> {
        [LOG_NODE_PREFIX, &[level], &index.to_be_bytes()].concat()
    }
    /// The owner map's newest commitment.
    pub(super) const OWNER_MAP: &[u8] = b"meta/owner-map";
    pub(super) const MAP_LEAF_PREFIX: &[u8] = b"mk/";
    pub(super) fn map_leaf(map_key: &Key) -> Vec<u8> {
        [MAP_LEAF_PREFIX, map_key].concat()
    }
    pub(super) fn map_node(depth: u8, prefix: &Key) -> Vec<u8> {
        [b"mn/".as_slice(), &[depth], prefix].concat()
    }
    pub(super) fn chain_prefix(owner: &OwnerId) -> Vec<u8> {
        [b"oc/".as_slice(), owner.as_str().as_bytes(), b"\0"].concat()
    }
    /// Inverted so that a forward scan yields newest first.
    pub(super) fn chain_entry(owner: &OwnerId, index: u64) -> Vec<u8> {
        [chain_prefix(owner).as_slice(), &(u64::MAX - index).to_be_bytes()].concat()
    }
    pub(super) fn owner_head(owner: &OwnerId) -> Vec<u8> {
        [b"lo/".as_slice(), owner.as_str().as_bytes()].concat()
    }
    pub(super) fn checkpoint(size: u64) -> Vec<u8> {
        [b"lc/".as_slice(), &size.to_be_bytes()].concat()
    }
    /// The tree size of the newest checkpoint cosigned by a quorum of witnesses.
    pub(super) const LATEST_WITNESSED: &[u8] = b"meta/log-witnessed";
    pub(super) fn cosignature_prefix(size: u64) -> Vec<u8> {
        [b"lw/".as_slice(), &size.to_be_bytes()].concat()
    }
    pub(super) fn cosignature(size: u64, witness: &str) -> Vec<u8> {
        [cosignature_prefix(size).as_slice(), witness.as_bytes()].concat()
    }
    /// A share link's grant, by its id; its revocation beside it; an owner's shares newest first.
    pub(super) fn share(id: &[u8; 16]) -> Vec<u8> {
        [b"sh/".as_slice(), id].concat()
    }
    pub(super) fn share_revocation(id: &[u8; 16]) -> Vec<u8> {
        [b"sx/".as_slice(), id].concat()
    }
    pub(super) fn owner_shares_prefix(owner: &OwnerId) -> Vec<u8> {
        [b"so/".as_slice(), owner.as_str().as_bytes(), b"\0"].concat()
    }
    pub(super) fn owner_share(owner: &OwnerId, created_at_ms: i64, id: &[u8; 16]) -> Vec<u8> {
        let inverted = u64::MAX - u64::try_from(created_at_ms).unwrap_or(0);
        [owner_shares_prefix(owner).as_slice(), &inverted.to_be_bytes(), id].concat()
    }
    /// A record's copy certification (kept beside its state, which predates it).
    pub(super) fn copy_certification(record: &Digest) -> Vec<u8> {
        [b"rc/".as_slice(), &record.0].concat()
    }
    /// A validation of an X.509 signature, by its own id (every one the log holds).
    pub(super) fn validation(validation: &Digest) -> Vec<u8> {
        [b"vd/".as_slice(), &validation.0].concat()
    }
    /// The newest validation of a statement's signature.
    pub(super) fn statement_validation(statement: &Digest) -> Vec<u8> {
        [b"vs/".as_slice(), &statement.0].concat()
    }
    /// The detached signature (`.p7s`) a record's document was deposited with.
    pub(super) fn detached_signature(statement: &Digest) -> Vec<u8> {
        [b"ds/".as_slice(), &statement.0].concat()
    }
    /// A CRL or OCSP response a validation used, by the SHA-256 of its bytes.
    pub(super) fn revocation_evidence(digest: &Digest) -> Vec<u8> {
        [b"re/".as_slice(), &digest.0].concat()
    }
    /// An owner's request that `agency` certify a record; the agency's requests, newest first.
    pub(super) fn certification_request_prefix(record: &Digest) -> Vec<u8> {
        [b"cq/".as_slice(), &record.0].concat()
    }
    pub(super) fn certification_request(record: &Digest, agency: &Code) -> Vec<u8> {
        [certification_request_prefix(record).as_slice(), agency.as_str().as_bytes()].concat()
    }
    pub(super) fn agency_requests_prefix(agency: &Code) -> Vec<u8> {
        [b"ca/".as_slice(), agency.as_str().as_bytes(), b"\0"].concat()
    }
    pub(super) fn agency_request(agency: &Code, requested_at_ms: i64, record: &Digest) -> Vec<u8> {
        let inverted = u64::MAX - u64::try_from(requested_at_ms).unwrap_or(0);
        [agency_requests_prefix(agency).as_slice(), &inverted.to_be_bytes(), &record.0].concat()
    }
    pub(super) fn blob_state(engine_key: &[u8]) -> Vec<u8> {
        [BLOB_STATE_PREFIX, engine_key].concat()
    }
}

fn corrupt(what: &str) -> impl FnOnce(codec::CodecError) -> StoreError + '_ {
    move |error| StoreError::Corrupt(format!("{what}: {error}"))
}

/// The 8 bytes after `prefix` in an index key, as a big-endian number.
fn key_suffix(key: &[u8], prefix_len: usize) -> Result<u64, StoreError> {
    key.get(prefix_len..)
        .and_then(|bytes| bytes.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt("index key has the wrong length".into()))
}

fn hash_value(value: Vec<u8>) -> Result<Hash, StoreError> {
    value.try_into().map_err(|_| StoreError::Corrupt("a log node is not a 32-byte hash".into()))
}

/// The log's stored tree nodes, read from the catalog (committed, durable or not: callers bound the
/// tree size they ask about).
impl HashSource for Store {
    type Error = StoreError;
    fn node(&self, level: u8, index: u64) -> Result<Hash, StoreError> {
        let value = self
            .get_value(&key::log_node(level, index))?
            .ok_or_else(|| StoreError::Corrupt(format!("log node ({level}, {index}) is missing")))?;
        hash_value(value)
    }
}

impl From<MapInconsistency> for StoreError {
    fn from(error: MapInconsistency) -> StoreError {
        StoreError::Corrupt(error.to_string())
    }
}

/// The committed owner map, read from the catalog.
impl MapSource for Store {
    type Error = StoreError;

    fn node(&self, depth: usize, prefix: &Key) -> Result<Option<Hash>, StoreError> {
        let Ok(depth) = u8::try_from(depth) else {
            return Ok(None);
        };
        self.get_value(&key::map_node(depth, prefix))?.map(hash_value).transpose()
    }

    fn leaves(&self, depth: usize, prefix: &Key, limit: usize) -> Result<Vec<(Key, Vec<u8>)>, StoreError> {
        // Keys sharing the first `depth` bits are one range: scan from the prefix, stop at the first
        // key outside it.
        let scan_prefix = [key::MAP_LEAF_PREFIX, &prefix[..depth / 8]].concat();
        // The prefix itself (all later bits zero) may be a key: the scan starts strictly after it.
        let start = key::map_leaf(prefix);
        let mut leaves = Vec::new();
        if let Some(value) = self.get_value(&start)? {
            leaves.push((*prefix, value));
        }
        for item in self.catalog.scan(&scan_prefix, Some(&start)) {
            if leaves.len() >= limit {
                break;
            }
            let (leaf_key, value) = item?;
            let map_key: Key = leaf_key[key::MAP_LEAF_PREFIX.len()..]
                .try_into()
                .map_err(|_| StoreError::Corrupt("an owner map key is not 32 bytes".into()))?;
            if !map::has_prefix(&map_key, depth, prefix) {
                break;
            }
            leaves.push((map_key, value));
        }
        Ok(leaves)
    }
}

fn digest_value(value: Vec<u8>) -> Result<Digest, StoreError> {
    value.try_into().map(Digest).map_err(|_| StoreError::Corrupt("index entry is not a digest".into()))
}

fn digest_suffix(key: &[u8]) -> Result<Digest, StoreError> {
    key.len()
        .checked_sub(32)
        .and_then(|start| key[start..].try_into().ok())
        .map(Digest)
        .ok_or_else(|| StoreError::Corrupt("index key too short".into()))
}

impl Store {
    fn get_value(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.catalog.get(key)
    }

    fn get_decoded<T: serde::de::DeserializeOwned>(&self, key: &[u8], what: &str) -> Result<Option<T>, StoreError> {
        self.get_value(key)?.map(|bytes| codec::decode(&bytes).map_err(corrupt(what))).transpose()
    }

    fn get_statement(&self, key: &[u8], what: &str) -> Result<Option<StatementEntry>, StoreError> {
        self.get_value(key)?.map(|bytes| StatementEntry::decode(&bytes).map_err(corrupt(what))).transpose()
    }

    /// The number of entries in the log, committed (durable or not): the next sequence number.
    pub fn log_size(&self) -> Result<u64, StoreError> {
        Ok(self.get_decoded::<u64>(key::LOG_SIZE, "log size")?.unwrap_or(0))
    }

    /// Applies `commit` atomically if it carries the next sequence number; durable (and visible to
    /// readers through [`Store::durable_size`]) after [`Store::sync`].
    pub fn commit(&self, commit: Commit) -> Result<(), StoreError> {
        self.check_writable()?;
        let size = self.log_size()?;
        if commit.sequence != size {
            return Err(StoreError::SequenceConflict { proposed: commit.sequence, size });
        }
        let sequence = commit.sequence;
        let seal = commit.seal;
        let entry = |envelope: Vec<u8>| StatementEntry { envelope, sequence, seal }.encode();
        let mut batch = Batch::default();
        match commit.change {
            Change::Certificate { id, agency, key_fingerprint, envelope } => {
                batch.insert(key::certificate(&id), entry(envelope));
                batch.insert([key::agency_prefix(&agency), id.0.to_vec()].concat(), Vec::new());
                batch.insert([key::fingerprint_prefix(&key_fingerprint), id.0.to_vec()].concat(), Vec::new());
            }
            Change::CertificateRevocation { certificate, envelope } => {
                batch.insert(key::certificate_revocation(&certificate), entry(envelope));
            }
            Change::Record { id, owner, blake3, envelope, supersedes, content } => {
                if let Some(old) = supersedes {
                    let mut state = self.record_state(&old)?;
                    state.superseded_by = Some(id);
                    batch.insert(key::record_state(&old), codec::encode(&state));
                }
                batch.insert(key::record(&id), entry(envelope));
                batch.insert(key::owner_entry(&owner, sequence), id.0.to_vec());
                batch.insert(key::content_entry(&blake3, sequence), id.0.to_vec());
                if let Some(content) = content {
                    batch.insert(key::manifest(&content.blake3), content.manifest);
                    if let Some((engine_key, value)) = content.blob_state {
                        batch.insert(key::blob_state(&engine_key), value);
                    }
                }
            }
            Change::RecordRevocation { record, envelope } => {
                let mut state = self.record_state(&record)?;
                state.revocation = Some(StatementEntry { envelope, sequence, seal: None });
                batch.insert(key::record_state(&record), codec::encode(&state));
            }
            Change::CopyCertification { record, envelope } => {
                batch.insert(key::copy_certification(&record), entry(envelope));
            }
            Change::SignatureValidation { id, statement, envelope, evidence, detached } => {
                batch.insert(key::validation(&id), entry(envelope));
                batch.insert(key::statement_validation(&statement), id.0.to_vec());
                if let Some(signature) = detached {
                    batch.insert(key::detached_signature(&statement), signature);
                }
                for (digest, bytes) in evidence {
                    batch.insert(key::revocation_evidence(&digest), bytes);
                }
            }
            Change::Access { owner, event } => {
                batch.insert(key::access_entry(&owner, sequence), event);
            }
            Change::OwnerMap { root, writes, chain } => {
                for (map_key, value) in writes.leaves {
                    batch.insert(key::map_leaf(&map_key), value);
                }
                for ((depth, prefix), hash) in writes.nodes {
                    batch.insert(key::map_node(depth, &prefix), hash.to_vec());
                }
                for (owner, index) in chain {
                    batch.insert(key::chain_entry(&owner, index), Vec::new());
                }
                batch.insert(key::OWNER_MAP, codec::encode(&(sequence, root)));
            }
        }
        if let Some(receipt) = commit.receipt {
            batch.insert(key::receipt(sequence), receipt);
        }
        batch.insert(key::log_entry(sequence), commit.log.entry);
        for (level, index, hash) in commit.log.nodes {
            batch.insert(key::log_node(level, index), hash.to_vec());
        }
        if let Some((owner, head)) = commit.log.owner_head {
            batch.insert(key::owner_head(&owner), codec::encode(&(head.length, head.head, head.index)));
        }
        batch.insert(key::LOG_SIZE, codec::encode(&(sequence + 1)));
        let marking = !self.format_marked.load(std::sync::atomic::Ordering::Acquire);
        if marking {
            batch.insert(key::FORMAT, vec![super::STORE_FORMAT_VERSION]);
        }
        self.catalog.apply(batch)?;
        if marking {
            self.format_marked.store(true, std::sync::atomic::Ordering::Release);
        }
        self.committed(sequence + 1);
        Ok(())
    }

    /// The leaf bytes of log entry `index`.
    pub fn log_entry(&self, index: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.get_value(&key::log_entry(index))
    }

    /// Up to `count` stored node hashes of one tree level, from `start` on (a tile's hashes).
    pub fn log_nodes(&self, level: u8, start: u64, count: u64) -> Result<Vec<Hash>, StoreError> {
        let prefix = [key::LOG_NODE_PREFIX, &[level]].concat();
        let first = key::log_node(level, start);
        let mut hashes = Vec::new();
        let mut items = match self.catalog.get(&first)? {
            Some(value) => {
                hashes.push(hash_value(value)?);
                self.catalog.scan(&prefix, Some(&first))
            }
            None => return Ok(hashes),
        };
        while (hashes.len() as u64) < count {
            let Some(item) = items.next() else { break };
            let (node_key, value) = item?;
            if key_suffix(&node_key, prefix.len())? != start + hashes.len() as u64 {
                return Err(StoreError::Corrupt(format!(
                    "log level {level} has a gap at {}",
                    start + hashes.len() as u64
                )));
            }
            hashes.push(hash_value(value)?);
        }
        Ok(hashes)
    }

    /// The newest link of an owner's chain (the default while the owner has no entries).
    pub fn owner_head(&self, owner: &OwnerId) -> Result<ChainHead, StoreError> {
        let value = self.get_decoded::<(u64, Hash, u64)>(&key::owner_head(owner), "owner chain head")?;
        Ok(value.map(|(length, head, index)| ChainHead { length, head, index }).unwrap_or_default())
    }

    /// The newest owner-map commitment: its log index (it covers every entry before it) and the map's
    /// root; `None` before the first.
    pub fn owner_map_commitment(&self) -> Result<Option<(u64, Hash)>, StoreError> {
        self.get_decoded(key::OWNER_MAP, "owner map commitment")
    }

    /// An owner's value in the committed owner map.
    pub fn owner_map_value(&self, owner: &OwnerId) -> Result<Option<ChainHead>, StoreError> {
        self.get_value(&key::map_leaf(&map::owner_key(owner)))?
            .map(|value| ChainHead::decode(&value).map_err(|e| StoreError::Corrupt(format!("owner map value: {e}"))))
            .transpose()
    }

    /// The log indexes of an owner's chain entries covered by the owner map, newest first, below
    /// `before` (all of them when `None`).
    pub fn owner_chain(
        &self,
        owner: &OwnerId,
        before: Option<u64>,
    ) -> impl Iterator<Item = Result<u64, StoreError>> + '_ {
        let prefix = key::chain_prefix(owner);
        // Keys are inverted, so the entries below `before` are the keys strictly after its key.
        let start = before.map(|before| key::chain_entry(owner, before));
        let length = prefix.len();
        self.catalog.scan(&prefix, start.as_deref()).map(move |item| Ok(u64::MAX - key_suffix(&item?.0, length)?))
    }

    /// Keeps a signed checkpoint of the tree at `size` (past checkpoints stay); durable after a sync.
    pub fn put_checkpoint(&self, size: u64, note: &str) -> Result<(), StoreError> {
        self.check_writable()?;
        let mut batch = Batch::default();
        batch.insert(key::checkpoint(size), note.as_bytes());
        batch.insert(key::LATEST_CHECKPOINT, codec::encode(&size));
        self.catalog.apply(batch)
    }

    /// The newest signed checkpoint and its tree size.
    pub fn latest_checkpoint(&self) -> Result<Option<(u64, String)>, StoreError> {
        let Some(size) = self.get_decoded::<u64>(key::LATEST_CHECKPOINT, "latest checkpoint")? else {
            return Ok(None);
        };
        let note =
            self.checkpoint(size)?.ok_or_else(|| StoreError::Corrupt(format!("checkpoint {size} is missing")))?;
        Ok(Some((size, note)))
    }

    /// Keeps witnesses' cosignature lines on the checkpoint at `size` (`(witness name, line)`), and, if
    /// it now has a quorum, records it as the newest witnessed checkpoint.
    pub fn put_cosignatures(&self, size: u64, lines: &[(String, String)], witnessed: bool) -> Result<(), StoreError> {
        self.check_writable()?;
        let mut batch = Batch::default();
        for (witness, line) in lines {
            batch.insert(key::cosignature(size, witness), line.as_bytes());
        }
        if witnessed {
            batch.insert(key::LATEST_WITNESSED, codec::encode(&size));
        }
        self.catalog.apply(batch)
    }

    /// The cosignature lines kept for the checkpoint at `size`: `(witness name, line)`.
    pub fn cosignatures(&self, size: u64) -> Result<Vec<(String, String)>, StoreError> {
        let prefix = key::cosignature_prefix(size);
        self.catalog
            .scan(&prefix, None)
            .map(|item| {
                let (key, value) = item?;
                let name = String::from_utf8(key[prefix.len()..].to_vec());
                let line = String::from_utf8(value);
                match (name, line) {
                    (Ok(name), Ok(line)) => Ok((name, line)),
                    _ => Err(StoreError::Corrupt(format!("a cosignature of checkpoint {size} is not text"))),
                }
            })
            .collect()
    }

    /// The tree size of the newest checkpoint a quorum of witnesses cosigned.
    pub fn latest_witnessed(&self) -> Result<Option<u64>, StoreError> {
        self.get_decoded::<u64>(key::LATEST_WITNESSED, "latest witnessed checkpoint")
    }

    /// Keeps a share link's grant (`value` is the vault's encoding); durable after a sync. Shares are
    /// the owner's settings, not statements: they are not log entries, but every use of one is.
    pub fn put_share(
        &self,
        id: &[u8; 16],
        owner: &OwnerId,
        created_at_ms: i64,
        value: &[u8],
    ) -> Result<(), StoreError> {
        self.check_writable()?;
        let mut batch = Batch::default();
        batch.insert(key::share(id), value);
        batch.insert(key::owner_share(owner, created_at_ms, id), Vec::new());
        self.catalog.apply(batch)
    }

    /// Records that a share was revoked at `at_ms` (the grant stays); durable after a sync.
    pub fn revoke_share(&self, id: &[u8; 16], at_ms: i64) -> Result<(), StoreError> {
        self.check_writable()?;
        let mut batch = Batch::default();
        batch.insert(key::share_revocation(id), codec::encode(&at_ms));
        self.catalog.apply(batch)
    }

    /// A share's grant and its revocation, if any.
    pub fn share(&self, id: &[u8; 16]) -> Result<Option<ShareEntry>, StoreError> {
        let Some(grant) = self.get_value(&key::share(id))? else { return Ok(None) };
        let revoked_at_ms = self.get_decoded::<i64>(&key::share_revocation(id), "share revocation")?;
        Ok(Some(ShareEntry { grant, revoked_at_ms }))
    }

    /// The ids of an owner's shares, newest first.
    pub fn owner_shares(&self, owner: &OwnerId) -> impl Iterator<Item = Result<[u8; 16], StoreError>> + '_ {
        let prefix = key::owner_shares_prefix(owner);
        let length = prefix.len();
        self.catalog.scan(&prefix, None).map(move |item| {
            let (entry_key, _) = item?;
            entry_key
                .get(length + 8..)
                .and_then(|id| <[u8; 16]>::try_from(id).ok())
                .ok_or_else(|| StoreError::Corrupt("share index key has the wrong length".into()))
        })
    }

    /// Keeps an owner's request that `agency` certify `record` (`value` is the vault's encoding);
    /// durable after a sync. Like shares, requests are settings, not log entries.
    pub fn put_certification_request(
        &self,
        record: &Digest,
        agency: &Code,
        requested_at_ms: i64,
        value: &[u8],
    ) -> Result<(), StoreError> {
        self.check_writable()?;
        let mut batch = Batch::default();
        batch.insert(key::certification_request(record, agency), value);
        batch.insert(key::agency_request(agency, requested_at_ms, record), Vec::new());
        self.catalog.apply(batch)
    }

    /// The requests made for a record, in agency order (the vault's encodings).
    pub fn certification_requests(&self, record: &Digest) -> impl Iterator<Item = Result<Vec<u8>, StoreError>> + '_ {
        self.catalog.scan(&key::certification_request_prefix(record), None).map(|item| Ok(item?.1))
    }

    /// The request that `agency` certify `record`, if the owner made one.
    pub fn certification_request(&self, record: &Digest, agency: &Code) -> Result<Option<Vec<u8>>, StoreError> {
        self.get_value(&key::certification_request(record, agency))
    }

    /// The records an agency was asked to certify, newest request first.
    pub fn agency_requests(&self, agency: &Code) -> impl Iterator<Item = Result<Digest, StoreError>> + '_ {
        let prefix = key::agency_requests_prefix(agency);
        let length = prefix.len();
        self.catalog.scan(&prefix, None).map(move |item| {
            let (entry_key, _) = item?;
            entry_key
                .get(length + 8..)
                .and_then(|id| <[u8; 32]>::try_from(id).ok())
                .map(Digest)
                .ok_or_else(|| StoreError::Corrupt("certification request key has the wrong length".into()))
        })
    }

    /// A record's copy certification, if an agency certified it.
    pub fn copy_certification(&self, record: &Digest) -> Result<Option<StatementEntry>, StoreError> {
        self.get_statement(&key::copy_certification(record), "copy certification entry")
    }

    /// A validation of an X.509 signature, by its own id.
    pub fn validation(&self, validation: &Digest) -> Result<Option<StatementEntry>, StoreError> {
        self.get_statement(&key::validation(validation), "signature validation entry")
    }

    /// The newest validation of an X.509 signature on `statement`.
    pub fn signature_validation(&self, statement: &Digest) -> Result<Option<StatementEntry>, StoreError> {
        let Some(bytes) = self.get_value(&key::statement_validation(statement))? else { return Ok(None) };
        let id = <[u8; 32]>::try_from(bytes.as_slice())
            .map(Digest)
            .map_err(|_| StoreError::Corrupt(format!("the validation index of {statement} is not an id")))?;
        self.validation(&id)
    }

    /// The detached signature (`.p7s`) a record's document was deposited with, if it was.
    pub fn detached_signature(&self, statement: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        self.get_value(&key::detached_signature(statement))
    }

    /// A CRL or OCSP response kept by a validation.
    pub fn revocation_evidence(&self, digest: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        self.get_value(&key::revocation_evidence(digest))
    }

    /// The signed checkpoint kept for tree size `size`, if one was signed at that size.
    pub fn checkpoint(&self, size: u64) -> Result<Option<String>, StoreError> {
        self.get_value(&key::checkpoint(size))?
            .map(|bytes| {
                String::from_utf8(bytes).map_err(|_| StoreError::Corrupt(format!("checkpoint {size} is not text")))
            })
            .transpose()
    }

    pub fn record(&self, id: &Digest) -> Result<Option<StatementEntry>, StoreError> {
        self.get_statement(&key::record(id), "record entry")
    }

    pub fn contains_record(&self, id: &Digest) -> Result<bool, StoreError> {
        Ok(self.get_value(&key::record(id))?.is_some())
    }

    /// A record's revocation and supersession; the default when nothing happened to it.
    pub fn record_state(&self, id: &Digest) -> Result<RecordState, StoreError> {
        Ok(self.get_decoded(&key::record_state(id), "record state")?.unwrap_or_default())
    }

    /// The receipt envelope of the statement accepted at `sequence`.
    pub fn receipt(&self, sequence: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.get_value(&key::receipt(sequence))
    }

    pub fn certificate(&self, id: &Digest) -> Result<Option<StatementEntry>, StoreError> {
        self.get_statement(&key::certificate(id), "certificate entry")
    }

    pub fn certificate_revocation(&self, id: &Digest) -> Result<Option<StatementEntry>, StoreError> {
        self.get_statement(&key::certificate_revocation(id), "certificate revocation")
    }

    /// Every certificate id, in id order.
    pub fn certificate_ids(&self) -> impl Iterator<Item = Result<Digest, StoreError>> + '_ {
        self.catalog.scan(key::CERTIFICATE_PREFIX, None).map(|item| digest_suffix(&item?.0))
    }

    /// The certificates issued for the key with this fingerprint.
    pub fn certificates_of_key(&self, fingerprint: &Digest) -> impl Iterator<Item = Result<Digest, StoreError>> + '_ {
        self.catalog.scan(&key::fingerprint_prefix(fingerprint), None).map(|item| digest_suffix(&item?.0))
    }

    pub fn agency_has_certificates(&self, agency: &Code) -> Result<bool, StoreError> {
        self.catalog.scan(&key::agency_prefix(agency), None).next().transpose().map(|first| first.is_some())
    }

    /// The canonical bytes of the access event at log index `sequence` in `owner`'s access log.
    pub fn access_event(&self, owner: &OwnerId, sequence: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.get_value(&key::access_entry(owner, sequence))
    }

    /// The stored manifest of content, as `content` encoded it.
    pub fn manifest(&self, blake3: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        self.get_value(&key::manifest(blake3))
    }

    /// An owner's record ids, newest first, after `cursor`.
    pub fn owner_records(
        &self,
        owner: &OwnerId,
        after: Option<Cursor>,
    ) -> impl Iterator<Item = Result<(Cursor, Digest), StoreError>> + '_ {
        let prefix = key::owner_prefix(owner);
        let start = after.map(|Cursor(sequence)| key::owner_entry(owner, sequence));
        let length = prefix.len();
        self.catalog.scan(&prefix, start.as_deref()).map(move |item| {
            let (entry_key, value) = item?;
            Ok((Cursor(u64::MAX - key_suffix(&entry_key, length)?), digest_value(value)?))
        })
    }

    /// The ids of records that point to a content hash, oldest first, after `cursor`.
    pub fn content_records(
        &self,
        blake3: &Digest,
        after: Option<Cursor>,
    ) -> impl Iterator<Item = Result<(Cursor, Digest), StoreError>> + '_ {
        let prefix = key::content_prefix(blake3);
        let start = after.map(|Cursor(sequence)| key::content_entry(blake3, sequence));
        let length = prefix.len();
        self.catalog.scan(&prefix, start.as_deref()).map(move |item| {
            let (entry_key, value) = item?;
            Ok((Cursor(key_suffix(&entry_key, length)?), digest_value(value)?))
        })
    }

    /// An owner's access events (as the vault encoded them) with their sequence numbers, newest first.
    pub fn access_log(
        &self,
        owner: &OwnerId,
        after: Option<Cursor>,
    ) -> impl Iterator<Item = Result<(Cursor, u64, Vec<u8>), StoreError>> + '_ {
        let prefix = key::access_prefix(owner);
        let start = after.map(|Cursor(sequence)| key::access_entry(owner, sequence));
        let length = prefix.len();
        self.catalog.scan(&prefix, start.as_deref()).map(move |item| {
            let (entry_key, value) = item?;
            let sequence = u64::MAX - key_suffix(&entry_key, length)?;
            Ok((Cursor(sequence), sequence, value))
        })
    }

    /// Checks the catalog's format mark at open: a newer or a retired format is refused before anything
    /// is read or written. Whether the mark is this build's: a store without it is a new one, or a
    /// format-3 store written before the mark existed (its values carry version byte 3, checked on its
    /// log size); either, like a store marked with an older format this build opens, is opened as it
    /// is and gets this build's mark with its next commit.
    pub(super) fn check_format(&self) -> Result<bool, StoreError> {
        match self.catalog.get(key::FORMAT)?.as_deref() {
            Some([found]) if *found > super::STORE_FORMAT_VERSION => Err(StoreError::NewerFormat { found: *found }),
            Some([found]) if *found < super::STORE_FORMAT_VERSION_MIN => Err(StoreError::OlderFormat { found: *found }),
            Some([found]) => Ok(*found == super::STORE_FORMAT_VERSION),
            Some(_) => Err(StoreError::Corrupt("the catalog's format mark is malformed".into())),
            None => match self.catalog.get(key::LOG_SIZE)?.as_deref().map(|bytes| bytes.first()) {
                None | Some(Some(&codec::VALUE_VERSION)) => Ok(false),
                Some(Some(&found)) if found > codec::VALUE_VERSION => Err(StoreError::NewerFormat { found }),
                Some(Some(&found)) => Err(StoreError::OlderFormat { found }),
                Some(None) => Err(StoreError::Corrupt("the catalog's log size is empty".into())),
            },
        }
    }

    /// What a catalog write means to a reader of the journal that does not open the store (a backup):
    /// the log size it sets, if it is that key.
    pub(crate) fn log_size_written(key: &[u8], value: &[u8]) -> Option<u64> {
        (key == key::LOG_SIZE).then(|| codec::decode::<u64>(value).ok()).flatten()
    }

    /// The blob engine state a catalog write keeps, if it is one: (engine key, engine value).
    pub(crate) fn blob_state_written<'a>(key: &'a [u8], value: &'a [u8]) -> Option<(&'a [u8], &'a [u8])> {
        key.strip_prefix(key::BLOB_STATE_PREFIX).map(|engine_key| (engine_key, value))
    }

    /// The blob engine's committed states, as kept by [`Change::Record`] commits.
    pub(crate) fn blob_states(engine: &dyn super::CatalogEngine) -> Result<Vec<EngineState>, StoreError> {
        engine
            .scan(key::BLOB_STATE_PREFIX, None)
            .map(|item| item.map(|(k, v)| (k[key::BLOB_STATE_PREFIX.len()..].to_vec(), v)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sequence numbers come from the catalog: a commit that does not carry the next one (a second
    /// writer that read the same size, or a stale one) is refused, whatever process made it.
    #[test]
    fn a_commit_without_the_next_sequence_number_is_refused() {
        let store = Store::new(crate::store::memory::Memory::new().engines()).expect("store");
        let commit = |sequence: u64| Commit {
            sequence,
            receipt: None,
            change: Change::Access {
                owner: OwnerId::parse("001204012345").expect("owner"),
                event: vec![sequence as u8],
            },
            log: LogAppend { entry: vec![1], nodes: Vec::new(), owner_head: None },
            seal: None,
        };
        assert!(matches!(store.commit(commit(1)), Err(StoreError::SequenceConflict { proposed: 1, size: 0 })));
        store.commit(commit(0)).expect("the next one");
        assert!(matches!(store.commit(commit(0)), Err(StoreError::SequenceConflict { proposed: 0, size: 1 })));
        store.commit(commit(1)).expect("the next one");
        assert_eq!(store.log_size().expect("size"), 2);
    }

    /// A statement entry is stored with its seal after the layout without one, which still decodes
    /// (entries stored before seals); a seal cut short or followed by more is damage.
    #[test]
    fn statement_entries_decode_with_and_without_a_seal_and_nothing_between() {
        let unsealed = StatementEntry { envelope: vec![1, 2, 3], sequence: 5, seal: None };
        let old_layout = unsealed.clone().encode();
        assert_eq!(old_layout, [&[codec::VALUE_VERSION, 3, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 5][..], &[0; 7]].concat());
        let sealed = StatementEntry { seal: Some([9; 32]), ..unsealed.clone() };
        let new_layout = sealed.clone().encode();
        assert_eq!(new_layout, [&old_layout[..], &[9; 32]].concat());
        assert_eq!(StatementEntry::decode(&old_layout), Ok(unsealed));
        assert_eq!(StatementEntry::decode(&new_layout), Ok(sealed));
        for damaged in [&new_layout[..new_layout.len() - 1], &[&new_layout[..], &[0]].concat()] {
            assert!(StatementEntry::decode(damaged).is_err(), "{} bytes", damaged.len());
        }
    }

    /// The format mark: written with the first commit, and a store marked newer or older than this
    /// build reads is refused at open with its version named, before anything else is read.
    #[test]
    fn the_format_mark_is_written_once_and_other_formats_are_refused_at_open() {
        let memory = crate::store::memory::Memory::new();
        let store = Store::new(memory.engines()).expect("a new store");
        assert_eq!(store.catalog.get(key::FORMAT).expect("read"), None, "opening writes nothing");
        let access = |sequence| Commit {
            sequence,
            receipt: None,
            change: Change::Access { owner: OwnerId::parse("001204012345").expect("owner"), event: vec![0] },
            log: LogAppend { entry: vec![1], nodes: Vec::new(), owner_head: None },
            seal: None,
        };
        store.commit(access(0)).expect("commit");
        assert_eq!(store.catalog.get(key::FORMAT).expect("read"), Some(vec![crate::store::STORE_FORMAT_VERSION]));
        assert!(Store::new(memory.engines()).is_ok(), "its own format opens");
        // A store of format 3 opens, and its next commit marks it with this build's format.
        let mut batch = Batch::default();
        batch.insert(key::FORMAT, vec![3]);
        memory.engines().catalog.apply(batch).expect("apply");
        let older = Store::new(memory.engines()).expect("format 3 opens");
        assert_eq!(older.catalog.get(key::FORMAT).expect("read"), Some(vec![3]), "opening writes nothing");
        older.commit(access(1)).expect("commit");
        assert_eq!(older.catalog.get(key::FORMAT).expect("read"), Some(vec![crate::store::STORE_FORMAT_VERSION]));
        for (found, newer) in [(crate::store::STORE_FORMAT_VERSION + 1, true), (2, false)] {
            let mut batch = Batch::default();
            batch.insert(key::FORMAT, vec![found]);
            memory.engines().catalog.apply(batch).expect("apply");
            match Store::new(memory.engines()) {
                Err(StoreError::NewerFormat { found: f }) if newer => assert_eq!(f, found),
                Err(StoreError::OlderFormat { found: f }) if !newer => assert_eq!(f, found),
                Err(other) => panic!("format {found}: {other}"),
                Ok(_) => panic!("format {found} opened"),
            }
        }
        // A store from before the mark: its values' version byte decides.
        let unmarked = crate::store::memory::Memory::new();
        let mut batch = Batch::default();
        batch.insert(key::LOG_SIZE, vec![2, 0]);
        unmarked.engines().catalog.apply(batch).expect("apply");
        assert!(matches!(Store::new(unmarked.engines()), Err(StoreError::OlderFormat { found: 2 })));
    }

    #[test]
    fn cursors_round_trip_and_reject_foreign_text() {
        for sequence in [0, 1, 42, u64::MAX] {
            assert_eq!(Cursor::parse(&Cursor(sequence).to_string()), Some(Cursor(sequence)));
        }
        for text in ["", "zz", "0000000000000001", "AgAAAAAAAAAB", "AQAAAAAAAAA"] {
            assert_eq!(Cursor::parse(text), None, "{text:?}");
        }
        let pattern = regex::Regex::new(CURSOR_PATTERN).expect("pattern");
        let alphabet = "ABPQZafg09-_+/=.";
        for first in alphabet.chars() {
            for second in alphabet.chars() {
                for rest in ["AAAAAAAAAA", "__________", "AAAAAAAAA", "AAAAAAAAAAA", "AAAAAAAAA="] {
                    let text = format!("{first}{second}{rest}");
                    assert_eq!(pattern.is_match(&text), Cursor::parse(&text).is_some(), "{text:?}");
                }
            }
        }
    }
}
