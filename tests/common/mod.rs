//! Shared test fixtures: keys, certificates, records and documents built through the public API.
#![allow(dead_code)]

use kho::ids::{now_unix_ms, Code, Date, Digest, MediaType, OwnerId, Title};
use kho::statement::{KeyCertificate, Record, SecretKey, Signed};
use kho::vault::{Vault, VaultConfig};
use sha2::Digest as _;

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
}

impl Fixture {
    pub fn config(&self) -> VaultConfig {
        VaultConfig::new(self.dir.path(), vec![self.anchor.public_key()])
    }

    /// Drops the vault and opens it again from disk.
    pub fn reopen(self) -> Fixture {
        let Fixture { dir, anchor, issuer, other_issuer, vault } = self;
        drop(vault);
        let vault = Vault::open(VaultConfig::new(dir.path(), vec![anchor.public_key()])).expect("reopen");
        Fixture { dir, anchor, issuer, other_issuer, vault }
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
    let vault = Vault::open(config).expect("open vault");
    let issuer = key(2);
    let other_issuer = key(3);
    vault.add_certificate(&current_certificate(&anchor, AGENCY, &issuer)).expect("certify issuer");
    vault.add_certificate(&current_certificate(&anchor, OTHER_AGENCY, &other_issuer)).expect("certify other");
    Fixture { dir, anchor, issuer, other_issuer, vault }
}

pub fn fixture() -> Fixture {
    fixture_with(|_| {})
}

/// Deterministic document bytes: `compressible` gives text-like bytes, otherwise pseudo-random.
pub fn document(len: usize, seed: u64, compressible: bool) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let text = b"CONG HOA XA HOI CHU NGHIA VIET NAM - Doc lap - Tu do - Hanh phuc. Giay khai sinh so ";
    (0..len)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            if compressible {
                if i % 97 == 0 {
                    b'0' + (state % 10) as u8
                } else {
                    text[i % text.len()]
                }
            } else {
                state as u8
            }
        })
        .collect()
}

pub fn record_for(content: &[u8], owner: &str, agency: &str) -> Record {
    Record {
        owner: OwnerId::parse(owner).expect("owner"),
        document_type: code("GKS"),
        title: Title::parse("Giấy khai sinh").expect("title"),
        issuer_agency: code(agency),
        issued_on: Date::parse("2024-03-01").expect("date"),
        valid_from: Date::parse("2024-03-01").expect("date"),
        valid_until: None,
        procedure: code("1.001193"),
        dossier: code("H26.22-240301-0001"),
        blake3: Digest(*blake3::hash(content).as_bytes()),
        sha256: Digest(sha2::Sha256::digest(content).into()),
        size_bytes: content.len() as u64,
        media_type: MediaType::parse("application/pdf").expect("media type"),
        supersedes: None,
        signed_at_ms: now_unix_ms(),
    }
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
