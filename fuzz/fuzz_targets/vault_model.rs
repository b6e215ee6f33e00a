//! Model-based: a sequence of deposits (good and tampered), reads, revocations, supersessions,
//! listings and reopens runs against a real vault and a plain in-memory model; every answer must
//! match the model.
//!
//! The vault runs on the memory engine wrapped in the fault injector, with a plan drawn from the
//! input (or none): the N-th write, sync or read fails or tears. An operation may fail only once the
//! fault has fired; then the operator restarts (a power cut: only what was durable survives), and an
//! operation whose outcome the error left open is looked up. Every acknowledged operation must
//! survive, and no read may ever return wrong bytes.
#![no_main]

use std::io::Read as _;

use arbitrary::Arbitrary;
use kho::ids::{Code, Digest, OwnerId, Title};
use kho::statement::{KeyCertificate, Record, RecordRevocation, SecretKey, Signed};
use kho::store::fault::{self, Fault, Faults, Operation};
use kho::store::memory::Memory;
use kho::vault::{ListFilter, Status, Vault, VaultConfig};
use libfuzzer_sys::fuzz_target;

const OWNERS: [&str; 3] = ["001204012345", "079198000123", "0101234567"];
const AGENCY: &str = "000.00.00.H26";

#[derive(Arbitrary, Debug)]
struct Input {
    fault: Option<Plan>,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
struct Plan {
    operation: u8,
    after: u16,
    tear: bool,
}

impl Plan {
    fn faults(&self) -> std::sync::Arc<Faults> {
        let operation = [Operation::Write, Operation::Sync, Operation::Read][usize::from(self.operation) % 3];
        let fault = if self.tear { Fault::Tear } else { Fault::Fail };
        Faults::new(operation, u64::from(self.after % 512) + 1, fault)
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Deposit {
        owner: u8,
        seed: u8,
        len: u16,
    },
    DepositTampered {
        owner: u8,
        seed: u8,
        len: u16,
        flip: u16,
    },
    DepositTruncated {
        seed: u8,
        len: u16,
    },
    Read {
        record: u8,
        start: u16,
        end: u16,
    },
    Revoke {
        record: u8,
    },
    Supersede {
        record: u8,
        seed: u8,
        len: u16,
    },
    List {
        owner: u8,
    },
    Reopen,
    /// Sign a checkpoint and check it: it verifies, proves a leaf, and extends every earlier one.
    Checkpoint {
        leaf: u16,
    },
}

struct ModelRecord {
    id: Digest,
    owner: usize,
    content: Vec<u8>,
    revoked: bool,
    superseded_by: Option<Digest>,
}

fn content(seed: u8, len: u16) -> Vec<u8> {
    kho::sample::document(usize::from(len) * 4, u64::from(seed), seed % 2 == 0)
}

fn record(owner: usize, content: &[u8], supersedes: Option<Digest>, nonce: i64) -> Record {
    let owner = OwnerId::parse(OWNERS[owner]).expect("owner");
    let mut record = kho::sample::record(content, &owner, &Code::parse("agency", AGENCY).expect("code"), nonce);
    record.supersedes = supersedes;
    record
}

/// An operation whose error left its outcome open: after the restart it either happened or not.
enum Unsure {
    Deposit { record: ModelRecord, supersedes: Option<usize> },
    Revoke { index: usize },
}

/// The vault on the memory engine behind the fault injector: no fsyncs, so thousands of operations a
/// second; a reopen sees only what was durable, as after a power cut.
struct Harness {
    dir: tempfile::TempDir,
    anchor: SecretKey,
    faults: std::sync::Arc<Faults>,
    memory: Memory,
}

impl Harness {
    fn open(&mut self) -> Vault {
        loop {
            let mut config = VaultConfig::new(self.dir.path(), vec![self.anchor.public_key()]);
            config.content.frame_size_bytes = 4096;
            match Vault::open_on(config, fault::wrap(self.memory.engines(), self.faults.clone())) {
                Ok(vault) => return vault,
                Err(error) => {
                    assert!(self.faults.fired(), "open failed with no fault injected: {error}");
                    self.memory = self.memory.crash();
                }
            }
        }
    }

