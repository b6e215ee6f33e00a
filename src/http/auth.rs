//! Bearer tokens as identity providers issue them: JWTs verified with `jsonwebtoken` against each
//! configured issuer's keys (a JWKS file or URL, or PEM files), in the algorithms that issuer is
//! allowed (RS256, PS256, ES256, EdDSA), with the exact `iss`, the audience, `exp`/`nbf` with a
//! leeway, a lifetime cap, no critical header extension and an accepted `typ`. The issuer's claim
//! mapping gives the subject, role, agency and owner id, each validated like any other input. In dev
//! mode the local dev key is one more issuer.

use crate::error_code::ErrorCode;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::{Deserialize, Serialize};

use super::jwks::{KeySet, KeySource, ALGORITHMS_SUPPORTED};
use crate::config::{AuthConfig, ConfigError, IssuerConfig};
use crate::ids::{Code, OwnerId};
use crate::statement::{PublicKey, SecretKey};

/// Longest token accepted.
pub const TOKEN_LENGTH_BYTES_MAX: usize = 8 * 1024;
/// Longest subject accepted.
pub const SUBJECT_LENGTH_BYTES_MAX: usize = 256;
/// Tokens remembered as verified (all forgotten at once when full). A client sends the same token with
/// every request until it expires; verifying its signature each time was 4-7% of a read's server time.
pub const TOKENS_REMEMBERED_MAX: usize = 16_384;

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

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    #[error("no bearer token: send Authorization: Bearer <token>")]
    MissingToken,
    #[error("the token is malformed: {0}")]
    Malformed(String),
    #[error("the token's signature does not verify under any key of its issuer")]
    BadSignature,
    #[error("the token names key id {0:?}, which its issuer has not published")]
    UnknownKey(String),
    #[error("the token is signed with {0}, which this vault does not accept from its issuer")]
    AlgorithmNotAllowed(String),
    #[error("the token marks header parameters {0:?} as critical; this vault understands none")]
    CriticalHeader(Vec<String>),
    #[error("the token's type (typ) is {0:?}, not an access token type this vault accepts")]
    WrongType(String),
    #[error("the token was issued by {0:?}, which this vault does not accept")]
    WrongIssuer(String),
    #[error("the token is not meant for this vault (audience)")]
    WrongAudience,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token lives {0} seconds; this vault accepts at most {1}")]
    LifetimeTooLong(i64, u64),
    #[error("the token's claims are invalid: {0}")]
    InvalidClaims(String),
}

impl AuthError {
    pub fn code(&self) -> ErrorCode {
        match self {
            AuthError::MissingToken => ErrorCode::MissingToken,
            AuthError::Malformed(_) | AuthError::BadSignature | AuthError::UnknownKey(_) => ErrorCode::InvalidToken,
            AuthError::AlgorithmNotAllowed(_) => ErrorCode::AlgorithmNotAllowed,
            AuthError::CriticalHeader(_) => ErrorCode::UnsupportedCriticalHeader,
            AuthError::WrongType(_) => ErrorCode::WrongTokenType,
            AuthError::WrongIssuer(_) => ErrorCode::WrongIssuer,
            AuthError::WrongAudience => ErrorCode::WrongAudience,
            AuthError::Expired => ErrorCode::TokenExpired,
            AuthError::NotYetValid => ErrorCode::TokenNotYetValid,
            AuthError::LifetimeTooLong(..) => ErrorCode::TokenLifetimeTooLong,
            AuthError::InvalidClaims(_) => ErrorCode::InvalidClaims,
        }
    }
}

/// The header `typ` values accepted when an issuer does not name its own: RFC 7519's `JWT` and the
/// access-token type of RFC 9068. Compared without regard to case, with or without `application/`.
pub const TOKEN_TYPES_DEFAULT: [&str; 2] = ["JWT", "at+jwt"];
/// A token may live at most this long (`exp` minus `iat`, and `exp` minus now).
pub const TOKEN_LIFETIME_SECONDS_MAX_DEFAULT: u64 = 12 * 3600;

/// Where in an issuer's tokens Kho finds who the caller is. Paths are claim names, or dotted paths
/// into nested objects (`realm_access.roles`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimMapping {
    pub subject: String,
    pub role: RoleSource,
    pub agency: String,
    pub owner: String,
}

impl Default for ClaimMapping {
    fn default() -> Self {
        ClaimMapping {
            subject: "sub".into(),
            role: RoleSource::Claim { path: "role".into(), values: Vec::new() },
            agency: "agency".into(),
            owner: "owner".into(),
        }
    }
}

/// How a token's role is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleSource {
    /// Every token of the issuer has this role (a citizens' identity provider).
    Fixed(Role),
    /// A claim holding a role name or an array of them; `values` maps the provider's names to Kho's
    /// roles, and Kho's own names are used when it is empty.
    Claim { path: String, values: Vec<(String, Role)> },
}

/// One identity provider whose tokens Kho accepts.
#[derive(Debug)]
pub struct Issuer {
    /// The `iss` its tokens carry, compared exactly.
    pub iss: String,
    /// The `aud` its tokens must carry.
    pub audience: String,
    /// The algorithms it signs with; a token in another is refused even if the key would verify it.
    pub algorithms: Vec<Algorithm>,
    /// Accepted header `typ` values (a token without `typ` is accepted).
    pub token_types: Vec<String>,
    /// The roles it may grant.
    pub roles: Vec<Role>,
    pub claims: ClaimMapping,
    pub keys: Arc<KeySource>,
    /// Tokens from the dev key (`kho dev-token`).
    pub dev: bool,
}

