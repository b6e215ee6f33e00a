//! Document content: streamed in, cut into independently compressed frames, read back verified.
//!
//! A [`ContentWriter`] hashes (BLAKE3 and SHA-256), frames and compresses bytes as they arrive and
//! appends each frame to a new blob; memory holds at most one frame. The content becomes visible only
//! when the caller commits its [`Manifest`] with the record, after the blob was made durable; what a
//! crash leaves before that is never referenced (and the blob engine quarantines it at the next open).
//!
//! A [`ContentReader`] serves a byte range by decoding only the frames it touches. Frames are whole
//! subtrees of the document's BLAKE3 tree (as in the bao format): the manifest keeps each frame's
//! chaining value, which the reader checks against the document's address when it opens, and each
//! frame's plain bytes are checked against theirs after decompression, before any byte is handed out.
//! So every byte served, of a range or the whole, is verified against the content address, and a whole
//! read hashes each byte once. Content stored before (frames of version 1) is checked the older way: a
//! keyed checksum per frame, and the document's BLAKE3 at the end of a whole read.

use std::io;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use blake3::hazmat::{self, HasherExt as _};

use crate::codec;
use crate::ids::Digest;
use crate::store::{BlobRef, NewContent, Store, StoreBlobWriter, StoreError};

/// Plain bytes per frame. Chosen by `benches/vault.rs` (frame group, docs/BENCHMARKS.md): large
/// enough that compression is within a few percent of bigger frames, small enough that a range read
/// decodes little it does not need.
pub const FRAME_SIZE_BYTES_DEFAULT: u32 = 64 * 1024;
/// Largest frame any reader accepts; bounds memory whatever a manifest or frame claims.
pub const FRAME_SIZE_BYTES_MAX: u32 = 1024 * 1024;
/// Most frames one document has: its manifest (36 bytes a frame) must stay under the stored value limit
/// (`codec::VALUE_SIZE_BYTES_MAX`, 1 MiB), or the content could be stored and then never read. In frames
/// of the default size that is 1.5 GiB, the largest document any configuration may accept
/// ([`DOCUMENT_SIZE_BYTES_CEILING`]).
pub const FRAMES_PER_DOCUMENT_MAX: u64 = 24 * 1024;
/// The largest document a vault accepts whatever its configuration: as many frames of the default size
/// as a manifest holds.
pub const DOCUMENT_SIZE_BYTES_CEILING: u64 = FRAMES_PER_DOCUMENT_MAX * FRAME_SIZE_BYTES_DEFAULT as u64;
/// Bytes in one leaf of BLAKE3's tree.
const BLAKE3_CHUNK_BYTES: u64 = 1024;
/// Smallest frame: one BLAKE3 chunk. A frame size is a power of two from this to the largest, so that
/// every frame is a whole subtree of the document's BLAKE3 tree.
pub const FRAME_SIZE_BYTES_MIN: u32 = BLAKE3_CHUNK_BYTES as u32;
/// zstd level a deposit compresses frames at. Level -1, measured end to end on real documents
/// (docs/BENCHMARKS.md, "zstd level -1 for deposits"): on the corpus's frames that pass the probe it
/// compresses 1.7 times as fast as level 1 for 0.06% more bytes stored, and level 1 was 13% faster
/// than level 3 ("zstd level 1 for deposits"); level 9 saves 2% at a sixth of level 3's speed ("Frame
/// size and zstd level").
pub const ZSTD_LEVEL_DEFAULT: i32 = -1;
/// A frame is stored compressed only if zstd saves at least 1/32 of it: below that, reading it back
/// would pay a decompression for almost nothing (measured in docs/BENCHMARKS.md, "Compressing only
/// what shrinks").
pub const COMPRESSION_SAVING_MIN_DIVISOR: usize = 32;
/// Early abort, as ZFS does before its slower compressors: the middle 8 KiB of a frame is first
/// compressed at zstd's fast level -5, and a frame whose sample does not save the minimum is stored raw
/// without being compressed at all. On real documents (PDFs whose streams are compressed already,
/// scans) most frames are such frames: compression runs about twice as fast for 2% more bytes stored.
pub const COMPRESSION_PROBE_SAMPLE_BYTES: usize = 8 * 1024;
/// The zstd level of that sample's trial compression.
pub const COMPRESSION_PROBE_LEVEL: i32 = -5;
/// Version byte in front of every frame this build writes: its header carries the frame's BLAKE3
/// chaining value (docs/FORMAT.md section 3.2).
pub const FRAME_VERSION: u8 = 2;
/// Frames written before, read and never written: their header carries a BLAKE3 keyed by the upload
/// and the frame's index.
pub const FRAME_VERSION_KEYED: u8 = 1;
const FRAME_HEADER_BYTES: usize = 1 + 1 + 4 + 32;
const CODEC_RAW: u8 = 0;
const CODEC_ZSTD: u8 = 1;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContentError {
    #[error("document is larger than the limit of {limit_bytes} bytes")]
    TooLarge { limit_bytes: u64 },
    #[error("stored content {blake3} is corrupt: {reason}")]
    Corrupt { blake3: Digest, reason: String },
    #[error("range {start}..{end} is outside the document of {size} bytes")]
    RangeNotSatisfiable { start: u64, end: u64, size: u64 },
    #[error("compression failed: {0}")]
    Compression(io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a stored frame was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame is shorter than its header")]
    Truncated,
    #[error("frame version {0} is unknown")]
    UnsupportedVersion(u8),
    #[error("frame codec {0} is unknown")]
    UnknownCodec(u8),
    #[error("frame holds {found} plain bytes where {expected} were expected")]
    WrongLength { expected: usize, found: usize },
    #[error("frame does not decompress: {0}")]
    Decompression(String),
    #[error("frame's bytes do not match its checksum")]
    ChecksumMismatch,
    #[error("frame's header names another hash than the manifest")]
    HeaderMismatch,
    #[error("a frame of {length} bytes at offset {offset} is not a subtree of BLAKE3's tree")]
    NotASubtree { offset: u64, length: usize },
}

/// Frame size and compression level; the defaults are measured, see the constants.
#[derive(Debug, Clone)]
pub struct ContentConfig {
    pub frame_size_bytes: u32,
    pub zstd_level: i32,
}

impl Default for ContentConfig {
    fn default() -> Self {
        ContentConfig { frame_size_bytes: FRAME_SIZE_BYTES_DEFAULT, zstd_level: ZSTD_LEVEL_DEFAULT }
    }
}

/// Where a document's frames are and what they must add up to. Stored in the catalog by content hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub size_bytes: u64,
    pub sha256: Digest,
    pub frame_size_bytes: u32,
    /// Binds each frame's checksum to this upload.
    pub upload_id: u64,
    /// The blob holding the frames, one after another from its start (opaque: the blob engine's words).
    pub blob: BlobRef,
    /// Stored (compressed, header included) length of each frame.
    pub frame_lengths: Vec<u32>,
    /// The BLAKE3 chaining value of each frame as a subtree of the document's tree, when there are two
    /// frames or more (a single frame's hash is the document's address).
    pub frame_hashes: Vec<[u8; 32]>,
    /// Content stored before frames carried chaining values: its frames are of version 1, each checked
    /// by its keyed checksum, and a whole read checks the document's BLAKE3 at the end. Not stored: a
    /// manifest of that time has no `frame_hashes` (see [`Manifest::decode`]).
    #[serde(skip)]
    pub keyed_frames: bool,
}

/// A manifest as stored before frames carried chaining values.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct KeyedManifest {
    size_bytes: u64,
    sha256: Digest,
    frame_size_bytes: u32,
    upload_id: u64,
    blob: BlobRef,
    frame_lengths: Vec<u32>,
}

impl Manifest {
    /// Bytes the frames occupy in the pack.
    pub fn stored_bytes(&self) -> u64 {
        self.frame_lengths.iter().map(|&l| u64::from(l)).sum()
    }

    /// Decodes a stored manifest, of this build or one stored before frames carried chaining values.
    /// The two layouts cannot be confused: the older one ends where the newer one's `frame_hashes`
    /// begins, and the decoder refuses both missing and trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, codec::CodecError> {
        codec::decode::<Manifest>(bytes).or_else(|error| {
            let older: KeyedManifest = codec::decode(bytes).map_err(|_| error)?;
            Ok(Manifest {
                size_bytes: older.size_bytes,
                sha256: older.sha256,
                frame_size_bytes: older.frame_size_bytes,
                upload_id: older.upload_id,
                blob: older.blob,
                frame_lengths: older.frame_lengths,
                frame_hashes: Vec::new(),
                keyed_frames: true,
            })
        })
    }
}

