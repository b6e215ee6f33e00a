//! The `kho` binary as a user runs it: keys, certificates, signing, offline verification, import,
//! with the exit codes and messages that scripts rely on (0 ok, 1 error, 2 usage, 3 invalid input).

use std::path::Path;
use std::process::{Command, Output};

use kho::ids::{now_unix_ms, Title};
use kho::statement::{Receipt, Signed};
use kho::vault::{Vault, VaultConfig};

fn kho(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kho")).current_dir(dir).args(args).output().expect("run kho")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let output = kho(dir, args);
    assert!(output.status.success(), "kho {args:?} failed: {}", text(&output));
    text(&output)
}

const SIGN: &[&str] = &[
    "sign",
    "--key",
    "issuer.pem",
    "--owner",
    "001204012345",
    "--type",
    "GKS",
    "--title",
    "Giấy khai sinh",
    "--agency",
    "000.00.00.H26",
    "--procedure",
    "1.001193",
    "--dossier",
    "H26.22-240301-0001",
];

#[test]
fn keys_certificates_signing_and_offline_verification() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    ok(d, &["keygen", "anchor"]);
    ok(d, &["keygen", "issuer"]);
    assert_eq!(kho(d, &["keygen", "issuer"]).status.code(), Some(1), "keygen never overwrites a key");
    ok(
        d,
        &[
            "certify",
            "--anchor-key",
            "anchor.pem",
            "--agency",
            "000.00.00.H26",
            "--issuer-key",
            "issuer.pub.pem",
            "--out",
            "issuer.kho-cert",
        ],
    );
    std::fs::write(d.join("birth.pdf"), b"%PDF-1.7 a birth certificate").expect("document");
    let out = ok(d, &[SIGN, &["birth.pdf"]].concat());
    assert!(out.contains("record ") && out.contains("birth.pdf.kho-record"), "{out}");

    // Offline verification needs the vault's receipt: before the record is accepted there is none.
    let verify =
        ["verify", "birth.pdf", "--certificate", "issuer.kho-cert", "--anchor", "anchor.pub.pem", "--vault-key"];
    let verify = [&verify[..], &["vault/vault-key.pub.pem"]].concat();
    let output = kho(d, &["keygen", "vault-stand-in"]);
    assert!(output.status.success());
    let unaccepted = [&verify[..verify.len() - 1], &["vault-stand-in.pub.pem"]].concat();
    let output = kho(d, &unaccepted);
    assert_eq!(output.status.code(), Some(3), "no receipt, no verdict: {}", text(&output));
    assert!(text(&output).contains("birth.pdf.kho-receipt"), "{}", text(&output));

    // Imported into a vault, the receipt is kept beside the document and the record verifies.
    std::fs::write(
        d.join("import.json"),
        r#"{"certificates": ["issuer.kho-cert"], "documents": [{"file": "birth.pdf"}]}"#,
    )
    .expect("manifest");
    ok(d, &["import", "import.json", "--data-dir", "vault", "--anchor", "anchor.pub.pem"]);
    let out = ok(d, &verify);
    assert!(out.contains("VERIFIED") && out.contains("when the vault accepted the record"), "{out}");

    // An altered document, a certificate checked against another anchor, a receipt checked against
    // another key: exit 3 with the reason.
    std::fs::write(d.join("birth.pdf"), b"%PDF-1.7 a birth certificatE").expect("alter");
    let output = kho(d, &verify);
    assert_eq!(output.status.code(), Some(3));
    assert!(text(&output).contains("FAIL BLAKE3"), "{}", text(&output));
    std::fs::write(d.join("birth.pdf"), b"%PDF-1.7 a birth certificate").expect("restore");
    ok(d, &["keygen", "stranger"]);
    let stranger_anchor: Vec<&str> =
        verify.iter().map(|arg| if *arg == "anchor.pub.pem" { "stranger.pub.pem" } else { arg }).collect();
    let output = kho(d, &stranger_anchor);
    assert_eq!(output.status.code(), Some(3));
    assert!(text(&output).contains("FAIL certificate"), "{}", text(&output));
    let output = kho(d, &unaccepted);
    assert_eq!(output.status.code(), Some(3));
    assert!(text(&output).contains("FAIL the receipt is signed by the vault key"), "{}", text(&output));

    // The rule is the vault's: the key must be unrevoked when the vault accepted the record. A
    // revocation accepted after the record leaves it valid; one accepted before it (shown here by a
    // receipt the vault key signs for a later time) fails, whatever the record's own signed_at says.
    let (revocation, revocation_receipt) = {
        let anchor = kho::keys::read_secret_key(&d.join("anchor.pem")).expect("anchor");
        let vault = Vault::open(VaultConfig::new(d.join("vault"), vec![anchor.public_key()])).expect("vault");
        let certificate = vault.certificates().expect("certificates").remove(0).certificate;
        let revocation = Signed::sign(
            kho::statement::CertificateRevocation {
                certificate: certificate.id(),
                reason: Title::parse("key compromised").expect("reason"),
                signed_at_ms: now_unix_ms(),
            },
            &anchor,
        );
        let accepted = vault.revoke_certificate(&revocation.to_envelope()).expect("revoke");
        (revocation, accepted.receipt)
    };
    std::fs::write(d.join("revocation.kho-revocation"), revocation.to_envelope()).expect("revocation");
    std::fs::write(d.join("revocation.kho-receipt"), revocation_receipt.to_envelope()).expect("receipt");
    let with_revocation = [
        &verify[..],
        &["--certificate-revocation", "revocation.kho-revocation", "--revocation-receipt", "revocation.kho-receipt"],
    ]
    .concat();
    let out = ok(d, &with_revocation);
    assert!(out.contains("after the vault accepted the record") && out.contains("VERIFIED"), "{out}");
    let vault_key = kho::keys::read_secret_key(&d.join("vault/vault-key.pem")).expect("vault key");
    let original = Signed::<Receipt>::from_envelope(&std::fs::read(d.join("birth.pdf.kho-receipt")).expect("receipt"))
        .expect("receipt");
    let late = Receipt { accepted_at_ms: revocation_receipt.body().accepted_at_ms + 1, ..original.body().clone() };
    std::fs::write(d.join("birth.pdf.kho-receipt"), Signed::sign(late, &vault_key).to_envelope()).expect("late");
    let output = kho(d, &with_revocation);
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
    assert!(text(&output).contains("FAIL the certificate was revoked at"), "{}", text(&output));
    assert!(text(&output).contains("before the vault accepted the record"), "{}", text(&output));
    std::fs::write(d.join("birth.pdf.kho-receipt"), original.to_envelope()).expect("restore the receipt");

    // The anchor certifies the vault key: the receipt then verifies from the anchor alone. A vault
    // certificate from another key is refused by kho verify, and by the vault itself at open.
    ok(d, &["certify-vault", "--anchor-key", "anchor.pem", "--data-dir", "vault"]);
    let shown: serde_json::Value =
        serde_json::from_str(&ok(d, &["show", "vault/vault-key.kho-cert"])).expect("show prints JSON");
    assert_eq!(shown["kind"], "vault key certificate");
    let by_certificate = [&verify[..verify.len() - 2], &["--vault-certificate", "vault/vault-key.kho-cert"]].concat();
    let out = ok(d, &by_certificate);
    assert!(out.contains("the vault key certificate") && out.contains("VERIFIED"), "{out}");
    ok(d, &["import", "import.json", "--data-dir", "vault", "--anchor", "anchor.pub.pem"]);
    ok(d, &["certify-vault", "--anchor-key", "stranger.pem", "--data-dir", "vault"]);
    let output = kho(d, &by_certificate);
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
    assert!(text(&output).contains("FAIL the vault key certificate"), "{}", text(&output));
    let output = kho(d, &["import", "import.json", "--data-dir", "vault", "--anchor", "anchor.pub.pem"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("not signed by a configured trust anchor"), "{}", text(&output));

    let shown = ok(d, &["show", "birth.pdf.kho-record"]);
    let json: serde_json::Value = serde_json::from_str(&shown).expect("show prints JSON");
    assert_eq!(json["record"]["owner"], "001204012345");
    assert_eq!(json["record"]["title"], "Giấy khai sinh");
}

