//! X.509 path validation and revocation against a test PKI built by certomancer (two root
//! hierarchies, RSA and ECDSA signers, an expired and a revoked one, CRLs and OCSP responses), each case
//! checked against the verdict of pyhanko-certvalidator, an independent validator
//! (tests/pki/make_pki.py; `scripts/test` builds it).

use std::path::{Path, PathBuf};

use kho::x509::path::RevocationPolicy;
use kho::x509::{Anchor, Certificate, Crl, OcspResponse, RevocationEvidence, TrustStore};

/// The PKI `scripts/test` built, or None (with a loud message) when plain `cargo test` runs without it.
fn pki() -> Option<PathBuf> {
    match std::env::var_os("KHO_TEST_PKI") {
        Some(dir) => Some(PathBuf::from(dir)),
        None => {
            eprintln!(
                "\n!!! SKIPPED the X.509 tests: they need the test PKI that `scripts/test` builds with certomancer and\n!!! \
                 pyHanko from PyPI (`python3 -m venv target/pyenv && target/pyenv/bin/pip install certomancer pyHanko`,\n!!! \
                 then `target/pyenv/bin/python tests/pki/make_pki.py target/tmp/pki` and KHO_TEST_PKI=target/tmp/pki).\n"
            );
            None
        }
    }
}

fn read(dir: &std::path::Path, kind: &str, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(kind).join(format!("{name}.der"))).unwrap_or_else(|e| panic!("{kind}/{name}: {e}"))
}

fn certificate(dir: &std::path::Path, label: &str) -> Certificate {
    Certificate::from_der(&read(dir, "certs", label)).unwrap_or_else(|e| panic!("{label}: {e}"))
}

fn anchor(dir: &std::path::Path, label: &str) -> Anchor {
    Anchor {
        certificate: certificate(dir, label),
        agency_attribute: "2.5.4.11".parse().expect("OU"),
        agency_prefix: String::new(),
    }
}

/// A trust store of both test hierarchies' roots, revocation evidence required.
fn both_roots(dir: &std::path::Path) -> TrustStore {
    TrustStore {
        anchors: vec![anchor(dir, "gov-root"), anchor(dir, "pub-root")],
        revocation: RevocationPolicy::default(),
    }
}

/// The CRLs `folder/<name>.crl` as revocation evidence.
fn crls_in(folder: &std::path::Path, names: &[String]) -> RevocationEvidence {
    let crl = |name: &String| {
        let bytes = std::fs::read(folder.join(format!("{name}.crl"))).unwrap_or_else(|e| panic!("{name}: {e}"));
        Crl::from_der(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    RevocationEvidence { crls: names.iter().map(crl).collect(), ocsp: Vec::new() }
}

/// The cases the PKI script wrote to `dir/<file>`.
fn read_cases<T: serde::de::DeserializeOwned>(dir: &std::path::Path, file: &str) -> Vec<T> {
    serde_json::from_slice(&std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}")))
        .unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn time_ms(text: &str) -> i64 {
    let time = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).expect("time");
    i64::try_from(time.unix_timestamp_nanos() / 1_000_000).expect("ms")
}

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    leaf: String,
    intermediates: Vec<String>,
    roots: Vec<String>,
    crls: Vec<String>,
    ocsps: Vec<String>,
    time: String,
    verdict: String,
}

#[test]
fn kho_gives_the_independent_validators_verdict_on_every_case_of_the_test_pki() {
    let Some(dir) = pki() else { return };
    let cases: Vec<Case> = read_cases(&dir, "cases.json");
    assert!(cases.len() >= 15, "the PKI script wrote {} cases", cases.len());
    let mut verdicts = std::collections::BTreeMap::<String, usize>::new();
    for case in &cases {
        let store = TrustStore {
            anchors: case.roots.iter().map(|root| anchor(&dir, root)).collect(),
            revocation: RevocationPolicy::default(),
        };
        let evidence = RevocationEvidence {
            crls: case.crls.iter().map(|name| Crl::from_der(&read(&dir, "crl", name)).expect("crl")).collect(),
            ocsp: case
                .ocsps
                .iter()
                .map(|name| OcspResponse::from_der(&read(&dir, "ocsp", name)).expect("ocsp"))
                .collect(),
        };
        // A tampered certificate may not even parse; that is a bad signature too.
        let leaf = match Certificate::from_der(&read(&dir, "certs", &case.leaf)) {
            Ok(leaf) => leaf,
            Err(error) => {
                assert_eq!(case.verdict, "bad_signature", "{}: {error}", case.name);
                continue;
            }
        };
        let intermediates: Vec<Certificate> = case.intermediates.iter().map(|label| certificate(&dir, label)).collect();
        let result = store.validate(&leaf, &intermediates, time_ms(&case.time), &evidence);
        let ours = match &result {
            Ok(path) => {
                assert_eq!(path.signer(), &leaf);
                assert_eq!(path.revocation.len(), path.chain.len() - 1);
                assert!(path.revocation.iter().all(Option::is_some), "{}: every certificate checked", case.name);
                "valid"
            }
            Err(error) => error.code().as_str(),
        };
        assert_eq!(ours, case.verdict, "{}: Kho says {result:?}", case.name);
        *verdicts.entry(case.verdict.clone()).or_default() += 1;
    }
    // Every kind of verdict was exercised.
    for kind in ["valid", "expired", "revoked", "no_path", "bad_signature", "no_revocation_info"] {
        assert!(verdicts.contains_key(kind), "no case gave {kind}: {verdicts:?}");
    }
}

#[test]
fn the_agency_code_comes_from_the_configured_field_and_revocation_can_be_optional() {
    let Some(dir) = pki() else { return };
    let signer = certificate(&dir, "gov-signer-ec");
    let mut root = anchor(&dir, "gov-root");
    assert_eq!(root.agency_of(&signer).as_deref(), Some("000.00.00.H26"));
    root.agency_prefix = "MNS:".into();
    assert_eq!(root.agency_of(&signer), None, "a configured prefix must be there");
    root.agency_attribute = "0.9.2342.19200300.100.1.1".parse().expect("UID");
    assert_eq!(root.agency_of(&signer), None, "no such attribute");

    let at = time_ms("2026-06-01T12:00:00+00:00");
    let mut store = TrustStore { anchors: vec![anchor(&dir, "gov-root")], revocation: RevocationPolicy::default() };
    let interm = certificate(&dir, "gov-interm");
    let error = store
        .validate(&signer, std::slice::from_ref(&interm), at, &RevocationEvidence::default())
        .expect_err("required");
    assert_eq!(error.code(), "no_revocation_info");
    assert!(error.to_string().contains("none from its issuer"), "{error}");
    store.revocation.required = false;
    let path = store.validate(&signer, &[interm], at, &RevocationEvidence::default()).expect("allowed unchecked");
    assert!(path.revocation.iter().all(Option::is_none));
    assert_eq!(path.root(), &certificate(&dir, "gov-root"));
    // A root signs certificates, not documents.
    let root = certificate(&dir, "gov-root");
    let error = store.validate(&root, &[], at, &RevocationEvidence::default()).expect_err("a root as signer");
    assert_eq!(error.code(), "no_path");
}

/// Runs openssl, an independent implementation, to verify `signature` over `message` with the public
/// key of `certificate` (DER), as FORMAT.md section 1.3 defines algorithms 2 and 3.
/// Whether tests/auditor/verify_record.py's parser (Python's standard library only) verifies the
/// statement's signature.
fn python_verifies(envelope: &[u8]) -> bool {
    let file = tempfile::NamedTempFile::new().expect("temp");
    std::fs::write(file.path(), envelope).expect("write");
    let auditor = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/auditor");
    let script = "import sys; sys.path.insert(0, sys.argv[1]); from verify_record import parse; \
                  print(parse(open(sys.argv[2], 'rb').read())['signature_valid'])";
    let output = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&auditor)
        .arg(file.path())
        .output()
        .expect("python3");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim() == "True"
}

