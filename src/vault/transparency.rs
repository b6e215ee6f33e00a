//! Reading the transparency log: signed checkpoints, inclusion and consistency proofs, and the hash
//! tiles and entry bundles of the C2SP tlog-tiles layout.
//!
//! Checkpoints cover durable entries only, and each new one is checked to extend the previous one (a
//! consistency proof from the stored tree) before it is signed, so the vault never signs two
//! checkpoints that contradict each other, whatever happened to its files in between. Every checkpoint
//! is kept. Proofs and tiles are served against signed checkpoints only.

use super::witnessing::Witnessed;
use super::{StorageError, Vault};
use crate::error_code::ErrorCode;
use crate::log::{self, Checkpoint, Hash, HashSource as _, Tile, TILE_WIDTH};

/// Why a proof cannot be given.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProofQueryError {
    #[error("no checkpoint has been signed yet; one follows within about a second of the first entry")]
    NoCheckpoint,
    #[error("tree size {0} has no signed checkpoint; ask for the latest checkpoint's size")]
    NoCheckpointAtSize(u64),
    #[error("log entry {index} is not in the tree of size {size}; it will be in the next checkpoint")]
    NotCovered { index: u64, size: u64 },
    #[error("tree size {old} is larger than tree size {new}")]
    SizesOutOfOrder { old: u64, new: u64 },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl ProofQueryError {
    /// The stable code of each case, for the API and the CLI.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProofQueryError::NoCheckpoint => ErrorCode::NoCheckpoint,
            ProofQueryError::NoCheckpointAtSize(_) => ErrorCode::NoCheckpointAtSize,
            ProofQueryError::NotCovered { .. } => ErrorCode::NotInCheckpoint,
            ProofQueryError::SizesOutOfOrder { .. } => ErrorCode::SizesOutOfOrder,
            ProofQueryError::Storage(_) => ErrorCode::StorageError,
        }
    }
}

/// A checkpoint with its signed note (the vault's signature, then the witnesses' cosignatures kept so
/// far) and how many configured witnesses cosigned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    pub checkpoint: Checkpoint,
    pub note: String,
    pub witnessed: Witnessed,
}

/// That log entry `index` is in the tree of a signed checkpoint.
#[derive(Debug, Clone)]
pub struct InclusionProof {
    pub index: u64,
    pub leaf_hash: Hash,
    pub hashes: Vec<Hash>,
    pub checkpoint: SignedCheckpoint,
}

/// That the tree of size `old` is a prefix of the tree of size `new` (both signed).
#[derive(Debug, Clone)]
pub struct ConsistencyProof {
    pub old: SignedCheckpoint,
    pub new: SignedCheckpoint,
    pub hashes: Vec<Hash>,
}

impl Vault {
    /// The log's origin: the first line of its checkpoints and the name its key signs them under.
    pub fn log_origin(&self) -> &str {
        &self.origin
    }

    /// The newest signed checkpoint, if any.
    pub fn latest_checkpoint(&self) -> Result<Option<SignedCheckpoint>, StorageError> {
        match self.store.latest_checkpoint()? {
            None => Ok(None),
            Some((size, note)) => self.open_checkpoint(size, note).map(Some),
        }
    }

    /// The checkpoint readers are given by default: the newest, or, when the witness policy is
    /// fail-closed, the newest a quorum of witnesses cosigned.
    pub fn served_checkpoint(&self) -> Result<Option<SignedCheckpoint>, StorageError> {
        if !self.config.witnesses.fail_closed {
            return self.latest_checkpoint();
        }
        match self.latest_witnessed_size()? {
            None => Ok(None),
            Some(size) => self.checkpoint_at(size),
        }
    }

    /// The size of the newest checkpoint a quorum of witnesses cosigned, if one has been.
    pub fn latest_witnessed_size(&self) -> Result<Option<u64>, StorageError> {
        Ok(self.store.latest_witnessed()?)
    }

    /// The checkpoint signed at tree size `size`, if one was.
    pub fn checkpoint_at(&self, size: u64) -> Result<Option<SignedCheckpoint>, StorageError> {
        match self.store.checkpoint(size)? {
            None => Ok(None),
            Some(note) => self.open_checkpoint(size, note).map(Some),
        }
    }

    fn open_checkpoint(&self, size: u64, note: String) -> Result<SignedCheckpoint, StorageError> {
        let checkpoint = log::checkpoint::open(&note, &self.origin, &self.key_of_checkpoint(size))
            .map_err(|e| StorageError::Corrupt(format!("stored checkpoint {size}: {e}")))?;
        if checkpoint.size != size {
            return Err(StorageError::Corrupt(format!("checkpoint stored under size {size} says {}", checkpoint.size)));
        }
        // The note is served with the cosignatures kept for it appended.
        let (witnessed, lines) = self.witnessing(size)?;
        let note = lines.into_iter().fold(note, |note, (_, line)| note + &line);
        Ok(SignedCheckpoint { checkpoint, note, witnessed })
    }

