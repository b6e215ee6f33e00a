//! The storage seam: a catalog of small values and a blob store for content frames, each behind a
//! narrow trait, with the engines that implement them.
//!
//! Above this module nothing knows a key layout, a cursor's bytes or where content lives. The vault
//! speaks to [`Store`]: typed catalog reads and one atomic [`Commit`] per accepted statement (see
//! `catalog`), durable [`Store::sync`], and blobs written through a [`BlobWriter`] and read back through an
//! opaque [`BlobRef`]. Underneath, an engine implements two traits:
//!
//! - [`CatalogEngine`]: ordered keys, atomic batches, a durable `sync` (group commit).
//! - [`Blobs`]: append-only objects, durable when finished, invisible until their reference is committed.
//!
//! Engines: `embedded` (redb for the catalog, with a journal that lets a damaged catalog be rebuilt, and
//! pack files for blobs; the default), `memory` (tests and fuzzing, with a model of what a crash keeps),
//! and `fault` (wraps any engine and makes the N-th write, sync or read fail or tear).
//!
//! Rules every engine keeps: `sync` returns only when everything committed before it survives a power
//! cut; a failed sync or blob flush poisons the store against further writes (the kernel may have
//! dropped the dirty pages, so a retry proves nothing); and no engine deletes or shrinks stored data
//! because its catalog says less than before: bytes it cannot account for are quarantined and reported.

mod catalog;
pub mod embedded;
pub mod fault;
pub mod memory;
mod packs;
mod pending;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

pub use catalog::{Change, Commit, Cursor, LogAppend, NewContent, RecordState, StatementEntry, CURSOR_PATTERN};
pub use embedded::{EmbeddedConfig, Snapshot, CACHE_CAPACITY_BYTES_DEFAULT, CATALOG_FLUSH_INTERVAL_MS};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("storage engine error: {0}")]
    Engine(String),
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("an earlier sync failed; the store refuses writes until it is reopened and checked")]
    Poisoned,
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("sequence {proposed} is not the next one (the log holds {size} entries): another writer committed first")]
    SequenceConflict { proposed: u64, size: u64 },
    #[error(
        "the catalog is behind what was acknowledged: it ends at batch {catalog_batch}, but batches up to \
         {acknowledged_batch} were made durable and acknowledged (the journal holds them up to {journal_batch}). \
         The catalog's files were damaged or replaced. Nothing was changed. Start with the recovery flag \
         (`kho serve --recover`) to restore the missing batches from the journal"
    )]
    CatalogBehind { catalog_batch: u64, acknowledged_batch: u64, journal_batch: u64 },
    #[error(
        "this store was written by a newer Kho (stored format {found}); this build reads formats \
         {STORE_FORMAT_VERSION_MIN} to {STORE_FORMAT_VERSION}. Nothing was changed. Run the release that wrote it \
         (docs/OPERATIONS.md, Upgrades)"
    )]
    NewerFormat { found: u8 },
    #[error(
        "this store has stored format {found}, which this build no longer opens (it reads formats \
         {STORE_FORMAT_VERSION_MIN} to {STORE_FORMAT_VERSION}). Nothing was changed"
    )]
    OlderFormat { found: u8 },
    #[error("fault injected: {0}")]
    Injected(&'static str),
}

/// The stored format this build writes (docs/FORMAT.md section 6), the catalog's format mark, checked
/// at open. Format 4 is format 3 (whose number is also the version byte of every stored value) with
/// content in frames checked against the document's BLAKE3 tree: a format-3 store opens and is marked 4
/// with its next commit, after which a build that reads only format 3 refuses it instead of finding its
/// new content unreadable. Format 5 keeps the embedded catalog in redb instead of sled, with the same
/// keys and values: a store of format 3 or 4 has its catalog rebuilt from its journal at its first open
/// (`embedded`). Format 6 stores the vault's seal with each statement entry (`catalog::StatementEntry`),
/// in a layout a build of format 5 cannot decode: a format-5 store opens unchanged (its entries
/// without seals are read as before) and is marked 6 with its next commit.
pub const STORE_FORMAT_VERSION: u8 = 6;
/// The oldest stored format this build opens (formats 1 and 2 were never deployed).
pub const STORE_FORMAT_VERSION_MIN: u8 = 3;

pub(crate) fn io_error(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_owned(), source }
}

/// Changes to the catalog applied all at once or not at all.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    pub(crate) operations: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    pub fn insert(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.operations.push((key.into(), Some(value.into())));
    }
    pub fn remove(&mut self, key: impl Into<Vec<u8>>) {
        self.operations.push((key.into(), None));
    }
    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }
    pub fn operations(&self) -> &[(Vec<u8>, Option<Vec<u8>>)] {
        &self.operations
    }
}

