//! An auditor can verify records without Kho's code: tests/auditor/verify_record.py, written from
//! docs/FORMAT.md with only Python's standard library (RFC 8032 Ed25519, hashlib SHA-256), must accept
//! what this build signs, decode the same fields, and reject a document that was altered.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use kho::ids::{Date, Digest};

/// Runs tests/auditor/verify_record.py: `files` are the record, receipt and certificate, then the
/// document and the revocation options if any; `keys` the anchor and vault keys in hex.
fn run_verifier(files: &[&Path], keys: [&str; 2], extra: &[&Path]) -> (bool, serde_json::Value) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/auditor/verify_record.py");
    let output = Command::new("python3")
        .arg(script)
        .args(files)
        .args(keys)
        .args(extra)
        .output()
        .expect("python3 is needed for the auditor test");
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let json_end = stdout.rfind("\n}\n").unwrap_or_else(|| panic!("no JSON from the verifier: {stdout}{stderr}")) + 3;
    (output.status.success(), serde_json::from_str(&stdout[..json_end]).expect("verifier JSON"))
}

/// The standalone verifier applies the vault's rule: the certificate valid and unrevoked when the vault
/// accepted the record (the receipt's time), a revocation counting from its own receipt's time.
#[test]
fn the_standalone_verifier_accepts_kho_statements_and_rejects_altered_documents() {
    use kho::statement::{CertificateRevocation, Receipt, Signed};
    let dir = tempfile::tempdir().expect("tempdir");
    let (anchor, issuer) = (kho::statement::SecretKey::generate(), kho::statement::SecretKey::generate());
    let vault_key = kho::statement::SecretKey::generate();
    let content = document(70_000, 5, true);
    let mut record = record_for(&content, OWNER, AGENCY);
    record.valid_until = Some(Date::parse("2034-02-28").expect("date"));
    record.supersedes = Some(Digest([0xab; 32]));
    let signed = Signed::sign(record.clone(), &issuer);
    let accepted_at_ms = kho::ids::now_unix_ms();
    let receipt = |statement: Digest, kind: u8, at: i64| {
        Signed::sign(Receipt { statement, statement_kind: kind, log_index: 7, accepted_at_ms: at }, &vault_key)
            .to_envelope()
    };
    let path = |name: &str| dir.path().join(name);
    std::fs::write(path("r"), signed.to_envelope()).expect("record");
    std::fs::write(path("q"), receipt(signed.id(), 1, accepted_at_ms)).expect("receipt");
    std::fs::write(path("c"), current_certificate(&anchor, AGENCY, &issuer)).expect("certificate");
    std::fs::write(path("d"), &content).expect("document");
    let mut altered = content.clone();
    altered[12_345] ^= 0x20;
    std::fs::write(path("altered"), &altered).expect("altered document");
    let anchor_hex = hex::encode(anchor.public_key().raw_bytes());
    let vault_hex = hex::encode(vault_key.public_key().raw_bytes());
    let (record_file, receipt_file, certificate_file) = (path("r"), path("q"), path("c"));
    let files = [record_file.as_path(), receipt_file.as_path(), certificate_file.as_path()];

    let (ok, json) = run_verifier(&files, [&anchor_hex, &vault_hex], &[&path("d")]);
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
    assert_eq!(json["receipt"]["accepted_at_ms"], accepted_at_ms);

    let (ok, _) = run_verifier(&files, [&anchor_hex, &vault_hex], &[&path("altered")]);
    assert!(!ok, "an altered document must not verify");
    let (ok, _) = run_verifier(&files, [&hex::encode([7u8; 32]), &vault_hex], &[&path("d")]);
    assert!(!ok, "a certificate from another anchor must not verify");
    let (ok, _) = run_verifier(&files, [&anchor_hex, &anchor_hex], &[&path("d")]);
    assert!(!ok, "a receipt checked under another vault key must not verify");
    std::fs::write(path("q2"), receipt(Digest([1; 32]), 1, accepted_at_ms)).expect("receipt");
    let other_receipt = path("q2");
    let (ok, _) = run_verifier(&[files[0], &other_receipt, files[2]], [&anchor_hex, &vault_hex], &[&path("d")]);
    assert!(!ok, "another record's receipt must not verify");

    // A certificate revoked after the record was accepted leaves it valid; before, it fails (as in
    // `kho verify` and in the vault).
    let certificate_id = Signed::<kho::statement::KeyCertificate>::from_envelope(
        &std::fs::read(&certificate_file).expect("certificate"),
    )
    .expect("certificate")
    .id();
    let revocation = Signed::sign(
        CertificateRevocation {
            certificate: certificate_id,
            reason: kho::ids::Title::parse("key compromised").expect("reason"),
            signed_at_ms: accepted_at_ms,
        },
        &anchor,
    );
    std::fs::write(path("rev"), revocation.to_envelope()).expect("revocation");
    for (revoked_at, expected) in
        [(accepted_at_ms + 1, true), (accepted_at_ms, false), (accepted_at_ms - 60_000, false)]
    {
        std::fs::write(path("revq"), receipt(revocation.id(), 4, revoked_at)).expect("revocation receipt");
        let (ok, json) = run_verifier(
            &files,
            [&anchor_hex, &vault_hex],
            &[&path("d"), Path::new("--revocation"), &path("rev"), &path("revq")],
        );
        assert_eq!(ok, expected, "revoked at {revoked_at}, accepted at {accepted_at_ms}: {json}");
    }

    // With a vault key certificate instead of the vault key: the receipt verifies from the anchor alone,
    // and not with a certificate another key signed or one that starts after the receipt.
    for (signer, valid_from_ms, expected) in [
        (&anchor, accepted_at_ms - 1_000, true),
        (&issuer, accepted_at_ms - 1_000, false),
        (&anchor, accepted_at_ms + 1, false),
    ] {
        let certificate = Signed::sign(
            kho::statement::VaultKeyCertificate {
                origin: "kho.example/log".into(),
                subject: vault_key.public_key(),
                valid_from_ms,
                valid_until_ms: valid_from_ms + 86_400_000,
                signed_at_ms: valid_from_ms,
            },
            signer,
        );
        std::fs::write(path("vc"), certificate.to_envelope()).expect("vault certificate");
        let option = format!("--vault-certificate={}", path("vc").display());
        let (ok, json) = run_verifier(&files, [&anchor_hex, &option], &[&path("d")]);
        assert_eq!(ok, expected, "vault certificate from {valid_from_ms}: {json}");
    }

    // The committed fixtures verify too (the vault key of FORMAT.md 1.6 signed the receipt).
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v3/statements");
    let (ok, json) = run_verifier(
        &[
            &fixtures.join("record.kho-record"),
            &fixtures.join("receipt.kho-receipt"),
            &fixtures.join("certificate.kho-cert"),
        ],
        [
            "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c",
            "ed4928c628d1c2c6eae90338905995612959273a5c63f93636c14614ac8737d1",
        ],
        &[&fixtures.join("document.txt")],
    );
    assert!(ok, "{json}");
}

