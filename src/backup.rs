//! Online backups and their restore (`kho backup`, `kho restore`; docs/OPERATIONS.md).
//!
//! A backup is a folder: the store's journal and packs as far as one consistent snapshot reaches
//! ([`crate::store::embedded::snapshot`], read from the files while the server goes on writing them:
//! nothing is paused), the vault's key files and its newest checkpoint, and `kho-backup.json`, the
//! manifest: the snapshot (log size, journal batches, pack extents), the checkpoint the copy is
//! consistent with, and for every file its length and the BLAKE3 of each stretch copied. Taken again into
//! the same folder, a backup copies only what the journal and the packs gained since (both are
//! append-only), after checking that the store still extends what was copied; the manifest is replaced
//! last, so an interrupted run leaves the previous backup whole.
//!
//! A restore checks every stretch's hash while it copies into a folder beside the target, renames it
//! into place only when all of it matched, and opens the vault there, rebuilding the catalog from the
//! journal; opening checks that the log has the checkpoint's root at its size. Nothing is written into
//! the target before every byte has been checked.

use std::io::{Read as _, Seek as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::store::Snapshot;
use crate::vault::{
    OpenError, Vault, VaultConfig, KEPT_CHECKPOINT_FILE, STORE_DIRECTORY, VAULT_CERTIFICATE_FILE, VAULT_KEY_FILE,
    VAULT_PUBLIC_KEY_FILE,
};

/// The manifest's file name in a backup folder.
pub const MANIFEST_FILE: &str = "kho-backup.json";
/// The manifest's `format`.
pub const MANIFEST_FORMAT: &str = "kho-backup";
/// The manifest version this build writes and reads.
pub const MANIFEST_VERSION: u32 = 1;
/// Bytes at the end of what was copied before that an incremental run compares again, source against
/// backup, before appending (a store replaced or rewritten in place is refused, not mixed in).
pub const TAIL_CHECK_BYTES: u64 = 64 * 1024;
/// Bytes read and written at a time.
const COPY_CHUNK_BYTES: usize = 1024 * 1024;
/// Files beside the store that a backup copies whole each time, if present (the first, the vault's
/// secret key, is required: a vault restored without it could not go on signing as itself).
const WHOLE_FILES: [&str; 4] = [VAULT_KEY_FILE, VAULT_PUBLIC_KEY_FILE, VAULT_CERTIFICATE_FILE, KEPT_CHECKPOINT_FILE];

/// A backup's manifest (`kho-backup.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    /// The vault's first public key (hex; its current one until it rotates): a backup folder holds one
    /// vault.
    pub vault_key: String,
    /// When the newest run read the store (Unix milliseconds).
    pub taken_at_ms: i64,
    /// How many runs made this folder (1: a full backup; more: incremental runs since).
    pub runs: u32,
    pub snapshot: Snapshot,
    /// The newest signed checkpoint when the run began; the copied log extends it.
    pub checkpoint: Option<CheckpointRef>,
    pub files: Vec<FileEntry>,
}

/// A checkpoint by size and root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRef {
    pub size: u64,
    /// Hex.
    pub root: String,
}

/// A file of the backup, relative to its folder (and to the data folder it restores into).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub length: u64,
    /// Stretches copied, in order, covering `0..length`.
    pub segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub offset: u64,
    pub length: u64,
    /// BLAKE3 of those bytes, hex.
    pub blake3: String,
}

