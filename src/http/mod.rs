//! The HTTP API under `/v1`: a thin edge over the vault. Handlers authenticate, decide access, record
//! access events, call the vault on a blocking thread, and convert the answer. The only module that
//! knows axum, tower, status codes and headers.
//!
//! [`router`] builds the whole service as a value, so tests drive it without sockets; [`serve`] binds it
//! to a port with graceful shutdown.

pub mod access;
pub mod auth;
mod error;
pub mod jwks;
mod log;
pub mod metrics;
pub mod openapi;
pub mod pages;
mod ratelimit;
mod serve;
pub mod tls;
mod witness;

use crate::error_code::ErrorCode;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, OpenApi as _, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::content::AtHand;
use crate::ids::{Code, Date, Digest, MediaType, OwnerId, Title};
use crate::json;
use crate::statement::{CertificateRevocation, CopyCertification, PublicKey, Record, RecordRevocation, Signed};
use crate::vault::{
    AccessEvent, DepositError, ExportScope, ListFilter, ProofQueryError, RecordView, StatusKind, Vault,
    PAGE_SIZE_DEFAULT,
};

pub use access::{decide, Decision, Resource};
pub use auth::{Authenticator, Principal, Role};
pub use error::ApiError;
pub use serve::{dev_token_key, serve, state, ConnectionLimits, ServeError};
pub use witness::{serve_witness, witness_router};

/// The header that carries a deposit's signed record, base64 (standard alphabet) of its envelope.
pub const RECORD_HEADER: &str = "kho-record";
/// The header that carries a document's detached CMS signature (`.p7s`), base64 (standard alphabet) of
/// its DER or PEM, on `POST /v1/signed-documents`; the body is then the file it signs.
pub const SIGNATURE_HEADER: &str = "kho-signature";
/// The request's id, in its response and its log lines (`request_id`).
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// The longest request id taken from a caller; a longer or odd one is replaced.
pub const REQUEST_ID_LENGTH_MAX: usize = 128;
/// Header fields a request may carry; more get 431 `headers_too_large`. Below hyper's own limit (100),
/// past which hyper answers 431 itself, without a body, before any of Kho's code runs.
pub const REQUEST_HEADERS_MAX: usize = 64;
/// Bytes of header names and values a request may carry; more get 431 `headers_too_large`. Room for
/// a detached CMS signature with its chain in `Kho-Signature`; below hyper's read buffer (about
/// 400 KiB), past which hyper answers 431 itself, without a body.
pub const REQUEST_HEADER_BYTES_MAX: usize = 256 * 1024;
/// The header in which officers and auditors state their purpose: a dossier code.
pub const PURPOSE_HEADER: &str = "kho-purpose";
/// The context of the key behind the pages' CSRF tokens.
const CSRF_KEY_CONTEXT: &str = "kho 2026-11 page form csrf v1";
/// Chunks in flight between the network and the vault during an upload or an evidence bundle's
/// download; also the pieces (frames) a download reads and verifies before it answers, all a small
/// document needs.
const STREAM_CHUNKS_IN_FLIGHT: usize = 4;

/// What the network side of a deposit tells the vault side.
enum BodyPiece {
    Bytes(Bytes),
    /// The body ended: the deposit may commit if its size and hashes match.
    End,
    Failed(String),
}

/// Limits of the service (see `config`).
#[derive(Debug, Clone)]
pub struct Limits {
    pub statement_body_size_bytes_max: usize,
    pub request_timeout: Duration,
    pub concurrency_limit: usize,
    pub rate_limits: crate::config::RateLimitConfig,
}

impl Limits {
    pub fn from_config(config: &crate::config::Config) -> Limits {
        Limits {
            statement_body_size_bytes_max: config.statement_body_size_bytes_max,
            request_timeout: Duration::from_secs(config.request_timeout_seconds),
            concurrency_limit: config.concurrency_limit,
            rate_limits: config.rate_limits.clone(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::from_config(&crate::config::Config::default())
    }
}

struct Shared {
    vault: Vault,
    auth: Authenticator,
    limits: Limits,
    rate_limits: ratelimit::RateLimits,
    trust_anchors: Vec<PublicKey>,
    pages: pages::PageSettings,
    /// Keys the CSRF tokens of the pages' forms (derived from the vault key, so they survive restarts).
    csrf_key: [u8; 32],
    metrics: Arc<metrics::Metrics>,
}

/// What every handler shares; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(vault: Vault, auth: Authenticator, limits: Limits, pages: pages::PageSettings) -> AppState {
        let trust_anchors = vault.config().trust_anchors.clone();
        let csrf_key = vault.derived_key(CSRF_KEY_CONTEXT);
        let metrics = Arc::new(metrics::Metrics::new());
        let observer = metrics.clone();
        vault.observe_syncs(Box::new(move |waited, entries| observer.observe_sync(waited, entries)));
        let rate_limits = ratelimit::RateLimits::new(&limits.rate_limits);
        AppState(Arc::new(Shared { vault, auth, limits, rate_limits, trust_anchors, pages, csrf_key, metrics }))
    }

    /// The figures `/metrics` shows.
    pub fn metrics(&self) -> &metrics::Metrics {
        &self.0.metrics
    }

    pub fn vault(&self) -> &Vault {
        &self.0.vault
    }

    /// Records an access entry and returns once it is durable, holding no thread while the sync
    /// runs (`Vault::access_durable`). Nothing of the owner's may be sent before it returns `Ok`.
    async fn record_access(&self, event: AccessEvent) -> Result<(), ApiError> {
        let committed = self.blocking(move |vault| vault.commit_access(&event)).await??;
        self.0.vault.access_durable(committed).await?;
        Ok(())
    }

    /// Runs `work` on the vault on a blocking thread (catalog reads and fsync block): one of the
    /// runtime's `store_threads`.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Vault) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let state = self.clone();
        joined(tokio::task::spawn_blocking(move || work(&state.0.vault))).await
    }

    /// Runs `work` on the vault on a thread of the paced pool (`spawn_paced`): work whose length a
    /// client decides, which must never hold one of the store threads.
    async fn blocking_paced<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Vault) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let state = self.clone();
        joined(spawn_paced(move || work(&state.0.vault))).await
    }
}

async fn joined<T>(handle: tokio::task::JoinHandle<T>) -> Result<T, ApiError> {
    handle.await.map_err(|e| ApiError::internal(format!("worker failed: {e}")))
}

/// Runs `work` on a blocking pool of its own, outside the server's runtime: work that lasts as long
/// as something outside the server decides (a deposit's body as the client sends it, a bundle as the
/// client takes it, a witness or an identity provider answering over the network) or that paces
/// itself (the scrub). The server's runtime keeps only `store_threads` blocking threads
/// (`serve::serve`), so that under load a thread finishing one call takes the next queued one instead
/// of a sleeping thread being woken for each (docs/BENCHMARKS.md, "Few store threads"); such work
/// must never hold one of them, or a few slow clients would stop every read.
pub(crate) fn spawn_paced<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> tokio::task::JoinHandle<T> {
    let pool = PacedPool::get();
    *pool.lock() += 1;
    let counted = PacedWork(pool);
    let work = move || {
        let _counted = counted;
        work()
    };
    match &pool.runtime {
        Some(runtime) => runtime.spawn_blocking(work),
        None => tokio::task::spawn_blocking(work),
    }
}

/// Waits until no paced work runs, or `timeout` passes; says which. A stopping server lets a deposit
/// or a bundle that is finishing end, and a scrub be cut, before it closes the vault.
pub(crate) fn paced_finished(timeout: Duration) -> bool {
    let pool = PacedPool::get();
    let running = pool.lock();
    let (running, _) =
        pool.finished.wait_timeout_while(running, timeout, |running| *running > 0).unwrap_or_else(|p| p.into_inner());
    *running == 0
}

/// The pool behind `spawn_paced`, one per process, and how much work runs on it.
struct PacedPool {
    /// A runtime used only for its blocking pool, whose threads start as work comes. One without
    /// drivers has nothing that can fail to build; were it to fail, the caller's pool serves.
    runtime: Option<tokio::runtime::Runtime>,
    running: std::sync::Mutex<usize>,
    finished: std::sync::Condvar,
}

