//! Kho's own signing key over the years. The current key is `vault-key.pem`; `retired-keys/` keeps,
//! for every key it replaced, in the order they served (`0001`, `0002`, ...):
//!
//! - `key.pub.pem`: the retired public key;
//! - `handover.note`: the checkpoint of the whole log at the moment of the rotation with an extension
//!   line naming the successor, signed by the retired key and then by the successor (a C2SP signed
//!   note with two signatures), so a verifier that trusts either key can follow to the other; its size
//!   is where the retired key stopped: it receipted log entries below it and signed checkpoints up to
//!   it;
//! - `vault-key.kho-cert`: its trust anchor's certificate, if it had one;
//! - `share-token.key`: the key its share links were made with (owner-only), so links survive.
//!
//! A rotation (`kho rotate-key`, with the server stopped) signs the handover, writes the folder as
//! `NNNN.partial` and renames it into place: that rename is the commit. Then the prepared next key
//! (`vault-key.next.pem`, made by `kho rotate-key --prepare` so witnesses and the anchor can be told
//! first) replaces `vault-key.pem`, with its certificate `vault-key.next.kho-cert` if the anchor gave
//! one. A crash after the commit is finished at the next open; a crash before it leaves the vault as
//! it was. The retired secret key is not kept.

use std::path::{Path, PathBuf};

use super::{default_log_origin, OpenError, StorageError, Vault, VaultConfig, VAULT_CERTIFICATE_FILE, VAULT_KEY_FILE};
use crate::keys::{self, KeyFileError};
use crate::log::{self, checkpoint, Checkpoint};
use crate::statement::{PublicKey, Signed, VaultKeyCertificate};

/// The folder of retired keys inside the data folder.
pub const RETIRED_KEYS_DIRECTORY: &str = "retired-keys";
/// The prepared successor of the vault key (`kho rotate-key --prepare`).
pub const NEXT_KEY_FILE: &str = "vault-key.next.pem";
pub const NEXT_PUBLIC_KEY_FILE: &str = "vault-key.next.pub.pem";
/// A trust anchor's certificate of the prepared key, installed with it by the rotation.
pub const NEXT_CERTIFICATE_FILE: &str = "vault-key.next.kho-cert";
const PUBLIC_KEY_FILE: &str = "key.pub.pem";
const HANDOVER_FILE: &str = "handover.note";
const SHARE_KEY_FILE: &str = "share-token.key";
const PARTIAL_SUFFIX: &str = ".partial";
/// Retired keys a vault may have (a key a year for centuries).
pub const RETIRED_KEYS_MAX: usize = 9999;