/// What a backup run did.
#[derive(Debug, Clone)]
pub struct BackupReport {
    pub manifest: Manifest,
    /// Bytes copied by this run.
    pub bytes_copied: u64,
    /// Bytes the backup holds.
    pub bytes_total: u64,
    /// Whether this run added to an earlier backup.
    pub incremental: bool,
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    pub manifest: Manifest,
    pub bytes_restored: u64,
    /// Journal batches the catalog was rebuilt from.
    pub batches_replayed: u64,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0} holds no vault: {1}")]
    NotAVault(PathBuf, String),
    #[error("{path} is not a usable backup manifest: {reason}")]
    Manifest { path: PathBuf, reason: String },
    #[error("{0} already holds another vault's backup (key {1}); back up into a new folder")]
    OtherVault(PathBuf, String),
    #[error("the store no longer extends this backup: {0}. Nothing was changed; back up into a new folder")]
    Diverged(String),
    #[error("the backup is damaged: {0}. Nothing was restored")]
    Damaged(String),
    #[error("{0} is not empty; restore into a new or empty folder")]
    TargetNotEmpty(PathBuf),
    #[error("the store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("the restored vault does not open: {0}")]
    Open(#[from] OpenError),
    #[error("the restored vault {0}")]
    Restored(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io { path: path.to_owned(), source }
}

/// Backs up the vault in `data_dir` into `destination` (created if missing; an earlier backup of the
/// same vault there is extended). `progress(copied, to_copy)` follows the bytes.
pub fn backup(
    data_dir: &Path,
    destination: &Path,
    mut progress: impl FnMut(u64, u64),
) -> Result<BackupReport, BackupError> {
    let key_path = data_dir.join(VAULT_PUBLIC_KEY_FILE);
    let key = crate::keys::read_public_key(&key_path)
        .map_err(|error| BackupError::NotAVault(data_dir.to_owned(), error.to_string()))?;
    // A backup folder holds one vault, named by its first key (the same across key rotations).
    let first_key = crate::vault::first_key(data_dir)
        .map_err(|error| BackupError::NotAVault(data_dir.to_owned(), error.to_string()))?;
    let vault_key = hex::encode(first_key.as_ref().unwrap_or(&key).raw_bytes());
    // The files beside the store first, the checkpoint among them: everything it covers was durable,
    // so in the journal, before it was written.
    let mut whole: Vec<(String, Vec<u8>)> = Vec::new();
    let key_files = crate::vault::key_history_files(data_dir).map_err(io(data_dir))?;
    for name in WHOLE_FILES.iter().map(|name| (*name).to_owned()).chain(key_files) {
        if let Some(bytes) = crate::files::read_if_exists(&data_dir.join(&name)).map_err(io(&data_dir.join(&name)))? {
            whole.push((name, bytes));
        }
    }
    if whole.first().is_none_or(|(name, _)| name != VAULT_KEY_FILE) {
        return Err(BackupError::NotAVault(data_dir.to_owned(), format!("its secret key {VAULT_KEY_FILE} is missing")));
    }
    let checkpoint = match whole.iter().find(|(name, _)| name == KEPT_CHECKPOINT_FILE) {
        Some((_, note)) => Some(checkpoint_of(note, &key, &data_dir.join(KEPT_CHECKPOINT_FILE))?),
        None => None,
    };
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(destination).map_err(io(destination))?;
    let manifest_path = destination.join(MANIFEST_FILE);
    let previous = read_manifest(&manifest_path)?;
    if let Some(previous) = &previous {
        if previous.vault_key != vault_key {
            return Err(BackupError::OtherVault(destination.to_owned(), previous.vault_key.clone()));
        }
    }
    let taken_at_ms = crate::ids::now_unix_ms();
    let store = data_dir.join(STORE_DIRECTORY);
    let snapshot = crate::store::embedded::snapshot(&store, previous.as_ref().map(|m| &m.snapshot))?;
    if let Some(checkpoint) = &checkpoint {
        if snapshot.log_size < checkpoint.size {
            return Err(BackupError::Diverged(format!(
                "the journal holds {} log entries but the checkpoint covers {}",
                snapshot.log_size, checkpoint.size
            )));
        }
    }
    let appended: Vec<(String, u64)> = snapshot
        .files()
        .into_iter()
        .map(|(path, length)| (Path::new(STORE_DIRECTORY).join(path).to_string_lossy().into_owned(), length))
        .collect();
    let earlier = |path: &str| previous.iter().flat_map(|m| &m.files).find(|f| f.path == path);
    let to_copy: u64 =
        appended.iter().map(|(path, length)| length - earlier(path).map_or(0, |f| f.length)).sum::<u64>()
            + whole.iter().map(|(_, bytes)| bytes.len() as u64).sum::<u64>();
    let mut copied = 0;
    progress(0, to_copy);
    let mut files = Vec::new();
    // Check every append-only file against what was copied before, then append.
    for (path, length) in &appended {
        let earlier = earlier(path);
        check_extends(&data_dir.join(path), &destination.join(path), earlier, *length)?;
    }
    for (path, length) in appended {
        let mut entry =
            earlier(&path).cloned().unwrap_or(FileEntry { path: path.clone(), length: 0, segments: vec![] });
        if length > entry.length {
            let segment = append(&data_dir.join(&path), &destination.join(&path), entry.length, length, |n| {
                copied += n;
                progress(copied, to_copy);
            })?;
            entry.segments.push(segment);
            entry.length = length;
        }
        files.push(entry);
    }
    for (name, bytes) in &whole {
        let path = destination.join(name);
        create_parent(&path)?;
        write_whole(&path, bytes)?;
        copied += bytes.len() as u64;
        progress(copied, to_copy);
        let segment =
            Segment { offset: 0, length: bytes.len() as u64, blake3: blake3::hash(bytes).to_hex().to_string() };
        files.push(FileEntry { path: name.clone(), length: bytes.len() as u64, segments: vec![segment] });
    }
    for directory in [destination.join(STORE_DIRECTORY).join("packs"), destination.join(STORE_DIRECTORY)] {
        if directory.exists() {
            sync_directory(&directory)?;
        }
    }
    let manifest = Manifest {
        format: MANIFEST_FORMAT.to_owned(),
        version: MANIFEST_VERSION,
        vault_key,
        taken_at_ms,
        runs: previous.as_ref().map_or(1, |m| m.runs + 1),
        snapshot,
        checkpoint,
        files,
    };
    let text = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| BackupError::Manifest { path: manifest_path.clone(), reason: e.to_string() })?;
    crate::files::replace_durably(&manifest_path, &text).map_err(io(&manifest_path))?;
    let bytes_total = manifest.files.iter().map(|f| f.length).sum();
    Ok(BackupReport { manifest, bytes_copied: copied, bytes_total, incremental: previous.is_some() })
}