impl PacedPool {
    fn get() -> &'static PacedPool {
        static POOL: std::sync::OnceLock<PacedPool> = std::sync::OnceLock::new();
        POOL.get_or_init(|| PacedPool {
            runtime: tokio::runtime::Builder::new_current_thread()
                .thread_name("kho-paced")
                .build()
                .inspect_err(|error| tracing::error!(%error, "no pool for paced work; it shares the store threads"))
                .ok(),
            running: std::sync::Mutex::new(0),
            finished: std::sync::Condvar::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, usize> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One piece of paced work running; counted off when it ends, panics included, after its captures
/// (an `AppState`, perhaps the last) are dropped.
struct PacedWork(&'static PacedPool);

impl Drop for PacedWork {
    fn drop(&mut self) {
        let mut running = self.0.lock();
        *running -= 1;
        if *running == 0 {
            self.0.finished.notify_all();
        }
    }
}

/// Every route of the API, each registered from its handler's OpenAPI description, so the document
/// (`openapi::document`) and the router cannot disagree. Every route but the deposits answers 408 when
/// its handler overruns. A deposit applies the same deadline to its body only: once the body has
/// ended, its commit is never cut off, so a 408 always means nothing was stored.
fn api_routes(request_timeout: Duration) -> OpenApiRouter<AppState> {
    let timed = OpenApiRouter::new()
        .routes(routes!(get_record))
        .routes(routes!(get_content))
        .routes(routes!(revoke_record))
        .routes(routes!(record_bundle))
        .routes(routes!(list_records))
        .routes(routes!(access_log))
        .routes(routes!(owner_log_entries))
        .routes(routes!(export_store))
        .routes(routes!(certification_requests))
        .routes(routes!(certify_copy))
        .routes(routes!(list_certificates, add_certificate))
        .routes(routes!(revoke_certificate))
        .routes(routes!(trust_anchors))
        .routes(routes!(vault_certificate))
        .routes(routes!(vault_keys))
        .routes(routes!(log::checkpoint))
        .routes(routes!(log::inclusion))
        .routes(routes!(log::consistency))
        .routes(routes!(openapi_document))
        .routes(routes!(metrics::reuse))
        .routes(routes!(metrics::daily))
        .routes(routes!(metrics::metrics))
        .routes(routes!(healthz))
        .routes(routes!(ready))
        // tlog-tiles paths have a variable number of segments, which an OpenAPI path cannot say: each
        // is described as one parameter holding slashes, and routed with a wildcard.
        .route("/v1/log/tile/entries/{*rest}", get(log::entry_bundle))
        .route("/v1/log/tile/{level}/{*rest}", get(log::hash_tile))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, request_timeout));
    let mut routes = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(deposit))
        .routes(routes!(deposit_signed_document))
        .merge(timed);
    let tiles = <openapi::Tiles as utoipa::OpenApi>::openapi();
    routes.get_openapi_mut().paths.paths.extend(tiles.paths.paths);
    openapi::add_common_answers(routes.get_openapi_mut());
    routes
}

/// The whole service.
pub fn router(state: AppState) -> Router {
    let limits = state.0.limits.clone();
    let (api, _) = api_routes(limits.request_timeout).split_for_parts();
    let timed_pages = Router::new().merge(pages::router().layer(axum::middleware::from_fn(pages::page_headers))).layer(
        tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, limits.request_timeout),
    );
    let api = api
        .merge(timed_pages)
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), metrics::track))
        .fallback(|State(state): State<AppState>, method: axum::http::Method| async move {
            metrics::unmatched(&state.0.metrics, method.as_str(), StatusCode::NOT_FOUND);
            ApiError::not_found(ErrorCode::NotFound, "no such endpoint; see /v1/openapi.json")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::MethodNotAllowed,
                "this endpoint does not take that method",
            )
        })
        .with_state(state);
    api.layer(tower::limit::ConcurrencyLimitLayer::new(limits.concurrency_limit))
        .layer(tower_http::trace::TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<Body>| {
            let id = request.extensions().get::<RequestId>().and_then(|id| id.0.to_str().ok()).unwrap_or_default();
            tracing::info_span!("request", id, method = %request.method(), uri = %request.uri())
        }))
        .layer(axum::middleware::from_fn(edge))
}

/// What every request passes through first, in one layer (each layer of its own cost a boxed future
/// and a clone of the services inside it per request): its id ([`request_id`]), the limits on its
/// headers ([`header_limits`]), before it takes a place among the requests served at once, and the
/// JSON shape of errors made outside the handlers ([`json_error`]).
async fn edge(mut request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let id = request_id(&request);
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = match header_limits(request.headers()) {
        Err(refused) => refused.into_response(),
        Ok(()) => json_error(next.run(request).await),
    };
    response.headers_mut().insert(REQUEST_ID_HEADER, id);
    response
}

/// A request's id, for its log span (`request_id`).
#[derive(Clone)]
struct RequestId(HeaderValue);

/// Every request gets an id, in its log lines and in the `X-Request-Id` of its response: the caller's,
/// if it sent a sensible one (a gateway's), else a new random one.
fn request_id(request: &axum::extract::Request) -> HeaderValue {
    let given = request.headers().get(REQUEST_ID_HEADER).and_then(|value| value.to_str().ok()).filter(|id| {
        (1..=REQUEST_ID_LENGTH_MAX).contains(&id.len())
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    });
    let id = match given {
        Some(id) => id.to_owned(),
        None => {
            let mut bytes = [0u8; 12];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
            hex::encode(bytes)
        }
    };
    HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// Refuses a request with more header fields than `REQUEST_HEADERS_MAX` or more bytes of them than
/// `REQUEST_HEADER_BYTES_MAX`, with the JSON error shape.
fn header_limits(headers: &HeaderMap) -> Result<(), ApiError> {
    let bytes: usize = headers.iter().map(|(name, value)| name.as_str().len() + value.len()).sum();
    if headers.len() > REQUEST_HEADERS_MAX || bytes > REQUEST_HEADER_BYTES_MAX {
        return Err(ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorCode::HeadersTooLarge,
            format!(
                "the request has {} header fields and {bytes} bytes of them; at most {REQUEST_HEADERS_MAX} fields and \
                 {REQUEST_HEADER_BYTES_MAX} bytes are taken",
                headers.len()
            ),
        ));
    }
    Ok(())
}

/// Errors produced outside the handlers (timeouts, framework rejections) get the JSON error shape too.
fn json_error(response: Response) -> Response {
    let status = response.status();
    // Pages answer errors with a page of their own.
    let is_json_or_page = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json") || v.as_bytes().starts_with(b"text/html"));
    if !status.is_client_error() && !status.is_server_error()
        || is_json_or_page
        || status == StatusCode::RANGE_NOT_SATISFIABLE
    {
        return response;
    }
    let code = match status {
        StatusCode::REQUEST_TIMEOUT => ErrorCode::RequestTimeout,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::BodyTooLarge,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => ErrorCode::HeadersTooLarge,
        StatusCode::BAD_REQUEST => ErrorCode::BadRequest,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
        _ => ErrorCode::Error,
    };
    let message = status.canonical_reason().unwrap_or("error").to_owned();
    ApiError::new(status, code, message).into_response()
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer_token(&parts.headers).ok_or(auth::AuthError::MissingToken)?;
        let principal = state.0.auth.authenticate(token).await?;
        if let Err(wait) = state.0.rate_limits.check(&principal) {
            let retry_after_seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::RateLimited,
                format!("too many requests from {}; try again in {retry_after_seconds} s", principal.subject),
            )
            .retry_after(retry_after_seconds));
        }
        if principal.dev {
            // The server warns once at start that dev mode is on; a line per request at warn would cost
            // every request a log write (and a benchmark its figures).
            tracing::debug!(subject = %principal.subject, role = principal.role.as_str(),
                "DEV MODE: accepted a token minted by `kho dev-token`");
        }
        Ok(principal)
    }
}

/// The token of an `Authorization: Bearer` header, if the request has one (the API's and the pages').
/// The token of an `Authorization: Bearer <token>` header; the scheme is case-insensitive (RFC 9110
/// section 11.1), and one or more spaces may follow it.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The stated purpose, if any: a dossier code.
fn purpose(headers: &HeaderMap) -> Result<Option<Code>, ApiError> {
    let Some(value) = headers.get(PURPOSE_HEADER) else { return Ok(None) };
    let text =
        value.to_str().map_err(|_| ApiError::bad_request(ErrorCode::InvalidPurpose, "Kho-Purpose must be ASCII"))?;
    Code::parse("purpose", text).map(Some).map_err(|e| ApiError::bad_request(ErrorCode::InvalidPurpose, e.to_string()))
}

fn parse_record_id(text: &str) -> Result<Digest, ApiError> {
    Digest::parse_hex("record id", text).map_err(|e| ApiError::bad_request(ErrorCode::InvalidRecordId, e.to_string()))
}

fn parse_owner(text: &str) -> Result<OwnerId, ApiError> {
    OwnerId::parse(text).map_err(|e| ApiError::bad_request(ErrorCode::InvalidOwnerId, e.to_string()))
}

fn require_role(principal: &Principal, role: Role, what: &str) -> Result<(), ApiError> {
    if principal.role == role {
        Ok(())
    } else {
        Err(ApiError::forbidden(ErrorCode::Forbidden, format!("only the {} role may {what}", role.as_str())))
    }
}

/// Refuses a statement an issuer's system sends for another agency than its own.
fn require_own_agency(principal: &Principal, agency: &Code, what: &str) -> Result<(), ApiError> {
    if principal.agency.as_ref() == Some(agency) {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            ErrorCode::OtherAgency,
            format!("the {what} is signed for agency {agency}, not the caller's"),
        ))
    }
}

/// The answer to an accepted statement about record `id`: 201 when new, 200 when it was accepted
/// before, with the record as it reads now. A new deposit's document bytes are counted.
async fn record_answer(
    state: &AppState,
    newly_accepted: bool,
    id: Digest,
    deposit: bool,
) -> Result<Response, ApiError> {
    let view = load_record(state, id).await?;
    view_answer(state, newly_accepted, view, deposit)
}

/// [`record_answer`] with the record's view in hand.
fn view_answer(state: &AppState, newly_accepted: bool, view: RecordView, deposit: bool) -> Result<Response, ApiError> {
    let status = if newly_accepted { StatusCode::CREATED } else { StatusCode::OK };
    if newly_accepted && deposit {
        state.0.metrics.count_deposit(view.record.body().size_bytes);
    }
    Ok((status, Json(json::record_view_json(&view))).into_response())
}

