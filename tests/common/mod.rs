//! Shared test fixtures: keys, certificates, records and documents built through the public API.
// Each test binary uses a different part of this module.
#![allow(dead_code, unused_imports)]

use kho::ids::{now_unix_ms, Code, Digest, OwnerId};
use kho::statement::{KeyCertificate, Record, SecretKey, Signed};
use kho::store::{fault, memory::Memory};
use kho::vault::{Vault, VaultConfig};

/// The storage engine a test's vault runs on. The vault suite runs once per engine (see
/// tests/vault.rs); everything else uses the embedded default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Embedded,
    Memory,
    /// The memory engine behind a fault injector that never fires: the wrapper must be invisible.
    FaultWrapped,
}

thread_local! {
    static ENGINE: std::cell::Cell<Engine> = const { std::cell::Cell::new(Engine::Embedded) };
}

/// Runs `test` with its fixtures on `engine` (tests run on their own threads).
pub fn on_engine(engine: Engine, test: fn()) {
    use_engine(engine);
    test();
}

/// The fixtures built on this thread from now on use `engine`.
pub fn use_engine(engine: Engine) {
    ENGINE.with(|current| current.set(engine));
}

/// Opens a vault on the current thread's engine; `memory` holds the memory engine's state across
/// reopens (a reopen sees only what was durable, as after a power cut).
fn open_vault(config: VaultConfig, memory: &mut Option<Memory>) -> Vault {
    let engine = ENGINE.with(std::cell::Cell::get);
    if engine == Engine::Embedded {
        return Vault::open(config).expect("open vault");
    }
    let state = match memory.take() {
        Some(previous) => previous.crash(),
        None => Memory::new(),
    };
    let mut engines = state.engines();
    if engine == Engine::FaultWrapped {
        engines = fault::wrap(engines, fault::Faults::never());
    }
    *memory = Some(state);
    Vault::open_on(config, engines).expect("open vault on memory")
}

pub const AGENCY: &str = "000.00.00.H26";
pub const OTHER_AGENCY: &str = "000.00.00.G01";
pub const OWNER: &str = "001204012345";
pub const OTHER_OWNER: &str = "079198000123";
pub const DAY_MS: i64 = 86_400_000;

pub fn key(seed: u8) -> SecretKey {
    SecretKey::from_ed25519(ed25519_dalek::SigningKey::from_bytes(&[seed; 32]))
}

pub fn code(text: &str) -> Code {
    Code::parse("code", text).expect("valid code")
}

/// An anchor-signed certificate envelope for `subject` in `agency`, valid in `[from, until]` (ms).
pub fn certificate(anchor: &SecretKey, agency: &str, subject: &SecretKey, from_ms: i64, until_ms: i64) -> Vec<u8> {
    Signed::sign(
        KeyCertificate {
            agency: code(agency),
            subject: subject.public_key(),
            valid_from_ms: from_ms,
            valid_until_ms: until_ms,
            signed_at_ms: now_unix_ms(),
        },
        anchor,
    )
    .to_envelope()
}

/// A certificate valid from a day ago for a year.
pub fn current_certificate(anchor: &SecretKey, agency: &str, subject: &SecretKey) -> Vec<u8> {
    let now = now_unix_ms();
    certificate(anchor, agency, subject, now - DAY_MS, now + 365 * DAY_MS)
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub anchor: SecretKey,
    /// Certified for [`AGENCY`].
    pub issuer: SecretKey,
    /// Certified for [`OTHER_AGENCY`].
    pub other_issuer: SecretKey,
    pub vault: Vault,
    /// The memory engine's state, when the test runs on it.
    pub memory: Option<Memory>,
}

impl Fixture {
    pub fn config(&self) -> VaultConfig {
        VaultConfig::new(self.dir.path(), vec![self.anchor.public_key()])
    }

    /// Drops the vault and opens it again from what is durable.
    pub fn reopen(self) -> Fixture {
        let Fixture { dir, anchor, issuer, other_issuer, vault, mut memory } = self;
        drop(vault);
        let vault = open_vault(VaultConfig::new(dir.path(), vec![anchor.public_key()]), &mut memory);
        Fixture { dir, anchor, issuer, other_issuer, vault, memory }
    }