    /// A power cut and a restart. A fault fires once: after a restart, nothing may fail any more.
    fn restart(&mut self, vault: Vault) -> Vault {
        drop(vault);
        self.memory = self.memory.crash();
        let vault = self.open();
        if self.faults.fired() {
            self.faults = Faults::never();
        }
        vault
    }

    /// The result of an operation, or `None` when it failed: allowed only once the fault fired.
    fn allow<T, E: std::fmt::Debug>(&self, result: Result<T, E>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                assert!(self.faults.fired(), "failed with no fault injected: {error:?}");
                None
            }
        }
    }
}

fuzz_target!(|input: Input| {
    let mut harness = Harness {
        dir: tempfile::tempdir().expect("tempdir"),
        anchor: SecretKey::from_ed25519(ed25519_dalek::SigningKey::from_bytes(&[1; 32])),
        faults: input.fault.as_ref().map_or_else(Faults::never, Plan::faults),
        memory: Memory::new(),
    };
    let issuer = SecretKey::from_ed25519(ed25519_dalek::SigningKey::from_bytes(&[2; 32]));
    let mut vault = harness.open();
    let certificate = KeyCertificate {
        agency: Code::parse("agency", AGENCY).expect("code"),
        subject: issuer.public_key(),
        valid_from_ms: 0,
        valid_until_ms: i64::MAX,
        signed_at_ms: 0,
    };
    let certificate = Signed::sign(certificate, &harness.anchor).to_envelope();
    while harness.allow(vault.add_certificate(&certificate)).is_none() {
        vault = harness.restart(vault);
    }
    let mut model: Vec<ModelRecord> = Vec::new();
    // Every checkpoint signed so far, as (size, root): each later log must extend all of them.
    let mut checkpoints: Vec<(u64, kho::log::Hash)> = Vec::new();
    let mut nonce = 0i64;
    for op in input.ops.into_iter().take(200) {
        nonce += 1;
        // Set when an operation failed (after the fault fired): the operator restarts.
        let mut unsure: Option<Option<Unsure>> = None;
        match op {
            Op::Deposit { owner, seed, len } => {
                let owner = usize::from(owner) % OWNERS.len();
                let bytes = content(seed, len);
                let signed = Signed::sign(record(owner, &bytes, None, nonce), &issuer);
                let entry = ModelRecord { id: signed.id(), owner, content: bytes, revoked: false, superseded_by: None };
                match harness.allow(vault.deposit(&signed.to_envelope(), &entry.content[..])) {
                    Some(accepted) => {
                        assert_eq!(accepted.id, entry.id);
                        model.push(entry);
                    }
                    None => unsure = Some(Some(Unsure::Deposit { record: entry, supersedes: None })),
                }
            }
            Op::DepositTampered { owner, seed, len, flip } => {
                let owner = usize::from(owner) % OWNERS.len();
                let mut bytes = content(seed, len.max(1));
                let envelope = Signed::sign(record(owner, &bytes, None, nonce), &issuer).to_envelope();
                let at = usize::from(flip) % bytes.len();
                bytes[at] ^= 1;
                let before = vault.state_digest();
                assert!(vault.deposit(&envelope, &bytes[..]).is_err());
                unchanged(&harness, before, vault.state_digest(), &mut unsure);
            }
            Op::DepositTruncated { seed, len } => {
                let bytes = content(seed, len.max(1));
                let envelope = Signed::sign(record(0, &bytes, None, nonce), &issuer).to_envelope();
                let before = vault.state_digest();
                assert!(vault.deposit(&envelope, &bytes[..bytes.len() - 1]).is_err());
                unchanged(&harness, before, vault.state_digest(), &mut unsure);
            }
            Op::Read { record: index, start, end } => {
                let Some(entry) = model.get(usize::from(index) % model.len().max(1)) else { continue };
                let Some(view) = harness.allow(vault.record(&entry.id)) else {
                    vault = harness.restart(vault);
                    continue;
                };
                let view = view.expect("present");
                let expected_status = match (entry.revoked, entry.superseded_by) {
                    (true, _) => "revoked",
                    (false, Some(_)) => "superseded",
                    _ => "valid",
                };
                let status = match view.status {
                    Status::Revoked { .. } => "revoked",
                    Status::Superseded { .. } => "superseded",
                    _ => "valid",
                };
                assert_eq!(status, expected_status);
                let (start, end) = (u64::from(start) * 4, u64::from(end) * 4);
                let blake3 = view.record.body().blake3;
                match vault.open_content(&blake3, Some((start, end))) {
                    Ok(reader) => {
                        let mut bytes = Vec::new();
                        // A torn read must be caught by the frame checks, never handed out.
                        if harness.allow(reader.expect("present").read_to_end(&mut bytes)).is_some() {
                            assert_eq!(bytes, &entry.content[start as usize..end as usize]);
                        }
                    }
                    Err(error) => {
                        assert!(start > end || end > entry.content.len() as u64 || harness.faults.fired(), "{error:?}")
                    }
                }
            }
            Op::Revoke { record: index } => {
                let count = model.len().max(1);
                let Some(entry) = model.get_mut(usize::from(index) % count) else { continue };
                let revocation = RecordRevocation {
                    record: entry.id,
                    issuer_agency: Code::parse("agency", AGENCY).expect("code"),
                    reason: Title::parse("test").expect("reason"),
                    signed_at_ms: nonce,
                };
                let result = vault.revoke(&Signed::sign(revocation, &issuer).to_envelope());
                if entry.revoked {
                    assert!(result.is_err());
                } else if harness.allow(result).is_some() {
                    entry.revoked = true;
                } else {
                    unsure = Some(Some(Unsure::Revoke { index: usize::from(index) % count }));
                }
            }
            Op::Supersede { record: target, seed, len } => {
                let index = usize::from(target) % model.len().max(1);
                let Some(old) = model.get(index) else { continue };
                let bytes = content(seed, len);
                let owner = old.owner;
                let signed = Signed::sign(record(owner, &bytes, Some(old.id), nonce), &issuer);
                let entry = ModelRecord { id: signed.id(), owner, content: bytes, revoked: false, superseded_by: None };
                let result = vault.deposit(&signed.to_envelope(), &entry.content[..]);
                if old.revoked || old.superseded_by.is_some() {
                    assert!(result.is_err(), "{result:?}");
                } else if harness.allow(result).is_some() {
                    model[index].superseded_by = Some(entry.id);
                    model.push(entry);
                } else {
                    unsure = Some(Some(Unsure::Deposit { record: entry, supersedes: Some(index) }));
                }
            }
            Op::List { owner } => {
                let owner = usize::from(owner) % OWNERS.len();
                let page = vault.list_owner(
                    &OwnerId::parse(OWNERS[owner]).expect("owner"),
                    &ListFilter::default(),
                    None,
                    1000,
                );
                match harness.allow(page) {
                    Some(page) => {
                        let expected: Vec<Digest> =
                            model.iter().rev().filter(|r| r.owner == owner).map(|r| r.id).collect();
                        assert_eq!(page.records.iter().map(|v| v.id()).collect::<Vec<_>>(), expected);
                    }
                    None => unsure = Some(None),
                }
            }
            Op::Reopen => unsure = Some(None),
            Op::Checkpoint { leaf } => match harness.allow(vault.sign_checkpoint()) {
                Some(signed) => {
                    let signed = signed.expect("the certificate at least is in the log");
                    // A read the fault breaks midway ends the check: the restart checks the log again.
                    if harness.allow(check_checkpoint(&vault, &signed, u64::from(leaf), &checkpoints)).is_none() {
                        unsure = Some(None);
                    }
                    checkpoints.push((signed.checkpoint.size, signed.checkpoint.root));
                }
                None => unsure = Some(None),
            },
        }
        let Some(mut unsure) = unsure else { continue };
        vault = harness.restart(vault);
        // A restart before the fault fired leaves it armed, so it may fire during these checks: that
        // read fails like any other, and the check is made again after one more restart (the fault
        // is then spent). Nothing below changes the model until its lookup succeeded.
        loop {
            let checked = (|| -> Result<(), String> {
                // Look up first, change the model after: a failed lookup leaves `unsure` for the retry.
                match &unsure {
                    Some(Unsure::Deposit { record, .. }) => {
                        let found = vault.record(&record.id).map_err(|e| e.to_string())?.is_some();
                        if let Some(Unsure::Deposit { record, supersedes }) = unsure.take() {
                            if found {
                                if let Some(index) = supersedes {
                                    model[index].superseded_by = Some(record.id);
                                }
                                model.push(record);
                            }
                        }
                    }
                    Some(Unsure::Revoke { index }) => {
                        let index = *index;
                        let view = vault.record(&model[index].id).map_err(|e| e.to_string())?.expect("present");
                        model[index].revoked = matches!(view.status, Status::Revoked { .. });
                        unsure = None;
                    }
                    None => {}
                }
                // No checkpoint ever covered an entry the restart lost, and the log still extends each one.
                let tree = tree_of(&vault, vault.log_size())?;
                for (size, root) in &checkpoints {
                    assert!(*size <= tree.size(), "checkpoint {size} covers entries lost by the restart");
                    assert_eq!(&tree.root(*size), root, "the log after the restart contradicts checkpoint {size}");
                }
                // Everything acknowledged survived the restart, with its bytes.
                for entry in &model {
                    let view = vault.record(&entry.id).map_err(|e| e.to_string())?;
                    assert!(view.is_some(), "acknowledged record {:?} lost", entry.id);
                }
                Ok(())
            })();
            match checked {
                Ok(()) => break,
                Err(error) => {
                    assert!(harness.faults.fired(), "a check after a restart failed with no fault injected: {error}");
                    vault = harness.restart(vault);
                }
            }
        }
    }
});