fn openssl_verifies(certificate: &Certificate, message: &[u8], signature: &[u8], pss: bool) -> bool {
    let dir = tempfile::tempdir().expect("dir");
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).expect("write");
        path
    };
    let cert = write("cert.der", certificate.der());
    let message = write("message", message);
    let signature = write("signature", signature);
    let key = dir.path().join("key.pem");
    let extracted = std::process::Command::new("openssl")
        .args(["x509", "-inform", "DER", "-pubkey", "-noout", "-in"])
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(extracted.status.success());
    std::fs::write(&key, extracted.stdout).expect("key");
    let mut command = std::process::Command::new("openssl");
    command.args(["dgst", "-sha256", "-verify"]).arg(&key).arg("-signature").arg(&signature);
    if pss {
        command.args([
            "-sigopt",
            "rsa_padding_mode:pss",
            "-sigopt",
            "rsa_pss_saltlen:32",
            "-sigopt",
            "rsa_mgf1_md:sha256",
        ]);
    }
    command.arg(&message).output().expect("run openssl").status.success()
}

#[test]
fn records_signed_with_x509_keys_carry_their_chain_verify_and_validate_to_their_root() {
    use kho::keys::X509SigningKey;
    use kho::statement::{Algorithm, PublicKey, Record, RsaPadding, Signed};
    let Some(dir) = pki() else { return };
    let owner = kho::ids::OwnerId::parse("001204012345").expect("owner");
    let store = both_roots(&dir);
    let evidence = RevocationEvidence {
        crls: ["gov-interm@2026-06-01", "pub-interm@2026-06-01", "gov-root@2026-06-01", "pub-root@2026-06-01"]
            .iter()
            .map(|name| Crl::from_der(&read(&dir, "crl", name)).expect("crl"))
            .collect(),
        ocsp: Vec::new(),
    };
    for (signer, padding, algorithm, agency) in [
        ("gov-signer-rsa", RsaPadding::Pkcs1v15, Algorithm::RsaSha256, "000.00.00.H26"),
        ("gov-signer-rsa", RsaPadding::Pss, Algorithm::RsaSha256, "000.00.00.H26"),
        ("gov-signer-ec", RsaPadding::Pkcs1v15, Algorithm::EcdsaP256Sha256, "000.00.00.H26"),
        ("pub-signer-rsa", RsaPadding::Pss, Algorithm::RsaSha256, "000.00.00.G01"),
        ("pub-signer-ec", RsaPadding::Pkcs1v15, Algorithm::EcdsaP256Sha256, "000.00.00.G01"),
    ] {
        let key = X509SigningKey::read(
            &dir.join("keys").join(format!("{signer}.key.pem")),
            &dir.join("chains").join(format!("{signer}.pem")),
            padding,
        )
        .unwrap_or_else(|e| panic!("{signer}: {e}"));
        let agency_code = kho::ids::Code::parse("agency", agency).expect("agency");
        let record = kho::sample::record(b"%PDF-1.7 a result", &owner, &agency_code, 1_780_000_000_000);
        let signed = Signed::sign(record.clone(), &key);
        let envelope = signed.to_envelope();
        let decoded = Signed::<Record>::from_envelope(&envelope).unwrap_or_else(|e| panic!("{signer}: {e}"));
        assert_eq!(decoded.body(), &record);
        assert_eq!(decoded.id(), signed.id());
        let PublicKey::X509(x509) = decoded.signer() else { panic!("{signer}: not an X.509 signer") };
        assert_eq!(decoded.signer().algorithm(), algorithm);
        assert_eq!(x509.certificate(), &certificate(&dir, signer));
        assert_eq!(x509.intermediates().len(), 1);
        // openssl, independently, verifies the signature over the signed bytes with the certificate's key.
        let signature = if algorithm == Algorithm::EcdsaP256Sha256 {
            p256::ecdsa::Signature::from_slice(decoded.signature()).expect("r||s").to_der().as_bytes().to_vec()
        } else {
            decoded.signature().to_vec()
        };
        assert!(
            openssl_verifies(
                x509.certificate(),
                decoded.signed_bytes(),
                &signature,
                padding == RsaPadding::Pss && algorithm == Algorithm::RsaSha256
            ),
            "{signer}: openssl does not verify Kho's signature"
        );
        // So does the auditors' standard-library Python verifier; not once a bit of the signature flips.
        assert!(python_verifies(&envelope), "{signer}: verify_record.py does not verify it");
        let mut flipped = envelope.clone();
        let last = flipped.len() - 3;
        flipped[last] ^= 1;
        assert!(!python_verifies(&flipped), "{signer}: verify_record.py verifies a flipped signature");
        // The chain it carries validates to its own hierarchy's root, and names the record's agency.
        let path = store
            .validate(x509.certificate(), x509.intermediates(), time_ms("2026-06-01T12:00:00+00:00"), &evidence)
            .unwrap_or_else(|e| panic!("{signer}: {e}"));
        assert_eq!(store.anchors[path.anchor].agency_of(x509.certificate()).as_deref(), Some(agency));
        // A flipped signature bit, or a flipped bit in the signed bytes, is refused.
        let mut bad = decoded.signature().to_vec();
        bad[5] ^= 1;
        assert!(Signed::<Record>::from_parts(decoded.signed_bytes(), &bad).is_err());
        let mut bad = decoded.signed_bytes().to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(Signed::<Record>::from_parts(&bad, decoded.signature()).is_err());
    }
    // A chain that is not for the key is refused when the key is read.
    let error = X509SigningKey::read(
        &dir.join("keys/gov-signer-ec.key.pem"),
        &dir.join("chains/gov-signer-rsa.pem"),
        RsaPadding::Pkcs1v15,
    )
    .err()
    .expect("mismatch");
    assert!(error.to_string().contains("not for the key"), "{error}");
}

