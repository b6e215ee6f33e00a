//! An auditor can verify records without Kho's code: tests/auditor/verify_record.py, written from
//! docs/FORMAT.md with only Python's standard library (RFC 8032 Ed25519, hashlib SHA-256), must accept
//! what this build signs, decode the same fields, and reject a document that was altered.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use kho::ids::{Date, Digest};

fn run_verifier(args: &[&Path], anchor_hex: &str) -> (bool, serde_json::Value) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/auditor/verify_record.py");
    let output = Command::new("python3")
        .arg(script)
        .args(&args[..2])
        .arg(anchor_hex)
        .args(&args[2..])
        .output()
        .expect("python3 is needed for the auditor test");
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let json_end = stdout.rfind("\n}\n").unwrap_or_else(|| panic!("no JSON from the verifier: {stdout}{stderr}")) + 3;
    (output.status.success(), serde_json::from_str(&stdout[..json_end]).expect("verifier JSON"))
}

#[test]
fn the_standalone_verifier_accepts_kho_statements_and_rejects_altered_documents() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (anchor, issuer) = (kho::statement::SecretKey::generate(), kho::statement::SecretKey::generate());
    let content = document(70_000, 5, true);
    let mut record = record_for(&content, OWNER, AGENCY);
    record.valid_until = Some(Date::parse("2034-02-28").expect("date"));
    record.supersedes = Some(Digest([0xab; 32]));
    let signed = kho::statement::Signed::sign(record.clone(), &issuer);
    let files = [dir.path().join("r"), dir.path().join("c"), dir.path().join("d"), dir.path().join("altered")];
    std::fs::write(&files[0], signed.to_envelope()).expect("record");
    std::fs::write(&files[1], current_certificate(&anchor, AGENCY, &issuer)).expect("certificate");
    std::fs::write(&files[2], &content).expect("document");
    let mut altered = content.clone();
    altered[12_345] ^= 0x20;
    std::fs::write(&files[3], &altered).expect("altered document");
    let anchor_hex = hex::encode(anchor.public_key().raw_bytes());

    let (ok, json) = run_verifier(&[&files[0], &files[1], &files[2]], &anchor_hex);
    assert!(ok, "{json}");
    let decoded = &json["record"];
    assert_eq!(decoded["id"], signed.id().to_hex());
    assert_eq!(decoded["title"], record.title.as_str());
    assert_eq!(decoded["owner"], OWNER);
    assert_eq!(decoded["valid_until"], "2034-02-28");
    assert_eq!(decoded["supersedes"], "ab".repeat(32));
    assert_eq!(decoded["blake3"], record.blake3.to_hex());
    assert_eq!(decoded["size_bytes"], content.len());
    assert_eq!(decoded["signed_at_ms"], record.signed_at_ms);

    let (ok, _) = run_verifier(&[&files[0], &files[1], &files[3]], &anchor_hex);
    assert!(!ok, "an altered document must not verify");
    let (ok, _) = run_verifier(&[&files[0], &files[1], &files[2]], &hex::encode([7u8; 32]));
    assert!(!ok, "a certificate from another anchor must not verify");

    // The committed fixtures verify too.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v3/statements");
    let (ok, json) = run_verifier(
        &[&fixtures.join("record.kho-record"), &fixtures.join("certificate.kho-cert"), &fixtures.join("document.txt")],
        "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c",
    );
    assert!(ok, "{json}");
}