    pub fn state(&self) -> [u8; 32] {
        self.vault.state_digest().expect("state digest")
    }
}

pub fn fixture_with(adjust: impl FnOnce(&mut VaultConfig)) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let anchor = key(1);
    let mut config = VaultConfig::new(dir.path(), vec![anchor.public_key()]);
    adjust(&mut config);
    let mut memory = None;
    let vault = open_vault(config, &mut memory);
    let issuer = key(2);
    let other_issuer = key(3);
    vault.add_certificate(&current_certificate(&anchor, AGENCY, &issuer)).expect("certify issuer");
    vault.add_certificate(&current_certificate(&anchor, OTHER_AGENCY, &other_issuer)).expect("certify other");
    Fixture { dir, anchor, issuer, other_issuer, vault, memory }
}

pub fn fixture() -> Fixture {
    fixture_with(|_| {})
}

pub use kho::sample::document;

pub fn record_for(content: &[u8], owner: &str, agency: &str) -> Record {
    kho::sample::record(content, &OwnerId::parse(owner).expect("owner"), &code(agency), now_unix_ms())
}

pub fn sign(record: Record, key: &SecretKey) -> Vec<u8> {
    Signed::sign(record, key).to_envelope()
}

/// An envelope around arbitrary signed bytes, validly signed by `key`: for bytes that `Signed::sign`
/// refuses to produce (malformed fields behind a good signature).
pub fn envelope_signed_by(signed_bytes: &[u8], key: &SecretKey) -> Vec<u8> {
    use ed25519_dalek::Signer as _;
    let signature = key.ed25519().sign(signed_bytes).to_bytes();
    let mut envelope = (signed_bytes.len() as u32).to_be_bytes().to_vec();
    envelope.extend_from_slice(signed_bytes);
    envelope.extend_from_slice(&(signature.len() as u32).to_be_bytes());
    envelope.extend_from_slice(&signature);
    envelope
}

/// A copy certification of upload `record` by `agency`, signed with `key`, compared by `officer`.
pub fn copy_certification(record: Digest, agency: &str, key: &SecretKey, officer: &str) -> Vec<u8> {
    Signed::sign(
        kho::statement::CopyCertification {
            record,
            agency: code(agency),
            officer: kho::ids::Title::parse(officer).expect("officer"),
            original_type: code("BTN"),
            original: kho::ids::Title::parse("Bằng tốt nghiệp THPT số A123, bản chính").expect("original"),
            signed_at_ms: now_unix_ms(),
        },
        key,
    )
    .to_envelope()
}

/// Deposits `content` for OWNER by the fixture's issuer; returns the record id.
pub fn deposit(fixture: &Fixture, content: &[u8]) -> Digest {
    let envelope = sign(record_for(content, OWNER, AGENCY), &fixture.issuer);
    fixture.vault.deposit(&envelope, content).expect("deposit").id
}

pub fn read_all(vault: &Vault, blake3: &Digest, range: Option<(u64, u64)>) -> Vec<u8> {
    use std::io::Read as _;
    let mut out = Vec::new();
    vault
        .open_content(blake3, range)
        .expect("open content")
        .expect("content present")
        .read_to_end(&mut out)
        .expect("read content");
    out
}

/// Copies a folder tree (a fixture vault, or a store's files as a power cut would leave them).
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let path = entry.expect("entry").path();
        let target = to.join(path.file_name().expect("name"));
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).expect("copy");
        }
    }
}

/// Every file of the store: the catalog's files and the content packs.
pub fn store_files(data: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut folders = vec![data.join("store")];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(folder).expect("list store") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                folders.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// Flips one byte at every place on disk that holds `needle`; returns how many places.
pub fn flip_on_disk(data: &std::path::Path, needle: &[u8]) -> usize {
    let mut flipped = 0;
    for file in store_files(data) {
        let mut bytes = std::fs::read(&file).expect("read store file");
        let positions: Vec<usize> =
            bytes.windows(needle.len()).enumerate().filter(|(_, w)| *w == needle).map(|(i, _)| i).collect();
        for position in &positions {
            bytes[position + needle.len() / 2] ^= 0x40;
        }
        if !positions.is_empty() {
            std::fs::write(&file, &bytes).expect("write store file");
            flipped += positions.len();
        }
    }
    flipped
}
