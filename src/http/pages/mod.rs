//! The citizen's pages: their documents, who looked at them, share links, the whole store as a
//! bundle, and the public page behind the QR code printed on a paper copy. Server-rendered from
//! templates compiled into the binary (templates/, askama, HTML-escaped), usable without JavaScript
//! (there is none), in Vietnamese first and English (`i18n`).
//!
//! Sign-in: a bearer token from the identity provider in the `Authorization` header (a single sign-on
//! gateway in front of Kho), or a session cookie set by `POST /signin` (HttpOnly, Secure, SameSite) that
//! holds the same token; in dev mode a demo citizen can be picked. Every form carries a CSRF token bound
//! to a per-browser cookie; no token ever travels in a URL except a share link's own. Every response
//! carries a strict Content-Security-Policy and the usual security headers.
//!
//! The pages decide access with the same `guard` as the API, so an attempt at another person's
//! documents is refused and lands in that person's access log. A share link's holder and a visitor
//! checking a printed result have no token; their reads are decided by `access::decide_share` and
//! recorded the same way before anything is shown.

pub mod i18n;
mod uploads;

use crate::error_code::ErrorCode;
use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;

use self::i18n::{Locale, Messages};
use super::access::{self, Decision, Resource};
use super::auth::{Principal, Role};
use super::{guard, ApiError, AppState};
use crate::ids::{now_unix_ms, Code, Date, Digest, OwnerId, Title};
use crate::statement::{Record, SecretKey};
use crate::vault::{
    AccessAction, AccessOutcome, ExportScope, Inclusion, ListFilter, RecordChecks, RecordView, Share, ShareId,
    ShareState, Status, StatusKind, SHARE_DAYS_MAX,
};

/// The session cookie: the identity provider's token, HttpOnly, never readable by a script.
const SESSION_COOKIE: &str = "__Host-kho-session";
/// A random per-browser value the CSRF tokens of forms are bound to.
const BROWSER_COOKIE: &str = "__Host-kho-browser";
const LANGUAGE_COOKIE: &str = "kho-lang";
/// Longest a session cookie lives, whatever the token's own expiry.
pub const SESSION_SECONDS_MAX: i64 = 12 * 3600;
/// Documents listed per page.
pub const DOCUMENTS_PER_PAGE: usize = 20;
/// Access log entries per page.
pub const ACCESS_ENTRIES_PER_PAGE: usize = 20;
/// Records scanned to offer the type and issuer filters.
const FILTER_OPTIONS_SCAN_MAX: usize = 500;
/// The beginning of a text document shown inline.
pub const TEXT_PREVIEW_BYTES_MAX: u64 = 32 * 1024;
/// Longest recipient description of a share.
const SHARE_RECIPIENT_CHARS_MAX: usize = 120;
/// The choices of a share's lifetime, in days.
const SHARE_DAY_CHOICES: [u32; 5] = [1, 3, 7, 14, SHARE_DAYS_MAX];
/// What the pages send besides their own type: no scripts at all, styles and images only from here.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self'; frame-src 'self'; \
     form-action 'self'; base-uri 'none'; frame-ancestors 'none'";
/// A document shown inside a page (PDF, image): framed by our own pages only; nothing else may run.
const DOCUMENT_SECURITY_POLICY: &str = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; \
     frame-ancestors 'self'";
/// Media types a browser may show inline; anything else is only ever downloaded.
const INLINE_MEDIA_TYPES: [&str; 3] = ["application/pdf", "image/jpeg", "image/png"];
/// Media types shown as text in the page (escaped).
const TEXT_MEDIA_TYPES: [&str; 4] = ["application/xml", "text/xml", "text/plain", "application/json"];
const STYLESHEET: &str = include_str!("../../../static/kho.css");
/// The subject recorded for a visitor checking a printed result.
const PRINTED_COPY_SUBJECT: &str = "printed-copy-check";

/// What the pages need besides the vault.
#[derive(Default)]
pub struct PageSettings {
    /// Signs demo sign-ins; present only in dev mode.
    pub dev_signer: Option<SecretKey>,
    /// Where people reach Kho (share links, printed QR codes); unset, the address the browser used.
    pub public_url: Option<String>,
}

/// The pages' routes (merged into the API's router).
pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/signin", get(signin_page).post(signin))
        .route("/signin/demo", post(signin_demo))
        .route("/signout", post(signout))
        .route("/language", post(language))
        .route("/documents", get(documents))
        .route("/documents/{id}", get(document))
        .route("/documents/{id}/file", get(document_file))
        .route("/documents/{id}/bundle", get(document_bundle))
        .route("/documents/{id}/qr.svg", get(document_qr))
        .route("/access", get(access_page))
        .route("/shares", get(shares_page).post(create_share))
        .route("/shares/{id}/revoke", post(revoke_share))
        .route("/shares/{id}/qr.svg", get(share_qr))
        .route("/export", get(export))
        .route("/verify/{id}", get(verify_page))
        .route("/s/{token}", get(shared_page))
        .route("/s/{token}/file", get(shared_file))
        .route("/static/kho.css", get(stylesheet))
        .merge(uploads::router())
}

// ----- every response: security headers and the browser cookie -----

/// The per-browser value of a request (from its cookie, or new).
#[derive(Clone)]
struct BrowserId(String);

