//! The storage seam: a catalog of small values with atomic batches and durable group commit, and
//! append-only pack files for content frames.
//!
//! This is the only module that names sled or knows the on-disk layout. The rest of Kho sees the
//! catalog (gets, prefix scans, atomic [`Batch`]es, [`Store::sync`], which returns only when everything
//! committed before it would survive a power cut) and packs ([`PackWriter`] to append frames,
//! [`Store::read_frame`] to read one back).
//!
//! Why content is not in sled: sled 0.34's recovery treats a message whose checksum fails as a torn
//! write and cuts the log there (`pagecache/iterator.rs`, "found a tear"), so a single flipped bit in
//! a content frame would lose every later write or stop the store from opening. In a pack file a
//! flipped bit damages one frame, which its own checksum reports; every other document still reads.
//!
//! Packs: `packs/<id>.pack`, each leased to one upload at a time, so a document's frames are
//! contiguous. A writer appends, fdatasyncs the pack, and only then is the manifest committed to the
//! catalog with the pack's new committed extent (`pk/<id>`). At open every pack is cut back to its
//! committed extent, which removes whatever a crash left half-written.
//!
//! Why `sync` does more than `sled::Db::flush` (DESIGN.md section 4): sled 0.34's flush ends with
//! `sync_file_range`, which does not reach stable storage on a power cut, and tree nodes larger than
//! a quarter segment go to files under `blobs/` that sled never fsyncs. So `sync` flushes, then
//! fdatasyncs the `db` file and every blob file written since the last sync, and fsyncs the `blobs`
//! directory. Callers that arrive while a sync runs wait for the next one, which covers them all
//! (group commit). If an fsync ever fails the store refuses further writes: after a failed fsync the
//! kernel may have dropped the dirty pages, so retrying cannot be trusted.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// sled's segment size. Values above a quarter of it become separate blob files; catalog values are
/// far smaller.
pub const SEGMENT_SIZE_BYTES: usize = 512 * 1024;
/// A pack stops taking new documents once it is this large (a document already started finishes).
pub const PACK_SIZE_BYTES_TARGET: u64 = 1024 * 1024 * 1024;
const PACK_EXTENT_PREFIX: &[u8] = b"pk/";
/// sled's page cache size.
pub const CACHE_CAPACITY_BYTES_DEFAULT: u64 = 256 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("storage engine error: {0}")]
    Engine(String),
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("an earlier fsync failed; the store refuses writes until it is reopened and checked")]
    Poisoned,
}

impl From<sled::Error> for StoreError {
    fn from(error: sled::Error) -> Self {
        StoreError::Engine(error.to_string())
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_owned(), source }
}

/// Changes to the catalog applied all at once or not at all.
#[derive(Default)]
pub struct Batch {
    operations: Vec<(Vec<u8>, Option<Vec<u8>>)>,
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

    /// Records that `pack` now holds committed data up to `end`: at the next open the pack is cut back
    /// to the largest extent committed.
    pub fn commit_pack_extent(&mut self, pack: u32, end: u64) {
        self.insert(pack_extent_key(pack), end.to_be_bytes().to_vec());
    }
}

fn pack_extent_key(pack: u32) -> Vec<u8> {
    [PACK_EXTENT_PREFIX, &pack.to_be_bytes()].concat()
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub cache_capacity_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { cache_capacity_bytes: CACHE_CAPACITY_BYTES_DEFAULT }
    }
}

/// A handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    catalog: sled::Tree,
    directory: PathBuf,
    durability: GroupSync,
    packs: PackPool,
}

/// Packs not leased to a writer, and the next id for a new one.
struct PackPool {
    directory: PathBuf,
    idle: Mutex<Vec<OpenPack>>,
    next_id: Mutex<u32>,
}

struct OpenPack {
    id: u32,
    file: File,
    length: u64,
}

