//! Bearer tokens: JWTs signed with EdDSA (Ed25519) by the identity provider, or by the local dev key in
//! dev mode. `iss`, `aud`, `exp` and `nbf` are checked; the claims give the subject, role, agency and
//! owner id, each validated like any other input.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::ids::{Code, OwnerId};
use crate::statement::{PublicKey, SecretKey};

/// Longest token accepted.
pub const TOKEN_LENGTH_BYTES_MAX: usize = 8 * 1024;
/// Longest subject accepted.
pub const SUBJECT_LENGTH_BYTES_MAX: usize = 256;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Citizen,
    Officer,
    Issuer,
    Auditor,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Citizen => "citizen",
            Role::Officer => "officer",
            Role::Issuer => "issuer",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }
}

/// Who is calling, from a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub role: Role,
    /// Officers and issuers act for an agency.
    pub agency: Option<Code>,
    /// Citizens (and organizations) own a store.
    pub owner: Option<OwnerId>,
    /// The token came from the dev key.
    pub dev: bool,
    /// The token's `exp`, in Unix seconds (a session cookie lives no longer).
    pub expires_at: i64,
}

/// The claims Kho reads and `kho dev-token` writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: Audience,
    pub sub: String,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// `aud` is a string or an array of strings (RFC 7519 section 4.1.3).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, audience: &str) -> bool {
        match self {
            Audience::One(one) => one == audience,
            Audience::Many(many) => many.iter().any(|a| a == audience),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token: send Authorization: Bearer <token>")]
    MissingToken,
    #[error("the token is malformed: {0}")]
    Malformed(String),
    #[error("the token's signature does not verify under any configured key")]
    BadSignature,
    #[error("the token was issued by {0:?}, which this vault does not accept")]
    WrongIssuer(String),
    #[error("the token is not meant for this vault (audience)")]
    WrongAudience,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token's claims are invalid: {0}")]
    InvalidClaims(String),
}

impl AuthError {
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::MissingToken => "missing_token",
            AuthError::Malformed(_) | AuthError::BadSignature => "invalid_token",
            AuthError::WrongIssuer(_) => "wrong_issuer",
            AuthError::WrongAudience => "wrong_audience",
            AuthError::Expired => "token_expired",
            AuthError::NotYetValid => "token_not_yet_valid",
            AuthError::InvalidClaims(_) => "invalid_claims",
        }
    }
}

/// Verifies tokens against the configured identity provider keys and, in dev mode, the dev key.
#[derive(Debug, Clone)]
pub struct Authenticator {
    pub issuer: String,
    pub audience: String,
    pub keys: Vec<PublicKey>,
    pub leeway_seconds: u64,
    /// Present only in dev mode.
    pub dev_key: Option<PublicKey>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

impl Authenticator {
    /// Verifies `token` at `now_seconds` and returns the caller.
    pub fn verify(&self, token: &str, now_seconds: i64) -> Result<Principal, AuthError> {
        if token.len() > TOKEN_LENGTH_BYTES_MAX {
            return Err(AuthError::Malformed(format!("longer than {TOKEN_LENGTH_BYTES_MAX} bytes")));
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed("a JWT has three dot-separated parts".into()));
        };
        let decode = |part: &str, what: &str| {
            B64.decode(part).map_err(|_| AuthError::Malformed(format!("{what} is not base64url")))
        };
        let parsed: Header = serde_json::from_slice(&decode(header, "header")?)
            .map_err(|e| AuthError::Malformed(format!("header: {e}")))?;
        if parsed.alg != "EdDSA" {
            return Err(AuthError::Malformed(format!("algorithm {:?}; only EdDSA is accepted", parsed.alg)));
        }
        let claims: Claims = serde_json::from_slice(&decode(payload, "payload")?)
            .map_err(|e| AuthError::Malformed(format!("claims: {e}")))?;
        let signature = ed25519_dalek::Signature::from_slice(&decode(signature, "signature")?)
            .map_err(|_| AuthError::Malformed("signature is not 64 bytes".into()))?;
        // The signing input is everything before the last dot: "header.payload".
        let signed = &token.as_bytes()[..header.len() + 1 + payload.len()];
        let dev = self.dev_key.is_some() && claims.iss == crate::config::DEV_TOKEN_ISSUER;
        let candidates: &[PublicKey] = if dev {
            std::slice::from_ref(self.dev_key.as_ref().ok_or(AuthError::BadSignature)?)
        } else if claims.iss == self.issuer && !self.issuer.is_empty() {
            &self.keys
        } else {
            return Err(AuthError::WrongIssuer(claims.iss));
        };
        let verified = candidates.iter().any(|PublicKey::Ed25519(key)| key.verify_strict(signed, &signature).is_ok());
        if !verified {
            return Err(AuthError::BadSignature);
        }
        if !claims.aud.contains(&self.audience) {
            return Err(AuthError::WrongAudience);
        }
        let leeway = i64::try_from(self.leeway_seconds).unwrap_or(i64::MAX);
        if now_seconds > claims.exp.saturating_add(leeway) {
            return Err(AuthError::Expired);
        }
        if claims.nbf.is_some_and(|nbf| now_seconds < nbf.saturating_sub(leeway)) {
            return Err(AuthError::NotYetValid);
        }
        principal(claims, dev)
    }
}

/// Characters that change how text around them shows without showing themselves: zero-width
/// characters, bidirectional embeddings, overrides and isolates, and other invisible format characters.
fn is_invisible_or_bidi(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}' | '\u{180E}'
        | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{3164}'
        | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}' | '\u{FFF9}'..='\u{FFFB}' | '\u{E0000}'..='\u{E007F}')
}