/// Runs tests/auditor/verify_log.py on a JSON file of proofs; its exit status and summary.
fn run_log_verifier(input: &serde_json::Value) -> (bool, serde_json::Value) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("proofs.json");
    std::fs::write(&path, input.to_string()).expect("proofs");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/auditor/verify_log.py");
    let output = Command::new("python3").arg(script).arg(&path).output().expect("python3 for the auditor test");
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    let start = stdout.find("\n{").unwrap_or_else(|| panic!("no JSON from the log verifier: {stdout}")) + 1;
    (output.status.success(), serde_json::from_str(&stdout[start..]).expect("verifier JSON"))
}

/// The log as an outsider checks it: the standalone verifier, written from docs/FORMAT.md, accepts the
/// checkpoints, inclusion and consistency proofs this build produces and rebuilds every leaf from its
/// fields; it and `kho::log` agree on every altered proof.
#[test]
fn the_standalone_verifier_checks_checkpoints_proofs_and_leaves_and_agrees_on_tampering() {
    use kho::log::{self, Entry};
    use kho::vault::{AccessAction, AccessEvent, AccessOutcome, Salt};
    let f = fixture();
    for i in 0..3 {
        let content = document(2_000 + i, i as u64, true);
        f.vault.deposit(&sign(record_for(&content, OWNER, AGENCY), &f.issuer), &content[..]).expect("deposit");
    }
    let old = f.vault.sign_checkpoint().expect("sign").expect("checkpoint");
    f.vault
        .record_access(&AccessEvent {
            at_ms: kho::ids::now_unix_ms(),
            owner: kho::ids::OwnerId::parse(OWNER).expect("owner"),
            subject: "officer-7".into(),
            role: "officer".into(),
            agency: Some(code(AGENCY)),
            purpose: Some(code("H26.99-0001")),
            record: None,
            action: AccessAction::ListRecords,
            outcome: AccessOutcome::Allowed,
            salt: Salt::random(),
        })
        .expect("access");
    let content = document(9_000, 4, false);
    f.vault.deposit(&sign(record_for(&content, OTHER_OWNER, AGENCY), &f.issuer), &content[..]).expect("deposit");
    let new = f.vault.sign_checkpoint().expect("sign").expect("checkpoint");
    let size = new.checkpoint.size;

    let mut inclusions = Vec::new();
    let mut entries = Vec::new();
    for index in 0..size {
        let proof = f.vault.inclusion_proof(index, None).expect("proof");
        inclusions.push(serde_json::json!({
            "index": index,
            "leaf_hash": hex::encode(proof.leaf_hash),
            "hashes": proof.hashes.iter().map(hex::encode).collect::<Vec<_>>(),
        }));
        let bytes = f.vault.log_entry(index).expect("read").expect("entry");
        let entry = Entry::decode(&bytes).expect("entry");
        let mut fields = serde_json::json!({
            "index": index, "entry_hex": hex::encode(&bytes), "kind": entry.kind,
            "accepted_at_ms": entry.accepted_at_ms, "id": entry.id.to_hex(),
        });
        if let Some(link) = entry.owner {
            fields["owner"] = link.owner.as_str().into();
            fields["position"] = link.position.into();
            fields["previous"] = hex::encode(link.previous).into();
        }
        entries.push(fields);
    }
    let consistency = f.vault.consistency_proof(old.checkpoint.size, None).expect("consistency");
    let map_proofs: Vec<serde_json::Value> = [OWNER, OTHER_OWNER, "001204099999"]
        .into_iter()
        .map(|owner| {
            let completeness =
                f.vault.completeness(&kho::ids::OwnerId::parse(owner).expect("owner")).expect("completeness");
            let commitment = Entry::decode(&completeness.evidence.commitment_entry).expect("commitment");
            serde_json::json!({
                "owner": owner,
                "root": commitment.id.to_hex(),
                "siblings": completeness.evidence.map_proof.siblings.iter().map(hex::encode).collect::<Vec<_>>(),
                "leaf": completeness.evidence.map_proof.leaf.as_ref().map(|(key, value)| serde_json::json!({
                    "key": hex::encode(key), "value": hex::encode(value),
                })),
                "value": completeness.head.map(|head| hex::encode(head.encode())),
            })
        })
        .collect();
    let input = serde_json::json!({
        "vault_key_hex": hex::encode(f.vault.public_key().raw_bytes()),
        "origin": f.vault.log_origin(),
        "checkpoint_note": new.note,
        "old_checkpoint_note": old.note,
        "inclusions": inclusions,
        "consistency": consistency.hashes.iter().map(hex::encode).collect::<Vec<_>>(),
        "entries": entries,
        "map_proofs": map_proofs,
    });
    let (ok, summary) = run_log_verifier(&input);
    assert!(ok, "{summary}");
    assert_eq!(summary["tree_size"], size);
    assert_eq!(summary["root"], hex::encode(new.checkpoint.root));
    // Signature, consistency, an inclusion and a rebuilt leaf per entry, the two owner-map commitments
    // (one per checkpoint) replayed, and three map proofs (two owners present, one absent).
    assert_eq!(summary["checks"], 2 + 2 * size + 2 + 3);

    // Tampering: each altered input fails in Python and in Rust alike.
    let mut altered_path = input.clone();
    altered_path["inclusions"][2]["hashes"][0] = hex::encode([0u8; 32]).into();
    let mut altered_consistency = input.clone();
    altered_consistency["consistency"][0] = hex::encode([1u8; 32]).into();
    let mut altered_note = input.clone();
    altered_note["checkpoint_note"] = new.note.replacen(&format!("\n{size}\n"), &format!("\n{}\n", size + 1), 1).into();
    let mut altered_entry = input.clone();
    altered_entry["entries"][3]["accepted_at_ms"] = (entries[3]["accepted_at_ms"].as_i64().expect("ms") + 1).into();
    let mut altered_map_proof = input.clone();
    altered_map_proof["map_proofs"][0]["value"] = altered_map_proof["map_proofs"][1]["value"].clone();
    let mut hidden_owner = input.clone();
    hidden_owner["map_proofs"][0]["leaf"] = serde_json::Value::Null;
    hidden_owner["map_proofs"][0]["value"] = serde_json::Value::Null;
    // An entry dropped and the rest renumbered (no inclusion proofs, so only the replay can notice).
    let mut dropped_entry = input.clone();
    dropped_entry["inclusions"] = serde_json::json!([]);
    dropped_entry["entries"].as_array_mut().expect("entries").remove(4);
    dropped_entry["entries"].as_array_mut().expect("entries").iter_mut().skip(4).for_each(|fields| {
        fields["index"] = (fields["index"].as_u64().expect("index") - 1).into();
    });
    for (what, altered, failing) in [
        ("a map proof claiming another owner's head", altered_map_proof, "owner map proof for"),
        ("a map proof hiding an owner", hidden_owner, "owner map proof for"),
        ("a log with an entry dropped", dropped_entry, "extends its owner's chain"),
    ] {
        let (ok, summary) = run_log_verifier(&altered);
        assert!(!ok, "Python accepted {what}: {summary}");
        let failed = summary["failed"].as_array().expect("failed").iter().filter_map(|name| name.as_str());
        assert!(failed.clone().any(|name| name.contains(failing)), "{what}: {summary}");
    }
    for (what, altered) in [
        ("an audit path hash", altered_path),
        ("a consistency hash", altered_consistency),
        ("the signed size", altered_note),
        ("an entry's time", altered_entry),
    ] {
        let (ok, summary) = run_log_verifier(&altered);
        assert!(!ok, "Python accepted {what}: {summary}");
    }
    let proof = f.vault.inclusion_proof(2, None).expect("proof");
    let mut hashes = proof.hashes.clone();
    hashes[0] = [0u8; 32];
    assert!(log::verify_inclusion(2, size, &proof.leaf_hash, &hashes, &new.checkpoint.root).is_err());
    let mut hashes = consistency.hashes.clone();
    hashes[0] = [1u8; 32];
    assert!(log::verify_consistency(old.checkpoint.size, size, &old.checkpoint.root, &new.checkpoint.root, &hashes)
        .is_err());
    let altered = new.note.replacen(&format!("\n{size}\n"), &format!("\n{}\n", size + 1), 1);
    assert!(log::checkpoint::open(&altered, f.vault.log_origin(), &f.vault.public_key()).is_err());

    // The test vectors of docs/FORMAT.md section 4.6: the reference tree's checkpoint signed by the vault
    // key 03..03, and the audit path of its leaf 5.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v3/statements");
    const HEAD: &str =
        "00000000000000010000000000000001731be7e9c4ea5f5e61555a00bf5e3e17367940916a5f8bbd8559bb9438e1a523";
    let vector = serde_json::json!({
        "vault_key_hex": "ed4928c628d1c2c6eae90338905995612959273a5c63f93636c14614ac8737d1",
        "origin": "kho.example/log",
        "checkpoint_note": std::fs::read_to_string(fixtures.join("checkpoint.note")).expect("note"),
        "inclusions": [{
            "index": 5,
            "leaf_hash": hex::encode(log::leaf_hash(&[0x40, 0x41, 0x42, 0x43])),
            "hashes": [
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        }],
        // The owner map of two owners and the first one's proof.
        "map_proofs": [{
            "owner": "001204012345",
            "root": "02e1cd62390c59e4f6749f29d95d6f3bec02857a404bf0fac2809a4d541dd325",
            "siblings": [
                "0000000000000000000000000000000000000000000000000000000000000000",
                "42d7f2f138ee74c7418d822b2f764e02f6046dc0348a99c5fddd64242630adde",
            ],
            "leaf": {"key": "3b1927a2fa2da9281d095598b612c46c040b614d3eeaa4dd3d78e6a7b4a96209", "value": HEAD},
            "value": HEAD,
        }],
    });
    let (ok, summary) = run_log_verifier(&vector);
    assert!(ok, "{summary}");
    assert_eq!(summary["checks"], 3, "{summary}");
    assert_eq!(summary["root"], "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328");
}

/// Rotating the vault key (`Vault::rotate_key`, what `kho rotate-key` runs): records, receipts,
/// checkpoints, share links and exports made under the old key stay verifiable, by Kho and by the
/// standard-library verifier, and the log stays one history across the handover.
#[test]
fn after_a_key_rotation_everything_signed_before_still_verifies_and_the_log_is_one_history() {
    use kho::evidence::{verify_bundle, Verdict, VerifyOptions};
    use kho::ids::{OwnerId, Title};
    use kho::log::checkpoint;
    use kho::statement::{Signed, VaultKeyCertificate};
    use kho::vault::{ExportScope, Vault};

    let f = fixture();
    let owner = OwnerId::parse(OWNER).expect("owner");
    let before = deposit(&f, b"a birth certificate deposited before the rotation");
    let upload = f
        .vault
        .upload(&owner, Title::parse("old scan").expect("title"), &b"%PDF-1.4\n a scan uploaded before"[..])
        .expect("upload");
    let share = f
        .vault
        .create_share(&owner, &before, Title::parse("a bank").expect("title"), std::time::Duration::from_secs(3600))
        .expect("share");
    let token = f.vault.share_token(share.id);
    let old = f.vault.sign_checkpoint().expect("sign").expect("checkpoint");
    let (old_key, origin) = (f.vault.public_key(), f.vault.log_origin().to_owned());
    let Fixture { dir, anchor, issuer, vault, .. } = f;
    let config = vault.config().clone();

    // Prepared while serving; the anchor certifies the next key before the switch.
    let prepared = kho::vault::prepare_next_key(&config).expect("prepare");
    assert!(prepared.created && prepared.origin == origin);
    assert!(!kho::vault::prepare_next_key(&config).expect("again").created, "preparing twice keeps the key");
    // A certificate that does not fit the prepared key refuses the rotation before anything changes.
    let misfit = VaultKeyCertificate {
        origin: origin.clone(),
        subject: old_key.clone(),
        valid_from_ms: kho::ids::now_unix_ms() - DAY_MS,
        valid_until_ms: kho::ids::now_unix_ms() + DAY_MS,
        signed_at_ms: kho::ids::now_unix_ms(),
    };
    let certificate_path = dir.path().join(kho::vault::NEXT_CERTIFICATE_FILE);
    std::fs::write(&certificate_path, Signed::sign(misfit, &anchor).to_envelope()).expect("certificate");
    let refused = vault.rotate_key().expect_err("a certificate of another key");
    assert!(refused.to_string().contains("certifies another key"), "{refused}");
    assert!(!dir.path().join(kho::vault::RETIRED_KEYS_DIRECTORY).exists());
    let vault = Vault::open(config.clone()).expect("unchanged");
    assert_eq!(vault.public_key(), old_key);
    let next_certificate = VaultKeyCertificate {
        origin: origin.clone(),
        subject: prepared.key.clone(),
        valid_from_ms: kho::ids::now_unix_ms() - DAY_MS,
        valid_until_ms: kho::ids::now_unix_ms() + 3650 * DAY_MS,
        signed_at_ms: kho::ids::now_unix_ms(),
    };
    std::fs::write(
        dir.path().join(kho::vault::NEXT_CERTIFICATE_FILE),
        Signed::sign(next_certificate, &anchor).to_envelope(),
    )
    .expect("certificate");
    let rotation = vault.rotate_key().expect("rotate");
    assert_eq!((rotation.retired.clone(), rotation.current.clone()), (old_key.clone(), prepared.key.clone()));
    assert!(rotation.certified);
    assert!(rotation.size >= old.checkpoint.size);
    let (handover, successor) =
        checkpoint::open_handover(&rotation.handover, &origin, &old_key).expect("the handover names the new key");
    assert_eq!((handover.size, successor), (rotation.size, prepared.key.clone()));
    assert!(!dir.path().join(kho::vault::NEXT_KEY_FILE).exists(), "the prepared key was installed");

    let vault = Vault::open(config.clone()).expect("reopen after rotation");
    assert_eq!(vault.public_key(), prepared.key);
    assert_eq!(vault.log_origin(), origin, "the origin stays the first key's");
    assert_eq!(vault.vault_certificate().expect("installed").body().subject, prepared.key);
    assert_eq!(vault.retired_keys().len(), 1);
    assert_eq!(vault.retired_keys()[0].until_size, rotation.size);
    assert!(vault.is_own_key(&old_key) && vault.is_own_key(&prepared.key));

    // The newest checkpoint is the handover: served under the new key at once.
    let latest = vault.latest_checkpoint().expect("latest").expect("some");
    assert_eq!(latest.checkpoint.size, rotation.size);
    checkpoint::open(&latest.note, &origin, &prepared.key).expect("signed by the new key");

    // Old records, receipts and uploads check; a new deposit is receipted by the new key.
    for id in [before, upload.id] {
        let view = vault.record(&id).expect("read").expect("record");
        assert_eq!(view.receipt.signer(), &old_key);
        let checks = vault.check_record(&view).expect("checks");
        assert!(checks.receipt.is_ok(), "{:?}", checks.receipt);
    }
    let content = b"a residence confirmation deposited after the rotation";
    let after = vault.deposit(&sign(record_for(content, OWNER, AGENCY), &issuer), &content[..]).expect("deposit");
    assert_eq!(vault.record(&after.id).expect("read").expect("record").receipt.signer(), &prepared.key);
    assert!(vault.share_by_token(&token).expect("share").is_some(), "a share link made before still opens");

    // One history: the old key's checkpoint is a prefix of the new key's.
    let new = vault.sign_checkpoint().expect("sign").expect("checkpoint");
    checkpoint::open(&new.note, &origin, &prepared.key).expect("new checkpoint under the new key");
    assert!(checkpoint::open(&new.note, &origin, &old_key).is_err(), "the retired key signs nothing new");
    let proof = vault.consistency_proof(old.checkpoint.size, None).expect("consistency");
    let old_note =
        checkpoint::open(&proof.old.note, &origin, &old_key).expect("the old checkpoint is served as signed");
    kho::log::verify_consistency(
        old_note.size,
        new.checkpoint.size,
        &old_note.root,
        &new.checkpoint.root,
        &proof.hashes,
    )
    .expect("consistent across the rotation");
    let report = vault.scrub(Default::default(), |_| {}).expect("scrub");
    assert!(report.findings.is_empty(), "{:?}", report.findings);

    // The owner's bundle verifies, by Kho (given the new key, or from the anchor alone) and by Python.
    let evidence = vault.export_evidence(&ExportScope::Owner(owner.clone())).expect("export");
    assert_eq!(evidence.retired_keys.len(), 1);
    let mut archive = Vec::new();
    let open = |blake3: &Digest| -> std::io::Result<Box<dyn std::io::Read>> {
        Ok(Box::new(vault.open_content(blake3, None).expect("open").expect("content")))
    };
    kho::evidence::BundlePlan::new(&evidence, kho::ids::now_unix_ms())
        .write(&mut archive, open, |_| {})
        .expect("write");
    let bundle = kho::evidence::Bundle::read(archive.as_slice(), |_| {}).expect("read");
    let manifest = bundle.manifest().expect("manifest");
    let verdicts = |options: &VerifyOptions, manifest: &kho::evidence::Manifest| {
        let report = verify_bundle(&bundle, manifest, options);
        let failed: Vec<String> = report.checks.iter().filter(|c| !c.passed).map(|c| c.what.clone()).collect();
        let of = |id: Digest| report.documents.iter().find(|d| d.id == id.to_hex()).map(|d| d.verdict);
        (failed, of(before), of(upload.id), of(after.id))
    };
    let given = VerifyOptions { vault_key: Some(prepared.key.clone()), ..Default::default() };
    let anchored = VerifyOptions { anchors: Some(vec![anchor.public_key()]), ..Default::default() };
    for options in [&given, &anchored] {
        let (failed, old_record, old_upload, new_record) = verdicts(options, &manifest);
        assert!(failed.is_empty(), "{failed:?}");
        assert_eq!(
            (old_record, old_upload, new_record),
            (Some(Verdict::Valid), Some(Verdict::SelfUploaded), Some(Verdict::Valid))
        );
    }
    // Without the handover the old key's receipts are not the vault's: neither the old record's nor
    // that of the issuer's certificate the new record relies on.
    let mut stripped = manifest.clone();
    stripped.retired_vault_keys.clear();
    let (_, old_record, _, new_record) = verdicts(&given, &stripped);
    assert_eq!((old_record, new_record), (Some(Verdict::ProofFails), Some(Verdict::UnknownIssuer)));
    // A handover naming another successor is refused.
    let mut forged = manifest.clone();
    forged.retired_vault_keys[0].key = hex::encode(key(9).public_key().raw_bytes());
    let (failed, old_record, _, _) = verdicts(&given, &forged);
    assert!(failed.iter().any(|f| f.contains("earlier vault key")), "{failed:?}");
    assert_eq!(old_record, Some(Verdict::ProofFails));

    let path = dir.path().join("rotated-bundle.tar");
    std::fs::write(&path, &archive).expect("bundle file");
    let output = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/auditor/verify_bundle.py"))
        .arg(&path)
        .args(["--vault-key", &hex::encode(prepared.key.raw_bytes())])
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("the earlier vault key"), "{stdout}");
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("summary");
    assert_eq!(summary["documents"][before.to_hex()], "valid", "{stdout}");
    assert_eq!(summary["documents"][after.id.to_hex()], "valid", "{stdout}");
}
