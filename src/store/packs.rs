//! Blobs in append-only pack files: `packs/<id>.pack`, each leased to one writer at a time so a blob's
//! frames are contiguous. A writer appends and fdatasyncs; the catalog commit that references the blob
//! also records the pack's new committed extent, and that extent comes back here at open.
//!
//! At open, bytes past a pack's committed extent (what a crash mid-upload leaves, or what a damaged
//! catalog no longer accounts for) are copied into `quarantine/`, made durable, and only then cut from
//! the pack: nothing is ever deleted because the catalog says less than before.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{io_error, BlobRef, BlobWriter, Blobs, EngineState, OpenReport, StagedBlob, StoreError};

/// A pack stops taking new blobs once it is this large (a blob already started finishes).
pub const PACK_SIZE_BYTES_TARGET: u64 = 1024 * 1024 * 1024;
const BLOB_REF_BYTES: usize = 4 + 8 + 8;

/// The folder of the packs inside a store directory.
pub(crate) const PACKS_DIRECTORY: &str = "packs";

/// The file name of pack `id`.
pub(crate) fn pack_file_name(id: u32) -> String {
    format!("{id:08}.pack")
}

/// The pack and its committed end that a catalog blob state names (see `StagedBlob::committed_state`).
pub(crate) fn committed_extent(key: &[u8], value: &[u8]) -> Option<(u32, u64)> {
    Some((u32::from_be_bytes(key.try_into().ok()?), u64::from_be_bytes(value.try_into().ok()?)))
}

pub(crate) fn sync_path(path: &Path) -> Result<(), StoreError> {
    File::open(path).and_then(|file| file.sync_all()).map_err(io_error(path))
}

/// Copies the bytes of `from` from `offset` to its end into a new file in `quarantine` and makes it durable.
pub(crate) fn quarantine_tail(from: &Path, file: &File, offset: u64, quarantine: &Path) -> Result<PathBuf, StoreError> {
    std::fs::create_dir_all(quarantine).map_err(io_error(quarantine))?;
    let name = from.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let target = quarantine.join(format!("{name}.from-{offset}.at-{}", crate::ids::now_unix_ms()));
    let length = file.metadata().map_err(io_error(from))?.len();
    let mut position = offset;
    let mut out = std::fs::OpenOptions::new().write(true).create_new(true).open(&target).map_err(io_error(&target))?;
    let mut buffer = vec![0u8; 1 << 20];
    while position < length {
        let count = buffer.len().min((length - position) as usize);
        file.read_exact_at(&mut buffer[..count], position).map_err(io_error(from))?;
        std::io::Write::write_all(&mut out, &buffer[..count]).map_err(io_error(&target))?;
        position += count as u64;
    }
    out.sync_all().map_err(io_error(&target))?;
    sync_path(quarantine)?;
    Ok(target)
}

struct OpenPack {
    id: u32,
    file: File,
    length: u64,
}

/// Packs kept open for reading, so that a document's frames do not each open and close their pack
/// (packs are never removed or renamed while the store is open).
pub const PACK_READERS_KEPT: usize = 64;

struct Pool {
    directory: PathBuf,
    idle: Mutex<Vec<OpenPack>>,
    next_id: Mutex<u32>,
    /// At most [`PACK_READERS_KEPT`], by pack id; forgotten all at once when full.
    readers: Mutex<std::collections::HashMap<u32, Arc<File>>>,
}

/// The pack-file blob engine.
pub struct Packs {
    pool: Arc<Pool>,
}

fn decode_reference(blob: &BlobRef) -> Result<(u32, u64, u64), StoreError> {
    let bytes: &[u8; BLOB_REF_BYTES] =
        blob.0.as_slice().try_into().map_err(|_| StoreError::Corrupt("not a pack blob reference".into()))?;
    let (pack, rest) = bytes.split_at(4);
    let (offset, length) = rest.split_at(8);
    let number = |b: &[u8]| b.iter().fold(0u64, |n, &byte| n << 8 | u64::from(byte));
    Ok((number(pack) as u32, number(offset), number(length)))
}

impl Pool {
    /// The pack's handle when one is open already.
    fn open_reader(&self, id: u32) -> Option<Arc<File>> {
        self.readers.lock().unwrap_or_else(|p| p.into_inner()).get(&id).cloned()
    }