pub fn load_manifest(store: &Store, blake3: &Digest) -> Result<Option<Manifest>, ContentError> {
    let Some(bytes) = store.manifest(blake3)? else {
        return Ok(None);
    };
    Manifest::decode(&bytes)
        .map(Some)
        .map_err(|e| ContentError::Corrupt { blake3: *blake3, reason: format!("manifest: {e}") })
}

/// What a frame's plain bytes must hash to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameCheck {
    /// A frame of version 2 starting `offset` bytes into its document: its BLAKE3 chaining value as a
    /// subtree of the document's tree, or, when it is the document's only frame (`root`), the
    /// document's BLAKE3.
    Subtree { offset: u64, hash: [u8; 32], root: bool },
    /// A frame of version 1: the keyed checksum of its header, bound to the upload and the index.
    Keyed { upload_id: u64, index: u32 },
}

/// The BLAKE3 of `plain` as the subtree of a document's tree starting at `offset`: its chaining value,
/// or the document's hash when it is the whole document (`root`). `None` when no subtree of the tree
/// has that place and length.
fn subtree_hash(offset: u64, plain: &[u8], root: bool) -> Option<[u8; 32]> {
    if root {
        return (offset == 0).then(|| *blake3::hash(plain).as_bytes());
    }
    // The order matters: `max_subtree_len` asserts a chunk boundary.
    if plain.is_empty()
        || !offset.is_multiple_of(BLAKE3_CHUNK_BYTES)
        || hazmat::max_subtree_len(offset).is_some_and(|max| plain.len() as u64 > max)
    {
        return None;
    }
    let mut hasher = blake3::Hasher::new();
    hasher.set_input_offset(offset);
    hasher.update(plain);
    Some(hasher.finalize_non_root())
}

/// The BLAKE3 of a document of `size_bytes` from the chaining values of its frames (two or more, each
/// of `frame_size` bytes but the last, `frame_size` a power of two of at least one chunk). BLAKE3's
/// tree puts on the left of every node the largest power of two of chunks smaller than the node, which
/// is a whole number of frames, so frames are its leaves' subtrees. The caller checked the count.
fn tree_root(frame_hashes: &[[u8; 32]], frame_size: u64, size_bytes: u64) -> [u8; 32] {
    fn node(hashes: &[[u8; 32]], frame_size: u64, length: u64, root: bool) -> [u8; 32] {
        if let [hash] = hashes {
            return *hash;
        }
        let left_length = hazmat::left_subtree_len(length);
        let (left, right) = hashes.split_at((left_length / frame_size) as usize);
        let left = node(left, frame_size, left_length, false);
        let right = node(right, frame_size, length - left_length, false);
        if root {
            *hazmat::merge_subtrees_root(&left, &right, hazmat::Mode::Hash).as_bytes()
        } else {
            hazmat::merge_subtrees_non_root(&left, &right, hazmat::Mode::Hash)
        }
    }
    node(frame_hashes, frame_size, size_bytes, true)
}

/// The BLAKE3 of a document from its frames' hashes as the writer computes them (one per frame, the only
/// frame's being the document's).
fn document_hash(frame_hashes: &[[u8; 32]], frame_size: u32, size_bytes: u64) -> [u8; 32] {
    match frame_hashes {
        [] => *blake3::hash(&[]).as_bytes(),
        [only] => *only,
        several => tree_root(several, u64::from(frame_size), size_bytes),
    }
}

/// Whether frames of `frame_size` bytes are whole subtrees of BLAKE3's tree.
fn is_tree_frame_size(frame_size: u32) -> bool {
    frame_size.is_power_of_two() && (FRAME_SIZE_BYTES_MIN..=FRAME_SIZE_BYTES_MAX).contains(&frame_size)
}

/// The checksum in a frame of version 1: BLAKE3 of the upload id, the frame index and the plain bytes,
/// so a frame that moved to another position does not verify either.
fn keyed_checksum(upload_id: u64, index: u32, plain: &[u8]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&upload_id.to_be_bytes());
    hasher.update(&index.to_be_bytes());
    hasher.update(plain);
    *hasher.finalize().as_bytes()
}

/// zstd contexts kept between documents, of each kind: contexts are made for reuse, and making a
/// writer's three for each document (an allocation and the clearing of their tables) was 2% of a
/// 64 KiB deposit's server time.
pub const ZSTD_CONTEXTS_KEPT: usize = 16;

/// Frame buffers kept for reuse (each [`SPARE_FRAME_BYTES`]): enough for 32 downloads' pieces in
/// flight, 8.3 MB at most.
pub const FRAME_BUFFERS_KEPT: usize = 128;

/// The size of a kept frame buffer: a stored frame of the default size, its header included.
const SPARE_FRAME_BYTES: usize = FRAME_SIZE_BYTES_DEFAULT as usize + FRAME_HEADER_BYTES;

/// Values kept for reuse, at most `limit`.
struct Spares<T> {
    spares: std::sync::Mutex<Vec<T>>,
    limit: usize,
}

impl<T> Spares<T> {
    const fn new(limit: usize) -> Spares<T> {
        Spares { spares: std::sync::Mutex::new(Vec::new()), limit }
    }

    fn take(&self) -> Option<T> {
        self.spares.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop()
    }

    fn keep(&self, spare: T) {
        let mut spares = self.spares.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if spares.len() < self.limit {
            spares.push(spare);
        }
    }
}

/// A bulk zstd call resets its context first, so a context that served one document (or failed on
/// it) serves the next as a new one would; every compressed output is checked by decompressing it
/// anyway.
static SPARE_COMPRESSORS: Spares<Compressors> = Spares::new(ZSTD_CONTEXTS_KEPT);
static SPARE_DECOMPRESSORS: Spares<zstd::bulk::Decompressor<'static>> = Spares::new(ZSTD_CONTEXTS_KEPT);
static SPARE_FRAME_BUFFERS: Spares<Vec<u8>> = Spares::new(FRAME_BUFFERS_KEPT);

/// The bytes of one frame as a download reads them, stored or decoded: a buffer of
/// [`SPARE_FRAME_BYTES`] is taken from the spares and goes back to them when the last piece handed out
/// of it is dropped (once the response has written it), instead of a new allocation per frame, which
/// another thread then freed. What a reused buffer held before is never read: a frame is read or
/// decoded into it whole before it is used.
pub struct FrameBuffer {
    /// Initialised whole, so that a read or decompression can fill its first `len` bytes, the frame's.
    bytes: Vec<u8>,
    len: usize,
}

impl FrameBuffer {
    /// A buffer for `len` bytes, to be filled through [`FrameBuffer::as_mut`].
    fn new(len: usize) -> FrameBuffer {
        let bytes = if len <= SPARE_FRAME_BYTES {
            SPARE_FRAME_BUFFERS.take().unwrap_or_else(|| vec![0; SPARE_FRAME_BYTES])
        } else {
            vec![0; len]
        };
        FrameBuffer { bytes, len }
    }
}

impl From<Vec<u8>> for FrameBuffer {
    fn from(bytes: Vec<u8>) -> FrameBuffer {
        FrameBuffer { len: bytes.len(), bytes }
    }
}

impl AsRef<[u8]> for FrameBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl AsMut<[u8]> for FrameBuffer {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[..self.len]
    }
}

impl Drop for FrameBuffer {
    fn drop(&mut self) {
        if self.bytes.len() == SPARE_FRAME_BYTES {
            SPARE_FRAME_BUFFERS.keep(std::mem::take(&mut self.bytes));
        }
    }
}

/// The compressor and the fast one that tries a frame's sample first.
struct Compressors {
    level: i32,
    compressor: zstd::bulk::Compressor<'static>,
    probe: zstd::bulk::Compressor<'static>,
}

/// A writer's codecs: its compressors (kept for the next writer when it is dropped) and the
/// decompressor that checks the compressor's every output.
struct Codecs {
    compressors: Option<Compressors>,
    checker: LazyDecompressor,
}

