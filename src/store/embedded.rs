//! The embedded engine, Kho's default: the catalog in sled, guarded by a journal, and blobs in pack
//! files (`packs`). This is the only module that names sled.
//!
//! The journal: every batch is appended to `catalog.journal` (numbered; the batch number is kept in
//! sled too), and `sync` fdatasyncs the journal: that is what makes a batch durable, and callers that
//! arrive while a sync runs wait for the next one, which covers them all (group commit). sled is
//! brought up to date from the journal at open: the journal batches past the catalog's number are
//! replayed.
//!
//! sled receives a batch only after the sync that made it durable in the journal, key by key and
//! then its number (`write_to_tree`, which says why not as a `sled::Batch`); until then the batch is
//! read from memory in front of sled (`pending`), so readers see it from the moment it is applied,
//! whole. Were sled given a batch before the journal held it, a crash could leave sled with part of a
//! batch that no journal record would ever complete.
//!
//! The catalog is made durable behind the journal, at most once per [`CATALOG_FLUSH_INTERVAL_MS`]
//! (by the sync that finds the last flush that old) and when the store is closed. That takes more than
//! `sled::Db::flush` (DESIGN.md section 4): sled 0.34's flush ends with `sync_file_range`, which does
//! not reach stable storage on a power cut, and tree nodes larger than a quarter segment go to files
//! under `blobs/` that sled never fsyncs. So a catalog flush flushes, then fdatasyncs the `db` file and
//! every blob file written since the last flush, fsyncs the `blobs` directory, and appends a mark to
//! the journal recording the highest batch the catalog now holds durably. Flushing it with every sync
//! was a fifth of a deposit's server time.
//!
//! Why the marks: sled treats a message whose checksum fails as a torn write and cuts its log there
//! (`pagecache/iterator.rs`, "found a tear"), so one flipped byte in the `db` file silently drops every
//! later write. Batches past the last mark are replayed quietly at open (after a crash, the catalog
//! may lack up to an interval of them); if the catalog lacks a batch that a mark says it held
//! durably, it was damaged: the store refuses to open, naming the gap, unless the operator asks for
//! recovery, which replays everything it lacks.
//!
//! Journal records (docs/FORMAT.md section 3.3): `length u32 | BLAKE3(body)[..16] | body`, body =
//! `version u8 | kind u8 | number u64 | ...`, kind 1 a batch (`count u32`, then per operation
//! `tag u8, key_len u32, key, [value_len u32, value]`), kind 2 a sync mark. All integers big-endian.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};

use super::packs::{committed_extent, pack_file_name, quarantine_tail, sync_path, Packs, PACKS_DIRECTORY};
use super::pending::{self, Pending};
use super::{io_error, Batch, CatalogEngine, Engines, Entries, OpenReport, Store, StoreError};

/// sled's segment size. Values above a quarter of it become separate blob files; catalog values are
/// far smaller.
pub const SEGMENT_SIZE_BYTES: usize = 512 * 1024;
/// sled's page cache size.
pub const CACHE_CAPACITY_BYTES_DEFAULT: u64 = 256 * 1024 * 1024;
/// How often, at most, a sync also makes the catalog durable (see the module docs). The catalog may lack
/// up to this long of batches after a power cut; the journal has them and the next open replays them.
pub const CATALOG_FLUSH_INTERVAL_MS: u64 = 1_000;
/// The largest journal record read back; anything larger is damage, not a batch.
pub const JOURNAL_RECORD_SIZE_BYTES_MAX: u32 = 64 * 1024 * 1024;
const JOURNAL_FILE: &str = "catalog.journal";
const JOURNAL_VERSION: u8 = 1;
const JOURNAL_HEADER_BYTES: usize = 4 + 16;
const KIND_BATCH: u8 = 1;
const KIND_SYNCED: u8 = 2;
/// The journal number of the last batch applied, kept inside sled with every batch.
const BATCH_NUMBER_KEY: &[u8] = b"meta/journal-batch";

#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    pub cache_capacity_bytes: u64,
    /// Open even when the catalog lacks acknowledged batches, restoring them from the journal.
    pub recover: bool,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig { cache_capacity_bytes: CACHE_CAPACITY_BYTES_DEFAULT, recover: false }
    }
}

