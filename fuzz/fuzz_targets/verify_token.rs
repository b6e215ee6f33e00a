//! Arbitrary bytes as an identity provider's key set (JWKS) and as a bearer token: the key set parser
//! and the token verifier never panic, whatever keys a set holds; a token verifies only under a key
//! of its issuer.
#![no_main]

use std::sync::LazyLock;

use base64::Engine as _;
use kho::http::auth::{Authenticator, Issuer};
use kho::http::jwks::KeySet;
use libfuzzer_sys::fuzz_target;

const ISSUER: &str = "https://id.example.vn";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Tokens of each algorithm with signatures of plausible sizes, to run through keys parsed from the
/// fuzzed set (building each kind of verifier from fuzzed key material).
static PROBES: LazyLock<Vec<String>> = LazyLock::new(|| {
    let claims =
        b64(format!(r#"{{"iss":"{ISSUER}","aud":"kho","sub":"s","exp":9999999999,"role":"auditor"}}"#).as_bytes());
    [("RS256", 256), ("PS256", 256), ("ES256", 64), ("EdDSA", 64)]
        .iter()
        .flat_map(|(alg, length)| {
            [None, Some("a")].map(|kid| {
                let header = match kid {
                    Some(kid) => format!(r#"{{"alg":"{alg}","kid":"{kid}"}}"#),
                    None => format!(r#"{{"alg":"{alg}"}}"#),
                };
                format!("{}.{claims}.{}", b64(header.as_bytes()), b64(&vec![7; *length]))
            })
        })
        .collect()
});

/// An authenticator with an Ed25519 and a P-256 key, for fuzzed tokens.
static FIXED: LazyLock<Authenticator> = LazyLock::new(|| {
    let ed = ed25519_dalek::SigningKey::from_bytes(&[5; 32]).verifying_key();
    let set = format!(
        r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","kid":"a","x":"{}"}},
        {{"kty":"EC","crv":"P-256","kid":"b","x":"axfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpY","y":"T-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU"}}]}}"#,
        b64(ed.as_bytes())
    );
    let keys = KeySet::parse(set.as_bytes()).expect("fixed key set");
    assert_eq!(keys.keys.len(), 2, "{:?}", keys.skipped);
    Authenticator::new(vec![Issuer::new(ISSUER, "kho", keys)])
});

fuzz_target!(|input: (bool, &[u8])| {
    let (as_key_set, bytes) = input;
    if as_key_set {
        if let Ok(keys) = KeySet::parse(bytes) {
            assert!(!keys.keys.is_empty());
            let auth = Authenticator::new(vec![Issuer::new(ISSUER, "kho", keys)]);
            for probe in PROBES.iter() {
                assert!(auth.verify(probe).is_err(), "a made-up signature verified");
            }
        }
    } else if let Ok(token) = std::str::from_utf8(bytes) {
        assert!(FIXED.verify(token).is_err() || token.len() > 100, "a short token cannot carry a real signature");
    }
});
