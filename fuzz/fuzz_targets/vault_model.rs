//! Model-based: a sequence of deposits (good and tampered), reads, revocations, supersessions,
//! listings and reopens runs against a real vault and a plain in-memory model; every answer must
//! match the model.
#![no_main]

use std::io::Read as _;

use arbitrary::Arbitrary;
use kho::ids::{Code, Digest, OwnerId, Title};
use kho::store::memory::Memory;
use kho::statement::{KeyCertificate, Record, RecordRevocation, SecretKey, Signed};
use kho::vault::{ListFilter, Status, Vault, VaultConfig};
use libfuzzer_sys::fuzz_target;

const OWNERS: [&str; 3] = ["001204012345", "079198000123", "0101234567"];
const AGENCY: &str = "000.00.00.H26";

#[derive(Arbitrary, Debug)]
enum Op {
    Deposit { owner: u8, seed: u8, len: u16 },
    DepositTampered { owner: u8, seed: u8, len: u16, flip: u16 },
    DepositTruncated { seed: u8, len: u16 },
    Read { record: u8, start: u16, end: u16 },
    Revoke { record: u8 },
    Supersede { record: u8, seed: u8, len: u16 },
    List { owner: u8 },
    Reopen,
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

/// The vault on the memory engine: no fsyncs, so thousands of operations a second; a reopen sees only
/// what was durable, as after a power cut.
fn open(dir: &std::path::Path, anchor: &SecretKey, memory: &Memory) -> Vault {
    let mut config = VaultConfig::new(dir, vec![anchor.public_key()]);
    config.content.frame_size_bytes = 4096;
    Vault::open_on(config, memory.engines()).expect("open")
}

fuzz_target!(|ops: Vec<Op>| {
    let dir = tempfile::tempdir().expect("tempdir");
    let anchor = SecretKey::from_ed25519(ed25519_dalek::SigningKey::from_bytes(&[1; 32]));
    let issuer = SecretKey::from_ed25519(ed25519_dalek::SigningKey::from_bytes(&[2; 32]));
    let mut memory = Memory::new();
    let mut vault = open(dir.path(), &anchor, &memory);
    let certificate = KeyCertificate {
        agency: Code::parse("agency", AGENCY).expect("code"),
        subject: issuer.public_key(),
        valid_from_ms: 0,
        valid_until_ms: i64::MAX,
        signed_at_ms: 0,
    };
    vault.add_certificate(&Signed::sign(certificate, &anchor).to_envelope()).expect("certify");
    let mut model: Vec<ModelRecord> = Vec::new();
    let mut nonce = 0i64;
    for op in ops.into_iter().take(200) {
        nonce += 1;
        match op {
            Op::Deposit { owner, seed, len } => {
                let owner = usize::from(owner) % OWNERS.len();
                let bytes = content(seed, len);
                let envelope = Signed::sign(record(owner, &bytes, None, nonce), &issuer).to_envelope();
                let accepted = vault.deposit(&envelope, &bytes[..]).expect("good deposit");
                model.push(ModelRecord { id: accepted.id, owner, content: bytes, revoked: false, superseded_by: None });
            }
            Op::DepositTampered { owner, seed, len, flip } => {
                let owner = usize::from(owner) % OWNERS.len();
                let mut bytes = content(seed, len.max(1));
                let envelope = Signed::sign(record(owner, &bytes, None, nonce), &issuer).to_envelope();
                let at = usize::from(flip) % bytes.len();
                bytes[at] ^= 1;
                let before = vault.state_digest().expect("digest");
                assert!(vault.deposit(&envelope, &bytes[..]).is_err());
                assert_eq!(vault.state_digest().expect("digest"), before);
            }
            Op::DepositTruncated { seed, len } => {
                let bytes = content(seed, len.max(1));
                let envelope = Signed::sign(record(0, &bytes, None, nonce), &issuer).to_envelope();
                let before = vault.state_digest().expect("digest");
                assert!(vault.deposit(&envelope, &bytes[..bytes.len() - 1]).is_err());
                assert_eq!(vault.state_digest().expect("digest"), before);
            }
            Op::Read { record: index, start, end } => {
                let Some(entry) = model.get(usize::from(index) % model.len().max(1)) else { continue };
                let view = vault.record(&entry.id).expect("read").expect("present");
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
                        reader.expect("present").read_to_end(&mut bytes).expect("verified read");
                        assert_eq!(bytes, &entry.content[start as usize..end as usize]);
                    }
                    Err(_) => assert!(start > end || end > entry.content.len() as u64),
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
                assert_eq!(result.is_ok(), !entry.revoked);
                entry.revoked = true;
            }
            Op::Supersede { record: target, seed, len } => {
                let index = usize::from(target) % model.len().max(1);
                let Some(old) = model.get(index) else { continue };
                let bytes = content(seed, len);
                let owner = old.owner;
                let envelope = Signed::sign(record(owner, &bytes, Some(old.id), nonce), &issuer).to_envelope();
                let result = vault.deposit(&envelope, &bytes[..]);
                let allowed = !old.revoked && old.superseded_by.is_none();
                assert_eq!(result.is_ok(), allowed, "{result:?}");
                if let Ok(accepted) = result {
                    model[index].superseded_by = Some(accepted.id);
                    model.push(ModelRecord { id: accepted.id, owner, content: bytes, revoked: false, superseded_by: None });
                }
            }
            Op::List { owner } => {
                let owner = usize::from(owner) % OWNERS.len();
                let page = vault
                    .list_owner(&OwnerId::parse(OWNERS[owner]).expect("owner"), &ListFilter::default(), None, 1000)
                    .expect("list");
                let expected: Vec<Digest> = model.iter().rev().filter(|r| r.owner == owner).map(|r| r.id).collect();
                assert_eq!(page.records.iter().map(|v| v.id()).collect::<Vec<_>>(), expected);
            }
            Op::Reopen => {
                drop(vault);
                memory = memory.crash();
                vault = open(dir.path(), &anchor, &memory);
            }
        }
    }
});