/// Reads a statement body (certificates, revocations) up to the configured limit.
async fn statement_body(state: &AppState, body: Body) -> Result<Bytes, ApiError> {
    let limit = state.0.limits.statement_body_size_bytes_max;
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::BodyTooLarge,
            format!("the body is larger than {limit} bytes"),
        )
    })
}

/// Applies the access decision, recording it first (durably) when the reader is not the owner.
/// Decides an attempt at a person's data and records it in their access log before answering (the
/// owner's own reads excepted). `purpose` and `request` are what the rest of the request parsed to: a
/// malformed request that names a known person is an attempt too, logged as denied with its error code
/// and answered with that error; only a request that names no valid owner or record cannot be
/// attributed, and never reaches here.
async fn guard<T>(
    state: &AppState,
    principal: &Principal,
    resource: Resource,
    record: Option<Digest>,
    purpose: Result<Option<Code>, ApiError>,
    request: Result<T, ApiError>,
) -> Result<T, ApiError> {
    let (outcome, event) = judge(principal, resource, record, purpose, request);
    if let Some(event) = event {
        state.record_access(event).await?;
    }
    outcome
}

/// `guard`'s decision without its recording: the outcome, and the access event to record durably
/// before answering (none for the owner's own reads). For a caller that records it in the same call
/// to the vault as its own work (a download: `get_content`).
fn judge<T>(
    principal: &Principal,
    resource: Resource,
    record: Option<Digest>,
    purpose: Result<Option<Code>, ApiError>,
    request: Result<T, ApiError>,
) -> (Result<T, ApiError>, Option<AccessEvent>) {
    let (purpose, outcome) = match (purpose, request) {
        (Ok(purpose), Ok(request)) => {
            let outcome = match decide(principal, &resource, purpose.as_ref()) {
                Decision::Allow => Ok(request),
                Decision::Deny { code, message } => Err(ApiError::forbidden(code, message)),
            };
            (purpose, outcome)
        }
        (Ok(purpose), Err(error)) => (purpose, Err(error)),
        (Err(error), _) => (None, Err(error)),
    };
    let owner = resource.owner().clone();
    // Only the owner's own reads go unlogged; an `owner` claim on any other role does not count.
    let is_owner = principal.role == Role::Citizen && principal.owner.as_ref() == Some(&owner);
    let event = (!is_owner).then(|| {
        let decision = match &outcome {
            Ok(_) => Decision::Allow,
            Err(error) => Decision::Deny { code: error.code, message: String::new() },
        };
        access::event(principal, owner, record, resource.action(), purpose, &decision)
    });
    (outcome, event)
}

async fn load_record(state: &AppState, id: Digest) -> Result<RecordView, ApiError> {
    state.blocking(move |vault| vault.record(&id)).await??.ok_or_else(|| no_record(id))
}

/// The record alone (`Vault::record_statement`), for a handler that decides from it and serves
/// something else.
async fn load_record_statement(state: &AppState, id: Digest) -> Result<Signed<Record>, ApiError> {
    state.blocking(move |vault| vault.record_statement(&id)).await??.ok_or_else(|| no_record(id))
}

fn no_record(id: Digest) -> ApiError {
    ApiError::not_found(ErrorCode::RecordNotFound, format!("no record {id}"))
}

// ----- issuers -----

#[utoipa::path(post, path = "/v1/records", tag = "issuers",
    summary = "Deposit a document: the signed record in Kho-Record, the content as the body, streamed",
    description = "Roles: issuer (own agency). The record is checked (signature, certified key of its agency, valid and unrevoked now), the content is hashed as it arrives and must match the record's size, BLAKE3 and SHA-256; then record and receipt are committed durably.",
    params(("Kho-Record" = String, Header, description = "base64 of the signed record envelope (docs/FORMAT.md)", format = Byte)),
    request_body(content = openapi::Binary, content_type = "application/octet-stream", description = "the document bytes"),
    responses(
        (status = 201, description = "accepted; the record view with its receipt", body = json::RecordViewJson),
        (status = 200, description = "this record was accepted before; the earlier receipt", body = json::RecordViewJson),
        (status = 400, description = "malformed record, bad signature, truncated content", body = openapi::ErrorBody),
        (status = 403, description = "not an issuer, or the record is another agency's; supersedes another agency's or owner's record", body = openapi::ErrorBody),
        (status = 408, description = "the body did not end within the request deadline; nothing was stored", body = openapi::ErrorBody),
        (status = 409, description = "supersedes a record that is already superseded or revoked", body = openapi::ErrorBody),
        (status = 413, description = "document larger than the limit or than the record declares", body = openapi::ErrorBody),
        (status = 422, description = "untrusted signer, content hash mismatch, unknown superseded record", body = openapi::ErrorBody),
        openapi::SignedIn,
    ),
    security(("bearer" = [])))]
async fn deposit(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require_role(&principal, Role::Issuer, "deposit documents")?;
    let header_value = headers.get(RECORD_HEADER).ok_or_else(|| {
        ApiError::bad_request(ErrorCode::MissingRecord, "send the signed record, base64, in the Kho-Record header")
    })?;
    let envelope = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, header_value.as_bytes())
        .map_err(|_| ApiError::bad_request(ErrorCode::MalformedRecord, "the Kho-Record header is not base64"))?;
    let record = Signed::<Record>::from_envelope(&envelope).map_err(DepositError::from)?;
    require_own_agency(&principal, &record.body().issuer_agency, "record")?;
    // Content flows from the network to the vault through a small channel: never buffered whole. The
    // worker commits only when told the body ended; a body that stops short, fails, or misses its
    // deadline drops the sender instead, and the deposit is rolled back.
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<BodyPiece>(STREAM_CHUNKS_IN_FLIGHT);
    let deadline = tokio::time::Instant::now() + state.0.limits.request_timeout;
    let worker = state.blocking_paced(move |vault| {
        let mut deposit = vault.begin_deposit(record)?;
        loop {
            match receiver.blocking_recv() {
                Some(BodyPiece::Bytes(bytes)) => deposit.write(&bytes)?,
                Some(BodyPiece::End) => return deposit.commit_viewed(),
                Some(BodyPiece::Failed(reason)) => {
                    return Err(DepositError::ContentRead(std::io::Error::other(reason)))
                }
                None => {
                    return Err(DepositError::ContentRead(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the request body did not end",
                    )))
                }
            }
        }
    });
    let feeder = async move {
        let mut stream = body.into_data_stream();
        let fed = tokio::time::timeout_at(deadline, async move {
            while let Some(chunk) = stream.next().await {
                let piece = match chunk {
                    Ok(bytes) => BodyPiece::Bytes(bytes),
                    Err(error) => BodyPiece::Failed(error.to_string()),
                };
                let failed = matches!(piece, BodyPiece::Failed(_));
                // The worker stops reading when it rejects the deposit; then there is nothing left to feed.
                if sender.send(piece).await.is_err() || failed {
                    return;
                }
            }
            let _ = sender.send(BodyPiece::End).await;
        })
        .await;
        fed.is_err()
    };
    let (accepted, timed_out) = tokio::join!(worker, feeder);
    if timed_out {
        // The worker saw the channel close without an end, so nothing was stored.
        return Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            ErrorCode::RequestTimeout,
            "the document's body did not end in time; nothing was stored",
        ));
    }
    let (view, newly_accepted) = accepted??;
    view_answer(&state, newly_accepted, view, true)
}

/// What an agency says about a signed document it deposits as it is (`POST /v1/signed-documents`).
/// The record's details for a signed document; the vault adds its hashes, size, type and signer.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct SignedDocumentQuery {
    /// The person or organization the document is about.
    #[param(value_type = openapi::OwnerIdText)]
    owner: String,
    #[param(value_type = openapi::CodeText)]
    document_type: String,
    /// 1 to 512 characters.
    #[param(value_type = openapi::TitleText)]
    title: String,
    #[param(value_type = openapi::CodeText)]
    procedure: String,
    #[param(value_type = openapi::CodeText)]
    dossier: String,
    /// Default: today, in Vietnam.
    #[param(value_type = openapi::DateText, required = false)]
    issued_on: Option<String>,
    /// Default: the day it was issued.
    #[param(value_type = openapi::DateText, required = false)]
    valid_from: Option<String>,
    /// Inclusive; default none.
    #[param(value_type = openapi::DateText, required = false)]
    valid_until: Option<String>,
    /// The record this one replaces.
    #[param(value_type = openapi::HexDigestText, required = false)]
    supersedes: Option<String>,
}

impl SignedDocumentQuery {
    fn details(self, agency: Code, today: Date) -> Result<crate::vault::DocumentDetails, ApiError> {
        let invalid =
            |field: &str, error: String| ApiError::bad_request(ErrorCode::InvalidDetails, format!("{field}: {error}"));
        let code = |field: &str, text: &str| Code::parse("code", text).map_err(|e| invalid(field, e.to_string()));
        let date = |field: &str, text: &Option<String>| {
            text.as_deref().map(Date::parse).transpose().map_err(|e| invalid(field, e.to_string()))
        };
        let issued_on = date("issued_on", &self.issued_on)?.unwrap_or(today);
        Ok(crate::vault::DocumentDetails {
            owner: OwnerId::parse(&self.owner).map_err(|e| invalid("owner", e.to_string()))?,
            agency,
            document_type: code("document_type", &self.document_type)?,
            title: Title::parse(&self.title).map_err(|e| invalid("title", e.to_string()))?,
            issued_on,
            valid_from: date("valid_from", &self.valid_from)?.unwrap_or(issued_on),
            valid_until: date("valid_until", &self.valid_until)?,
            procedure: code("procedure", &self.procedure)?,
            dossier: code("dossier", &self.dossier)?,
            supersedes: self.supersedes.as_deref().map(parse_record_id).transpose()?,
        })
    }
}

