//! The OpenAPI 3.1 description of the API, generated: every route is registered through
//! utoipa-axum's router from its handler's `#[utoipa::path]` (parameters with their patterns, bodies
//! and every status it answers), and bodies are the Rust types handlers send (`crate::json` and the
//! types here). Served at `/v1/openapi.json` and checked in as docs/openapi.json
//! (`kho openapi > docs/openapi.json`); a test keeps the two equal.

use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{IntoParams, IntoResponses, Modify, OpenApi, PartialSchema, ToSchema};

use crate::error_code::ErrorCode;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Kho",
        description = "The e-data warehouse vault. Every read of a person's documents by someone else is recorded in \
                       their access log before any byte is sent. Signed statement formats: docs/FORMAT.md. Roles and \
                       the access matrix: docs/SECURITY.md. Every error is `{\"error\": {\"code\", \"message\"}}` with \
                       a code from the ErrorCode list.",
    ),
    components(schemas(ErrorBody, ErrorCode, OwnerIdText, CodeText, HexDigestText, DateText, TitleText, CursorText)),
    modifiers(&BearerScheme),
)]
pub(super) struct ApiDoc;

/// The tile routes, described here because they are routed with a wildcard (see `api_routes`).
#[derive(OpenApi)]
#[openapi(paths(super::log::hash_tile, super::log::entry_bundle))]
pub(super) struct Tiles;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT from a configured identity provider (docs/SECURITY.md)")
                    .build(),
            ),
        );
    }
}

/// The OpenAPI document, as served.
pub fn document() -> Value {
    let (_, api) = super::api_routes(std::time::Duration::from_secs(1)).split_for_parts();
    let mut value = serde_json::to_value(&api).unwrap_or_default();
    value["info"]["version"] = Value::from(env!("CARGO_PKG_VERSION"));
    value
}

/// (method, path) of every described operation.
pub fn operations() -> Vec<(String, String)> {
    let document = document();
    let mut operations = Vec::new();
    if let Some(paths) = document["paths"].as_object() {
        for (path, item) in paths {
            for method in item.as_object().map(|m| m.keys().cloned().collect::<Vec<_>>()).unwrap_or_default() {
                if ["get", "post", "put", "delete", "patch", "head"].contains(&method.as_str()) {
                    operations.push((method, path.clone()));
                }
            }
        }
    }
    operations
}

/// Adds the answers any route can give, whatever its handler does, to every operation that does not
/// describe them itself: 408 (the request deadline), 431 (headers over `REQUEST_HEADERS_MAX` or
/// `REQUEST_HEADER_BYTES_MAX`) and 500 (a fault of the server, such as its storage).
pub(super) fn add_common_answers(openapi: &mut utoipa::openapi::OpenApi) {
    let answers = [
        ("408", "`request_timeout`: the request took longer than the request deadline"),
        ("431", "`headers_too_large`: too many header fields, or too many bytes of them"),
        ("500", "`internal_error`: a fault of the server; its log has the request's `X-Request-Id`"),
    ];
    for item in openapi.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
            &mut item.head,
            &mut item.options,
        ];
        for operation in operations.into_iter().flatten() {
            for (status, description) in answers {
                operation.responses.responses.entry(status.to_owned()).or_insert_with(|| {
                    let body = ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build();
                    ResponseBuilder::new().description(description).content("application/json", body).build().into()
                });
            }
        }
    }
}

/// Every error answer: `{"error": {"code", "message"}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    /// For people; may change between releases.
    pub message: String,
}

impl PartialSchema for ErrorCode {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("A stable machine-readable error code."))
            .enum_values(Some(ErrorCode::ALL.iter().map(|code| code.as_str())))
            .into()
    }
}

impl ToSchema for ErrorCode {}

/// Bytes: a document, a signed statement envelope, an archive.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct Binary(#[allow(dead_code)] Vec<u8>);

/// The texts the API takes, each with the pattern of the parser that reads it (`crate::ids`), so a
/// request that follows the document is never refused for its form and one that does not always is.
macro_rules! text_schemas {
    ($($marker:ident = $name:literal, $description:literal, $pattern:expr, $build:expr;)*) => {
        $(
            /// A schema only: never built.
            #[allow(dead_code)]
            pub struct $marker;

            impl PartialSchema for $marker {
                fn schema() -> RefOr<Schema> {
                    let build: fn(ObjectBuilder) -> ObjectBuilder = $build;
                    build(ObjectBuilder::new().schema_type(Type::String).description(Some($description)).pattern(Some($pattern))).into()
                }
            }

            impl ToSchema for $marker {
                fn name() -> std::borrow::Cow<'static, str> {
                    $name.into()
                }
            }
        )*
    };
}

text_schemas! {
    OwnerIdText = "OwnerId", "A 12-digit citizen id (starting with a province code) or a 10/13-digit organization code.",
        crate::ids::owner_id_pattern(), |b| b;
    CodeText = "Code", "An agency, document type, procedure or dossier code: ASCII letters, digits and . _ - /.",
        crate::ids::code_pattern(), |b| b;
    HexDigestText = "HexDigest", "A record id or hash: 64 hexadecimal digits.", crate::ids::DIGEST_HEX_PATTERN, |b| b;
    DateText = "Date", "A calendar date, YYYY-MM-DD.", "^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
        |b| b.format(Some(utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Date)));
    TitleText = "Title", "A title for people: no control characters, not blank.", crate::ids::TITLE_PATTERN,
        |b| b.min_length(Some(1)).max_length(Some(crate::ids::TITLE_LENGTH_CHARS_MAX));
    CursorText = "Cursor", "Opaque: the next_cursor of the previous page.", crate::store::CURSOR_PATTERN, |b| b;
}

/// A record id (also a document's BLAKE3 address).
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct IdPath {
    #[param(value_type = HexDigestText)]
    id: String,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct OwnerPath {
    #[param(value_type = OwnerIdText)]
    owner: String,
}

/// The purpose an officer or auditor states: the dossier being processed.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct PurposeHeader {
    /// The dossier code being processed (officers; auditors for content and bundles).
    #[param(rename = "Kho-Purpose", value_type = CodeText, required = false)]
    purpose: Option<String>,
}

/// The answers every signed-in route may give besides its own.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum SignedIn {
    /// Missing, invalid, expired or wrong-audience token.
    #[response(status = 401)]
    Unauthenticated(ErrorBody),
    /// `rate_limited`: the token's subject is over its role's rate; `Retry-After` says when to try again.
    #[response(status = 429, headers(("Retry-After" = u64, description = "seconds")))]
    RateLimited(ErrorBody),
}