/// Restores the backup in `source` into `config.data_dir` (which must not exist or be empty) and opens
/// it. `progress(restored, total)` follows the bytes.
pub fn restore(
    source: &Path,
    mut config: VaultConfig,
    mut progress: impl FnMut(u64, u64),
) -> Result<(Vault, RestoreReport), BackupError> {
    let manifest_path = source.join(MANIFEST_FILE);
    let manifest = read_manifest(&manifest_path)?
        .ok_or_else(|| BackupError::Manifest { path: manifest_path.clone(), reason: "there is no such file".into() })?;
    let target = config.data_dir.clone();
    if std::fs::read_dir(&target).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(BackupError::TargetNotEmpty(target));
    }
    let mut staging = target.as_os_str().to_owned();
    staging.push(".restoring");
    let staging = PathBuf::from(staging);
    if staging.exists() {
        return Err(BackupError::TargetNotEmpty(staging));
    }
    let total: u64 = manifest.files.iter().map(|f| f.length).sum();
    let mut restored = 0;
    progress(0, total);
    let copied = (|| {
        for file in &manifest.files {
            let relative = safe_relative(&file.path)
                .ok_or_else(|| BackupError::Damaged(format!("the manifest names the file {:?}", file.path)))?;
            copy_checked(&source.join(relative), &staging.join(relative), file, |n| {
                restored += n;
                progress(restored, total);
            })?;
        }
        for directory in [staging.join(STORE_DIRECTORY).join("packs"), staging.join(STORE_DIRECTORY), staging.clone()] {
            if directory.exists() {
                sync_directory(&directory)?;
            }
        }
        Ok(())
    })();
    if let Err(error) = copied {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(error);
    }
    if target.exists() {
        std::fs::remove_dir(&target).map_err(io(&target))?;
    }
    std::fs::rename(&staging, &target).map_err(io(&target))?;
    if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_directory(parent)?;
    }
    // The catalog is rebuilt from the journal; opening checks the log against the kept checkpoint.
    config.store.recover = true;
    let vault = Vault::open(config)?;
    let first_key = vault.retired_keys().first().map_or_else(|| vault.public_key(), |first| first.key.clone());
    if hex::encode(first_key.raw_bytes()) != manifest.vault_key {
        return Err(BackupError::Restored("has another key than the backup's manifest names".into()));
    }
    if vault.log_size() != manifest.snapshot.log_size {
        return Err(BackupError::Restored(format!(
            "has {} log entries; the backup's manifest says {}",
            vault.log_size(),
            manifest.snapshot.log_size
        )));
    }
    let batches_replayed = vault.open_report().batches_replayed;
    Ok((vault, RestoreReport { manifest, bytes_restored: restored, batches_replayed }))
}

