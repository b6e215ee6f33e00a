//! Evidence bundles are untrusted input to `kho verify`. Two ways in: arbitrary bytes as an archive,
//! and byte flips inside the files of a real bundle (a store with a valid, a revoked and a superseded
//! record, exported once per process), which keeps the archive readable so the flips reach the JSON,
//! statement, proof and completeness checks. Never a panic; the untouched bundle verifies; a flip in a
//! document makes exactly that document tampered; a flip in signed bytes fails something.
#![no_main]

use std::io::Read as _;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use kho::evidence::{verify_bundle, Bundle, BundlePlan, Verdict, VerifyOptions};
use kho::ids::{now_unix_ms, Code, OwnerId, Title};
use kho::statement::{KeyCertificate, RecordRevocation, SecretKey, Signed};
use kho::store::memory::Memory;
use kho::vault::{ExportScope, Vault, VaultConfig};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Input {
    Raw(Vec<u8>),
    Flips(Vec<(u16, u32, u8)>),
}

struct Seed {
    files: Vec<(String, Vec<u8>)>,
    vault_key: kho::statement::PublicKey,
}

fn seed() -> &'static Seed {
    static SEED: OnceLock<Seed> = OnceLock::new();
    SEED.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let anchor = SecretKey::from_ed25519(ed25519_dalek::SigningKey::from_bytes(&[1; 32]));
        let issuer = SecretKey::from_ed25519(ed25519_dalek::SigningKey::from_bytes(&[2; 32]));
        let config = VaultConfig::new(dir.path(), vec![anchor.public_key()]);
        let vault = Vault::open_on(config, Memory::new().engines()).expect("vault");
        let agency = Code::parse("agency", "000.00.00.H26").expect("code");
        let certificate = KeyCertificate {
            agency: agency.clone(),
            subject: issuer.public_key(),
            valid_from_ms: 0,
            valid_until_ms: i64::MAX,
            signed_at_ms: 0,
        };
        vault.add_certificate(&Signed::sign(certificate, &anchor).to_envelope()).expect("certificate");
        let owner = OwnerId::parse("001204012345").expect("owner");
        let mut ids = Vec::new();
        for seed in 0..3u64 {
            let content = kho::sample::document(3000 + seed as usize * 100, seed, true);
            let mut record = kho::sample::record(&content, &owner, &agency, now_unix_ms());
            if seed == 2 {
                record.supersedes = Some(ids[1]);
            }
            let envelope = Signed::sign(record, &issuer).to_envelope();
            ids.push(vault.deposit(&envelope, &content[..]).expect("deposit").id);
        }
        let revocation = RecordRevocation {
            record: ids[0],
            issuer_agency: agency,
            reason: Title::parse("issued in error").expect("reason"),
            signed_at_ms: now_unix_ms(),
        };
        vault.revoke(&Signed::sign(revocation, &issuer).to_envelope()).expect("revoke");
        let evidence = vault.export_evidence(&ExportScope::Owner(owner)).expect("evidence");
        let open = |blake3: &kho::ids::Digest| -> std::io::Result<Box<dyn std::io::Read>> {
            Ok(Box::new(vault.open_content(blake3, None).expect("content").expect("stored")))
        };
        let bytes = BundlePlan::new(&evidence, now_unix_ms()).write(Vec::new(), open, |_| {}).expect("bundle");
        let mut files = Vec::new();
        let mut archive = tar::Archive::new(&bytes[..]);
        for entry in archive.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            let path = entry.path().expect("path").display().to_string();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).expect("read");
            files.push((path, data));
        }
        Seed { files, vault_key: vault.public_key() }
    })
}

fn archive(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut header = tar::Header::new_ustar();
        header.set_path(path).expect("path");
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append(&header, data.as_slice()).expect("append");
    }
    builder.into_inner().expect("archive")
}

fn verify(bytes: &[u8], vault_key: Option<kho::statement::PublicKey>) -> Option<kho::evidence::Report> {
    let bundle = Bundle::read(bytes, |_| {}).ok()?;
    let manifest = bundle.manifest().ok()?;
    Some(verify_bundle(&bundle, &manifest, &VerifyOptions { vault_key, ..VerifyOptions::default() }))
}

fuzz_target!(|input: Input| {
    let seed = seed();
    match input {
        Input::Raw(bytes) => {
            let _ = verify(&bytes, None);
        }
        Input::Flips(flips) => {
            let original = verify(&archive(&seed.files), Some(seed.vault_key.clone())).expect("the seed reads");
            assert!(!original.failed(), "the untouched bundle verifies: {original:?}");
            let mut files = seed.files.clone();
            for (file, offset, xor) in flips.into_iter().take(8) {
                let index = usize::from(file) % files.len();
                let data = &mut files[index].1;
                if data.is_empty() || xor == 0 {
                    continue;
                }
                let at = offset as usize % data.len();
                data[at] ^= xor;
            }
            // Two flips of the same byte cancel: what changed is what differs from the seed.
            let changed: Vec<usize> = (0..files.len()).filter(|&i| files[i].1 != seed.files[i].1).collect();
            let Some(report) = verify(&archive(&files), Some(seed.vault_key.clone())) else { return };
            for &index in &changed {
                let path = &files[index].0;
                // Signed bytes: a flip anywhere in a statement or the checkpoint fails something.
                let signed = path == "checkpoint"
                    || [".kho-record", ".kho-receipt", ".kho-revocation", ".kho-cert"]
                        .iter()
                        .any(|s| path.ends_with(s));
                assert!(!signed || report.failed(), "{path} was altered and everything passed: {report:?}");
                if let Some(id) = path.strip_prefix("records/").and_then(|p| p.strip_suffix("/document.pdf")) {
                    match report.documents.iter().find(|d| d.id == id) {
                        Some(document) => assert_eq!(document.verdict, Verdict::Tampered, "{path}: {document:?}"),
                        // A flip in the manifest unlisted it: the unlisted file fails a check instead.
                        None => assert!(report.failed(), "{path} was altered and unlisted, and all passed"),
                    }
                }
            }
        }
    }
});