    /// The pack opened for reading, from those kept open or opened now.
    fn reader(&self, id: u32) -> Result<Arc<File>, StoreError> {
        if let Some(file) = self.open_reader(id) {
            return Ok(file);
        }
        let path = self.path(id);
        let file = Arc::new(File::open(&path).map_err(io_error(&path))?);
        let mut readers = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if readers.len() >= PACK_READERS_KEPT {
            readers.clear();
        }
        readers.insert(id, file.clone());
        Ok(file)
    }

    fn path(&self, id: u32) -> PathBuf {
        self.directory.join(pack_file_name(id))
    }

    fn create(&self) -> Result<OpenPack, StoreError> {
        let mut next_id = self.next_id.lock().unwrap_or_else(|p| p.into_inner());
        let id = *next_id;
        let path = self.path(id);
        let file =
            std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path).map_err(io_error(&path))?;
        // The new name must survive a crash before anything in it is committed.
        sync_path(&self.directory)?;
        *next_id = id + 1;
        Ok(OpenPack { id, file, length: 0 })
    }

    fn give_back(&self, pack: OpenPack) {
        if pack.length < PACK_SIZE_BYTES_TARGET {
            self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(pack);
        }
    }
}

impl Packs {
    /// Opens the packs in `directory` given the committed extents the catalog kept (see
    /// [`StagedBlob::committed_state`]); quarantines whatever lies past them.
    pub fn open(
        directory: &Path,
        quarantine: &Path,
        committed_states: &[EngineState],
        report: &mut OpenReport,
    ) -> Result<Packs, StoreError> {
        std::fs::create_dir_all(directory).map_err(io_error(directory))?;
        let mut committed = HashMap::new();
        for (key, value) in committed_states {
            let (id, end) = committed_extent(key, value)
                .ok_or_else(|| StoreError::Corrupt("malformed pack extent in the catalog".into()))?;
            committed.insert(id, end);
        }
        let pool = Pool {
            directory: directory.to_owned(),
            idle: Mutex::new(Vec::new()),
            next_id: Mutex::new(0),
            readers: Mutex::new(Default::default()),
        };
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
                return Err(StoreError::Corrupt(format!(
                    "pack {} is {length} bytes but the catalog committed {end}: committed content is missing",
                    path.display()
                )));
            }
            if length > end {
                let kept = quarantine_tail(&path, &file, end, quarantine)?;
                file.set_len(end).map_err(io_error(&path))?;
                file.sync_all().map_err(io_error(&path))?;
                report.warnings.push(format!(
                    "{} bytes past the committed end of {} were moved to {}",
                    length - end,
                    path.display(),
                    kept.display()
                ));
                report.quarantined.push(kept);
            }
            pool.give_back(OpenPack { id, file, length: end });
        }
        if let Some((id, end)) = committed.iter().find(|(id, end)| **end > 0 && !pool.path(**id).exists()) {
            return Err(StoreError::Corrupt(format!(
                "pack {} is missing but the catalog committed {end} bytes in it",
                pool.path(*id).display()
            )));
        }
        *pool.next_id.lock().unwrap_or_else(|p| p.into_inner()) =
            highest.max(committed.keys().max().copied()).map_or(0, |id| id + 1);
        Ok(Packs { pool: Arc::new(pool) })
    }
}

/// Fills `into` with the bytes at `position`.
fn read_at(file: &File, position: u64, into: &mut [u8]) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < into.len() {
        match rustix::io::pread(file, &mut into[filled..], position + filled as u64) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(read) => filled += read,
            Err(rustix::io::Errno::INTR) => {}
            Err(errno) => return Err(errno.into()),
        }
    }
    Ok(())
}

/// Fills `into` with the bytes at `position` if the page cache holds them all (`true`), else answers
/// `false`: `RWF_NOWAIT` makes the read fail rather than wait for the disk (and a kernel or file
/// system without it answers the same).
fn read_at_hand(file: &File, position: u64, into: &mut [u8]) -> std::io::Result<bool> {
    let mut filled = 0;
    while filled < into.len() {
        let slice = &mut [std::io::IoSliceMut::new(&mut into[filled..])];
        match rustix::io::preadv2(file, slice, position + filled as u64, rustix::io::ReadWriteFlags::NOWAIT) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(read) => filled += read,
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::NOSYS) => {
                return Ok(false)
            }
            Err(errno) => return Err(errno.into()),
        }
    }
    Ok(true)
}