impl Codecs {
    fn new(level: i32) -> io::Result<Codecs> {
        let compressors = match SPARE_COMPRESSORS.take() {
            Some(mut spare) => {
                if spare.level != level {
                    spare.compressor.set_compression_level(level)?;
                    spare.level = level;
                }
                spare
            }
            None => Compressors {
                level,
                compressor: zstd::bulk::Compressor::new(level)?,
                probe: zstd::bulk::Compressor::new(COMPRESSION_PROBE_LEVEL)?,
            },
        };
        Ok(Codecs { compressors: Some(compressors), checker: LazyDecompressor::default() })
    }

    fn compressors(&mut self) -> &mut Compressors {
        self.compressors.as_mut().expect("present until dropped")
    }
}

impl Drop for Codecs {
    fn drop(&mut self) {
        if let Some(compressors) = self.compressors.take() {
            SPARE_COMPRESSORS.keep(compressors);
        }
    }
}

/// Whether `compressed` is sound to store for `plain`: smaller, and it decompresses to exactly `plain`.
/// A compressor bug must never reach the disk (restic once stored zstd output that did not decompress to
/// its input); such a frame is stored raw instead, and the mismatch is reported.
fn compressed_payload_is_sound(plain: &[u8], compressed: &[u8], checker: &mut LazyDecompressor) -> bool {
    if compressed.len() >= plain.len() {
        return false;
    }
    let sound = checker
        .get()
        .and_then(|checker| checker.decompress(compressed, plain.len()))
        .is_ok_and(|round_trip| round_trip == plain);
    if !sound {
        tracing::error!(plain_bytes = plain.len(), "zstd output does not decompress to its input; frame stored raw");
    }
    sound
}

/// Whether `compressed` saves at least the minimum of `plain`'s length.
fn saves_enough(plain_len: usize, compressed_len: usize) -> bool {
    compressed_len + plain_len / COMPRESSION_SAVING_MIN_DIVISOR < plain_len
}

/// The compression policy for one frame: `plain` compressed by `compressor` if its middle
/// [`COMPRESSION_PROBE_SAMPLE_BYTES`], tried first by `probe` (at [`COMPRESSION_PROBE_LEVEL`]), and then
/// the whole frame each save the minimum ([`COMPRESSION_SAVING_MIN_DIVISOR`]); `None` when the frame is
/// to be stored raw. The frame bench measures this same function on the corpus.
pub fn compressed_if_it_shrinks(
    plain: &[u8],
    probe: &mut zstd::bulk::Compressor<'_>,
    compressor: &mut zstd::bulk::Compressor<'_>,
) -> io::Result<Option<Vec<u8>>> {
    let sample = if plain.len() <= COMPRESSION_PROBE_SAMPLE_BYTES {
        plain
    } else {
        let start = (plain.len() - COMPRESSION_PROBE_SAMPLE_BYTES) / 2;
        &plain[start..start + COMPRESSION_PROBE_SAMPLE_BYTES]
    };
    if !saves_enough(sample.len(), probe.compress(sample)?.len()) {
        return Ok(None);
    }
    let compressed = compressor.compress(plain)?;
    Ok(saves_enough(plain.len(), compressed.len()).then_some(compressed))
}

/// A frame of version 2 holding `plain`, whose hash (see [`subtree_hash`]) is `hash`, as its header and
/// its payload (`plain` itself when stored raw), to be written one after the other.
fn frame_parts<'a>(
    plain: &'a [u8],
    hash: &[u8; 32],
    codecs: &mut Codecs,
) -> io::Result<([u8; FRAME_HEADER_BYTES], std::borrow::Cow<'a, [u8]>)> {
    let compressors = codecs.compressors();
    let compressed = compressed_if_it_shrinks(plain, &mut compressors.probe, &mut compressors.compressor)?;
    let (codec, payload) = match compressed {
        Some(compressed) if compressed_payload_is_sound(plain, &compressed, &mut codecs.checker) => {
            (CODEC_ZSTD, std::borrow::Cow::Owned(compressed))
        }
        _ => (CODEC_RAW, std::borrow::Cow::Borrowed(plain)),
    };
    let mut header = [0u8; FRAME_HEADER_BYTES];
    header[0] = FRAME_VERSION;
    header[1] = codec;
    // Frames are at most FRAME_SIZE_BYTES_MAX long, so the length fits in 32 bits.
    header[2..6].copy_from_slice(&u32::try_from(plain.len()).unwrap_or(u32::MAX).to_be_bytes());
    header[6..].copy_from_slice(hash);
    Ok((header, payload))
}

/// [`frame_parts`] joined: the frame as stored.
#[cfg(test)]
fn encode_frame(plain: &[u8], hash: &[u8; 32], codecs: &mut Codecs) -> io::Result<Vec<u8>> {
    let (header, payload) = frame_parts(plain, hash, codecs)?;
    Ok([&header[..], &payload].concat())
}

/// A zstd decompressor taken on first use (a spare one, or a new one) and kept for later readers when
/// dropped: most frames of scans and PDFs are stored raw, so most reads of them never need one.
#[derive(Default)]
pub struct LazyDecompressor(Option<zstd::bulk::Decompressor<'static>>);

impl LazyDecompressor {
    fn get(&mut self) -> io::Result<&mut zstd::bulk::Decompressor<'static>> {
        match &mut self.0 {
            Some(decompressor) => Ok(decompressor),
            empty => {
                let decompressor = match SPARE_DECOMPRESSORS.take() {
                    Some(spare) => spare,
                    None => zstd::bulk::Decompressor::new()?,
                };
                Ok(empty.insert(decompressor))
            }
        }
    }
}

impl Drop for LazyDecompressor {
    fn drop(&mut self) {
        if let Some(decompressor) = self.0.take() {
            SPARE_DECOMPRESSORS.keep(decompressor);
        }
    }
}

/// Decodes and verifies one stored frame that must hold `expected_len` plain bytes hashing as `check`
/// says. A raw frame's bytes are handed out where they were read, without a copy.
pub fn decode_frame(
    frame: impl Into<FrameBuffer>,
    check: &FrameCheck,
    expected_len: usize,
    decompressor: &mut LazyDecompressor,
) -> Result<Bytes, FrameError> {
    let frame = frame.into();
    let stored = frame.as_ref();
    if stored.len() < FRAME_HEADER_BYTES {
        return Err(FrameError::Truncated);
    }
    let header: [u8; FRAME_HEADER_BYTES] = stored[..FRAME_HEADER_BYTES].try_into().unwrap_or([0; FRAME_HEADER_BYTES]);
    let stored_hash = &header[6..38];
    match check {
        FrameCheck::Subtree { .. } if header[0] != FRAME_VERSION => {
            return Err(FrameError::UnsupportedVersion(header[0]))
        }
        FrameCheck::Keyed { .. } if header[0] != FRAME_VERSION_KEYED => {
            return Err(FrameError::UnsupportedVersion(header[0]))
        }
        FrameCheck::Subtree { hash, .. } if stored_hash != hash => return Err(FrameError::HeaderMismatch),
        _ => {}
    }
    let mut length = [0u8; 4];
    length.copy_from_slice(&header[2..6]);
    let plain_len = u32::from_be_bytes(length) as usize;
    if plain_len != expected_len || expected_len > FRAME_SIZE_BYTES_MAX as usize {
        return Err(FrameError::WrongLength { expected: expected_len, found: plain_len });
    }
    let plain = match header[1] {
        CODEC_RAW if stored.len() - FRAME_HEADER_BYTES != expected_len => {
            return Err(FrameError::WrongLength { expected: expected_len, found: stored.len() - FRAME_HEADER_BYTES })
        }
        CODEC_RAW => Bytes::from_owner(frame).slice(FRAME_HEADER_BYTES..),
        CODEC_ZSTD => {
            let mut plain = FrameBuffer::new(expected_len);
            let found = decompressor
                .get()
                .and_then(|d| d.decompress_to_buffer(&stored[FRAME_HEADER_BYTES..], plain.as_mut()))
                .map_err(|e| FrameError::Decompression(e.to_string()))?;
            if found != expected_len {
                return Err(FrameError::WrongLength { expected: expected_len, found });
            }
            Bytes::from_owner(plain)
        }
        other => return Err(FrameError::UnknownCodec(other)),
    };
    let matches = match *check {
        FrameCheck::Subtree { offset, hash, root } => {
            subtree_hash(offset, &plain, root).ok_or(FrameError::NotASubtree { offset, length: plain.len() })? == hash
        }
        FrameCheck::Keyed { upload_id, index } => keyed_checksum(upload_id, index, &plain)[..] == *stored_hash,
    };
    if !matches {
        return Err(FrameError::ChecksumMismatch);
    }
    Ok(plain)
}