/// Adds the security headers to every page and makes sure the browser has its CSRF cookie.
pub(super) async fn page_headers(mut request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let existing = cookie(request.headers(), BROWSER_COOKIE)
        .filter(|value| value.len() == 32 && value.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_owned);
    let is_new = existing.is_none();
    let browser = existing.unwrap_or_else(|| {
        let mut bytes = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
        hex::encode(bytes)
    });
    request.extensions_mut().insert(BrowserId(browser.clone()));
    let mut response = next.run(request).await;
    if is_new {
        set_cookie(&mut response, &format!("{BROWSER_COOKIE}={browser}; Path=/; HttpOnly; Secure; SameSite=Strict"));
    }
    let headers = response.headers_mut();
    let defaults: [(HeaderName, &str); 8] = [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        // Share links carry their token in the path: never send it anywhere else.
        (header::REFERRER_POLICY, "no-referrer"),
        (HeaderName::from_static("cross-origin-opener-policy"), "same-origin"),
        (HeaderName::from_static("permissions-policy"), "camera=(), microphone=(), geolocation=(), interest-cohort=()"),
        (header::STRICT_TRANSPORT_SECURITY, "max-age=31536000"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    for (name, value) in defaults {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    response
}

/// Adds a `Set-Cookie` header (the cookies here are made of names, hex and token characters only).
fn set_cookie(response: &mut Response, cookie: &str) {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// The value of cookie `name`, if the request has it.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

// ----- the request as the pages see it -----

/// Who is asking, in which language, and the CSRF token their forms carry.
struct Ctx {
    t: Messages,
    csrf: blake3::Hash,
    principal: Option<Principal>,
    /// A session cookie was sent but is no longer valid (expired, or the keys changed).
    session_ended: bool,
    path: String,
    /// The scheme and host links are built on.
    origin: String,
    dev: bool,
}

impl FromRequestParts<AppState> for Ctx {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let headers = &parts.headers;
        let locale = Locale::choose(cookie(headers, LANGUAGE_COOKIE));
        let t = Messages { locale, utc_offset_minutes: state.vault().config().utc_offset_minutes };
        let browser = parts.extensions.get::<BrowserId>().map(|b| b.0.clone()).unwrap_or_default();
        let csrf = blake3::keyed_hash(&state.0.csrf_key, browser.as_bytes());
        let bearer = super::bearer_token(headers);
        let session = cookie(headers, SESSION_COOKIE);
        let verified = match bearer.or(session) {
            Some(token) => Some(state.0.auth.authenticate(token).await),
            None => None,
        };
        let session_ended = matches!(verified, Some(Err(_))) && bearer.is_none();
        let principal = verified.and_then(Result::ok);
        let origin = match &state.0.pages.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => {
                let host = headers
                    .get(header::HOST)
                    .and_then(|v| v.to_str().ok())
                    .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b".:-[]".contains(&b)))
                    .unwrap_or("localhost");
                format!("http://{host}")
            }
        };
        Ok(Ctx {
            t,
            csrf,
            principal,
            session_ended,
            path: parts.uri.path().to_owned(),
            origin,
            dev: state.0.pages.dev_signer.is_some(),
        })
    }
}

/// Why a page could not be shown.
enum PageError {
    /// Not signed in: go to the sign-in page.
    SignIn,
    /// A status with a catalogue key and, for the curious, the precise reason.
    Show { status: StatusCode, key: &'static str, detail: String },
}

impl PageError {
    fn show(status: StatusCode, key: &'static str) -> PageError {
        PageError::Show { status, key, detail: String::new() }
    }
    fn not_found() -> PageError {
        PageError::show(StatusCode::NOT_FOUND, "error.not_found")
    }
}

impl From<ApiError> for PageError {
    fn from(error: ApiError) -> Self {
        PageError::Show {
            status: error.status,
            key: "error.generic",
            detail: format!("{}: {}", error.code, error.message),
        }
    }
}

impl From<crate::vault::StorageError> for PageError {
    fn from(error: crate::vault::StorageError) -> Self {
        ApiError::from(error).into()
    }
}

impl From<askama::Error> for PageError {
    fn from(error: askama::Error) -> Self {
        ApiError::internal(format!("page template: {error}")).into()
    }
}

type PageResult = Result<Response, PageError>;

impl Ctx {
    fn chrome(&self, title_key: &'static str) -> Chrome {
        Chrome {
            t: self.t,
            csrf: self.csrf.to_hex().to_string(),
            user: self.principal.as_ref().and_then(|p| p.owner.as_ref()).map(ToString::to_string),
            path: self.path.clone(),
            title: self.t.get(title_key).to_owned(),
        }
    }

    /// The signed-in citizen (or organization) and their store.
    fn owner(&self) -> Result<(&Principal, OwnerId), PageError> {
        let principal = self.principal.as_ref().ok_or(PageError::SignIn)?;
        match (&principal.role, &principal.owner) {
            (Role::Citizen, Some(owner)) => Ok((principal, owner.clone())),
            _ => Err(PageError::show(StatusCode::FORBIDDEN, "error.citizens_only")),
        }
    }

    /// Refuses a form without this browser's CSRF token, or sent from another site.
    fn check_form(&self, headers: &HeaderMap, token: &str) -> Result<(), PageError> {
        let cross_site = headers.get("sec-fetch-site").is_some_and(|v| v.as_bytes() == b"cross-site");
        let matches = blake3::Hash::from_hex(token).is_ok_and(|token| token == self.csrf);
        if cross_site || !matches {
            return Err(PageError::show(StatusCode::FORBIDDEN, "error.csrf"));
        }
        Ok(())
    }

