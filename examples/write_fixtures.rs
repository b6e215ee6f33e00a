//! Writes the golden fixtures under tests/fixtures/v3: deterministic signed statements (fixed keys and
//! times; Ed25519 signatures are deterministic) and a small vault. Run once per format version:
//! `cargo run --example write_fixtures`; tests/format_compat.rs checks that later builds still read them.

use std::path::Path;

use kho::ids::{Code, Date, Digest, MediaType, OwnerId, Title};
use kho::statement::{
    CertificateRevocation, KeyCertificate, Receipt, Record, RecordRevocation, SecretKey, Signed, StatementBody,
};
use kho::vault::{Vault, VaultConfig};
use sha2::Digest as _;

/// 2024-03-01T00:00:00Z.
const T0_MS: i64 = 1_709_251_200_000;

fn key(seed: u8) -> SecretKey {
    SecretKey::from_ed25519(ed25519_dalek::SigningKey::from_bytes(&[seed; 32]))
}

fn code(text: &str) -> Code {
    Code::parse("code", text).expect("code")
}

pub fn document() -> Vec<u8> {
    "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM\nĐộc lập - Tự do - Hạnh phúc\nGIẤY KHAI SINH\n".repeat(40).into_bytes()
}

/// The log test vectors of docs/FORMAT.md section 4.6: a record's leaf, the CT reference tree's
/// checkpoint signed by the vault key, written to `log-entry.bin` and `checkpoint.note`.
fn log_vectors(record: &Signed<Record>, vault_key: &SecretKey, dir: &Path) {
    use kho::log::{self, Checkpoint, Entry, OwnerLink};
    let entry = Entry {
        kind: Record::KIND,
        accepted_at_ms: T0_MS + 1500,
        id: record.id(),
        owner: Some(OwnerLink { owner: record.body().owner.clone(), position: 1, previous: [0; 32] }),
    };
    let bytes = entry.encode();
    std::fs::write(dir.join("log-entry.bin"), &bytes).expect("entry");
    println!(
        "log entry {}
  leaf hash {}",
        hex::encode(&bytes),
        hex::encode(log::leaf_hash(&bytes))
    );
    let mut tree = log::MemoryTree::new();
    let leaves: [&[u8]; 8] = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        b"\x50\x51\x52\x53\x54\x55\x56\x57",
        b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
    ];
    for leaf in leaves {
        tree.push(log::leaf_hash(leaf));
    }
    let checkpoint = Checkpoint { origin: "kho.example/log".into(), size: 8, root: tree.root(8) };
    let note = checkpoint.sign(vault_key);
    std::fs::write(dir.join("checkpoint.note"), &note).expect("note");
    println!(
        "checkpoint note:\n{note}verifier key {}",
        log::checkpoint::verifier_key("kho.example/log", &vault_key.public_key())
    );
    let hexes = |proof: Vec<log::Hash>| proof.iter().map(hex::encode).collect::<Vec<_>>().join(" ");
    println!("inclusion 5 in 8: {}", hexes(tree.inclusion_proof(5, 8)));
    println!("consistency 3 -> 8: {}", hexes(tree.consistency_proof(3, 8)));
}

fn write<T: StatementBody>(dir: &Path, name: &str, statement: &Signed<T>) {
    std::fs::write(dir.join(name), statement.to_envelope()).expect("write fixture");
    println!(
        "{name}: id {}\n  signed bytes {}\n  signature {}",
        statement.id(),
        hex::encode(statement.signed_bytes()),
        hex::encode(statement.signature())
    );
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v3");
    let statements = root.join("statements");
    std::fs::create_dir_all(&statements).expect("fixture folder");
    let (anchor, issuer, vault_key) = (key(1), key(2), key(3));
    let content = document();
    std::fs::write(statements.join("document.txt"), &content).expect("document");

    let certificate = Signed::sign(
        KeyCertificate {
            agency: code("000.00.00.H26"),
            subject: issuer.public_key(),
            valid_from_ms: T0_MS,
            valid_until_ms: T0_MS + 3650 * 86_400_000,
            signed_at_ms: T0_MS,
        },
        &anchor,
    );
    let record = Signed::sign(
        Record {
            owner: OwnerId::parse("001204012345").expect("owner"),
            document_type: code("GKS"),
            title: Title::parse("Giấy khai sinh").expect("title"),
            issuer_agency: code("000.00.00.H26"),
            issued_on: Date::parse("2024-03-01").expect("date"),
            valid_from: Date::parse("2024-03-01").expect("date"),
            valid_until: None,
            procedure: code("1.001193"),
            dossier: code("H26.22-240301-0001"),
            blake3: Digest(*blake3::hash(&content).as_bytes()),
            sha256: Digest(sha2::Sha256::digest(&content).into()),
            size_bytes: content.len() as u64,
            media_type: MediaType::parse("text/plain").expect("media type"),
            supersedes: None,
            signed_at_ms: T0_MS + 1000,
        },
        &issuer,
    );
    let revocation = Signed::sign(
        RecordRevocation {
            record: record.id(),
            issuer_agency: code("000.00.00.H26"),
            reason: Title::parse("issued in error").expect("reason"),
            signed_at_ms: T0_MS + 2000,
        },
        &issuer,
    );
    let certificate_revocation = Signed::sign(
        CertificateRevocation {
            certificate: certificate.id(),
            reason: Title::parse("key retired").expect("reason"),
            signed_at_ms: T0_MS + 3000,
        },
        &anchor,
    );
    let receipt = Signed::sign(
        Receipt { statement: record.id(), statement_kind: Record::KIND, log_index: 1, accepted_at_ms: T0_MS + 1500 },
        &vault_key,
    );
    write(&statements, "certificate.kho-cert", &certificate);
    write(&statements, "record.kho-record", &record);
    write(&statements, "record-revocation.kho-revocation", &revocation);
    write(&statements, "certificate-revocation.kho-revocation", &certificate_revocation);
    write(&statements, "receipt.kho-receipt", &receipt);
    log_vectors(&record, &vault_key, &statements);
    for (name, key) in [("anchor", &anchor), ("issuer", &issuer), ("vault", &vault_key)] {
        println!("{name} public key {}", hex::encode(key.public_key().raw_bytes()));
    }

    // A small vault: the certificate, the record and a second record with multi-frame content.
    let vault_dir = root.join("vault");
    if vault_dir.exists() {
        std::fs::remove_dir_all(&vault_dir).expect("remove old vault fixture");
    }
    let vault = Vault::open(VaultConfig::new(&vault_dir, vec![anchor.public_key()])).expect("vault");
    vault.add_certificate(&certificate.to_envelope()).expect("certificate");
    vault.deposit(&record.to_envelope(), &content[..]).expect("record");
    let large: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let mut second = record.body().clone();
    second.document_type = code("CCCD");
    second.blake3 = Digest(*blake3::hash(&large).as_bytes());
    second.sha256 = Digest(sha2::Sha256::digest(&large).into());
    second.size_bytes = large.len() as u64;
    second.media_type = MediaType::parse("application/octet-stream").expect("media type");
    let second = Signed::sign(second, &issuer);
    vault.deposit(&second.to_envelope(), &large[..]).expect("second record");
    vault.revoke(&revocation.to_envelope()).expect("revocation");
    println!("vault: records {} (revoked) and {}", record.id(), second.id());
}