impl Issuer {
    /// An issuer with fixed keys and every default: every role, Kho's claim names, the algorithms
    /// of its keys' families.
    pub fn new(iss: &str, audience: &str, keys: KeySet) -> Issuer {
        let algorithms = ALGORITHMS_SUPPORTED
            .into_iter()
            .filter(|alg| keys.keys.iter().any(|key| key.family == alg.family()))
            .collect();
        Issuer {
            iss: iss.to_owned(),
            audience: audience.to_owned(),
            algorithms,
            token_types: TOKEN_TYPES_DEFAULT.map(str::to_owned).to_vec(),
            roles: ROLES.to_vec(),
            claims: ClaimMapping::default(),
            keys: Arc::new(KeySource::fixed(keys)),
            dev: false,
        }
    }

    /// The dev key's issuer: `kho dev-token` tokens, EdDSA only.
    pub fn dev(audience: &str, key: &PublicKey) -> Issuer {
        let mut issuer =
            Issuer::new(crate::config::DEV_TOKEN_ISSUER, audience, KeySet::ed25519(std::slice::from_ref(key)));
        issuer.dev = true;
        issuer
    }
}

impl Role {
    /// The role with this name.
    pub fn named(name: &str) -> Option<Role> {
        ROLES.into_iter().find(|role| role.as_str() == name)
    }
}

/// Every role, in the order they are listed to people.
pub const ROLES: [Role; 5] = [Role::Citizen, Role::Officer, Role::Issuer, Role::Auditor, Role::Admin];

/// Verifies bearer tokens against the configured identity providers and, in dev mode, the dev key.
#[derive(Debug)]
pub struct Authenticator {
    /// Private: a token remembered as verified was verified under these; [`Authenticator::issuer_mut`]
    /// forgets every remembered token.
    issuers: Vec<Issuer>,
    /// Clock skew tolerated on `exp` and `nbf`.
    leeway_seconds: u64,
    lifetime_seconds_max: u64,
    /// Tokens that verified, so that the same token is not verified again with every request.
    verified: VerifiedTokens,
}

/// Tokens that verified, by BLAKE3 of their exact text: a token is taken from here only while the
/// key set that verified it is still its issuer's current one (a refreshed set, as after a provider's
/// key rotation, is a new set, and the token is verified again under it) and while `exp` and `nbf`,
/// with the leeway, still admit it; anything else goes through the full verification. Only successes
/// are remembered, at most [`TOKENS_REMEMBERED_MAX`].
#[derive(Default)]
struct VerifiedTokens(Mutex<HashMap<[u8; 32], RememberedToken>>);

struct RememberedToken {
    principal: Principal,
    issuer: usize,
    keys: Arc<KeySet>,
    not_before: Option<i64>,
}

impl std::fmt::Debug for VerifiedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerifiedTokens({})", self.len())
    }
}

impl VerifiedTokens {
    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).len()
    }

    fn forget_all(&self) {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clear();
    }

    /// The caller of a token verified before, if it may be taken without verifying it again at `now`.
    fn recall(&self, digest: &[u8; 32], issuers: &[Issuer], now: i64, leeway: i64) -> Option<Principal> {
        let remembered = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let token = remembered.get(digest)?;
        let keys_unchanged = Arc::ptr_eq(&issuers.get(token.issuer)?.keys.current(), &token.keys);
        let in_time = now.saturating_sub(leeway) <= token.principal.expires_at
            && token.not_before.is_none_or(|nbf| nbf <= now.saturating_add(leeway));
        (keys_unchanged && in_time).then(|| token.principal.clone())
    }

    fn remember(&self, digest: [u8; 32], token: RememberedToken) {
        let mut remembered = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if remembered.len() >= TOKENS_REMEMBERED_MAX {
            remembered.clear();
        }
        remembered.insert(digest, token);
    }
}

/// The claims checked here besides those the JWT library checks.
#[derive(Deserialize)]
struct Times {
    exp: i64,
    #[serde(default)]
    iat: Option<i64>,
}

fn type_matches(typ: &str, accepted: &str) -> bool {
    let bare = |t: &str| {
        let t = t.trim();
        t.get(..12).filter(|p| p.eq_ignore_ascii_case("application/")).map_or(t, |_| &t[12..]).to_ascii_lowercase()
    };
    bare(typ) == bare(accepted)
}

impl Authenticator {
    /// An authenticator with the default leeway and lifetime cap.
    pub fn new(issuers: Vec<Issuer>) -> Authenticator {
        Authenticator {
            issuers,
            leeway_seconds: crate::config::TOKEN_LEEWAY_SECONDS_DEFAULT,
            lifetime_seconds_max: TOKEN_LIFETIME_SECONDS_MAX_DEFAULT,
            verified: VerifiedTokens::default(),
        }
    }

    /// The authenticator a configuration describes: key files read, key set URLs fetched (a URL that
    /// cannot be reached now is reported and tried again on demand), every name checked.
    pub fn from_config(config: &AuthConfig, dev_key: Option<&PublicKey>) -> Result<Authenticator, ConfigError> {
        let mut issuers =
            config.issuers.iter().map(|issuer| issuer_from_config(issuer, config)).collect::<Result<Vec<_>, _>>()?;
        if let Some(key) = dev_key {
            issuers.push(Issuer::dev(&config.audience, key));
        }
        Ok(Authenticator {
            issuers,
            leeway_seconds: config.leeway_seconds,
            lifetime_seconds_max: config.token_lifetime_seconds_max,
            verified: VerifiedTokens::default(),
        })
    }

    /// The same, tolerating `seconds` of clock skew on `exp` and `nbf`.
    pub fn with_leeway_seconds(self, seconds: u64) -> Authenticator {
        Authenticator { leeway_seconds: seconds, ..self }
    }

    /// An issuer to change (tests); every token remembered as verified is forgotten, since it was
    /// verified under the issuer as it was.
    pub fn issuer_mut(&mut self, index: usize) -> &mut Issuer {
        self.verified.forget_all();
        &mut self.issuers[index]
    }

    /// The audience of the dev key's tokens (`kho dev-token`, the demo sign-in), if dev mode is on.
    pub fn dev_audience(&self) -> Option<&str> {
        self.issuers.iter().find(|issuer| issuer.dev).map(|issuer| issuer.audience.as_str())
    }