    /// The page, or the error page in the visitor's language.
    fn respond(&self, result: PageResult) -> Response {
        match result {
            Ok(response) => response,
            Err(PageError::SignIn) => Redirect::to("/signin").into_response(),
            Err(PageError::Show { status, key, detail }) => {
                let page =
                    ErrorPage { chrome: self.chrome("error.title"), message: self.t.get(key).to_owned(), detail };
                let mut response = html(&page).unwrap_or_else(|_| status.into_response());
                *response.status_mut() = status;
                response
            }
        }
    }
}

fn html(page: &impl Template) -> PageResult {
    let body = page.render()?;
    Ok(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response())
}

/// Redirect after a form, to a path on this site only.
fn back_to(path: &str) -> Response {
    let safe = path.starts_with('/') && !path.starts_with("//") && !path.contains('\\');
    Redirect::to(if safe { path } else { "/" }).into_response()
}

// ----- templates -----

/// What every page shows around its content.
struct Chrome {
    t: Messages,
    csrf: String,
    /// The signed-in owner id.
    user: Option<String>,
    path: String,
    title: String,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    chrome: Chrome,
    message: String,
    detail: String,
}

#[derive(Template)]
#[template(path = "signin.html")]
struct SignInPage {
    chrome: Chrome,
    dev: bool,
    demo_owner: &'static str,
    session_ended: bool,
}

/// One document in a list.
struct DocumentRow {
    id: String,
    title: String,
    document_type: String,
    issuer: String,
    issued_on: String,
    status: &'static str,
    status_label: String,
}

#[derive(Template)]
#[template(path = "documents.html")]
struct DocumentsPage {
    chrome: Chrome,
    rows: Vec<DocumentRow>,
    types: Vec<Choice>,
    issuers: Vec<Choice>,
    statuses: Vec<Choice>,
    query: DocumentsQuery,
    next: Option<String>,
    filtered: bool,
}

/// One option of a select.
struct Choice {
    value: String,
    label: String,
    selected: bool,
}

fn choices(values: impl IntoIterator<Item = (String, String)>, selected: &str) -> Vec<Choice> {
    values.into_iter().map(|(value, label)| Choice { selected: value == selected, value, label }).collect()
}

/// A labelled value.
struct Field {
    label: String,
    value: String,
}

/// A check in plain words.
struct CheckLine {
    passed: bool,
    text: String,
}

enum Viewer {
    Frame,
    Image,
    Text(String),
    None,
}

#[derive(Template)]
#[template(path = "document.html")]
struct DocumentPage {
    chrome: Chrome,
    id: String,
    title: String,
    status: &'static str,
    status_label: String,
    status_detail: String,
    fields: Vec<Field>,
    certificate: Vec<Field>,
    checks: Vec<CheckLine>,
    verdict: String,
    verified: bool,
    viewer: Viewer,
    verify_url: String,
}

struct AccessRow {
    when: String,
    who: String,
    agency: String,
    purpose: String,
    document: Option<(String, String)>,
    action: String,
    allowed: bool,
    outcome: String,
}

#[derive(Template)]
#[template(path = "access.html")]
struct AccessPage {
    chrome: Chrome,
    rows: Vec<AccessRow>,
    completeness: String,
    complete: bool,
    next: Option<String>,
}

#[derive(Clone)]
struct ShareRow {
    id: String,
    document: String,
    recipient: String,
    created: String,
    expires: String,
    state: &'static str,
    state_label: String,
    active: bool,
    url: String,
}

#[derive(Template)]
#[template(path = "shares.html")]
struct SharesPage {
    chrome: Chrome,
    created: Option<ShareRow>,
    rows: Vec<ShareRow>,
    documents: Vec<Choice>,
    days: Vec<Choice>,
}

#[derive(Template)]
#[template(path = "verify.html")]
struct VerifyPage {
    chrome: Chrome,
    found: bool,
    verified: bool,
    verdict: String,
    status: &'static str,
    status_label: String,
    fields: Vec<Field>,
    checks: Vec<CheckLine>,
    /// The holder of a share link sees the document itself.
    shared: Option<SharedView>,
}

struct SharedView {
    owner: String,
    expires: String,
    file_url: String,
    viewer: Viewer,
}

// ----- sign-in -----

async fn home(ctx: Ctx) -> Response {
    match ctx.principal {
        Some(_) => Redirect::to("/documents").into_response(),
        None => Redirect::to("/signin").into_response(),
    }
}

async fn signin_page(ctx: Ctx) -> Response {
    let page = SignInPage {
        chrome: ctx.chrome("page.signin"),
        dev: ctx.dev,
        demo_owner: crate::sample::DEMO_OWNER,
        session_ended: ctx.session_ended,
    };
    ctx.respond(html(&page))
}

#[derive(Deserialize)]
struct SignInForm {
    csrf: String,
    token: String,
}

/// Sets the session cookie from an identity provider's token.
async fn signin(State(state): State<AppState>, ctx: Ctx, headers: HeaderMap, form: Form<SignInForm>) -> Response {
    let result = (|| {
        ctx.check_form(&headers, &form.csrf)?;
        let token = form.token.trim();
        let principal = state.0.auth.verify(token).map_err(|error| PageError::Show {
            status: StatusCode::UNAUTHORIZED,
            key: "error.signin_failed",
            detail: error.to_string(),
        })?;
        session_response(&principal, token)
    })();
    ctx.respond(result)
}

#[derive(Deserialize)]
struct DemoForm {
    csrf: String,
    owner: String,
}

/// Dev mode only: signs in as any citizen id with a token from the dev key.
async fn signin_demo(State(state): State<AppState>, ctx: Ctx, headers: HeaderMap, form: Form<DemoForm>) -> Response {
    let result = (|| {
        let signer = state.0.pages.dev_signer.as_ref().ok_or_else(PageError::not_found)?;
        ctx.check_form(&headers, &form.csrf)?;
        let owner = OwnerId::parse(form.owner.trim()).map_err(|error| PageError::Show {
            status: StatusCode::BAD_REQUEST,
            key: "error.bad_owner",
            detail: error.to_string(),
        })?;
        let now = now_unix_ms() / 1000;
        let claims = super::auth::Claims {
            iss: crate::config::DEV_TOKEN_ISSUER.into(),
            aud: super::auth::Audience::One(state.0.auth.dev_audience().unwrap_or("kho").to_owned()),
            sub: format!("demo-citizen-{owner}"),
            exp: now + SESSION_SECONDS_MAX,
            nbf: Some(now),
            iat: Some(now),
            role: Role::Citizen,
            agency: None,
            owner: Some(owner.to_string()),
        };
        let token = super::auth::mint(&claims, signer);
        let principal = state.0.auth.verify(&token).map_err(ApiError::from)?;
        session_response(&principal, &token)
    })();
    ctx.respond(result)
}

fn session_response(principal: &Principal, token: &str) -> PageResult {
    if principal.role != Role::Citizen || principal.owner.is_none() {
        return Err(PageError::show(StatusCode::FORBIDDEN, "error.citizens_only"));
    }
    let seconds = (principal.expires_at - now_unix_ms() / 1000).clamp(0, SESSION_SECONDS_MAX);
    // A verified token is base64url and dots only, so it always makes a valid header value.
    let mut response = Redirect::to("/documents").into_response();
    set_cookie(
        &mut response,
        &format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly; Secure; SameSite=Lax; Max-Age={seconds}"),
    );
    Ok(response)
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn signout(ctx: Ctx, headers: HeaderMap, form: Form<CsrfForm>) -> Response {
    let result = ctx.check_form(&headers, &form.csrf).map(|()| {
        let mut response = Redirect::to("/signin").into_response();
        set_cookie(&mut response, &format!("{SESSION_COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Lax; Max-Age=0"));
        response
    });
    ctx.respond(result)
}

#[derive(Deserialize)]
struct LanguageForm {
    csrf: String,
    lang: String,
    back: String,
}

async fn language(ctx: Ctx, headers: HeaderMap, form: Form<LanguageForm>) -> Response {
    let result = (|| {
        ctx.check_form(&headers, &form.csrf)?;
        let locale =
            Locale::parse(&form.lang).ok_or_else(|| PageError::show(StatusCode::BAD_REQUEST, "error.generic"))?;
        let mut response = back_to(&form.back);
        set_cookie(
            &mut response,
            &format!("{LANGUAGE_COOKIE}={}; Path=/; Secure; SameSite=Lax; Max-Age=31536000", locale.code()),
        );
        Ok(response)
    })();
    ctx.respond(result)
}

// ----- my documents -----

#[derive(Debug, Clone, Default, Deserialize)]
struct DocumentsQuery {
    #[serde(default)]
    q: String,
    #[serde(default, rename = "type")]
    document_type: String,
    #[serde(default)]
    issuer: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    cursor: String,
}

impl DocumentsQuery {
    fn filter(&self) -> Result<ListFilter, PageError> {
        let bad = |detail: String| PageError::Show { status: StatusCode::BAD_REQUEST, key: "error.bad_filter", detail };
        let code = |field: &'static str, text: &str| {
            (!text.is_empty()).then(|| Code::parse(field, text)).transpose().map_err(|e| bad(e.to_string()))
        };
        let date =
            |text: &str| (!text.is_empty()).then(|| Date::parse(text)).transpose().map_err(|e| bad(e.to_string()));
        let status = match self.status.as_str() {
            "" => None,
            other => Some(
                serde_json::from_value::<StatusKind>(serde_json::Value::String(other.to_owned()))
                    .map_err(|e| bad(e.to_string()))?,
            ),
        };
        Ok(ListFilter {
            document_type: code("type", &self.document_type)?,
            issuer_agency: code("issuer", &self.issuer)?,
            status,
            issued_from: date(&self.from)?,
            issued_until: date(&self.to)?,
            title_contains: (!self.q.trim().is_empty()).then(|| self.q.trim().chars().take(100).collect()),
        })
    }

    /// The query string of these filters with another cursor.
    fn with_cursor(&self, cursor: &str) -> String {
        let pairs = [
            ("q", &self.q),
            ("type", &self.document_type),
            ("issuer", &self.issuer),
            ("status", &self.status),
            ("from", &self.from),
            ("to", &self.to),
        ];
        let mut query: Vec<String> =
            pairs.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| format!("{k}={}", percent(v))).collect();
        query.push(format!("cursor={}", percent(cursor)));
        format!("?{}", query.join("&"))
    }
}

