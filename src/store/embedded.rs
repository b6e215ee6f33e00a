//! The embedded engine, Kho's default: the catalog in a redb B-tree (`catalog.redb`), guarded by a
//! journal, and blobs in pack files (`packs`). This is the only module that names redb.
//!
//! The journal: every batch is appended to `catalog.journal` (numbered; the number of the last batch
//! the catalog holds is kept in the catalog too), and `sync` fdatasyncs the journal: that is what makes
//! a batch durable, and callers that arrive while a sync runs wait for the next one, which covers them
//! all (group commit). The catalog is brought up to date from the journal at open: the journal batches
//! past the catalog's number are replayed.
//!
//! The catalog receives batches only once the journal holds them durably, and then not one by one: a
//! thread of its own (`CatalogWriter`) writes every durable batch pending at most once per
//! [`CATALOG_FLUSH_INTERVAL_MS`] (sooner when more than [`PENDING_BATCHES_MAX`] wait) in one redb
//! transaction, committed durably, with the number of the last of them. Until then the batches are
//! read from memory in front of the catalog (`pending`), so readers see each from the moment it is
//! applied, whole; redb's readers never wait for its writer. Were the catalog given a batch before the
//! journal held it, a crash could leave it with a batch that no journal record would ever complete.
//! Writing a second of batches at once touches each of the tree's pages once however many keys land
//! in it, where a write per batch cost every access entry six descents and page copies; and no
//! request waits for it. When more than [`PENDING_BATCHES_MAX`] batches wait, `sync` waits for the
//! writer too, so memory stays bounded when the disk falls behind.
//!
//! After each such commit, a mark is appended to the journal recording the highest batch the catalog
//! now holds durably. Batches past the last mark are replayed quietly at open (after a crash, the
//! catalog may lack up to an interval of them); if the catalog lacks a batch that a mark says it held
//! durably, it was damaged or replaced: the store refuses to open, naming the gap, unless the operator
//! asks for recovery, which replays everything it lacks. redb checks every page's checksum at open
//! (`set_check_integrity_on_open`), so a damaged catalog file does not open rather than answering
//! wrong bytes or panicking; with the recovery flag its file is moved into the quarantine and the
//! catalog rebuilt from the journal.
//!
//! Stores of stored format 4 and before kept their catalog in sled (files `conf`, `db`, `blobs/`).
//! Since the journal holds every batch since the store began, such a store's first open rebuilds the
//! catalog from it and moves sled's files, no longer read, into `former-catalog/`.
//!
//! The journal's file is kept longer than its records: the catalog writer writes zeros ahead of the
//! appends (room for about two intervals of them, [`JOURNAL_ROOM_BYTES_MIN`] to
//! [`JOURNAL_ROOM_BYTES_MAX`]) and syncs them, so that a record lands in blocks the file already has
//! and a group sync is an fdatasync of data alone: an append that grows the file makes every sync
//! commit the file system's journal too (the file's new size and blocks), which made a sync take half
//! as long again on this machine's disk (docs/BENCHMARKS.md, "Room made ahead of the journal").
//! Records are read up to the first that does not check; zeros from there to the end are that room,
//! not damage. A clean close cuts the room off.
//!
//! Journal records (docs/FORMAT.md section 3.3): `length u32 | BLAKE3(body)[..16] | body`, body =
//! `version u8 | kind u8 | number u64 | ...`, kind 1 a batch (`count u32`, then per operation
//! `tag u8, key_len u32, key, [value_len u32, value]`), kind 2 a sync mark. All integers big-endian.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use redb::ReadableDatabase as _;

use super::packs::{committed_extent, pack_file_name, quarantine_tail, sync_path, Packs, PACKS_DIRECTORY};
use super::pending::{self, Pending};
use super::{io_error, Batch, CatalogEngine, Engines, Entries, OpenReport, Store, StoreError};

/// redb's page cache size, unless the configuration says (`catalog_cache_bytes`).
pub const CACHE_CAPACITY_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;
/// How often, at most, the catalog writer writes the batches the journal holds durably into the
/// catalog and commits them (see the module docs). The catalog may lack up to this long of batches
/// after a power cut; the journal has them and the next open replays them. The configuration may say
/// otherwise (`catalog_flush_interval_ms`).
pub const CATALOG_FLUSH_INTERVAL_MS: u64 = 1_000;
/// Batches waiting for the catalog writer beyond which it writes at once and `sync` waits for it.
pub const PENDING_BATCHES_MAX: usize = 65_536;
/// Batches written into the catalog per transaction when the journal is replayed at open.
const REPLAY_BATCHES_PER_TRANSACTION: usize = 8_192;
/// How often a long replay says how far it is.
const REPLAY_PROGRESS_INTERVAL_SECONDS: u64 = 5;
/// The largest journal record read back; anything larger is damage, not a batch.
pub const JOURNAL_RECORD_SIZE_BYTES_MAX: u32 = 64 * 1024 * 1024;
/// The least zeroed room the catalog writer keeps ahead of the journal's appends (see the module docs).
pub const JOURNAL_ROOM_BYTES_MIN: u64 = 1024 * 1024;
/// The most: the room is twice what the last interval appended, within these bounds.
pub const JOURNAL_ROOM_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Zeros written at a time while holding the journal's lock (appends wait that long at most).
const JOURNAL_ROOM_STEP_BYTES: usize = 1024 * 1024;
const JOURNAL_FILE: &str = "catalog.journal";
const CATALOG_FILE: &str = "catalog.redb";
const CATALOG_TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("catalog");
/// The catalog's table as one read transaction sees it.
type CatalogSnapshot = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;
/// The files of a catalog kept by sled (stored format 4 and before), and where its first open moves them.
const FORMER_CATALOG_FILES: [&str; 3] = ["conf", "db", "blobs"];
const FORMER_CATALOG_DIRECTORY: &str = "former-catalog";
const JOURNAL_VERSION: u8 = 1;
const JOURNAL_HEADER_BYTES: usize = 4 + 16;
const KIND_BATCH: u8 = 1;
const KIND_SYNCED: u8 = 2;
/// The journal number of the last batch the catalog holds, written with every write, in a table of its
/// own so that no scan of the catalog meets it.
const JOURNAL_TABLE: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("journal");
const BATCH_NUMBER_KEY: &str = "batch";

#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    pub cache_capacity_bytes: u64,
    /// How often, at most, the catalog writer runs ([`CATALOG_FLUSH_INTERVAL_MS`] unless the
    /// configuration or a test says).
    pub catalog_flush_interval_ms: u64,
    /// Open even when the catalog lacks acknowledged batches, restoring them from the journal.
    pub recover: bool,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig {
            cache_capacity_bytes: CACHE_CAPACITY_BYTES_DEFAULT,
            catalog_flush_interval_ms: CATALOG_FLUSH_INTERVAL_MS,
            recover: false,
        }
    }
}

/// Opens (or creates) the embedded engine in `directory`: the catalog and its journal, then the packs.
pub fn open(directory: &Path, config: &EmbeddedConfig) -> Result<Engines, StoreError> {
    std::fs::create_dir_all(directory).map_err(io_error(directory))?;
    let quarantine = directory.join("quarantine");
    let mut report = OpenReport::default();
    let engine = open_catalog(directory, &quarantine, config, &mut report)?;
    let states = Store::blob_states(&engine)?;
    let blobs = Packs::open(&directory.join(PACKS_DIRECTORY), &quarantine, &states, &mut report)?;
    for warning in &report.warnings {
        tracing::warn!("{warning}");
    }
    Ok(Engines { catalog: Arc::new(engine), blobs: Arc::new(blobs), report })
}