#[derive(serde::Deserialize)]
struct CmsCase {
    name: String,
    p7s: String,
    data: String,
    crls: Vec<String>,
    time: String,
    timestamped: bool,
    verdict: String,
}

/// Detached CMS signatures (`.p7s`) made by pyHanko, with and without an RFC 3161 timestamp: Kho's
/// verdict (the signature's bytes, then the signer's path at the timestamp's time, or at the time
/// pyHanko validated, and the timestamping authority's path) equals pyHanko's on every case.
#[test]
fn detached_cms_signatures_get_pyhankos_verdict_and_a_timestamp_decides_the_time() {
    use kho::x509::cms::verify_detached;
    let Some(dir) = pki() else { return };
    let cms = dir.join("cms");
    let cases: Vec<CmsCase> = read_cases(&dir, "cms_cases.json");
    assert!(cases.len() >= 9);
    let store = both_roots(&dir);
    for case in &cases {
        let p7s = std::fs::read(cms.join(&case.p7s)).expect("p7s");
        let data = std::fs::read(cms.join(&case.data)).expect("data");
        let evidence = crls_in(&cms, &case.crls);
        // Checked against the content's SHA-256 alone (as a Kho record names it), the same verdict.
        let by_digest = kho::x509::cms::verify_detached_sha256(&p7s, &kho::ids::Digest::sha256(&data).0);
        let ours = match verify_detached(&p7s, &data) {
            Err(error) => {
                assert_eq!(by_digest.expect_err("by digest too").code(), error.code(), "{}", case.name);
                error.code().as_str().to_owned()
            }
            Ok(signature) => {
                let by_digest = by_digest.unwrap_or_else(|e| panic!("{}: by digest: {e}", case.name));
                assert_eq!(by_digest.signer, signature.signer, "{}", case.name);
                assert_eq!(signature.timestamp.is_some(), case.timestamped, "{}", case.name);
                match kho::x509::check_signature(&store, &signature, &evidence, time_ms(&case.time)) {
                    Ok(check) => {
                        // A timestamp decides the time, and it is the one pyHanko was told.
                        assert_eq!(check.at_ms, time_ms(&case.time), "{}", case.name);
                        assert_eq!(check.timestamped_by.is_some(), case.timestamped, "{}", case.name);
                        "valid".to_owned()
                    }
                    Err(error) => error.code().as_str().to_owned(),
                }
            }
        };
        assert_eq!(ours, case.verdict, "{}", case.name);
    }
    // Bytes that are not a signature, or a signature cut short, are refused by name.
    let p7s = std::fs::read(cms.join(&cases[0].p7s)).expect("p7s");
    let data = std::fs::read(cms.join(&cases[0].data)).expect("data");
    assert_eq!(verify_detached(b"not a signature", &data).expect_err("garbage").code(), "malformed_signature");
    assert_eq!(verify_detached(&p7s[..p7s.len() - 1], &data).expect_err("truncated").code(), "malformed_signature");
    let other = kho::ids::Digest::sha256(b"other content").0;
    assert_eq!(kho::x509::cms::verify_detached_sha256(&p7s, &other).expect_err("other").code(), "bad_digest");
}

#[derive(serde::Deserialize)]
struct PdfCase {
    name: String,
    pdf: String,
    crls: Vec<String>,
    time: String,
    timestamped: bool,
    verdict: String,
}

/// PDFs signed by pyHanko as PAdES B-B and B-T, one altered after signing: Kho finds the signature,
/// checks it over its byte range, and gives pyHanko's verdict at the timestamp's time (or pyHanko's).
/// Bytes appended after signing are refused whoever signed.
#[test]
fn pades_signed_pdfs_get_pyhankos_verdict_and_appended_bytes_are_refused() {
    use kho::x509::pdf;
    let Some(dir) = pki() else { return };
    let folder = dir.join("pdf");
    let cases: Vec<PdfCase> = read_cases(&dir, "pdf_cases.json");
    assert!(cases.len() >= 5);
    let store = both_roots(&dir);
    for case in &cases {
        let bytes = std::fs::read(folder.join(&case.pdf)).expect("pdf");
        let evidence = crls_in(&folder, &case.crls);
        let ours = match pdf::verify(&bytes) {
            Err(error) => error.code().as_str().to_owned(),
            Ok((found, signature)) => {
                assert_eq!(found.byte_range[2] + found.byte_range[3], bytes.len(), "{}", case.name);
                assert_eq!(signature.timestamp.is_some(), case.timestamped, "{}", case.name);
                match kho::x509::check_signature(&store, &signature, &evidence, time_ms(&case.time)) {
                    Ok(check) => {
                        assert!(check.agency.is_some(), "{}", case.name);
                        "valid".to_owned()
                    }
                    Err(error) => error.code().as_str().to_owned(),
                }
            }
        };
        assert_eq!(ours, case.verdict, "{}", case.name);
    }
    // An incremental update appended after signing (which could add or replace pages) is refused.
    let mut appended = std::fs::read(folder.join(&cases[0].pdf)).expect("pdf");
    appended.extend_from_slice(b"\n1 0 obj\n<< /Type /Catalog /Pages 9 0 R >>\nendobj\n%%EOF\n");
    assert_eq!(pdf::verify(&appended).expect_err("appended").code(), "changed_after_signing");
    assert_eq!(pdf::verify(b"%PDF-1.7\nunsigned\n%%EOF").expect_err("unsigned").code(), "no_signature");
}