/// Checks the claims that give the caller's identity, by role.
fn principal(claims: Claims, dev: bool) -> Result<Principal, AuthError> {
    let invalid = |m: String| AuthError::InvalidClaims(m);
    // The subject is written into people's access logs: nothing that could hide or reorder text there.
    if claims.sub.is_empty()
        || claims.sub.len() > SUBJECT_LENGTH_BYTES_MAX
        || claims.sub.chars().any(|c| c.is_control() || is_invisible_or_bidi(c))
    {
        return Err(invalid(format!(
            "sub must be 1 to {SUBJECT_LENGTH_BYTES_MAX} bytes of visible characters (no control, zero-width or \
             bidirectional-override characters)"
        )));
    }
    let agency =
        claims.agency.as_deref().map(|a| Code::parse("agency", a)).transpose().map_err(|e| invalid(e.to_string()))?;
    let owner = claims.owner.as_deref().map(OwnerId::parse).transpose().map_err(|e| invalid(e.to_string()))?;
    match claims.role {
        Role::Citizen if owner.is_none() => return Err(invalid("a citizen token needs an owner id".into())),
        Role::Officer | Role::Issuer if agency.is_none() => {
            return Err(invalid(format!("an {} token needs an agency", claims.role.as_str())))
        }
        _ => {}
    }
    Ok(Principal { subject: claims.sub, role: claims.role, agency, owner, dev, expires_at: claims.exp })
}

/// Signs `claims` as a JWT with `key` (for `kho dev-token` and tests; Kho never signs real tokens).
pub fn mint(claims: &Claims, key: &SecretKey) -> String {
    use ed25519_dalek::Signer as _;
    let header = B64.encode(br#"{"alg":"EdDSA","typ":"JWT"}"#);
    let payload = B64.encode(serde_json::to_vec(claims).unwrap_or_default());
    let signing_input = format!("{header}.{payload}");
    let signature = key.ed25519().sign(signing_input.as_bytes());
    format!("{signing_input}.{}", B64.encode(signature.to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SecretKey {
        SecretKey::from_ed25519(ed25519_dalek::SigningKey::from_bytes(&[seed; 32]))
    }

    fn claims() -> Claims {
        Claims {
            iss: "https://id.example.vn".into(),
            aud: Audience::One("kho".into()),
            sub: "officer-1".into(),
            exp: 2_000,
            nbf: Some(1_000),
            iat: Some(1_000),
            role: Role::Officer,
            agency: Some("000.00.00.H26".into()),
            owner: None,
        }
    }

    fn authenticator() -> Authenticator {
        Authenticator {
            issuer: "https://id.example.vn".into(),
            audience: "kho".into(),
            keys: vec![key(1).public_key()],
            leeway_seconds: 0,
            dev_key: None,
        }
    }

    #[test]
    fn a_good_token_gives_the_principal() {
        let principal = authenticator().verify(&mint(&claims(), &key(1)), 1_500).expect("valid");
        assert_eq!(principal.role, Role::Officer);
        assert_eq!(principal.agency.map(|a| a.to_string()), Some("000.00.00.H26".into()));
        assert!(!principal.dev);
    }

    #[test]
    fn every_bad_token_is_refused_with_its_own_code() {
        let auth = authenticator();
        let code = |token: &str, now: i64| auth.verify(token, now).expect_err("refused").code();
        assert_eq!(code(&mint(&claims(), &key(2)), 1_500), "invalid_token");
        assert_eq!(code(&mint(&claims(), &key(1)), 2_001), "token_expired");
        assert_eq!(code(&mint(&claims(), &key(1)), 999), "token_not_yet_valid");
        let mut other = claims();
        other.aud = Audience::Many(vec!["portal".into()]);
        assert_eq!(code(&mint(&other, &key(1)), 1_500), "wrong_audience");
        let mut other = claims();
        other.iss = "https://evil.example".into();
        assert_eq!(code(&mint(&other, &key(1)), 1_500), "wrong_issuer");
        let mut other = claims();
        other.agency = None;
        assert_eq!(code(&mint(&other, &key(1)), 1_500), "invalid_claims");
        let mut other = claims();
        other.role = Role::Citizen;
        other.owner = Some("12345".into());
        assert_eq!(code(&mint(&other, &key(1)), 1_500), "invalid_claims");
        // alg=none and friends, truncation, garbage.
        let token = mint(&claims(), &key(1));
        let (_, rest) = token.split_once('.').expect("parts");
        let none = format!("{}.{rest}", B64.encode(br#"{"alg":"none"}"#));
        assert_eq!(code(&none, 1_500), "invalid_token");
        assert_eq!(code(&token[..token.len() - 3], 1_500), "invalid_token");
        assert_eq!(code("not a token", 1_500), "invalid_token");
        assert_eq!(code(&"a.".repeat(5000), 1_500), "invalid_token");
        // A dev token is refused unless dev mode is on.
        let mut dev = claims();
        dev.iss = crate::config::DEV_TOKEN_ISSUER.into();
        let dev_token = mint(&dev, &key(9));
        assert_eq!(code(&dev_token, 1_500), "wrong_issuer");
        let dev_auth = Authenticator { dev_key: Some(key(9).public_key()), ..authenticator() };
        assert!(dev_auth.verify(&dev_token, 1_500).expect("dev mode").dev);
    }
}