/// Opens the catalog, brought up to date from its journal, durable and marked, with its writer running.
fn open_catalog(
    directory: &Path,
    quarantine: &Path,
    config: &EmbeddedConfig,
    report: &mut OpenReport,
) -> Result<JournaledCatalog, StoreError> {
    let catalog_path = directory.join(CATALOG_FILE);
    let journal_path = directory.join(JOURNAL_FILE);
    // sled's files are moved aside only once the rebuild is done: while they are here, it is not (a
    // crash may have cut it short; it goes on from the catalog's last batch).
    let former = FORMER_CATALOG_FILES.iter().any(|name| directory.join(name).exists());
    let db = match open_database(&catalog_path, config) {
        Ok(db) => db,
        Err(redb::Error::DatabaseAlreadyOpen) => {
            return Err(StoreError::Engine(format!(
                "the catalog {} is open in another process (is another `kho serve` using this data directory?)",
                catalog_path.display()
            )))
        }
        Err(error) if config.recover => {
            // The catalog's file does not even open: keep it aside and rebuild from the journal.
            std::fs::create_dir_all(quarantine).map_err(io_error(quarantine))?;
            let kept = quarantine.join(format!("{CATALOG_FILE}.at-{}", crate::ids::now_unix_ms()));
            std::fs::rename(&catalog_path, &kept).map_err(io_error(&catalog_path))?;
            sync_path(directory)?;
            report.warnings.push(format!(
                "the catalog did not open ({error}); its file was moved to {} and it is rebuilt from the journal",
                kept.display()
            ));
            report.quarantined.push(kept);
            open_database(&catalog_path, config).map_err(engine_error)?
        }
        Err(error) => {
            return Err(StoreError::Engine(format!(
                "the catalog does not open: {error}. Nothing was changed. Start with the recovery flag \
                 (`kho serve --recover`) to keep its file aside and rebuild it from the journal"
            )))
        }
    };
    let catalog_batch = batch_number(&db)?;
    let scanned = scan_journal(&journal_path, catalog_batch, quarantine, config.recover, report)?;
    replay(&db, &journal_path, &scanned, catalog_batch, ReplayRules { recover: config.recover, former }, report)?;
    if former {
        retire_former_catalog(directory, report)?;
    }
    let applied_batch = batch_number(&db)?;
    let last_batch = applied_batch.max(scanned.last_batch);
    let journal_file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&journal_path)
        .map_err(io_error(&journal_path))?;
    // Any room left by a crash stays: records go on at the end of the valid ones.
    let file_length = journal_file.metadata().map_err(io_error(&journal_path))?.len();
    // Synced through its own handle, so that appends go on while a sync waits for the disk.
    let journal_for_sync = journal_file.try_clone().map_err(io_error(&journal_path))?;
    let shared = Arc::new(Shared {
        snapshot: RwLock::new(open_snapshot(&db)?),
        db,
        directory: directory.to_owned(),
        journal_for_sync,
        journal: Mutex::new(Journal {
            file: journal_file,
            length: scanned.valid_length,
            file_length,
            length_at_room: scanned.valid_length,
            path: journal_path,
        }),
        last_batch: AtomicU64::new(last_batch),
        durable_batch: AtomicU64::new(applied_batch),
        pending: RwLock::new(Pending::default()),
        group: GroupSync::default(),
        writer: WriterSignals::default(),
        flush_interval: Duration::from_millis(config.catalog_flush_interval_ms),
        room_failed: Default::default(),
    });
    // Make the catalog's and the journal's files and their directory entries durable, and mark the
    // catalog as holding every batch it has (those just replayed are the catalog's for good from here).
    for name in [CATALOG_FILE, JOURNAL_FILE] {
        sync_path(&directory.join(name))?;
    }
    sync_path(directory)?;
    shared.append_mark(applied_batch)?;
    shared.sync_journal()?;
    let writer_shared = shared.clone();
    let writer = std::thread::Builder::new()
        .name("kho-catalog".into())
        .spawn(move || writer_shared.run_writer())
        .map_err(io_error(directory))?;
    Ok(JournaledCatalog { shared, writer: Some(writer) })
}

/// Opens (or creates) the catalog's file, every page checked against its checksum, with its table.
fn open_database(path: &Path, config: &EmbeddedConfig) -> Result<redb::Database, redb::Error> {
    let cache = usize::try_from(config.cache_capacity_bytes).unwrap_or(usize::MAX);
    let db = redb::Builder::new().set_cache_size(cache).set_check_integrity_on_open(true).create(path)?;
    // The tables exist from the first open on, so that readers never meet their absence.
    match db.begin_read()?.open_table(JOURNAL_TABLE) {
        Ok(_) => {}
        Err(redb::TableError::TableDoesNotExist(_)) => {
            let transaction = begin_write(&db)?;
            transaction.open_table(CATALOG_TABLE)?;
            transaction.open_table(JOURNAL_TABLE)?;
            transaction.commit()?;
        }
        Err(error) => return Err(error.into()),
    }
    Ok(db)
}

/// Moves the files of a catalog kept by sled (stored format 4 and before) out of the way, once the
/// catalog has been rebuilt from the journal; kept, not deleted, for the operator to remove.
fn retire_former_catalog(directory: &Path, report: &mut OpenReport) -> Result<(), StoreError> {
    let mut target = directory.join(FORMER_CATALOG_DIRECTORY);
    if target.exists() {
        // A release of format 4 ran on the store since and made sled's files anew; keep both.
        target = directory.join(format!("{FORMER_CATALOG_DIRECTORY}.at-{}", crate::ids::now_unix_ms()));
    }
    std::fs::create_dir_all(&target).map_err(io_error(&target))?;
    for entry in std::fs::read_dir(directory).map_err(io_error(directory))? {
        let path = entry.map_err(io_error(directory))?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if FORMER_CATALOG_FILES.contains(&name.as_str()) || name.starts_with("snap.") {
            std::fs::rename(&path, target.join(&name)).map_err(io_error(&path))?;
        }
    }
    sync_path(&target)?;
    sync_path(directory)?;
    report.warnings.push(format!(
        "the catalog was rebuilt from the journal in stored format {} ({} batches); the former catalog's \
         files, no longer read, were moved to {}: remove them once this release is kept",
        super::STORE_FORMAT_VERSION,
        report.batches_replayed,
        target.display()
    ));
    Ok(())
}

/// A write transaction committed in two phases: a crash mid-commit then never leaves the newest commit
/// damaged, so redb never falls back to the one before on its own, and damage found at open is refused
/// (the open's integrity check) instead of quietly rolled back.
fn begin_write(db: &redb::Database) -> Result<redb::WriteTransaction, redb::TransactionError> {
    let mut transaction = db.begin_write()?;
    transaction.set_two_phase_commit(true);
    Ok(transaction)
}

fn engine_error(error: impl Into<redb::Error>) -> StoreError {
    StoreError::Engine(error.into().to_string())
}

fn batch_number(db: &redb::Database) -> Result<u64, StoreError> {
    let table = db.begin_read().map_err(engine_error)?.open_table(JOURNAL_TABLE).map_err(engine_error)?;
    Ok(table.get(BATCH_NUMBER_KEY).map_err(engine_error)?.map_or(0, |number| number.value()))
}

/// A read transaction's view of the catalog's table.
fn open_snapshot(db: &redb::Database) -> Result<Arc<CatalogSnapshot>, StoreError> {
    Ok(Arc::new(db.begin_read().map_err(engine_error)?.open_table(CATALOG_TABLE).map_err(engine_error)?))
}

/// Writes batches the journal holds durably into the catalog in one transaction (each key once, as
/// the last of them left it), then the number of the last, and commits durably. Returns that number,
/// if any; with no batch, no transaction is begun (the writer finds none most seconds of an idle
/// store).
fn write_batches<'a>(
    db: &redb::Database,
    batches: impl IntoIterator<Item = (u64, &'a Batch)>,
) -> Result<Option<u64>, StoreError> {
    // Each key once, with the value its last batch gave it, in key order: the log's size and an owner's
    // chain head are rewritten by most batches, and a B-tree takes keys in order with fewer page
    // visits. The transaction is atomic, so only its end state is ever seen.
    let mut last = None;
    let mut writes = std::collections::BTreeMap::new();
    for (number, batch) in batches {
        for (key, value) in &batch.operations {
            writes.insert(key.as_slice(), value.as_deref());
        }
        last = Some(number);
    }
    let Some(number) = last else { return Ok(None) };
    let transaction = begin_write(db).map_err(engine_error)?;
    {
        let mut table = transaction.open_table(CATALOG_TABLE).map_err(engine_error)?;
        for (key, value) in writes {
            match value {
                Some(value) => table.insert(key, value).map(drop),
                None => table.remove(key).map(drop),
            }
            .map_err(engine_error)?;
        }
    }
    {
        let mut journal = transaction.open_table(JOURNAL_TABLE).map_err(engine_error)?;
        journal.insert(BATCH_NUMBER_KEY, number).map_err(engine_error)?;
    }
    transaction.commit().map_err(engine_error)?;
    Ok(last)
}

/// The embedded catalog: what its writer thread shares with the callers, and that thread.
struct JournaledCatalog {
    shared: Arc<Shared>,
    writer: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    /// The catalog as the writer's last commit left it, which every read shares until the next one:
    /// one read transaction per commit, not per read. Declared before `db`, so dropped before it.
    snapshot: RwLock<Arc<CatalogSnapshot>>,
    db: redb::Database,
    directory: PathBuf,
    journal: Mutex<Journal>,
    /// The journal's file, for fdatasync without holding the journal's lock: a sync covers every append
    /// finished before it starts, which includes every batch of the callers waiting for it.
    journal_for_sync: File,
    /// The last batch journaled.
    last_batch: AtomicU64,
    /// The last batch the journal holds durably: what the catalog writer may write.
    durable_batch: AtomicU64,
    /// Batches journaled but not yet in the catalog; every read looks here first.
    pending: RwLock<Pending>,
    group: GroupSync,
    writer: WriterSignals,
    flush_interval: Duration,
    /// Making room ahead of the journal failed, and was said: said again only after it succeeds.
    room_failed: std::sync::atomic::AtomicBool,
}