/// `kho check-signature` through the real binary, with the roots and evidence folder of a config file:
/// the sentence an officer reads, the agency, and exit 3 with the reason for a revoked signer.
#[test]
fn kho_check_signature_says_who_signed_under_which_root_when_and_by_whose_timestamp() {
    let Some(dir) = pki() else { return };
    let cases: Vec<PdfCase> = read_cases(&dir, "pdf_cases.json");
    let work = tempfile::tempdir().expect("dir");
    let run = |case: &PdfCase, with_evidence: bool| {
        let evidence = work.path().join(&case.pdf);
        std::fs::create_dir_all(&evidence).expect("evidence folder");
        if with_evidence {
            for name in &case.crls {
                let crl = format!("{name}.crl");
                std::fs::copy(dir.join("pdf").join(&crl), evidence.join(&crl)).expect("crl");
            }
        }
        let config = work.path().join(format!("{}.toml", case.pdf));
        std::fs::write(
            &config,
            format!(
                "[x509]\nrevocation_evidence = [{evidence:?}]\n[[x509.roots]]\ncertificate = {:?}\nagency_attribute = \"OU\"\n\
                 [[x509.roots]]\ncertificate = {:?}\nagency_attribute = \"2.5.4.11\"\n",
                dir.join("certs/gov-root.der"),
                dir.join("certs/pub-root.der"),
            ),
        )
        .expect("config");
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_kho"))
            .arg("check-signature")
            .arg(dir.join("pdf").join(&case.pdf))
            .args(["--at", &case.time])
            .env("KHO_CONFIG", &config)
            .output()
            .expect("run kho");
        let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
        (output.status.code(), text)
    };
    let timestamped = cases.iter().find(|c| c.verdict == "valid" && c.timestamped).expect("a valid B-T case");
    let (code, text) = run(timestamped, true);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("signature valid: signed by CN=Cuc Quan ly chat luong"), "{text}");
    assert!(text.contains("under CN=Kho Test Public Root CA"), "{text}");
    assert!(text.contains("timestamped by CN=Kho Test Time Stamping Authority"), "{text}");
    assert!(text.contains("agency: 000.00.00.G01"), "{text}");
    assert!(text.contains("not revoked: CN=Kho Test Public Issuing CA"), "{text}");
    let revoked = cases.iter().find(|c| c.verdict == "revoked").expect("a revoked case");
    let (code, text) = run(revoked, true);
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("SIGNATURE INVALID (revoked)"), "{text}");
    // Without the CRLs nothing shows the signer unrevoked.
    let untimestamped = cases.iter().find(|c| c.verdict == "valid" && !c.timestamped).expect("a valid B-B case");
    let (code, text) = run(untimestamped, false);
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("SIGNATURE INVALID (no_revocation_info)"), "{text}");
}

/// The vault accepts a record signed with an agency's X.509 key only after validating its chain now,
/// with the configured evidence, for the agency its root's mapping reads; it records that validation in
/// the log first (kind 10) with the CRLs it used; every refusal names its reason and changes nothing.
#[test]
fn the_vault_accepts_x509_signed_records_after_logging_their_validation_and_refuses_the_rest() {
    use kho::keys::X509SigningKey;
    use kho::statement::{RsaPadding, Signed};
    use kho::vault::{Vault, VaultConfig, X509Trust};
    let Some(dir) = pki() else { return };
    let cases: Vec<PdfCase> =
        serde_json::from_slice(&std::fs::read(dir.join("pdf_cases.json")).expect("pdf_cases.json")).expect("cases");
    // The CRLs current when the PKI was made (minutes ago): the untimestamped PDF case's.
    let current = cases.iter().find(|c| !c.timestamped).expect("a B-B case");
    let work = tempfile::tempdir().expect("dir");
    let evidence = work.path().join("revocation");
    std::fs::create_dir_all(&evidence).expect("evidence");
    for name in &current.crls {
        std::fs::copy(dir.join("pdf").join(format!("{name}.crl")), evidence.join(format!("{name}.crl"))).expect("crl");
    }
    let anchor_key = kho::statement::SecretKey::generate();
    let mut config = VaultConfig::new(work.path().join("data"), vec![anchor_key.public_key()]);
    config.x509 = X509Trust {
        store: TrustStore {
            anchors: vec![anchor(&dir, "gov-root"), anchor(&dir, "pub-root")],
            revocation: RevocationPolicy::default(),
        },
        evidence: vec![evidence.clone()],
    };
    let vault = Vault::open(config).expect("open");
    let owner = kho::ids::OwnerId::parse("001204012345").expect("owner");
    let key = |label: &str| {
        X509SigningKey::read(
            &dir.join("keys").join(format!("{label}.key.pem")),
            &dir.join("chains").join(format!("{label}.pem")),
            RsaPadding::Pkcs1v15,
        )
        .expect("key")
    };
    let deposit = |label: &str, agency: &str, content: &[u8]| {
        let agency = kho::ids::Code::parse("agency", agency).expect("agency");
        let record = kho::sample::record(content, &owner, &agency, kho::ids::now_unix_ms());
        vault.deposit(&Signed::sign(record, &key(label)).to_envelope(), content)
    };
    let before = vault.log_size();
    let accepted = deposit("gov-signer-rsa", "000.00.00.H26", b"%PDF-1.7 giay khai sinh").expect("accepted");
    assert_eq!(vault.log_size(), before + 2, "the validation, then the record");
    let validation = vault.log_entry(before).expect("entry").expect("present");
    assert_eq!(validation[1], 10, "the entry before the record is a signature validation");
    assert_eq!(accepted.receipt.body().log_index, before + 1);
    assert!(vault.record(&accepted.id).expect("record").is_some());
    let state = vault.state_digest().expect("state");
    let refused = |label: &str, agency: &str, content: &[u8]| {
        let error = deposit(label, agency, content).expect_err("refused");
        assert_eq!(vault.state_digest().expect("state"), state, "{label}: a refusal changes nothing");
        match error {
            kho::vault::DepositError::Trust(trust) => trust.code(),
            other => panic!("{label}: {other}"),
        }
    };
    assert_eq!(refused("gov-signer-ec", "000.00.00.G01", b"another agency's"), "x509_other_agency");
    assert_eq!(refused("gov-revoked", "000.00.00.H26", b"revoked"), "x509_revoked");
    assert_eq!(refused("gov-expired", "000.00.00.H26", b"expired"), "x509_expired");
    assert_eq!(refused("rogue-signer", "000.00.00.H26", b"rogue"), "x509_no_path");
    // The agency revokes its record with its X.509 key: validated and logged the same way; another
    // hierarchy's key for another agency cannot.
    let revocation = |agency: &str| kho::statement::RecordRevocation {
        record: accepted.id,
        issuer_agency: kho::ids::Code::parse("agency", agency).expect("agency"),
        reason: kho::ids::Title::parse("Cấp nhầm").expect("reason"),
        signed_at_ms: kho::ids::now_unix_ms(),
    };
    let wrong = Signed::sign(revocation("000.00.00.G01"), &key("pub-signer-ec"));
    assert!(vault.revoke(&wrong.to_envelope()).is_err(), "another agency's key cannot revoke it");
    let size = vault.log_size();
    let revoked = vault.revoke(&Signed::sign(revocation("000.00.00.H26"), &key("gov-signer-rsa")).to_envelope());
    assert!(revoked.is_ok(), "{revoked:?}");
    assert_eq!(vault.log_size(), size + 2, "the revocation's validation, then the revocation");
    let valid = deposit("gov-signer-ec", "000.00.00.H26", b"%PDF-1.7 ban sao").expect("accepted");
    bundle_of_x509_records_verifies_offline(&vault, &owner, &dir, accepted.id, valid.id);
    for file in std::fs::read_dir(&evidence).expect("evidence") {
        std::fs::remove_file(file.expect("file").path()).expect("remove");
    }
    let state = vault.state_digest().expect("state");
    let error = deposit("gov-signer-ec", "000.00.00.H26", b"no evidence").expect_err("no evidence");
    assert!(matches!(&error, kho::vault::DepositError::Trust(t) if t.code() == "x509_no_revocation_info"), "{error}");
    assert_eq!(vault.state_digest().expect("state"), state, "a refusal changes nothing");
    // Scrub checks the validation and the evidence it kept; the owner's chain, which now holds the
    // validation before the record, still proves complete.
    let report = vault.scrub(Default::default(), |_| {}).expect("scrub");
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    vault.sign_checkpoint().expect("checkpoint");
    let checked = vault.check_completeness(&owner).expect("completeness").expect("a checkpoint");
    assert!(checked.is_ok(), "{checked:?}");
}