impl Store {
    pub fn open(directory: &Path, config: &StoreConfig) -> Result<Store, StoreError> {
        std::fs::create_dir_all(directory).map_err(io_error(directory))?;
        let db = sled::Config::new()
            .path(directory)
            .segment_size(SEGMENT_SIZE_BYTES)
            .cache_capacity(config.cache_capacity_bytes)
            .mode(sled::Mode::HighThroughput)
            .open()?;
        let catalog = db.open_tree("catalog")?;
        let packs = recover_packs(&directory.join("packs"), &catalog)?;
        let store = Store {
            inner: Arc::new(Inner {
                db,
                catalog,
                directory: directory.to_owned(),
                durability: GroupSync::default(),
                packs,
            }),
        };
        // Make the files sled created (conf, db, blobs/) and their directory entries durable once.
        for name in ["conf", "db"] {
            let path = directory.join(name);
            if path.exists() {
                sync_file(&path)?;
            }
        }
        sync_file(directory)?;
        store.sync()?;
        Ok(store)
    }

    /// An error once an fsync has failed: the store then refuses writes until reopened.
    pub fn check_writable(&self) -> Result<(), StoreError> {
        if self.inner.durability.poisoned.load(Ordering::Acquire) {
            return Err(StoreError::Poisoned);
        }
        Ok(())
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.inner.catalog.get(key)?.map(|value| value.to_vec()))
    }

    pub fn contains(&self, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.inner.catalog.contains_key(key)?)
    }

    /// Applies `batch` to the catalog atomically; durable only after a later [`Store::sync`].
    pub fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        self.check_writable()?;
        let mut sled_batch = sled::Batch::default();
        for (key, value) in batch.operations {
            match value {
                Some(value) => sled_batch.insert(key, value),
                None => sled_batch.remove(key),
            }
        }
        self.inner.catalog.apply_batch(sled_batch)?;
        Ok(())
    }

    /// Key-value pairs whose key starts with `prefix`, in key order, strictly after `after` if given.
    pub fn scan_prefix<'a>(
        &'a self,
        prefix: &[u8],
        after: Option<&[u8]>,
    ) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), StoreError>> + 'a {
        let tree = &self.inner.catalog;
        let prefix = prefix.to_vec();
        let iter = match after {
            Some(after) => tree.range::<&[u8], _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
            None => tree.range::<&[u8], _>(prefix.as_slice()..),
        };
        iter.take_while(move |item| match item {
            Ok((key, _)) => key.starts_with(&prefix),
            Err(_) => true,
        })
        .map(|item| item.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(StoreError::from))
    }

    /// A number never returned before by this store, across restarts and crashes.
    pub fn generate_id(&self) -> Result<u64, StoreError> {
        Ok(self.inner.db.generate_id()?)
    }

    /// Leases a pack for one upload's frames; return it with [`PackWriter::release`] or
    /// [`PackWriter::rollback`]. A dropped writer rolls back.
    pub fn lease_pack(&self) -> Result<PackWriter, StoreError> {
        self.check_writable()?;
        let pool = &self.inner.packs;
        let idle = pool.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let pack = match idle {
            Some(pack) => pack,
            None => pool.create()?,
        };
        Ok(PackWriter { store: self.clone(), start: pack.length, pack: Some(pack) })
    }

    /// Reads `length` bytes at `offset` of a pack; an error if the pack is shorter.
    pub fn read_frame(&self, pack: u32, offset: u64, length: u32) -> Result<Vec<u8>, StoreError> {
        let path = self.inner.packs.path(pack);
        let file = File::open(&path).map_err(io_error(&path))?;
        let mut buffer = vec![0u8; length as usize];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut buffer, offset).map_err(io_error(&path))?;
        Ok(buffer)
    }

    /// The path of a pack file, for tests and operators.
    pub fn pack_path(&self, pack: u32) -> PathBuf {
        self.inner.packs.path(pack)
    }

    /// Returns once everything written before the call is on stable storage (group commit).
    pub fn sync(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        inner.durability.run(|| {
            inner.db.flush()?;
            sync_file(&inner.directory.join("db"))?;
            sync_new_blobs(&inner.directory.join("blobs"), &inner.durability.synced_blobs)
        })
    }

    /// BLAKE3 over every key and value of both spaces, in order: two stores hold the same data exactly
    /// when their digests match. A full scan, for tests and backup checks.
    pub fn state_digest(&self) -> Result<[u8; 32], StoreError> {
        let mut hasher = blake3::Hasher::new();
        for item in self.inner.catalog.iter() {
            let (key, value) = item?;
            hasher.update(&(key.len() as u64).to_be_bytes());
            hasher.update(&key);
            hasher.update(&(value.len() as u64).to_be_bytes());
            hasher.update(&value);
        }
        let directory = &self.inner.packs.directory;
        let mut names: Vec<_> = std::fs::read_dir(directory)
            .map_err(io_error(directory))?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(io_error(directory))?;
        names.sort();
        for path in names {
            // An empty pack (created for an upload that was then rolled back) holds nothing.
            if std::fs::metadata(&path).map_err(io_error(&path))?.len() == 0 {
                continue;
            }
            hasher.update(path.file_name().map(|n| n.as_encoded_bytes()).unwrap_or_default());
            let mut file = File::open(&path).map_err(io_error(&path))?;
            hasher.update_reader(&mut file).map_err(io_error(&path))?;
        }
        Ok(*hasher.finalize().as_bytes())
    }

    /// Bytes the catalog and the packs use on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        let directory = &self.inner.packs.directory;
        let mut total = self.inner.db.size_on_disk()?;
        for entry in std::fs::read_dir(directory).map_err(io_error(directory))? {
            total += entry.and_then(|e| e.metadata()).map_err(io_error(directory))?.len();
        }
        Ok(total)
    }

    pub fn directory(&self) -> &Path {
        &self.inner.directory
    }
}