/// How callers and the catalog writer signal each other.
#[derive(Default)]
struct WriterSignals {
    control: Mutex<WriterControl>,
    /// The writer waits here for its interval, an urgent write, or the end.
    wake: Condvar,
    /// Callers held back by too many pending batches wait here for the writer's next write.
    written: Condvar,
}

#[derive(Default)]
struct WriterControl {
    stop: bool,
    urgent: bool,
}

impl Shared {
    /// The catalog writer's loop: once per interval (or at once when asked), writes the durable pending
    /// batches into the catalog. A failure poisons the store: syncs fail from then on.
    fn run_writer(&self) {
        loop {
            let deadline = Instant::now() + self.flush_interval;
            let mut control = self.writer.control.lock().unwrap_or_else(|p| p.into_inner());
            while !control.stop && !control.urgent {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                control = self.writer.wake.wait_timeout(control, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
            }
            if control.stop {
                return;
            }
            control.urgent = false;
            drop(control);
            let written = self.write_catalog().and_then(|()| self.make_journal_room());
            if let Err(error) = &written {
                self.group.failed.store(true, Ordering::Release);
                tracing::error!(
                    "the catalog writer failed ({error}); the store refuses writes until it is reopened, \
                     which replays the journal"
                );
            }
            let _control = self.writer.control.lock().unwrap_or_else(|p| p.into_inner());
            self.writer.written.notify_all();
            if written.is_err() {
                return;
            }
        }
    }

    /// Writes every pending batch the journal holds durably into the catalog and commits it, then stops
    /// reading them in front of it and marks the journal. Only the writer (or the close, after it
    /// stopped) calls it, so the catalog receives batches in journal order.
    fn write_catalog(&self) -> Result<(), StoreError> {
        let through = self.durable_batch.load(Ordering::Acquire);
        let batches = self.read_pending().through(through);
        let Some(last) = write_batches(&self.db, batches.iter().map(|(number, batch)| (*number, batch.as_ref())))?
        else {
            return Ok(());
        };
        // The new snapshot before the batches stop being pending: a read that misses them there
        // then finds them in the catalog.
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = open_snapshot(&self.db)?;
        self.pending.write().unwrap_or_else(|p| p.into_inner()).forget_through(last);
        self.append_mark(last)
    }

    /// Writes zeros ahead of the journal's appends until it has the room the next interval wants, a
    /// step at a time under its lock, then syncs them, so that the records written into them later
    /// need no change of the file's size or blocks (see the module docs). Zeros that cannot be written
    /// (a full disk) only cost the speed they would have given: said, not an error; a failed sync is.
    fn make_journal_room(&self) -> Result<(), StoreError> {
        let lock = || self.journal.lock().unwrap_or_else(|p| p.into_inner());
        let wanted = lock().room_wanted();
        let mut extended = false;
        loop {
            match lock().extend_room(wanted) {
                Ok(true) => extended = true,
                Ok(false) => break,
                Err(error) => {
                    if !self.room_failed.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            "no room could be made ahead of the catalog journal's appends ({error}); \
                             they grow the file as they go"
                        );
                    }
                    break;
                }
            }
        }
        if extended {
            self.room_failed.store(false, Ordering::Relaxed);
            self.sync_journal()?;
        }
        Ok(())
    }

    /// Cuts the room off the journal's file (a clean close): nothing but zeros goes.
    fn cut_journal_room(&self) -> Result<(), StoreError> {
        let mut journal = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        if journal.file_length > journal.length {
            journal.file.set_len(journal.length).map_err(io_error(&journal.path))?;
            journal.file.sync_all().map_err(io_error(&journal.path))?;
            journal.file_length = journal.length;
        }
        Ok(())
    }

    /// Appends a mark saying the catalog holds every batch through `through` durably; it becomes durable
    /// with the next journal sync (until then the previous mark stands, which is only more cautious).
    fn append_mark(&self, through: u64) -> Result<(), StoreError> {
        let mut mark = vec![JOURNAL_VERSION, KIND_SYNCED];
        mark.extend_from_slice(&through.to_be_bytes());
        self.journal.lock().unwrap_or_else(|p| p.into_inner()).append(&mark)
    }

    /// The catalog as the writer last committed it.
    fn snapshot(&self) -> Arc<CatalogSnapshot> {
        self.snapshot.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn sync_journal(&self) -> Result<(), StoreError> {
        self.journal_for_sync.sync_data().map_err(io_error(&self.directory.join(JOURNAL_FILE)))
    }

    fn read_pending(&self) -> std::sync::RwLockReadGuard<'_, Pending> {
        self.pending.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds a caller back while more than [`PENDING_BATCHES_MAX`] batches wait for the writer, which
    /// it asks to write at once.
    fn wait_for_writer_if_behind(&self) -> Result<(), StoreError> {
        if self.read_pending().len() <= PENDING_BATCHES_MAX {
            return Ok(());
        }
        let mut control = self.writer.control.lock().unwrap_or_else(|p| p.into_inner());
        while self.read_pending().len() > PENDING_BATCHES_MAX {
            if self.group.failed.load(Ordering::Acquire) {
                return Err(StoreError::Poisoned);
            }
            control.urgent = true;
            self.writer.wake.notify_one();
            control = self.writer.written.wait(control).unwrap_or_else(|p| p.into_inner());
        }
        Ok(())
    }
}

impl Drop for JournaledCatalog {
    /// A store closed cleanly leaves its catalog durable and marked, so the next open replays nothing.
    fn drop(&mut self) {
        self.shared.writer.control.lock().unwrap_or_else(|p| p.into_inner()).stop = true;
        self.shared.writer.wake.notify_all();
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::warn!("the catalog writer panicked; the next open replays the journal");
                return;
            }
        }
        let shared = &self.shared;
        if shared.group.failed.load(Ordering::Acquire) {
            return;
        }
        let closed = shared
            .sync_journal()
            .and_then(|()| {
                shared.durable_batch.store(shared.last_batch.load(Ordering::Acquire), Ordering::Release);
                shared.write_catalog()
            })
            .and_then(|()| shared.sync_journal());
        if let Err(error) = closed {
            tracing::warn!("closing the store, its catalog was not made durable ({error}); the next open replays it from the journal");
        } else if let Err(error) = shared.cut_journal_room() {
            tracing::warn!(
                "closing the store, the zeroed room after the journal's records stays ({error}); it is harmless"
            );
        }
    }
}

/// What a consistent copy of an embedded store is made of, read from its files alone while a server
/// may be writing them (`snapshot`).
///
/// Every whole journal record (its checksum holds) is a batch the catalog applied, or will apply at its
/// next open, in journal order; the pack bytes a batch commits were written before the batch. So the
/// journal's whole records, then each pack up to the extent the last of them committed, are a store
/// that opens (rebuilding its catalog from the journal) exactly as the vault stood after that batch;
/// nothing is paused and nothing is locked. Both kinds of file are append-only while a store is open.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    /// The journal bytes to copy: whole records, from the start.
    pub journal_length: u64,
    /// The batches in them.
    pub batches: u64,
    /// The number of log entries after the last of them.
    pub log_size: u64,
    /// Each pack's committed end after the last of them, by pack number.
    pub packs: std::collections::BTreeMap<u32, u64>,
}

impl Snapshot {
    /// The files to copy, relative to the store directory, with their lengths: the journal first.
    pub fn files(&self) -> Vec<(PathBuf, u64)> {
        let packs = Path::new(PACKS_DIRECTORY);
        std::iter::once((PathBuf::from(JOURNAL_FILE), self.journal_length))
            .chain(self.packs.iter().map(|(id, end)| (packs.join(pack_file_name(*id)), *end)))
            .collect()
    }
}

/// Reads the journal of the store in `directory` from where `since` ended (a backup's previous
/// snapshot; `None`: from the start) to its last whole record, without opening the store.
pub fn snapshot(directory: &Path, since: Option<&Snapshot>) -> Result<Snapshot, StoreError> {
    let path = directory.join(JOURNAL_FILE);
    let file = File::open(&path).map_err(io_error(&path))?;
    let file_length = file.metadata().map_err(io_error(&path))?.len();
    let mut snapshot = since.cloned().unwrap_or_default();
    if file_length < snapshot.journal_length {
        return Err(StoreError::Corrupt(format!(
            "the journal {} is {file_length} bytes, shorter than the {} bytes copied before",
            path.display(),
            snapshot.journal_length
        )));
    }
    let mut offset = snapshot.journal_length;
    loop {
        while let Some((entry, length)) = record_at(&file, offset, file_length) {
            if let JournalEntry::Batch { batch, .. } = entry {
                snapshot.batches += 1;
                for (key, value) in &batch.operations {
                    let Some(value) = value else { continue };
                    if let Some(size) = Store::log_size_written(key, value) {
                        snapshot.log_size = size;
                    } else if let Some((id, end)) =
                        Store::blob_state_written(key, value).and_then(|(key, value)| committed_extent(key, value))
                    {
                        snapshot.packs.insert(id, end);
                    }
                }
            }
            offset += length;
        }
        // What follows is room made ahead of the appends (zeros), a record being written now, or
        // damage: damage if a whole record comes after it.
        let data_end = data_end(&file, offset, file_length).map_err(io_error(&path))?;
        let Some(next) = next_whole_record(&file, offset, data_end, file_length) else { break };
        if record_at(&file, offset, file_length).is_some() {
            // A running server appended the record here, and more after it, since it was read.
            continue;
        }
        return Err(StoreError::Corrupt(format!(
            "the journal {} is damaged at offset {offset} ({} bytes before the next whole record); a copy \
             would stop there. Stop the server and open the store with the recovery flag first",
            path.display(),
            next - offset
        )));
    }
    snapshot.journal_length = offset;
    Ok(snapshot)
}