/// An agency deposits a document it signed as it is: a PAdES-signed PDF, or any file with its detached
/// CMS signature in the Kho-Signature header and its media type as the Content-Type. The vault checks
/// the signature and records the document for the caller's agency (`Vault::deposit_signed_pdf`,
/// `Vault::deposit_detached_signed`).
#[utoipa::path(post, path = "/v1/signed-documents", tag = "issuers",
    summary = "Deposit a document as the agency signed it: a PAdES-signed PDF, or any file with its detached CMS signature in Kho-Signature",
    description = "Roles: issuer (own agency: the signer's certificate must name it). The signature, its chain to a configured X.509 root, timestamp and revocation evidence are checked, and the vault records the document for the caller's agency with the validation logged (a detached signature is kept beside the record).",
    params(SignedDocumentQuery,
        ("Kho-Signature" = Option<String>, Header, description = "base64 of a detached CMS signature (.p7s, DER or PEM) over the body, whose Content-Type becomes the document's media type; without it the body must be a PAdES-signed PDF", format = Byte)),
    request_body(content = openapi::Binary, content_type = "application/pdf", description = "the signed PDF exactly as signed, or the file the detached signature signs"),
    responses(
        (status = 201, description = "accepted; the record view with its receipt", body = json::RecordViewJson),
        (status = 200, description = "this document was accepted before with the same details; the earlier record", body = json::RecordViewJson),
        (status = 400, description = "malformed details, Kho-Signature not base64, or a malformed Content-Type", body = openapi::ErrorBody),
        (status = 403, description = "not an issuer, or the token names no agency; supersedes another agency's or owner's record", body = openapi::ErrorBody),
        (status = 408, description = "the body did not end within the request deadline; nothing was stored", body = openapi::ErrorBody),
        (status = 409, description = "supersedes a record that is already superseded or revoked", body = openapi::ErrorBody),
        (status = 413, description = "larger than the signed-document limit", body = openapi::ErrorBody),
        (status = 422, description = "the embedded signature fails (its code says why: changed_after_signing, bad_digest, revoked, expired, no_path, no_revocation_info, ...), or its certificate is another agency's", body = openapi::ErrorBody),
        openapi::SignedIn,
    ),
    security(("bearer" = [])))]
async fn deposit_signed_document(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<SignedDocumentQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require_role(&principal, Role::Issuer, "deposit documents")?;
    let agency = principal
        .agency
        .clone()
        .ok_or_else(|| ApiError::forbidden(ErrorCode::OtherAgency, "the caller's token names no agency"))?;
    let today = Date::at(crate::ids::now_unix_ms(), state.0.vault.config().utc_offset_minutes);
    let details = query.details(agency, today)?;
    let detached = match headers.get(SIGNATURE_HEADER) {
        None => None,
        Some(value) => {
            let p7s =
                base64::Engine::decode(&base64::engine::general_purpose::STANDARD, value.as_bytes()).map_err(|_| {
                    ApiError::bad_request(ErrorCode::MalformedSignature, "the Kho-Signature header is not base64")
                })?;
            let media_type = headers
                .get(header::CONTENT_TYPE)
                .map(|value| value.to_str().unwrap_or_default())
                .unwrap_or("application/octet-stream");
            let media_type = MediaType::parse(media_type)
                .map_err(|e| ApiError::bad_request(ErrorCode::InvalidDetails, format!("Content-Type: {e}")))?;
            Some((p7s, media_type))
        }
    };
    let limit = crate::vault::SIGNED_DOCUMENT_SIZE_BYTES_MAX.min(state.0.vault.config().document_size_bytes_max);
    // The body is read within the request deadline; once it is in, the check and commit are never cut off.
    let read = axum::body::to_bytes(body, usize::try_from(limit).unwrap_or(usize::MAX));
    let bytes = match tokio::time::timeout(state.0.limits.request_timeout, read).await {
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                ErrorCode::RequestTimeout,
                "the document's body did not end in time; nothing was stored",
            ))
        }
        Ok(Err(_)) => {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::DocumentTooLarge,
                format!("the body could not be read whole: a signed document is checked whole and may be at most {limit} bytes; nothing was stored"),
            ))
        }
        Ok(Ok(bytes)) => bytes,
    };
    let accepted = state
        .blocking(move |vault| match detached {
            None => vault.deposit_signed_pdf(&bytes, details),
            Some((p7s, media_type)) => vault.deposit_detached_signed(&bytes, &p7s, media_type, details),
        })
        .await??;
    record_answer(&state, accepted.newly_accepted, accepted.id, true).await
}

#[utoipa::path(post, path = "/v1/records/{id}/revocation", tag = "issuers",
    summary = "Revoke a record with a signed revocation (the body is its envelope)",
    description = "Roles: issuer (own agency).",
    params(openapi::IdPath),
    request_body(content = openapi::Binary, content_type = "application/octet-stream", description = "the signed revocation envelope"),
    responses(
        (status = 201, description = "revoked; the record view", body = json::RecordViewJson),
        (status = 200, description = "this revocation was accepted before", body = json::RecordViewJson),
        (status = 400, description = "malformed id or revocation, or it names another record", body = openapi::ErrorBody),
        (status = 403, description = "not an issuer, or another agency's record", body = openapi::ErrorBody),
        (status = 404, description = "no such record", body = openapi::ErrorBody),
        (status = 408, description = "the request took longer than the request deadline", body = openapi::ErrorBody),
        (status = 409, description = "already revoked", body = openapi::ErrorBody),
        (status = 413, description = "body larger than the statement limit", body = openapi::ErrorBody),
        (status = 422, description = "untrusted signer", body = openapi::ErrorBody),
        openapi::SignedIn,
    ),
    security(("bearer" = [])))]
async fn revoke_record(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    require_role(&principal, Role::Issuer, "revoke records")?;
    let id = parse_record_id(&id)?;
    let envelope = statement_body(&state, body).await?;
    let revocation = Signed::<RecordRevocation>::from_envelope(&envelope).map_err(crate::vault::RevokeError::from)?;
    if revocation.body().record != id {
        return Err(ApiError::bad_request(
            ErrorCode::RecordMismatch,
            "the revocation names another record than the URL",
        ));
    }
    require_own_agency(&principal, &revocation.body().issuer_agency, "revocation")?;
    let accepted = state.blocking(move |vault| vault.revoke(&envelope)).await??;
    record_answer(&state, accepted.newly_accepted, id, false).await
}

// ----- certified copies -----

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct RequestsQuery {
    /// The person's 12-digit citizen id or 10/13-digit organization code.
    #[param(value_type = openapi::OwnerIdText)]
    owner: String,
}

/// What an officer at an agency's counter looks up: the person's uploads sent to the agency for
/// certification and not yet certified. An attempt at the person's data, so it is in their log.
#[utoipa::path(get, path = "/v1/agencies/{agency}/certification-requests", tag = "issuers",
    summary = "A person's uploads sent to this agency for certification and not yet certified (logged in their access log)",
    description = "Roles: officer or issuer (own agency), auditor, citizen (own).",
    params(("agency" = openapi::CodeText, Path, description = "the agency code"), RequestsQuery),
    responses(
        (status = 200, description = "the requests", body = CertificationRequestsJson),
        (status = 400, description = "malformed agency, owner or query", body = openapi::ErrorBody),
        (status = 403, description = "denied; the attempt is recorded in the owner's access log", body = openapi::ErrorBody),
        openapi::SignedIn,
    ),
    security(("bearer" = [])))]
async fn certification_requests(
    State(state): State<AppState>,
    principal: Principal,
    Path(agency): Path<String>,
    query: Result<Query<RequestsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<CertificationRequestsJson>, ApiError> {
    let agency =
        Code::parse("agency", &agency).map_err(|e| ApiError::bad_request(ErrorCode::InvalidAgency, e.to_string()))?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(ErrorCode::InvalidQuery, e.body_text()))?;
    let owner = parse_owner(&query.owner)?;
    let resource = Resource::CertificationRequests { owner: owner.clone(), agency: agency.clone() };
    guard(&state, &principal, resource, None, Ok(None), Ok(())).await?;
    let pending = state.blocking(move |vault| vault.pending_certifications(&agency)).await??;
    let requests: Vec<CertificationRequestJson> = pending
        .iter()
        .filter(|(request, _)| request.owner == owner)
        .map(|(request, view)| CertificationRequestJson {
            requested_at: crate::ids::format_unix_ms(request.requested_at_ms),
            record: json::record_view_json(view),
        })
        .collect();
    Ok(Json(CertificationRequestsJson { requests }))
}

#[derive(Serialize, ToSchema)]
struct CertificationRequestsJson {
    requests: Vec<CertificationRequestJson>,
}

#[derive(Serialize, ToSchema)]
struct CertificationRequestJson {
    #[schema(format = DateTime)]
    requested_at: String,
    record: json::RecordViewJson,
}