/// Key-value pairs in key order.
pub type Entries<'a> = Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>), StoreError>> + 'a>;

/// An ordered key-value engine for the catalog. Keys and values are the catalog's business (`catalog`);
/// an engine stores them, applies a batch atomically, and makes it durable on `sync`.
pub trait CatalogEngine: Send + Sync {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Pairs whose key starts with `prefix`, in key order, strictly after `after` if given.
    fn scan<'a>(&'a self, prefix: &[u8], after: Option<&[u8]>) -> Entries<'a>;
    /// Applies `batch` atomically; durable only after a later `sync`.
    fn apply(&self, batch: Batch) -> Result<(), StoreError>;
    /// Returns once everything applied before the call is on stable storage.
    fn sync(&self) -> Result<(), StoreError>;
    fn size_on_disk(&self) -> Result<u64, StoreError>;
}

/// Where a blob's bytes are, in the words of the engine that wrote it; nobody else reads inside it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BlobRef(pub Vec<u8>);

/// A blob engine's own record of a committed blob (key, value), kept in the catalog for it.
pub type EngineState = (Vec<u8>, Vec<u8>);

/// A blob written in full and durable, not yet referenced by the catalog.
pub struct StagedBlob {
    pub reference: BlobRef,
    /// What the engine needs kept, in the same catalog commit, to know the blob is committed (a pack
    /// engine's committed extent); handed back to the engine when it opens.
    pub committed_state: Option<EngineState>,
}

/// Append-only objects for content frames.
pub trait Blobs: Send + Sync {
    /// A writer for one new blob.
    fn create(&self) -> Result<Box<dyn BlobWriter>, StoreError>;
    /// The `into.len()` bytes at `offset` inside a blob, read into `into` (the caller's buffer, so that
    /// a reader can reuse its buffers); an error if the blob is shorter or unreadable.
    fn read(&self, blob: &BlobRef, offset: u64, into: &mut [u8]) -> Result<(), StoreError>;
    /// Reads the same bytes as [`Blobs::read`] when the engine has them at hand (a pack's pages in the
    /// page cache) and answers `true`, or answers `false` when reading them would wait for a disk
    /// (`into` then holds nothing to use): never blocks on I/O, so an async task may call it. An engine
    /// that cannot tell answers `false`, and the caller reads on a blocking thread.
    fn read_if_at_hand(&self, _blob: &BlobRef, _offset: u64, _into: &mut [u8]) -> Result<bool, StoreError> {
        Ok(false)
    }
    /// Feeds every stored byte, in a fixed order, to `hasher` (for state digests).
    fn digest_into(&self, hasher: &mut blake3::Hasher) -> Result<(), StoreError>;
    fn size_on_disk(&self) -> Result<u64, StoreError>;
}

/// One blob being written. Dropping it without [`BlobWriter::release`] discards what it wrote.
pub trait BlobWriter: Send {
    fn append(&mut self, bytes: &[u8]) -> Result<(), StoreError>;
    /// Appends `parts` one after the other (a frame's header and its payload, without joining them
    /// first).
    fn append_parts(&mut self, parts: &[&[u8]]) -> Result<(), StoreError> {
        parts.iter().try_for_each(|part| self.append(part))
    }
    /// Makes everything appended durable; the blob stays invisible until its reference is committed.
    fn finish(&mut self) -> Result<StagedBlob, StoreError>;
    /// After the commit that references the blob: the writer's resources go back to the engine.
    fn release(self: Box<Self>);
    /// Drops the blob (rejected or duplicate content).
    fn discard(self: Box<Self>) -> Result<(), StoreError>;
}

/// What opening a store found and did, for the operator.
#[derive(Debug, Default, Clone)]
pub struct OpenReport {
    /// Catalog batches restored from the journal (after a crash, the few never acknowledged; after
    /// damage, with the recovery flag, everything the catalog had lost).
    pub batches_replayed: u64,
    /// Bytes past a committed extent that were moved aside into the quarantine directory.
    pub quarantined: Vec<PathBuf>,
    pub warnings: Vec<String>,
}

/// A catalog engine and a blob engine, opened together.
pub struct Engines {
    pub catalog: Arc<dyn CatalogEngine>,
    pub blobs: Arc<dyn Blobs>,
    pub report: OpenReport,
}