/// Opens (or creates) the embedded engine in `directory`: sled and its journal, then the packs.
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

/// Opens the catalog: sled, brought up to date from its journal, durable and marked.
fn open_catalog(
    directory: &Path,
    quarantine: &Path,
    config: &EmbeddedConfig,
    report: &mut OpenReport,
) -> Result<SledCatalog, StoreError> {
    let db = match open_sled(directory, config) {
        Ok(db) => db,
        Err(error) if config.recover => {
            // The catalog's files do not even open: keep them aside and rebuild from the journal.
            let kept = quarantine.join(format!("catalog.at-{}", crate::ids::now_unix_ms()));
            std::fs::create_dir_all(&kept).map_err(io_error(&kept))?;
            for entry in std::fs::read_dir(directory).map_err(io_error(directory))? {
                let path = entry.map_err(io_error(directory))?.path();
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                if ["conf", "db", "blobs"].contains(&name.as_str()) || name.starts_with("snap.") {
                    std::fs::rename(&path, kept.join(&name)).map_err(io_error(&path))?;
                }
            }
            sync_path(directory)?;
            report.warnings.push(format!(
                "the catalog did not open ({error}); its files were moved to {} and it is rebuilt from the journal",
                kept.display()
            ));
            report.quarantined.push(kept);
            open_sled(directory, config).map_err(engine_error)?
        }
        Err(error) => {
            return Err(StoreError::Engine(format!(
                "the catalog does not open: {error}. Nothing was changed. Start with the recovery flag \
                 (`kho serve --recover`) to keep its files aside and rebuild it from the journal"
            )))
        }
    };
    let tree = db.open_tree("catalog").map_err(engine_error)?;
    let journal_path = directory.join(JOURNAL_FILE);
    let catalog_batch = batch_number(&tree)?;
    let scanned = scan_journal(&journal_path, catalog_batch, quarantine, config.recover, report)?;
    replay(&tree, &journal_path, &scanned, catalog_batch, config.recover, report)?;
    let applied_batch = batch_number(&tree)?;
    let last_batch = applied_batch.max(scanned.last_batch);
    let journal_file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&journal_path)
        .map_err(io_error(&journal_path))?;
    // Synced through its own handle, so that appends go on while a sync waits for the disk.
    let journal_for_sync = journal_file.try_clone().map_err(io_error(&journal_path))?;
    let engine = SledCatalog {
        db,
        tree,
        directory: directory.to_owned(),
        journal_for_sync,
        journal: Mutex::new(Journal { file: journal_file, length: scanned.valid_length, path: journal_path }),
        last_batch: AtomicU64::new(last_batch),
        pending: RwLock::new(Pending::default()),
        applied_batch: AtomicU64::new(applied_batch),
        group: GroupSync::default(),
        catalog_flushed_at: Mutex::new(std::time::Instant::now()),
    };
    // Make the files sled created (conf, db, blobs/), the journal, and their directory entries durable.
    for name in ["conf", "db", JOURNAL_FILE] {
        let path = directory.join(name);
        if path.exists() {
            sync_path(&path)?;
        }
    }
    sync_path(directory)?;
    engine.sync()?;
    // The batches just replayed, if any, are the catalog's for good from here.
    engine.group.run(|| engine.flush_catalog())?;
    Ok(engine)
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
    // What follows is a record being written now, or damage: damage if a whole record comes after it.
    if let Some(next) = (offset + 1..file_length).find(|&at| record_at(&file, at, file_length).is_some()) {
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

/// How long an open waits for the lock on sled's files. A store closed a moment ago in this process
/// keeps the lock until sled's flusher thread notices (up to its flush interval); another process
/// holding the store still gets the lock error, after this wait.
const SLED_LOCK_WAIT_MS: u64 = 3_000;

fn open_sled(directory: &Path, config: &EmbeddedConfig) -> Result<sled::Db, sled::Error> {
    let started = std::time::Instant::now();
    loop {
        let opened = sled::Config::new()
            .path(directory)
            .segment_size(SEGMENT_SIZE_BYTES)
            .cache_capacity(config.cache_capacity_bytes)
            .mode(sled::Mode::HighThroughput)
            .open();
        match opened {
            Err(sled::Error::Io(error))
                if error.to_string().contains("could not acquire lock")
                    && started.elapsed() < std::time::Duration::from_millis(SLED_LOCK_WAIT_MS) =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

fn engine_error(error: sled::Error) -> StoreError {
    StoreError::Engine(error.to_string())
}

fn batch_number(tree: &sled::Tree) -> Result<u64, StoreError> {
    match tree.get(BATCH_NUMBER_KEY).map_err(engine_error)? {
        None => Ok(0),
        Some(value) => value
            .as_ref()
            .try_into()
            .map(u64::from_be_bytes)
            .map_err(|_| StoreError::Corrupt("the catalog's journal batch number is malformed".into())),
    }
}

struct SledCatalog {
    db: sled::Db,
    tree: sled::Tree,
    directory: PathBuf,
    journal: Mutex<Journal>,
    /// The journal's file, for fdatasync without holding the journal's lock: a sync covers every append
    /// finished before it starts, which includes every batch of the callers waiting for it.
    journal_for_sync: File,
    /// The last batch journaled.
    last_batch: AtomicU64,
    /// Batches journaled but not yet written into the tree (they are once the journal holds them
    /// durably); every read looks here first.
    pending: RwLock<Pending>,
    /// The last batch written into the tree.
    applied_batch: AtomicU64,
    group: GroupSync,
    /// When the catalog was last made durable (`flush_catalog`).
    catalog_flushed_at: Mutex<std::time::Instant>,
}

impl SledCatalog {
    /// Makes every batch applied so far durable in sled's own files, then says so in the journal with
    /// a mark (durable with the next journal sync; until then the previous mark stands, which is only
    /// more cautious). Runs inside a group sync, never beside another.
    fn flush_catalog(&self) -> Result<(), StoreError> {
        let through = self.applied_batch.load(Ordering::Acquire);
        self.db.flush().map_err(engine_error)?;
        sync_path(&self.directory.join("db"))?;
        sync_new_blobs(&self.directory.join("blobs"), &self.group.synced_blobs)?;
        let mut mark = vec![JOURNAL_VERSION, KIND_SYNCED];
        mark.extend_from_slice(&through.to_be_bytes());
        self.journal.lock().unwrap_or_else(|p| p.into_inner()).append(&mark)?;
        *self.catalog_flushed_at.lock().unwrap_or_else(|p| p.into_inner()) = std::time::Instant::now();
        Ok(())
    }

    fn sync_journal(&self) -> Result<(), StoreError> {
        self.journal_for_sync.sync_data().map_err(io_error(&self.directory.join(JOURNAL_FILE)))
    }

    /// Writes the pending batches up to `through`, which the journal holds durably, into the tree,
    /// then stops reading them in front of it. Runs inside a group sync (or at close), never beside
    /// another, so the tree receives batches in journal order.
    fn write_durable_batches(&self, through: u64) -> Result<(), StoreError> {
        let batches = self.read_pending().through(through);
        let Some((last, _)) = batches.last() else {
            return Ok(());
        };
        let last = *last;
        for (number, batch) in &batches {
            write_to_tree(&self.tree, *number, batch)?;
        }
        self.applied_batch.store(last, Ordering::Release);
        self.pending.write().unwrap_or_else(|p| p.into_inner()).forget_through(last);
        Ok(())
    }

    fn read_pending(&self) -> std::sync::RwLockReadGuard<'_, Pending> {
        self.pending.read().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for SledCatalog {
    /// A store closed cleanly leaves its catalog durable and marked, so the next open replays nothing.
    fn drop(&mut self) {
        if self.group.failed.load(Ordering::Acquire) {
            return;
        }
        let closed = self
            .sync_journal()
            .and_then(|()| self.write_durable_batches(self.last_batch.load(Ordering::Acquire)))
            .and_then(|()| self.flush_catalog())
            .and_then(|()| self.sync_journal());
        if let Err(error) = closed {
            tracing::warn!("closing the store, its catalog was not made durable ({error}); the next open replays it from the journal");
        }
    }
}

struct Journal {
    file: File,
    length: u64,
    path: PathBuf,
}

impl Journal {
    fn append(&mut self, body: &[u8]) -> Result<(), StoreError> {
        let record = encode_record(body);
        self.file.write_all_at(&record, self.length).map_err(io_error(&self.path))?;
        self.length += record.len() as u64;
        Ok(())
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

/// Writes a batch the journal holds durably into the tree, one operation at a time in the batch's
/// order, then its number. Not as a `sled::Batch`: in sled 0.34 each batch seals its I/O buffer and
/// hands its write to a background thread (waking all its idle ones), and from the first batch on,
/// every read in the process takes a global lock that batches take exclusively; with a batch per
/// access entry, the scheduling alone was a seventh of a read's server time (docs/BENCHMARKS.md,
/// "Whose scheduling"). Readers see the batch
/// whole through `Pending` meanwhile; a crash midway leaves the tree with the batch's earlier
/// operations but the previous number, and the next open writes it again from the journal.
fn write_to_tree(tree: &sled::Tree, number: u64, batch: &Batch) -> Result<(), StoreError> {
    for (key, value) in &batch.operations {
        match value {
            Some(value) => tree.insert(key.as_slice(), value.as_slice()),
            None => tree.remove(key.as_slice()),
        }
        .map_err(engine_error)?;
    }
    tree.insert(BATCH_NUMBER_KEY, &number.to_be_bytes()).map_err(engine_error)?;
    Ok(())
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
    /// The batches after the catalog's last one, in journal order.
    batches: Vec<(u64, Batch)>,
    last_batch: u64,
    /// The highest batch a sync mark says was made durable (and so may have been acknowledged).
    synced_through: u64,
    /// Where the next record goes.
    valid_length: u64,
}

/// Reads every record, keeping in memory only the batches after `catalog_batch` (those the catalog may
/// lack: a journal holds every batch since the store began, gigabytes at a million deposits). A damaged
/// stretch followed by valid records is reported (and, without the recovery flag, refused); a damaged
/// tail (a crash mid-append) is quarantined, then cut.
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
                JournalEntry::Batch { number, batch } => {
                    scanned.last_batch = scanned.last_batch.max(number);
                    if number > catalog_batch {
                        scanned.batches.push((number, batch));
                    }
                }
                JournalEntry::Synced { through } => scanned.synced_through = scanned.synced_through.max(through),
            }
            offset += length;
            scanned.valid_length = offset;
            continue;
        }
        // Damage at `offset`: is there a valid record after it?
        let next_valid = (offset + 1..file_length).find(|&at| record_at(&file, at, file_length).is_some());
        match next_valid {
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
                let kept = quarantine_tail(path, &file, offset, quarantine)?;
                file.set_len(offset).map_err(io_error(path))?;
                file.sync_all().map_err(io_error(path))?;
                report.warnings.push(format!(
                    "journal {}: an incomplete last record ({} bytes, a crash mid-write) was moved to {}",
                    path.display(),
                    file_length - offset,
                    kept.display()
                ));
                report.quarantined.push(kept);
                break;
            }
        }
    }
    Ok(scanned)
}

/// Applies the journal's batches that the catalog lacks.
fn replay(
    tree: &sled::Tree,
    journal_path: &Path,
    scanned: &ScannedJournal,
    catalog_batch: u64,
    recover: bool,
    report: &mut OpenReport,
) -> Result<(), StoreError> {
    if scanned.synced_through > catalog_batch && !recover {
        return Err(StoreError::CatalogBehind {
            catalog_batch,
            acknowledged_batch: scanned.synced_through,
            journal_batch: scanned.last_batch,
        });
    }
    if scanned.last_batch < catalog_batch {
        // sled made batches durable on its own before their journal records were: they were never
        // acknowledged (acknowledgement waits for the journal), so nothing is missing that was promised.
        report.warnings.push(format!(
            "catalog batches {}..={catalog_batch} were never acknowledged and are not in the journal",
            scanned.last_batch + 1
        ));
    }
    if !scanned.batches.is_empty() {
        // The tree may only receive what the journal holds durably (see `write_to_tree`); the records
        // read back past its last sync may still be only in the page cache.
        File::open(journal_path).and_then(|file| file.sync_data()).map_err(io_error(journal_path))?;
    }
    let mut expected = catalog_batch + 1;
    for (number, batch) in &scanned.batches {
        if *number != expected && scanned.synced_through >= expected {
            let message = format!("journal batches {expected}..{number} are missing; they cannot be restored");
            if !recover {
                return Err(StoreError::Corrupt(message));
            }
            report.warnings.push(message);
        }
        write_to_tree(tree, *number, batch)?;
        report.batches_replayed += 1;
        expected = number + 1;
    }
    if scanned.synced_through > catalog_batch {
        report.warnings.push(format!(
            "the catalog had lost acknowledged batches {}..={}; {} batches were restored from the journal",
            catalog_batch + 1,
            scanned.synced_through,
            report.batches_replayed
        ));
    }
    Ok(())
}

impl CatalogEngine for SledCatalog {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(value) = self.read_pending().get(key) {
            return Ok(value);
        }
        Ok(self.tree.get(key).map_err(engine_error)?.map(|value| value.to_vec()))
    }

    fn scan<'a>(&'a self, prefix: &[u8], after: Option<&[u8]>) -> Entries<'a> {
        let pending = self.read_pending().range(prefix, after);
        let prefix = prefix.to_vec();
        let iter = match after {
            Some(after) => self.tree.range::<&[u8], _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
            None => self.tree.range::<&[u8], _>(prefix.as_slice()..),
        };
        let tree = Box::new(
            iter.take_while(move |item| match item {
                Ok((key, _)) => key.starts_with(&prefix),
                Err(_) => true,
            })
            .map(|item| item.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(engine_error)),
        );
        pending::merge(tree, pending)
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        // Journal order is catalog order: both happen under the journal's lock. The tree receives the
        // batch once the journal holds it durably (`sync`); until then reads find it pending.
        let mut journal = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        let number = self.last_batch.load(Ordering::Acquire) + 1;
        journal.append(&batch_body(number, &batch))?;
        self.pending.write().unwrap_or_else(|p| p.into_inner()).push(number, batch);
        self.last_batch.store(number, Ordering::Release);
        Ok(())
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.group.run(|| {
            // Every batch up to here was appended before the journal's sync starts, so it covers them.
            let through = self.last_batch.load(Ordering::Acquire);
            self.sync_journal()?;
            self.write_durable_batches(through)?;
            let flushed_at = *self.catalog_flushed_at.lock().unwrap_or_else(|p| p.into_inner());
            if flushed_at.elapsed() >= std::time::Duration::from_millis(CATALOG_FLUSH_INTERVAL_MS) {
                self.flush_catalog()?;
            }
            Ok(())
        })
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        let journal = self.journal.lock().unwrap_or_else(|p| p.into_inner()).length;
        Ok(self.db.size_on_disk().map_err(engine_error)? + journal)
    }
}