/// The owner's store exported: each X.509-signed statement's validation and the CRLs it used travel
/// with it, and the offline verifier validates the chains again from the bundle alone; taking a piece
/// out, swapping evidence, or pinning another root each fails it.
fn bundle_of_x509_records_verifies_offline(
    vault: &kho::vault::Vault,
    owner: &kho::ids::OwnerId,
    pki: &Path,
    revoked: kho::ids::Digest,
    valid: kho::ids::Digest,
) {
    use kho::evidence::{verify_bundle, Bundle, Verdict, VerifyOptions};
    use kho::statement::{SignatureValidation, Signed};
    let evidence = vault.export_evidence(&kho::vault::ExportScope::Owner(owner.clone())).expect("export");
    assert_eq!(evidence.validations.len(), 3, "the two records' and the revocation's");
    assert!(!evidence.x509_evidence.is_empty(), "the CRLs the validations used");
    let (archive, bundle) = write_bundle(vault, &evidence);
    let path = pki.join("x509-store-bundle.tar");
    std::fs::write(&path, &archive).expect("bundle file");
    let manifest = bundle.manifest().expect("manifest");
    assert_eq!(manifest.x509_roots.len(), 2);
    let verdicts = |bundle: &Bundle, options: &VerifyOptions| {
        let report = verify_bundle(bundle, &manifest, options);
        let failed: Vec<String> = report.checks.iter().filter(|c| !c.passed).map(|c| c.what.clone()).collect();
        let of = |id: kho::ids::Digest| {
            report.documents.iter().find(|d| d.id == id.to_hex()).map(|d| (d.verdict, d.reasons.join("; ")))
        };
        (of(revoked).expect("revoked one"), of(valid).expect("valid one"), failed)
    };
    let options = VerifyOptions { vault_key: Some(vault.public_key()), ..Default::default() };
    let ((verdict, reasons), (valid_verdict, valid_reasons), failed) = verdicts(&bundle, &options);
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(verdict, Verdict::Revoked, "{reasons}");
    assert_eq!(valid_verdict, Verdict::Valid, "{valid_reasons}");
    assert!(
        valid_reasons.contains("signed by")
            && valid_reasons.contains("CN=UBND xa Dong Son")
            && valid_reasons.contains("under")
            && valid_reasons.contains("CN=Kho Test Gov Root CA"),
        "{valid_reasons}"
    );
    // The auditors' standard-library verifier agrees, and refuses the bundle without the validation.
    let (passed, summary, stdout) = python_verify_bundle(&path, vault);
    assert!(passed, "{stdout}");
    assert_eq!(summary["documents"][revoked.to_hex()], "revoked", "{stdout}");
    assert_eq!(summary["documents"][valid.to_hex()], "valid", "{stdout}");
    assert!(stdout.contains("signed by CN=UBND xa Dong Son"), "{stdout}");
    // Pinning the root that signed them passes; pinning only the other hierarchy's fails them.
    let root = |name: &str| std::fs::read(pki.join("certs").join(format!("{name}.der"))).expect("root");
    let gov = VerifyOptions { x509_roots: Some(vec![root("gov-root")]), ..options.clone() };
    let (_, (pinned, _), failed) = verdicts(&bundle, &gov);
    assert_eq!((pinned, failed.len()), (Verdict::Valid, 0));
    let public = VerifyOptions { x509_roots: Some(vec![root("pub-root")]), ..options.clone() };
    let (_, (other, reasons), _) = verdicts(&bundle, &public);
    assert_eq!(other, Verdict::UnknownIssuer, "{reasons}");
    // The validation of the valid record taken out: the record fails and the store is incomplete.
    let mut without = Bundle { files: bundle.files.clone(), documents: bundle.documents.clone() };
    let validation = without
        .files
        .iter()
        .find(|(path, bytes)| {
            path.starts_with("validations/")
                && Signed::<SignatureValidation>::from_envelope(bytes).is_ok_and(|v| v.body().statement == valid)
        })
        .map(|(path, _)| path.clone())
        .expect("the valid record's validation");
    without.files.remove(&validation).expect("validation file");
    let (_, (verdict, reasons), failed) = verdicts(&without, &options);
    assert_eq!(verdict, Verdict::UnknownIssuer, "{reasons}");
    assert!(failed.iter().any(|f| f.contains("signature validation")), "{failed:?}");
    let stripped = pki.join("x509-store-bundle-without-validation.tar");
    let copy = "import sys, tarfile\n\
                src, dst = tarfile.open(sys.argv[1]), tarfile.open(sys.argv[2], 'w', format=tarfile.USTAR_FORMAT)\n\
                [dst.addfile(m, src.extractfile(m)) for m in src if m.name != sys.argv[3]]\n\
                dst.close()";
    let status = std::process::Command::new("python3")
        .args(["-c", copy])
        .arg(&path)
        .arg(&stripped)
        .arg(&validation)
        .status()
        .expect("python3");
    assert!(status.success());
    let (passed, summary, stdout) = python_verify_bundle(&stripped, vault);
    assert!(!passed, "{stdout}");
    assert_eq!(summary["documents"][valid.to_hex()], "unknown_issuer", "{stdout}");
    assert!(stdout.contains("FAIL every record"), "{stdout}");
    // A CRL swapped for another file: the validation no longer finds what it names.
    let mut swapped = Bundle { files: bundle.files.clone(), documents: bundle.documents.clone() };
    let crl = swapped.files.keys().find(|p| p.starts_with("x509/evidence/")).cloned().expect("a CRL");
    swapped.files.insert(crl, b"not a CRL".to_vec());
    let (_, (verdict, reasons), _) = verdicts(&swapped, &options);
    assert_eq!(verdict, Verdict::UnknownIssuer, "{reasons}");
}