/// A key the vault signed with before.
#[derive(Debug, Clone)]
pub struct RetiredKey {
    pub key: PublicKey,
    /// The log size at which it handed over: it receipted entries below this size (from its
    /// predecessor's) and signed checkpoints up to it.
    pub until_size: u64,
    /// The checkpoint at `until_size` naming its successor, signed by this key and then by the successor.
    pub handover: String,
    pub successor: PublicKey,
    /// Its trust anchor's certificate, if it had one.
    pub certificate: Option<Signed<VaultKeyCertificate>>,
    pub(super) share_key: [u8; 32],
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RotateError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Key(#[from] KeyFileError),
    #[error("cannot write {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the prepared key {0} is already one of this vault's keys; remove it and prepare a new one")]
    NotNew(PathBuf),
    #[error("this vault already has {RETIRED_KEYS_MAX} retired keys")]
    TooMany,
    #[error(transparent)]
    Open(#[from] OpenError),
}

/// What a rotation did.
#[derive(Debug, Clone)]
pub struct Rotation {
    pub retired: PublicKey,
    pub current: PublicKey,
    /// The log size of the handover checkpoint.
    pub size: u64,
    pub handover: String,
    /// Whether a certificate of the new key was installed with it.
    pub certified: bool,
}

/// A prepared next key: its public key and the verifier key witnesses are to be given.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub key: PublicKey,
    pub origin: String,
    pub public_key_file: PathBuf,
    /// Whether it was made now (or had been prepared before).
    pub created: bool,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> RotateError + '_ {
    move |source| RotateError::Io { path: path.to_owned(), source }
}

fn refuse(path: &Path, reason: impl Into<String>) -> OpenError {
    OpenError::KeyHistory { path: path.to_owned(), reason: reason.into() }
}

/// The retired keys in `data_dir`, in the order they served, each checked: its handover verifies
/// under it, and sizes never go down. (That each handover is also signed by its successor is checked
/// by [`check_chain`] once the current key is known.)
pub(super) fn load(data_dir: &Path) -> Result<Vec<RetiredKey>, OpenError> {
    let folder = data_dir.join(RETIRED_KEYS_DIRECTORY);
    let entries = match std::fs::read_dir(&folder) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(refuse(&folder, error.to_string())),
    };
    let mut numbers = Vec::new();
    for entry in entries {
        let name = entry.map_err(|error| refuse(&folder, error.to_string()))?.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(PARTIAL_SUFFIX) {
            continue; // a rotation that never committed; the next one clears it
        }
        let number = (name.len() == 4 && name.bytes().all(|b| b.is_ascii_digit()))
            .then(|| name.parse::<usize>().ok())
            .flatten()
            .ok_or_else(|| refuse(&folder, format!("{name:?} is not a retired key's folder (0001, 0002, ...)")))?;
        numbers.push(number);
    }
    numbers.sort_unstable();
    if numbers.iter().enumerate().any(|(i, n)| *n != i + 1) {
        return Err(refuse(&folder, "the retired keys' folders are not numbered 0001, 0002, ... without gaps"));
    }
    let mut retired: Vec<RetiredKey> = Vec::with_capacity(numbers.len());
    for number in numbers {
        let dir = folder.join(format!("{number:04}"));
        let key = keys::read_public_key(&dir.join(PUBLIC_KEY_FILE)).map_err(|error| refuse(&dir, error.to_string()))?;
        let handover_path = dir.join(HANDOVER_FILE);
        let handover = std::fs::read_to_string(&handover_path).map_err(|e| refuse(&handover_path, e.to_string()))?;
        let (checkpoint, successor) =
            handover_checkpoint(&handover, &key).map_err(|reason| refuse(&handover_path, reason))?;
        if retired.last().is_some_and(|previous| previous.until_size > checkpoint.size) {
            return Err(refuse(&handover_path, "its size is below the previous key's handover"));
        }
        let share_path = dir.join(SHARE_KEY_FILE);
        let share_key = std::fs::read_to_string(&share_path)
            .ok()
            .and_then(|text| hex::decode(text.trim()).ok())
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .ok_or_else(|| refuse(&share_path, "it is not 32 bytes in hex"))?;
        let certificate_path = dir.join(VAULT_CERTIFICATE_FILE);
        let certificate = match crate::files::read_if_exists(&certificate_path) {
            Ok(None) => None,
            Ok(Some(bytes)) => {
                let certificate = Signed::<VaultKeyCertificate>::from_envelope(&bytes)
                    .map_err(|error| refuse(&certificate_path, error.to_string()))?;
                if certificate.body().subject != key || certificate.body().origin != checkpoint.origin {
                    return Err(refuse(&certificate_path, "it certifies another key or log than the retired one"));
                }
                Some(certificate)
            }
            Err(error) => return Err(refuse(&certificate_path, error.to_string())),
        };
        retired.push(RetiredKey { key, until_size: checkpoint.size, handover, successor, certificate, share_key });
    }
    Ok(retired)
}

/// The checkpoint a handover note is of and the successor it names, if `key` handed over in it under
/// the origin it names.
fn handover_checkpoint(handover: &str, key: &PublicKey) -> Result<(Checkpoint, PublicKey), String> {
    let origin = handover.lines().next().unwrap_or_default();
    checkpoint::open_handover(handover, origin, key).map_err(|error| error.to_string())
}

