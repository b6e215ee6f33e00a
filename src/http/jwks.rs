//! JSON Web Key Sets (RFC 7517): an identity provider's token-signing keys, parsed strictly from
//! untrusted bytes (fuzzed), and kept fresh from its URL: fetched at start and again when a token
//! names a key id the set lacks, never more often than a minimum interval.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde::Deserialize;

use crate::statement::PublicKey;

/// Largest key set accepted, from a file or a URL.
pub const JWKS_SIZE_BYTES_MAX: usize = 64 * 1024;
/// Most keys taken from one set; a token without a key id is tried against each key of its family.
pub const JWKS_KEYS_MAX: usize = 32;
/// Longest key id accepted.
pub const KEY_ID_LENGTH_BYTES_MAX: usize = 256;
/// RSA keys shorter than this are refused (the national CAs issue 2048 bits and more).
pub const RSA_MODULUS_BITS_MIN: usize = 2048;
/// RSA keys longer than this are refused (what the verifier accepts, and a bound on its work).
pub const RSA_MODULUS_BITS_MAX: usize = 4096;
/// Default least time between two fetches of one set.
pub const JWKS_REFRESH_SECONDS_MIN_DEFAULT: u64 = 60;
/// Time allowed for one fetch of a key set.
pub const JWKS_FETCH_TIMEOUT_SECONDS: u64 = 10;

/// The algorithms Kho accepts tokens in; everything else (HS*, none, ES384, RS384 ...) is refused.
pub const ALGORITHMS_SUPPORTED: [Algorithm; 4] =
    [Algorithm::RS256, Algorithm::PS256, Algorithm::ES256, Algorithm::EdDSA];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwksError {
    #[error("the key set is larger than {JWKS_SIZE_BYTES_MAX} bytes")]
    TooLarge,
    #[error("the key set is not a JSON object with a \"keys\" array: {0}")]
    Malformed(String),
    #[error("the key set has no key Kho can verify tokens with ({0})")]
    NoUsableKey(String),
    #[error("cannot fetch the key set from {url}: {reason}")]
    Fetch { url: String, reason: String },
}

/// One verification key of a set.
#[derive(Clone)]
pub struct VerificationKey {
    pub kid: Option<String>,
    /// The `alg` the set pins the key to, if it does.
    pub alg: Option<Algorithm>,
    pub family: AlgorithmFamily,
    pub key: DecodingKey,
}

impl std::fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerificationKey").field("kid", &self.kid).field("alg", &self.alg).finish_non_exhaustive()
    }
}

/// The usable signing keys of a set, and why the others were left out.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    pub keys: Vec<VerificationKey>,
    /// One line per key left out (encryption keys, unsupported types, bad parameters).
    pub skipped: Vec<String>,
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

/// The members of a JWK that Kho reads (RFC 7517 section 4, RFC 7518 section 6).
#[derive(Deserialize)]
struct RawKey {
    kty: String,
    #[serde(rename = "use")]
    public_key_use: Option<String>,
    key_ops: Option<Vec<String>>,
    alg: Option<String>,
    kid: Option<String>,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

fn decoded(member: &'static str, value: Option<&str>) -> Result<Vec<u8>, String> {
    let value = value.ok_or_else(|| format!("no \"{member}\""))?;
    B64.decode(value).map_err(|_| format!("\"{member}\" is not base64url"))
}

impl KeySet {
    /// Parses a key set from untrusted bytes. Keys that cannot sign tokens Kho accepts (encryption
    /// keys, symmetric keys, other curves, short RSA keys) are skipped and named in `skipped`; a set
    /// with no usable key at all is an error.
    pub fn parse(bytes: &[u8]) -> Result<KeySet, JwksError> {
        if bytes.len() > JWKS_SIZE_BYTES_MAX {
            return Err(JwksError::TooLarge);
        }
        let raw: RawSet = serde_json::from_slice(bytes).map_err(|e| JwksError::Malformed(e.to_string()))?;
        let mut set = KeySet::default();
        for (index, value) in raw.keys.into_iter().enumerate() {
            let label = value
                .get("kid")
                .and_then(|k| k.as_str())
                .map_or(format!("key {index}"), |kid| format!("key {:?}", kid.chars().take(64).collect::<String>()));
            if set.keys.len() == JWKS_KEYS_MAX {
                set.skipped.push(format!("{label}: more than {JWKS_KEYS_MAX} keys"));
                continue;
            }
            match serde_json::from_value::<RawKey>(value).map_err(|e| e.to_string()).and_then(key) {
                Ok(key) => set.keys.push(key),
                Err(reason) => set.skipped.push(format!("{label}: {reason}")),
            }
        }
        if set.keys.is_empty() {
            return Err(JwksError::NoUsableKey(if set.skipped.is_empty() {
                "it is empty".into()
            } else {
                set.skipped.join("; ")
            }));
        }
        Ok(set)
    }