#[test]
fn bad_input_gets_a_clear_message_and_exit_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    ok(d, &["keygen", "issuer"]);
    std::fs::write(d.join("doc.pdf"), b"x").expect("document");
    let mut args = SIGN.to_vec();
    args[4] = "12345";
    args.push("doc.pdf");
    let output = kho(d, &args);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output).contains("invalid owner id"), "{}", text(&output));
    assert!(!d.join("doc.pdf.kho-record").exists(), "nothing written on bad input");
    let output = kho(d, &["sign", "--key", "issuer.pem"]);
    assert_eq!(output.status.code(), Some(2), "missing arguments are a usage error");
    let output = kho(d, &["show", "doc.pdf"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output).contains("not a Kho statement"), "{}", text(&output));
}

#[test]
fn import_is_resumable_and_reports_what_it_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    ok(d, &["keygen", "anchor"]);
    ok(d, &["keygen", "issuer"]);
    std::fs::create_dir(d.join("inbox")).expect("inbox");
    ok(
        d,
        &[
            "certify",
            "--anchor-key",
            "anchor.pem",
            "--agency",
            "000.00.00.H26",
            "--issuer-key",
            "issuer.pub.pem",
            "--out",
            "inbox/issuer.kho-cert",
        ],
    );
    for i in 0..5 {
        let file = format!("inbox/doc-{i}.pdf");
        std::fs::write(d.join(&file), format!("document {i}").repeat(1000)).expect("document");
        ok(d, &[SIGN, &[file.as_str()]].concat());
    }
    let import = ["import", "inbox", "--data-dir", "vault", "--anchor", "anchor.pub.pem"];
    let out = ok(d, &import);
    assert!(
        out.contains("certificates added: 1; documents imported: 5; already present (skipped): 0; rejected: 0"),
        "{out}"
    );
    let out = ok(d, &import);
    assert!(out.contains("documents imported: 0; already present (skipped): 5; rejected: 0"), "{out}");

    // A document changed after signing and one without a record: rejected with reasons, exit 3.
    std::fs::write(d.join("inbox/doc-5.pdf"), b"original").expect("document");
    ok(d, &[SIGN, &["inbox/doc-5.pdf"]].concat());
    std::fs::write(d.join("inbox/doc-5.pdf"), b"modified").expect("tamper");
    std::fs::write(d.join("inbox/unsigned.pdf"), b"no record").expect("unsigned");
    let output = kho(d, &import);
    assert_eq!(output.status.code(), Some(3));
    let out = text(&output);
    assert!(out.contains("rejected: 2"), "{out}");
    assert!(out.contains("doc-5.pdf") && out.contains("content_hash_mismatch"), "{out}");
    assert!(out.contains("unsigned.pdf") && out.contains("cannot read record"), "{out}");

    // A JSON manifest works the same way.
    std::fs::write(d.join("manifest.json"), r#"{"documents": [{"file": "inbox/doc-0.pdf"}]}"#).expect("manifest");
    let out = ok(d, &["import", "manifest.json", "--data-dir", "vault", "--anchor", "anchor.pub.pem"]);
    assert!(out.contains("already present (skipped): 1"), "{out}");
}