/// Streams one document into frames. Finish with [`ContentWriter::finish`]; dropping the writer or
/// calling [`ContentWriter::abort`] discards what was written.
pub struct ContentWriter {
    blob: StoreBlobWriter,
    upload_id: u64,
    frame_size_bytes: u32,
    size_limit_bytes: u64,
    /// The frame being filled. A full frame is sealed only when more bytes come or at the finish, when
    /// it is known whether it is the document's only frame (whose hash is the document's).
    buffer: Vec<u8>,
    frame_lengths: Vec<u32>,
    frame_hashes: Vec<[u8; 32]>,
    size_bytes: u64,
    sha256: sha2::Sha256,
    codecs: Codecs,
}

/// Content fully written and synced but not yet visible: commit it with
/// [`StagedContent::commit_into`], then [`StagedContent::release`] it, or [`StagedContent::discard`] it.
pub struct StagedContent {
    pub blake3: Digest,
    pub manifest: Manifest,
    blob: StoreBlobWriter,
    blob_state: Option<crate::store::EngineState>,
}

impl ContentWriter {
    pub fn begin(store: &Store, config: &ContentConfig, size_limit_bytes: u64) -> Result<ContentWriter, ContentError> {
        assert!(
            is_tree_frame_size(config.frame_size_bytes),
            "frame size must be a power of two from FRAME_SIZE_BYTES_MIN to FRAME_SIZE_BYTES_MAX"
        );
        Ok(ContentWriter {
            blob: store.create_blob()?,
            // Kept in the manifest; it bound frames of version 1 to their upload.
            upload_id: rand_core::RngCore::next_u64(&mut rand_core::OsRng),
            frame_size_bytes: config.frame_size_bytes,
            size_limit_bytes: size_limit_bytes.min(FRAMES_PER_DOCUMENT_MAX * u64::from(config.frame_size_bytes)),
            buffer: Vec::with_capacity(config.frame_size_bytes as usize),
            frame_lengths: Vec::new(),
            frame_hashes: Vec::new(),
            size_bytes: 0,
            sha256: sha2::Sha256::new(),
            codecs: Codecs::new(config.zstd_level).map_err(ContentError::Compression)?,
        })
    }

    /// Bytes accepted so far.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    pub fn write(&mut self, mut data: &[u8]) -> Result<(), ContentError> {
        if self.size_bytes + data.len() as u64 > self.size_limit_bytes {
            return Err(ContentError::TooLarge { limit_bytes: self.size_limit_bytes });
        }
        self.size_bytes += data.len() as u64;
        self.sha256.update(data);
        let frame_size = self.frame_size_bytes as usize;
        while !data.is_empty() {
            if self.buffer.len() == frame_size {
                self.seal_frame(false)?;
            }
            if self.buffer.is_empty() && data.len() > frame_size {
                // A whole frame with more bytes after it, so not the last: sealed where it lies.
                let (frame, rest) = data.split_at(frame_size);
                self.seal(frame, false)?;
                data = rest;
                continue;
            }
            let room = frame_size - self.buffer.len();
            let (head, rest) = data.split_at(room.min(data.len()));
            self.buffer.extend_from_slice(head);
            data = rest;
        }
        Ok(())
    }

    /// Seals the buffered frame.
    fn seal_frame(&mut self, last: bool) -> Result<(), ContentError> {
        let mut buffer = std::mem::take(&mut self.buffer);
        let sealed = self.seal(&buffer, last);
        buffer.clear();
        self.buffer = buffer;
        sealed
    }

    /// Hashes, compresses if it shrinks, and appends the next frame, `plain`.
    fn seal(&mut self, plain: &[u8], last: bool) -> Result<(), ContentError> {
        let index = self.frame_lengths.len();
        let offset = index as u64 * u64::from(self.frame_size_bytes);
        // `begin` accepts only frame sizes whose frames are subtrees, and a sealed frame is never empty.
        let hash = subtree_hash(offset, plain, index == 0 && last).expect("a frame is a subtree");
        let (header, payload) = frame_parts(plain, &hash, &mut self.codecs).map_err(ContentError::Compression)?;
        self.blob.append_parts(&[&header, &payload])?;
        // A frame is at most FRAME_SIZE_BYTES_MAX plus its header, far below 4 GiB.
        self.frame_lengths.push(u32::try_from(header.len() + payload.len()).unwrap_or(u32::MAX));
        self.frame_hashes.push(hash);
        Ok(())
    }

    /// Writes the last frame, makes the frames durable, and returns the content's hashes and manifest.
    pub fn finish(mut self) -> Result<StagedContent, ContentError> {
        if !self.buffer.is_empty() {
            self.seal_frame(true)?;
        }
        let blake3 = document_hash(&self.frame_hashes, self.frame_size_bytes, self.size_bytes);
        if self.frame_hashes.len() == 1 {
            self.frame_hashes.clear();
        }
        let staged = self.blob.finish()?;
        Ok(StagedContent {
            blake3: Digest(blake3),
            manifest: Manifest {
                size_bytes: self.size_bytes,
                sha256: Digest(self.sha256.finalize().into()),
                frame_size_bytes: self.frame_size_bytes,
                upload_id: self.upload_id,
                blob: staged.reference,
                frame_lengths: self.frame_lengths,
                frame_hashes: self.frame_hashes,
                keyed_frames: false,
            },
            blob: self.blob,
            blob_state: staged.committed_state,
        })
    }

    /// Discards everything written so far.
    pub fn abort(self) -> Result<(), ContentError> {
        Ok(self.blob.discard()?)
    }
}

impl StagedContent {
    /// What the record's commit must carry to make this content visible.
    pub fn new_content(&self) -> NewContent {
        NewContent { blake3: self.blake3, manifest: codec::encode(&self.manifest), blob_state: self.blob_state.clone() }
    }

    /// After the commit that carried [`StagedContent::new_content`]: hands the blob back.
    pub fn release(self) {
        self.blob.release();
    }

    /// Drops the staged frames, for content that turned out to be stored already or was rejected.
    pub fn discard(self) -> Result<(), ContentError> {
        Ok(self.blob.discard()?)
    }
}

/// What [`ContentReader::next_chunk_at_hand`] found.
pub enum AtHand {
    /// The next verified piece.
    Piece(Bytes),
    /// The range is read, all of it verified.
    End,
    /// The next frame would have to come from the disk.
    NotAtHand,
}

/// One frame of the document: its index, and where its stored bytes are in the blob.
struct FrameAt {
    index: u32,
    offset: u64,
    length: u32,
}

/// Reads a byte range of a stored document, verifying every frame.
pub struct ContentReader {
    store: Store,
    blake3: Digest,
    manifest: Manifest,
    /// Offset in the blob of each frame.
    frame_offsets: Vec<u64>,
    position: u64,
    end: u64,
    /// Present when the whole document of keyed frames is read: checked against the content address at
    /// the end (frames of chaining values are each checked against the address).
    whole_hasher: Option<blake3::Hasher>,
    decompressor: LazyDecompressor,
    pending: Bytes,
}

impl ContentReader {
    /// A reader for `range` (start inclusive, end exclusive) or the whole document. The manifest's
    /// frame hashes are checked against the document's address here, before any frame is read.
    pub fn open(
        store: &Store,
        blake3: Digest,
        manifest: Manifest,
        range: Option<(u64, u64)>,
    ) -> Result<ContentReader, ContentError> {
        let size = manifest.size_bytes;
        let (start, end) = range.unwrap_or((0, size));
        if start > end || end > size {
            return Err(ContentError::RangeNotSatisfiable { start, end, size });
        }
        let corrupt = |reason: &str| ContentError::Corrupt { blake3, reason: reason.into() };
        if manifest.frame_size_bytes == 0 || manifest.frame_size_bytes > FRAME_SIZE_BYTES_MAX {
            return Err(corrupt("manifest has an impossible frame size"));
        }
        let frames_needed = size.div_ceil(u64::from(manifest.frame_size_bytes));
        if frames_needed != manifest.frame_lengths.len() as u64 {
            return Err(corrupt("manifest frame count does not match its size"));
        }
        let limit = FRAME_SIZE_BYTES_MAX as usize + FRAME_HEADER_BYTES;
        if manifest.frame_lengths.iter().any(|&length| length as usize > limit) {
            return Err(corrupt("manifest has an impossible frame length"));
        }
        if !manifest.keyed_frames {
            check_frame_hashes(&manifest, &blake3).map_err(corrupt)?;
        }
        let frame_offsets = manifest
            .frame_lengths
            .iter()
            .scan(0u64, |next, &length| {
                let offset = *next;
                *next += u64::from(length);
                Some(offset)
            })
            .collect();
        Ok(ContentReader {
            store: store.clone(),
            blake3,
            frame_offsets,
            whole_hasher: (manifest.keyed_frames && start == 0 && end == size).then(blake3::Hasher::new),
            manifest,
            position: start,
            end,
            decompressor: LazyDecompressor::default(),
            pending: Bytes::new(),
        })
    }