/// Percent-encodes a query value (everything but unreserved characters).
fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

fn status_label(t: &Messages, key: &str) -> String {
    t.get(&format!("status.{key}")).to_owned()
}

async fn documents(
    State(state): State<AppState>,
    ctx: Ctx,
    query: Result<Query<DocumentsQuery>, QueryRejection>,
) -> Response {
    let result = async {
        let (principal, owner) = ctx.owner()?;
        let query = query.map(|Query(q)| q).unwrap_or_default();
        let filter = query.filter()?;
        let cursor = (!query.cursor.is_empty()).then(|| query.cursor.clone());
        crate::vault::check_page(cursor.as_deref(), DOCUMENTS_PER_PAGE).map_err(ApiError::from)?;
        guard(&state, principal, Resource::OwnerRecords { owner: owner.clone() }, None, Ok(None), Ok(())).await?;
        let (page, options) = state
            .blocking(move |vault| {
                let page = vault.list_owner(&owner, &filter, cursor.as_deref(), DOCUMENTS_PER_PAGE)?;
                let all = vault.list_owner(&owner, &ListFilter::default(), None, FILTER_OPTIONS_SCAN_MAX)?;
                Ok::<_, ApiError>((page, all.records))
            })
            .await??;
        let t = &ctx.t;
        let rows = page.records.iter().map(|view| document_row(t, view)).collect();
        let mut types: Vec<String> = options.iter().map(|v| v.record.body().document_type.to_string()).collect();
        let mut issuers: Vec<String> = options.iter().map(|v| v.record.body().issuer_agency.to_string()).collect();
        for list in [&mut types, &mut issuers] {
            list.sort();
            list.dedup();
        }
        let statuses =
            ["valid", "not_yet_valid", "expired", "revoked", "superseded", "self_uploaded", "certified_copy"]
                .into_iter()
                .map(|key| (key.to_owned(), status_label(t, key)));
        let next = page.next_cursor.as_deref().map(|cursor| query.with_cursor(cursor));
        let filtered = [&query.q, &query.document_type, &query.issuer, &query.status, &query.from, &query.to]
            .iter()
            .any(|value| !value.is_empty());
        html(&DocumentsPage {
            chrome: ctx.chrome("page.documents"),
            rows,
            types: choices(types.into_iter().map(|v| (v.clone(), v)), &query.document_type),
            issuers: choices(issuers.into_iter().map(|v| (v.clone(), v)), &query.issuer),
            statuses: choices(statuses, &query.status),
            query,
            next,
            filtered,
        })
    }
    .await;
    ctx.respond(result)
}

fn document_row(t: &Messages, view: &RecordView) -> DocumentRow {
    let body = view.record.body();
    let status = view.status.kind().as_str();
    let (document_type, issuer) = shown_type_and_issuer(t, view);
    DocumentRow {
        id: view.id().to_hex(),
        title: body.title.to_string(),
        document_type,
        issuer,
        issued_on: t.date(&body.issued_on),
        status,
        status_label: status_label(t, status),
    }
}

/// A record's type and issuer as people read them: an upload is "a scan", "uploaded by you" or certified
/// by its agency, not the reserved code.
fn shown_type_and_issuer(t: &Messages, view: &RecordView) -> (String, String) {
    let body = view.record.body();
    if !body.is_self_upload() {
        return (body.document_type.to_string(), body.issuer_agency.to_string());
    }
    match &view.status {
        Status::CertifiedCopy { agency, original_type, .. } => {
            (original_type.to_string(), t.fill1("upload.certified_by", agency))
        }
        _ => (t.get("upload.type").to_owned(), t.get("upload.by_owner").to_owned()),
    }
}

// ----- one document -----

fn parse_id(text: &str) -> Result<Digest, PageError> {
    Digest::parse_hex("record id", text).map_err(|_| PageError::not_found())
}

async fn load(state: &AppState, id: Digest) -> Result<RecordView, PageError> {
    state.blocking(move |vault| vault.record(&id)).await??.ok_or_else(PageError::not_found)
}

