//! Golden fixtures (examples/write_fixtures.rs) of stored format version 3, whose signed statements are
//! still encoding version 1: the statements must keep decoding, keep their ids, and be rebuilt byte for
//! byte from their fields; the fixture vault must keep opening and serving its records and content.

mod common;

use std::io::Read as _;
use std::path::{Path, PathBuf};

use common::copy_dir;
use kho::ids::{Digest, OwnerId};
use kho::statement::{
    CertificateRevocation, KeyCertificate, Receipt, Record, RecordRevocation, SecretKey, Signed, StatementBody,
};
use kho::vault::{ListFilter, Status, Vault, VaultConfig};

const RECORD_ID: &str = "84399d97c274fadc2ef054aa104a8864c2a3dacc68c7093eecf2598820086d4d";
const SECOND_RECORD_ID: &str = "536db8db3145c71dc7f94c15c0eb04d36c6965414a239729c3f0ee7ba45bbddb";
const CERTIFICATE_ID: &str = "b14f8073fc1b6a8412439c0093a8f154339283c67286cecc01ccf10158bfff9e";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v3")
}

fn key(seed: u8) -> SecretKey {
    SecretKey::from_ed25519(ed25519_dalek::SigningKey::from_bytes(&[seed; 32]))
}

/// Decodes a fixture, checks its id, and checks that signing its body again gives the same bytes.
fn check<T: StatementBody>(name: &str, id: &str, signer: &SecretKey) -> Signed<T> {
    let bytes = std::fs::read(fixtures().join("statements").join(name)).expect("fixture");
    let statement = Signed::<T>::from_envelope(&bytes).unwrap_or_else(|e| panic!("{name} no longer decodes: {e}"));
    assert_eq!(statement.id().to_hex(), id, "{name}");
    assert_eq!(statement.signer(), &signer.public_key());
    assert_eq!(Signed::sign(statement.body().clone(), signer).to_envelope(), bytes, "{name} re-encodes differently");
    statement
}

#[test]
fn version_1_statements_decode_and_re_encode_identically() {
    let (anchor, issuer, vault) = (key(1), key(2), key(3));
    check::<KeyCertificate>("certificate.kho-cert", CERTIFICATE_ID, &anchor);
    let record = check::<Record>("record.kho-record", RECORD_ID, &issuer);
    check::<RecordRevocation>(
        "record-revocation.kho-revocation",
        "0e4bb41b2c55b8d2c44f5bc1f068ead2af7c2e131678422175d00eb0fea02729",
        &issuer,
    );
    check::<CertificateRevocation>(
        "certificate-revocation.kho-revocation",
        "fb1dd929ab3b4ac14cc8c4678dd537122d18df7674aed560d350580de1abec5d",
        &anchor,
    );
    let receipt = check::<Receipt>(
        "receipt.kho-receipt",
        "58ac0a1ff8d774d811b9ce004f54a504041192d55c15a8aab8466ccb7772a428",
        &vault,
    );
    assert_eq!(receipt.body().statement, record.id());
    let document = std::fs::read(fixtures().join("statements/document.txt")).expect("document");
    assert_eq!(record.body().blake3, Digest(*blake3::hash(&document).as_bytes()));
    assert_eq!(record.body().size_bytes, document.len() as u64);
}

