//! X.509 path validation and revocation against a test PKI built by certomancer (two root
//! hierarchies, RSA and ECDSA signers, an expired and a revoked one, CRLs and OCSP responses), each case
//! checked against the verdict of pyhanko-certvalidator, an independent validator
//! (tests/pki/make_pki.py; `scripts/test` builds it).

use std::path::PathBuf;

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
    let cases: Vec<Case> =
        serde_json::from_slice(&std::fs::read(dir.join("cases.json")).expect("cases.json")).expect("cases");
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
            Err(error) => error.code(),
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
    assert!(error.to_string().contains("none was supplied"), "{error}");
    store.revocation.required = false;
    let path = store.validate(&signer, &[interm], at, &RevocationEvidence::default()).expect("allowed unchecked");
    assert!(path.revocation.iter().all(Option::is_none));
    assert_eq!(path.root(), &certificate(&dir, "gov-root"));
}