impl Packs {
    /// Where `length` bytes at `offset` inside `blob` are: its pack and the position in it.
    fn locate(blob: &BlobRef, offset: u64, length: usize) -> Result<(u32, u64), StoreError> {
        let (pack, start, blob_length) = decode_reference(blob)?;
        if u64::try_from(length).ok().and_then(|length| offset.checked_add(length)).is_none_or(|end| end > blob_length)
        {
            return Err(StoreError::Corrupt(format!("read of {length} bytes at {offset} is outside its blob")));
        }
        Ok((pack, start + offset))
    }
}

impl Blobs for Packs {
    fn create(&self) -> Result<Box<dyn BlobWriter>, StoreError> {
        let idle = self.pool.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let pack = match idle {
            Some(pack) => pack,
            None => self.pool.create()?,
        };
        Ok(Box::new(PackWriter { pool: self.pool.clone(), start: pack.length, pack: Some(pack) }))
    }

    fn read(&self, blob: &BlobRef, offset: u64, into: &mut [u8]) -> Result<(), StoreError> {
        let (pack, position) = Packs::locate(blob, offset, into.len())?;
        let file = self.pool.reader(pack)?;
        read_at(&file, position, into).map_err(|e| io_error(&self.pool.path(pack))(e))
    }

    fn read_if_at_hand(&self, blob: &BlobRef, offset: u64, into: &mut [u8]) -> Result<bool, StoreError> {
        let (pack, position) = Packs::locate(blob, offset, into.len())?;
        // Opening a pack is left to a blocking read.
        let Some(file) = self.pool.open_reader(pack) else { return Ok(false) };
        read_at_hand(&file, position, into).map_err(|e| io_error(&self.pool.path(pack))(e))
    }

    fn digest_into(&self, hasher: &mut blake3::Hasher) -> Result<(), StoreError> {
        let directory = &self.pool.directory;
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
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        let directory = &self.pool.directory;
        let mut total = 0;
        for entry in std::fs::read_dir(directory).map_err(io_error(directory))? {
            total += entry.and_then(|e| e.metadata()).map_err(io_error(directory))?.len();
        }
        Ok(total)
    }
}

/// One blob's exclusive lease on a pack.
struct PackWriter {
    pool: Arc<Pool>,
    pack: Option<OpenPack>,
    /// The pack's length when leased: where this blob begins.
    start: u64,
}

impl PackWriter {
    fn open(&mut self) -> &mut OpenPack {
        self.pack.as_mut().expect("a pack writer holds its pack until released")
    }

    fn rollback(&mut self) -> Result<(), StoreError> {
        let Some(mut pack) = self.pack.take() else { return Ok(()) };
        let path = self.pool.path(pack.id);
        // Only bytes this writer appended and nobody committed are cut.
        pack.file.set_len(self.start).map_err(io_error(&path))?;
        pack.length = self.start;
        self.pool.give_back(pack);
        Ok(())
    }
}

impl BlobWriter for PackWriter {
    fn append(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.append_parts(&[bytes])
    }