fn sync_file(path: &Path) -> Result<(), StoreError> {
    File::open(path).and_then(|file| file.sync_all()).map_err(io_error(path))
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
        sync_file(blobs)?;
    }
    *synced = present;
    Ok(())
}

impl PackPool {
    fn path(&self, id: u32) -> PathBuf {
        self.directory.join(format!("{id:08}.pack"))
    }

    fn create(&self) -> Result<OpenPack, StoreError> {
        let mut next_id = self.next_id.lock().unwrap_or_else(|p| p.into_inner());
        let id = *next_id;
        let path = self.path(id);
        let file =
            std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path).map_err(io_error(&path))?;
        // The new name must survive a crash before anything in it is committed.
        sync_file(&self.directory)?;
        *next_id = id + 1;
        Ok(OpenPack { id, file, length: 0 })
    }
}

/// Cuts every pack back to its committed extent (removing packs with none) and opens the pool.
fn recover_packs(directory: &Path, catalog: &sled::Tree) -> Result<PackPool, StoreError> {
    std::fs::create_dir_all(directory).map_err(io_error(directory))?;
    let mut committed = std::collections::HashMap::new();
    for item in catalog.scan_prefix(PACK_EXTENT_PREFIX) {
        let (key, value) = item?;
        let id = key.get(PACK_EXTENT_PREFIX.len()..).and_then(|b| b.try_into().ok()).map(u32::from_be_bytes);
        let end = value.as_ref().try_into().ok().map(u64::from_be_bytes);
        match (id, end) {
            (Some(id), Some(end)) => committed.insert(id, end),
            _ => return Err(StoreError::Engine("malformed pack extent in the catalog".into())),
        };
    }
    let pool = PackPool { directory: directory.to_owned(), idle: Mutex::new(Vec::new()), next_id: Mutex::new(0) };
    let mut highest = None;
    for entry in std::fs::read_dir(directory).map_err(io_error(directory))? {
        let path = entry.map_err(io_error(directory))?.path();
        let Some(id) = path.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        highest = highest.max(Some(id));
        let end = committed.get(&id).copied().unwrap_or(0);
        let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).map_err(io_error(&path))?;
        let length = file.metadata().map_err(io_error(&path))?.len();
        if length < end {
            return Err(StoreError::Engine(format!(
                "pack {} is {length} bytes but the catalog committed {end}: committed content is missing",
                path.display()
            )));
        }
        if length > end {
            file.set_len(end).map_err(io_error(&path))?;
            file.sync_all().map_err(io_error(&path))?;
        }
        if end < PACK_SIZE_BYTES_TARGET {
            pool.idle.lock().unwrap_or_else(|p| p.into_inner()).push(OpenPack { id, file, length: end });
        }
    }
    if let Some((id, end)) = committed.iter().find(|(id, end)| **end > 0 && !pool.path(**id).exists()) {
        return Err(StoreError::Engine(format!(
            "pack {} is missing but the catalog committed {end} bytes in it",
            pool.path(*id).display()
        )));
    }
    *pool.next_id.lock().unwrap_or_else(|p| p.into_inner()) =
        highest.max(committed.keys().max().copied()).map_or(0, |id| id + 1);
    Ok(pool)
}