/// fdatasyncs blob files not synced before, then the directory that names them.
fn sync_new_blobs(blobs: &Path, synced: &Mutex<HashSet<String>>) -> Result<(), StoreError> {
    let entries = match std::fs::read_dir(blobs) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(StoreError::Io { path: blobs.to_owned(), source: error }),
    };
    let mut synced = synced.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut present = HashSet::new();
    let mut any_new = false;
    for entry in entries {
        let entry = entry.map_err(io_error(blobs))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !synced.contains(&name) {
            let path = entry.path();
            match File::open(&path) {
                Ok(file) => file.sync_data().map_err(io_error(&path))?,
                // sled deletes blob files when it rewrites the node; nothing left to make durable.
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(error) => return Err(StoreError::Io { path, source: error }),
            }
            any_new = true;
        }
        present.insert(name);
    }
    if any_new {
        sync_path(blobs)?;
    }
    *synced = present;
    Ok(())
}

/// One sync at a time; callers that arrive while one runs share the next one. After a failure every
/// later call fails too (the store is poisoned one level up as well).
#[derive(Default)]
struct GroupSync {
    state: Mutex<SyncState>,
    finished: Condvar,
    failed: std::sync::atomic::AtomicBool,
    synced_blobs: Mutex<HashSet<String>>,
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
    fn journal_records(directory: &Path) -> (Vec<u64>, Vec<u64>) {
        let file = File::open(directory.join(JOURNAL_FILE)).expect("journal");
        let length = file.metadata().expect("metadata").len();
        let (mut batches, mut marks, mut offset) = (Vec::new(), Vec::new(), 0);
        while let Some((entry, size)) = record_at(&file, offset, length) {
            match entry {
                JournalEntry::Batch { number, .. } => batches.push(number),
                JournalEntry::Synced { through } => marks.push(through),
            }
            offset += size;
        }
        assert_eq!(offset, length, "the journal ends with a whole record");
        (batches, marks)
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

    #[test]
    fn a_sync_makes_the_journal_durable_and_the_catalog_follows_at_most_once_per_interval() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engines = open(dir.path(), &EmbeddedConfig::default()).expect("open");
        let marks = journal_marks(dir.path());
        assert_eq!(marks.last(), Some(&0), "open leaves the catalog durable and marked");
        engines.catalog.apply(batch("k/1", "v")).expect("apply");
        engines.catalog.sync().expect("sync");
        assert_eq!(journal_marks(dir.path()), marks, "within the interval a sync makes only the journal durable");
        std::thread::sleep(std::time::Duration::from_millis(CATALOG_FLUSH_INTERVAL_MS + 50));
        engines.catalog.apply(batch("k/2", "v")).expect("apply");
        engines.catalog.sync().expect("sync");
        assert_eq!(journal_marks(dir.path()).last(), Some(&2), "the first sync after the interval flushes the catalog");
        engines.catalog.apply(batch("k/3", "v")).expect("apply");
        drop(engines);
        assert_eq!(journal_marks(dir.path()).last(), Some(&3), "closing flushes it, unsynced batches too");
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

    #[test]
    fn a_journal_batch_never_acknowledged_is_replayed_quietly_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engines = open(dir.path(), &EmbeddedConfig::default()).expect("open");
        engines.catalog.apply(batch("k/1", "v")).expect("apply");
        engines.catalog.sync().expect("sync");
        drop(engines);
        // As after a crash between the journal append and sled's own write: the journal holds batch 2,
        // no sync mark covers it, and the catalog does not have it.
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

    fn open_alone(directory: &Path) -> SledCatalog {
        let quarantine = directory.join("quarantine");
        open_catalog(directory, &quarantine, &EmbeddedConfig::default(), &mut OpenReport::default()).expect("open")
    }

    fn value(bytes: Option<Vec<u8>>) -> Option<String> {
        bytes.map(|bytes| String::from_utf8(bytes).expect("utf-8"))
    }

    fn in_tree(catalog: &SledCatalog, key: &str) -> Option<String> {
        value(catalog.tree.get(key).expect("tree").map(|v| v.to_vec()))
    }

    #[test]
    fn a_batch_is_read_whole_at_once_and_reaches_the_tree_only_once_the_journal_holds_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let catalog = open_alone(dir.path());
        let mut first = Batch::default();
        for key in ["p/1", "p/2", "p/3"] {
            first.insert(key, "old");
        }
        catalog.apply(first).expect("apply");
        catalog.sync().expect("sync");
        assert_eq!(in_tree(&catalog, "p/3").as_deref(), Some("old"));

        let mut second = Batch::default();
        second.insert("p/2", "new");
        second.remove("p/3");
        second.insert("p/4", "added");
        catalog.apply(second).expect("apply");
        let read = |catalog: &SledCatalog| {
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
        assert_eq!(
            (in_tree(&catalog, "p/2"), in_tree(&catalog, "p/3"), in_tree(&catalog, "p/4")),
            (Some("old".into()), Some("old".into()), None),
            "the tree receives only what the journal holds durably"
        );
        assert_eq!(batch_number(&catalog.tree).expect("number"), 1);

        catalog.sync().expect("sync");
        assert_eq!(
            (in_tree(&catalog, "p/2"), in_tree(&catalog, "p/3"), in_tree(&catalog, "p/4")),
            (Some("new".into()), None, Some("added".into()))
        );
        assert_eq!(batch_number(&catalog.tree).expect("number"), 2);
        assert_eq!(catalog.applied_batch.load(Ordering::Acquire), 2);
        assert!(catalog.read_pending().through(u64::MAX).is_empty(), "nothing is read in front of the tree any more");
        assert_eq!(read(&catalog), expected, "the same reads from the tree");
    }

    #[test]
    fn a_reader_never_sees_a_batch_in_part_while_it_is_written_into_the_tree() {
        const BATCHES: u64 = 300;
        let dir = tempfile::tempdir().expect("tempdir");
        let catalog = open_alone(dir.path());
        let number = |key: &[u8]| {
            catalog.get(key).expect("get").map_or(0, |v| u64::from_be_bytes(v.try_into().expect("eight bytes")))
        };
        let done = std::sync::atomic::AtomicBool::new(false);
        let checked = AtomicU64::new(0);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for i in 1..=BATCHES {
                    // "a" is written into the tree first and "z" last, with filler between.
                    let mut batch = Batch::default();
                    batch.insert("a", i.to_be_bytes());
                    for filler in 0..32 {
                        batch.insert(format!("m/{filler}"), vec![0; 64]);
                    }
                    batch.insert("z", i.to_be_bytes());
                    catalog.apply(batch).expect("apply");
                    catalog.sync().expect("sync");
                }
                done.store(true, Ordering::Release);
            });
            scope.spawn(|| {
                while !done.load(Ordering::Acquire) {
                    let first = number(b"a");
                    let last = number(b"z");
                    assert!(last >= first, "read a from batch {first} but z from batch {last}");
                    checked.fetch_add(1, Ordering::Relaxed);
                }
            });
        });
        assert_eq!(batch_number(&catalog.tree).expect("number"), BATCHES);
        assert!(checked.load(Ordering::Relaxed) > BATCHES, "the reader ran throughout");
    }

    #[test]
    fn a_batch_the_tree_holds_in_part_is_written_whole_at_the_next_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engines = open(dir.path(), &EmbeddedConfig::default()).expect("open");
        engines.catalog.apply(batch("k/1", "v")).expect("apply");
        engines.catalog.sync().expect("sync");
        drop(engines);
        // As after a crash midway through writing batch 2 into the tree: the journal holds it, the tree
        // its first operation only, under the previous batch number.
        let mut second = batch("k/2", "w");
        second.remove("k/1");
        second.insert("k/3", "x");
        let path = dir.path().join(JOURNAL_FILE);
        let mut file = std::fs::OpenOptions::new().append(true).open(&path).expect("journal");
        std::io::Write::write_all(&mut file, &encode_record(&batch_body(2, &second))).expect("append");
        drop(file);
        {
            let db = open_sled(dir.path(), &EmbeddedConfig::default()).expect("sled");
            let tree = db.open_tree("catalog").expect("tree");
            tree.insert("k/2", "w").expect("insert");
            db.flush().expect("flush");
            assert_eq!(batch_number(&tree).expect("number"), 1);
        }

        let catalog = open_alone(dir.path());
        assert_eq!(batch_number(&catalog.tree).expect("number"), 2);
        let values: Vec<_> = ["k/1", "k/2", "k/3"].iter().map(|key| in_tree(&catalog, key)).collect();
        assert_eq!(values, [None, Some("w".into()), Some("x".into())]);
    }

    #[test]
    fn opening_keeps_in_memory_only_the_journal_batches_after_the_catalogs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engines = open(dir.path(), &EmbeddedConfig::default()).expect("open");
        for i in 0..5 {
            engines.catalog.apply(batch(&format!("k/{i}"), "v")).expect("apply");
        }
        engines.catalog.sync().expect("sync");
        drop(engines);
        let (path, quarantine) = (dir.path().join(JOURNAL_FILE), dir.path().join("quarantine"));
        let mut report = OpenReport::default();
        let scanned = scan_journal(&path, 3, &quarantine, false, &mut report).expect("scan");
        let kept: Vec<u64> = scanned.batches.iter().map(|(number, _)| *number).collect();
        assert_eq!((kept, scanned.last_batch, scanned.synced_through), (vec![4, 5], 5, 5));
        assert_eq!(scanned.valid_length, std::fs::metadata(&path).expect("journal").len(), "every record was read");
    }
}