/// The checkpoint a kept checkpoint note (`path`) holds, verified under the vault key.
fn checkpoint_of(note: &[u8], key: &crate::statement::PublicKey, path: &Path) -> Result<CheckpointRef, BackupError> {
    let unusable = |reason: String| BackupError::Diverged(format!("the kept checkpoint {}: {reason}", path.display()));
    let text = std::str::from_utf8(note).map_err(|_| unusable("not text".into()))?;
    let origin = text.lines().next().unwrap_or_default();
    let checkpoint = crate::log::checkpoint::open(text, origin, key).map_err(|e| unusable(e.to_string()))?;
    Ok(CheckpointRef { size: checkpoint.size, root: hex::encode(checkpoint.root) })
}

fn read_manifest(path: &Path) -> Result<Option<Manifest>, BackupError> {
    let Some(bytes) = crate::files::read_if_exists(path).map_err(io(path))? else { return Ok(None) };
    let invalid = |reason: String| BackupError::Manifest { path: path.to_owned(), reason };
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
    if value["format"] != MANIFEST_FORMAT {
        return Err(invalid(format!("its format is not {MANIFEST_FORMAT:?}")));
    }
    if value["version"].as_u64() != Some(u64::from(MANIFEST_VERSION)) {
        return Err(invalid(format!(
            "version {} (this build reads version {MANIFEST_VERSION}; use the Kho release that wrote it)",
            value["version"]
        )));
    }
    serde_json::from_value(value).map(Some).map_err(|e| invalid(e.to_string()))
}

/// Checks that `source` (to be copied up to `length`) still begins with what `earlier` copied into
/// `copy`, comparing the last [`TAIL_CHECK_BYTES`] of it, and cuts what an interrupted run left past it.
fn check_extends(source: &Path, copy: &Path, earlier: Option<&FileEntry>, length: u64) -> Result<(), BackupError> {
    let Some(earlier) = earlier.filter(|e| e.length > 0) else {
        if copy.exists() {
            // An interrupted first run: nothing of it is in the manifest.
            std::fs::remove_file(copy).map_err(io(copy))?;
        }
        return Ok(());
    };
    if length < earlier.length {
        return Err(BackupError::Diverged(format!(
            "{} is {length} bytes, shorter than the {} copied before",
            source.display(),
            earlier.length
        )));
    }
    let copy_file = std::fs::OpenOptions::new().read(true).write(true).open(copy).map_err(io(copy))?;
    let copy_length = copy_file.metadata().map_err(io(copy))?.len();
    if copy_length < earlier.length {
        return Err(BackupError::Damaged(format!(
            "{} is {copy_length} bytes; the manifest says {}",
            copy.display(),
            earlier.length
        )));
    }
    let start = earlier.length.saturating_sub(TAIL_CHECK_BYTES);
    let read_range = |path: &Path| -> Result<Vec<u8>, BackupError> {
        let mut file = std::fs::File::open(path).map_err(io(path))?;
        file.seek(std::io::SeekFrom::Start(start)).map_err(io(path))?;
        let mut bytes = vec![0; (earlier.length - start) as usize];
        file.read_exact(&mut bytes).map_err(io(path))?;
        Ok(bytes)
    };
    if read_range(source)? != read_range(copy)? {
        return Err(BackupError::Diverged(format!(
            "{} differs from its copy before byte {}",
            source.display(),
            earlier.length
        )));
    }
    if copy_length > earlier.length {
        copy_file.set_len(earlier.length).map_err(io(copy))?;
    }
    Ok(())
}