/// One upload's exclusive lease on a pack.
pub struct PackWriter {
    store: Store,
    pack: Option<OpenPack>,
    /// The pack's length when leased: where this upload's frames begin.
    start: u64,
}

impl PackWriter {
    fn open(&mut self) -> &mut OpenPack {
        self.pack.as_mut().expect("a pack writer holds its pack until released")
    }

    pub fn pack_id(&self) -> u32 {
        self.pack.as_ref().map_or(0, |p| p.id)
    }

    pub fn start(&self) -> u64 {
        self.start
    }

    /// The pack's length after everything appended so far.
    pub fn end(&self) -> u64 {
        self.pack.as_ref().map_or(self.start, |p| p.length)
    }

    /// Appends bytes; returns the offset they start at.
    pub fn append(&mut self, bytes: &[u8]) -> Result<u64, StoreError> {
        self.store.check_writable()?;
        let path = self.store.inner.packs.path(self.pack_id());
        let pack = self.open();
        let offset = pack.length;
        std::os::unix::fs::FileExt::write_all_at(&pack.file, bytes, offset).map_err(io_error(&path))?;
        pack.length += bytes.len() as u64;
        Ok(offset)
    }

    /// Makes everything appended durable. Call before committing a manifest that points here.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        let path = self.store.inner.packs.path(self.pack_id());
        let result = self.open().file.sync_data().map_err(io_error(&path));
        if result.is_err() {
            self.store.inner.durability.poisoned.store(true, Ordering::Release);
        }
        result
    }

    /// Returns the pack to the pool, keeping what was appended (its extent must be committed).
    pub fn release(mut self) {
        if let Some(pack) = self.pack.take() {
            if pack.length < PACK_SIZE_BYTES_TARGET {
                self.store.inner.packs.idle.lock().unwrap_or_else(|p| p.into_inner()).push(pack);
            }
        }
    }

    /// Cuts the pack back to where this upload began and returns it to the pool.
    pub fn rollback(mut self) -> Result<(), StoreError> {
        self.rollback_in_place()
    }

    fn rollback_in_place(&mut self) -> Result<(), StoreError> {
        let Some(mut pack) = self.pack.take() else { return Ok(()) };
        let path = self.store.inner.packs.path(pack.id);
        pack.file.set_len(self.start).map_err(io_error(&path))?;
        pack.length = self.start;
        self.store.inner.packs.idle.lock().unwrap_or_else(|p| p.into_inner()).push(pack);
        Ok(())
    }
}

impl Drop for PackWriter {
    fn drop(&mut self) {
        // An abandoned upload: cut its bytes off. If even that fails, the pack is not reused in this
        // process, and the next open cuts it back to its committed extent.
        let _ = self.rollback_in_place();
    }
}