/// The document's fields, for its owner or a share's holder.
fn record_fields(t: &Messages, view: &RecordView) -> Vec<Field> {
    let body = view.record.body();
    let receipt = view.receipt.body();
    let field = |key: &str, value: String| Field { label: t.get(key).to_owned(), value };
    let (document_type, issuer) = shown_type_and_issuer(t, view);
    let mut fields = vec![
        field("doc.type", document_type),
        field("doc.issuer", issuer),
        field("doc.issued_on", t.date(&body.issued_on)),
        field("doc.valid_from", t.date(&body.valid_from)),
        field("doc.valid_until", body.valid_until.map_or_else(|| t.get("doc.no_expiry").to_owned(), |d| t.date(&d))),
        field("doc.procedure", body.procedure.to_string()),
        field("doc.dossier", body.dossier.to_string()),
        field("doc.media_type", body.media_type.to_string()),
        field("doc.size", t.size(body.size_bytes)),
        field("doc.received", t.datetime(receipt.accepted_at_ms)),
        field("doc.record_id", view.id().to_hex()),
        field("doc.sha256", body.sha256.to_hex()),
    ];
    if let Some(superseded) = &body.supersedes {
        fields.push(field("doc.supersedes", superseded.to_hex()));
    }
    if let Status::CertifiedCopy { original, original_type, officer, certification, .. } = &view.status {
        fields.push(field("doc.original", format!("{original} ({original_type})")));
        fields.push(field("doc.certifying_officer", officer.clone()));
        fields.push(field("doc.certification_id", certification.to_hex()));
    }
    fields
}

fn status_detail(t: &Messages, status: &Status) -> String {
    match status {
        Status::Revoked { reason, revoked_at_ms, .. } => {
            t.fill2("status.revoked_detail", t.datetime(*revoked_at_ms), reason)
        }
        Status::Superseded { by } => t.fill1("status.superseded_detail", by),
        Status::SelfUploaded => t.get("status.self_uploaded_detail").to_owned(),
        Status::CertifiedCopy { agency, certified_at_ms, .. } => {
            t.fill2("status.certified_copy_detail", agency, t.datetime(*certified_at_ms))
        }
        _ => String::new(),
    }
}

/// The checks in plain words, and one sentence that sums them up.
fn check_lines(t: &Messages, view: &RecordView, checks: &RecordChecks) -> (Vec<CheckLine>, String) {
    let body = view.record.body();
    let receipt = view.receipt.body();
    let signature = match &checks.signature {
        Ok(()) if body.is_self_upload() => t.fill1("check.signature_self_upload", t.datetime(receipt.accepted_at_ms)),
        Ok(()) => t.fill2("check.signature_ok", &body.issuer_agency, t.datetime(receipt.accepted_at_ms)),
        Err(reason) => t.fill1("check.signature_failed", reason),
    };
    let receipt_line = match &checks.receipt {
        Ok(()) => t.fill2("check.receipt_ok", receipt.log_index, t.datetime(receipt.accepted_at_ms)),
        Err(reason) => t.fill1("check.receipt_failed", reason),
    };
    let (included, inclusion) = match &checks.inclusion {
        Inclusion::Proven { checkpoint_size } => {
            (true, t.fill2("check.inclusion_ok", receipt.log_index, t.number(*checkpoint_size)))
        }
        Inclusion::Pending => (false, t.get("check.inclusion_pending").to_owned()),
        Inclusion::Failed(reason) => (false, t.fill1("check.inclusion_failed", reason)),
    };
    let mut lines = vec![
        CheckLine { passed: checks.signature.is_ok(), text: signature },
        CheckLine { passed: checks.receipt.is_ok(), text: receipt_line },
        CheckLine { passed: included, text: inclusion },
    ];
    if let Some(validation) = &view.signature {
        let v = validation.body();
        let mut text =
            t.fill2("check.x509_signed", &v.signer, &v.root_subject).replace("{2}", &t.datetime(v.decided_at_ms));
        if let crate::statement::ValidationBasis::Timestamp { authority, .. } = &v.basis {
            text = format!("{text} {}", t.fill1("check.x509_timestamped", authority));
        }
        lines.push(CheckLine { passed: true, text });
    }
    if let Status::CertifiedCopy { agency, certified_at_ms, .. } = &view.status {
        lines.push(CheckLine {
            passed: true,
            text: t.fill2("check.certified_copy", agency, t.datetime(*certified_at_ms)),
        });
    }
    let verdict = if checks.signature.is_ok() && checks.receipt.is_ok() && view.status == Status::SelfUploaded {
        t.get("check.verdict_self_upload")
    } else if checks.all_passed() {
        t.get("check.verdict_ok")
    } else if checks.signature.is_ok() && checks.receipt.is_ok() && checks.inclusion == Inclusion::Pending {
        t.get("check.verdict_pending")
    } else {
        t.get("check.verdict_failed")
    };
    (lines, verdict.to_owned())
}

fn certificate_fields(t: &Messages, checks: &RecordChecks) -> Vec<Field> {
    let Some(certificate) = &checks.certificate else { return Vec::new() };
    let body = certificate.body();
    let field = |key: &str, value: String| Field { label: t.get(key).to_owned(), value };
    vec![
        field("doc.certificate_id", certificate.id().to_hex()),
        field("doc.certificate_agency", body.agency.to_string()),
        field(
            "doc.certificate_valid",
            t.fill2("doc.certificate_window", t.datetime(body.valid_from_ms), t.datetime(body.valid_until_ms)),
        ),
        field("doc.signer_key", body.subject.fingerprint().to_hex()),
        field("doc.anchor_key", certificate.signer().fingerprint().to_hex()),
    ]
}

/// How the document is shown inside its page.
async fn viewer(state: &AppState, body: &Record) -> Result<Viewer, PageError> {
    let media_type = body.media_type.as_str();
    if media_type == "application/pdf" {
        return Ok(Viewer::Frame);
    }
    if INLINE_MEDIA_TYPES.contains(&media_type) {
        return Ok(Viewer::Image);
    }
    if !TEXT_MEDIA_TYPES.contains(&media_type) || body.size_bytes == 0 {
        return Ok(Viewer::None);
    }
    let blake3 = body.blake3;
    let end = body.size_bytes.min(TEXT_PREVIEW_BYTES_MAX);
    let bytes = state
        .blocking(move |vault| {
            let mut reader = vault.open_content(&blake3, Some((0, end)))?.ok_or_else(|| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::IntegrityError, "content missing")
            })?;
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut reader, &mut bytes).map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::IntegrityError, e.to_string())
            })?;
            Ok::<_, ApiError>(bytes)
        })
        .await??;
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    if end < body.size_bytes {
        text.push_str("\n…");
    }
    Ok(Viewer::Text(text))
}