    /// Verifies `token` now and returns the caller. Blocking-free: an unknown key id is an error here;
    /// [`Authenticator::authenticate`] refreshes the issuer's keys and tries once more. A token that
    /// verified before is taken from [`VerifiedTokens`] while its key set and times still admit it.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        if token.len() > TOKEN_LENGTH_BYTES_MAX {
            return Err(AuthError::Malformed(format!("longer than {TOKEN_LENGTH_BYTES_MAX} bytes")));
        }
        let digest = *blake3::hash(token.as_bytes()).as_bytes();
        let now = i64::try_from(jsonwebtoken::get_current_timestamp()).unwrap_or(i64::MAX);
        let leeway = i64::try_from(self.leeway_seconds).unwrap_or(i64::MAX);
        if let Some(principal) = self.verified.recall(&digest, &self.issuers, now, leeway) {
            return Ok(principal);
        }
        let (index, header) = self.issuer_of(token)?;
        let issuer = &self.issuers[index];
        let alg = header.alg;
        let keys = issuer.keys.current();
        let kid = header.kid.as_deref();
        let mut validation = Validation::new(alg);
        validation.set_issuer(&[&issuer.iss]);
        validation.set_audience(&[&issuer.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = self.leeway_seconds;
        let mut verified = None;
        for candidate in keys.candidates(kid, alg) {
            match jsonwebtoken::decode::<serde_json::Value>(token, &candidate.key, &validation) {
                Ok(data) => {
                    verified = Some(data.claims);
                    break;
                }
                Err(error) if matches!(error.kind(), ErrorKind::InvalidSignature) => {}
                Err(error) => return Err(library_error(error)),
            }
        }
        let claims = match (verified, kid) {
            (Some(claims), _) => claims,
            (None, Some(kid)) if !keys.has_kid(kid) => return Err(AuthError::UnknownKey(kid.to_owned())),
            (None, _) => return Err(AuthError::BadSignature),
        };
        self.check_lifetime(&claims, now, leeway)?;
        let principal = principal(issuer, &claims)?;
        // `nbf` was checked as a number if present; one the library took in another form is not
        // remembered, so it is checked again each time.
        let not_before = match claims.get("nbf") {
            None => Some(None),
            Some(nbf) => nbf.as_i64().map(Some),
        };
        if let Some(not_before) = not_before {
            let token = RememberedToken { principal: principal.clone(), issuer: index, keys, not_before };
            self.verified.remember(digest, token);
        }
        Ok(principal)
    }

    /// [`Authenticator::verify`], and when the token names a key id its issuer has not published
    /// and the issuer's keys come from a URL, one fetch of them (at most once per the minimum
    /// interval) and one more try. This is how a provider's key rotation reaches Kho.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        match self.verify(token) {
            Err(AuthError::UnknownKey(kid)) => {
                let Ok((index, _)) = self.issuer_of(token) else { return Err(AuthError::UnknownKey(kid)) };
                if self.issuers[index].keys.url().is_none() {
                    return Err(AuthError::UnknownKey(kid));
                }
                let keys = Arc::clone(&self.issuers[index].keys);
                let refreshed = super::spawn_paced(move || keys.refresh()).await;
                match refreshed {
                    Ok(Ok(true)) => self.verify(token),
                    Ok(Err(error)) => {
                        tracing::warn!(issuer = %self.issuers[index].iss, "cannot refresh the identity provider's keys: {error}");
                        Err(AuthError::UnknownKey(kid))
                    }
                    _ => Err(AuthError::UnknownKey(kid)),
                }
            }
            other => other,
        }
    }

    /// The configured issuer of an unverified token (its `iss`), after the header checks that do not
    /// need a key: an allowed algorithm, no critical extension, an accepted type.
    fn issuer_of(&self, token: &str) -> Result<(usize, jsonwebtoken::Header), AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| AuthError::Malformed(format!("header: {e}")))?;
        #[derive(Deserialize)]
        struct Iss {
            iss: Option<String>,
        }
        let claims: Iss = jsonwebtoken::dangerous::insecure_decode_claims(token)
            .map_err(|e| AuthError::Malformed(format!("claims: {e}")))?;
        let iss = claims.iss.ok_or_else(|| AuthError::InvalidClaims("no iss".into()))?;
        let index = self
            .issuers
            .iter()
            .position(|issuer| issuer.iss == iss)
            .ok_or_else(|| AuthError::WrongIssuer(iss.clone()))?;
        let issuer = &self.issuers[index];
        if !issuer.algorithms.contains(&header.alg) {
            return Err(AuthError::AlgorithmNotAllowed(format!("{:?}", header.alg)));
        }
        // RFC 7515 section 4.1.11: a recipient must refuse a token whose critical extensions it does
        // not understand, and Kho understands none.
        if let Some(critical) = &header.crit {
            return Err(AuthError::CriticalHeader(critical.clone()));
        }
        if let Some(typ) = &header.typ {
            if !issuer.token_types.iter().any(|accepted| type_matches(typ, accepted)) {
                return Err(AuthError::WrongType(typ.clone()));
            }
        }
        Ok((index, header))
    }

    /// `now` and `leeway` as `verify` took them, in seconds.
    fn check_lifetime(&self, claims: &serde_json::Value, now: i64, leeway: i64) -> Result<(), AuthError> {
        let times = Times::deserialize(claims)
            .map_err(|e| AuthError::InvalidClaims(format!("exp and iat must be integers: {e}")))?;
        let max = i64::try_from(self.lifetime_seconds_max).unwrap_or(i64::MAX);
        let from_issue = times.iat.map_or(0, |iat| times.exp.saturating_sub(iat));
        let from_now = times.exp.saturating_sub(now).saturating_sub(leeway);
        let lifetime = from_issue.max(from_now);
        if lifetime > max {
            return Err(AuthError::LifetimeTooLong(lifetime, self.lifetime_seconds_max));
        }
        Ok(())
    }
}

