//! Arbitrary bytes as a certificate, a CRL, an OCSP response, a detached CMS signature (with its
//! timestamp token; checked with the content and with its SHA-256 alone) and a signed PDF (its signature dictionaries): the DER parsers, the PDF scanner, CMS
//! and timestamp checks, path validation and the revocation checks never panic, and whatever parses is
//! canonical DER.
#![no_main]

use kho::x509::path::RevocationPolicy;
use kho::x509::{Anchor, Certificate, Crl, OcspResponse, RevocationEvidence, TrustStore};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&[u8], &[u8], i64)| {
    let (first, second, at_ms) = input;
    let crl = Crl::from_der(second).ok();
    let ocsp = OcspResponse::from_der(second).ok();
    let _ = Certificate::all_from_pem_or_der(first);
    if let Ok(found) = kho::x509::pdf::signatures(first) {
        for signature in found {
            let [start, length, second, rest] = signature.byte_range;
            assert!(start == 0 && length < second && second + rest <= first.len());
        }
    }
    if let Ok((found, _)) = kho::x509::pdf::verify(first) {
        assert_eq!(found.byte_range[2] + found.byte_range[3], first.len());
    }
    let with_content = kho::x509::cms::verify_detached(second, first);
    if let Ok(signature) = &with_content {
        assert!(signature.certificates.contains(&signature.signer));
    }
    // Checked against the content's SHA-256 alone (a kept .p7s and a record): never more lenient.
    if let Ok(by_digest) = kho::x509::cms::verify_detached_sha256(second, &kho::ids::Digest::sha256(first).0) {
        let signature = with_content.expect("what holds by the digest holds with the content");
        assert_eq!(by_digest.signer.der(), signature.signer.der());
    }
    let Ok(cert) = Certificate::from_der(first) else { return };
    assert_eq!(cert.der(), first, "a certificate is kept as the exact bytes it came in");
    let _ = (cert.subject(), cert.issuer(), cert.serial_hex(), cert.validity_ms(), cert.fingerprint());
    let evidence = RevocationEvidence { crls: crl.into_iter().collect(), ocsp: ocsp.into_iter().collect() };
    let anchor = Anchor {
        certificate: cert.clone(),
        agency_attribute: "2.5.4.11".parse().expect("oid"),
        agency_prefix: String::new(),
    };
    let _ = anchor.agency_of(&cert);
    for required in [true, false] {
        let store = TrustStore {
            anchors: vec![anchor.clone()],
            revocation: RevocationPolicy { required, ..RevocationPolicy::default() },
        };
        let _ = store.validate(&cert, std::slice::from_ref(&cert), at_ms, &evidence);
    }
});