    pub fn remaining_bytes(&self) -> u64 {
        self.end - self.position + self.pending.len() as u64
    }

    fn corrupt(&self, reason: String) -> ContentError {
        ContentError::Corrupt { blake3: self.blake3, reason }
    }

    /// What frame `index`, starting `offset` bytes into the document, must hash to.
    fn frame_check(&self, index: u32, offset: u64) -> FrameCheck {
        if self.manifest.keyed_frames {
            return FrameCheck::Keyed { upload_id: self.manifest.upload_id, index };
        }
        match self.manifest.frame_hashes.get(index as usize) {
            Some(hash) => FrameCheck::Subtree { offset, hash: *hash, root: false },
            None => FrameCheck::Subtree { offset, hash: self.blake3.0, root: true },
        }
    }

    /// The next verified piece of the range (at most one frame), or `None` at the end.
    pub fn next_chunk(&mut self) -> Result<Option<Bytes>, ContentError> {
        let Some(frame) = self.next_frame()? else { return Ok(None) };
        let mut stored = FrameBuffer::new(frame.length as usize);
        self.store
            .read_blob(&self.manifest.blob, frame.offset, stored.as_mut())
            .map_err(|e| self.corrupt(format!("frame {} cannot be read: {e}", frame.index)))?;
        self.take_frame(frame, stored).map(Some)
    }

    /// Like [`ContentReader::next_chunk`], but without waiting for a disk: when the next frame's
    /// stored bytes are not at hand (not in the page cache), nothing moves and the answer says so,
    /// for the caller to read it with `next_chunk` on a blocking thread.
    pub fn next_chunk_at_hand(&mut self) -> Result<AtHand, ContentError> {
        let Some(frame) = self.next_frame()? else { return Ok(AtHand::End) };
        let mut stored = FrameBuffer::new(frame.length as usize);
        let at_hand = self
            .store
            .read_blob_if_at_hand(&self.manifest.blob, frame.offset, stored.as_mut())
            .map_err(|e| self.corrupt(format!("frame {} cannot be read: {e}", frame.index)))?;
        if at_hand {
            self.take_frame(frame, stored).map(AtHand::Piece)
        } else {
            Ok(AtHand::NotAtHand)
        }
    }

    /// The frame the next piece comes from, or `None` at the end of the range (its whole-document
    /// hash checked).
    fn next_frame(&mut self) -> Result<Option<FrameAt>, ContentError> {
        if self.position >= self.end {
            self.check_whole_hash()?;
            return Ok(None);
        }
        let index = self.position / u64::from(self.manifest.frame_size_bytes);
        let index = u32::try_from(index).map_err(|_| self.corrupt("frame index overflow".into()))?;
        Ok(Some(FrameAt {
            index,
            offset: self.frame_offsets[index as usize],
            length: self.manifest.frame_lengths[index as usize],
        }))
    }

    /// Verifies `frame`'s stored bytes and moves past the piece of the range they hold.
    fn take_frame(&mut self, frame: FrameAt, stored: FrameBuffer) -> Result<Bytes, ContentError> {
        let frame_size = u64::from(self.manifest.frame_size_bytes);
        let frame_start = u64::from(frame.index) * frame_size;
        let frame_len = frame_size.min(self.manifest.size_bytes - frame_start) as usize;
        let check = self.frame_check(frame.index, frame_start);
        let plain = decode_frame(stored, &check, frame_len, &mut self.decompressor)
            .map_err(|e| self.corrupt(format!("frame {}: {e}", frame.index)))?;
        if let Some(hasher) = self.whole_hasher.as_mut() {
            hasher.update(&plain);
        }
        let from = (self.position - frame_start) as usize;
        let to = ((self.end - frame_start) as usize).min(frame_len);
        self.position = frame_start + to as u64;
        if self.position >= self.end {
            // Check the whole-document hash before handing out the last piece.
            self.check_whole_hash()?;
        }
        Ok(plain.slice(from..to))
    }

    /// For a whole read of keyed frames: whether the bytes read hash to the document's address.
    fn check_whole_hash(&mut self) -> Result<(), ContentError> {
        match self.whole_hasher.take() {
            Some(hasher) if hasher.finalize().as_bytes() != &self.blake3.0 => {
                Err(self.corrupt("the document's bytes do not match its BLAKE3 address".into()))
            }
            _ => Ok(()),
        }
    }
}

/// Whether a manifest's frame hashes add up to the document's address: one per frame when there are
/// two or more, none otherwise (an empty document's address is the hash of nothing; a single frame is
/// checked against the address itself), frames of a size that makes them subtrees.
fn check_frame_hashes(manifest: &Manifest, blake3: &Digest) -> Result<(), &'static str> {
    if !is_tree_frame_size(manifest.frame_size_bytes) {
        return Err("manifest has a frame size that is not a subtree of BLAKE3's tree");
    }
    let (frames, hashes) = (manifest.frame_lengths.len(), manifest.frame_hashes.len());
    if frames == 1 && hashes == 0 {
        return Ok(());
    }
    if hashes != frames || frames == 1 {
        return Err("manifest's frame hashes do not match its frames");
    }
    if document_hash(&manifest.frame_hashes, manifest.frame_size_bytes, manifest.size_bytes) != blake3.0 {
        return Err("manifest's frame hashes do not add up to the document's BLAKE3 address");
    }
    Ok(())
}

