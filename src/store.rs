//! The storage seam: ordered key-value spaces with atomic batches and durable group commit.
//!
//! This is the only module that names sled. The rest of Kho sees two key spaces ([`Space::Catalog`]
//! for small values, [`Space::Frames`] for content frames), atomic batches on the catalog, prefix
//! scans, and [`Store::sync`], which returns only when everything written before it would survive a
//! power cut.
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

/// sled's segment size. Values above a quarter of it become separate blob files; content frames are
/// kept well below that (see `content::FRAME_SIZE_BYTES`).
pub const SEGMENT_SIZE_BYTES: usize = 512 * 1024;
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

/// The key spaces of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    /// Records, indexes, manifests, receipts, certificates: small values, changed in atomic batches.
    Catalog,
    /// Content frames, written one by one while a document streams in.
    Frames,
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
    frames: sled::Tree,
    directory: PathBuf,
    durability: GroupSync,
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
        let frames = db.open_tree("frames")?;
        let store = Store {
            inner: Arc::new(Inner {
                db,
                catalog,
                frames,
                directory: directory.to_owned(),
                durability: GroupSync::default(),
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

    fn tree(&self, space: Space) -> &sled::Tree {
        match space {
            Space::Catalog => &self.inner.catalog,
            Space::Frames => &self.inner.frames,
        }
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        if self.inner.durability.poisoned.load(Ordering::Acquire) {
            return Err(StoreError::Poisoned);
        }
        Ok(())
    }

    pub fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree(space).get(key)?.map(|value| value.to_vec()))
    }

    pub fn contains(&self, space: Space, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.tree(space).contains_key(key)?)
    }

    /// Writes one value; durable only after a later [`Store::sync`].
    pub fn put(&self, space: Space, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.check_writable()?;
        self.tree(space).insert(key, value)?;
        Ok(())
    }

    /// Removes every key that starts with `prefix`.
    pub fn remove_prefix(&self, space: Space, prefix: &[u8]) -> Result<(), StoreError> {
        self.check_writable()?;
        let tree = self.tree(space);
        let mut batch = sled::Batch::default();
        for item in tree.scan_prefix(prefix).keys() {
            batch.remove(item?);
        }
        tree.apply_batch(batch)?;
        Ok(())
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
        space: Space,
        prefix: &[u8],
        after: Option<&[u8]>,
    ) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), StoreError>> + 'a {
        let tree = self.tree(space);
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
        for (tag, tree) in [(b"c", &self.inner.catalog), (b"f", &self.inner.frames)] {
            for item in tree.iter() {
                let (key, value) = item?;
                hasher.update(tag);
                hasher.update(&(key.len() as u64).to_be_bytes());
                hasher.update(&key);
                hasher.update(&(value.len() as u64).to_be_bytes());
                hasher.update(&value);
            }
        }
        Ok(*hasher.finalize().as_bytes())
    }

    /// Bytes the engine uses on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.inner.db.size_on_disk()?)
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
            store.put(Space::Frames, b"f", b"frame")?;
            store.sync()?;
        }
        let store = Store::open(dir.path(), &StoreConfig::default())?;
        let all: Vec<_> = store.scan_prefix(Space::Catalog, b"a/", None).collect::<Result<_, _>>()?;
        assert_eq!(all.len(), 2);
        let after: Vec<_> = store.scan_prefix(Space::Catalog, b"a/", Some(b"a/1")).collect::<Result<_, _>>()?;
        assert_eq!(after, vec![(b"a/2".to_vec(), b"two".to_vec())]);
        assert_eq!(store.get(Space::Frames, b"f")?, Some(b"frame".to_vec()));
        store.remove_prefix(Space::Catalog, b"a/")?;
        assert_eq!(store.scan_prefix(Space::Catalog, b"a/", None).count(), 0);
        assert!(store.contains(Space::Catalog, b"b/1")?);
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
                        store.put(Space::Catalog, &[i], &[i])?;
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