/// Checks that every handover is of the log `origin` and names the key that followed: the next retired
/// key, or `current` for the last.
pub(super) fn check_chain(
    data_dir: &Path,
    retired: &[RetiredKey],
    current: &PublicKey,
    origin: &str,
) -> Result<(), OpenError> {
    for (i, key) in retired.iter().enumerate() {
        let successor = retired.get(i + 1).map_or(current, |next| &next.key);
        let path = data_dir.join(RETIRED_KEYS_DIRECTORY).join(format!("{:04}", i + 1)).join(HANDOVER_FILE);
        // `load` verified both signatures under the origin the note names; it must be this log's.
        if key.handover.lines().next() != Some(origin) {
            return Err(refuse(&path, format!("it is not a checkpoint of log {origin:?}")));
        }
        if &key.successor != successor {
            return Err(refuse(
                &path,
                format!("it names {} as successor, not {}", key.successor.fingerprint(), successor.fingerprint()),
            ));
        }
    }
    Ok(())
}

/// The origin of a vault's log: configured, or derived from its first key.
pub(super) fn origin(config: &VaultConfig, first_key: &PublicKey) -> Result<String, OpenError> {
    match &config.log_origin {
        Some(origin) if checkpoint::is_key_name(origin) => Ok(origin.clone()),
        Some(origin) => Err(OpenError::BadLogOrigin(origin.clone())),
        None => Ok(default_log_origin(first_key)),
    }
}

/// Finishes a rotation that committed (its retired folder is in place) but crashed before the new key
/// was installed: the last retired key is still `vault-key.pem`'s.
pub(super) fn finish_interrupted(data_dir: &Path, retired: &[RetiredKey]) -> Result<(), OpenError> {
    let Some(last) = retired.last() else { return Ok(()) };
    let key_path = data_dir.join(VAULT_KEY_FILE);
    if !key_path.exists() || keys::read_secret_key(&key_path)?.public_key() != last.key {
        return Ok(());
    }
    install_next(data_dir, &last.key, &last.successor)
        .map(|_certified| ())
        .map_err(|error| refuse(&key_path, format!("finishing an interrupted rotation: {error}")))
}

/// Installs the prepared key as the vault key (and its certificate, if the anchor gave one), after the
/// rotation to it committed. Each step can be repeated after a crash.
fn install_next(data_dir: &Path, retired: &PublicKey, successor: &PublicKey) -> Result<bool, RotateError> {
    let next_path = data_dir.join(NEXT_KEY_FILE);
    let next = keys::read_secret_key(&next_path)?;
    if successor != &next.public_key() {
        return Err(RotateError::Io {
            path: next_path,
            source: std::io::Error::other("it is not the successor the handover names"),
        });
    }
    // The retired key's certificate is archived in its folder; the new key has its own or none.
    let certificate_path = data_dir.join(VAULT_CERTIFICATE_FILE);
    if let Some(bytes) = crate::files::read_if_exists(&certificate_path).map_err(io_error(&certificate_path))? {
        let certifies_retired =
            Signed::<VaultKeyCertificate>::from_envelope(&bytes).is_ok_and(|c| &c.body().subject == retired);
        if certifies_retired {
            std::fs::remove_file(&certificate_path).map_err(io_error(&certificate_path))?;
        }
    }
    let next_certificate = data_dir.join(NEXT_CERTIFICATE_FILE);
    let certified = next_certificate.exists();
    if certified {
        std::fs::rename(&next_certificate, &certificate_path).map_err(io_error(&next_certificate))?;
    }
    let key_path = data_dir.join(VAULT_KEY_FILE);
    std::fs::rename(&next_path, &key_path).map_err(io_error(&next_path))?;
    sync_directory(data_dir)?;
    for stale in [NEXT_PUBLIC_KEY_FILE, super::VAULT_PUBLIC_KEY_FILE] {
        remove_if_exists(&data_dir.join(stale))?;
    }
    keys::write_public_key(&data_dir.join(super::VAULT_PUBLIC_KEY_FILE), &next.public_key())?;
    Ok(certified)
}