struct Journal {
    file: File,
    /// Where the next record goes: the end of the valid records.
    length: u64,
    /// The file's length: zeros from `length` to here are room made ahead of the appends.
    file_length: u64,
    /// `length` when room was last made, to size the next room by what was appended since.
    length_at_room: u64,
    path: PathBuf,
}

impl Journal {
    fn append(&mut self, body: &[u8]) -> Result<(), StoreError> {
        let record = encode_record(body);
        self.file.write_all_at(&record, self.length).map_err(io_error(&self.path))?;
        self.length += record.len() as u64;
        self.file_length = self.file_length.max(self.length);
        Ok(())
    }

    /// Writes the next step of zeros the room lacks; `false` once it has `wanted`.
    fn extend_room(&mut self, wanted: u64) -> Result<bool, StoreError> {
        let room = self.file_length - self.length;
        if room >= wanted {
            return Ok(false);
        }
        static ZEROS: [u8; JOURNAL_ROOM_STEP_BYTES] = [0; JOURNAL_ROOM_STEP_BYTES];
        let step = (wanted - room).min(JOURNAL_ROOM_STEP_BYTES as u64) as usize;
        self.file.write_all_at(&ZEROS[..step], self.file_length).map_err(io_error(&self.path))?;
        self.file_length += step as u64;
        Ok(true)
    }

    /// The room the next interval wants: twice what this one appended, within the bounds.
    fn room_wanted(&mut self) -> u64 {
        let appended = self.length - self.length_at_room;
        self.length_at_room = self.length;
        appended.saturating_mul(2).clamp(JOURNAL_ROOM_BYTES_MIN, JOURNAL_ROOM_BYTES_MAX)
    }
}

fn encode_record(body: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(JOURNAL_HEADER_BYTES + body.len());
    record.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
    record.extend_from_slice(&blake3::hash(body).as_bytes()[..16]);
    record.extend_from_slice(body);
    record
}

fn batch_body(number: u64, batch: &Batch) -> Vec<u8> {
    let mut body = vec![JOURNAL_VERSION, KIND_BATCH];
    body.extend_from_slice(&number.to_be_bytes());
    body.extend_from_slice(&(batch.operations.len() as u32).to_be_bytes());
    for (key, value) in &batch.operations {
        body.push(u8::from(value.is_some()));
        body.extend_from_slice(&(key.len() as u32).to_be_bytes());
        body.extend_from_slice(key);
        if let Some(value) = value {
            body.extend_from_slice(&(value.len() as u32).to_be_bytes());
            body.extend_from_slice(value);
        }
    }
    body
}

/// A journal record's body, decoded.
enum JournalEntry {
    Batch { number: u64, batch: Batch },
    Synced { through: u64 },
}