/// Appends `source[from..to]` to `copy` (which holds `from` bytes), durably; the segment it added.
fn append(source: &Path, copy: &Path, from: u64, to: u64, mut copied: impl FnMut(u64)) -> Result<Segment, BackupError> {
    create_parent(copy)?;
    let mut input = std::fs::File::open(source).map_err(io(source))?;
    input.seek(std::io::SeekFrom::Start(from)).map_err(io(source))?;
    let mut output = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(copy).map_err(io(copy))?;
    let blake3 = copy_hashed(&mut input, &mut output, to - from, |e| io(source)(e), copy, &mut copied)?;
    output.sync_all().map_err(io(copy))?;
    Ok(Segment { offset: from, length: to - from, blake3 })
}

/// Copies the next `length` bytes of `input` to `output` (the file at `to`), a chunk at a time, and
/// returns their BLAKE3 (hex); `read_error` says what a failed read means.
fn copy_hashed(
    input: &mut std::fs::File,
    output: &mut std::fs::File,
    length: u64,
    read_error: impl Fn(std::io::Error) -> BackupError,
    to: &Path,
    copied: &mut impl FnMut(u64),
) -> Result<String, BackupError> {
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; COPY_CHUNK_BYTES.min(usize::try_from(length).unwrap_or(usize::MAX))];
    let mut left = length;
    while left > 0 {
        let count = buffer.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        input.read_exact(&mut buffer[..count]).map_err(&read_error)?;
        hasher.update(&buffer[..count]);
        output.write_all(&buffer[..count]).map_err(io(to))?;
        left -= count as u64;
        copied(count as u64);
    }
    Ok(hasher.finalize().to_hex().to_string())
}

fn create_parent(path: &Path) -> Result<(), BackupError> {
    match path.parent() {
        Some(parent) => std::fs::DirBuilder::new().recursive(true).mode(0o700).create(parent).map_err(io(parent)),
        None => Ok(()),
    }
}

/// Replaces `path` with `bytes`, owner-only (the folder holds the vault's secret key).
fn write_whole(path: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    crate::files::replace_durably(path, bytes).map_err(io(path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io(path))
}

/// Copies `entry` from `from` to `to`, checking each segment's hash as it goes.
fn copy_checked(from: &Path, to: &Path, entry: &FileEntry, mut copied: impl FnMut(u64)) -> Result<(), BackupError> {
    create_parent(to)?;
    let mut input = std::fs::File::open(from).map_err(|e| BackupError::Damaged(format!("{}: {e}", from.display())))?;
    let mut output = std::fs::OpenOptions::new().create_new(true).write(true).mode(0o600).open(to).map_err(io(to))?;
    let mut position = 0;
    for segment in &entry.segments {
        if segment.offset != position {
            return Err(BackupError::Damaged(format!("{}: the manifest's stretches leave a gap", entry.path)));
        }
        let end = position + segment.length;
        let short = |e| BackupError::Damaged(format!("{} ends before byte {end}: {e}", from.display()));
        if copy_hashed(&mut input, &mut output, segment.length, short, to, &mut copied)? != segment.blake3 {
            return Err(BackupError::Damaged(format!(
                "{} bytes {position}..{end} do not have the hash the manifest names",
                from.display()
            )));
        }
        position = end;
    }
    if position != entry.length {
        return Err(BackupError::Damaged(format!("{}: the manifest's stretches do not cover its length", entry.path)));
    }
    output.sync_all().map_err(io(to))
}

/// `path` if it is a plain relative path inside the folder (no `..`, no root).
fn safe_relative(path: &str) -> Option<&Path> {
    let path = Path::new(path);
    path.components().all(|c| matches!(c, std::path::Component::Normal(_))).then_some(path)
}

fn sync_directory(path: &Path) -> Result<(), BackupError> {
    std::fs::File::open(path).and_then(|file| file.sync_all()).map_err(io(path))
}