#[test]
fn demo_builds_a_vault_whose_documents_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let out = ok(d, &["demo", "demo"]);
    assert!(out.contains("Giấy khai sinh") && out.contains("revoked") && out.contains("valid"), "{out}");
    let out = ok(
        d,
        &[
            "verify",
            "demo/documents/giay-khai-sinh.xml",
            "--certificate",
            "demo/issuer-0.kho-cert",
            "--anchor",
            "demo/anchor.pub.pem",
            "--vault-certificate",
            "demo/data/vault-key.kho-cert",
        ],
    );
    assert!(out.contains("VERIFIED"), "{out}");
    let out = ok(d, &["import", "demo/documents", "--data-dir", "demo/data", "--anchor", "demo/anchor.pub.pem"]);
    assert!(out.contains("already present (skipped): 3; rejected: 0"), "{out}");
    let output = kho(d, &["demo", "demo"]);
    assert_eq!(output.status.code(), Some(1), "a second demo in the same folder is refused");
}

#[test]
fn bench_runs_deposits_and_reads_over_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let scratch = dir.path().join("scratch");
    let out = ok(
        dir.path(),
        &[
            "bench",
            "--documents",
            "20",
            "--reads",
            "40",
            "--size-bytes",
            "10000",
            "--concurrency",
            "2",
            "--owners",
            "3",
            "--listings",
            "5",
            "--crash-reopen",
            "--json",
            dir.path().join("bench.json").to_str().expect("path"),
            "--dir",
            scratch.to_str().expect("path"),
        ],
    );
    assert!(out.contains("| deposit  |      20 |") && out.contains("| read     |      40 |"), "{out}");
    assert!(out.contains("| limit    |      20 |"), "the in-memory limit of the same documents: {out}");
    // The first of three owners holds 7 of the 20 documents; each listing checks it gets all seven.
    assert!(out.contains("| list     |       5 |"), "{out}");
    assert!(out.contains("killed at 20 documents, the server listened again"), "{out}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("bench.json")).expect("json")).expect("parses");
    assert!(report["reopen_after_kill_seconds"].as_f64().is_some_and(|s| s > 0.0), "{report}");
    assert!(report["bytes_on_disk_after_deposits"].as_u64().is_some_and(|b| b > 0), "{report}");
    assert!(!scratch.exists(), "the scratch directory is removed");
}