    /// Signs a checkpoint of everything durable, if the log grew since the last one; returns the
    /// newest checkpoint either way. The server calls this about once a second. First it commits the
    /// owner map over the entries so far (`completeness`), so every checkpoint that covers new entries
    /// also covers a commitment to every owner's chain head.
    pub fn sign_checkpoint(&self) -> Result<Option<SignedCheckpoint>, StorageError> {
        let _guard = self.checkpoint_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.commit_owner_map()?;
        let latest = self.latest_checkpoint()?;
        let size = self.store.durable_size();
        if size == 0 || latest.as_ref().is_some_and(|latest| latest.checkpoint.size >= size) {
            return Ok(latest);
        }
        let root = log::root(size, &self.store)?;
        if let Some(previous) = &latest {
            let old = &previous.checkpoint;
            let proof = log::consistency_proof(old.size, size, &self.store)?;
            log::verify_consistency(old.size, size, &old.root, &root, &proof).map_err(|error| {
                StorageError::Corrupt(format!(
                    "the stored log no longer extends checkpoint {} ({error}); refusing to sign a checkpoint that \
                     contradicts it",
                    old.size
                ))
            })?;
        }
        let checkpoint = Checkpoint { origin: self.origin.clone(), size, root };
        let note = checkpoint.sign(&self.key);
        self.store.put_checkpoint(size, &note)?;
        self.store.sync()?;
        let kept = self.config.data_dir.join(super::KEPT_CHECKPOINT_FILE);
        crate::files::replace_durably(&kept, note.as_bytes())
            .map_err(|error| StorageError::Store(crate::store::StoreError::Io { path: kept.clone(), source: error }))?;
        let witnessed = Witnessed { cosigned: 0, quorum: self.config.witnesses.quorum };
        Ok(Some(SignedCheckpoint { checkpoint, note, witnessed }))
    }

    /// The checkpoint a proof is given against: the one signed at `size`, or the newest.
    fn proof_checkpoint(&self, size: Option<u64>) -> Result<SignedCheckpoint, ProofQueryError> {
        match size {
            Some(size) => self.checkpoint_at(size)?.ok_or(ProofQueryError::NoCheckpointAtSize(size)),
            None => self.served_checkpoint()?.ok_or(ProofQueryError::NoCheckpoint),
        }
    }

    /// An inclusion proof of log entry `index` against the checkpoint at `size` (default: the newest).
    pub fn inclusion_proof(&self, index: u64, size: Option<u64>) -> Result<InclusionProof, ProofQueryError> {
        let checkpoint = self.proof_checkpoint(size)?;
        let size = checkpoint.checkpoint.size;
        if index >= size {
            return Err(ProofQueryError::NotCovered { index, size });
        }
        let leaf_hash = self.store.node(0, index).map_err(StorageError::from)?;
        let hashes = log::inclusion_proof(index, size, &self.store).map_err(StorageError::from)?;
        Ok(InclusionProof { index, leaf_hash, hashes, checkpoint })
    }

    /// A consistency proof between the checkpoints signed at `old` and at `new` (default: the newest).
    pub fn consistency_proof(&self, old: u64, new: Option<u64>) -> Result<ConsistencyProof, ProofQueryError> {
        let new = self.proof_checkpoint(new)?;
        let old = self.proof_checkpoint(Some(old))?;
        let (old_size, new_size) = (old.checkpoint.size, new.checkpoint.size);
        if old_size > new_size {
            return Err(ProofQueryError::SizesOutOfOrder { old: old_size, new: new_size });
        }
        let hashes = log::consistency_proof(old_size, new_size, &self.store).map_err(StorageError::from)?;
        Ok(ConsistencyProof { old, new, hashes })
    }

    /// A hash tile or an entry bundle of the tree of the newest checkpoint, or `None` if that tree has
    /// no such tile (tlog-tiles: a full tile is served once complete, a partial one at its width).
    pub fn tile(&self, tile: Tile) -> Result<Option<Vec<u8>>, StorageError> {
        let Some(latest) = self.latest_checkpoint()? else {
            return Ok(None);
        };
        let size = latest.checkpoint.size;
        let level_width = match tile.tree_level() {
            Some(level) if level < 64 => size >> level,
            Some(_) => return Ok(None),
            None => size,
        };
        let start = tile.index.checked_mul(TILE_WIDTH);
        let Some(start) = start.filter(|start| start.checked_add(tile.width).is_some_and(|end| end <= level_width))
        else {
            return Ok(None);
        };
        // A partial tile of any width the tree has reached is served, so a client following an older
        // checkpoint still gets the width it asks for (the log is append-only: those hashes never change).
        match tile.tree_level() {
            Some(level) => {
                let hashes = self.store.log_nodes(level, start, tile.width)?;
                if hashes.len() as u64 != tile.width {
                    return Err(StorageError::Corrupt(format!("log level {level} is missing hashes from {start}")));
                }
                Ok(Some(hashes.concat()))
            }
            None => {
                let mut entries = Vec::with_capacity(tile.width as usize);
                for index in start..start + tile.width {
                    entries.push(
                        self.store
                            .log_entry(index)?
                            .ok_or_else(|| StorageError::Corrupt(format!("log entry {index} is missing")))?,
                    );
                }
                Ok(Some(log::entry_bundle(entries.iter().map(Vec::as_slice))))
            }
        }
    }

    /// How many log entries are durable (and so visible, and checkpointable).
    pub fn log_size(&self) -> u64 {
        self.store.durable_size()
    }

    /// The leaf bytes of log entry `index`, once durable.
    pub fn log_entry(&self, index: u64) -> Result<Option<Vec<u8>>, StorageError> {
        if !self.store.is_visible(index) {
            return Ok(None);
        }
        Ok(self.store.log_entry(index)?)
    }
}