/// The store the vault uses; cheap to clone.
#[derive(Clone)]
pub struct Store {
    catalog: Arc<dyn CatalogEngine>,
    blobs: Arc<dyn Blobs>,
    poisoned: Arc<AtomicBool>,
    report: Arc<OpenReport>,
    /// How many log entries are committed, and how many of those a sync has made durable. Readers
    /// see only the durable ones (durable before visible); the sequencer sees them all.
    committed_size: Arc<AtomicU64>,
    durable_size: Arc<AtomicU64>,
    /// Whether the catalog holds its format mark; if not, the next commit writes it.
    format_marked: Arc<AtomicBool>,
    /// Told of every durable sync (`observe_syncs`).
    sync_observer: Arc<std::sync::OnceLock<SyncObserver>>,
    /// The durable size again, for callers waiting without a thread (`durable`); also marked changed,
    /// to wake them, when their sync fails. (`durable_size` stays an atomic: every listed item reads it.)
    durable_updates: Arc<tokio::sync::watch::Sender<u64>>,
    /// The sync run for those callers, one at a time.
    waiters_sync: Arc<WaitersSync>,
}

/// What `Store::durable` needs to run one sync at a time for every caller waiting.
#[derive(Default)]
struct WaitersSync {
    /// The durable size some waiting caller needs.
    wanted: AtomicU64,
    /// Whether a sync for waiting callers runs, or is about to.
    running: AtomicBool,
}

/// Told, after each [`Store::sync`] call, how long the caller waited and how many log entries that call
/// made durable (0 when another caller's sync covered its commits: group commit).
pub type SyncObserver = Box<dyn Fn(std::time::Duration, u64) + Send + Sync>;

impl Store {
    /// The store over opened engines. Everything the catalog holds at open survived whatever came
    /// before, so it is all durable.
    pub fn new(engines: Engines) -> Result<Store, StoreError> {
        let store = Store {
            catalog: engines.catalog,
            blobs: engines.blobs,
            poisoned: Arc::new(AtomicBool::new(false)),
            report: Arc::new(engines.report),
            committed_size: Arc::new(AtomicU64::new(0)),
            durable_size: Arc::new(AtomicU64::new(0)),
            format_marked: Arc::new(AtomicBool::new(false)),
            sync_observer: Arc::new(std::sync::OnceLock::new()),
            durable_updates: Arc::new(tokio::sync::watch::Sender::new(0)),
            waiters_sync: Arc::new(WaitersSync::default()),
        };
        let marked = store.check_format()?;
        store.format_marked.store(marked, Ordering::Release);
        let size = store.log_size()?;
        store.committed_size.store(size, Ordering::Release);
        store.durable_size.store(size, Ordering::Release);
        store.durable_updates.send_replace(size);
        Ok(store)
    }

    /// How many log entries are durable: entries at this index or later are not visible yet.
    pub fn durable_size(&self) -> u64 {
        self.durable_size.load(Ordering::Acquire)
    }

    /// Whether the entry at `sequence` is durable, and so may be shown.
    pub fn is_visible(&self, sequence: u64) -> bool {
        sequence < self.durable_size()
    }

    fn committed(&self, size: u64) {
        self.committed_size.fetch_max(size, Ordering::AcqRel);
    }

    /// What opening found (replayed batches, quarantined bytes).
    pub fn open_report(&self) -> &OpenReport {
        &self.report
    }