    /// A set of Ed25519 keys without key ids (the PEM files of `auth.issuers.keys`, the dev key).
    pub fn ed25519(keys: &[PublicKey]) -> KeySet {
        let keys = keys
            .iter()
            .filter_map(PublicKey::ed25519)
            .map(|key| VerificationKey {
                kid: None,
                alg: Some(Algorithm::EdDSA),
                family: AlgorithmFamily::Ed,
                key: DecodingKey::from_ed_der(key.as_bytes()),
            })
            .collect();
        KeySet { keys, skipped: Vec::new() }
    }

    /// The keys a token signed with `alg` under key id `kid` may verify under: the key with that id,
    /// or, when the token names none, every key of the algorithm's family.
    pub fn candidates<'a>(&'a self, kid: Option<&'a str>, alg: Algorithm) -> impl Iterator<Item = &'a VerificationKey> {
        self.keys.iter().filter(move |key| {
            key.family == alg.family()
                && key.alg.is_none_or(|pinned| pinned == alg)
                && kid.is_none_or(|kid| key.kid.as_deref() == Some(kid))
        })
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|key| key.kid.as_deref() == Some(kid))
    }
}

/// One JWK, checked; the reason it cannot be used otherwise.
fn key(raw: RawKey) -> Result<VerificationKey, String> {
    if raw.public_key_use.as_deref().is_some_and(|u| u != "sig") {
        return Err(format!("its use is {:?}, not \"sig\"", raw.public_key_use.unwrap_or_default()));
    }
    if raw.key_ops.as_ref().is_some_and(|ops| !ops.iter().any(|op| op == "verify")) {
        return Err("its key_ops do not include \"verify\"".into());
    }
    if raw.kid.as_ref().is_some_and(|kid| kid.is_empty() || kid.len() > KEY_ID_LENGTH_BYTES_MAX) {
        return Err(format!("its kid is empty or longer than {KEY_ID_LENGTH_BYTES_MAX} bytes"));
    }
    let alg = match raw.alg.as_deref() {
        None => None,
        Some(name) => Some(
            name.parse::<Algorithm>()
                .ok()
                .filter(|alg| ALGORITHMS_SUPPORTED.contains(alg))
                .ok_or_else(|| format!("its alg {name:?} is not one Kho accepts"))?,
        ),
    };
    let (family, key) = match raw.kty.as_str() {
        "RSA" => {
            let modulus = decoded("n", raw.n.as_deref())?;
            let exponent = decoded("e", raw.e.as_deref())?;
            let significant = modulus.iter().position(|b| *b != 0).map_or(&[][..], |start| &modulus[start..]);
            let bits = significant.first().map_or(0, |top| significant.len() * 8 - top.leading_zeros() as usize);
            if !(RSA_MODULUS_BITS_MIN..=RSA_MODULUS_BITS_MAX).contains(&bits) {
                return Err(format!(
                    "its modulus has {bits} bits; {RSA_MODULUS_BITS_MIN} to {RSA_MODULUS_BITS_MAX} are accepted"
                ));
            }
            let exponent_ok = exponent.len() <= 4 && exponent.iter().fold(0u64, |e, b| e << 8 | u64::from(*b)) >= 3;
            if !exponent_ok || exponent.last().is_none_or(|low| low % 2 == 0) {
                return Err("its public exponent is not an odd number from 3 to 2^32".into());
            }
            (AlgorithmFamily::Rsa, DecodingKey::from_rsa_raw_components(&modulus, &exponent))
        }
        "EC" => {
            if raw.crv.as_deref() != Some("P-256") {
                return Err(format!("its curve {:?} is not P-256", raw.crv.unwrap_or_default()));
            }
            let (x, y) = (decoded("x", raw.x.as_deref())?, decoded("y", raw.y.as_deref())?);
            if x.len() != 32 || y.len() != 32 {
                return Err("its coordinates are not 32 bytes each".into());
            }
            let point = [&[0x04][..], &x, &y].concat();
            if p256::PublicKey::from_sec1_bytes(&point).is_err() {
                return Err("its point is not on the P-256 curve".into());
            }
            (AlgorithmFamily::Ec, DecodingKey::from_ec_der(&point))
        }
        "OKP" => {
            if raw.crv.as_deref() != Some("Ed25519") {
                return Err(format!("its curve {:?} is not Ed25519", raw.crv.unwrap_or_default()));
            }
            let x = decoded("x", raw.x.as_deref())?;
            let bytes: [u8; 32] = x.as_slice().try_into().map_err(|_| "its key is not 32 bytes".to_owned())?;
            ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| "its key is not an Ed25519 point")?;
            (AlgorithmFamily::Ed, DecodingKey::from_ed_der(&bytes))
        }
        other => return Err(format!("its key type {other:?} is not RSA, EC or OKP")),
    };
    if alg.is_some_and(|alg| alg.family() != family) {
        return Err("its alg does not match its key type".into());
    }
    Ok(VerificationKey { kid: raw.kid, alg, family, key })
}