/// An agency certifies an upload it was asked to certify (the body is the signed certification).
#[utoipa::path(post, path = "/v1/certifications", tag = "issuers",
    summary = "Certify an upload as a copy of an original (the body is the signed copy certification, kind 9)",
    description = "Roles: issuer (own agency).",
    request_body(content = openapi::Binary, content_type = "application/octet-stream", description = "the signed copy certification envelope"),
    responses(
        (status = 201, description = "accepted; the certified record's view", body = json::RecordViewJson),
        (status = 200, description = "this certification was accepted before", body = json::RecordViewJson),
        (status = 400, description = "malformed certification or bad signature", body = openapi::ErrorBody),
        (status = 403, description = "not an issuer, signed for another agency, or the owner did not ask this agency", body = openapi::ErrorBody),
        (status = 404, description = "no such record", body = openapi::ErrorBody),
        (status = 409, description = "the upload is already certified", body = openapi::ErrorBody),
        (status = 413, description = "body larger than the statement limit", body = openapi::ErrorBody),
        (status = 422, description = "untrusted signer, or the record is not an upload", body = openapi::ErrorBody),
        openapi::SignedIn,
    ),
    security(("bearer" = [])))]
async fn certify_copy(State(state): State<AppState>, principal: Principal, body: Body) -> Result<Response, ApiError> {
    require_role(&principal, Role::Issuer, "certify copies")?;
    let envelope = statement_body(&state, body).await?;
    let certification = Signed::<CopyCertification>::from_envelope(&envelope).map_err(crate::vault::CopyError::from)?;
    let body = certification.body();
    require_own_agency(&principal, &body.agency, "certification")?;
    let record = body.record;
    let accepted = state.blocking(move |vault| vault.certify_copy(&envelope)).await??;
    record_answer(&state, accepted.newly_accepted, record, false).await
}

// ----- reading records -----

#[utoipa::path(get, path = "/v1/records/{id}", tag = "records",
    summary = "A record with its current status and receipt",
    description = "Roles: citizen (own), officer (with purpose), auditor, issuer (own agency). Logged in the owner's access log unless the owner reads.",
    params(openapi::IdPath, openapi::PurposeHeader),
    responses(
        (status = 200, description = "the record view", body = json::RecordViewJson),
        (status = 400, description = "malformed id or purpose", body = openapi::ErrorBody),
        (status = 403, description = "denied; the attempt is recorded in the owner's access log", body = openapi::ErrorBody),
        (status = 404, description = "no such record", body = openapi::ErrorBody),
        openapi::SignedIn,
    ),
    security(("bearer" = [])))]
async fn get_record(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<json::RecordViewJson>, ApiError> {
    let id = parse_record_id(&id)?;
    let view = load_record(&state, id).await?;
    let body = view.record.body();
    let resource = Resource::Record { owner: body.owner.clone(), issuer_agency: body.issuer_agency.clone() };
    guard(&state, &principal, resource, Some(id), purpose(&headers), Ok(())).await?;
    Ok(Json(json::record_view_json(&view)))
}

/// A single byte range from a `Range` header, as start..end (end exclusive); `None` for the whole
/// document (no header, another unit, several ranges, or a header that does not parse, which RFC 9110
/// says to ignore). `Err` if it cannot be satisfied.
fn parse_range(headers: &HeaderMap, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("bytes="))
    else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.trim().split_once('-') else { return Ok(None) };
    let (first, last) = (first.trim(), last.trim());
    let range = match (first.parse::<u64>(), last.parse::<u64>()) {
        (Ok(start), Ok(end)) if start <= end => (start, end.saturating_add(1).min(size)),
        (Ok(_), Ok(_)) => return Ok(None),
        (Ok(start), Err(_)) if last.is_empty() => (start, size),
        (Err(_), Ok(suffix)) if first.is_empty() => {
            if suffix == 0 {
                return Err(());
            }
            (size.saturating_sub(suffix), size)
        }
        _ => return Ok(None),
    };
    if range.0 >= size {
        return Err(());
    }
    Ok(Some(range))
}

#[utoipa::path(get, path = "/v1/records/{id}/content", tag = "records",
    summary = "The document bytes, verified; ETag is the BLAKE3 address; single byte ranges",
    description = "Roles: citizen (own), officer (with purpose), auditor (with purpose). Logged before the first byte.",
    params(openapi::IdPath, openapi::PurposeHeader,
        ("Range" = Option<String>, Header, description = "bytes=a-b, a- or -n"),
        ("If-None-Match" = Option<String>, Header, description = "an ETag")),
    responses(
        (status = 200, description = "the whole document, as the record's media_type says", body = openapi::Binary, content_type = "*/*"),
        (status = 206, description = "the requested range, as the record's media_type says", body = openapi::Binary, content_type = "*/*"),
        (status = 304, description = "not modified"),
        (status = 400, description = "malformed id or purpose", body = openapi::ErrorBody),
        (status = 403, description = "denied; the attempt is recorded in the owner's access log", body = openapi::ErrorBody),
        (status = 404, description = "no such record", body = openapi::ErrorBody),
        (status = 416, description = "range not satisfiable", body = openapi::ErrorBody),
        (status = 500, description = "integrity_error: the stored bytes failed verification and were not served", body = openapi::ErrorBody),
        openapi::SignedIn,
    ),
    security(("bearer" = [])))]
async fn get_content(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = parse_record_id(&id)?;
    let purpose = purpose(&headers);
    // One call to the vault: the record (alone: a download serves no receipt), the decision, the access
    // entry, the document's first pieces; then, holding no thread, the wait for the access entry to be
    // durable before anything is sent.
    let (committed, answer) = state
        .blocking(move |vault| {
            let record = vault.record_statement(&id)?.ok_or_else(|| no_record(id))?;
            let body = record.body();
            let resource = Resource::Content { owner: body.owner.clone(), issuer_agency: body.issuer_agency.clone() };
            let (outcome, access) = judge(&principal, resource, Some(id), purpose, Ok(()));
            let committed = access.map(|event| vault.commit_access(&event)).transpose()?;
            let answer = outcome.and_then(|()| open_content(vault, body, &headers)).map(|answer| (answer, record));
            Ok::<_, ApiError>((committed, answer))
        })
        .await??;
    if let Some(committed) = committed {
        state.vault().access_durable(committed).await?;
    }
    let (answer, record) = answer?;
    content_response(&state, record.body(), answer)
}

/// What a download answers, decided on the vault's side.
enum ContentAnswer {
    /// The client holds this version (`If-None-Match`).
    NotModified,
    /// The range asked is outside the document.
    RangeNotSatisfiable,
    /// The document or the range `start..end` (`range` when one was asked): its first pieces, verified,
    /// and the reader when more remain.
    Pieces { range: Option<(u64, u64)>, pieces: Vec<Bytes>, rest: Option<Box<crate::content::ContentReader>> },
}

/// A record's document, whole or one range, after the caller's access was decided and recorded.
async fn send_content(state: &AppState, body: &Record, headers: &HeaderMap) -> Result<Response, ApiError> {
    let (record, headers) = (body.clone(), headers.clone());
    let answer = state.blocking(move |vault| open_content(vault, &record, &headers)).await??;
    content_response(state, body, answer)
}

/// The vault's side of a download, once its access is recorded: a conditional or bad range is
/// answered at once; otherwise the document is opened and its first pieces read (at most
/// STREAM_CHUNKS_IN_FLIGHT, each verified), so that a damaged document is a clean 500 and a small one
/// needs nothing more.
fn open_content(vault: &Vault, body: &Record, headers: &HeaderMap) -> Result<ContentAnswer, ApiError> {
    let etag = etag(body);
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
    {
        return Ok(ContentAnswer::NotModified);
    }
    let Ok(range) = parse_range(headers, body.size_bytes) else {
        return Ok(ContentAnswer::RangeNotSatisfiable);
    };
    let failed = |error: crate::content::ContentError| {
        tracing::error!(%error, "content failed verification");
        ApiError::from(crate::vault::StorageError::from(error))
    };
    let mut reader = vault.open_content(&body.blake3, range)?.ok_or_else(|| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::IntegrityError, "content missing")
    })?;
    let mut pieces = Vec::with_capacity(STREAM_CHUNKS_IN_FLIGHT);
    while pieces.len() < STREAM_CHUNKS_IN_FLIGHT {
        match reader.next_chunk().map_err(failed)? {
            Some(piece) => pieces.push(piece),
            None => return Ok(ContentAnswer::Pieces { range, pieces, rest: None }),
        }
    }
    let rest = (reader.remaining_bytes() > 0).then(|| Box::new(reader));
    Ok(ContentAnswer::Pieces { range, pieces, rest })
}

/// A document's entity tag: its BLAKE3 address, quoted.
fn etag(body: &Record) -> String {
    format!("\"{}\"", body.blake3.to_hex())
}