async fn document(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> Response {
    let result = async {
        let (principal, _) = ctx.owner()?;
        let id = parse_id(&id)?;
        let view = load(&state, id).await?;
        let body = view.record.body().clone();
        let resource = Resource::Record { owner: body.owner.clone(), issuer_agency: body.issuer_agency.clone() };
        guard(&state, principal, resource, Some(id), Ok(None), Ok(())).await?;
        let checked = view.clone();
        let checks = state.blocking(move |vault| vault.check_record(&checked)).await??;
        let t = &ctx.t;
        let (lines, verdict) = check_lines(t, &view, &checks);
        let status = view.status.kind().as_str();
        let page = DocumentPage {
            chrome: ctx.chrome("page.document"),
            id: id.to_hex(),
            title: body.title.to_string(),
            status,
            status_label: status_label(t, status),
            status_detail: status_detail(t, &view.status),
            fields: record_fields(t, &view),
            certificate: certificate_fields(t, &checks),
            verified: checks.all_passed() && view.status != Status::SelfUploaded,
            checks: lines,
            verdict,
            viewer: viewer(&state, &body).await?,
            verify_url: crate::qr::verification_url(&ctx.origin, &id),
        };
        html(&page)
    }
    .await;
    ctx.respond(result)
}

#[derive(Deserialize)]
struct FileQuery {
    #[serde(default)]
    download: Option<String>,
}

/// The document's bytes for its owner: inline for the types a browser shows safely, else a download.
async fn document_file(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<FileQuery>, QueryRejection>,
) -> Response {
    let result = async {
        let (principal, _) = ctx.owner()?;
        let id = parse_id(&id)?;
        let view = load(&state, id).await?;
        let body = view.record.body();
        let resource = Resource::Content { owner: body.owner.clone(), issuer_agency: body.issuer_agency.clone() };
        guard(&state, principal, resource, Some(id), Ok(None), Ok(())).await?;
        let download = query.is_ok_and(|Query(q)| q.download.is_some());
        file_response(&state, body, &headers, download).await
    }
    .await;
    ctx.respond(result)
}

async fn file_response(state: &AppState, body: &Record, headers: &HeaderMap, download: bool) -> PageResult {
    let mut response = super::send_content(state, body, headers).await?;
    let media_type = body.media_type.as_str();
    let inline = !download && INLINE_MEDIA_TYPES.contains(&media_type);
    let extension = match media_type {
        "application/pdf" => "pdf",
        "image/jpeg" => "jpg",
        "image/png" => "png",
        "application/xml" | "text/xml" => "xml",
        "application/json" => "json",
        "text/plain" => "txt",
        _ => "bin",
    };
    let disposition = format!(
        "{}; filename=\"kho-{}.{extension}\"",
        if inline { "inline" } else { "attachment" },
        &body.blake3.to_hex()[..16]
    );
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(DOCUMENT_SECURITY_POLICY));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("SAMEORIGIN"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    Ok(response)
}

async fn document_bundle(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> Response {
    let result = async {
        let (principal, _) = ctx.owner()?;
        let id = parse_id(&id)?;
        let view = load(&state, id).await?;
        let body = view.record.body();
        let resource = Resource::RecordBundle { owner: body.owner.clone(), issuer_agency: body.issuer_agency.clone() };
        guard(&state, principal, resource, Some(id), Ok(None), Ok(())).await?;
        Ok(super::stream_bundle(state, ExportScope::Record(id), format!("kho-record-{id}.tar")).await?)
    }
    .await;
    ctx.respond(result)
}

/// The QR code of the document's public verification page, to print on a paper copy.
async fn document_qr(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> Response {
    let result = async {
        let (principal, _) = ctx.owner()?;
        let id = parse_id(&id)?;
        let view = load(&state, id).await?;
        let body = view.record.body();
        let resource = Resource::Record { owner: body.owner.clone(), issuer_agency: body.issuer_agency.clone() };
        guard(&state, principal, resource, Some(id), Ok(None), Ok(())).await?;
        svg_response(&crate::qr::verification_url(&ctx.origin, &id))
    }
    .await;
    ctx.respond(result)
}

fn svg_response(text: &str) -> PageResult {
    let svg = crate::qr::svg(text).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response())
}

async fn export(State(state): State<AppState>, ctx: Ctx) -> Response {
    let result = async {
        let (principal, owner) = ctx.owner()?;
        guard(&state, principal, Resource::Export { owner: owner.clone() }, None, Ok(None), Ok(())).await?;
        let filename = format!("kho-{owner}.tar");
        Ok(super::stream_bundle(state, ExportScope::Owner(owner), filename).await?)
    }
    .await;
    ctx.respond(result)
}

// ----- who looked at my documents -----

#[derive(Deserialize)]
struct AccessQuery {
    #[serde(default)]
    cursor: Option<String>,
}

async fn access_page(
    State(state): State<AppState>,
    ctx: Ctx,
    query: Result<Query<AccessQuery>, QueryRejection>,
) -> Response {
    let result = async {
        let (principal, owner) = ctx.owner()?;
        let cursor = query.ok().and_then(|Query(q)| q.cursor).filter(|c| !c.is_empty());
        crate::vault::check_page(cursor.as_deref(), ACCESS_ENTRIES_PER_PAGE).map_err(ApiError::from)?;
        guard(&state, principal, Resource::AccessLog { owner: owner.clone() }, None, Ok(None), Ok(())).await?;
        let (page, titles, shares, completeness) = state
            .blocking(move |vault| {
                let page = vault.access_log(&owner, cursor.as_deref(), ACCESS_ENTRIES_PER_PAGE)?;
                let mut titles = std::collections::HashMap::new();
                for record in page.entries.iter().filter_map(|(_, event)| event.record) {
                    if let std::collections::hash_map::Entry::Vacant(slot) = titles.entry(record) {
                        slot.insert(vault.record(&record)?.map(|view| view.record.body().title.to_string()));
                    }
                }
                let shares: std::collections::HashMap<String, String> = vault
                    .shares(&owner)?
                    .into_iter()
                    .map(|share| (format!("share:{}", share.id), share.recipient.to_string()))
                    .collect();
                let completeness = vault.check_completeness(&owner)?;
                Ok::<_, ApiError>((page, titles, shares, completeness))
            })
            .await??;
        let t = &ctx.t;
        let rows = page
            .entries
            .iter()
            .map(|(_, event)| {
                let who = match event.role.as_str() {
                    access::SHARE_HOLDER_ROLE => t.fill1(
                        "access.share_holder",
                        shares.get(&event.subject).map_or(event.subject.as_str(), String::as_str),
                    ),
                    access::PUBLIC_ROLE => t.get("access.public").to_owned(),
                    role => format!("{} ({})", event.subject, t.get(&format!("access.role_{role}"))),
                };
                let (allowed, outcome) = match &event.outcome {
                    AccessOutcome::Allowed => (true, t.get("outcome.allowed").to_owned()),
                    AccessOutcome::Denied { reason } => (false, t.fill1("outcome.denied", reason)),
                };
                AccessRow {
                    when: t.datetime(event.at_ms),
                    who,
                    agency: event.agency.as_ref().map(ToString::to_string).unwrap_or_default(),
                    purpose: event.purpose.as_ref().map(ToString::to_string).unwrap_or_default(),
                    document: event.record.map(|record| {
                        let title =
                            titles.get(&record).cloned().flatten().unwrap_or_else(|| record.to_hex()[..12].to_owned());
                        (record.to_hex(), title)
                    }),
                    action: t.get(&format!("action.{}", event.action.as_str())).to_owned(),
                    allowed,
                    outcome,
                }
            })
            .collect();
        let (complete, completeness) = match completeness {
            None => (false, t.get("access.complete_pending").to_owned()),
            Some(Ok(checked)) => {
                (true, t.fill2("access.complete_ok", t.datetime(checked.through_ms), t.number(checked.entries)))
            }
            Some(Err(reason)) => (false, t.fill1("access.complete_failed", reason)),
        };
        let next = page.next_cursor.map(|cursor| format!("?cursor={}", percent(&cursor)));
        html(&AccessPage { chrome: ctx.chrome("page.access"), rows, completeness, complete, next })
    }
    .await;
    ctx.respond(result)
}

// ----- sharing -----

#[derive(Deserialize)]
struct SharesQuery {
    #[serde(default)]
    record: Option<String>,
    #[serde(default)]
    created: Option<String>,
}

fn share_url(ctx: &Ctx, token: &str) -> String {
    format!("{}/s/{token}", ctx.origin)
}

fn share_row(ctx: &Ctx, share: &Share, title: String, token: String, now_ms: i64) -> ShareRow {
    let t = &ctx.t;
    let state = match share.state(now_ms) {
        ShareState::Active => "active",
        ShareState::Expired => "expired",
        ShareState::Revoked => "revoked",
    };
    ShareRow {
        id: share.id.to_hex(),
        document: title,
        recipient: share.recipient.to_string(),
        created: t.datetime(share.created_at_ms),
        expires: t.datetime(share.expires_at_ms),
        state,
        state_label: t.get(&format!("share.state_{state}")).to_owned(),
        active: state == "active",
        url: share_url(ctx, &token),
    }
}

async fn shares_page(
    State(state): State<AppState>,
    ctx: Ctx,
    query: Result<Query<SharesQuery>, QueryRejection>,
) -> Response {
    let result = async {
        let (principal, owner) = ctx.owner()?;
        guard(&state, principal, Resource::OwnerRecords { owner: owner.clone() }, None, Ok(None), Ok(())).await?;
        let (selected, created) = query.map(|Query(q)| (q.record.unwrap_or_default(), q.created)).unwrap_or_default();
        let (shares, documents) = state
            .blocking(move |vault| {
                let records = vault.list_owner(&owner, &ListFilter::default(), None, FILTER_OPTIONS_SCAN_MAX)?.records;
                let shares = vault.shares(&owner)?;
                let shares: Vec<(Share, String)> = shares
                    .into_iter()
                    .map(|share| {
                        let token = vault.share_token(share.id);
                        (share, token)
                    })
                    .collect();
                Ok::<_, ApiError>((shares, records))
            })
            .await??;
        let now = now_unix_ms();
        let title_of = |record: &Digest| {
            documents
                .iter()
                .find(|view| &view.id() == record)
                .map_or_else(|| record.to_hex()[..12].to_owned(), |view| view.record.body().title.to_string())
        };
        let rows: Vec<ShareRow> = shares
            .iter()
            .map(|(share, token)| share_row(&ctx, share, title_of(&share.record), token.clone(), now))
            .collect();
        let created = created.and_then(|id| rows.iter().find(|row| row.id == id && row.active)).cloned();
        let documents = documents
            .iter()
            .filter(|view| matches!(view.status, Status::Valid))
            .map(|view| (view.id().to_hex(), view.record.body().title.to_string()));
        let days = SHARE_DAY_CHOICES.iter().map(|days| (days.to_string(), ctx.t.fill1("share.days", days)));
        html(&SharesPage {
            chrome: ctx.chrome("page.shares"),
            created,
            rows,
            documents: choices(documents, &selected),
            days: choices(days, "7"),
        })
    }
    .await;
    ctx.respond(result)
}

#[derive(Deserialize)]
struct ShareForm {
    csrf: String,
    record: String,
    recipient: String,
    days: u32,
}

async fn create_share(State(state): State<AppState>, ctx: Ctx, headers: HeaderMap, form: Form<ShareForm>) -> Response {
    let result = async {
        let (principal, owner) = ctx.owner()?;
        ctx.check_form(&headers, &form.csrf)?;
        let record = parse_id(&form.record)?;
        let recipient_text: String = form.recipient.trim().chars().take(SHARE_RECIPIENT_CHARS_MAX).collect();
        let recipient = Title::parse(&recipient_text).map_err(|e| PageError::Show {
            status: StatusCode::BAD_REQUEST,
            key: "error.bad_recipient",
            detail: e.to_string(),
        })?;
        let view = load(&state, record).await?;
        let body = view.record.body();
        let resource = Resource::Record { owner: body.owner.clone(), issuer_agency: body.issuer_agency.clone() };
        guard(&state, principal, resource, Some(record), Ok(None), Ok(())).await?;
        let valid_for = std::time::Duration::from_secs(u64::from(form.days) * 86_400);
        let share = state
            .blocking(move |vault| vault.create_share(&owner, &record, recipient, valid_for))
            .await?
            .map_err(ApiError::from)?;
        Ok(back_to(&format!("/shares?created={}", share.id)))
    }
    .await;
    ctx.respond(result)
}

async fn revoke_share(
    State(state): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: Form<CsrfForm>,
) -> Response {
    let result = async {
        let (_, owner) = ctx.owner()?;
        ctx.check_form(&headers, &form.csrf)?;
        let id = ShareId::parse_hex(&id).ok_or_else(PageError::not_found)?;
        state.blocking(move |vault| vault.revoke_share(&owner, id)).await?.map_err(ApiError::from)?;
        Ok(back_to("/shares"))
    }
    .await;
    ctx.respond(result)
}

async fn share_qr(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> Response {
    let result = async {
        let (_, owner) = ctx.owner()?;
        let id = ShareId::parse_hex(&id).ok_or_else(PageError::not_found)?;
        let token = state
            .blocking(move |vault| {
                let mine = vault.shares(&owner)?.iter().any(|share| share.id == id);
                Ok::<_, ApiError>(mine.then(|| vault.share_token(id)))
            })
            .await??
            .ok_or_else(PageError::not_found)?;
        svg_response(&share_url(&ctx, &token))
    }
    .await;
    ctx.respond(result)
}

// ----- what a share's holder and a printed copy's reader see -----

/// Decides a visitor's read of a record through a share link, and records it in the owner's log.
async fn use_share(state: &AppState, token: &str, action: AccessAction) -> Result<(Share, RecordView), PageError> {
    let token = token.to_owned();
    let share = state.blocking(move |vault| vault.share_by_token(&token)).await??.ok_or_else(PageError::not_found)?;
    let view = load(state, share.record).await?;
    let decision = access::decide_share(&share, &view.id(), now_unix_ms());
    let event = access::visitor_event(
        share.owner.clone(),
        share.record,
        format!("share:{}", share.id),
        access::SHARE_HOLDER_ROLE,
        action,
        &decision,
    );
    state.record_access(event).await?;
    match decision {
        Decision::Allow => Ok((share, view)),
        Decision::Deny { .. } => Err(PageError::show(StatusCode::GONE, "error.share_ended")),
    }
}

async fn shared_page(State(state): State<AppState>, ctx: Ctx, Path(token): Path<String>) -> Response {
    let result = async {
        let (share, view) = use_share(&state, &token, AccessAction::ReadRecord).await?;
        let body = view.record.body().clone();
        let shared = SharedView {
            owner: body.owner.to_string(),
            expires: ctx.t.datetime(share.expires_at_ms),
            file_url: format!("/s/{token}/file"),
            viewer: viewer(&state, &body).await?,
        };
        verification(&state, &ctx, Some(view), Some(shared)).await
    }
    .await;
    ctx.respond(result)
}

async fn shared_file(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(token): Path<String>,
    headers: HeaderMap,
    query: Result<Query<FileQuery>, QueryRejection>,
) -> Response {
    let result = async {
        let (_, view) = use_share(&state, &token, AccessAction::ReadContent).await?;
        let download = query.is_ok_and(|Query(q)| q.download.is_some());
        file_response(&state, view.record.body(), &headers, download).await
    }
    .await;
    ctx.respond(result)
}

/// The public page behind a printed result's QR code: authentic or not, valid or not, who issued it
/// and when; never the content or the owner. The check is recorded in the owner's access log.
async fn verify_page(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> Response {
    let result = async {
        let Ok(id) = Digest::parse_hex("record id", &id) else {
            return verification(&state, &ctx, None, None).await;
        };
        let Some(view) = state.blocking(move |vault| vault.record(&id)).await?? else {
            return verification(&state, &ctx, None, None).await;
        };
        let event = access::visitor_event(
            view.record.body().owner.clone(),
            id,
            PRINTED_COPY_SUBJECT.to_owned(),
            access::PUBLIC_ROLE,
            AccessAction::ReadRecord,
            &Decision::Allow,
        );
        state.record_access(event).await?;
        verification(&state, &ctx, Some(view), None).await
    }
    .await;
    ctx.respond(result)
}

/// The verification page: public fields and checks, and with a share the owner and the document.
async fn verification(state: &AppState, ctx: &Ctx, view: Option<RecordView>, shared: Option<SharedView>) -> PageResult {
    let t = &ctx.t;
    let Some(view) = view else {
        let page = VerifyPage {
            chrome: ctx.chrome("page.verify"),
            found: false,
            verified: false,
            verdict: t.get("verify.not_found").to_owned(),
            status: "revoked",
            status_label: String::new(),
            fields: Vec::new(),
            checks: Vec::new(),
            shared: None,
        };
        let mut response = html(&page)?;
        *response.status_mut() = StatusCode::NOT_FOUND;
        return Ok(response);
    };
    let checked = view.clone();
    let checks = state.blocking(move |vault| vault.check_record(&checked)).await??;
    let (lines, verdict) = check_lines(t, &view, &checks);
    let body = view.record.body();
    let field = |key: &str, value: String| Field { label: t.get(key).to_owned(), value };
    let mut fields = vec![
        field("doc.title", body.title.to_string()),
        field("doc.type", body.document_type.to_string()),
        field("doc.issuer", body.issuer_agency.to_string()),
        field("doc.issued_on", t.date(&body.issued_on)),
        field("doc.valid_until", body.valid_until.map_or_else(|| t.get("doc.no_expiry").to_owned(), |d| t.date(&d))),
    ];
    if shared.is_some() {
        fields.extend(record_fields(t, &view));
    }
    let status = view.status.kind().as_str();
    let mut status_text = status_label(t, status);
    let detail = status_detail(t, &view.status);
    if !detail.is_empty() {
        status_text = format!("{status_text}: {detail}");
    }
    html(&VerifyPage {
        chrome: ctx.chrome("page.verify"),
        found: true,
        verified: checks.all_passed() && matches!(view.status, Status::Valid | Status::CertifiedCopy { .. }),
        verdict,
        status,
        status_label: status_text,
        fields,
        checks: lines,
        shared,
    })
}

async fn stylesheet() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=3600")], STYLESHEET)
        .into_response()
}