/// Signed PDFs deposited as they are: the vault checks the embedded PAdES signature (at its timestamp's
/// time when it has one), records the document for the agency its signer's certificate names, with the
/// validation logged first; every bad document is refused with pyHanko's reason and changes nothing; the
/// same document again is the same record; and the evidence travels: the bundle verifies offline, in
/// Rust and in the auditors' Python.
#[test]
fn signed_pdfs_are_deposited_as_they_are_with_their_validation_and_bad_ones_refused_with_the_reason() {
    use kho::evidence::{verify_bundle, Verdict, VerifyOptions};
    use kho::ids::{Code, Date, OwnerId, Title};
    use kho::vault::{DepositError, DocumentDetails};
    let Some(dir) = pki() else { return };
    let cases: Vec<PdfCase> = read_cases(&dir, "pdf_cases.json");
    let pdf = |n: usize| std::fs::read(dir.join("pdf").join(&cases[n].pdf)).expect("pdf");
    let (_work, vault) = signed_documents_vault(&dir, &cases);
    let owner = OwnerId::parse("001204012345").expect("owner");
    let details = |agency: &str| DocumentDetails {
        owner: owner.clone(),
        agency: Code::parse("agency", agency).expect("agency"),
        document_type: Code::parse("type", "GKS").expect("type"),
        title: Title::parse("Giấy khai sinh").expect("title"),
        issued_on: Date::from_yyyymmdd(20261101).expect("date"),
        valid_from: Date::from_yyyymmdd(20261101).expect("date"),
        valid_until: None,
        procedure: Code::parse("procedure", "1.001193").expect("procedure"),
        dossier: Code::parse("dossier", "H26.22-261101-0001").expect("dossier"),
        supersedes: None,
    };
    // B-B under the government CA, for the agency its certificate's OU names.
    let before = vault.log_size();
    let gov = vault.deposit_signed_pdf(&pdf(0), details("000.00.00.H26")).expect("B-B accepted");
    assert!(gov.newly_accepted);
    assert_eq!(vault.log_size(), before + 2, "the validation, then the record");
    assert_eq!(vault.log_entry(before).expect("entry").expect("present")[1], 10);
    let view = vault.record(&gov.id).expect("read").expect("record");
    assert_eq!(view.record.signer(), &vault.public_key(), "the vault's record of the document");
    assert_eq!(view.record.body().issuer_agency.as_str(), "000.00.00.H26");
    assert_eq!(view.record.body().sha256, kho::ids::Digest::sha256(&pdf(0)), "the PDF exactly as signed");
    let again = vault.deposit_signed_pdf(&pdf(0), details("000.00.00.H26")).expect("again");
    assert_eq!((again.id, again.newly_accepted, vault.log_size()), (gov.id, false, before + 2), "the same record");
    // B-T under a public CA: decided at the timestamp's time.
    let public = vault.deposit_signed_pdf(&pdf(1), details("000.00.00.G01")).expect("B-T accepted");
    let record = vault.record(&public.id).expect("read").expect("record");
    assert_eq!(record.record.body().issuer_agency.as_str(), "000.00.00.G01");
    // The record says who signed under which root, when, and whose timestamp decided the time.
    let json = serde_json::to_value(kho::json::record_view_json(&record)).expect("json");
    assert!(json["signature"]["root"].as_str().is_some_and(|root| root.contains("Root")), "{json}");
    assert!(json["signature"]["timestamped_by"].as_str().is_some_and(|tsa| !tsa.is_empty()), "{json}");
    let json = serde_json::to_value(kho::json::record_view_json(&view)).expect("json");
    assert!(json["signature"]["signer"].as_str().is_some_and(|s| s.contains("OU=000.00.00.H26")), "{json}");
    assert!(json["signature"]["timestamped_by"].is_null(), "B-B has no timestamp: {json}");
    // Refusals: each with the reason pyHanko gives, none changing anything.
    let state = vault.state_digest().expect("state");
    let refused = |bytes: &[u8], agency: &str| {
        let error = vault.deposit_signed_pdf(bytes, details(agency)).expect_err("refused");
        assert_eq!(vault.state_digest().expect("state"), state, "{error}: a refusal changes nothing");
        match &error {
            DepositError::EmbeddedSignature { code, .. } => code.to_string(),
            DepositError::Trust(trust) => trust.code().as_str().to_owned(),
            other => panic!("{other}"),
        }
    };
    assert_eq!(refused(&pdf(0), "000.00.00.G01"), "x509_other_agency", "another agency's name on it");
    for (n, case) in cases.iter().enumerate().skip(2) {
        assert_eq!(refused(&pdf(n), "000.00.00.H26"), case.verdict, "{}", case.name);
    }
    let mut appended = pdf(0);
    appended.extend_from_slice(b"\n1 0 obj\n<< /Type /Catalog /Pages 9 0 R >>\nendobj\n%%EOF\n");
    assert_eq!(refused(&appended, "000.00.00.H26"), "changed_after_signing");
    assert_eq!(refused(b"%PDF-1.7\nunsigned\n%%EOF", "000.00.00.H26"), "no_signature");
    assert_eq!(refused(b"GIF89a", "000.00.00.H26"), "not_a_pdf");
    // A file with its detached signature (.p7s): the same, with the signature kept beside the record.
    let cms = |n: usize, file: &str| cms_case(&dir, n, file);
    let octets = kho::ids::MediaType::parse("application/octet-stream").expect("media type");
    let detached = vault
        .deposit_detached_signed(&cms(0, "data"), &cms(0, "p7s"), octets.clone(), details("000.00.00.H26"))
        .expect("a detached signature accepted");
    assert!(detached.newly_accepted);
    let state = vault.state_digest().expect("state");
    for (n, code) in [(4, "bad_digest"), (8, "no_path")] {
        let error = vault
            .deposit_detached_signed(&cms(n, "data"), &cms(n, "p7s"), octets.clone(), details("000.00.00.H26"))
            .expect_err("refused");
        assert!(matches!(&error, DepositError::EmbeddedSignature { code: c, .. } if *c == code), "{error}");
        assert_eq!(vault.state_digest().expect("state"), state, "a refusal changes nothing");
    }
    let report = vault.scrub(Default::default(), |_| {}).expect("scrub");
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    // The evidence travels.
    let evidence = vault.export_evidence(&kho::vault::ExportScope::Owner(owner.clone())).expect("export");
    let (archive, bundle) = write_bundle(&vault, &evidence);
    let options = VerifyOptions { vault_key: Some(vault.public_key()), ..Default::default() };
    let report = verify_bundle(&bundle, &bundle.manifest().expect("manifest"), &options);
    assert!(!report.failed(), "{report:?}");
    for document in &report.documents {
        assert_eq!(document.verdict, Verdict::Valid, "{document:?}");
        assert!(
            document.reasons.iter().any(|r| r.starts_with("the document's own signature: signed by")
                || r.starts_with("the document's detached signature, checked again: signed by")),
            "{document:?}"
        );
    }
    let with_p7s = report.documents.iter().find(|d| d.id == detached.id.to_hex()).expect("detached");
    assert!(with_p7s.reasons.iter().any(|r| r.contains("checked again: signed by")), "{with_p7s:?}");
    let timestamped = report.documents.iter().find(|d| d.id == public.id.to_hex()).expect("B-T");
    assert!(timestamped.reasons.iter().any(|r| r.contains("timestamped by")), "{timestamped:?}");
    // The kept .p7s altered in the bundle: that document's evidence fails.
    let mut altered = kho::evidence::Bundle { files: bundle.files.clone(), documents: bundle.documents.clone() };
    let p7s = kho::evidence::bundle::detached_signature_path(&detached.id);
    let mut bytes = altered.files.get(&p7s).expect("the .p7s travels").clone();
    let last = bytes.len() - 10;
    bytes[last] ^= 1;
    altered.files.insert(p7s, bytes);
    let altered_report = verify_bundle(&altered, &altered.manifest().expect("manifest"), &options);
    let with_p7s = altered_report.documents.iter().find(|d| d.id == detached.id.to_hex()).expect("detached");
    assert_eq!(with_p7s.verdict, Verdict::UnknownIssuer, "{with_p7s:?}");
    // A single document's bundle carries its validation too.
    let single = vault.export_evidence(&kho::vault::ExportScope::Record(public.id)).expect("export");
    let (_, one) = write_bundle(&vault, &single);
    let report_one = verify_bundle(&one, &one.manifest().expect("manifest"), &options);
    assert!(!report_one.failed(), "{report_one:?}");
    let path = dir.join("signed-pdf-bundle.tar");
    std::fs::write(&path, &archive).expect("bundle file");
    let (passed, _, stdout) = python_verify_bundle(&path, &vault);
    assert!(passed, "{stdout}");
    assert!(stdout.contains("the document's own signature: signed by"), "{stdout}");
    assert!(stdout.contains(&format!("records/{}/signature.p7s", detached.id)), "{stdout}");
}