/// The response to a download: its headers, and a body of the first pieces followed, for a longer
/// document, by the rest, read and verified as the client takes it.
fn content_response(state: &AppState, body: &Record, answer: ContentAnswer) -> Result<Response, ApiError> {
    let size = body.size_bytes;
    let mut response_headers = HeaderMap::new();
    response_headers
        .insert(header::ETAG, HeaderValue::from_str(&etag(body)).map_err(|e| ApiError::internal(e.to_string()))?);
    response_headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    response_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(body.media_type.as_str()).map_err(|e| ApiError::internal(e.to_string()))?,
    );
    let (range, pieces, rest) = match answer {
        ContentAnswer::NotModified => return Ok((StatusCode::NOT_MODIFIED, response_headers).into_response()),
        ContentAnswer::RangeNotSatisfiable => {
            let mut response = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                ErrorCode::RangeNotSatisfiable,
                format!("the document has {size} bytes"),
            )
            .into_response();
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return Ok(response);
        }
        ContentAnswer::Pieces { range, pieces, rest } => (range, pieces, rest),
    };
    let (start, end) = range.unwrap_or((0, size));
    let metrics = state.0.metrics.clone();
    metrics.read_bytes.inc_by(pieces.iter().map(|piece| piece.len() as u64).sum());
    let head = futures_util::stream::iter(pieces.into_iter().map(Ok::<_, std::io::Error>));
    let body = match rest {
        None => Body::from_stream(head),
        Some(reader) => {
            // Read as the client takes it, on the task that writes the response: a frame the page
            // cache holds costs no thread switch, and only one that must come from the disk is read
            // on a blocking thread. Ends when the document does, on an error, or when the client
            // goes away (the stream is dropped).
            let rest = futures_util::stream::try_unfold(reader, move |mut reader| {
                let metrics = metrics.clone();
                async move {
                    let next = match reader.next_chunk_at_hand() {
                        Ok(AtHand::Piece(piece)) => Ok(Some(piece)),
                        Ok(AtHand::End) => Ok(None),
                        Ok(AtHand::NotAtHand) => {
                            let read = tokio::task::spawn_blocking(move || (reader.next_chunk(), reader)).await;
                            let (next, returned) = read.map_err(std::io::Error::other)?;
                            reader = returned;
                            next
                        }
                        Err(error) => Err(error),
                    };
                    match next {
                        Ok(Some(piece)) => {
                            metrics.read_bytes.inc_by(piece.len() as u64);
                            Ok(Some((piece, reader)))
                        }
                        Ok(None) => Ok(None),
                        Err(error) => {
                            tracing::error!(%error, "content failed verification while streaming");
                            // Headers are out: the error aborts the body, so the client sees an
                            // incomplete response.
                            let storage = crate::vault::StorageError::from(error);
                            Err(std::io::Error::new(std::io::ErrorKind::InvalidData, storage.to_string()))
                        }
                    }
                }
            });
            Body::from_stream(head.chain(rest))
        }
    };
    response_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    let status = if range.is_some() {
        let value = format!("bytes {start}-{}/{size}", end.saturating_sub(1));
        response_headers.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&value).map_err(|e| ApiError::internal(e.to_string()))?,
        );
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    Ok((status, response_headers, body).into_response())
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only this document type.
    #[serde(rename = "type")]
    #[param(rename = "type", value_type = openapi::CodeText, required = false)]
    document_type: Option<String>,
    /// Only this issuing agency.
    #[param(value_type = openapi::CodeText, required = false)]
    issuer: Option<String>,
    /// Only records with this status.
    #[param(value_type = Option<String>, pattern = "^(valid|not_yet_valid|expired|revoked|superseded|self_uploaded|certified_copy)$")]
    status: Option<StatusKind>,
    /// The next_cursor of the previous page.
    #[param(value_type = openapi::CursorText, required = false)]
    cursor: Option<String>,
    /// Page size, default 50.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
struct RecordPageJson {
    records: Vec<json::RecordViewJson>,
    /// Pass as `cursor` for the next page; none on the last.
    next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/owners/{owner}/records", tag = "records",
    summary = "An owner's records, newest first, filtered, paginated",
    description = "Roles: citizen (own), officer (with purpose), auditor. Logged unless the owner reads.",
    params(openapi::OwnerPath, openapi::PurposeHeader, ListQuery),
    responses(
        (status = 200, description = "a page of record views and next_cursor", body = RecordPageJson),
        (status = 400, description = "malformed owner, filter, cursor or limit", body = openapi::ErrorBody),
        (status = 403, description = "denied; the attempt is recorded in the owner's access log", body = openapi::ErrorBody),
        openapi::SignedIn,
    ),
    security(("bearer" = [])))]