/// Decodes a record body whose checksum already matched; `None` if it is not a valid body.
pub(crate) fn decode_body(body: &[u8]) -> Option<(u64, Option<Batch>)> {
    let mut reader = Reader(body);
    if reader.take(1)? != [JOURNAL_VERSION] {
        return None;
    }
    let kind = reader.take(1)?[0];
    let number = u64::from_be_bytes(reader.take(8)?.try_into().ok()?);
    match kind {
        KIND_SYNCED if reader.0.is_empty() => Some((number, None)),
        KIND_BATCH => {
            let count = reader.u32()?;
            let mut batch = Batch::default();
            for _ in 0..count {
                let tag = reader.take(1)?[0];
                let key_length = reader.u32()? as usize;
                let key = reader.take(key_length)?.to_vec();
                let value = match tag {
                    0 => None,
                    1 => {
                        let value_length = reader.u32()? as usize;
                        Some(reader.take(value_length)?.to_vec())
                    }
                    _ => return None,
                };
                batch.operations.push((key, value));
            }
            reader.0.is_empty().then_some((number, Some(batch)))
        }
        _ => None,
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        if count > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(count);
        self.0 = rest;
        Some(head)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// The record that starts at `offset`, if a whole valid one does: (entry, its length).
fn record_at(file: &File, offset: u64, file_length: u64) -> Option<(JournalEntry, u64)> {
    let mut header = [0u8; JOURNAL_HEADER_BYTES];
    if offset + JOURNAL_HEADER_BYTES as u64 > file_length {
        return None;
    }
    file.read_exact_at(&mut header, offset).ok()?;
    let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let end = offset + JOURNAL_HEADER_BYTES as u64 + u64::from(length);
    if length > JOURNAL_RECORD_SIZE_BYTES_MAX || end > file_length {
        return None;
    }
    let mut body = vec![0u8; length as usize];
    file.read_exact_at(&mut body, offset + JOURNAL_HEADER_BYTES as u64).ok()?;
    if blake3::hash(&body).as_bytes()[..16] != header[4..] {
        return None;
    }
    let entry = match decode_body(&body)? {
        (number, Some(batch)) => JournalEntry::Batch { number, batch },
        (through, None) => JournalEntry::Synced { through },
    };
    Some((entry, end - offset))
}

/// What the journal holds.
#[derive(Default)]
struct ScannedJournal {
    /// Where the first batch after the catalog's last one starts, if there is one.
    replay_from: Option<u64>,
    last_batch: u64,
    /// The highest batch a sync mark says was made durable (and so may have been acknowledged).
    synced_through: u64,
    /// Where the next record goes.
    valid_length: u64,
}

/// Reads every record, keeping none in memory (a journal holds every batch since the store began,
/// gigabytes at a million deposits). A damaged stretch followed by valid records is reported (and,
/// without the recovery flag, refused); a damaged tail (a crash mid-append) is quarantined, then cut;
/// zeros after the last record are room made ahead of the appends, and stay.
fn scan_journal(
    path: &Path,
    catalog_batch: u64,
    quarantine: &Path,
    recover: bool,
    report: &mut OpenReport,
) -> Result<ScannedJournal, StoreError> {
    let mut scanned = ScannedJournal::default();
    let file = match std::fs::OpenOptions::new().read(true).write(true).open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(scanned),
        Err(source) => return Err(StoreError::Io { path: path.to_owned(), source }),
    };
    let file_length = file.metadata().map_err(io_error(path))?.len();
    let mut offset = 0;
    while offset < file_length {
        if let Some((entry, length)) = record_at(&file, offset, file_length) {
            match entry {
                JournalEntry::Batch { number, .. } => {
                    scanned.last_batch = scanned.last_batch.max(number);
                    if number > catalog_batch && scanned.replay_from.is_none() {
                        scanned.replay_from = Some(offset);
                    }
                }
                JournalEntry::Synced { through } => scanned.synced_through = scanned.synced_through.max(through),
            }
            offset += length;
            scanned.valid_length = offset;
            continue;
        }
        // Zeros alone from here on are room made ahead of the appends: the records end here.
        let data_end = data_end(&file, offset, file_length).map_err(io_error(path))?;
        if data_end == offset {
            break;
        }
        // Damage at `offset`: is there a valid record after it?
        match next_whole_record(&file, offset, data_end, file_length) {
            Some(next) if recover => {
                report.warnings.push(format!(
                    "journal {}: {} damaged bytes at offset {offset} were skipped",
                    path.display(),
                    next - offset
                ));
                offset = next;
            }
            Some(next) => {
                return Err(StoreError::Corrupt(format!(
                    "journal {} is damaged at offset {offset} ({} bytes before the next valid record); \
                     start with the recovery flag to skip the damaged stretch",
                    path.display(),
                    next - offset
                )))
            }
            None => {
                // A record torn mid-append: its bytes are kept aside, up to where its header says it
                // ends (it may end in zeros); the room's zeros past that go.
                let torn_end = data_end.max(declared_end(&file, offset, file_length).unwrap_or(0)).min(file_length);
                file.set_len(torn_end).map_err(io_error(path))?;
                let kept = quarantine_tail(path, &file, offset, quarantine)?;
                file.set_len(offset).map_err(io_error(path))?;
                file.sync_all().map_err(io_error(path))?;
                report.warnings.push(format!(
                    "journal {}: an incomplete last record ({} bytes, a crash mid-write) was moved to {}",
                    path.display(),
                    torn_end - offset,
                    kept.display()
                ));
                report.quarantined.push(kept);
                break;
            }
        }
    }
    Ok(scanned)
}

/// Where the first whole record after damage at `offset` starts, if one starts before `search_end`.
fn next_whole_record(file: &File, offset: u64, search_end: u64, file_length: u64) -> Option<u64> {
    (offset + 1..search_end).find(|&at| record_at(file, at, file_length).is_some())
}

/// Where the record starting at `offset` would end by its header's length, if the header is there and
/// the length is one a record may have.
fn declared_end(file: &File, offset: u64, file_length: u64) -> Option<u64> {
    let mut length = [0u8; 4];
    if offset + length.len() as u64 > file_length {
        return None;
    }
    file.read_exact_at(&mut length, offset).ok()?;
    let length = u32::from_be_bytes(length);
    (length <= JOURNAL_RECORD_SIZE_BYTES_MAX).then(|| offset + JOURNAL_HEADER_BYTES as u64 + u64::from(length))
}

/// One past the last byte in `from..file_length` that is not zero (`from` if there is none): every
/// record starts before it (its checksum is not zeros), and the zeros after it are the room made
/// ahead of the appends. Reads back from the end, so it costs about the room's length.
fn data_end(file: &File, from: u64, file_length: u64) -> std::io::Result<u64> {
    let mut buffer = vec![0u8; 64 * 1024];
    let mut end = file_length;
    while end > from {
        let count = (end - from).min(buffer.len() as u64) as usize;
        let start = end - count as u64;
        file.read_exact_at(&mut buffer[..count], start)?;
        if let Some(last) = buffer[..count].iter().rposition(|&byte| byte != 0) {
            return Ok(start + last as u64 + 1);
        }
        end = start;
    }
    Ok(from)
}

/// What a replay may do beyond bringing the catalog up to its journal.
struct ReplayRules {
    /// Restore batches a mark said the catalog held (the operator's recovery flag).
    recover: bool,
    /// A former catalog's files (sled's) are there: the catalog is being rebuilt from the journal, whose
    /// marks speak of the former one.
    former: bool,
}

/// Applies the journal's batches that the catalog lacks, reading them from the journal again as they
/// are written, a transaction per [`REPLAY_BATCHES_PER_TRANSACTION`].
fn replay(
    db: &redb::Database,
    journal_path: &Path,
    scanned: &ScannedJournal,
    catalog_batch: u64,
    rules: ReplayRules,
    report: &mut OpenReport,
) -> Result<(), StoreError> {
    if scanned.synced_through > catalog_batch && !rules.recover && !rules.former {
        return Err(StoreError::CatalogBehind {
            catalog_batch,
            acknowledged_batch: scanned.synced_through,
            journal_batch: scanned.last_batch,
        });
    }
    if scanned.last_batch < catalog_batch {
        // The catalog made batches durable before their journal records were: they were never
        // acknowledged (acknowledgement waits for the journal), so nothing is missing that was promised.
        report.warnings.push(format!(
            "catalog batches {}..={catalog_batch} were never acknowledged and are not in the journal",
            scanned.last_batch + 1
        ));
    }
    let Some(mut offset) = scanned.replay_from else {
        return Ok(());
    };
    // The catalog may only receive what the journal holds durably; the records read back past its last
    // sync may still be only in the page cache.
    let file = File::open(journal_path).map_err(io_error(journal_path))?;
    file.sync_data().map_err(io_error(journal_path))?;
    let mut expected = catalog_batch + 1;
    let mut chunk = Vec::with_capacity(REPLAY_BATCHES_PER_TRANSACTION);
    // A rebuild reads the whole journal (about 1.5 GB at a million deposits): say how far it is.
    let (replay_start, mut told_at) = (offset, Instant::now());
    while offset < scanned.valid_length {
        let Some((entry, length)) = record_at(&file, offset, scanned.valid_length) else {
            // A damaged stretch the scan reported and the recovery flag let it skip.
            offset = next_whole_record(&file, offset, scanned.valid_length, scanned.valid_length)
                .unwrap_or(scanned.valid_length);
            continue;
        };
        offset += length;
        if told_at.elapsed() >= Duration::from_secs(REPLAY_PROGRESS_INTERVAL_SECONDS) {
            told_at = Instant::now();
            tracing::info!(
                "replaying the catalog journal: {} of {} MB",
                (offset - replay_start) / 1_000_000,
                (scanned.valid_length - replay_start) / 1_000_000
            );
        }
        let JournalEntry::Batch { number, batch } = entry else { continue };
        if number <= catalog_batch {
            continue;
        }
        if number != expected && scanned.synced_through >= expected {
            let message = format!("journal batches {expected}..{number} are missing; they cannot be restored");
            if !rules.recover {
                return Err(StoreError::Corrupt(message));
            }
            report.warnings.push(message);
        }
        expected = number + 1;
        chunk.push((number, batch));
        if chunk.len() == REPLAY_BATCHES_PER_TRANSACTION {
            write_batches(db, chunk.iter().map(|(number, batch)| (*number, batch)))?;
            report.batches_replayed += chunk.len() as u64;
            chunk.clear();
        }
    }
    write_batches(db, chunk.iter().map(|(number, batch)| (*number, batch)))?;
    report.batches_replayed += chunk.len() as u64;
    if scanned.synced_through > catalog_batch && !rules.former {
        report.warnings.push(format!(
            "the catalog had lost acknowledged batches {}..={}; {} batches were restored from the journal",
            catalog_batch + 1,
            scanned.synced_through,
            report.batches_replayed
        ));
    }
    Ok(())
}

impl CatalogEngine for JournaledCatalog {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        // Pending first, then the catalog: the writer commits a batch before it stops being pending.
        if let Some(value) = self.shared.read_pending().get(key) {
            return Ok(value);
        }
        Ok(self.shared.snapshot().get(key).map_err(engine_error)?.map(|value| value.value().to_vec()))
    }

    fn scan<'a>(&'a self, prefix: &[u8], after: Option<&[u8]>) -> Entries<'a> {
        let pending = self.shared.read_pending().range(prefix, after);
        let prefix = prefix.to_vec();
        let table = self.shared.snapshot();
        let range = match after {
            Some(after) => table.range::<&[u8]>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
            None => table.range::<&[u8]>(prefix.as_slice()..),
        }
        .map_err(engine_error);
        let stored: Entries<'a> = match range {
            Err(error) => Box::new(std::iter::once(Err(error))),
            Ok(range) => Box::new(
                range
                    .map(|item| {
                        item.map(|(key, value)| (key.value().to_vec(), value.value().to_vec())).map_err(engine_error)
                    })
                    .take_while(move |item| match item {
                        Ok((key, _)) => key.starts_with(&prefix),
                        Err(_) => true,
                    }),
            ),
        };
        pending::merge(stored, pending)
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        // Journal order is catalog order: both happen under the journal's lock. The catalog receives
        // the batch once the journal holds it durably (the writer); until then reads find it pending.
        let shared = &self.shared;
        let mut journal = shared.journal.lock().unwrap_or_else(|p| p.into_inner());
        let number = shared.last_batch.load(Ordering::Acquire) + 1;
        journal.append(&batch_body(number, &batch))?;
        shared.pending.write().unwrap_or_else(|p| p.into_inner()).push(number, batch);
        shared.last_batch.store(number, Ordering::Release);
        Ok(())
    }

    fn sync(&self) -> Result<(), StoreError> {
        let shared = &self.shared;
        shared.group.run(|| {
            // Every batch up to here was appended before the journal's sync starts, so it covers them.
            let through = shared.last_batch.load(Ordering::Acquire);
            shared.sync_journal()?;
            shared.durable_batch.fetch_max(through, Ordering::AcqRel);
            Ok(())
        })?;
        shared.wait_for_writer_if_behind()
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        let journal = self.shared.journal.lock().unwrap_or_else(|p| p.into_inner()).file_length;
        let catalog = self.shared.directory.join(CATALOG_FILE);
        Ok(std::fs::metadata(&catalog).map_err(io_error(&catalog))?.len() + journal)
    }
}

