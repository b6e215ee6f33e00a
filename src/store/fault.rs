//! A fault-injecting wrapper around any engine: a countdown makes the N-th operation of a kind (write,
//! sync, read) fail, or tear (a write that lands in part, or in full while reporting failure; a read
//! that returns damaged bytes). Tests and the model-based fuzz target use it to show that a fault is
//! an error, never a lost acknowledgement or wrong bytes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use super::{Batch, BlobRef, BlobWriter, Blobs, CatalogEngine, Engines, Entries, StagedBlob, StoreError};

/// Which operations count down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Write,
    Sync,
    Read,
}

/// What happens when the countdown reaches zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The operation does nothing and returns an error.
    Fail,
    /// A write lands in part (blobs) or in full (an atomic catalog batch) and returns an error; a sync
    /// happens and returns an error; a read returns its bytes with one bit flipped.
    Tear,
}

/// The plan: the `after`-th operation of kind `operation` (counting from 1) gets `fault`, once.
#[derive(Debug)]
pub struct Faults {
    operation: Operation,
    fault: Fault,
    remaining: AtomicU64,
    fired: AtomicBool,
}

impl Faults {
    pub fn new(operation: Operation, after: u64, fault: Fault) -> Arc<Faults> {
        Arc::new(Faults { operation, fault, remaining: AtomicU64::new(after), fired: AtomicBool::new(false) })
    }

    /// A plan that never fires: the wrapper must then be invisible.
    pub fn never() -> Arc<Faults> {
        Faults::new(Operation::Read, u64::MAX, Fault::Fail)
    }

    /// Whether the fault has fired.
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::Acquire)
    }

    /// Counts one operation; the fault to inject now, if any.
    fn step(&self, operation: Operation) -> Option<Fault> {
        if operation != self.operation || self.fired() {
            return None;
        }
        let before = self.remaining.fetch_sub(1, Ordering::AcqRel);
        (before == 1 && !self.fired.swap(true, Ordering::AcqRel)).then_some(self.fault)
    }
}

/// Wraps both engines of `engines` with the plan.
pub fn wrap(engines: Engines, faults: Arc<Faults>) -> Engines {
    Engines {
        catalog: Arc::new(FaultyCatalog { inner: engines.catalog, faults: faults.clone() }),
        blobs: Arc::new(FaultyBlobs { inner: engines.blobs, faults }),
        report: engines.report,
    }
}

struct FaultyCatalog {
    inner: Arc<dyn CatalogEngine>,
    faults: Arc<Faults>,
}

impl CatalogEngine for FaultyCatalog {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.faults.step(Operation::Read) {
            Some(_) => Err(StoreError::Injected("catalog read")),
            None => self.inner.get(key),
        }
    }

    fn scan<'a>(&'a self, prefix: &[u8], after: Option<&[u8]>) -> Entries<'a> {
        let faults = self.faults.clone();
        Box::new(self.inner.scan(prefix, after).map(move |item| match faults.step(Operation::Read) {
            Some(_) => Err(StoreError::Injected("catalog scan")),
            None => item,
        }))
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        match self.faults.step(Operation::Write) {
            Some(Fault::Fail) => Err(StoreError::Injected("catalog write")),
            Some(Fault::Tear) => {
                self.inner.apply(batch)?;
                Err(StoreError::Injected("catalog write landed but reported failure"))
            }
            None => self.inner.apply(batch),
        }
    }

    fn sync(&self) -> Result<(), StoreError> {
        match self.faults.step(Operation::Sync) {
            Some(Fault::Fail) => Err(StoreError::Injected("catalog sync")),
            Some(Fault::Tear) => {
                self.inner.sync()?;
                Err(StoreError::Injected("catalog sync happened but reported failure"))
            }
            None => self.inner.sync(),
        }
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.inner.size_on_disk()
    }
}

struct FaultyBlobs {
    inner: Arc<dyn Blobs>,
    faults: Arc<Faults>,
}

impl Blobs for FaultyBlobs {
    fn create(&self) -> Result<Box<dyn BlobWriter>, StoreError> {
        Ok(Box::new(FaultyWriter { inner: self.inner.create()?, faults: self.faults.clone() }))
    }

    fn read(&self, blob: &BlobRef, offset: u64, into: &mut [u8]) -> Result<(), StoreError> {
        match self.faults.step(Operation::Read) {
            Some(Fault::Fail) => Err(StoreError::Injected("blob read")),
            Some(Fault::Tear) => {
                self.inner.read(blob, offset, into)?;
                if let Some(byte) = into.get_mut(into.len() / 2) {
                    *byte ^= 0x08;
                }
                Ok(())
            }
            None => self.inner.read(blob, offset, into),
        }
    }

    fn digest_into(&self, hasher: &mut blake3::Hasher) -> Result<(), StoreError> {
        self.inner.digest_into(hasher)
    }

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.inner.size_on_disk()
    }
}

struct FaultyWriter {
    inner: Box<dyn BlobWriter>,
    faults: Arc<Faults>,
}

impl BlobWriter for FaultyWriter {
    fn append(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        match self.faults.step(Operation::Write) {
            Some(Fault::Fail) => Err(StoreError::Injected("blob write")),
            Some(Fault::Tear) => {
                self.inner.append(&bytes[..bytes.len() / 2])?;
                Err(StoreError::Injected("blob write landed in part"))
            }
            None => self.inner.append(bytes),
        }
    }

    fn finish(&mut self) -> Result<StagedBlob, StoreError> {
        match self.faults.step(Operation::Sync) {
            Some(Fault::Fail) => Err(StoreError::Injected("blob sync")),
            Some(Fault::Tear) => {
                self.inner.finish()?;
                Err(StoreError::Injected("blob sync happened but reported failure"))
            }
            None => self.inner.finish(),
        }
    }

    fn release(self: Box<Self>) {
        self.inner.release();
    }

    fn discard(self: Box<Self>) -> Result<(), StoreError> {
        self.inner.discard()
    }
}