fn remove_if_exists(path: &Path) -> Result<(), RotateError> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(io_error(path)(error)),
        _ => Ok(()),
    }
}

fn sync_directory(dir: &Path) -> Result<(), RotateError> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_error(dir))
}

/// The files of the key history beside the vault key (relative to `data_dir`, sorted): every committed
/// retired key's folder and a prepared next key, whichever exist. Backups copy them whole.
pub fn key_history_files(data_dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names: Vec<String> = [NEXT_KEY_FILE, NEXT_PUBLIC_KEY_FILE, NEXT_CERTIFICATE_FILE]
        .into_iter()
        .filter(|name| data_dir.join(name).exists())
        .map(str::to_owned)
        .collect();
    let folder = data_dir.join(RETIRED_KEYS_DIRECTORY);
    let keys = match std::fs::read_dir(&folder) {
        Ok(keys) => keys,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(names),
        Err(error) => return Err(error),
    };
    for key in keys {
        let key = key?.file_name().to_string_lossy().into_owned();
        if key.ends_with(PARTIAL_SUFFIX) {
            continue;
        }
        for file in std::fs::read_dir(folder.join(&key))? {
            names.push(format!("{RETIRED_KEYS_DIRECTORY}/{key}/{}", file?.file_name().to_string_lossy()));
        }
    }
    names.sort();
    Ok(names)
}

/// The first key a vault in `data_dir` ever had, if it has retired it (the default origin is derived
/// from it); `None` when the current key is the first.
pub fn first_key(data_dir: &Path) -> Result<Option<PublicKey>, OpenError> {
    Ok(load(data_dir)?.into_iter().next().map(|first| first.key))
}

/// Makes the next key (or reads the one prepared before) without touching the store, so it can be done
/// while the server serves: its public key goes to the witnesses and the trust anchor first.
pub fn prepare(config: &VaultConfig) -> Result<Prepared, RotateError> {
    let dir = &config.data_dir;
    let retired = load(dir)?;
    let current = keys::read_secret_key(&dir.join(VAULT_KEY_FILE))?.public_key();
    let origin = origin(config, retired.first().map_or(&current, |first| &first.key))?;
    let next_path = dir.join(NEXT_KEY_FILE);
    let created = !next_path.exists();
    let next = keys::load_or_create_secret_key(&next_path)?.public_key();
    if next == current || retired.iter().any(|r| r.key == next) {
        return Err(RotateError::NotNew(next_path));
    }
    let public_key_file = dir.join(NEXT_PUBLIC_KEY_FILE);
    if keys::read_public_key(&public_key_file).ok() != Some(next.clone()) {
        remove_if_exists(&public_key_file)?;
        keys::write_public_key(&public_key_file, &next)?;
    }
    Ok(Prepared { key: next, origin, public_key_file, created })
}

impl Vault {
    /// The keys this vault signed with before its current one, oldest first.
    pub fn retired_keys(&self) -> &[RetiredKey] {
        &self.retired
    }

    /// Whether `key` is this vault's key, current or retired.
    pub fn is_own_key(&self, key: &PublicKey) -> bool {
        key == &self.key.public_key() || self.retired.iter().any(|retired| &retired.key == key)
    }

    /// The key that receipted log entry `index`.
    pub(super) fn key_of_entry(&self, index: u64) -> PublicKey {
        self.retired.iter().find(|r| index < r.until_size).map_or_else(|| self.key.public_key(), |r| r.key.clone())
    }