    /// One `pwritev` for all the parts (more only if the kernel writes them in part).
    fn append_parts(&mut self, parts: &[&[u8]]) -> Result<(), StoreError> {
        let pool = self.pool.clone();
        let pack = self.open();
        let mut slices: Vec<std::io::IoSlice<'_>> = parts.iter().map(|part| std::io::IoSlice::new(part)).collect();
        let mut remaining = &mut slices[..];
        let total: usize = parts.iter().map(|part| part.len()).sum();
        let mut written = 0;
        while written < total {
            match rustix::io::pwritev(&pack.file, remaining, pack.length + written as u64) {
                Ok(0) => return Err(io_error(&pool.path(pack.id))(std::io::ErrorKind::WriteZero.into())),
                Ok(count) => {
                    written += count;
                    std::io::IoSlice::advance_slices(&mut remaining, count);
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(errno) => return Err(io_error(&pool.path(pack.id))(errno.into())),
            }
        }
        pack.length += total as u64;
        Ok(())
    }

    fn finish(&mut self) -> Result<StagedBlob, StoreError> {
        let start = self.start;
        let pool = self.pool.clone();
        let pack = self.open();
        pack.file.sync_data().map_err(io_error(&pool.path(pack.id)))?;
        let reference =
            [&pack.id.to_be_bytes()[..], &start.to_be_bytes(), &(pack.length - start).to_be_bytes()].concat();
        Ok(StagedBlob {
            reference: BlobRef(reference),
            committed_state: Some((pack.id.to_be_bytes().to_vec(), pack.length.to_be_bytes().to_vec())),
        })
    }

    fn release(mut self: Box<Self>) {
        if let Some(pack) = self.pack.take() {
            self.pool.give_back(pack);
        }
    }

    fn discard(mut self: Box<Self>) -> Result<(), StoreError> {
        self.rollback()
    }
}

impl Drop for PackWriter {
    fn drop(&mut self) {
        // An abandoned blob: cut its bytes off. If even that fails, the pack is not reused in this
        // process, and the next open quarantines what lies past its committed extent.
        let _ = self.rollback();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pack holding one blob of `bytes`, synced.
    fn pack_with(directory: &Path, bytes: &[u8]) -> (Packs, BlobRef) {
        let packs =
            Packs::open(directory, &directory.join("quarantine"), &[], &mut OpenReport::default()).expect("open packs");
        let mut writer = packs.create().expect("writer");
        writer.append(bytes).expect("append");
        let staged = writer.finish().expect("finish");
        writer.release();
        (packs, staged.reference)
    }

    /// Drops the pack's (clean) pages from the page cache, as memory pressure would.
    fn evict(directory: &Path) {
        for entry in std::fs::read_dir(directory).expect("packs") {
            let path = entry.expect("entry").path();
            if path.is_file() {
                let file = File::open(&path).expect("pack");
                rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).expect("fadvise");
            }
        }
    }

    /// `length` bytes at `offset`, read as a download reads them.
    fn read_bytes(packs: &Packs, blob: &BlobRef, offset: u64, length: usize) -> Vec<u8> {
        let mut bytes = vec![0; length];
        packs.read(blob, offset, &mut bytes).expect("read");
        bytes
    }

    /// The same bytes when they are at hand, else `None`.
    fn bytes_at_hand(packs: &Packs, blob: &BlobRef, offset: u64, length: usize) -> Option<Vec<u8>> {
        let mut bytes = vec![0; length];
        packs.read_if_at_hand(blob, offset, &mut bytes).expect("read").then_some(bytes)
    }

    #[test]
    fn parts_appended_together_land_one_after_the_other() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (packs, first) = pack_with(dir.path(), b"before");
        let mut writer = packs.create().expect("writer");
        let payload: Vec<u8> = (0..70_000u32).map(|i| (i % 253) as u8).collect();
        writer.append_parts(&[b"header", &[], &payload]).expect("append parts");
        writer.append(b"after").expect("append");
        let staged = writer.finish().expect("finish");
        writer.release();
        let expected = [&b"header"[..], &payload, b"after"].concat();
        assert!(read_bytes(&packs, &staged.reference, 0, expected.len()) == expected);
        assert_eq!(read_bytes(&packs, &first, 0, 6), b"before");
    }

    #[test]
    fn a_read_at_hand_gives_the_bytes_from_the_page_cache_and_nothing_once_they_must_come_from_the_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bytes: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (packs, blob) = pack_with(dir.path(), &bytes);
        // No handle open on the pack yet: opening one is left to a blocking read.
        assert_eq!(bytes_at_hand(&packs, &blob, 0, 100), None);
        assert_eq!(read_bytes(&packs, &blob, 1_000, 50_000), &bytes[1_000..51_000]);
        let at_hand = bytes_at_hand(&packs, &blob, 70_000, 65_536).expect("in the page cache");
        assert!(at_hand == bytes[70_000..135_536], "the bytes read at hand are the blob's");

        evict(dir.path());
        assert_eq!(bytes_at_hand(&packs, &blob, 70_000, 65_536), None, "evicted pages wait for the disk");
        // The blocking read brings them back, after which they are at hand again.
        assert!(read_bytes(&packs, &blob, 70_000, 65_536) == bytes[70_000..135_536]);
        assert!(bytes_at_hand(&packs, &blob, 70_000, 65_536).is_some_and(|b| b == bytes[70_000..135_536]));

        let outside = packs.read_if_at_hand(&blob, 199_000, &mut [0; 2_000]).expect_err("past the blob");
        assert!(outside.to_string().contains("outside its blob"), "{outside}");
    }
}
