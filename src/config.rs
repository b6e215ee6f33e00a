//! The service configuration: one TOML file, every key optional with a sane default, and `KHO_*`
//! environment variables that override it. Every limit of the service is here.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Default listen address: loopback only, so a first start exposes nothing.
pub const LISTEN_DEFAULT: &str = "127.0.0.1:8080";
/// Largest body of a request that is not a document upload (statements, certificates).
pub const STATEMENT_BODY_SIZE_BYTES_MAX_DEFAULT: usize = 64 * 1024;
pub const REQUEST_TIMEOUT_SECONDS_DEFAULT: u64 = 300;
pub const CONCURRENCY_LIMIT_DEFAULT: usize = 256;
pub const SHUTDOWN_GRACE_SECONDS_DEFAULT: u64 = 30;
/// A connection waiting for a request's headers (silent, slow, or idle between kept-alive requests)
/// is closed after this long.
pub const HEADER_READ_TIMEOUT_SECONDS_DEFAULT: u64 = 15;
/// A connection that moves no byte in either direction for this long is closed, mid-request included
/// (a stalled upload, a download nobody reads).
pub const IDLE_TIMEOUT_SECONDS_DEFAULT: u64 = 60;
/// Open connections at most; further clients wait in the listen backlog until one closes.
pub const CONNECTIONS_MAX_DEFAULT: usize = 1024;
pub const TOKEN_LEEWAY_SECONDS_DEFAULT: u64 = 30;
/// How often the server signs a checkpoint of the log when it has grown.
pub const CHECKPOINT_INTERVAL_MS_DEFAULT: u64 = 1000;
/// The server scrubs the whole vault this often (0: never), the first time one interval after it starts.
pub const SCRUB_INTERVAL_HOURS_DEFAULT: u64 = 24;
/// The background scrub reads documents at most this fast, leaving the disk to the users.
pub const SCRUB_BYTES_PER_SECOND_DEFAULT: u64 = 32 * 1024 * 1024;
/// Requests per second a citizen may make, sustained (`[rate_limits]`).
pub const RATE_CITIZEN_DEFAULT: u32 = 10;
/// Requests per second an officer may make: a person at a counter, or a case system acting for one.
pub const RATE_OFFICER_DEFAULT: u32 = 50;
/// Requests per second an auditor may make (verification scripts read many records).
pub const RATE_AUDITOR_DEFAULT: u32 = 100;
/// Requests per second an administrator may make.
pub const RATE_ADMIN_DEFAULT: u32 = 10;
/// Issuers are not limited by default: an agency's system migrating a backlog deposits as fast as the
/// vault takes it, and the concurrency limit already shares the server.
pub const RATE_ISSUER_DEFAULT: u32 = 0;
/// A subject may burst this many seconds' worth of requests after a quiet spell.
pub const RATE_BURST_SECONDS_DEFAULT: u32 = 10;
/// How often the TLS certificate and key files are looked at for a change (besides SIGHUP).
pub const TLS_RELOAD_SECONDS_DEFAULT: u64 = 60;
/// The `iss` of tokens minted by `kho dev-token`, accepted only in dev mode.
pub const DEV_TOKEN_ISSUER: &str = "kho-dev";
/// The dev token key inside the data directory.
pub const DEV_TOKEN_KEY_FILE: &str = "dev-token-key.pem";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is invalid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {name}={value:?} is invalid: {reason}")]
    Env { name: &'static str, value: String, reason: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error(transparent)]
    Key(#[from] crate::keys::KeyFileError),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the vault keeps its data (`KHO_DATA_DIR`).
    pub data_dir: PathBuf,
    /// Address to listen on (`KHO_LISTEN`).
    pub listen: SocketAddr,
    /// Public keys (PEM files) of the trust anchors that certify issuer keys (`KHO_TRUST_ANCHORS`,
    /// comma-separated).
    pub trust_anchors: Vec<PathBuf>,
    /// Largest document accepted (`KHO_DOCUMENT_SIZE_BYTES_MAX`).
    pub document_size_bytes_max: u64,
    /// Largest body of any other request (`KHO_STATEMENT_BODY_SIZE_BYTES_MAX`).
    pub statement_body_size_bytes_max: usize,
    /// A request that has not produced its response in this time gets 408 (`KHO_REQUEST_TIMEOUT_SECONDS`).
    pub request_timeout_seconds: u64,
    /// Requests served at once; more wait (`KHO_CONCURRENCY_LIMIT`).
    pub concurrency_limit: usize,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish (`KHO_SHUTDOWN_GRACE_SECONDS`).
    pub shutdown_grace_seconds: u64,
    /// Time allowed for a request's headers to arrive, counted from when the connection is ready for
    /// one (`KHO_HEADER_READ_TIMEOUT_SECONDS`).
    pub header_read_timeout_seconds: u64,
    /// A connection with no traffic for this long is closed (`KHO_IDLE_TIMEOUT_SECONDS`).
    pub idle_timeout_seconds: u64,
    /// Connections open at once (`KHO_CONNECTIONS_MAX`).
    pub connections_max: usize,
    /// The log is checkpointed this often when it has grown (`KHO_CHECKPOINT_INTERVAL_MS`).
    pub checkpoint_interval_ms: u64,
    /// The background scrub runs this often, 0 for never (`KHO_SCRUB_INTERVAL_HOURS`).
    pub scrub_interval_hours: u64,
    /// The background scrub's reading rate (`KHO_SCRUB_BYTES_PER_SECOND`).
    pub scrub_bytes_per_second: u64,
    /// Threads that run the vault's work for requests (`KHO_STORE_THREADS`; default twice the
    /// machine's cores): catalog reads and commits, a download's first pieces. Requests beyond them
    /// wait their turn holding no thread (docs/OPERATIONS.md, "Threads").
    pub store_threads: usize,
    /// The embedded catalog's page cache (`KHO_CATALOG_CACHE_BYTES`): memory for the catalog's hot
    /// pages, which a large store's reads and deposits want more of (docs/OPERATIONS.md, "Memory").
    pub catalog_cache_bytes: u64,
    /// How often, at most, the batches the journal holds are written into the embedded catalog
    /// (`KHO_CATALOG_FLUSH_INTERVAL_MS`); what the open after a crash replays grows with it.
    pub catalog_flush_interval_ms: u64,
    /// The transparency log's origin, the first line of its checkpoints (`KHO_LOG_ORIGIN`); unset, it
    /// is derived from the vault key. Set it once, before the first entry: it names the log for ever.
    pub log_origin: Option<String>,
    /// The address people reach Kho at, such as `https://kho.gov.vn` (`KHO_PUBLIC_URL`): share links and
    /// the QR codes printed on paper copies point there. Unset, links use the address the browser used.
    pub public_url: Option<String>,
    /// Open a store whose catalog lost acknowledged batches, restoring them from its journal. Only the
    /// command line sets it (`kho serve --recover`): it is a decision for one start, not a setting.
    #[serde(skip)]
    pub recover: bool,
    pub auth: AuthConfig,
    pub witnesses: WitnessesConfig,
    pub x509: X509Config,
    pub rate_limits: RateLimitConfig,
    /// Serve HTTPS with this certificate and key; unset, plain HTTP (behind a TLS-terminating proxy).
    pub tls: Option<TlsConfig>,
}

/// Requests per second per subject (a token's `sub`), by role; 0 means no limit (`[rate_limits]`).
/// A subject over its rate gets 429 with `Retry-After`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    pub citizen: u32,
    pub officer: u32,
    pub issuer: u32,
    pub auditor: u32,
    pub admin: u32,
    /// The bucket holds this many seconds' worth of requests, so a quiet subject may burst.
    pub burst_seconds: u32,
}