fn issuer_from_config(config: &IssuerConfig, auth: &AuthConfig) -> Result<Issuer, ConfigError> {
    let invalid = |m: String| ConfigError::Invalid(format!("auth.issuers {:?}: {m}", config.issuer));
    let role_named = |name: &str| {
        Role::named(name)
            .ok_or_else(|| invalid(format!("{name:?} is not a role (citizen, officer, issuer, auditor, admin)")))
    };
    let keys = if let Some(path) = &config.jwks_file {
        let bytes =
            std::fs::read(path).map_err(|e| invalid(format!("cannot read jwks_file {}: {e}", path.display())))?;
        let set = KeySet::parse(&bytes).map_err(|e| invalid(format!("jwks_file {}: {e}", path.display())))?;
        for skipped in &set.skipped {
            tracing::info!(issuer = %config.issuer, "a key of {} is not used: {skipped}", path.display());
        }
        KeySource::fixed(set)
    } else if let Some(url) = &config.jwks_url {
        let (source, error) = KeySource::fetched(url, std::time::Duration::from_secs(auth.jwks_refresh_seconds_min));
        if let Some(error) = error {
            tracing::error!(issuer = %config.issuer,
                "{error}; its tokens are refused until a fetch succeeds (tried again on a token, at most every {} s)",
                auth.jwks_refresh_seconds_min);
        }
        source
    } else {
        let keys = config.keys.iter().map(|path| crate::keys::read_public_key(path)).collect::<Result<Vec<_>, _>>()?;
        KeySource::fixed(KeySet::ed25519(&keys))
    };
    let algorithms = if config.algorithms.is_empty() {
        ALGORITHMS_SUPPORTED.to_vec()
    } else {
        config
            .algorithms
            .iter()
            .map(|name| name.parse::<Algorithm>().map_err(|_| invalid(format!("unknown algorithm {name:?}"))))
            .collect::<Result<_, _>>()?
    };
    let roles = match &config.roles {
        None => ROLES.to_vec(),
        Some(names) => names.iter().map(|name| role_named(name)).collect::<Result<_, _>>()?,
    };
    let role = match &config.role {
        Some(name) => RoleSource::Fixed(role_named(name)?),
        None => RoleSource::Claim {
            path: config.role_claim.clone(),
            values: config
                .role_values
                .iter()
                .map(|(value, name)| Ok((value.clone(), role_named(name)?)))
                .collect::<Result<_, ConfigError>>()?,
        },
    };
    if let RoleSource::Fixed(fixed) = role {
        if !roles.contains(&fixed) {
            return Err(invalid(format!("role {} is not among its roles", fixed.as_str())));
        }
    }
    Ok(Issuer {
        iss: config.issuer.clone(),
        audience: config.audience.clone().unwrap_or_else(|| auth.audience.clone()),
        algorithms,
        token_types: config.token_types.clone().unwrap_or_else(|| TOKEN_TYPES_DEFAULT.map(str::to_owned).to_vec()),
        roles,
        claims: ClaimMapping {
            subject: config.subject_claim.clone(),
            role,
            agency: config.agency_claim.clone(),
            owner: config.owner_claim.clone(),
        },
        keys: Arc::new(keys),
        dev: false,
    })
}

fn library_error(error: jsonwebtoken::errors::Error) -> AuthError {
    match error.into_kind() {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer("(another)".into()),
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::InvalidAlgorithm => AuthError::AlgorithmNotAllowed("(another)".into()),
        ErrorKind::MissingRequiredClaim(claim) => AuthError::InvalidClaims(format!("no {claim}")),
        ErrorKind::InvalidClaimFormat(claim) => AuthError::InvalidClaims(format!("{claim} is not a number")),
        other => AuthError::Malformed(format!("{other:?}")),
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

/// The value at a dotted claim path.
fn claim<'a>(claims: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    path.split('.').try_fold(claims, |value, name| value.get(name))
}

/// A claim that must be a string, if present.
fn string_claim<'a>(claims: &'a serde_json::Value, path: &str) -> Result<Option<&'a str>, AuthError> {
    match claim(claims, path) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(value)) => Ok(Some(value)),
        Some(_) => Err(AuthError::InvalidClaims(format!("{path} must be a string"))),
    }
}

/// The caller's role under the issuer's mapping: exactly one Kho role, and one the issuer may grant.
fn role(issuer: &Issuer, claims: &serde_json::Value) -> Result<Role, AuthError> {
    let invalid = |m: String| AuthError::InvalidClaims(m);
    let role = match &issuer.claims.role {
        RoleSource::Fixed(role) => *role,
        RoleSource::Claim { path, values } => {
            let names: Vec<&str> = match claim(claims, path) {
                Some(serde_json::Value::String(name)) => vec![name.as_str()],
                Some(serde_json::Value::Array(items)) => items.iter().filter_map(|item| item.as_str()).collect(),
                _ => return Err(invalid(format!("no role: {path} must be a role name or an array of them"))),
            };
            let mut roles: Vec<Role> = names
                .iter()
                .filter_map(|name| {
                    if values.is_empty() {
                        ROLES.into_iter().find(|role| role.as_str() == *name)
                    } else {
                        values.iter().find(|(value, _)| value == name).map(|(_, role)| *role)
                    }
                })
                .collect();
            roles.sort_by_key(|role| role.as_str());
            roles.dedup();
            match roles[..] {
                [role] => role,
                [] => return Err(invalid(format!("no Kho role in {path}"))),
                _ => return Err(invalid(format!("several Kho roles in {path}; a token must carry one"))),
            }
        }
    };
    if !issuer.roles.contains(&role) {
        return Err(invalid(format!("this identity provider may not grant the role {}", role.as_str())));
    }
    Ok(role)
}