/// The same over HTTP, as an agency's system sends it: a signed PDF as the body of
/// `POST /v1/signed-documents`, or any file with its detached signature in Kho-Signature and its media
/// type as the Content-Type; the answer is the record with its signature; a bad signature is 422 with
/// pyHanko's reason, a malformed header 400, another agency's signer 422, a citizen 403, each changing
/// nothing; the content read back is the file as signed.
#[tokio::test]
async fn signed_documents_over_http_as_a_pdf_or_a_file_with_its_p7s() {
    use axum::http::{Request, StatusCode};
    use base64::Engine as _;
    use http_body_util::BodyExt as _;
    use kho::http::auth::{mint, Audience, Claims, Issuer};
    use kho::http::{jwks::KeySet, AppState, Authenticator, Limits, Role};
    use tower::ServiceExt as _;
    let Some(dir) = pki() else { return };
    let cases: Vec<PdfCase> = read_cases(&dir, "pdf_cases.json");
    let (_work, vault) = signed_documents_vault(&dir, &cases);
    let idp = kho::statement::SecretKey::generate();
    let auth = Authenticator::new(vec![Issuer::new("https://id.test", "kho", KeySet::ed25519(&[idp.public_key()]))]);
    let limits = Limits {
        statement_body_size_bytes_max: 64 * 1024,
        request_timeout: std::time::Duration::from_secs(30),
        concurrency_limit: 8,
        ..Limits::default()
    };
    let state = AppState::new(vault, auth, limits, Default::default());
    let app = kho::http::router(state.clone());
    let token = |role: Role, agency: Option<&str>| {
        let now = kho::ids::now_unix_ms() / 1000;
        mint(
            &Claims {
                iss: "https://id.test".into(),
                aud: Audience::One("kho".into()),
                sub: "system-1".into(),
                exp: now + 600,
                nbf: None,
                iat: Some(now),
                role,
                agency: agency.map(str::to_owned),
                owner: (role == Role::Citizen).then(|| "001204012345".to_owned()),
            },
            &idp,
        )
    };
    let call = |token: String, uri: String, headers: Vec<(&'static str, String)>, body: Vec<u8>| {
        let app = app.clone();
        async move {
            let mut request =
                Request::builder().method("POST").uri(uri).header("authorization", format!("Bearer {token}"));
            if body.is_empty() {
                request = request.method("GET");
            }
            for (name, value) in headers {
                request = request.header(name, value);
            }
            let response = app.oneshot(request.body(axum::body::Body::from(body)).expect("request")).await.expect("ok");
            let status = response.status();
            let body = response.into_body().collect().await.expect("body").to_bytes().to_vec();
            (status, body)
        }
    };
    let json = |body: &[u8]| serde_json::from_slice::<serde_json::Value>(body).expect("json");
    let gov = || token(Role::Issuer, Some("000.00.00.H26"));
    let uri = "/v1/signed-documents?owner=001204012345&document_type=KQ&title=K%E1%BA%BFt%20qu%E1%BA%A3&procedure=1.001193&dossier=H26.22-261101-0002";
    let state_now = || state.vault().state_digest().expect("state");
    // A signed PDF as it is.
    let pdf = std::fs::read(dir.join("pdf").join(&cases[0].pdf)).expect("pdf");
    let (status, body) = call(gov(), uri.into(), vec![("content-type", "application/pdf".into())], pdf.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&body));
    let answer = json(&body);
    assert!(answer["signature"]["signer"].as_str().is_some_and(|s| s.contains("H26")), "{answer}");
    assert_eq!(answer["record"]["media_type"], "application/pdf", "{answer}");
    // A file with its detached signature; its media type from the Content-Type.
    let p7s = base64::engine::general_purpose::STANDARD.encode(cms_case(&dir, 0, "p7s"));
    let data = cms_case(&dir, 0, "data");
    let detached_headers =
        |p7s: &str| vec![("content-type", "application/xml".to_owned()), ("kho-signature", p7s.to_owned())];
    let (status, body) = call(gov(), uri.into(), detached_headers(&p7s), data.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&body));
    let answer = json(&body);
    assert_eq!(answer["record"]["media_type"], "application/xml", "{answer}");
    assert!(answer["signature"]["validation"].is_string(), "{answer}");
    let id = answer["record"]["id"].as_str().expect("id").to_owned();
    let (status, again) = call(gov(), uri.into(), detached_headers(&p7s), data.clone()).await;
    assert_eq!((status, json(&again)["record"]["id"].as_str()), (StatusCode::OK, Some(id.as_str())), "the same record");
    let (status, content) = call(token(Role::Citizen, None), format!("/v1/records/{id}/content"), vec![], vec![]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(content == data, "the owner reads the file exactly as signed");
    // Refusals: each with its reason, none changing anything.
    let before = state_now();
    let refused = |token: String, headers: Vec<(&'static str, String)>, body: Vec<u8>| {
        let call = &call;
        async move {
            let (status, body) = call(token, uri.into(), headers, body).await;
            (status, json(&body)["error"]["code"].as_str().unwrap_or_default().to_owned())
        }
    };
    let tampered = [data.as_slice(), b" "].concat();
    assert_eq!(
        refused(gov(), detached_headers(&p7s), tampered).await,
        (StatusCode::UNPROCESSABLE_ENTITY, "bad_digest".to_owned())
    );
    let wrong_root = base64::engine::general_purpose::STANDARD.encode(cms_case(&dir, 8, "p7s"));
    assert_eq!(
        refused(gov(), detached_headers(&wrong_root), cms_case(&dir, 8, "data")).await,
        (StatusCode::UNPROCESSABLE_ENTITY, "no_path".to_owned())
    );
    assert_eq!(
        refused(gov(), detached_headers("not base64!"), data.clone()).await,
        (StatusCode::BAD_REQUEST, "malformed_signature".to_owned())
    );
    assert_eq!(
        refused(gov(), vec![("content-type", "no slash".into()), ("kho-signature", p7s.clone())], data.clone()).await,
        (StatusCode::BAD_REQUEST, "invalid_details".to_owned())
    );
    assert_eq!(
        refused(token(Role::Issuer, Some("000.00.00.G01")), detached_headers(&p7s), data.clone()).await,
        (StatusCode::UNPROCESSABLE_ENTITY, "x509_other_agency".to_owned())
    );
    assert_eq!(
        refused(token(Role::Citizen, None), detached_headers(&p7s), data.clone()).await,
        (StatusCode::FORBIDDEN, "forbidden".to_owned())
    );
    assert_eq!(state_now(), before, "no refusal changed anything");
}