impl RateLimitConfig {
    /// No role limited (benchmarks, tests of other things).
    pub fn unlimited() -> RateLimitConfig {
        RateLimitConfig { citizen: 0, officer: 0, issuer: 0, auditor: 0, admin: 0, ..RateLimitConfig::default() }
    }
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            citizen: RATE_CITIZEN_DEFAULT,
            officer: RATE_OFFICER_DEFAULT,
            issuer: RATE_ISSUER_DEFAULT,
            auditor: RATE_AUDITOR_DEFAULT,
            admin: RATE_ADMIN_DEFAULT,
            burst_seconds: RATE_BURST_SECONDS_DEFAULT,
        }
    }
}

/// HTTPS on `listen` (`[tls]`, or `KHO_TLS_CERTIFICATE` and `KHO_TLS_PRIVATE_KEY`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, PEM, the server's own certificate first.
    pub certificate: PathBuf,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub private_key: PathBuf,
    /// Both files are read again on SIGHUP and when either changes, checked this often; a renewed
    /// certificate is served to new connections without a restart.
    #[serde(default = "tls_reload_seconds_default")]
    pub reload_seconds: u64,
}

fn tls_reload_seconds_default() -> u64 {
    TLS_RELOAD_SECONDS_DEFAULT
}

/// The X.509 hierarchies agencies sign under (`[x509]`; docs/SECURITY.md, "Signatures under X.509").
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct X509Config {
    /// The root certificates, each with where its signers' certificates hold the agency code.
    pub roots: Vec<X509RootConfig>,
    /// Files or folders of CRLs and OCSP responses (DER or PEM), read again when they change: the
    /// revocation evidence Kho decides with, since it never asks a CA.
    pub revocation_evidence: Vec<PathBuf>,
    /// Refuse a signer no evidence speaks for (default true).
    pub revocation_required: bool,
    /// How long evidence without a next update counts (OCSP responses without one).
    pub revocation_age_hours_max: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct X509RootConfig {
    /// The root certificate (PEM or DER).
    pub certificate: PathBuf,
    /// The subject attribute holding the agency code in signers' certificates: CN, O, OU, UID,
    /// serialNumber, organizationIdentifier, or a dotted OID.
    pub agency_attribute: String,
    /// Text the CA writes before the code (such as `MNS:`); it must be there and is removed.
    #[serde(default)]
    pub agency_prefix: String,
}

impl Default for X509Config {
    fn default() -> Self {
        X509Config {
            roots: Vec::new(),
            revocation_evidence: Vec::new(),
            revocation_required: true,
            revocation_age_hours_max: (crate::x509::path::REVOCATION_AGE_MS_MAX_DEFAULT / 3_600_000) as u64,
        }
    }
}

impl X509Config {
    /// The trust store these settings describe: every root read and checked, every attribute known.
    pub fn trust_store(&self) -> Result<crate::x509::TrustStore, ConfigError> {
        let mut anchors = Vec::new();
        for root in &self.roots {
            let invalid = |m: String| ConfigError::Invalid(format!("x509 root {}: {m}", root.certificate.display()));
            let bytes = std::fs::read(&root.certificate)
                .map_err(|source| ConfigError::Read { path: root.certificate.clone(), source })?;
            let mut certificates =
                crate::x509::Certificate::all_from_pem_or_der(&bytes).map_err(|e| invalid(e.to_string()))?;
            if certificates.len() != 1 {
                return Err(invalid(format!("holds {} certificates; give one root per entry", certificates.len())));
            }
            let agency_attribute = attribute_oid(&root.agency_attribute).ok_or_else(|| {
                invalid(format!(
                    "agency_attribute {:?} is not CN, O, OU, UID, serialNumber, organizationIdentifier or a dotted OID",
                    root.agency_attribute
                ))
            })?;
            anchors.push(crate::x509::Anchor {
                certificate: certificates.remove(0),
                agency_attribute,
                agency_prefix: root.agency_prefix.clone(),
            });
        }
        let age_ms_max = i64::try_from(self.revocation_age_hours_max.saturating_mul(3_600_000))
            .map_err(|_| ConfigError::Invalid("x509.revocation_age_hours_max is too large".into()))?;
        Ok(crate::x509::TrustStore {
            anchors,
            revocation: crate::x509::path::RevocationPolicy { required: self.revocation_required, age_ms_max },
        })
    }
}

/// The object identifier of a subject attribute named as CAs' certificate profiles name them.
fn attribute_oid(name: &str) -> Option<x509_cert::der::asn1::ObjectIdentifier> {
    let dotted = match name {
        "CN" | "commonName" => "2.5.4.3",
        "O" | "organizationName" => "2.5.4.10",
        "OU" | "organizationalUnitName" => "2.5.4.11",
        "C" | "countryName" => "2.5.4.6",
        "L" | "localityName" => "2.5.4.7",
        "ST" | "stateOrProvinceName" => "2.5.4.8",
        "serialNumber" => "2.5.4.5",
        "organizationIdentifier" => "2.5.4.97",
        "UID" | "userId" => "0.9.2342.19200300.100.1.1",
        other => other,
    };
    dotted.parse().ok()
}

/// The witnesses that cosign the log's checkpoints (`[witnesses]`; see docs/OPERATIONS.md).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WitnessesConfig {
    /// Each witness's cosigner key and URL (`KHO_WITNESSES`: comma-separated `KEY@URL`).
    pub peers: Vec<WitnessPeerConfig>,
    /// Cosignatures a checkpoint needs to count as witnessed; default a majority of the peers
    /// (`KHO_WITNESS_QUORUM`).
    pub quorum: Option<usize>,
    /// Serve checkpoints, default proofs and exports only once witnessed (`KHO_WITNESS_FAIL_CLOSED`).
    pub fail_closed: bool,
    /// Time allowed for one request to a witness (`KHO_WITNESS_TIMEOUT_MS`).
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessPeerConfig {
    /// The witness's cosigner verifier key, `name+keyid+base64key`, as `kho witness` prints it.
    pub key: String,
    /// The witness's URL (its add-checkpoint endpoint is below it).
    pub url: String,
}

impl WitnessesConfig {
    /// The policy these settings describe, every key checked.
    pub fn policy(&self) -> Result<crate::witness::WitnessPolicy, ConfigError> {
        use crate::log::checkpoint::{KeyRole, VerifierKey};
        let mut peers = Vec::new();
        for peer in &self.peers {
            let key = VerifierKey::parse(&peer.key)
                .map_err(|e| ConfigError::Invalid(format!("witness key {:?}: {e}", peer.key)))?;
            if key.role != KeyRole::Cosigner {
                return Err(ConfigError::Invalid(format!(
                    "witness key {:?} is a log's checkpoint key, not a witness's cosigning key",
                    peer.key
                )));
            }
            if !(peer.url.starts_with("http://") || peer.url.starts_with("https://")) {
                return Err(ConfigError::Invalid(format!("witness URL {:?} is not http(s)", peer.url)));
            }
            if peers.iter().any(|p: &crate::witness::WitnessPeer| p.key.name == key.name) {
                return Err(ConfigError::Invalid(format!("witness {:?} is configured twice", key.name)));
            }
            peers.push(crate::witness::WitnessPeer { key, url: peer.url.clone() });
        }
        let quorum = self.quorum.unwrap_or(crate::witness::majority(peers.len()));
        if quorum > peers.len() || (quorum == 0 && !peers.is_empty()) {
            return Err(ConfigError::Invalid(format!(
                "witnesses.quorum is {quorum} with {} witnesses; it must be between 1 and their number",
                peers.len()
            )));
        }
        if self.fail_closed && peers.is_empty() {
            return Err(ConfigError::Invalid("witnesses.fail_closed is set but no witness is configured".into()));
        }
        let timeout_ms = self.timeout_ms.unwrap_or(crate::witness::WITNESS_TIMEOUT_MS_DEFAULT);
        if timeout_ms == 0 {
            return Err(ConfigError::Invalid("witnesses.timeout_ms must be greater than 0".into()));
        }
        Ok(crate::witness::WitnessPolicy {
            peers,
            quorum,
            fail_closed: self.fail_closed,
            timeout: std::time::Duration::from_millis(timeout_ms),
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The `aud` tokens must carry, unless an issuer names its own (`KHO_AUTH_AUDIENCE`).
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf` (`KHO_AUTH_LEEWAY_SECONDS`).
    pub leeway_seconds: u64,
    /// A token living longer than this (`exp` minus `iat`, or minus now) is refused
    /// (`KHO_AUTH_TOKEN_LIFETIME_SECONDS_MAX`).
    pub token_lifetime_seconds_max: u64,
    /// A key set fetched from a URL is fetched again, on a token naming an unknown key id, at most
    /// this often (`KHO_AUTH_JWKS_REFRESH_SECONDS_MIN`).
    pub jwks_refresh_seconds_min: u64,
    /// Accept tokens minted by `kho dev-token` (`KHO_DEV_MODE=true`). Never in production.
    pub dev_mode: bool,
    /// The identity providers whose tokens are accepted (`[[auth.issuers]]`). The environment can
    /// name one: `KHO_AUTH_ISSUER` with `KHO_AUTH_JWKS` (a file or an http(s) URL) or `KHO_AUTH_KEYS`,
    /// and `KHO_AUTH_ALGORITHMS`.
    pub issuers: Vec<IssuerConfig>,
}

/// One identity provider (see docs/SECURITY.md, "Sign-in").
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IssuerConfig {
    /// The `iss` of its tokens, exactly (VNeID's realm URL, the portal's WSO2 token endpoint ...).
    pub issuer: String,
    /// The `aud` its tokens carry; default `auth.audience`.
    pub audience: Option<String>,
    /// The algorithms it signs with: some of RS256, PS256, ES256, EdDSA (default: all four).
    pub algorithms: Vec<String>,
    /// Its JSON Web Key Set in a file.
    pub jwks_file: Option<PathBuf>,
    /// Its JSON Web Key Set's URL (`.../protocol/openid-connect/certs` for Keycloak): fetched at start
    /// and again when a token names a key id it lacks.
    pub jwks_url: Option<String>,
    /// Ed25519 public keys in PEM files, for a provider without a key set.
    pub keys: Vec<PathBuf>,
    /// Accepted header `typ` values; a token without one is accepted (default `JWT`, `at+jwt`).
    pub token_types: Option<Vec<String>>,
    /// The roles it may grant (default all: citizen, officer, issuer, auditor, admin).
    pub roles: Option<Vec<String>>,
    /// Every token of this provider has this role (a citizens' provider such as VNeID); otherwise the
    /// role comes from `role_claim`.
    pub role: Option<String>,
    /// The claim (or dotted path, such as `realm_access.roles`) holding the role name or names.
    pub role_claim: String,
    /// The provider's role names mapped to Kho's (`{ "kho-officer" = "officer" }`); empty: Kho's names.
    pub role_values: std::collections::BTreeMap<String, String>,
    /// The claims holding the subject, the agency code and the owner id (citizen id number).
    pub subject_claim: String,
    pub agency_claim: String,
    pub owner_claim: String,
}

impl Default for IssuerConfig {
    fn default() -> Self {
        IssuerConfig {
            issuer: String::new(),
            audience: None,
            algorithms: Vec::new(),
            jwks_file: None,
            jwks_url: None,
            keys: Vec::new(),
            token_types: None,
            roles: None,
            role: None,
            role_claim: "role".into(),
            role_values: Default::default(),
            subject_claim: "sub".into(),
            agency_claim: "agency".into(),
            owner_claim: "owner".into(),
        }
    }
}

impl IssuerConfig {
    /// The checks that need no file or network: a name, exactly one kind of key source, known
    /// algorithms.
    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| ConfigError::Invalid(format!("auth.issuers {:?}: {m}", self.issuer));
        if self.issuer.is_empty() {
            return Err(ConfigError::Invalid("an entry of auth.issuers has no issuer (its tokens' iss)".into()));
        }
        if self.issuer == DEV_TOKEN_ISSUER {
            return Err(invalid(format!("{DEV_TOKEN_ISSUER:?} is the dev key's issuer; turn on dev_mode instead")));
        }
        let sources = usize::from(self.jwks_file.is_some())
            + usize::from(self.jwks_url.is_some())
            + usize::from(!self.keys.is_empty());
        if sources != 1 {
            return Err(invalid("give exactly one of jwks_url, jwks_file or keys".into()));
        }
        if let Some(url) = &self.jwks_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(format!("jwks_url {url:?} is not an http(s) address")));
            }
        }
        for name in &self.algorithms {
            let known = name.parse::<jsonwebtoken::Algorithm>().ok();
            if !known.is_some_and(|alg| crate::http::jwks::ALGORITHMS_SUPPORTED.contains(&alg)) {
                return Err(invalid(format!("algorithm {name:?} is not one of RS256, PS256, ES256, EdDSA")));
            }
        }
        Ok(())
    }
}

/// Store threads per core, by default: enough to keep both the cores and the disk busy while some
/// wait for it, few enough that a thread finishing one call takes the next queued one instead of a
/// sleeping thread being woken for each (docs/BENCHMARKS.md, "Few store threads").
pub const STORE_THREADS_PER_CORE: usize = 2;

fn store_threads_default() -> usize {
    STORE_THREADS_PER_CORE * std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("kho-data"),
            listen: LISTEN_DEFAULT.parse().unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080))),
            trust_anchors: Vec::new(),
            document_size_bytes_max: crate::vault::DOCUMENT_SIZE_BYTES_MAX_DEFAULT,
            statement_body_size_bytes_max: STATEMENT_BODY_SIZE_BYTES_MAX_DEFAULT,
            request_timeout_seconds: REQUEST_TIMEOUT_SECONDS_DEFAULT,
            concurrency_limit: CONCURRENCY_LIMIT_DEFAULT,
            shutdown_grace_seconds: SHUTDOWN_GRACE_SECONDS_DEFAULT,
            header_read_timeout_seconds: HEADER_READ_TIMEOUT_SECONDS_DEFAULT,
            idle_timeout_seconds: IDLE_TIMEOUT_SECONDS_DEFAULT,
            connections_max: CONNECTIONS_MAX_DEFAULT,
            checkpoint_interval_ms: CHECKPOINT_INTERVAL_MS_DEFAULT,
            scrub_interval_hours: SCRUB_INTERVAL_HOURS_DEFAULT,
            scrub_bytes_per_second: SCRUB_BYTES_PER_SECOND_DEFAULT,
            store_threads: store_threads_default(),
            catalog_cache_bytes: crate::store::CACHE_CAPACITY_BYTES_DEFAULT,
            catalog_flush_interval_ms: crate::store::CATALOG_FLUSH_INTERVAL_MS,
            log_origin: None,
            public_url: None,
            recover: false,
            auth: AuthConfig::default(),
            witnesses: WitnessesConfig::default(),
            x509: X509Config::default(),
            rate_limits: RateLimitConfig::default(),
            tls: None,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            audience: "kho".into(),
            leeway_seconds: TOKEN_LEEWAY_SECONDS_DEFAULT,
            token_lifetime_seconds_max: crate::http::auth::TOKEN_LIFETIME_SECONDS_MAX_DEFAULT,
            jwks_refresh_seconds_min: crate::http::jwks::JWKS_REFRESH_SECONDS_MIN_DEFAULT,
            dev_mode: false,
            issuers: Vec::new(),
        }
    }
}

fn parse_env<T: std::str::FromStr>(name: &'static str, value: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e: T::Err| ConfigError::Env { name, value: value.to_owned(), reason: e.to_string() })
}

fn paths(value: &str) -> Vec<PathBuf> {
    value.split(',').map(str::trim).filter(|p| !p.is_empty()).map(PathBuf::from).collect()
}

impl Config {
    /// Reads `path` if given (a missing file is an error), then applies the environment, and checks
    /// that a server could run with it.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let config = Config::read(path)?;
        config.check()?;
        Ok(config)
    }

    /// [`Config::load`] without the checks that only a server needs (sign-in), for offline commands.
    pub fn read(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut config = match path {
            None => Config::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
                toml::from_str(&text)
                    .map_err(|e| ConfigError::Parse { path: path.to_owned(), message: e.to_string() })?
            }
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        Ok(config)
    }

    /// Applies `KHO_*` overrides read through `lookup`.
    pub fn apply_env(&mut self, lookup: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = lookup("KHO_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = lookup("KHO_LISTEN") {
            self.listen = parse_env("KHO_LISTEN", &v)?;
        }
        if let Some(v) = lookup("KHO_TRUST_ANCHORS") {
            self.trust_anchors = paths(&v);
        }
        if let Some(v) = lookup("KHO_DOCUMENT_SIZE_BYTES_MAX") {
            self.document_size_bytes_max = parse_env("KHO_DOCUMENT_SIZE_BYTES_MAX", &v)?;
        }
        if let Some(v) = lookup("KHO_STATEMENT_BODY_SIZE_BYTES_MAX") {
            self.statement_body_size_bytes_max = parse_env("KHO_STATEMENT_BODY_SIZE_BYTES_MAX", &v)?;
        }
        if let Some(v) = lookup("KHO_REQUEST_TIMEOUT_SECONDS") {
            self.request_timeout_seconds = parse_env("KHO_REQUEST_TIMEOUT_SECONDS", &v)?;
        }
        if let Some(v) = lookup("KHO_CONCURRENCY_LIMIT") {
            self.concurrency_limit = parse_env("KHO_CONCURRENCY_LIMIT", &v)?;
        }
        if let Some(v) = lookup("KHO_SHUTDOWN_GRACE_SECONDS") {
            self.shutdown_grace_seconds = parse_env("KHO_SHUTDOWN_GRACE_SECONDS", &v)?;
        }
        if let Some(v) = lookup("KHO_HEADER_READ_TIMEOUT_SECONDS") {
            self.header_read_timeout_seconds = parse_env("KHO_HEADER_READ_TIMEOUT_SECONDS", &v)?;
        }
        if let Some(v) = lookup("KHO_IDLE_TIMEOUT_SECONDS") {
            self.idle_timeout_seconds = parse_env("KHO_IDLE_TIMEOUT_SECONDS", &v)?;
        }
        match (lookup("KHO_TLS_CERTIFICATE"), lookup("KHO_TLS_PRIVATE_KEY")) {
            (Some(certificate), Some(private_key)) => {
                let reload_seconds = self.tls.as_ref().map_or(TLS_RELOAD_SECONDS_DEFAULT, |tls| tls.reload_seconds);
                self.tls = Some(TlsConfig {
                    certificate: PathBuf::from(certificate),
                    private_key: PathBuf::from(private_key),
                    reload_seconds,
                });
            }
            (None, None) => {}
            _ => {
                return Err(ConfigError::Invalid(
                    "KHO_TLS_CERTIFICATE and KHO_TLS_PRIVATE_KEY go together: set both or neither".into(),
                ))
            }
        }
        if let Some(v) = lookup("KHO_CONNECTIONS_MAX") {
            self.connections_max = parse_env("KHO_CONNECTIONS_MAX", &v)?;
        }
        if let Some(v) = lookup("KHO_SCRUB_INTERVAL_HOURS") {
            self.scrub_interval_hours = parse_env("KHO_SCRUB_INTERVAL_HOURS", &v)?;
        }
        if let Some(v) = lookup("KHO_SCRUB_BYTES_PER_SECOND") {
            self.scrub_bytes_per_second = parse_env("KHO_SCRUB_BYTES_PER_SECOND", &v)?;
        }
        if let Some(v) = lookup("KHO_CHECKPOINT_INTERVAL_MS") {
            self.checkpoint_interval_ms = parse_env("KHO_CHECKPOINT_INTERVAL_MS", &v)?;
        }
        if let Some(v) = lookup("KHO_STORE_THREADS") {
            self.store_threads = parse_env("KHO_STORE_THREADS", &v)?;
        }
        if let Some(v) = lookup("KHO_CATALOG_CACHE_BYTES") {
            self.catalog_cache_bytes = parse_env("KHO_CATALOG_CACHE_BYTES", &v)?;
        }
        if let Some(v) = lookup("KHO_CATALOG_FLUSH_INTERVAL_MS") {
            self.catalog_flush_interval_ms = parse_env("KHO_CATALOG_FLUSH_INTERVAL_MS", &v)?;
        }
        if let Some(v) = lookup("KHO_LOG_ORIGIN") {
            self.log_origin = Some(v);
        }
        if let Some(v) = lookup("KHO_WITNESSES") {
            let mut peers = Vec::new();
            for item in v.split(',').map(str::trim).filter(|item| !item.is_empty()) {
                let (key, url) = item.split_once('@').ok_or_else(|| ConfigError::Env {
                    name: "KHO_WITNESSES",
                    value: v.clone(),
                    reason: "each witness is KEY@URL".into(),
                })?;
                peers.push(WitnessPeerConfig { key: key.to_owned(), url: url.to_owned() });
            }
            self.witnesses.peers = peers;
        }
        if let Some(v) = lookup("KHO_WITNESS_QUORUM") {
            self.witnesses.quorum = Some(parse_env("KHO_WITNESS_QUORUM", &v)?);
        }
        if let Some(v) = lookup("KHO_WITNESS_FAIL_CLOSED") {
            self.witnesses.fail_closed = parse_env("KHO_WITNESS_FAIL_CLOSED", &v)?;
        }
        if let Some(v) = lookup("KHO_WITNESS_TIMEOUT_MS") {
            self.witnesses.timeout_ms = Some(parse_env("KHO_WITNESS_TIMEOUT_MS", &v)?);
        }
        if let Some(v) = lookup("KHO_PUBLIC_URL") {
            self.public_url = Some(v);
        }
        if let Some(issuer) = lookup("KHO_AUTH_ISSUER") {
            let mut one = IssuerConfig { issuer, ..IssuerConfig::default() };
            if let Some(v) = lookup("KHO_AUTH_JWKS") {
                if v.starts_with("http://") || v.starts_with("https://") {
                    one.jwks_url = Some(v);
                } else {
                    one.jwks_file = Some(PathBuf::from(v));
                }
            }
            if let Some(v) = lookup("KHO_AUTH_KEYS") {
                one.keys = paths(&v);
            }
            if let Some(v) = lookup("KHO_AUTH_ALGORITHMS") {
                one.algorithms = v.split(',').map(str::trim).filter(|a| !a.is_empty()).map(str::to_owned).collect();
            }
            self.auth.issuers = vec![one];
        }
        if let Some(v) = lookup("KHO_AUTH_AUDIENCE") {
            self.auth.audience = v;
        }
        if let Some(v) = lookup("KHO_AUTH_LEEWAY_SECONDS") {
            self.auth.leeway_seconds = parse_env("KHO_AUTH_LEEWAY_SECONDS", &v)?;
        }
        if let Some(v) = lookup("KHO_AUTH_TOKEN_LIFETIME_SECONDS_MAX") {
            self.auth.token_lifetime_seconds_max = parse_env("KHO_AUTH_TOKEN_LIFETIME_SECONDS_MAX", &v)?;
        }
        if let Some(v) = lookup("KHO_AUTH_JWKS_REFRESH_SECONDS_MIN") {
            self.auth.jwks_refresh_seconds_min = parse_env("KHO_AUTH_JWKS_REFRESH_SECONDS_MIN", &v)?;
        }
        if let Some(v) = lookup("KHO_DEV_MODE") {
            self.auth.dev_mode = parse_env("KHO_DEV_MODE", &v)?;
        }
        Ok(())
    }

    /// The vault's configuration: the data folder, the trust anchors read from their files, the limits.
    pub fn vault_config(&self) -> Result<crate::vault::VaultConfig, ConfigError> {
        let anchors =
            self.trust_anchors.iter().map(|p| crate::keys::read_public_key(p)).collect::<Result<Vec<_>, _>>()?;
        let mut vault_config = crate::vault::VaultConfig::new(&self.data_dir, anchors);
        vault_config.document_size_bytes_max = self.document_size_bytes_max;
        vault_config.log_origin = self.log_origin.clone();
        vault_config.store.recover = self.recover;
        vault_config.store.cache_capacity_bytes = self.catalog_cache_bytes;
        vault_config.store.catalog_flush_interval_ms = self.catalog_flush_interval_ms;
        vault_config.witnesses = self.witnesses.policy()?;
        vault_config.x509 = crate::vault::X509Trust {
            store: self.x509.trust_store()?,
            evidence: self.x509.revocation_evidence.clone(),
        };
        Ok(vault_config)
    }

    /// Rejects configurations that could not serve anyone or that have a zero limit.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.auth.issuers.is_empty() && !self.auth.dev_mode {
            return Err(ConfigError::Invalid(
                "no identity provider ([[auth.issuers]] / KHO_AUTH_ISSUER) and dev mode is off: nobody could sign in"
                    .into(),
            ));
        }
        for (index, issuer) in self.auth.issuers.iter().enumerate() {
            issuer.check()?;
            if self.auth.issuers[..index].iter().any(|other| other.issuer == issuer.issuer) {
                return Err(ConfigError::Invalid(format!("auth.issuers names {:?} twice", issuer.issuer)));
            }
        }
        if self.document_size_bytes_max > crate::content::DOCUMENT_SIZE_BYTES_CEILING {
            return Err(ConfigError::Invalid(format!(
                "document_size_bytes_max is {}; Kho stores documents of at most {} bytes (1.5 GiB)",
                self.document_size_bytes_max,
                crate::content::DOCUMENT_SIZE_BYTES_CEILING
            )));
        }
        for (name, value) in [
            ("document_size_bytes_max", self.document_size_bytes_max),
            ("statement_body_size_bytes_max", self.statement_body_size_bytes_max as u64),
            ("request_timeout_seconds", self.request_timeout_seconds),
            ("concurrency_limit", self.concurrency_limit as u64),
            ("header_read_timeout_seconds", self.header_read_timeout_seconds),
            ("idle_timeout_seconds", self.idle_timeout_seconds),
            ("connections_max", self.connections_max as u64),
            ("auth.token_lifetime_seconds_max", self.auth.token_lifetime_seconds_max),
            ("checkpoint_interval_ms", self.checkpoint_interval_ms),
            ("scrub_bytes_per_second", self.scrub_bytes_per_second),
            ("store_threads", self.store_threads as u64),
            ("catalog_cache_bytes", self.catalog_cache_bytes),
            ("catalog_flush_interval_ms", self.catalog_flush_interval_ms),
            ("rate_limits.burst_seconds", u64::from(self.rate_limits.burst_seconds)),
            ("tls.reload_seconds", self.tls.as_ref().map_or(1, |tls| tls.reload_seconds)),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid(format!("{name} must be greater than 0")));
            }
        }
        self.witnesses.policy()?;
        if let Some(url) = &self.public_url {
            let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")).unwrap_or("");
            if rest.is_empty() || rest.contains(['?', '#', ' ']) {
                return Err(ConfigError::Invalid(format!(
                    "public_url {url:?} must be an http:// or https:// address with no query, such as https://kho.gov.vn"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_environment() {
        let mut config: Config = toml::from_str(
            r#"
            data_dir = "/srv/kho"
            listen = "0.0.0.0:9000"
            catalog_cache_bytes = 268435456
            [[auth.issuers]]
            issuer = "https://id.example.vn"
            keys = ["idp.pub.pem"]
            "#,
        )
        .expect("parses");
        assert_eq!(config.data_dir, PathBuf::from("/srv/kho"));
        assert_eq!(config.auth.audience, "kho", "unset keys keep their defaults");
        config
            .apply_env(|name| match name {
                "KHO_LISTEN" => Some("127.0.0.1:7000".into()),
                "KHO_TRUST_ANCHORS" => Some("a.pem, b.pem".into()),
                "KHO_CATALOG_FLUSH_INTERVAL_MS" => Some("250".into()),
                "KHO_STORE_THREADS" => Some("6".into()),
                _ => None,
            })
            .expect("env");
        assert_eq!(config.listen.port(), 7000);
        assert_eq!(config.store_threads, 6);
        assert_eq!(config.trust_anchors, vec![PathBuf::from("a.pem"), PathBuf::from("b.pem")]);
        assert!(config.check().is_ok());
        // The embedded store's settings reach the vault's configuration.
        config.trust_anchors.clear();
        let store = config.vault_config().expect("vault config").store;
        assert_eq!((store.cache_capacity_bytes, store.catalog_flush_interval_ms), (256 << 20, 250));
        config.catalog_flush_interval_ms = 0;
        let refused = config.check().expect_err("a zero interval").to_string();
        assert!(refused.contains("catalog_flush_interval_ms must be greater than 0"), "{refused}");
        config.catalog_flush_interval_ms = 250;
        config.store_threads = 0;
        let refused = config.check().expect_err("no store thread").to_string();
        assert!(refused.contains("store_threads must be greater than 0"), "{refused}");
    }

    #[test]
    fn witnesses_are_checked_and_the_quorum_defaults_to_a_majority() {
        let witness = |seed: u8, name: &str| {
            let key = crate::statement::SecretKey::from_ed25519(ed25519_dalek::SigningKey::from_bytes(&[seed; 32]));
            crate::log::checkpoint::cosigner_verifier_key(name, &key.public_key())
        };
        let mut config = Config::default();
        config
            .apply_env(|name| match name {
                "KHO_WITNESSES" => Some(format!(
                    "{}@http://w1.example:8090, {}@http://w2.example:8090,{}@http://w3.example",
                    witness(1, "w1.example/kho"),
                    witness(2, "w2.example/kho"),
                    witness(3, "w3.example/kho")
                )),
                _ => None,
            })
            .expect("env");
        let policy = config.witnesses.policy().expect("policy");
        assert_eq!((policy.peers.len(), policy.quorum, policy.fail_closed), (3, 2, false));
        config.witnesses.quorum = Some(4);
        assert!(config.witnesses.policy().unwrap_err().to_string().contains("quorum"));
        config.witnesses.quorum = None;
        let log_key = crate::log::checkpoint::verifier_key(
            "kho/log",
            &crate::statement::SecretKey::from_ed25519(ed25519_dalek::SigningKey::from_bytes(&[4; 32])).public_key(),
        );
        config.witnesses.peers[0].key = log_key;
        assert!(config.witnesses.policy().unwrap_err().to_string().contains("not a witness's"));
        let none = WitnessesConfig { fail_closed: true, ..WitnessesConfig::default() };
        assert!(none.policy().unwrap_err().to_string().contains("no witness"));
    }

    #[test]
    fn x509_roots_are_read_with_their_agency_attribute_and_bad_ones_are_named() {
        let mut config: Config = toml::from_str(
            r#"
            [x509]
            roots = [{ certificate = "/nonexistent/root.pem", agency_attribute = "UID", agency_prefix = "MNS:" }]
            "#,
        )
        .expect("parses");
        assert!(config.x509.revocation_required, "revocation evidence is required unless turned off");
        let error = config.x509.trust_store().expect_err("missing file").to_string();
        assert!(error.contains("/nonexistent/root.pem"), "{error}");
        assert_eq!(attribute_oid("UID").map(|o| o.to_string()).as_deref(), Some("0.9.2342.19200300.100.1.1"));
        assert_eq!(attribute_oid("2.5.4.97").map(|o| o.to_string()).as_deref(), Some("2.5.4.97"));
        assert!(attribute_oid("Department").is_none());
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("root.pem");
        std::fs::write(&path, "not a certificate").expect("write");
        config.x509.roots[0].certificate = path;
        assert!(config.x509.trust_store().expect_err("not a certificate").to_string().contains("root.pem"));
        assert!(
            toml::from_str::<Config>("[x509]\nroots = [{ certificate = \"a\" }]").is_err(),
            "the attribute is required"
        );
    }

    #[test]
    fn bad_values_are_named() {
        assert!(toml::from_str::<Config>("listen = 5").is_err());
        assert!(toml::from_str::<Config>("unknown_key = 1").is_err(), "typos are errors, not silently ignored");
        let mut config = Config::default();
        let error = config.apply_env(|n| (n == "KHO_CONCURRENCY_LIMIT").then(|| "many".into())).expect_err("invalid");
        assert!(error.to_string().contains("KHO_CONCURRENCY_LIMIT"));
        assert!(Config::default().check().is_err(), "no keys and no dev mode");
        let mut config = Config::default();
        config.auth.dev_mode = true;
        config.concurrency_limit = 0;
        assert!(config.check().unwrap_err().to_string().contains("concurrency_limit"));
        config.concurrency_limit = 1;
        config.document_size_bytes_max = crate::content::DOCUMENT_SIZE_BYTES_CEILING;
        assert!(config.check().is_ok(), "the ceiling itself is accepted");
        config.document_size_bytes_max += 1;
        let error = config.check().unwrap_err().to_string();
        assert!(error.contains("document_size_bytes_max") && error.contains("1.5 GiB"), "{error}");
    }
}