/// Checks the claims that give the caller's identity, by role, under the issuer's claim mapping.
fn principal(issuer: &Issuer, claims: &serde_json::Value) -> Result<Principal, AuthError> {
    let invalid = |m: String| AuthError::InvalidClaims(m);
    let mapping = &issuer.claims;
    let subject = string_claim(claims, &mapping.subject)?.unwrap_or_default();
    // The subject is written into people's access logs: nothing that could hide or reorder text there.
    if subject.is_empty()
        || subject.len() > SUBJECT_LENGTH_BYTES_MAX
        || subject.chars().any(|c| c.is_control() || is_invisible_or_bidi(c))
    {
        return Err(invalid(format!(
            "{} must be 1 to {SUBJECT_LENGTH_BYTES_MAX} bytes of visible characters (no control, zero-width or \
             bidirectional-override characters)",
            mapping.subject
        )));
    }
    let role = role(issuer, claims)?;
    let agency = string_claim(claims, &mapping.agency)?
        .map(|a| Code::parse("agency", a))
        .transpose()
        .map_err(|e| invalid(e.to_string()))?;
    let owner =
        string_claim(claims, &mapping.owner)?.map(OwnerId::parse).transpose().map_err(|e| invalid(e.to_string()))?;
    match role {
        Role::Citizen if owner.is_none() => {
            return Err(invalid(format!("a citizen token needs an owner id ({})", mapping.owner)))
        }
        Role::Officer | Role::Issuer if agency.is_none() => {
            return Err(invalid(format!("an {} token needs an agency ({})", role.as_str(), mapping.agency)))
        }
        _ => {}
    }
    let expires_at = claims.get("exp").and_then(serde_json::Value::as_i64).unwrap_or_default();
    Ok(Principal { subject: subject.to_owned(), role, agency, owner, dev: issuer.dev, expires_at })
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
    use jsonwebtoken::{EncodingKey, Header};

    const IDP: &str = "https://sso.dancuquocgia.gov.vn/realms/vneid";

    fn now() -> i64 {
        i64::try_from(jsonwebtoken::get_current_timestamp()).expect("time")
    }

    /// A signing key of each accepted algorithm, and its public JWK under a key id.
    struct Signer {
        alg: Algorithm,
        kid: &'static str,
        key: EncodingKey,
        /// The public key's JWK members.
        public: serde_json::Value,
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    impl Signer {
        fn rsa(alg: Algorithm, kid: &'static str) -> Signer {
            use rsa::pkcs1::EncodeRsaPrivateKey as _;
            use rsa::traits::PublicKeyParts as _;
            let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).expect("rsa key");
            let public = serde_json::json!({
                "kty": "RSA", "alg": format!("{alg:?}"), "n": b64(&key.n().to_bytes_be()), "e": b64(&key.e().to_bytes_be()),
            });
            Signer { alg, kid, key: EncodingKey::from_rsa_der(key.to_pkcs1_der().expect("der").as_bytes()), public }
        }

        fn ec(kid: &'static str) -> Signer {
            use p256::elliptic_curve::sec1::ToEncodedPoint as _;
            use p256::pkcs8::EncodePrivateKey as _;
            let key = p256::SecretKey::random(&mut rand_core::OsRng);
            let point = key.public_key().to_encoded_point(false);
            let public = serde_json::json!({
                "kty": "EC", "crv": "P-256", "x": b64(point.x().expect("x")), "y": b64(point.y().expect("y")),
            });
            Signer {
                alg: Algorithm::ES256,
                kid,
                key: EncodingKey::from_ec_der(key.to_pkcs8_der().expect("der").as_bytes()),
                public,
            }
        }

        fn ed(kid: &'static str, seed: u8) -> Signer {
            use ed25519_dalek::pkcs8::EncodePrivateKey as _;
            let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
            let public =
                serde_json::json!({ "kty": "OKP", "crv": "Ed25519", "x": b64(key.verifying_key().as_bytes()) });
            Signer {
                alg: Algorithm::EdDSA,
                kid,
                key: EncodingKey::from_ed_der(key.to_pkcs8_der().expect("der").as_bytes()),
                public,
            }
        }

        fn jwk(&self) -> serde_json::Value {
            let mut jwk = self.public.clone();
            jwk["kid"] = self.kid.into();
            jwk["use"] = "sig".into();
            jwk
        }

        fn sign_with(&self, header: Header, claims: &serde_json::Value) -> String {
            jsonwebtoken::encode(&header, claims, &self.key).expect("token")
        }

        fn sign(&self, claims: &serde_json::Value) -> String {
            let mut header = Header::new(self.alg);
            header.kid = Some(self.kid.into());
            self.sign_with(header, claims)
        }
    }

    fn jwks(signers: &[&Signer]) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "keys": signers.iter().map(|s| s.jwk()).collect::<Vec<_>>() }))
            .expect("json")
    }

    fn claims() -> serde_json::Value {
        serde_json::json!({
            "iss": IDP, "aud": "kho", "sub": "officer-1", "iat": now() - 10, "nbf": now() - 10, "exp": now() + 300,
            "role": "officer", "agency": "000.00.00.H26",
        })
    }

    fn with(mut claims: serde_json::Value, name: &str, value: serde_json::Value) -> serde_json::Value {
        claims[name] = value;
        claims
    }

    fn authenticator(keys: &[u8]) -> Authenticator {
        let issuer = Issuer::new(IDP, "kho", KeySet::parse(keys).expect("jwks"));
        Authenticator::new(vec![issuer]).with_leeway_seconds(0)
    }

    #[test]
    fn rs256_ps256_es256_and_eddsa_tokens_verify_under_their_jwks_keys() {
        let (rs, ps, es, ed) = (
            Signer::rsa(Algorithm::RS256, "rs"),
            Signer::rsa(Algorithm::PS256, "ps"),
            Signer::ec("es"),
            Signer::ed("ed", 1),
        );
        let auth = authenticator(&jwks(&[&rs, &ps, &es, &ed]));
        for signer in [&rs, &ps, &es, &ed] {
            let principal = auth.verify(&signer.sign(&claims())).unwrap_or_else(|e| panic!("{:?}: {e}", signer.alg));
            assert_eq!((principal.role, principal.subject.as_str()), (Role::Officer, "officer-1"));
            assert_eq!(principal.agency.map(|a| a.to_string()).as_deref(), Some("000.00.00.H26"));
            assert!(!principal.dev);
        }
        // A key set that pins a key to RS256 refuses a PS256 token made with that key.
        let mut header = Header::new(Algorithm::PS256);
        header.kid = Some("rs".into());
        let error = auth.verify(&rs.sign_with(header, &claims())).expect_err("pinned to RS256");
        assert_eq!(error.code(), "invalid_token");
        // Without a kid the token is tried against each key of its family.
        let error = auth.verify(&es.sign_with(Header::new(Algorithm::ES256), &claims()));
        assert!(error.is_ok(), "{error:?}");
        // Another key under a published kid: the signature fails.
        let impostor = Signer::ec("es");
        assert_eq!(auth.verify(&impostor.sign(&claims())).expect_err("forged").code(), "invalid_token");
    }

    #[test]
    fn a_verified_token_is_remembered_only_while_its_keys_and_times_admit_it() {
        let ed = Signer::ed("ed", 1);
        let auth = authenticator(&jwks(&[&ed]));
        let token = ed.sign(&claims());
        let principal = auth.verify(&token).expect("verifies");
        assert_eq!(auth.verified.len(), 1, "remembered");
        let digest = *blake3::hash(token.as_bytes()).as_bytes();
        let exp = principal.expires_at;
        let recall = |now: i64, leeway: i64| auth.verified.recall(&digest, &auth.issuers, now, leeway);
        assert_eq!(recall(now(), 0).as_ref(), Some(&principal), "taken without verifying again");
        assert_eq!(recall(exp, 0).as_ref(), Some(&principal), "valid through its exp, as jsonwebtoken has it");
        assert_eq!(recall(exp + 1, 0), None, "expired: verified again, which refuses it");
        assert_eq!(recall(exp + 5, 5).as_ref(), Some(&principal), "within the leeway");
        assert_eq!(recall(exp + 6, 5), None);

        // A token changed in any byte is another token: verified, and refused.
        let mut tampered = token.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).expect("ascii");
        assert_eq!(auth.verify(&tampered).expect_err("bad signature").code(), "invalid_token");
        // Refused tokens are not remembered; a token not valid yet is refused, so not remembered either.
        assert_eq!(
            auth.verify(&ed.sign(&with(claims(), "nbf", (now() + 60).into()))).expect_err("nbf").code(),
            "token_not_yet_valid"
        );
        assert_eq!(auth.verified.len(), 1);

        // `nbf` bounds a remembered token too (a clock set back), with the leeway.
        let not_yet = RememberedToken {
            principal: principal.clone(),
            issuer: 0,
            keys: auth.issuers[0].keys.current(),
            not_before: Some(now() + 100),
        };
        auth.verified.remember([7; 32], not_yet);
        assert_eq!(auth.verified.recall(&[7; 32], &auth.issuers, now(), 0), None);
        assert!(auth.verified.recall(&[7; 32], &auth.issuers, now() + 100, 0).is_some());
        assert!(auth.verified.recall(&[7; 32], &auth.issuers, now() + 90, 10).is_some());

        // Bounded: when full, everything is forgotten and the newest kept.
        for i in 0..TOKENS_REMEMBERED_MAX {
            let keys = auth.issuers[0].keys.current();
            let token = RememberedToken { principal: principal.clone(), issuer: 0, keys, not_before: None };
            auth.verified.remember(*blake3::hash(&i.to_be_bytes()).as_bytes(), token);
        }
        // Two were remembered before: full after 16,382 more, cleared at the next, then two again.
        assert_eq!(auth.verified.len(), 2, "cleared once when full");
        // Changing an issuer forgets every token verified under it as it was.
        let mut auth = auth;
        auth.issuer_mut(0).roles = vec![Role::Citizen];
        assert_eq!(auth.verified.len(), 0);
        assert_eq!(auth.verify(&token).expect_err("officer not granted now").code(), "invalid_claims");
    }

    #[test]
    fn every_bad_token_is_refused_with_its_own_code() {
        let rs = Signer::rsa(Algorithm::RS256, "rs");
        let es = Signer::ec("es");
        let mut auth = authenticator(&jwks(&[&rs, &es]));
        auth.issuer_mut(0).algorithms = vec![Algorithm::RS256];
        let code = |token: &str| auth.verify(token).expect_err("refused").code();
        assert!(auth.verify(&rs.sign(&claims())).is_ok());
        // An algorithm the issuer does not use, though its key is published and the signature verifies.
        assert_eq!(code(&es.sign(&claims())), "algorithm_not_allowed");
        // Issuer compared exactly (a trailing slash is another issuer), audience.
        assert_eq!(code(&rs.sign(&with(claims(), "iss", format!("{IDP}/").into()))), "wrong_issuer");
        assert_eq!(code(&rs.sign(&with(claims(), "iss", "https://evil.example".into()))), "wrong_issuer");
        assert_eq!(code(&rs.sign(&with(claims(), "aud", serde_json::json!(["portal"])))), "wrong_audience");
        assert!(auth.verify(&rs.sign(&with(claims(), "aud", serde_json::json!(["portal", "kho"])))).is_ok());
        // Time: expired, not yet valid, and exp or nbf given as strings (which jsonwebtoken before 10.3
        // did not check at all).
        assert_eq!(code(&rs.sign(&with(claims(), "exp", (now() - 5).into()))), "token_expired");
        assert_eq!(code(&rs.sign(&with(claims(), "nbf", (now() + 60).into()))), "token_not_yet_valid");
        assert_eq!(code(&rs.sign(&with(claims(), "exp", (now() - 5).to_string().into()))), "invalid_claims");
        assert_eq!(code(&rs.sign(&with(claims(), "nbf", (now() + 60).to_string().into()))), "invalid_claims");
        let mut no_exp = claims();
        no_exp.as_object_mut().expect("object").remove("exp");
        assert_eq!(code(&rs.sign(&no_exp)), "invalid_claims");
        // The lifetime cap: by iat, and by exp alone when iat is missing.
        let long = with(claims(), "exp", (now() + 13 * 3600).into());
        assert_eq!(code(&rs.sign(&long)), "token_lifetime_too_long");
        let mut no_iat = long;
        no_iat.as_object_mut().expect("object").remove("iat");
        assert_eq!(code(&rs.sign(&no_iat)), "token_lifetime_too_long");
        let old_iat = with(claims(), "iat", (now() - 13 * 3600).into());
        assert_eq!(code(&rs.sign(&old_iat)), "token_lifetime_too_long");
        // Critical header extensions are refused; typ is checked when present.
        let mut header = Header::new(Algorithm::RS256);
        header.crit = Some(vec!["exp".into()]);
        assert_eq!(code(&rs.sign_with(header, &claims())), "unsupported_critical_header");
        for (typ, accepted) in
            [("JWT", true), ("at+jwt", true), ("application/at+JWT", true), ("logout+jwt", false), ("dpop+jwt", false)]
        {
            let mut header = Header::new(Algorithm::RS256);
            header.typ = Some(typ.into());
            assert_eq!(auth.verify(&rs.sign_with(header, &claims())).is_ok(), accepted, "{typ}");
        }
        let mut header = Header::new(Algorithm::RS256);
        header.typ = None;
        assert!(auth.verify(&rs.sign_with(header, &claims())).is_ok(), "typ is optional");
        // Claims: an officer without agency, a citizen with a bad id, a hidden character in sub.
        let mut officer = claims();
        officer.as_object_mut().expect("object").remove("agency");
        assert_eq!(code(&rs.sign(&officer)), "invalid_claims");
        let citizen = with(with(claims(), "role", "citizen".into()), "owner", "12345".into());
        assert_eq!(code(&rs.sign(&citizen)), "invalid_claims");
        assert_eq!(code(&rs.sign(&with(claims(), "sub", "officer\u{202e}1".into()))), "invalid_claims");
        assert_eq!(code(&rs.sign(&with(claims(), "role", "superuser".into()))), "invalid_claims");
        // alg none, HS256 with the public key as secret, garbage, truncation, length.
        let token = rs.sign(&claims());
        let (_, rest) = token.split_once('.').expect("parts");
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        assert_eq!(code(&format!("{}.{rest}", b64.encode(br#"{"alg":"none"}"#))), "invalid_token");
        let hs =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims(), &EncodingKey::from_secret(&jwks(&[&rs])))
                .expect("token");
        assert_eq!(code(&hs), "algorithm_not_allowed");
        assert_eq!(code(&token[..token.len() - 3]), "invalid_token");
        assert_eq!(code("not a token"), "invalid_token");
        assert_eq!(code(&"a.".repeat(5000)), "invalid_token");
        // A dev token is refused unless dev mode is on.
        let dev_key = SecretKey::from_ed25519(ed25519_dalek::SigningKey::from_bytes(&[9; 32]));
        let dev_claims = Claims {
            iss: crate::config::DEV_TOKEN_ISSUER.into(),
            aud: Audience::One("kho".into()),
            sub: "dev".into(),
            exp: now() + 60,
            nbf: None,
            iat: Some(now()),
            role: Role::Auditor,
            agency: None,
            owner: None,
        };
        let dev_token = mint(&dev_claims, &dev_key);
        assert_eq!(code(&dev_token), "wrong_issuer");
        auth.issuers.push(Issuer::dev("kho", &dev_key.public_key()));
        assert!(auth.verify(&dev_token).expect("dev mode").dev);
    }

    #[test]
    fn claim_mappings_give_roles_agencies_and_owner_ids_as_each_provider_names_them() {
        let rs = Signer::rsa(Algorithm::RS256, "rs");
        // A Keycloak realm: roles in realm_access.roles under the provider's names.
        let mut keycloak = authenticator(&jwks(&[&rs]));
        keycloak.issuer_mut(0).claims = ClaimMapping {
            role: RoleSource::Claim {
                path: "realm_access.roles".into(),
                values: vec![("kho-officer".into(), Role::Officer), ("kho-auditor".into(), Role::Auditor)],
            },
            agency: "ma_co_quan".into(),
            ..ClaimMapping::default()
        };
        let token = |roles: serde_json::Value| {
            let mut claims = claims();
            claims["realm_access"] = serde_json::json!({ "roles": roles });
            claims["ma_co_quan"] = "000.00.00.H26".into();
            rs.sign(&claims)
        };
        let principal = keycloak.verify(&token(serde_json::json!(["offline_access", "kho-officer"]))).expect("officer");
        assert_eq!(
            (principal.role, principal.agency.map(|a| a.to_string())),
            (Role::Officer, Some("000.00.00.H26".into()))
        );
        let code = |token: &str| keycloak.verify(token).expect_err("refused").code();
        assert_eq!(code(&token(serde_json::json!(["offline_access"]))), "invalid_claims");
        assert_eq!(code(&token(serde_json::json!(["kho-officer", "kho-auditor"]))), "invalid_claims");
        assert_eq!(code(&token(serde_json::json!(["officer"]))), "invalid_claims", "only the mapped names count");
        // VNeID: every token is a citizen's, the id number in its own claim; it may grant nothing else.
        let mut vneid = authenticator(&jwks(&[&rs]));
        vneid.issuer_mut(0).claims = ClaimMapping {
            role: RoleSource::Fixed(Role::Citizen),
            owner: "citizen_id".into(),
            ..ClaimMapping::default()
        };
        vneid.issuer_mut(0).roles = vec![Role::Citizen];
        let citizen = with(with(claims(), "citizen_id", "001204012345".into()), "role", "admin".into());
        let principal = vneid.verify(&rs.sign(&citizen)).expect("citizen");
        assert_eq!(
            (principal.role, principal.owner.map(|o| o.to_string())),
            (Role::Citizen, Some("001204012345".into()))
        );
        assert_eq!(vneid.verify(&rs.sign(&claims())).expect_err("no id").code(), "invalid_claims");
        let numeric = with(claims(), "citizen_id", 1_204_012_345_i64.into());
        assert_eq!(vneid.verify(&rs.sign(&numeric)).expect_err("a number loses its zeros").code(), "invalid_claims");
        vneid.issuer_mut(0).claims.role = RoleSource::Claim { path: "role".into(), values: Vec::new() };
        assert_eq!(vneid.verify(&rs.sign(&citizen)).expect_err("admin not granted").code(), "invalid_claims");
    }

    /// A JWKS endpoint on loopback that serves whatever `body` holds and counts its requests.
    fn jwks_server(body: Arc<std::sync::Mutex<Vec<u8>>>, hits: Arc<std::sync::atomic::AtomicUsize>) -> String {
        use std::io::{BufRead as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = std::io::BufReader::new(&stream);
                let mut line = String::new();
                // Only a request counts: a connection a client opens and drops without one is not a fetch.
                if !reader.read_line(&mut line).is_ok_and(|n| n > 0) || !line.starts_with("GET ") {
                    continue;
                }
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body = body.lock().expect("body").clone();
                let mut stream = &stream;
                let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                let _ = stream.write_all(&body);
            }
        });
        format!("http://{address}/realms/vneid/protocol/openid-connect/certs")
    }

    #[tokio::test]
    async fn a_rotated_key_is_fetched_on_its_first_token_and_no_more_often_than_the_minimum_interval() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let (old, new, unknown) = (Signer::rsa(Algorithm::RS256, "2026-10"), Signer::ec("2026-11"), Signer::ed("x", 3));
        let body = Arc::new(std::sync::Mutex::new(jwks(&[&old])));
        let hits = Arc::new(AtomicUsize::new(0));
        let url = jwks_server(body.clone(), hits.clone());
        let mut config = AuthConfig {
            leeway_seconds: 0,
            jwks_refresh_seconds_min: 3600,
            issuers: vec![IssuerConfig { issuer: IDP.into(), jwks_url: Some(url), ..IssuerConfig::default() }],
            ..AuthConfig::default()
        };
        let auth = Authenticator::from_config(&config, None).expect("fetched at start");
        assert_eq!(hits.load(Ordering::SeqCst), 1, "fetched once at start");
        assert!(auth.authenticate(&old.sign(&claims())).await.is_ok());
        assert_eq!(hits.load(Ordering::SeqCst), 1, "a known kid needs no fetch");

        // The provider rotates: the new key is published and signs; Kho learns it on the first token,
        // because the last fetch is older than the interval (here: forced by a fresh authenticator
        // state, interval 0).
        *body.lock().expect("body") = jwks(&[&old, &new]);
        let token = new.sign(&claims());
        assert_eq!(auth.verify(&token).expect_err("not fetched yet").code(), "invalid_token");
        let error = auth.authenticate(&token).await.expect_err("the interval has not passed");
        assert!(matches!(error, AuthError::UnknownKey(ref kid) if kid == "2026-11"), "{error:?}");
        assert_eq!(hits.load(Ordering::SeqCst), 1, "no fetch within the minimum interval");

        config.jwks_refresh_seconds_min = 0;
        let auth = Authenticator::from_config(&config, None).expect("fetched at start");
        assert_eq!(hits.load(Ordering::SeqCst), 2);
        // A token of the old key, verified (and so remembered) while the old key is published.
        let old_token = old.sign(&claims());
        assert!(auth.authenticate(&old_token).await.is_ok());
        *body.lock().expect("body") = jwks(&[&new]);
        let rotated = Signer::rsa(Algorithm::RS256, "2026-12");
        *body.lock().expect("body") = jwks(&[&new, &rotated]);
        let principal = auth.authenticate(&rotated.sign(&claims())).await.expect("learned on its first token");
        assert_eq!(principal.subject, "officer-1");
        assert_eq!(hits.load(Ordering::SeqCst), 3, "one fetch for the unknown kid");
        let error = auth.authenticate(&old_token).await.expect_err("remembered, but its key left the set");
        assert!(matches!(error, AuthError::UnknownKey(ref kid) if kid == "2026-10"), "{error:?}");
        assert_eq!(hits.load(Ordering::SeqCst), 4, "the retired kid asked once more");
        // A token under a kid the provider never published: refused after one fetch, not a loop.
        assert!(auth.authenticate(&unknown.sign(&claims())).await.is_err());
        assert_eq!(hits.load(Ordering::SeqCst), 5);
    }

    #[test]
    fn configuration_is_checked_before_any_token() {
        let mut config = AuthConfig::default();
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, br#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#).expect("write");
        config.issuers =
            vec![IssuerConfig { issuer: IDP.into(), jwks_file: Some(path.clone()), ..IssuerConfig::default() }];
        let error = Authenticator::from_config(&config, None).expect_err("no usable key").to_string();
        assert!(error.contains("no key Kho can verify") && error.contains("\"oct\""), "{error}");
        std::fs::write(&path, jwks(&[&Signer::ed("a", 4)])).expect("write");
        assert!(Authenticator::from_config(&config, None).is_ok());
        config.issuers[0].role = Some("officer".into());
        config.issuers[0].roles = Some(vec!["citizen".into()]);
        assert!(Authenticator::from_config(&config, None).expect_err("not among").to_string().contains("officer"));
        config.issuers[0].roles = Some(vec!["king".into()]);
        assert!(Authenticator::from_config(&config, None).expect_err("unknown role").to_string().contains("king"));
    }
}