/// Where an issuer's keys come from, and the keys as last read.
#[derive(Debug)]
pub struct KeySource {
    current: RwLock<Arc<KeySet>>,
    /// Present for a set fetched from the identity provider.
    url: Option<String>,
    refresh_interval_min: Duration,
    last_fetch: Mutex<Option<Instant>>,
}

impl KeySource {
    /// Keys that never change (files read at start).
    pub fn fixed(keys: KeySet) -> KeySource {
        KeySource {
            current: RwLock::new(Arc::new(keys)),
            url: None,
            refresh_interval_min: Duration::ZERO,
            last_fetch: Mutex::new(None),
        }
    }

    /// Keys fetched from `url` now and on demand. A failed first fetch leaves the set empty (every
    /// token of that issuer is refused, and the next one with a key id tries again) and is returned so
    /// the caller can say so.
    pub fn fetched(url: &str, refresh_interval_min: Duration) -> (KeySource, Option<JwksError>) {
        let source = KeySource {
            current: RwLock::new(Arc::new(KeySet::default())),
            url: Some(url.to_owned()),
            refresh_interval_min,
            last_fetch: Mutex::new(None),
        };
        let error = source.refresh().err();
        (source, error)
    }

    pub fn current(&self) -> Arc<KeySet> {
        self.current.read().map_or_else(|poisoned| poisoned.into_inner().clone(), |keys| keys.clone())
    }

    pub fn url(&self) -> Option<&str> {
        self.url.as_deref()
    }