    /// An error once a sync has failed: the store then refuses writes until reopened.
    pub fn check_writable(&self) -> Result<(), StoreError> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(StoreError::Poisoned);
        }
        Ok(())
    }

    fn poison_on_error<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if result.is_err() {
            self.poisoned.store(true, Ordering::Release);
        }
        result
    }

    /// Returns once everything committed before the call is on stable storage (group commit).
    pub fn sync(&self) -> Result<(), StoreError> {
        self.check_writable()?;
        // Everything committed before the sync starts is durable when it returns.
        let committed = self.committed_size.load(Ordering::Acquire);
        let started = std::time::Instant::now();
        let result = self.catalog.sync();
        self.poison_on_error(result)?;
        let before = self.durable_size.fetch_max(committed, Ordering::AcqRel);
        self.durable_updates.send_if_modified(|durable| {
            let advanced = committed > *durable;
            *durable = (*durable).max(committed);
            advanced
        });
        if let Some(observer) = self.sync_observer.get() {
            observer(started.elapsed(), committed.saturating_sub(before));
        }
        Ok(())
    }

    /// Returns once the first `size` log entries are durable, holding no thread while it waits: a
    /// sync runs on tokio's blocking pool for every caller waiting, one at a time (and shares the
    /// group sync with callers of [`Store::sync`]). Awaited within a tokio runtime.
    pub async fn durable(&self, size: u64) -> Result<(), StoreError> {
        // Subscribed first, so that no change after the checks below goes unnoticed.
        let mut updates = self.durable_updates.subscribe();
        let waiters = &self.waiters_sync;
        waiters.wanted.fetch_max(size, Ordering::SeqCst);
        loop {
            if self.durable_size() >= size {
                return Ok(());
            }
            self.check_writable()?;
            if !waiters.running.swap(true, Ordering::SeqCst) {
                let store = self.clone();
                // Not awaited: whoever is waiting then is woken by the durable size it publishes.
                drop(tokio::task::spawn_blocking(move || store.sync_for_waiters()));
            }
            updates.changed().await.map_err(|_| StoreError::Engine("the store was closed".into()))?;
        }
    }

    /// Syncs until every waiting caller's entries are durable. A caller that starts waiting just as
    /// this stops either finds it still running (and is covered by it) or finds it stopped and
    /// starts another: `wanted` is written before `running` is read, and `running` cleared before
    /// `wanted` is read again.
    fn sync_for_waiters(&self) {
        let waiters = &self.waiters_sync;
        loop {
            while self.durable_size() < waiters.wanted.load(Ordering::SeqCst) {
                if self.sync().is_err() {
                    // The store is poisoned: the waiting callers are woken to see it.
                    self.durable_updates.send_modify(|_| ());
                    break;
                }
            }
            waiters.running.store(false, Ordering::SeqCst);
            let more = self.durable_size() < waiters.wanted.load(Ordering::SeqCst) && self.check_writable().is_ok();
            if !more || waiters.running.swap(true, Ordering::SeqCst) {
                return;
            }
        }
    }

    /// Sets the one observer of syncs (metrics); later calls are ignored.
    pub fn observe_syncs(&self, observer: SyncObserver) {
        let _ = self.sync_observer.set(observer);
    }

    /// A writer for a new blob of content frames.
    pub fn create_blob(&self) -> Result<StoreBlobWriter, StoreError> {
        self.check_writable()?;
        Ok(StoreBlobWriter { store: self.clone(), writer: Some(self.blobs.create()?) })
    }

    pub fn read_blob(&self, blob: &BlobRef, offset: u64, into: &mut [u8]) -> Result<(), StoreError> {
        self.blobs.read(blob, offset, into)
    }

    /// See [`Blobs::read_if_at_hand`].
    pub fn read_blob_if_at_hand(&self, blob: &BlobRef, offset: u64, into: &mut [u8]) -> Result<bool, StoreError> {
        self.blobs.read_if_at_hand(blob, offset, into)
    }

    /// BLAKE3 over every catalog pair and every blob byte, in order: two stores hold the same data
    /// exactly when their digests match. A full scan, for tests and backup checks.
    pub fn state_digest(&self) -> Result<[u8; 32], StoreError> {
        let mut hasher = blake3::Hasher::new();
        for item in self.catalog.scan(b"", None) {
            let (key, value) = item?;
            hasher.update(&(key.len() as u64).to_be_bytes());
            hasher.update(&key);
            hasher.update(&(value.len() as u64).to_be_bytes());
            hasher.update(&value);
        }
        self.blobs.digest_into(&mut hasher)?;
        Ok(*hasher.finalize().as_bytes())
    }

    /// Bytes the catalog and the blobs use on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.catalog.size_on_disk()? + self.blobs.size_on_disk()?)
    }
}

/// A blob writer that poisons the store when its flush fails, like a failed catalog sync.
pub struct StoreBlobWriter {
    store: Store,
    writer: Option<Box<dyn BlobWriter>>,
}

impl StoreBlobWriter {
    fn writer(&mut self) -> &mut Box<dyn BlobWriter> {
        self.writer.as_mut().expect("a blob writer is used until it is released or discarded")
    }

    pub fn append(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.store.check_writable()?;
        self.writer().append(bytes)
    }

    pub fn append_parts(&mut self, parts: &[&[u8]]) -> Result<(), StoreError> {
        self.store.check_writable()?;
        self.writer().append_parts(parts)
    }

    pub fn finish(&mut self) -> Result<StagedBlob, StoreError> {
        self.store.check_writable()?;
        let result = self.writer().finish();
        self.store.poison_on_error(result)
    }

    pub fn release(mut self) {
        if let Some(writer) = self.writer.take() {
            writer.release();
        }
    }

    pub fn discard(mut self) -> Result<(), StoreError> {
        match self.writer.take() {
            Some(writer) => writer.discard(),
            None => Ok(()),
        }
    }
}