/// A fresh checkpoint verifies under the vault key, proves one of its leaves, and is consistent with
/// every checkpoint signed before it. An error is a failed read (only once a fault has fired).
fn check_checkpoint(
    vault: &Vault,
    signed: &kho::vault::SignedCheckpoint,
    leaf: u64,
    earlier: &[(u64, kho::log::Hash)],
) -> Result<(), String> {
    use kho::log;
    let checkpoint = &signed.checkpoint;
    assert_eq!(log::checkpoint::open(&signed.note, vault.log_origin(), &vault.public_key()).as_ref(), Ok(checkpoint));
    let index = leaf % checkpoint.size;
    let proof = vault.inclusion_proof(index, None).map_err(|e| e.to_string())?;
    let bytes = vault.log_entry(index).map_err(|e| e.to_string())?.expect("entry");
    assert_eq!(log::leaf_hash(&bytes), proof.leaf_hash);
    log::verify_inclusion(index, checkpoint.size, &proof.leaf_hash, &proof.hashes, &checkpoint.root)
        .expect("inclusion verifies");
    let tree = tree_of(vault, checkpoint.size)?;
    assert_eq!(tree.root(checkpoint.size), checkpoint.root, "the signed root is the root of the leaves");
    for (size, root) in earlier {
        let hashes = tree.consistency_proof(*size, checkpoint.size);
        log::verify_consistency(*size, checkpoint.size, root, &checkpoint.root, &hashes)
            .unwrap_or_else(|e| panic!("checkpoint {} does not extend checkpoint {size}: {e}", checkpoint.size));
        // The vault's own proof is the same (when no injected fault gets in its way).
        let proof = vault.consistency_proof(*size, None).map_err(|e| e.to_string())?;
        assert_eq!(proof.hashes, hashes);
    }
    Ok(())
}

/// The tree of the vault's first `size` leaves, rebuilt from their bytes.
/// The tree of the first `size` leaves, replaying them as an auditor does: every owner link extends
/// its chain and every owner-map commitment is the map of the entries before it.
fn tree_of(vault: &Vault, size: u64) -> Result<kho::log::MemoryTree, String> {
    let mut tree = kho::log::MemoryTree::new();
    let mut rebuild = kho::log::chain::Rebuild::new();
    for index in 0..size {
        let bytes = vault.log_entry(index).map_err(|e| e.to_string())?.expect("entry");
        rebuild.push(&bytes).unwrap_or_else(|e| panic!("the log's owner chains or map: {e}"));
        tree.push(kho::log::leaf_hash(&bytes));
    }
    Ok(tree)
}

/// A rejected deposit changed nothing; if the fault fired on the way, the operator restarts instead.
fn unchanged<E: std::fmt::Debug>(
    harness: &Harness,
    before: Result<[u8; 32], E>,
    after: Result<[u8; 32], E>,
    unsure: &mut Option<Option<Unsure>>,
) {
    if harness.faults.fired() {
        *unsure = Some(None);
        return;
    }
    assert_eq!(before.expect("digest"), after.expect("digest"));
}