    /// Fetches the set again if it comes from a URL and the last fetch is at least the minimum
    /// interval old. Returns whether it fetched. Blocking: async callers run it on a blocking thread.
    pub fn refresh(&self) -> Result<bool, JwksError> {
        let Some(url) = &self.url else { return Ok(false) };
        {
            let mut last = self.last_fetch.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if last.is_some_and(|at| at.elapsed() < self.refresh_interval_min) {
                return Ok(false);
            }
            *last = Some(Instant::now());
        }
        let keys = KeySet::parse(&fetch(url)?)?;
        for skipped in &keys.skipped {
            tracing::info!(url, "a key of the identity provider's set is not used: {skipped}");
        }
        tracing::info!(url, keys = keys.keys.len(), "fetched the identity provider's keys");
        *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(keys);
        Ok(true)
    }
}

fn fetch(url: &str) -> Result<Vec<u8>, JwksError> {
    use std::io::Read as _;
    let failed = |reason: String| JwksError::Fetch { url: url.to_owned(), reason };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(JWKS_FETCH_TIMEOUT_SECONDS)))
        .build()
        .into();
    let response = agent.get(url).call().map_err(|e| failed(e.to_string()))?;
    let mut body = Vec::new();
    response
        .into_body()
        .into_reader()
        .take(JWKS_SIZE_BYTES_MAX as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| failed(e.to_string()))?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_kho_cannot_use_are_skipped_with_their_reason_and_an_unusable_set_is_refused() {
        let ed = B64.encode(ed25519_dalek::SigningKey::from_bytes(&[1; 32]).verifying_key().as_bytes());
        let json = format!(
            r#"{{"keys":[
              {{"kty":"OKP","crv":"Ed25519","x":"{ed}","kid":"a","alg":"EdDSA","use":"sig"}},
              {{"kty":"RSA","n":"AQAB","e":"AQAB","kid":"short"}},
              {{"kty":"RSA","use":"enc","alg":"RSA-OAEP","n":"AQAB","e":"AQAB","kid":"enc"}},
              {{"kty":"oct","k":"c2VjcmV0","kid":"hmac"}},
              {{"kty":"EC","crv":"P-384","x":"AA","y":"AA","kid":"p384"}},
              {{"kty":"OKP","crv":"Ed25519","x":"AAAA","kid":"tiny"}},
              {{"kty":"OKP","crv":"Ed25519","x":"{ed}","kid":"hs","alg":"HS256"}}
            ]}}"#
        );
        let set = KeySet::parse(json.as_bytes()).expect("one usable key");
        assert_eq!(set.keys.len(), 1);
        assert_eq!(set.skipped.len(), 6, "{:?}", set.skipped);
        assert!(set.skipped[0].contains("0 bits") || set.skipped[0].contains("bits"), "{:?}", set.skipped);
        assert!(set.skipped.iter().any(|s| s.contains("\"enc\"")));
        assert!(set.skipped.iter().any(|s| s.contains("\"oct\"")));
        assert!(set.skipped.iter().any(|s| s.contains("P-384")));
        assert!(set.skipped.iter().any(|s| s.contains("32 bytes")));
        assert!(set.skipped.iter().any(|s| s.contains("HS256")));
        assert_eq!(set.candidates(Some("a"), Algorithm::EdDSA).count(), 1);
        assert_eq!(set.candidates(Some("b"), Algorithm::EdDSA).count(), 0);
        assert_eq!(set.candidates(None, Algorithm::EdDSA).count(), 1);
        assert_eq!(set.candidates(None, Algorithm::RS256).count(), 0);

        assert!(matches!(KeySet::parse(br#"{"keys":[]}"#), Err(JwksError::NoUsableKey(_))));
        assert!(matches!(KeySet::parse(br#"{"keys":[{"kty":"oct"}]}"#), Err(JwksError::NoUsableKey(_))));
        assert!(matches!(KeySet::parse(b"[]"), Err(JwksError::Malformed(_))));
        assert!(matches!(KeySet::parse(&vec![b' '; JWKS_SIZE_BYTES_MAX + 1]), Err(JwksError::TooLarge)));
    }
}