/// A vault trusting both test hierarchies, with the revocation evidence of every PDF case and of the
/// detached CMS cases 0, 4 and 8 configured; and the folder it lives in.
fn signed_documents_vault(dir: &Path, cases: &[PdfCase]) -> (tempfile::TempDir, kho::vault::Vault) {
    let work = tempfile::tempdir().expect("dir");
    let evidence = work.path().join("revocation");
    std::fs::create_dir_all(&evidence).expect("evidence");
    for name in cases.iter().flat_map(|case| &case.crls) {
        std::fs::copy(dir.join("pdf").join(format!("{name}.crl")), evidence.join(format!("{name}.crl"))).expect("crl");
    }
    for n in [0, 4, 8] {
        for name in ["gov-interm", "pub-interm", "gov-root", "pub-root"] {
            let crl = format!("case{n}-{name}.crl");
            std::fs::copy(dir.join("cms").join(&crl), evidence.join(&crl)).expect("crl");
        }
    }
    let mut config = kho::vault::VaultConfig::new(
        work.path().join("data"),
        vec![kho::statement::SecretKey::generate().public_key()],
    );
    config.x509 = kho::vault::X509Trust { store: both_roots(dir), evidence: vec![evidence] };
    let vault = kho::vault::Vault::open(config).expect("open");
    (work, vault)
}

/// File `file` of detached CMS case `n` (`data`, `p7s`).
fn cms_case(dir: &Path, n: usize, file: &str) -> Vec<u8> {
    std::fs::read(dir.join("cms").join(format!("case{n}.{file}"))).expect("cms")
}

/// The archive of `evidence` exported from `vault`, and the archive read back.
fn write_bundle(vault: &kho::vault::Vault, evidence: &kho::vault::Evidence) -> (Vec<u8>, kho::evidence::Bundle) {
    let mut archive = Vec::new();
    let open = |blake3: &kho::ids::Digest| -> std::io::Result<Box<dyn std::io::Read>> {
        Ok(Box::new(vault.open_content(blake3, None).expect("open").expect("content")))
    };
    kho::evidence::BundlePlan::new(evidence, kho::ids::now_unix_ms()).write(&mut archive, open, |_| {}).expect("write");
    let bundle = kho::evidence::Bundle::read(archive.as_slice(), |_| {}).expect("read");
    (archive, bundle)
}

/// tests/auditor/verify_bundle.py on the bundle at `path` with the vault key given: whether it passed,
/// its JSON summary, and everything it printed.
fn python_verify_bundle(path: &Path, vault: &kho::vault::Vault) -> (bool, serde_json::Value, String) {
    let output = std::process::Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/auditor/verify_bundle.py"))
        .arg(path)
        .args(["--vault-key", &hex::encode(vault.public_key().raw_bytes())])
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let summary: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap_or_else(|_| panic!("{stdout}"));
    (output.status.success(), summary, stdout)
}