/// One sync at a time; callers that arrive while one runs share the next one. After a failure every
/// later call fails too (the store is poisoned one level up as well).
#[derive(Default)]
struct GroupSync {
    state: Mutex<SyncState>,
    finished: Condvar,
    failed: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct SyncState {
    started: u64,
    completed: u64,
    running: bool,
}

impl GroupSync {
    fn run(&self, sync: impl Fn() -> Result<(), StoreError>) -> Result<(), StoreError> {
        let lock = || self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut state = lock();
        // A sync already running may have started before our writes, so we need the next one.
        let needed = state.started + 1;
        loop {
            if self.failed.load(Ordering::Acquire) {
                return Err(StoreError::Poisoned);
            }
            if state.completed >= needed {
                return Ok(());
            }
            if state.running {
                state = self.finished.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
                continue;
            }
            state.running = true;
            state.started += 1;
            let generation = state.started;
            drop(state);
            let result = sync();
            if result.is_err() {
                self.failed.store(true, Ordering::Release);
            }
            state = lock();
            state.running = false;
            state.completed = generation;
            self.finished.notify_all();
            if generation >= needed {
                return result;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(key: &str, value: &str) -> Batch {
        let mut batch = Batch::default();
        batch.insert(key.as_bytes(), value.as_bytes());
        batch
    }

    /// The journal's batch numbers and its sync marks' through-numbers, each in journal order.
    /// The journal of an open store may be appended to while it is read: a record found in part is
    /// read again until it is whole (up to a bound).
    fn journal_records(directory: &Path) -> (Vec<u64>, Vec<u64>) {
        let file = File::open(directory.join(JOURNAL_FILE)).expect("journal");
        let (mut batches, mut marks, mut offset) = (Vec::new(), Vec::new(), 0);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let length = file.metadata().expect("metadata").len();
            while let Some((entry, size)) = record_at(&file, offset, length) {
                match entry {
                    JournalEntry::Batch { number, .. } => batches.push(number),
                    JournalEntry::Synced { through } => marks.push(through),
                }
                offset += size;
            }
            if data_end(&file, offset, length).expect("read the journal") == offset {
                return (batches, marks);
            }
            assert!(Instant::now() < deadline, "the journal does not end with a whole record, then zeros at most");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn journal_marks(directory: &Path) -> Vec<u64> {
        journal_records(directory).1
    }

    #[test]
    fn callers_that_arrive_while_a_sync_runs_share_the_next_one() {
        const THREADS: usize = 8;
        const PER_THREAD: usize = 25;
        let group = GroupSync::default();
        let runs = AtomicU64::new(0);
        std::thread::scope(|scope| {
            for _ in 0..THREADS {
                scope.spawn(|| {
                    for _ in 0..PER_THREAD {
                        group
                            .run(|| {
                                runs.fetch_add(1, Ordering::SeqCst);
                                std::thread::sleep(std::time::Duration::from_millis(1));
                                Ok(())
                            })
                            .expect("sync");
                    }
                });
            }
        });
        let runs = runs.load(Ordering::SeqCst);
        assert!(runs < (THREADS * PER_THREAD) as u64, "{runs} syncs for {} callers: none shared", THREADS * PER_THREAD);
        assert!(runs >= PER_THREAD as u64, "each caller's every call was covered by a sync that started after it");
    }

    /// Waits (up to a bound) until the journal's last mark reaches `through`: the writer runs on its own.
    fn wait_for_mark(directory: &Path, through: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while journal_marks(directory).last() < Some(&through) {
            assert!(Instant::now() < deadline, "no mark for batch {through}: {:?}", journal_marks(directory));
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_sync_makes_the_journal_durable_and_the_catalog_follows_at_most_once_per_interval() {
        let dir = tempfile::tempdir().expect("tempdir");
        let started = Instant::now();
        let engines = open(dir.path(), &EmbeddedConfig::default()).expect("open");
        assert_eq!(journal_marks(dir.path()), [0], "open leaves the catalog durable and marked");
        engines.catalog.apply(batch("k/1", "v")).expect("apply");
        engines.catalog.sync().expect("sync");
        wait_for_mark(dir.path(), 1);
        engines.catalog.apply(batch("k/2", "v")).expect("apply");
        engines.catalog.sync().expect("sync");
        wait_for_mark(dir.path(), 2);
        let intervals = started.elapsed().as_millis() / u128::from(CATALOG_FLUSH_INTERVAL_MS);
        assert!(intervals >= 1, "the writer waited out its interval between two writes");
        engines.catalog.apply(batch("k/3", "v")).expect("apply");
        drop(engines);
        assert_eq!(journal_marks(dir.path()).last(), Some(&3), "closing writes the catalog, unsynced batches too");
        let engines = open(dir.path(), &EmbeddedConfig::default()).expect("reopen");
        assert_eq!(engines.report.batches_replayed, 0);
        assert!(engines.catalog.get(b"k/3").expect("get").is_some());
    }

    #[test]
    fn concurrent_callers_share_syncs_and_every_batch_survives_reopen() {
        const THREADS: usize = 8;
        const PER_THREAD: usize = 25;
        let dir = tempfile::tempdir().expect("tempdir");
        let engines = open(dir.path(), &EmbeddedConfig::default()).expect("open");
        let marks_before = journal_marks(dir.path()).len();
        let started = std::time::Instant::now();
        std::thread::scope(|scope| {
            for thread in 0..THREADS {
                let catalog = engines.catalog.clone();
                scope.spawn(move || {
                    for i in 0..PER_THREAD {
                        catalog.apply(batch(&format!("k/{thread}/{i}"), "v")).expect("apply");
                        catalog.sync().expect("sync");
                    }
                });
            }
        });
        let (batches, _) = journal_records(dir.path());
        assert_eq!(batches, (1..=(THREADS * PER_THREAD) as u64).collect::<Vec<_>>(), "journal order is batch order");
        let flushes = (journal_marks(dir.path()).len() - marks_before) as u128;
        let intervals = started.elapsed().as_millis() / u128::from(CATALOG_FLUSH_INTERVAL_MS);
        assert!(flushes <= intervals + 1, "{flushes} catalog flushes in {intervals} intervals");
        drop(engines);
        let engines = open(dir.path(), &EmbeddedConfig::default()).expect("reopen");
        assert_eq!(engines.report.batches_replayed, 0);
        for thread in 0..THREADS {
            for i in 0..PER_THREAD {
                let key = format!("k/{thread}/{i}");
                assert_eq!(engines.catalog.get(key.as_bytes()).expect("get").as_deref(), Some(&b"v"[..]), "{key}");
            }
        }
    }

    #[test]
    fn a_journal_record_torn_mid_append_is_quarantined_and_the_batches_before_it_stay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engines = open(dir.path(), &EmbeddedConfig::default()).expect("open");
        for i in 0..3 {
            engines.catalog.apply(batch(&format!("k/{i}"), "v")).expect("apply");
            engines.catalog.sync().expect("sync");
        }
        drop(engines);
        let path = dir.path().join(JOURNAL_FILE);
        let whole = std::fs::metadata(&path).expect("journal").len();
        let torn = encode_record(&batch_body(4, &batch("k/torn", "v")));
        let mut file = std::fs::OpenOptions::new().append(true).open(&path).expect("journal");
        std::io::Write::write_all(&mut file, &torn[..torn.len() / 2]).expect("tear");
        drop(file);

        let engines = open(dir.path(), &EmbeddedConfig::default()).expect("reopen");
        assert_eq!(engines.report.quarantined.len(), 1, "{:?}", engines.report);
        let kept = std::fs::read(&engines.report.quarantined[0]).expect("quarantined tail");
        assert_eq!(kept, &torn[..torn.len() / 2], "the torn bytes are kept aside, not deleted");
        assert!(std::fs::metadata(&path).expect("journal").len() >= whole);
        for i in 0..3 {
            assert!(engines.catalog.get(format!("k/{i}").as_bytes()).expect("get").is_some());
        }
        assert!(engines.catalog.get(b"k/torn").expect("get").is_none());
    }

    /// Waits (up to a bound) until the journal's file holds at least `bytes` of zeros after its records.
    fn wait_for_room(directory: &Path, bytes: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let file = File::open(directory.join(JOURNAL_FILE)).expect("journal");
            let length = file.metadata().expect("metadata").len();
            let room = length - data_end(&file, 0, length).expect("read");
            if room >= bytes {
                return room;
            }
            assert!(Instant::now() < deadline, "{room} bytes of room after the journal's records, not {bytes}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn the_writer_keeps_zeroed_room_after_the_journal_and_a_clean_close_cuts_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(JOURNAL_FILE);
        let engines = open(dir.path(), &EmbeddedConfig::default()).expect("open");
        wait_for_room(dir.path(), JOURNAL_ROOM_BYTES_MIN);
        let with_room = std::fs::metadata(&path).expect("journal").len();
        for i in 0..20 {
            engines.catalog.apply(batch(&format!("k/{i}"), "v")).expect("apply");
            engines.catalog.sync().expect("sync");
        }
        // The records went into the room, after the ones before: the file did not grow.
        assert_eq!(std::fs::metadata(&path).expect("journal").len(), with_room);
        let (batches, _) = journal_records(dir.path());
        assert_eq!(batches, (1..=20).collect::<Vec<_>>());
        assert_eq!(engines.catalog.size_on_disk().expect("size"), {
            with_room + std::fs::metadata(dir.path().join(CATALOG_FILE)).expect("catalog").len()
        });
        drop(engines);
        let records = journal_records(dir.path());
        let file = File::open(&path).expect("journal");
        let length = file.metadata().expect("metadata").len();
        assert_eq!(data_end(&file, 0, length).expect("read"), length, "a clean close cut the room off");
        assert!(length < with_room, "{length} bytes after the close, {with_room} before");
        let engines = open(dir.path(), &EmbeddedConfig::default()).expect("reopen");
        assert!(engines.report.warnings.is_empty() && engines.report.quarantined.is_empty(), "{:?}", engines.report);
        assert_eq!(journal_records(dir.path()).0, records.0);
    }

    #[test]
    fn room_left_by_a_crash_is_not_damage_and_a_record_torn_into_it_is_quarantined_alone() {
        const ROOM: usize = 3 * 1024 * 1024;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(JOURNAL_FILE);
        let engines = open(dir.path(), &EmbeddedConfig::default()).expect("open");
        engines.catalog.apply(batch("k/1", "v")).expect("apply");
        engines.catalog.sync().expect("sync");
        drop(engines);
        // As a crash leaves the journal: its records, then zeros the writer made ahead of them.
        let records_end = std::fs::metadata(&path).expect("journal").len();
        let mut file = std::fs::OpenOptions::new().append(true).open(&path).expect("journal");
        std::io::Write::write_all(&mut file, &vec![0; ROOM]).expect("room");
        drop(file);
        let copied = snapshot(dir.path(), None).expect("a backup reads the journal up to the room");
        assert_eq!((copied.journal_length, copied.batches), (records_end, 1));

        let engines = open(dir.path(), &EmbeddedConfig::default()).expect("reopen");
        assert!(engines.report.warnings.is_empty() && engines.report.quarantined.is_empty(), "{:?}", engines.report);
        assert!(std::fs::metadata(&path).expect("journal").len() >= records_end + ROOM as u64, "the room stays");
        engines.catalog.apply(batch("k/2", "w")).expect("apply");
        engines.catalog.sync().expect("sync");
        assert_eq!(journal_records(dir.path()).0, [1, 2], "records go on where the valid ones end");
        drop(engines);

        // A record torn mid-append into the room: only its bytes are kept aside, not the zeros after.
        let records_end = std::fs::metadata(&path).expect("journal").len();
        let torn = encode_record(&batch_body(3, &batch("k/torn", "v")));
        let mut file = std::fs::OpenOptions::new().append(true).open(&path).expect("journal");
        std::io::Write::write_all(&mut file, &torn[..torn.len() / 2]).expect("tear");
        std::io::Write::write_all(&mut file, &vec![0; ROOM]).expect("room");
        drop(file);
        let engines = open(dir.path(), &EmbeddedConfig::default()).expect("reopen after the tear");
        assert_eq!(engines.report.quarantined.len(), 1, "{:?}", engines.report);
        let kept = std::fs::read(&engines.report.quarantined[0]).expect("quarantined tail");
        let mut as_torn = torn[..torn.len() / 2].to_vec();
        as_torn.resize(torn.len(), 0);
        assert_eq!(kept, as_torn, "the torn bytes up to the record's end, without the room's zeros past it");
        assert_eq!(journal_records(dir.path()).0[..2], [1, 2]);
        assert!(std::fs::metadata(&path).expect("journal").len() >= records_end);
        assert_eq!(engines.catalog.get(b"k/2").expect("get").as_deref(), Some(&b"w"[..]));
        assert!(engines.catalog.get(b"k/torn").expect("get").is_none());
    }

    #[test]
    fn a_journal_batch_never_acknowledged_is_replayed_quietly_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engines = open(dir.path(), &EmbeddedConfig::default()).expect("open");
        engines.catalog.apply(batch("k/1", "v")).expect("apply");
        engines.catalog.sync().expect("sync");
        drop(engines);
        // As after a crash between the journal append and the catalog's own write: the journal holds
        // batch 2, no sync mark covers it, and the catalog does not have it.
        let path = dir.path().join(JOURNAL_FILE);
        let mut file = std::fs::OpenOptions::new().append(true).open(&path).expect("journal");
        std::io::Write::write_all(&mut file, &encode_record(&batch_body(2, &batch("k/2", "w")))).expect("append");
        drop(file);

        let engines = open(dir.path(), &EmbeddedConfig::default()).expect("reopen without the recovery flag");
        assert_eq!(engines.report.batches_replayed, 1);
        assert_eq!(engines.catalog.get(b"k/2").expect("get").as_deref(), Some(&b"w"[..]));
        engines.catalog.apply(batch("k/3", "x")).expect("apply");
        engines.catalog.sync().expect("sync");
        let (batches, _) = journal_records(dir.path());
        assert_eq!(batches, [1, 2, 3], "numbering continues after the replayed batch");
    }

    #[test]
    fn a_write_leaves_each_key_as_the_last_of_its_batches_did() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open_database(&dir.path().join("catalog.redb"), &EmbeddedConfig::default()).expect("db");
        write_batches(&db, [(1, &batch("gone", "1"))]).expect("write");
        let mut second = batch("k", "first");
        second.insert(b"size".to_vec(), b"1".to_vec());
        let mut third = batch("k", "second");
        third.remove(b"gone".to_vec());
        third.insert(b"size".to_vec(), b"2".to_vec());
        let mut fourth = batch("back", "x");
        fourth.remove(b"back".to_vec());
        fourth.insert(b"size".to_vec(), b"3".to_vec());
        let written = write_batches(&db, [(2, &second), (3, &third), (4, &fourth)]).expect("write");
        assert_eq!(written, Some(4));
        let transaction = db.begin_read().expect("read");
        let table = transaction.open_table(CATALOG_TABLE).expect("table");
        let all: Vec<(String, String)> = redb::ReadableTable::iter(&table)
            .expect("iter")
            .map(|item| {
                let (key, value) = item.expect("item");
                (String::from_utf8_lossy(key.value()).into(), String::from_utf8_lossy(value.value()).into())
            })
            .collect();
        assert_eq!(all, [("k".to_owned(), "second".to_owned()), ("size".to_owned(), "3".to_owned())]);
        assert_eq!(batch_number(&db).expect("number"), 4);
    }

    /// A catalog whose writer runs once per `interval_ms` (never, in a test's time, at `u64::MAX`).
    fn open_alone(directory: &Path, interval_ms: u64) -> JournaledCatalog {
        let quarantine = directory.join("quarantine");
        let config = EmbeddedConfig { catalog_flush_interval_ms: interval_ms, ..EmbeddedConfig::default() };
        open_catalog(directory, &quarantine, &config, &mut OpenReport::default()).expect("open")
    }

    fn value(bytes: Option<Vec<u8>>) -> Option<String> {
        bytes.map(|bytes| String::from_utf8(bytes).expect("utf-8"))
    }

    /// What the catalog's file holds for `key`, pending batches aside.
    fn stored(catalog: &JournaledCatalog, key: &str) -> Option<String> {
        let transaction = catalog.shared.db.begin_read().expect("read");
        let table = transaction.open_table(CATALOG_TABLE).expect("table");
        value(table.get(key.as_bytes()).expect("get").map(|v| v.value().to_vec()))
    }

    #[test]
    fn a_batch_is_read_whole_at_once_and_reaches_the_catalog_only_once_the_journal_holds_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let catalog = open_alone(dir.path(), u64::MAX);
        let mut first = Batch::default();
        for key in ["p/1", "p/2", "p/3"] {
            first.insert(key, "old");
        }
        catalog.apply(first).expect("apply");
        catalog.shared.write_catalog().expect("write");
        assert_eq!(stored(&catalog, "p/3"), None, "not durable in the journal yet: not written");
        catalog.sync().expect("sync");
        assert_eq!(stored(&catalog, "p/3"), None, "durable, but the writer has not run");
        catalog.shared.write_catalog().expect("write");
        assert_eq!(stored(&catalog, "p/3").as_deref(), Some("old"));

        let mut second = Batch::default();
        second.insert("p/2", "new");
        second.remove("p/3");
        second.insert("p/4", "added");
        catalog.apply(second).expect("apply");
        let read = |catalog: &JournaledCatalog| {
            let scan: Vec<_> = catalog
                .scan(b"p/", None)
                .map(|item| item.map(|(k, v)| (value(Some(k)).unwrap_or_default(), value(Some(v)).unwrap_or_default())))
                .collect::<Result<_, _>>()
                .expect("scan");
            (value(catalog.get(b"p/2").expect("get")), value(catalog.get(b"p/3").expect("get")), scan)
        };
        let expected = (
            Some("new".to_owned()),
            None,
            vec![("p/1".into(), "old".into()), ("p/2".into(), "new".into()), ("p/4".into(), "added".into())],
        );
        assert_eq!(read(&catalog), expected, "read at once, before any sync");
        catalog.shared.write_catalog().expect("write");
        assert_eq!(
            (stored(&catalog, "p/2"), stored(&catalog, "p/3"), stored(&catalog, "p/4")),
            (Some("old".into()), Some("old".into()), None),
            "the catalog receives only what the journal holds durably"
        );
        assert_eq!(batch_number(&catalog.shared.db).expect("number"), 1);

        catalog.sync().expect("sync");
        catalog.shared.write_catalog().expect("write");
        assert_eq!(
            (stored(&catalog, "p/2"), stored(&catalog, "p/3"), stored(&catalog, "p/4")),
            (Some("new".into()), None, Some("added".into()))
        );
        assert_eq!(batch_number(&catalog.shared.db).expect("number"), 2);
        assert_eq!(catalog.shared.read_pending().len(), 0, "nothing is read in front of the catalog any more");
        assert_eq!(read(&catalog), expected, "the same reads from the catalog");
        assert_eq!(journal_marks(dir.path()), [0, 1, 2], "a mark after each write");
    }

    #[test]
    fn a_reader_never_sees_a_batch_in_part_nor_an_older_one_while_the_writer_writes_it() {
        const BATCHES: u64 = 300;
        let dir = tempfile::tempdir().expect("tempdir");
        let catalog = open_alone(dir.path(), 2);
        let number = |key: &[u8]| {
            catalog.get(key).expect("get").map_or(0, |v| u64::from_be_bytes(v.try_into().expect("eight bytes")))
        };
        let done = std::sync::atomic::AtomicBool::new(false);
        let checked = AtomicU64::new(0);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for i in 1..=BATCHES {
                    // "a" is written first and "z" last, with filler between.
                    let mut batch = Batch::default();
                    batch.insert("a", i.to_be_bytes());
                    for filler in 0..32 {
                        batch.insert(format!("m/{filler}"), vec![0; 64]);
                    }
                    batch.insert("z", i.to_be_bytes());
                    catalog.apply(batch).expect("apply");
                    catalog.sync().expect("sync");
                    if i % 2 == 0 {
                        // Every other batch, none pending until the writer has written them: reads
                        // then come from the catalog alone.
                        let deadline = Instant::now() + Duration::from_secs(30);
                        while catalog.shared.read_pending().len() > 0 {
                            assert!(Instant::now() < deadline, "the writer did not write batch {i}");
                            std::thread::yield_now();
                        }
                    }
                }
                done.store(true, Ordering::Release);
            });
            scope.spawn(|| {
                let mut seen = 0;
                while !done.load(Ordering::Acquire) {
                    let first = number(b"a");
                    let last = number(b"z");
                    assert!(last >= first, "read a from batch {first} but z from batch {last}");
                    // Never back in time: a batch the writer stops holding pending is in the catalog
                    // every read sees from then on.
                    assert!(first >= seen, "read a from batch {first} after batch {seen}");
                    seen = first;
                    checked.fetch_add(1, Ordering::Relaxed);
                }
            });
        });
        wait_for_mark(dir.path(), BATCHES);
        assert_eq!(batch_number(&catalog.shared.db).expect("number"), BATCHES);
        let marks = journal_marks(dir.path()).len();
        assert!(marks > 2, "the writer wrote while the reader read ({marks} marks)");
        assert!(checked.load(Ordering::Relaxed) > BATCHES, "the reader ran throughout");
    }