/// One sync at a time; callers that arrive while one runs share the next one.
#[derive(Default)]
struct GroupSync {
    state: Mutex<SyncState>,
    finished: Condvar,
    poisoned: AtomicBool,
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
            if self.poisoned.load(Ordering::Acquire) {
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
                self.poisoned.store(true, Ordering::Release);
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

    #[test]
    fn batches_scans_and_reopen() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(io_error(Path::new("tmp")))?;
        {
            let store = Store::open(dir.path(), &StoreConfig::default())?;
            let mut batch = Batch::default();
            batch.insert(b"a/1".to_vec(), b"one".to_vec());
            batch.insert(b"a/2".to_vec(), b"two".to_vec());
            batch.insert(b"b/1".to_vec(), b"other".to_vec());
            store.commit(batch)?;
            store.sync()?;
        }
        let store = Store::open(dir.path(), &StoreConfig::default())?;
        let all: Vec<_> = store.scan_prefix(b"a/", None).collect::<Result<_, _>>()?;
        assert_eq!(all.len(), 2);
        let after: Vec<_> = store.scan_prefix(b"a/", Some(b"a/1")).collect::<Result<_, _>>()?;
        assert_eq!(after, vec![(b"a/2".to_vec(), b"two".to_vec())]);
        assert!(store.contains(b"b/1")?);
        assert!(!store.contains(b"b/2")?);
        Ok(())
    }

    #[test]
    fn packs_keep_committed_extents_and_lose_the_rest_at_open() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(io_error(Path::new("tmp")))?;
        let pack;
        {
            let store = Store::open(dir.path(), &StoreConfig::default())?;
            let mut writer = store.lease_pack()?;
            pack = writer.pack_id();
            assert_eq!(writer.append(b"committed")?, 0);
            writer.sync()?;
            let mut batch = Batch::default();
            batch.commit_pack_extent(pack, writer.end());
            store.commit(batch)?;
            store.sync()?;
            writer.release();
            let writer = store.lease_pack()?;
            assert_eq!(writer.pack_id(), pack, "an idle pack is reused");
        }
        // What a crash mid-upload leaves: bytes past the committed extent.
        let path = dir.path().join("packs").join(format!("{pack:08}.pack"));
        let mut file = std::fs::OpenOptions::new().append(true).open(&path).map_err(io_error(&path))?;
        std::io::Write::write_all(&mut file, b"uncommitted").map_err(io_error(&path))?;
        let store = Store::open(dir.path(), &StoreConfig::default())?;
        assert_eq!(std::fs::metadata(store.pack_path(pack)).map_err(io_error(dir.path()))?.len(), 9);
        assert_eq!(store.read_frame(pack, 0, 9)?, b"committed");
        assert!(store.read_frame(pack, 0, 10).is_err());
        drop(store);
        // A pack that holds committed data must not silently disappear.
        std::fs::rename(&path, dir.path().join("moved")).map_err(io_error(&path))?;
        let error = Store::open(dir.path(), &StoreConfig::default()).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("is missing"), "{error}");
        std::fs::rename(dir.path().join("moved"), &path).map_err(io_error(&path))?;
        let store = Store::open(dir.path(), &StoreConfig::default())?;
        // A rolled-back upload leaves nothing either.
        let mut writer = store.lease_pack()?;
        writer.append(b"rejected")?;
        writer.rollback()?;
        assert_eq!(std::fs::metadata(store.pack_path(pack)).map_err(io_error(dir.path()))?.len(), 9);
        Ok(())
    }

    #[test]
    fn concurrent_syncs_share_work_and_all_return() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(io_error(Path::new("tmp")))?;
        let store = Store::open(dir.path(), &StoreConfig::default())?;
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8u8)
                .map(|i| {
                    let store = store.clone();
                    scope.spawn(move || {
                        let mut batch = Batch::default();
                        batch.insert(vec![i], vec![i]);
                        store.commit(batch)?;
                        store.sync()
                    })
                })
                .collect();
            for handle in handles {
                assert!(matches!(handle.join(), Ok(Ok(()))));
            }
        });
        Ok(())
    }
}