impl io::Read for ContentReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pending.is_empty() {
            match self.next_chunk().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))? {
                None => return Ok(0),
                Some(chunk) => self.pending = chunk,
            }
        }
        let count = self.pending.len().min(buf.len());
        buf[..count].copy_from_slice(&self.pending.split_to(count));
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::Memory;
    use std::io::Read as _;

    fn store() -> Store {
        Store::new(Memory::new().engines()).expect("store")
    }

    fn write_content(store: &Store, data: &[u8], frame_size: u32) -> (Digest, Manifest) {
        write_in_pieces(store, data, frame_size, 1000)
    }

    fn write_in_pieces(store: &Store, data: &[u8], frame_size: u32, piece_size: usize) -> (Digest, Manifest) {
        let config = ContentConfig { frame_size_bytes: frame_size, ..ContentConfig::default() };
        let mut writer = ContentWriter::begin(store, &config, u64::MAX).expect("begin");
        for piece in data.chunks(piece_size) {
            writer.write(piece).expect("write");
        }
        let staged = writer.finish().expect("finish");
        let result = (staged.blake3, staged.manifest.clone());
        staged.release();
        result
    }

    fn mixed_bytes(len: usize) -> Vec<u8> {
        // Half text-like (compressible), half pseudo-random (not), so both codecs appear.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        (0..len)
            .map(|i| {
                if (i / 4096) % 2 == 0 {
                    b"Giay khai sinh "[i % 15]
                } else {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                }
            })
            .collect()
    }

    #[test]
    fn frames_sealed_where_they_lie_in_a_large_piece_are_the_frames_a_buffer_would_make() {
        // Pieces larger than a frame seal whole frames without copying them into the buffer; the last
        // frame (and a document of one frame, whose hash is the document's) still waits for the finish.
        let frame = 4096;
        for size in [frame, frame + 1, 3 * frame, 3 * frame + 7, 50_000] {
            let data = mixed_bytes(size);
            let expected = write_in_pieces(&store(), &data, frame as u32, 1000);
            let store = store();
            for piece in [frame - 1, frame, frame + 1, 2 * frame + 5, size] {
                let (blake3, manifest) = write_in_pieces(&store, &data, frame as u32, piece);
                assert_eq!(blake3, Digest(*blake3::hash(&data).as_bytes()), "size {size}, pieces of {piece}");
                assert_eq!(
                    (blake3, &manifest.frame_lengths, &manifest.frame_hashes, manifest.sha256),
                    (expected.0, &expected.1.frame_lengths, &expected.1.frame_hashes, expected.1.sha256)
                );
                assert_eq!(read_range(&store, blake3, &manifest, None).expect("read"), data);
            }
        }
    }

    #[test]
    fn whole_and_ranged_reads_return_exact_bytes() {
        let store = store();
        let data = mixed_bytes(50_000);
        let (blake3, manifest) = write_content(&store, &data, 4096);
        assert_eq!(blake3, Digest(*blake3::hash(&data).as_bytes()));
        assert_eq!(manifest.sha256, Digest::sha256(&data));
        assert_eq!(manifest.frame_lengths.len(), 13);
        assert_eq!(manifest.frame_hashes.len(), 13);
        let mut whole = Vec::new();
        ContentReader::open(&store, blake3, manifest.clone(), None)
            .expect("open")
            .read_to_end(&mut whole)
            .expect("read");
        assert_eq!(whole, data);
        for (start, end) in [(0, 1), (4095, 4097), (10_000, 30_000), (49_999, 50_000), (7, 7)] {
            let mut part = Vec::new();
            ContentReader::open(&store, blake3, manifest.clone(), Some((start, end)))
                .expect("open")
                .read_to_end(&mut part)
                .expect("read");
            assert_eq!(part, &data[start as usize..end as usize], "range {start}..{end}");
        }
        assert!(matches!(
            ContentReader::open(&store, blake3, manifest, Some((10, 50_001))),
            Err(ContentError::RangeNotSatisfiable { .. })
        ));
    }

    fn read_range(
        store: &Store,
        blake3: Digest,
        manifest: &Manifest,
        range: Option<(u64, u64)>,
    ) -> Result<Vec<u8>, ContentError> {
        let mut reader = ContentReader::open(store, blake3, manifest.clone(), range)?;
        let mut bytes = Vec::new();
        while let Some(chunk) = reader.next_chunk()? {
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }

    /// Reads the range as an async task does: at hand where it can, otherwise (as on a blocking
    /// thread) with `next_chunk`. Returns the bytes and how many frames were not at hand.
    fn read_at_hand(reader: &mut ContentReader) -> Result<(Vec<u8>, usize), ContentError> {
        let (mut bytes, mut not_at_hand) = (Vec::new(), 0);
        loop {
            match reader.next_chunk_at_hand()? {
                AtHand::Piece(piece) => bytes.extend_from_slice(&piece),
                AtHand::End => return Ok((bytes, not_at_hand)),
                AtHand::NotAtHand => {
                    not_at_hand += 1;
                    match reader.next_chunk()? {
                        Some(piece) => bytes.extend_from_slice(&piece),
                        None => panic!("a frame not at hand was still to come"),
                    }
                }
            }
        }
    }

    #[test]
    fn a_reader_takes_frames_at_hand_and_leaves_those_that_are_not_for_a_blocking_read() {
        let memory = crate::store::memory::Memory::new();
        let data = mixed_bytes(50_000);
        let (blake3, manifest) = write_content(&Store::new(memory.engines()).expect("store"), &data, 4096);
        // Memory's blobs are always at hand; through the fault wrapper (which answers as an engine that
        // cannot tell), no frame is, and every one is read by `next_chunk` instead, none skipped.
        let always = Store::new(memory.engines()).expect("store");
        let never = Store::new(crate::store::fault::wrap(memory.engines(), crate::store::fault::Faults::never()))
            .expect("store");
        for range in [None, Some((4095, 30_001)), Some((49_999, 50_000)), Some((7, 7))] {
            let (start, end) = range.map_or((0, data.len()), |(s, e)| (s as usize, e as usize));
            let expected_frames = if start == end { 0 } else { (end - 1) / 4096 - start / 4096 + 1 };
            let mut reader = ContentReader::open(&always, blake3, manifest.clone(), range).expect("open");
            let (bytes, not_at_hand) = read_at_hand(&mut reader).expect("read");
            assert_eq!((bytes.as_slice(), not_at_hand), (&data[start..end], 0), "{range:?} at hand");
            let mut reader = ContentReader::open(&never, blake3, manifest.clone(), range).expect("open");
            let (bytes, not_at_hand) = read_at_hand(&mut reader).expect("read");
            assert_eq!((bytes.as_slice(), not_at_hand), (&data[start..end], expected_frames), "{range:?} not at hand");
        }

        // Damage (in a frame stored raw, where its bytes can be found) is found the same way at hand.
        assert!(memory.flip_bytes(&data[20_580..20_644]) > 0);
        let mut reader = ContentReader::open(&always, blake3, manifest, None).expect("open");
        assert!(matches!(read_at_hand(&mut reader), Err(ContentError::Corrupt { .. })));
    }

    #[test]
    fn the_document_hash_is_built_from_its_frames_hashes_at_every_size() {
        let store = store();
        for frame_size in [1024u32, 4096] {
            let frame = frame_size as usize;
            for size in [0, 1, 1023, 1024, 1025, 2048, 4096, 4097, 3 * 4096 + 5, 17 * 4096, 37 * 1024 + 1, 65536 + 7] {
                let data = mixed_bytes(size);
                // Written in small pieces, and in pieces of exactly a frame: a full frame is sealed as
                // the only one or as the first of several only once that is known.
                for piece in [1000, frame] {
                    let config = ContentConfig { frame_size_bytes: frame_size, ..ContentConfig::default() };
                    let mut writer = ContentWriter::begin(&store, &config, u64::MAX).expect("begin");
                    for bytes in data.chunks(piece) {
                        writer.write(bytes).expect("write");
                    }
                    let staged = writer.finish().expect("finish");
                    let (blake3, manifest) = (staged.blake3, staged.manifest.clone());
                    staged.release();
                    assert_eq!(blake3, Digest(*blake3::hash(&data).as_bytes()), "{size} bytes in frames of {frame}");
                    let frames = size.div_ceil(frame);
                    assert_eq!(manifest.frame_lengths.len(), frames);
                    assert_eq!(manifest.frame_hashes.len(), if frames > 1 { frames } else { 0 });
                    assert_eq!(read_range(&store, blake3, &manifest, None).expect("whole"), data);
                    let (start, end) = (size / 3, (size * 2 / 3 + 1).min(size));
                    let part = read_range(&store, blake3, &manifest, Some((start as u64, end as u64)));
                    assert_eq!(part.expect("range"), &data[start..end]);
                }
            }
        }
    }

    #[test]
    fn a_manifest_whose_frame_hashes_do_not_add_up_is_refused_before_any_frame_is_read() {
        let store = store();
        let data = mixed_bytes(3 * 4096 + 100);
        let (blake3, manifest) = write_content(&store, &data, 4096);
        let mut other_data = mixed_bytes(4096 + 1);
        other_data[15] ^= 1;
        let (other, other_manifest) = write_content(&store, &other_data, 4096);
        let refused = |manifest: &Manifest, range| {
            matches!(
                ContentReader::open(&store, blake3, manifest.clone(), range),
                Err(ContentError::Corrupt { ref reason, .. }) if reason.contains("frame")
            )
        };
        let mut changed_hash = manifest.clone();
        changed_hash.frame_hashes[3][0] ^= 1;
        assert!(refused(&changed_hash, Some((0, 10))), "a range far from the changed frame is refused too");
        let mut missing_hash = manifest.clone();
        missing_hash.frame_hashes.pop();
        assert!(refused(&missing_hash, None));
        let mut swapped = manifest.clone();
        swapped.frame_hashes.swap(0, 1);
        assert!(refused(&swapped, None));
        let mut odd_frames = manifest.clone();
        odd_frames.frame_size_bytes = 4000;
        odd_frames.frame_lengths.push(38);
        odd_frames.frame_hashes.push([0; 32]);
        assert!(refused(&odd_frames, None));
        let (single, single_manifest) = write_content(&store, b"one frame", 4096);
        let mut with_hash = single_manifest.clone();
        with_hash.frame_hashes.push(single.0);
        assert!(matches!(ContentReader::open(&store, single, with_hash, None), Err(ContentError::Corrupt { .. })));
        assert!(matches!(
            ContentReader::open(&store, other, manifest.clone(), None),
            Err(ContentError::Corrupt { .. })
        ));
        // Frames that are sound in themselves but are another document's: refused by the manifest's hashes.
        let mut other_frames = manifest.clone();
        other_frames.blob = other_manifest.blob.clone();
        other_frames.frame_lengths[..2].copy_from_slice(&other_manifest.frame_lengths);
        let error = read_range(&store, blake3, &other_frames, Some((10, 20))).expect_err("another document's frame");
        assert!(error.to_string().contains("frame 0"), "{error}");
        assert_eq!(read_range(&store, blake3, &manifest, Some((10, 20))).expect("range"), &data[10..20]);
    }

    /// A frame of version 1, as stored before frames carried chaining values.
    fn keyed_frame(plain: &[u8], upload_id: u64, index: u32) -> Vec<u8> {
        let mut frame = vec![FRAME_VERSION_KEYED, CODEC_RAW];
        frame.extend_from_slice(&(plain.len() as u32).to_be_bytes());
        frame.extend_from_slice(&keyed_checksum(upload_id, index, plain));
        frame.extend_from_slice(plain);
        frame
    }

    #[test]
    fn content_stored_with_keyed_frames_reads_as_before() {
        let store = store();
        let data = mixed_bytes(2500);
        // Builds that kept keyed frames accepted any frame size.
        let frame_size = 1000u32;
        let mut blob = store.create_blob().expect("blob");
        let mut frame_lengths = Vec::new();
        for (index, plain) in data.chunks(frame_size as usize).enumerate() {
            let frame = keyed_frame(plain, 77, index as u32);
            blob.append(&frame).expect("append");
            frame_lengths.push(frame.len() as u32);
        }
        let reference = blob.finish().expect("finish").reference;
        blob.release();
        let stored = codec::encode(&KeyedManifest {
            size_bytes: data.len() as u64,
            sha256: Digest::sha256(&data),
            frame_size_bytes: frame_size,
            upload_id: 77,
            blob: reference,
            frame_lengths,
        });
        let manifest = Manifest::decode(&stored).expect("an older manifest decodes");
        assert!(manifest.keyed_frames && manifest.frame_hashes.is_empty());
        let blake3 = Digest(*blake3::hash(&data).as_bytes());
        assert_eq!(read_range(&store, blake3, &manifest, None).expect("whole"), data);
        assert_eq!(read_range(&store, blake3, &manifest, Some((900, 2100))).expect("range"), &data[900..2100]);
        // The whole document's hash is still checked before its last piece.
        let wrong_address = Digest([9; 32]);
        let mut reader = ContentReader::open(&store, wrong_address, manifest.clone(), None).expect("open");
        assert!(reader.next_chunk().expect("first frame").is_some());
        assert!(reader.next_chunk().expect("second frame").is_some());
        assert!(matches!(reader.next_chunk(), Err(ContentError::Corrupt { .. })));
        // A frame at another index does not verify, and the two layouts never decode as each other.
        let mut moved = manifest.clone();
        moved.upload_id = 78;
        assert!(read_range(&store, blake3, &moved, Some((0, 10))).is_err());
        let (_, current) = write_content(&store, &data, 1024);
        let encoded = codec::encode(&current);
        assert_eq!(Manifest::decode(&encoded).expect("decodes"), current);
        assert!(codec::decode::<KeyedManifest>(&encoded).is_err());
        assert!(codec::decode::<Manifest>(&stored).is_err());
    }

    #[test]
    fn incompressible_frames_are_stored_raw_and_compressible_ones_shrink() {
        let store = store();
        let text = b"CONG HOA XA HOI CHU NGHIA VIET NAM ".repeat(3000);
        let (_, manifest) = write_content(&store, &text, 65536);
        assert!(manifest.stored_bytes() < text.len() as u64 / 10);
        let random: Vec<u8> =
            mixed_bytes(200_000).into_iter().enumerate().filter(|(i, _)| (i / 4096) % 2 == 1).map(|(_, b)| b).collect();
        let (_, manifest) = write_content(&store, &random, 65536);
        let overhead = manifest.frame_lengths.len() as u64 * FRAME_HEADER_BYTES as u64;
        assert_eq!(manifest.stored_bytes(), random.len() as u64 + overhead);
    }

    #[test]
    fn size_limit_is_enforced_while_streaming() {
        let store = store();
        let mut writer = ContentWriter::begin(&store, &ContentConfig::default(), 10).expect("begin");
        writer.write(&[1; 10]).expect("at the limit");
        assert!(matches!(writer.write(&[1]), Err(ContentError::TooLarge { limit_bytes: 10 })));
        // Whatever the limit asked, no document has more frames than a manifest can hold.
        let config = ContentConfig { frame_size_bytes: 1024, ..ContentConfig::default() };
        let mut writer = ContentWriter::begin(&store, &config, u64::MAX).expect("begin");
        let ceiling = FRAMES_PER_DOCUMENT_MAX * 1024;
        for _ in 0..FRAMES_PER_DOCUMENT_MAX {
            writer.write(&[7; 1024]).expect("within the frames a manifest holds");
        }
        assert!(matches!(writer.write(&[1]), Err(ContentError::TooLarge { limit_bytes }) if limit_bytes == ceiling));
        let staged = writer.finish().expect("finish");
        let stored = codec::encode(&staged.manifest);
        assert!(stored.len() as u64 <= codec::VALUE_SIZE_BYTES_MAX, "{} bytes", stored.len());
        assert_eq!(Manifest::decode(&stored).expect("the largest manifest decodes"), staged.manifest);
        let blake3 = staged.blake3;
        let manifest = staged.manifest.clone();
        staged.release();
        let mut reader = ContentReader::open(&store, blake3, manifest, Some((ceiling - 5, ceiling))).expect("open");
        assert_eq!(reader.next_chunk().expect("read").expect("bytes"), &[7; 5][..]);
    }

    #[test]
    fn aborted_uploads_leave_nothing() {
        let store = store();
        let pack_size = || store.size_on_disk().expect("size");
        write_content(&store, &[1; 5000], 1024);
        let committed = pack_size();
        let config = ContentConfig { frame_size_bytes: 1024, zstd_level: 1 };
        let mut writer = ContentWriter::begin(&store, &config, u64::MAX).expect("begin");
        writer.write(&mixed_bytes(3000)).expect("write");
        writer.abort().expect("abort");
        assert_eq!(pack_size(), committed);
        let mut writer = ContentWriter::begin(&store, &config, u64::MAX).expect("begin");
        writer.write(&mixed_bytes(3000)).expect("write");
        drop(writer);
        assert_eq!(pack_size(), committed);
        let mut writer = ContentWriter::begin(&store, &config, u64::MAX).expect("begin");
        writer.write(&mixed_bytes(3000)).expect("write");
        writer.finish().expect("finish").discard().expect("discard");
        assert_eq!(pack_size(), committed);
    }

    #[test]
    fn corrupt_frames_are_detected() {
        let mut codecs = Codecs::new(3).expect("zstd");
        let mut decompressor = LazyDecompressor::default();
        let plain = b"hello hello hello hello hello hello".to_vec();
        let expected = subtree_hash(4096, &plain, false).expect("a subtree");
        let check = FrameCheck::Subtree { offset: 4096, hash: expected, root: false };
        let frame = encode_frame(&plain, &expected, &mut codecs).expect("encode");
        assert_eq!(decode_frame(frame.clone(), &check, plain.len(), &mut decompressor), Ok(Bytes::from(plain.clone())));
        // The same bytes at another place in the document, or as a whole document, hash otherwise.
        for (offset, root) in [(8192, false), (0, false), (0, true)] {
            let hash = subtree_hash(offset, &plain, root).expect("a subtree");
            let moved = FrameCheck::Subtree { offset, hash, root };
            let reframed = encode_frame(&plain, &hash, &mut codecs).expect("encode");
            assert_eq!(
                decode_frame(reframed.clone(), &moved, plain.len(), &mut decompressor),
                Ok(Bytes::from(plain.clone()))
            );
            assert_eq!(decode_frame(reframed, &check, plain.len(), &mut decompressor), Err(FrameError::HeaderMismatch));
        }
        // Other bytes under the expected hash: the header agrees with the manifest, the bytes do not.
        let mut other = plain.clone();
        other[3] = b'X';
        let forged = encode_frame(&other, &expected, &mut codecs).expect("encode");
        assert_eq!(decode_frame(forged, &check, plain.len(), &mut decompressor), Err(FrameError::ChecksumMismatch));
        // Some zstd header bits do not change the output; what must never happen is wrong bytes.
        let mut rejected = 0;
        for index in 0..frame.len() {
            let mut bad = frame.clone();
            bad[index] ^= 0x10;
            match decode_frame(bad, &check, plain.len(), &mut decompressor) {
                Ok(bytes) => assert_eq!(bytes, plain, "flip at {index} produced wrong bytes"),
                Err(_) => rejected += 1,
            }
        }
        assert!(rejected >= frame.len() - 4, "only {rejected} of {} flips were rejected", frame.len());
        assert_eq!(
            decode_frame(frame[..10].to_vec(), &check, plain.len(), &mut decompressor),
            Err(FrameError::Truncated)
        );
        // A check no subtree can satisfy is an error, never a panic.
        let long = vec![7u8; 2048];
        for (offset, root, input) in
            [(100, false, &plain[..]), (4096, true, &plain[..]), (1024, false, &long[..]), (4096, false, &[][..])]
        {
            let impossible = FrameCheck::Subtree { offset, hash: expected, root };
            let encoded = encode_frame(input, &expected, &mut codecs).expect("encode");
            assert_eq!(
                decode_frame(encoded, &impossible, input.len(), &mut decompressor),
                Err(FrameError::NotASubtree { offset, length: input.len() })
            );
        }
    }

    #[test]
    fn frames_are_compressed_only_when_their_sample_and_then_the_whole_save_enough() {
        let mut codecs = Codecs::new(ZSTD_LEVEL_DEFAULT).expect("zstd");
        let mut decompressor = LazyDecompressor::default();
        let noise = |len: usize, seed: u64| crate::sample::document(len, seed, false);
        let frame = FRAME_SIZE_BYTES_DEFAULT as usize;
        let text = crate::sample::document(frame, 1, true);
        // Compressible at the edges, noise in the middle: the sample decides, the frame is not tried.
        let mut noisy_middle = text.clone();
        let middle = (frame - COMPRESSION_PROBE_SAMPLE_BYTES) / 2;
        noisy_middle[middle..middle + COMPRESSION_PROBE_SAMPLE_BYTES]
            .copy_from_slice(&noise(COMPRESSION_PROBE_SAMPLE_BYTES, 2));
        // 1 KiB of text amid noise: the sample saves enough, but the whole saves under 1/32.
        let mut noise_around = noise(frame, 3);
        noise_around[frame / 2..frame / 2 + 1024].copy_from_slice(&text[..1024]);
        let sample = &noise_around[middle..middle + COMPRESSION_PROBE_SAMPLE_BYTES];
        let tried = zstd::bulk::compress(sample, COMPRESSION_PROBE_LEVEL).expect("zstd").len();
        let whole = zstd::bulk::compress(&noise_around, ZSTD_LEVEL_DEFAULT).expect("zstd").len();
        assert!(saves_enough(sample.len(), tried) && !saves_enough(frame, whole), "{tried} {whole}");
        for (plain, codec) in [
            (text.clone(), CODEC_ZSTD),
            (noise(frame, 4), CODEC_RAW),
            (noisy_middle, CODEC_RAW),
            (noise_around, CODEC_RAW),
            (b"short short short short short".to_vec(), CODEC_ZSTD),
        ] {
            let hash = subtree_hash(2 * 65536, &plain, false).expect("a subtree");
            let check = FrameCheck::Subtree { offset: 2 * 65536, hash, root: false };
            let encoded = encode_frame(&plain, &hash, &mut codecs).expect("encode");
            assert_eq!(encoded[1], codec);
            assert_eq!(decode_frame(encoded, &check, plain.len(), &mut decompressor), Ok(Bytes::from(plain)));
        }
    }

    #[test]
    fn kept_zstd_contexts_compress_at_the_level_asked_and_decompress_as_new_ones() {
        let plain = b"CONG HOA XA HOI CHU NGHIA VIET NAM, Doc lap - Tu do - Hanh phuc ".repeat(1000);
        let (fast, slow) =
            (zstd::bulk::compress(&plain, 1).expect("zstd"), zstd::bulk::compress(&plain, 19).expect("zstd"));
        assert_ne!(fast, slow, "the levels give different output, so a context at the wrong one shows");
        for round in 0..4 {
            // Each writer's compressors go back to the spares when dropped and serve the next writer.
            for (level, expected) in [(1, &fast), (19, &slow), (1, &fast)] {
                let mut codecs = Codecs::new(level).expect("zstd");
                assert_eq!(codecs.compressors().level, level);
                let compressed = codecs.compressors().compressor.compress(&plain).expect("compress");
                assert_eq!(&compressed, expected, "round {round}, level {level}");
                assert!(compressed_payload_is_sound(&plain, &compressed, &mut codecs.checker));
            }
        }
        assert!(SPARE_COMPRESSORS.spares.lock().expect("spares").len() <= ZSTD_CONTEXTS_KEPT);
        assert!(SPARE_DECOMPRESSORS.spares.lock().expect("spares").len() <= ZSTD_CONTEXTS_KEPT);
    }

    #[test]
    fn frame_buffers_go_back_to_the_spares_and_a_reused_one_serves_only_the_frame_read_into_it() {
        let store = store();
        // Frames of the default size, raw and compressed, then shorter ones read into the same buffers.
        let long = mixed_bytes(5 * FRAME_SIZE_BYTES_DEFAULT as usize + 123);
        let short = mixed_bytes(9_000);
        let (long_hash, long_manifest) = write_content(&store, &long, FRAME_SIZE_BYTES_DEFAULT);
        let (short_hash, short_manifest) = write_content(&store, &short, FRAME_SIZE_BYTES_DEFAULT);
        // Buffers full of a byte no frame here holds in a row, as if an earlier frame had been read into them.
        let stale: Vec<FrameBuffer> = (0..8)
            .map(|_| {
                let mut buffer = FrameBuffer::new(SPARE_FRAME_BYTES);
                buffer.as_mut().fill(0xEE);
                buffer
            })
            .collect();
        drop(stale);
        for round in 0..3 {
            for (blake3, manifest, data) in [(long_hash, &long_manifest, &long), (short_hash, &short_manifest, &short)]
            {
                let mut reader = ContentReader::open(&store, blake3, manifest.clone(), None).expect("open");
                let mut pieces = Vec::new();
                while let Some(piece) = reader.next_chunk().expect("verified") {
                    pieces.push(piece);
                }
                assert!(pieces.concat() == *data, "round {round}: {} bytes read back exactly", data.len());
                // A piece of a frame keeps its buffer until the piece itself is dropped.
                let kept = pieces.first().cloned().expect("a piece");
                drop(pieces);
                assert!(kept[..] == data[..kept.len()]);
            }
        }
        let many: Vec<FrameBuffer> = (0..FRAME_BUFFERS_KEPT + 10).map(|_| FrameBuffer::new(100)).collect();
        drop(many);
        assert!(SPARE_FRAME_BUFFERS.spares.lock().expect("spares").len() <= FRAME_BUFFERS_KEPT);
        // A frame larger than a kept buffer gets one of its own size.
        let large = FrameBuffer::new(SPARE_FRAME_BYTES + 1);
        assert_eq!(large.as_ref().len(), SPARE_FRAME_BYTES + 1);
    }

    #[test]
    fn compressed_output_that_does_not_round_trip_is_never_stored() {
        let mut codecs = Codecs::new(3).expect("zstd");
        let plain = b"CONG HOA XA HOI CHU NGHIA VIET NAM ".repeat(100);
        let good = codecs.compressors().compressor.compress(&plain).expect("compress");
        assert!(compressed_payload_is_sound(&plain, &good, &mut codecs.checker));
        // What a faulty compressor could return: valid zstd of other bytes, and bytes that are not zstd.
        let mut other = plain.clone();
        other[7] ^= 1;
        let wrong = codecs.compressors().compressor.compress(&other).expect("compress");
        assert!(!compressed_payload_is_sound(&plain, &wrong, &mut codecs.checker));
        let mut garbled = good.clone();
        let middle = garbled.len() / 2;
        garbled[middle] ^= 0xff;
        assert!(!compressed_payload_is_sound(&plain, &garbled, &mut codecs.checker));
        assert!(!compressed_payload_is_sound(&plain, &garbled[..4], &mut codecs.checker));
    }
}