async fn list_records(
    State(state): State<AppState>,
    principal: Principal,
    Path(owner): Path<String>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<RecordPageJson>, ApiError> {
    let owner = parse_owner(&owner)?;
    let request = (|| {
        let Query(query) = query.map_err(|e| ApiError::bad_request(ErrorCode::InvalidQuery, e.body_text()))?;
        let code = |field: &'static str, text: Option<&str>| {
            text.map(|t| Code::parse(field, t))
                .transpose()
                .map_err(|e| ApiError::bad_request(ErrorCode::InvalidQuery, e.to_string()))
        };
        let filter = ListFilter {
            document_type: code("type", query.document_type.as_deref())?,
            issuer_agency: code("issuer", query.issuer.as_deref())?,
            status: query.status,
            ..ListFilter::default()
        };
        let limit = query.limit.unwrap_or(PAGE_SIZE_DEFAULT);
        crate::vault::check_page(query.cursor.as_deref(), limit)?;
        Ok::<_, ApiError>((query, filter, limit))
    })();
    let resource = Resource::OwnerRecords { owner: owner.clone() };
    let (query, filter, limit) = guard(&state, &principal, resource, None, purpose(&headers), request).await?;
    let page = state.blocking(move |vault| vault.list_owner(&owner, &filter, query.cursor.as_deref(), limit)).await??;
    Ok(Json(RecordPageJson {
        records: page.records.iter().map(json::record_view_json).collect(),
        next_cursor: page.next_cursor,
    }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct PageQuery {
    /// The next_cursor of the previous page.
    #[param(value_type = openapi::CursorText, required = false)]
    cursor: Option<String>,
    /// Page size, default 50.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
struct AccessLogJson {
    entries: Vec<json::AccessEventJson>,
    next_cursor: Option<String>,
    /// None before the first checkpoint.
    completeness: Option<json::CompletenessJson>,
}

#[utoipa::path(get, path = "/v1/owners/{owner}/access-log", tag = "citizens",
    summary = "Who read the owner's documents, when, why, and with what outcome; newest first",
    description = "Roles: citizen (own).",
    params(openapi::OwnerPath, PageQuery),
    responses(
        (status = 200, description = "a page of access events, next_cursor, and completeness: the newest checkpoint, the owner-map commitment with its inclusion proof, and the owner's chain head with its map proof (null before the first checkpoint); see docs/FORMAT.md 4.4", body = AccessLogJson),
        (status = 400, description = "malformed owner, cursor or limit", body = openapi::ErrorBody),
        (status = 403, description = "not the owner", body = openapi::ErrorBody),
        openapi::SignedIn,
    ),
    security(("bearer" = [])))]
async fn access_log(
    State(state): State<AppState>,
    principal: Principal,
    Path(owner): Path<String>,
    headers: HeaderMap,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AccessLogJson>, ApiError> {
    let owner = parse_owner(&owner)?;
    let request =
        query.map_err(|e| ApiError::bad_request(ErrorCode::InvalidQuery, e.body_text())).and_then(|Query(query)| {
            let limit = query.limit.unwrap_or(PAGE_SIZE_DEFAULT);
            crate::vault::check_page(query.cursor.as_deref(), limit)?;
            Ok((query, limit))
        });
    let resource = Resource::AccessLog { owner: owner.clone() };
    let (query, limit) = guard(&state, &principal, resource, None, purpose(&headers), request).await?;
    let (page, completeness) = state
        .blocking(move |vault| {
            let page = vault.access_log(&owner, query.cursor.as_deref(), limit)?;
            let completeness = match vault.completeness(&owner) {
                Ok(completeness) => Some(json::completeness_json(&owner, &completeness)),
                Err(ProofQueryError::NoCheckpoint) => None,
                Err(error) => return Err(ApiError::from(error)),
            };
            Ok::<_, ApiError>((page, completeness))
        })
        .await??;
    Ok(Json(AccessLogJson {
        entries: page.entries.iter().map(|(sequence, event)| json::access_event_json(*sequence, event)).collect(),
        next_cursor: page.next_cursor,
        completeness,
    }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ChainQuery {
    /// Only entries with a log index below this (next_before of the previous page). Signed in the
    /// type only so that the document's int64 is the range taken.
    #[param(minimum = 0)]
    before: Option<i64>,
    /// Page size, default 50.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// The owner's chain entries covered by the owner map (leaf bytes), newest first: what the owner
/// walks to check the access log's completeness. Same readers as the access log.
#[utoipa::path(get, path = "/v1/owners/{owner}/log-entries", tag = "citizens",
    summary = "The owner's chain in the log (records, status changes, accesses) as leaf bytes, newest first, up to the newest owner-map commitment: what proves the access log complete",
    description = "Roles: citizen (own).",
    params(openapi::OwnerPath, ChainQuery),
    responses(
        (status = 200, description = "entries and next_before", body = json::ChainPageJson),
        (status = 400, description = "malformed owner, before or limit", body = openapi::ErrorBody),
        (status = 403, description = "not the owner", body = openapi::ErrorBody),
        openapi::SignedIn,
    ),
    security(("bearer" = [])))]
async fn owner_log_entries(
    State(state): State<AppState>,
    principal: Principal,
    Path(owner): Path<String>,
    headers: HeaderMap,
    query: Result<Query<ChainQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<json::ChainPageJson>, ApiError> {
    let owner = parse_owner(&owner)?;
    let request =
        query.map_err(|e| ApiError::bad_request(ErrorCode::InvalidQuery, e.body_text())).and_then(|Query(query)| {
            let limit = query.limit.unwrap_or(PAGE_SIZE_DEFAULT);
            crate::vault::check_page(None, limit)?;
            let before =
                query.before.map(u64::try_from).transpose().map_err(|_| {
                    ApiError::bad_request(ErrorCode::InvalidQuery, "before must be a log index, 0 or more")
                })?;
            Ok((before, limit))
        });
    let resource = Resource::AccessLog { owner: owner.clone() };
    let (before, limit) = guard(&state, &principal, resource, None, purpose(&headers), request).await?;
    let page = state.blocking(move |vault| vault.owner_chain(&owner, before, limit)).await??;
    Ok(Json(json::chain_page_json(&page)))
}

// ----- evidence bundles -----

/// An owner's whole store as an evidence bundle (docs/FORMAT.md section 5): the owner, or an auditor
/// stating a purpose (logged in the owner's access log before anything is gathered).
#[utoipa::path(get, path = "/v1/owners/{owner}/export", tag = "citizens",
    summary = "The owner's whole store as an evidence bundle (a ustar archive, docs/FORMAT.md 5), checked offline by `kho verify BUNDLE`",
    description = "Roles: citizen (own), auditor (with purpose; logged). Every record with its document, status evidence, receipts, certificates, the checkpoint, inclusion proofs, and the access log with its completeness evidence.",
    params(openapi::OwnerPath, openapi::PurposeHeader),
    responses(
        (status = 200, description = "the bundle, with Content-Length", body = openapi::Binary, content_type = "application/x-tar"),
        (status = 400, description = "malformed owner or purpose", body = openapi::ErrorBody),
        (status = 403, description = "denied; the attempt is recorded in the owner's access log", body = openapi::ErrorBody),
        (status = 404, description = "no checkpoint yet", body = openapi::ErrorBody),
        (status = 503, description = "witnesses are required (fail-closed) and have not cosigned the checkpoint yet", body = openapi::ErrorBody),
        openapi::SignedIn,
    ),
    security(("bearer" = [])))]
async fn export_store(
    State(state): State<AppState>,
    principal: Principal,
    Path(owner): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let owner = parse_owner(&owner)?;
    guard(&state, &principal, Resource::Export { owner: owner.clone() }, None, purpose(&headers), Ok(())).await?;
    let filename = format!("kho-{owner}.tar");
    stream_bundle(state, ExportScope::Owner(owner), filename).await
}

/// One record's evidence bundle, its document included: for the owner to hand to a third party, or an
/// officer or auditor stating a purpose.
#[utoipa::path(get, path = "/v1/records/{id}/bundle", tag = "records",
    summary = "One record's evidence bundle, its document included, to hand to a third party",
    description = "Roles: citizen (own), officer (with purpose), auditor (with purpose); logged.",
    params(openapi::IdPath, openapi::PurposeHeader),
    responses(
        (status = 200, description = "the bundle, with Content-Length", body = openapi::Binary, content_type = "application/x-tar"),
        (status = 400, description = "malformed id or purpose", body = openapi::ErrorBody),
        (status = 403, description = "denied; the attempt is recorded in the owner's access log", body = openapi::ErrorBody),
        (status = 404, description = "no such record, or no checkpoint yet", body = openapi::ErrorBody),
        (status = 503, description = "witnesses are required (fail-closed) and have not cosigned the checkpoint yet", body = openapi::ErrorBody),
        openapi::SignedIn,
    ),
    security(("bearer" = [])))]
async fn record_bundle(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = parse_record_id(&id)?;
    // The record alone decides; the bundle's gathering loads its receipt, status and the rest.
    let record = load_record_statement(&state, id).await?;
    let body = record.body();
    let resource = Resource::RecordBundle { owner: body.owner.clone(), issuer_agency: body.issuer_agency.clone() };
    guard(&state, &principal, resource, Some(id), purpose(&headers), Ok(())).await?;
    stream_bundle(state, ExportScope::Record(id), format!("kho-record-{id}.tar")).await
}

/// Gathers the evidence, then streams the archive from a blocking thread; its length is known up
/// front. A document that fails verification midway aborts the body.
async fn stream_bundle(state: AppState, scope: ExportScope, filename: String) -> Result<Response, ApiError> {
    let evidence = state.blocking(move |vault| vault.export_evidence(&scope)).await??;
    let plan = crate::evidence::BundlePlan::new(&evidence, crate::ids::now_unix_ms());
    let size = plan.size_bytes();
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(STREAM_CHUNKS_IN_FLIGHT);
    let writer_state = state.clone();
    tokio::spawn(async move {
        let _ = writer_state
            .blocking_paced(move |vault| {
                let out = ChannelWriter { sender: sender.clone(), buffer: Vec::new() };
                let open = |blake3: &Digest| -> std::io::Result<Box<dyn std::io::Read>> {
                    match vault.open_content(blake3, None) {
                        Ok(Some(reader)) => Ok(Box::new(reader)),
                        Ok(None) => Err(std::io::Error::other(format!("content {blake3} is missing"))),
                        Err(error) => Err(std::io::Error::other(error.to_string())),
                    }
                };
                let result = plan.write(out, open, |_| {}).and_then(|mut out| out.send_buffer());
                if let Err(error) = result {
                    tracing::error!(%error, "an evidence bundle stopped midway");
                    let _ = sender.blocking_send(Err(error));
                }
            })
            .await;
    });
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-tar"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    let disposition = format!("attachment; filename=\"{filename}\"");
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&disposition).map_err(|e| ApiError::internal(e.to_string()))?,
    );
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(receiver));
    Ok((StatusCode::OK, headers, body).into_response())
}

/// Bytes written on a blocking thread, sent to the response body in pieces.
struct ChannelWriter {
    sender: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    buffer: Vec<u8>,
}

impl ChannelWriter {
    const PIECE_BYTES: usize = 64 * 1024;

    fn send_buffer(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let piece = Bytes::from(std::mem::take(&mut self.buffer));
        self.sender
            .blocking_send(Ok(piece))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= Self::PIECE_BYTES {
            self.send_buffer()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// ----- certificates and trust -----

#[utoipa::path(get, path = "/v1/certificates", tag = "keys",
    summary = "Every issuer key certificate, with its revocation if any",
    description = "Roles: any signed-in caller.",
    responses((status = 200, description = "the certificates", body = CertificatesJson), openapi::SignedIn),
    security(("bearer" = [])))]
async fn list_certificates(
    State(state): State<AppState>,
    _principal: Principal,
) -> Result<Json<CertificatesJson>, ApiError> {
    let certificates = state.blocking(|vault| vault.certificates()).await??;
    Ok(Json(CertificatesJson { certificates: certificates.iter().map(json::certificate_json).collect() }))
}

#[utoipa::path(post, path = "/v1/certificates", tag = "keys",
    summary = "Add an issuer key certificate signed by a trust anchor (the body is its envelope)",
    description = "Roles: admin.",
    request_body(content = openapi::Binary, content_type = "application/octet-stream", description = "the signed certificate envelope"),
    responses(
        (status = 201, description = "added", body = json::CertificateJson),
        (status = 200, description = "added before", body = json::CertificateJson),
        (status = 400, description = "malformed certificate", body = openapi::ErrorBody),
        (status = 403, description = "not an admin", body = openapi::ErrorBody),
        (status = 409, description = "the certificate conflicts with the vault's state", body = openapi::ErrorBody),
        (status = 413, description = "body larger than the statement limit", body = openapi::ErrorBody),
        (status = 422, description = "not signed by a trust anchor", body = openapi::ErrorBody),
        openapi::SignedIn,
    ),
    security(("bearer" = [])))]
async fn add_certificate(
    State(state): State<AppState>,
    principal: Principal,
    body: Body,
) -> Result<Response, ApiError> {
    require_role(&principal, Role::Admin, "add certificates")?;
    let envelope = statement_body(&state, body).await?;
    let accepted = state.blocking(move |vault| vault.add_certificate(&envelope)).await??;
    let view = state
        .blocking(move |vault| vault.certificate(&accepted.id))
        .await??
        .ok_or_else(|| ApiError::internal("certificate vanished after acceptance"))?;
    let status = if accepted.newly_accepted { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(json::certificate_json(&view))).into_response())
}

#[utoipa::path(post, path = "/v1/certificates/{id}/revocation", tag = "keys",
    summary = "Revoke a certificate with an anchor-signed revocation (the body is its envelope)",
    description = "Roles: admin.",
    params(openapi::IdPath),
    request_body(content = openapi::Binary, content_type = "application/octet-stream", description = "the signed certificate revocation envelope"),
    responses(
        (status = 201, description = "revoked", body = json::CertificateJson),
        (status = 200, description = "this revocation was accepted before", body = json::CertificateJson),
        (status = 400, description = "malformed id or revocation, or it names another certificate", body = openapi::ErrorBody),
        (status = 403, description = "not an admin", body = openapi::ErrorBody),
        (status = 404, description = "no such certificate", body = openapi::ErrorBody),
        (status = 409, description = "already revoked", body = openapi::ErrorBody),
        (status = 413, description = "body larger than the statement limit", body = openapi::ErrorBody),
        (status = 422, description = "not signed by a trust anchor", body = openapi::ErrorBody),
        openapi::SignedIn,
    ),
    security(("bearer" = [])))]