    /// The key that signed the checkpoint of `size` entries (at a handover, the retiring one; the note
    /// carries both).
    pub(super) fn key_of_checkpoint(&self, size: u64) -> PublicKey {
        self.retired.iter().find(|r| size <= r.until_size).map_or_else(|| self.key.public_key(), |r| r.key.clone())
    }

    /// The keys share tokens are checked under: the current key's, then the retired keys'.
    pub(super) fn share_token_keys(&self, context: &str) -> Vec<[u8; 32]> {
        std::iter::once(self.key.derive_key(context)).chain(self.retired.iter().rev().map(|r| r.share_key)).collect()
    }

    /// Replaces the vault key by the prepared next key (made now if none was prepared): signs a checkpoint
    /// of the whole log with both keys, keeps the retired key's public half, certificate and share-token
    /// key under `retired-keys/`, and installs the new key. The vault must be reopened afterwards.
    pub fn rotate_key(self) -> Result<Rotation, RotateError> {
        let dir = self.config.data_dir.clone();
        if self.retired.len() >= RETIRED_KEYS_MAX {
            return Err(RotateError::TooMany);
        }
        let prepared = prepare(&self.config)?;
        let next = keys::read_secret_key(&dir.join(NEXT_KEY_FILE))?;
        // A certificate the anchor gave for the next key must fit it, or the vault would not open after.
        super::load_certificate_file(&self.config, &dir.join(NEXT_CERTIFICATE_FILE), &prepared.key, &self.origin)?;
        let retired = self.key.public_key();
        // The newest checkpoint covers every durable entry (nothing else writes: the store is ours).
        let checkpoint = match self.sign_checkpoint()? {
            Some(latest) => latest.checkpoint,
            None => Checkpoint { origin: self.origin.clone(), size: 0, root: log::empty_root() },
        };
        let handover = checkpoint.sign_handover(&self.key, &next);
        if checkpoint.size > 0 {
            // The same tree, now also signed by the new key: what readers and witnesses get next.
            self.store.put_checkpoint(checkpoint.size, &handover).map_err(StorageError::from)?;
            self.store.sync().map_err(StorageError::from)?;
            let kept = dir.join(super::KEPT_CHECKPOINT_FILE);
            crate::files::replace_durably(&kept, handover.as_bytes()).map_err(io_error(&kept))?;
        }
        let folder = dir.join(RETIRED_KEYS_DIRECTORY);
        std::fs::create_dir_all(&folder).map_err(io_error(&folder))?;
        let name = format!("{:04}", self.retired.len() + 1);
        let partial = folder.join(format!("{name}{PARTIAL_SUFFIX}"));
        if partial.exists() {
            std::fs::remove_dir_all(&partial).map_err(io_error(&partial))?;
        }
        std::fs::create_dir(&partial).map_err(io_error(&partial))?;
        keys::write_public_key(&partial.join(PUBLIC_KEY_FILE), &retired)?;
        write_new(&partial.join(HANDOVER_FILE), handover.as_bytes(), 0o644)?;
        let share_key = hex::encode(self.key.derive_key(super::shares::SHARE_TOKEN_KEY_CONTEXT));
        write_new(&partial.join(SHARE_KEY_FILE), format!("{share_key}\n").as_bytes(), 0o600)?;
        if let Some(certificate) = &self.certificate {
            write_new(&partial.join(VAULT_CERTIFICATE_FILE), &certificate.to_envelope(), 0o644)?;
        }
        sync_directory(&partial)?;
        let committed = folder.join(&name);
        std::fs::rename(&partial, &committed).map_err(io_error(&partial))?;
        sync_directory(&folder)?;
        drop(self);
        let certified = install_next(&dir, &retired, &prepared.key)?;
        Ok(Rotation { retired, current: prepared.key, size: checkpoint.size, handover, certified })
    }
}

/// Writes a new file (never over one) with `mode`, synced.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), RotateError> {
    keys::write_new(path, contents, mode).map_err(RotateError::Key)
}
