//! The in-memory engine, for tests and fuzzing: no files, no fsyncs, and a model of what a crash
//! keeps. Batches applied since the last `sync` and blob bytes not yet finished are volatile;
//! [`Memory::crash`] gives a new, independent store holding only what was durable.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use super::{Batch, BlobRef, BlobWriter, Blobs, CatalogEngine, Engines, Entries, OpenReport, StagedBlob, StoreError};

/// A memory catalog and memory blobs that belong together.
#[derive(Clone, Default)]
pub struct Memory {
    catalog: Arc<MemoryCatalog>,
    blobs: Arc<MemoryBlobs>,
}

#[derive(Default)]
struct MemoryCatalog {
    state: Mutex<CatalogState>,
}

#[derive(Default, Clone)]
struct CatalogState {
    live: BTreeMap<Vec<u8>, Vec<u8>>,
    durable: BTreeMap<Vec<u8>, Vec<u8>>,
    pending: Vec<Batch>,
}

type Objects = Arc<Mutex<HashMap<u64, MemoryObject>>>;

#[derive(Default)]
struct MemoryBlobs {
    objects: Objects,
    next_id: Mutex<u64>,
}

#[derive(Default, Clone)]
struct MemoryObject {
    bytes: Vec<u8>,
    durable_length: usize,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn apply_to(map: &mut BTreeMap<Vec<u8>, Vec<u8>>, batch: &Batch) {
    for (key, value) in &batch.operations {
        match value {
            Some(value) => map.insert(key.clone(), value.clone()),
            None => map.remove(key),
        };
    }
}

impl Memory {
    pub fn new() -> Memory {
        Memory::default()
    }

    /// The engines to open a store on.
    pub fn engines(&self) -> Engines {
        Engines { catalog: self.catalog.clone(), blobs: self.blobs.clone(), report: OpenReport::default() }
    }

    /// Damage for tests: flips one byte in the middle of every occurrence of `needle` in the stored
    /// catalog values and blob bytes (live and durable alike), as a bad disk would. Returns how many
    /// places were flipped. Tests name what to damage by its bytes, never by a key.
    pub fn flip_bytes(&self, needle: &[u8]) -> usize {
        fn flip(bytes: &mut [u8], needle: &[u8]) -> usize {
            let positions: Vec<usize> =
                bytes.windows(needle.len()).enumerate().filter(|(_, w)| *w == needle).map(|(i, _)| i).collect();
            for position in &positions {
                bytes[position + needle.len() / 2] ^= 0x40;
            }
            positions.len()
        }
        let mut flipped = 0;
        let mut state = lock(&self.catalog.state);
        for value in state.live.values_mut() {
            flipped += flip(value, needle);
        }
        for value in state.durable.values_mut() {
            flip(value, needle);
        }
        for object in lock(&self.blobs.objects).values_mut() {
            flipped += flip(&mut object.bytes, needle);
        }
        flipped
    }

    /// What a power cut at this moment would leave: a separate store with the durable state only.
    pub fn crash(&self) -> Memory {
        let state = lock(&self.catalog.state).clone();
        let catalog = CatalogState { live: state.durable.clone(), durable: state.durable, pending: Vec::new() };
        let objects = lock(&self.blobs.objects)
            .iter()
            .map(|(id, object)| {
                let bytes = object.bytes[..object.durable_length].to_vec();
                (*id, MemoryObject { durable_length: bytes.len(), bytes })
            })
            .collect();
        Memory {
            catalog: Arc::new(MemoryCatalog { state: Mutex::new(catalog) }),
            blobs: Arc::new(MemoryBlobs {
                objects: Arc::new(Mutex::new(objects)),
                next_id: Mutex::new(*lock(&self.blobs.next_id)),
            }),
        }
    }
}

impl CatalogEngine for MemoryCatalog {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(lock(&self.state).live.get(key).cloned())
    }

    fn scan<'a>(&'a self, prefix: &[u8], after: Option<&[u8]>) -> Entries<'a> {
        let state = lock(&self.state);
        let start = match after {
            Some(after) => std::ops::Bound::Excluded(after.to_vec()),
            None => std::ops::Bound::Included(prefix.to_vec()),
        };
        let pairs: Vec<_> = state
            .live
            .range((start, std::ops::Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, value)| Ok((key.clone(), value.clone())))
            .collect();
        Box::new(pairs.into_iter())
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        let mut state = lock(&self.state);
        apply_to(&mut state.live, &batch);
        state.pending.push(batch);
        Ok(())
    }

    fn sync(&self) -> Result<(), StoreError> {
        let mut state = lock(&self.state);
        let pending = std::mem::take(&mut state.pending);
        for batch in &pending {
            apply_to(&mut state.durable, batch);
        }
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(lock(&self.state).live.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum())
    }
}

impl Blobs for MemoryBlobs {
    fn create(&self) -> Result<Box<dyn BlobWriter>, StoreError> {
        let mut next_id = lock(&self.next_id);
        let id = *next_id;
        *next_id += 1;
        lock(&self.objects).insert(id, MemoryObject::default());
        Ok(Box::new(MemoryWriter { objects: self.objects.clone(), id, released: false }))
    }

    fn read(&self, blob: &BlobRef, offset: u64, into: &mut [u8]) -> Result<(), StoreError> {
        let length = into.len();
        let id = blob
            .0
            .as_slice()
            .try_into()
            .map(u64::from_be_bytes)
            .map_err(|_| StoreError::Corrupt("not a memory blob".into()))?;
        let objects = lock(&self.objects);
        let object = objects.get(&id).ok_or_else(|| StoreError::Corrupt(format!("memory blob {id} is missing")))?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let bytes = start
            .checked_add(length)
            .and_then(|end| object.bytes.get(start..end))
            .ok_or_else(|| StoreError::Corrupt(format!("read of {length} bytes at {offset} is outside blob {id}")))?;
        into.copy_from_slice(bytes);
        Ok(())
    }

    fn read_if_at_hand(&self, blob: &BlobRef, offset: u64, into: &mut [u8]) -> Result<bool, StoreError> {
        self.read(blob, offset, into).map(|()| true)
    }

    fn digest_into(&self, hasher: &mut blake3::Hasher) -> Result<(), StoreError> {
        let objects = lock(&self.objects);
        let mut ids: Vec<_> = objects.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            if let Some(object) = objects.get(&id).filter(|o| !o.bytes.is_empty()) {
                hasher.update(&id.to_be_bytes());
                hasher.update(&object.bytes);
            }
        }
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(lock(&self.objects).values().map(|o| o.bytes.len() as u64).sum())
    }
}

struct MemoryWriter {
    objects: Objects,
    id: u64,
    released: bool,
}

impl BlobWriter for MemoryWriter {
    fn append(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        if let Some(object) = lock(&self.objects).get_mut(&self.id) {
            object.bytes.extend_from_slice(bytes);
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<StagedBlob, StoreError> {
        if let Some(object) = lock(&self.objects).get_mut(&self.id) {
            object.durable_length = object.bytes.len();
        }
        Ok(StagedBlob { reference: BlobRef(self.id.to_be_bytes().to_vec()), committed_state: None })
    }

    fn release(mut self: Box<Self>) {
        self.released = true;
    }

    fn discard(self: Box<Self>) -> Result<(), StoreError> {
        Ok(()) // dropping removes it
    }
}

impl Drop for MemoryWriter {
    fn drop(&mut self) {
        if !self.released {
            lock(&self.objects).remove(&self.id);
        }
    }
}