    #[test]
    fn too_many_pending_batches_hold_a_sync_back_until_the_writer_has_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let catalog = open_alone(dir.path(), u64::MAX);
        for i in 0..=PENDING_BATCHES_MAX {
            catalog.apply(batch(&format!("k/{i}"), "v")).expect("apply");
        }
        assert_eq!(catalog.shared.read_pending().len(), PENDING_BATCHES_MAX + 1);
        catalog.sync().expect("sync");
        assert_eq!(catalog.shared.read_pending().len(), 0, "the writer, asked, wrote every durable batch");
        assert_eq!(batch_number(&catalog.shared.db).expect("number"), PENDING_BATCHES_MAX as u64 + 1);
        assert_eq!(stored(&catalog, "k/0").as_deref(), Some("v"));
    }

    #[test]
    fn a_catalog_put_back_behind_its_last_mark_is_refused_and_recovery_restores_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engines = open(dir.path(), &EmbeddedConfig::default()).expect("open");
        engines.catalog.apply(batch("k/1", "v")).expect("apply");
        engines.catalog.sync().expect("sync");
        drop(engines);
        let old = std::fs::read(dir.path().join(CATALOG_FILE)).expect("catalog");
        let engines = open(dir.path(), &EmbeddedConfig::default()).expect("reopen");
        let mut second = batch("k/2", "w");
        second.remove("k/1");
        engines.catalog.apply(second).expect("apply");
        engines.catalog.sync().expect("sync");
        drop(engines);
        // As if the catalog's file had been put back from before batch 2, which a mark says it held.
        std::fs::write(dir.path().join(CATALOG_FILE), &old).expect("put back");

        let refused = open(dir.path(), &EmbeddedConfig::default()).err().expect("refused");
        assert!(
            matches!(refused, StoreError::CatalogBehind { catalog_batch: 1, acknowledged_batch: 2, journal_batch: 2 }),
            "{refused}"
        );
        {
            let db = open_database(&dir.path().join(CATALOG_FILE), &EmbeddedConfig::default()).expect("open");
            assert_eq!(batch_number(&db).expect("number"), 1, "a refused open changes nothing");
        }
        let config = EmbeddedConfig { recover: true, ..EmbeddedConfig::default() };
        let engines = open(dir.path(), &config).expect("recovery opens");
        assert_eq!(engines.report.batches_replayed, 1);
        assert_eq!(engines.catalog.get(b"k/1").expect("get"), None);
        assert_eq!(engines.catalog.get(b"k/2").expect("get").as_deref(), Some(&b"w"[..]));
    }

    #[test]
    fn a_damaged_catalog_file_does_not_open_and_recovery_rebuilds_it_from_the_journal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engines = open(dir.path(), &EmbeddedConfig::default()).expect("open");
        engines.catalog.apply(batch("k/1", "a value to find in the catalog's file")).expect("apply");
        engines.catalog.sync().expect("sync");
        drop(engines);
        let path = dir.path().join(CATALOG_FILE);
        let mut bytes = std::fs::read(&path).expect("catalog");
        // Every copy: stale ones may stay in free pages of a copy-on-write file.
        let needle = b"a value to find";
        let copies: Vec<usize> =
            bytes.windows(needle.len()).enumerate().filter(|(_, w)| w == needle).map(|(at, _)| at).collect();
        assert!(!copies.is_empty(), "the value is in the file");
        for at in copies {
            bytes[at + 3] ^= 0x01;
        }
        std::fs::write(&path, &bytes).expect("damage");

        let refused = open(dir.path(), &EmbeddedConfig::default()).err().expect("a damaged catalog must not open");
        assert!(refused.to_string().contains("--recover"), "{refused}");
        assert!(std::fs::read(&path).expect("catalog") == bytes, "a refused open changes nothing");
        let config = EmbeddedConfig { recover: true, ..EmbeddedConfig::default() };
        let engines = open(dir.path(), &config).expect("recovery opens");
        assert_eq!(engines.report.quarantined.len(), 1, "the damaged file is kept aside");
        assert!(std::fs::read(&engines.report.quarantined[0]).expect("kept") == bytes, "kept as it was");
        assert_eq!(
            engines.catalog.get(b"k/1").expect("get").as_deref(),
            Some(&b"a value to find in the catalog's file"[..])
        );
    }

    #[test]
    fn opening_reads_the_journal_without_keeping_its_batches_and_replays_from_the_catalogs_next() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engines = open(dir.path(), &EmbeddedConfig::default()).expect("open");
        for i in 0..5 {
            engines.catalog.apply(batch(&format!("k/{i}"), "v")).expect("apply");
        }
        engines.catalog.sync().expect("sync");
        drop(engines);
        let (path, quarantine) = (dir.path().join(JOURNAL_FILE), dir.path().join("quarantine"));
        let file = File::open(&path).expect("journal");
        let length = file.metadata().expect("metadata").len();
        let mut fourth = None;
        let mut offset = 0;
        while let Some((entry, size)) = record_at(&file, offset, length) {
            if matches!(entry, JournalEntry::Batch { number: 4, .. }) {
                fourth = Some(offset);
            }
            offset += size;
        }
        let mut report = OpenReport::default();
        let scanned = scan_journal(&path, 3, &quarantine, false, &mut report).expect("scan");
        assert_eq!((scanned.replay_from, scanned.last_batch, scanned.synced_through), (fourth, 5, 5));
        assert_eq!(scanned.valid_length, length, "every record was read");
    }
}