#[test]
fn version_1_vault_keeps_opening_and_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(&fixtures().join("vault"), dir.path());
    let vault = Vault::open(VaultConfig::new(dir.path(), vec![key(1).public_key()])).expect("fixture vault opens");
    // Its catalog was kept by sled: the first open rebuilt it from the journal and moved sled's files aside.
    let report = vault.open_report();
    assert!(report.batches_replayed > 0, "{report:?}");
    assert!(report.warnings.iter().any(|w| w.contains("rebuilt from the journal")), "{report:?}");
    let store = dir.path().join("store");
    assert!(store.join("former-catalog/db").exists() && !store.join("db").exists());
    let fixture_key = kho::keys::read_public_key(&fixtures().join("vault/vault-key.pub.pem")).expect("vault key");
    assert_eq!(vault.public_key(), fixture_key);

    let first = vault.record(&Digest::parse_hex("id", RECORD_ID).expect("hex")).expect("read").expect("present");
    assert!(matches!(first.status, Status::Revoked { ref reason, .. } if reason == "issued in error"));
    assert_eq!(first.receipt.signer(), &fixture_key);
    let second =
        vault.record(&Digest::parse_hex("id", SECOND_RECORD_ID).expect("hex")).expect("read").expect("present");
    assert_eq!(second.status, Status::Valid);

    let owner = OwnerId::parse("001204012345").expect("owner");
    let page = vault.list_owner(&owner, &ListFilter::default(), None, 10).expect("list");
    assert_eq!(page.records.iter().map(|v| v.id().to_hex()).collect::<Vec<_>>(), vec![SECOND_RECORD_ID, RECORD_ID]);

    let document = std::fs::read(fixtures().join("statements/document.txt")).expect("document");
    let large: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    for (view, expected) in [(&first, &document), (&second, &large)] {
        let mut bytes = Vec::new();
        vault
            .open_content(&view.record.body().blake3, None)
            .expect("open")
            .expect("present")
            .read_to_end(&mut bytes)
            .expect("read");
        assert_eq!(&bytes, expected);
    }
    // Its content is in frames of version 1 (keyed checksums), read in ranges as in the whole.
    let manifest = vault.content_manifest(&second.record.body().blake3).expect("manifest").expect("present");
    assert!(manifest.keyed_frames && manifest.frame_hashes.is_empty() && manifest.frame_lengths.len() > 1);
    let mut part = Vec::new();
    vault
        .open_content(&second.record.body().blake3, Some((65_000, 140_000)))
        .expect("open")
        .expect("present")
        .read_to_end(&mut part)
        .expect("read");
    assert_eq!(part, &large[65_000..140_000]);
    let certificates = vault.certificates().expect("certificates");
    assert_eq!(certificates.iter().map(|c| c.certificate.id().to_hex()).collect::<Vec<_>>(), vec![CERTIFICATE_ID]);

    // The log: certificate, two records and the revocation, each leaf naming its statement, in order;
    // the stored tree's root (signed now) is the root of those leaves.
    let ids = [CERTIFICATE_ID, RECORD_ID, SECOND_RECORD_ID];
    let mut tree = kho::log::MemoryTree::new();
    for index in 0..vault.log_size() {
        let bytes = vault.log_entry(index).expect("read").expect("entry");
        let entry = kho::log::Entry::decode(&bytes).expect("a version 1 entry");
        if let Some(id) = ids.get(index as usize) {
            assert_eq!(entry.id.to_hex(), *id, "entry {index}");
        }
        tree.push(kho::log::leaf_hash(&bytes));
    }
    assert_eq!(tree.size(), 4);
    assert_eq!(first.receipt.body().log_index, 1);
    // Signing commits the owner map first, built from the old leaves alone: a vault written before
    // owner maps existed gets one, and its owners' chains verify complete.
    let signed = vault.sign_checkpoint().expect("sign").expect("checkpoint");
    assert_eq!(signed.checkpoint.size, 5);
    let mut rebuild = kho::log::chain::Rebuild::new();
    for index in 0..5 {
        rebuild.push(&vault.log_entry(index).expect("read").expect("entry")).expect("chains and map check out");
    }
    let commitment = vault.log_entry(4).expect("read").expect("entry");
    assert_eq!(kho::log::Entry::decode(&commitment).expect("entry").kind, kho::log::KIND_OWNER_MAP);
    tree.push(kho::log::leaf_hash(&commitment));
    assert_eq!(signed.checkpoint.root, tree.root(5));
    let evidence = vault.completeness(&owner).expect("completeness");
    let chain = vault.owner_chain(&owner, None, 10).expect("chain");
    let complete = kho::log::chain::verify_completeness(&owner, &evidence.evidence, &chain.entries)
        .expect("the owner's chain is complete");
    assert_eq!(complete.head.map(|head| head.length), Some(3), "two records and a revocation");
    assert_eq!(complete.entries.len(), 3);
    drop(vault);
    // Rebuilt once: the next open replays nothing and says nothing.
    let vault = Vault::open(VaultConfig::new(dir.path(), vec![key(1).public_key()])).expect("reopens");
    assert_eq!(vault.open_report().batches_replayed, 0);
    assert!(vault.open_report().warnings.is_empty(), "{:?}", vault.open_report());
    assert_eq!(vault.log_size(), 5);
    drop(vault);
    // Had the first open stopped after rebuilding but before setting sled's files aside (a crash), the
    // next one goes on: sled's marks in the journal speak of sled, not of the new catalog.
    let former = store.join("former-catalog");
    for entry in std::fs::read_dir(&former).expect("former catalog") {
        let path = entry.expect("entry").path();
        std::fs::rename(&path, store.join(path.file_name().expect("name"))).expect("put back");
    }
    std::fs::remove_dir(&former).expect("empty");
    let vault = Vault::open(VaultConfig::new(dir.path(), vec![key(1).public_key()])).expect("opens again");
    assert_eq!(vault.open_report().batches_replayed, 0, "the catalog was whole");
    assert!(store.join("former-catalog/db").exists() && !store.join("db").exists());
    assert_eq!(vault.log_size(), 5);
}