async fn revoke_certificate(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    require_role(&principal, Role::Admin, "revoke certificates")?;
    let id = Digest::parse_hex("certificate id", &id)
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidCertificateId, e.to_string()))?;
    let envelope = statement_body(&state, body).await?;
    let revocation =
        Signed::<CertificateRevocation>::from_envelope(&envelope).map_err(crate::vault::CertificateError::from)?;
    if revocation.body().certificate != id {
        return Err(ApiError::bad_request(
            ErrorCode::CertificateMismatch,
            "the revocation names another certificate than the URL",
        ));
    }
    let accepted = state.blocking(move |vault| vault.revoke_certificate(&envelope)).await??;
    let view = state
        .blocking(move |vault| vault.certificate(&id))
        .await??
        .ok_or_else(|| ApiError::internal("certificate vanished after revocation"))?;
    let status = if accepted.newly_accepted { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(json::certificate_json(&view))).into_response())
}

#[utoipa::path(get, path = "/v1/trust-anchors", tag = "keys",
    summary = "The trust anchors' public keys, the vault's receipt key and its certificate if any",
    description = "Roles: any signed-in caller.",
    responses((status = 200, description = "the keys", body = TrustAnchorsJson), openapi::SignedIn),
    security(("bearer" = [])))]
async fn trust_anchors(State(state): State<AppState>, _principal: Principal) -> Json<TrustAnchorsJson> {
    Json(TrustAnchorsJson {
        trust_anchors: state.0.trust_anchors.iter().map(json::key_json).collect(),
        vault_key: json::key_json(&state.0.vault.public_key()),
        vault_certificate: state.0.vault.vault_certificate().map(|certificate| VaultCertificateJson {
            id: certificate.id().to_hex(),
            origin: certificate.body().origin.clone(),
            valid_from: crate::ids::format_unix_ms(certificate.body().valid_from_ms),
            valid_until: crate::ids::format_unix_ms(certificate.body().valid_until_ms),
            signer: json::key_json(certificate.signer()),
            envelope_base64: json::base64(&certificate.to_envelope()),
        }),
    })
}

#[derive(Serialize, ToSchema)]
struct CertificatesJson {
    certificates: Vec<json::CertificateJson>,
}

#[derive(Serialize, ToSchema)]
struct TrustAnchorsJson {
    trust_anchors: Vec<json::KeyJson>,
    /// The key that signs receipts and checkpoints.
    vault_key: json::KeyJson,
    vault_certificate: Option<VaultCertificateJson>,
}

/// A trust anchor's certificate of the vault key for the log's origin.
#[derive(Serialize, ToSchema)]
struct VaultCertificateJson {
    id: String,
    origin: String,
    #[schema(format = DateTime)]
    valid_from: String,
    #[schema(format = DateTime)]
    valid_until: String,
    signer: json::KeyJson,
    #[schema(format = Byte)]
    envelope_base64: String,
}

/// The trust anchor's certificate of the vault key (public, like the checkpoints it lets anyone check).
#[utoipa::path(get, path = "/v1/vault-certificate", tag = "keys",
    summary = "The trust anchor's certificate of the vault key (a signed statement envelope, kind 8): with it, receipts and checkpoints verify from the trust anchors alone",
    description = "Roles: anyone.",
    responses(
        (status = 200, description = "the certificate envelope", body = openapi::Binary, content_type = "application/octet-stream"),
        (status = 404, description = "no certificate installed", body = openapi::ErrorBody),
    ))]
async fn vault_certificate(State(state): State<AppState>) -> Result<Response, ApiError> {
    let certificate = state.0.vault.vault_certificate().ok_or_else(|| {
        ApiError::not_found(
            ErrorCode::NoVaultCertificate,
            "no trust anchor has certified this vault's key (kho certify-vault)",
        )
    })?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], certificate.to_envelope()).into_response())
}

/// Every key the vault has signed with, for auditors and log clients who knew an earlier one.
#[utoipa::path(get, path = "/v1/vault-keys", tag = "keys",
    summary = "The vault's signing keys over time: the current one and each retired one with its handover checkpoint (signed by it and by the key that followed), so a verifier that trusts one key can follow to the next",
    description = "Roles: anyone.",
    responses((status = 200, description = "the keys", body = VaultKeysJson)))]
async fn vault_keys(State(state): State<AppState>) -> Json<VaultKeysJson> {
    let vault = &state.0.vault;
    let origin = vault.log_origin().to_owned();
    let entry = |key: &crate::statement::PublicKey| VaultKeyJson {
        verifier_key: crate::log::checkpoint::verifier_key(&origin, key),
        key: json::key_json(key),
    };
    Json(VaultKeysJson {
        current: entry(&vault.public_key()),
        retired: vault
            .retired_keys()
            .iter()
            .map(|retired| RetiredVaultKeyJson {
                key: entry(&retired.key),
                until_size: retired.until_size,
                handover_note: retired.handover.clone(),
            })
            .collect(),
        origin,
    })
}

#[derive(Serialize, ToSchema)]
struct VaultKeysJson {
    /// The log's origin, which every key signs checkpoints under.
    origin: String,
    current: VaultKeyJson,
    /// Oldest first.
    retired: Vec<RetiredVaultKeyJson>,
}

#[derive(Serialize, ToSchema)]
struct VaultKeyJson {
    key: json::KeyJson,
    /// The signed-note verifier key (`origin+key id+key`), as witnesses are configured with it.
    verifier_key: String,
}

#[derive(Serialize, ToSchema)]
struct RetiredVaultKeyJson {
    #[serde(flatten)]
    key: VaultKeyJson,
    /// It receipted log entries below this size and signed checkpoints up to it.
    until_size: u64,
    /// The checkpoint at `until_size`, signed by this key and then by the key that followed.
    handover_note: String,
}

#[utoipa::path(get, path = "/v1/openapi.json", tag = "service",
    summary = "This document", description = "Roles: anyone.",
    responses((status = 200, description = "the OpenAPI document", body = Object)))]
async fn openapi_document() -> Json<Value> {
    static DOCUMENT: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    Json(DOCUMENT.get_or_init(openapi::document).clone())
}

#[utoipa::path(get, path = "/healthz", tag = "service",
    summary = "The process is alive", description = "Roles: anyone.",
    responses((status = 200, description = "ok", body = String, content_type = "text/plain")))]
async fn healthz() -> &'static str {
    "ok"
}

#[utoipa::path(get, path = "/readyz", tag = "service",
    summary = "The vault can serve (the catalog answers, no failed fsync)", description = "Roles: anyone.",
    responses((status = 200, description = "ready", body = String, content_type = "text/plain"), (status = 500, description = "not ready", body = openapi::ErrorBody)))]
async fn ready(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    state.blocking(|vault| vault.check_ready()).await??;
    Ok("ready")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, value.parse().expect("header"));
            bearer_token(&headers).map(str::to_owned)
        };
        for value in ["Bearer abc", "bearer abc", "BEARER abc", "bEaReR   abc "] {
            assert_eq!(with(value).as_deref(), Some("abc"), "{value:?}");
        }
        for value in ["Basic abc", "Bearer", "Bearer   ", "Bearerabc", "abc"] {
            assert_eq!(with(value), None, "{value:?}");
        }
    }

    fn range(value: &str, size: u64) -> Result<Option<(u64, u64)>, ()> {
        let mut headers = HeaderMap::new();
        headers.insert(header::RANGE, HeaderValue::from_str(value).expect("header"));
        parse_range(&headers, size)
    }

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(range("bytes=0-99", 1000), Ok(Some((0, 100))));
        assert_eq!(range("bytes=900-", 1000), Ok(Some((900, 1000))));
        assert_eq!(range("bytes=-100", 1000), Ok(Some((900, 1000))));
        assert_eq!(range("bytes=-5000", 1000), Ok(Some((0, 1000))));
        assert_eq!(range("bytes=990-2000", 1000), Ok(Some((990, 1000))), "the end is clamped");
        assert_eq!(range("bytes=1000-", 1000), Err(()));
        assert_eq!(range("bytes=-0", 1000), Err(()));
        assert_eq!(range("bytes=0-0", 0), Err(()));
        assert_eq!(range("bytes=5-1", 1000), Ok(None), "invalid ranges are ignored");
        assert_eq!(range("bytes=0-1,5-6", 1000), Ok(None), "several ranges: the whole document");
        assert_eq!(range("items=0-1", 1000), Ok(None));
        assert_eq!(range("bytes=abc", 1000), Ok(None));
    }

    /// Paced work is counted while it runs, its captures dropped before it is counted off, and a
    /// stopping server's wait ends when the last piece ends (or at its timeout while one still runs).
    #[test]
    fn the_wait_for_paced_work_ends_when_the_work_does() {
        let (release, released) = std::sync::mpsc::channel::<()>();
        let capture = Arc::new(());
        let held = Arc::clone(&capture);
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
        let work = spawn_paced(move || {
            let _held = held;
            released.recv().expect("released");
        });
        assert!(!paced_finished(Duration::from_millis(50)), "the work still runs");
        release.send(()).expect("the work waits");
        assert!(paced_finished(Duration::from_secs(10)), "the work ended");
        assert_eq!(Arc::strong_count(&capture), 1, "its captures were dropped first");
        runtime.block_on(work).expect("joined");
    }
}
